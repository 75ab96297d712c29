import Logging
import VhostUser
import Virtio
#if canImport(Glibc)
import Glibc
#endif

public enum PortKind: String, Sendable {
    case vhostUser = "vhostuser"
    case vhostUserClient = "vhostuserclient"
}

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
        }
    }
}

/// Snapshots for `show`, `fdb show` and `port stats`.
public struct PortSnapshot: Sendable {
    public var name: String
    public var kind: PortKind
    public var path: String
    public var state: String
    public var linkUp: Bool
    public var features: UInt64
    public var protocolFeatures: UInt64
    public var mtu: Int?
    public var queues: [(index: Int, size: Int, enabled: Bool, running: Bool)]
}

public struct BridgeSnapshot: Sendable {
    public var name: String
    public var agingSeconds: Int
    public var ports: [PortSnapshot]
}

public struct FdbRow: Sendable {
    public var mac: String
    public var port: String
    public var vlan: Int
    public var ageSeconds: Int
}

/// The switch's configuration and management, on the control `EventLoop` thread:
/// bridges, ports and their vhost-user endpoints. Ring state lives in the engine.
public final class SwitchController {
    final class Port {
        let name: String
        let kind: PortKind
        let path: String
        let slot: Int
        let backend: VhostPortBackend
        let endpoint: VhostUserEndpoint
        init(name: String, kind: PortKind, path: String, slot: Int, backend: VhostPortBackend, endpoint: VhostUserEndpoint) {
            self.name = name
            self.kind = kind
            self.path = path
            self.slot = slot
            self.backend = backend
            self.endpoint = endpoint
        }
    }

    struct Bridge {
        var name: String
        var slot: Int
        var agingSeconds: Int
        var ports: [Port] = []
    }

    public let engine: ForwardingEngine
    let loop: EventLoop
    let logger: Logger
    /// Where relative socket paths go.
    public let runDirectory: String
    var bridges: [Bridge] = []

    public init(engine: ForwardingEngine, loop: EventLoop, runDirectory: String, logger: Logger) {
        self.engine = engine
        self.loop = loop
        self.runDirectory = runDirectory
        self.logger = logger
    }

    public static func isValidName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 15
            && s.utf8.allSatisfy { $0.isASCIIAlnum || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }

    // MARK: bridges

    public func addBridge(_ name: String, agingSeconds: Int = 300) throws(SwitchError) {
        guard Self.isValidName(name) else { throw .invalidName(name) }
        guard (1...86400).contains(agingSeconds) else { throw .invalidAging(agingSeconds) }
        guard !bridges.contains(where: { $0.name == name }) else { throw .bridgeExists(name) }
        let aging = UInt32(agingSeconds)
        guard let slot = engine.sync({ $0.addBridge(agingSeconds: aging) }) else { throw .tooMany("bridges") }
        bridges.append(Bridge(name: name, slot: slot, agingSeconds: agingSeconds))
        logger.info("bridge added", metadata: ["bridge": "\(name)"])
    }

    public func deleteBridge(_ name: String) throws(SwitchError) {
        let b = try bridgeIndex(name)
        for port in bridges[b].ports { try deletePort(bridge: name, port: port.name) }
        let slot = bridges[b].slot
        engine.sync { $0.removeBridge(slot) }
        bridges.remove(at: b)
        logger.info("bridge deleted", metadata: ["bridge": "\(name)"])
    }

    public func setAging(bridge name: String, seconds: Int) throws(SwitchError) {
        let b = try bridgeIndex(name)
        guard (1...86400).contains(seconds) else { throw .invalidAging(seconds) }
        let slot = bridges[b].slot
        engine.sync { $0.setAging(bridge: slot, seconds: UInt32(seconds)) }
        bridges[b].agingSeconds = seconds
    }

    // MARK: ports

    public func addPort(bridge: String, name: String, kind: PortKind, path rawPath: String) throws(SwitchError) {
        let b = try bridgeIndex(bridge)
        guard Self.isValidName(name) else { throw .invalidName(name) }
        guard findPort(name) == nil else { throw .portExists(name) }
        guard !rawPath.isEmpty, !rawPath.contains("\0") else { throw .invalidPath(rawPath) }
        let path = rawPath.hasPrefix("/") ? rawPath : runDirectory + "/" + rawPath
        guard path.utf8.count < 108 else { throw .invalidPath(path) }
        if let other = bridges.flatMap(\.ports).first(where: { $0.path == path }) {
            throw .pathInUse(path: path, port: other.name)
        }
        let bridgeSlot = bridges[b].slot
        guard let slot = engine.sync({ $0.addPort(bridge: bridgeSlot) }) else { throw .tooMany("ports") }
        let backend = VhostPortBackend(engine: engine, slot: slot)
        var portLogger = logger
        portLogger[metadataKey: "port"] = "\(name)"
        let endpoint = VhostUserEndpoint(path: path, role: kind == .vhostUser ? .server : .client,
                                         backend: backend, loop: loop, logger: portLogger)
        endpoint.onStateChange = { [engine] state in
            // A departed guest may come back on another port: forget where it was.
            if state != .connected { engine.sync { $0.forgetAddresses(port: slot) } }
        }
        do {
            try endpoint.start()
        } catch {
            engine.sync { $0.removePort(slot) }
            throw .socket("\(error)")
        }
        bridges[b].ports.append(Port(name: name, kind: kind, path: path, slot: slot, backend: backend, endpoint: endpoint))
        logger.info("port added", metadata: ["bridge": "\(bridge)", "port": "\(name)", "type": "\(kind.rawValue)", "path": "\(path)"])
    }

    public func deletePort(bridge: String, port name: String) throws(SwitchError) {
        let b = try bridgeIndex(bridge)
        guard let i = bridges[b].ports.firstIndex(where: { $0.name == name }) else {
            throw .noSuchPort(bridge: bridge, port: name)
        }
        let port = bridges[b].ports.remove(at: i)
        port.endpoint.onStateChange = nil
        port.endpoint.close()      // stops the rings in the engine, closes fds, unmaps
        let slot = port.slot
        engine.sync { $0.removePort(slot) }
        logger.info("port deleted", metadata: ["bridge": "\(bridge)", "port": "\(name)"])
    }

    /// Closes every port (daemon shutdown).
    public func shutdown() {
        for b in bridges { try? deleteBridge(b.name) }
    }

    // MARK: queries

    public func snapshot() -> [BridgeSnapshot] {
        bridges.map { b in
            BridgeSnapshot(name: b.name, agingSeconds: b.agingSeconds, ports: b.ports.map { p in
                let d = p.endpoint.device
                let q = d.queueSummary
                let up = q.contains { $0.running && $0.index % 2 == 0 } && q.contains { $0.running && $0.index % 2 == 1 }
                let slot = p.slot
                let broken = engine.sync { $0.isBroken(port: slot) }   // a corrupt ring was stopped
                return PortSnapshot(name: p.name, kind: p.kind, path: p.path,
                                    state: broken ? "broken" : p.endpoint.state.rawValue,
                                    linkUp: up, features: d.ackedFeatures, protocolFeatures: d.ackedProtocolFeatures,
                                    mtu: d.mtu, queues: q)
            })
        }
    }

    public func fdb(bridge name: String) throws(SwitchError) -> [FdbRow] {
        let b = try bridgeIndex(name)
        let slot = bridges[b].slot
        let names = Dictionary(uniqueKeysWithValues: bridges[b].ports.map { ($0.slot, $0.name) })
        return engine.sync { $0.fdbEntries(bridge: slot) }
            .map { FdbRow(mac: MacTable.format(mac: $0.key & 0xFFFF_FFFF_FFFF), port: names[$0.port] ?? "?",
                          vlan: Int($0.key >> 48), ageSeconds: $0.age) }
            .sorted { ($0.port, $0.vlan, $0.mac) < ($1.port, $1.vlan, $1.mac) }
    }

    public func flushFdb(bridge name: String) throws(SwitchError) {
        let slot = bridges[try bridgeIndex(name)].slot
        engine.sync { $0.flushFdb(bridge: slot) }
    }

    public func stats(bridge name: String, port: String?) throws(SwitchError) -> [(String, PortCounters)] {
        let b = try bridgeIndex(name)
        var ports = bridges[b].ports
        if let port {
            ports = ports.filter { $0.name == port }
            guard !ports.isEmpty else { throw .noSuchPort(bridge: name, port: port) }
        }
        return ports.map { p in (p.name, engine.sync { $0.counters(port: p.slot) }) }
    }

    // MARK: lookup

    private func bridgeIndex(_ name: String) throws(SwitchError) -> Int {
        guard let b = bridges.firstIndex(where: { $0.name == name }) else { throw .noSuchBridge(name) }
        return b
    }

    private func findPort(_ name: String) -> Port? {
        bridges.lazy.flatMap(\.ports).first { $0.name == name }
    }
}

extension UInt8 {
    var isASCIIAlnum: Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(self) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(self)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self)
    }
}
