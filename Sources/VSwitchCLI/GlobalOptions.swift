import SwitchModel
import ArgumentParser
import Control
import Foundation

/// How results are printed.
public enum OutputFormat: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// Aligned tables for people.
    case text
    /// The response's `result` object, pretty-printed with sorted keys, for scripts.
    case json
    /// Capture file formats (`vswitch capture`, `add-port --type pcap`): `--format` names
    /// the file's format there, as the users type it; other commands refuse them.
    case pcap, pcapng

    /// The capture format this names, nil for an output format.
    public var captureFormat: String? { self == .pcap || self == .pcapng ? rawValue : nil }
}

/// Options every subcommand accepts (via `@OptionGroup`), so they can follow the subcommand
/// name: `vswitch show --format json`.
public struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Control socket of vswitchd (default: $VSWITCH_SOCK, else \(ControlDefaults.socketPath)).",
        valueName: "path"))
    public var control: String?

    @Option(name: .long, help: "Output format: text or json (capture, add-port --type pcap: the file format, pcap or pcapng).")
    public var format: OutputFormat = .text

    public init() {}

    /// `--control`, else `$VSWITCH_SOCK`, else the default path.
    public var socketPath: String {
        ControlDefaults.resolveSocketPath(option: control, environment: ProcessInfo.processInfo.environment)
    }
}

/// Client-side checks, so typos fail fast with a clear message instead of a round trip.
/// The daemon validates again; these mirror its rules.
enum Validate {
    static let maxNameLength = 15  // IFNAMSIZ - 1, like Linux interface names
    static let agingRange = 1...86400

    static func name(_ value: String, _ what: String) throws {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
        guard (1...maxNameLength).contains(value.count), value.allSatisfy(allowed.contains) else {
            throw ValidationError(
                "invalid \(what) name '\(value)': use 1-\(maxNameLength) characters from A-Z a-z 0-9 _ . -")
        }
    }

    /// "100M", "2G", "512k" or plain bytes.
    static func size(_ text: String, _ what: String) throws -> Int {
        let units: [Character: Int] = ["k": 1 << 10, "K": 1 << 10, "m": 1 << 20, "M": 1 << 20, "g": 1 << 30, "G": 1 << 30]
        var digits = Substring(text)
        var scale = 1
        if let last = text.last, let u = units[last] {
            scale = u
            digits = text.dropLast()
        }
        guard let n = Int(digits), n > 0, n <= Int.max / scale else {
            throw ValidationError("invalid \(what) '\(text)': use bytes or a number with k, M or G")
        }
        return n * scale
    }

    /// A file name relative to the CLI's working directory, made absolute for the daemon.
    static func absolutePath(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }

    static func aging(_ seconds: Int) throws {
        guard agingRange.contains(seconds) else {
            throw ValidationError(
                "invalid aging time \(seconds): must be \(agingRange.lowerBound)-\(agingRange.upperBound) seconds")
        }
    }
}

/// Lets `--type` accept the raw values and list them in help and errors.
extension PortType: ExpressibleByArgument {}
