import SwitchModel
import ArgumentParser
import Control
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `vswitch capture BRIDGE [PORT]`: a live capture streamed from vswitchd as pcap, like
/// `tcpdump -i` on the bridge. Ends after `-c N` frames, or when the reader goes away.
public struct Capture: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Capture a bridge's frames (or one port's) live, as a pcap or pcapng stream.",
        discussion: """
            vswitch capture br0 -w - | tcpdump -nr -
            vswitch capture br0 vm1 -f 'tcp port 22' -c 100 -w /tmp/vm1.pcap
            vswitch capture br0 --format pcapng --direction both -w /tmp/br0.pcapng
            --format pcapng names each frame's port (an interface per port) and direction.
            Without PORT each frame entering the bridge is recorded once. Frames the writer
            cannot keep up with are dropped from the capture (never from the switch).
            """)
    @OptionGroup public var global: GlobalOptions
    @Argument(help: "Bridge name.") public var bridge: String
    @Argument(help: "Only this port's frames (default: every frame entering the bridge).") public var port: String?
    @Option(name: [.customShort("f"), .long], help: "Keep only frames matching this filter (tcpdump syntax).")
    public var filter: String?
    @Option(name: [.customShort("c"), .long], help: "Stop after this many frames.") public var count: Int?
    @Option(name: [.customShort("s"), .long], help: "Bytes kept per frame (default 262144).") public var snaplen: Int?
    @Option(name: [.customShort("w"), .long], help: "Write the pcap stream to FILE, or - for stdout.")
    public var write: String?
    @Option(help: "rx (frames PORT, or any port, sends into the bridge; the default without PORT), tx (frames delivered to it) or both (the default with PORT).")
    public var direction: String?
    @Option(help: "The ring between forwarding and this capture (e.g. 64M; default 4M, 128K-1G): bigger rides out longer bursts.")
    public var bufferSize: String?
    public init() {}

    public func validate() throws {
        try Validate.name(bridge, "bridge")
        if let port { try Validate.name(port, "port") }
        if let count, count < 1 { throw ValidationError("-c must be 1 or more") }
        if let snaplen, !(1...262_144).contains(snaplen) { throw ValidationError("-s must be 1-262144") }
        if let direction {
            guard ["rx", "tx", "both"].contains(direction) else { throw ValidationError("--direction must be rx, tx or both") }
        }
        if let write, write.isEmpty { throw ValidationError("-w needs a file name or -") }
        if let bufferSize { _ = try Validate.size(bufferSize, "--buffer-size") }
    }

    public func makeRequest() -> ControlRequest {
        var request = ControlRequest(command: .capture, bridge: bridge, filter: filter, snaplen: snaplen, watchPort: port,
                                     direction: direction, count: count, captureFormat: global.format.captureFormat)
        request.captureBuffer = bufferSize.flatMap { try? Validate.size($0, "--buffer-size") }
        return request
    }

    public func run() throws {
        let target = write ?? "-"
        if target == "-" && isatty(STDOUT_FILENO) == 1 {
            throw fail("not writing a pcap stream to a terminal: use -w FILE, or -w - with a pipe (| tcpdump -nr -)")
        }
        signal(SIGPIPE, SIG_IGN)   // a closed pipe is EPIPE: the reader has what it wanted
        var out: Int32 = -1
        defer { if out > STDOUT_FILENO { close(out) } }
        let response: ControlResponse
        do {
            // The file is created only once the daemon has accepted the capture.
            (response, _) = try ControlStreamClient(path: global.socketPath).run(makeRequest()) {
                out = target == "-" ? STDOUT_FILENO : open(target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
                guard out >= 0 else { throw fail("cannot write \(target): \(String(cString: strerror(errno)))") }
                return out
            }
        } catch let e as ExitCode {
            throw e
        } catch {
            throw fail("\(error)")
        }
        guard response.ok else { throw fail(response.error ?? "request failed (no error message)") }
    }
}
