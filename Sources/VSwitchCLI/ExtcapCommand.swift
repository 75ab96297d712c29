import SwitchModel
import ArgumentParser
import Control
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `vswitch extcap ...`: Wireshark's extcap interface, so Wireshark and tshark list every
/// bridge (`vswitch:br0`) and port (`vswitch:br0/vm1`) and capture from them as pcapng
/// through the control socket. Wireshark runs it from its extcap folder: a symlink named
/// `vswitch-extcap` to the `vswitch` binary (main.swift sends that name here).
///
/// Arguments are parsed by hand: Wireshark passes options this program does not know
/// (`--extcap-version=4.0`, `--debug`, control pipes), and they must be ignored, not refused.
public struct Extcap: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Wireshark extcap interface (Wireshark runs it; see docs/capture.md).",
        shouldDisplay: false)
    @Argument(parsing: .captureForPassthrough) public var arguments: [String] = []
    public init() {}

    public func run() throws {
        let code = ExtcapTool(arguments: arguments).run()
        if code != 0 { throw ExitCode(code) }
    }
}

/// The extcap protocol itself, kept free of ArgumentParser so the symlink entry can use it.
public struct ExtcapTool {
    public static let prefix = "vswitch:"
    var options: [String: String] = [:]
    var flags: Set<String> = []

    /// Options that take a value; everything else starting with `--` is a flag.
    static let valued: Set<String> = ["--extcap-interface", "--fifo", "--extcap-capture-filter", "--extcap-version",
                                      "--direction", "--snaplen", "--control", "--extcap-control-in",
                                      "--extcap-control-out", "--debug-file", "--extcap-reload-option"]

    public init(arguments: [String]) {
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            if let eq = a.firstIndex(of: "="), a.hasPrefix("--") {
                options[String(a[..<eq])] = String(a[a.index(after: eq)...])
            } else if Self.valued.contains(a), i + 1 < arguments.count {
                options[a] = arguments[i + 1]
                i += 1
            } else {
                flags.insert(a)
            }
            i += 1
        }
    }

    var socketPath: String {
        ControlDefaults.resolveSocketPath(option: options["--control"], environment: ProcessInfo.processInfo.environment)
    }

    /// Exit status: 0, or 1 after a message on stderr (Wireshark shows it).
    public func run() -> Int32 {
        if flags.contains("--extcap-interfaces") { return interfaces() }
        guard let interface = options["--extcap-interface"] else {
            return failure("no --extcap-interface given (this program is run by Wireshark: see docs/capture.md)")
        }
        guard let target = Self.parse(interface) else { return failure("not a vswitch interface: \(interface)") }
        if flags.contains("--extcap-dlts") {
            print("dlt {number=1}{name=EN10MB}{display=Ethernet}")
            return 0
        }
        if flags.contains("--extcap-config") {
            print(Self.config(port: target.port != nil, socket: socketPath), terminator: "")
            return 0
        }
        if flags.contains("--capture") { return capture(target) }
        return 0   // --extcap-capture-filter alone: the daemon checks the filter when the capture starts
    }

    /// `vswitch:br0` or `vswitch:br0/vm1`.
    static func parse(_ interface: String) -> (bridge: String, port: String?)? {
        guard interface.hasPrefix(prefix) else { return nil }
        let parts = interface.dropFirst(prefix.count).split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), parts.allSatisfy({ !$0.isEmpty }) else { return nil }
        return (String(parts[0]), parts.count == 2 ? String(parts[1]) : nil)
    }

    func interfaces() -> Int32 {
        print("extcap {version=1.0}{display=vswitch bridges and ports}")
        // No daemon: list nothing (Wireshark then shows no vswitch interfaces, no error).
        guard let response = try? ControlClient(path: socketPath).send(ControlRequest(command: .show)),
              response.ok, let bridges = response.result?.bridges else { return 0 }
        print(Self.interfaceLines(bridges), terminator: "")
        return 0
    }

    /// One `interface` line per bridge and per port that carries frames.
    static func interfaceLines(_ bridges: [BridgeInfo]) -> String {
        var out = ""
        for b in bridges {
            out += "interface {value=\(prefix)\(b.name)}{display=vswitch bridge \(b.name)}\n"
            for p in b.ports where p.type != .pcap {
                out += "interface {value=\(prefix)\(b.name)/\(p.name)}{display=vswitch \(b.name) port \(p.name) (\(p.type.rawValue))}\n"
            }
        }
        return out
    }

    /// The options Wireshark shows in its capture dialog.
    static func config(port: Bool, socket: String) -> String {
        let defaultDirection = port ? "both" : "rx"
        var out = """
            arg {number=0}{call=--direction}{display=Direction}{tooltip=rx: frames entering the switch, tx: frames it delivers, both: each crossing}{type=selector}
            arg {number=1}{call=--snaplen}{display=Snap length}{tooltip=Bytes kept per frame}{type=integer}{range=1,262144}{default=262144}
            arg {number=2}{call=--control}{display=Control socket}{tooltip=vswitchd's control socket}{type=string}{default=\(socket)}

            """
        for d in ["rx", "tx", "both"] {
            out += "value {arg=0}{value=\(d)}{display=\(d)}{default=\(d == defaultDirection ? "true" : "false")}\n"
        }
        return out
    }

    /// Streams pcapng from the daemon into the FIFO until Wireshark stops reading (or ends
    /// the program with a signal: the daemon sees the connection close and removes the tap).
    func capture(_ target: (bridge: String, port: String?)) -> Int32 {
        guard let fifo = options["--fifo"] else { return failure("--capture needs --fifo") }
        let snaplen = options["--snaplen"].flatMap { Int($0) }
        let filter = options["--extcap-capture-filter"].flatMap { $0.isEmpty ? nil : $0 }
        let request = ControlRequest(command: .capture, bridge: target.bridge, filter: filter, snaplen: snaplen,
                                     watchPort: target.port, direction: options["--direction"], captureFormat: "pcapng")
        signal(SIGPIPE, SIG_IGN)
        var out: Int32 = -1
        defer { if out >= 0 { close(out) } }
        do {
            let (response, _) = try ControlStreamClient(path: socketPath).run(request) {
                out = open(fifo, O_WRONLY | O_CLOEXEC)
                guard out >= 0 else { throw ExtcapError(message: "cannot open \(fifo): \(String(cString: strerror(errno)))") }
                return out
            }
            guard response.ok else { return failure(response.error ?? "capture refused") }
        } catch {
            return failure("\(error)")
        }
        return 0
    }

    struct ExtcapError: Error, CustomStringConvertible { var message: String; var description: String { message } }

    func failure(_ message: String) -> Int32 {
        FileHandle.standardError.write(Data("vswitch extcap: \(message)\n".utf8))
        return 1
    }
}
