/// What the control plane refuses, and why, for the one-line error the CLI prints.
public enum SwitchError: Error, Equatable, CustomStringConvertible {
    case invalidName(String)
    case bridgeExists(String)
    case noSuchBridge(String)
    case portExists(String)
    case noSuchPort(bridge: String, port: String)
    case pathInUse(path: String, port: String)
    case invalidPath(String)
    case invalidAging(Int)
    case tooMany(String)
    case socket(String)
    case missingOption(String, kind: String)
    case invalidOption(String)
    case unsupported(String)

    public var description: String {
        switch self {
        case .invalidName(let n): return "invalid name '\(n)': use 1-15 characters from A-Z a-z 0-9 _ . -"
        case .bridgeExists(let b): return "a bridge named \(b) already exists"
        case .noSuchBridge(let b): return "no bridge named \(b)"
        case .portExists(let p): return "a port named \(p) already exists"
        case .noSuchPort(let b, let p): return "bridge \(b) has no port named \(p)"
        case .pathInUse(let path, let p): return "socket path \(path) is already used by port \(p)"
        case .invalidPath(let p): return "invalid socket path '\(p)': must be non-empty and shorter than 108 bytes"
        case .invalidAging(let s): return "invalid MAC aging time \(s): use 1...86400 seconds"
        case .tooMany(let what): return "too many \(what)"
        case .socket(let m): return m
        case .missingOption(let o, let k): return "a \(k) port needs \(o)"
        case .invalidOption(let m): return m
        case .unsupported(let m): return m
        }
    }
}
