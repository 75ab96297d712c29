import SwitchModel
import ArgumentParser
import Control
import Foundation
import CShims
#if canImport(Glibc)
import Glibc
#endif

/// `vswitch top`: a full-screen view of per-port rates refreshed every `--interval` seconds,
/// like top(1). Reads the daemon only through the control socket (`show`, `port stats`,
/// `dp-stats`); the frame itself is `TopView.render`.
public struct Top: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Live per-port packet, bit and drop rates and the forwarding thread's load (q quits).",
        discussion: """
            Ports are sorted by traffic (rx + tx packets per second). Rates are computed from two \
            successive counter samples. --once prints one frame (two samples --interval apart) \
            to stdout without escape codes, for scripts.
            """)
    @OptionGroup public var global: GlobalOptions
    @Option(help: "Seconds between refreshes (0.1-3600).") public var interval: Double = 1
    @Flag(help: "Print one frame without escape codes and exit.") public var once = false
    public init() {}

    public func validate() throws {
        guard (0.1...3600).contains(interval) else { throw ValidationError("--interval must be 0.1-3600 seconds") }
        if global.format != .text { throw ValidationError("top prints text only (--format \(global.format.rawValue))") }
    }

    public func run() throws {
        let client = ControlClient(path: global.socketPath)
        if once {
            let (first, t0) = try sample(client)
            Thread.sleep(forTimeInterval: interval)
            let (second, t1) = try sample(client)
            print(TopView.render(previous: first, current: second, elapsed: t1 - t0).joined(separator: "\n"))
            return
        }
        guard isatty(STDIN_FILENO) == 1, isatty(STDOUT_FILENO) == 1 else {
            throw fail("top needs a terminal (use --once for scripts)")
        }
        let clockFormat = DateFormatter()
        clockFormat.dateFormat = "HH:mm:ss"
        var (previous, t0) = try sample(client)
        Terminal.enter()
        defer { Terminal.leave() }
        var deadline = t0 + interval
        while true {
            if Terminal.waitForQuit(until: deadline) { return }
            let (current, t1) = try sampleOrLeave(client)
            let clock = clockFormat.string(from: Date())
            let size = Terminal.size   // each frame: follows a resized window
            let lines = TopView.render(previous: previous, current: current, elapsed: t1 - t0,
                                       width: size?.columns, clock: clock)
            Terminal.draw(lines, rows: size?.rows)
            (previous, t0) = (current, t1)
            deadline = max(t1, deadline) + interval
        }
    }

    /// A failed refresh (the daemon went away) leaves the full screen first, so the message
    /// stays visible.
    private func sampleOrLeave(_ client: ControlClient) throws -> (TopView.Sample, Double) {
        do { return try sample(client, report: false) } catch let e as TopFailure {
            Terminal.leave()
            throw fail(e.message)
        }
    }

    /// One sample: `show`, then `port stats` of each bridge, then `dp-stats`, and when it
    /// was taken (monotonic seconds, the middle of the reads).
    func sample(_ client: ControlClient, report: Bool = true) throws -> (TopView.Sample, Double) {
        func ask(_ r: ControlRequest) throws -> ControlResult? {
            let response: ControlResponse
            do { response = try client.send(r) } catch {
                throw report ? fail("\(error)") as Error : TopFailure(message: "\(error)")
            }
            guard response.ok else {
                let message = response.error ?? "request failed (no error message)"
                throw report ? fail(message) as Error : TopFailure(message: message)
            }
            return response.result
        }
        let start = Self.monotonic()
        let bridges = try ask(ControlRequest(command: .show))?.bridges ?? []
        var ports: [TopView.Port] = []
        for b in bridges {
            let stats = try ask(ControlRequest(command: .portStats, bridge: b.name))?.stats ?? []
            let byName = Dictionary(stats.map { ($0.port, $0) }, uniquingKeysWith: { a, _ in a })
            for p in b.ports {
                ports.append(TopView.Port(bridge: b.name, name: p.name, link: p.link,
                                          stats: byName[p.name] ?? PortStats(port: p.name)))
            }
        }
        let datapath = try ask(ControlRequest(command: .datapathStats))?.datapath
        return (TopView.Sample(ports: ports, datapath: datapath), (start + Self.monotonic()) / 2)
    }

    static func monotonic() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

struct TopFailure: Error { var message: String }

/// The terminal while `top` runs: no echo, no line buffering (a key arrives at once), the
/// alternate screen, no cursor. Restored on return, on error and on SIGINT/SIGTERM/SIGHUP.
enum Terminal {
    /// The settings before `enter`, for the signal handler (async-signal-safe restore:
    /// tcsetattr and write only). Written once before the handlers are installed.
    nonisolated(unsafe) static var saved = termios()
    nonisolated(unsafe) static var active = false

    static let enterSequence = "\u{1B}[?1049h\u{1B}[?25l"
    static let leaveSequence = "\u{1B}[?25h\u{1B}[?1049l"

    static func enter() {
        tcgetattr(STDIN_FILENO, &saved)
        var raw = saved
        raw.c_lflag &= ~tcflag_t(ICANON | ECHO)
        tcsetattr(STDIN_FILENO, TCSANOW, &raw)
        active = true
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal(sig) { sig in
                tcsetattr(STDIN_FILENO, TCSANOW, &Terminal.saved)
                Terminal.leaveSequence.utf8CString.withUnsafeBufferPointer { _ = write(STDOUT_FILENO, $0.baseAddress, $0.count - 1) }
                _exit(128 + sig)
            }
        }
        put(enterSequence)
    }

    static func leave() {
        guard active else { return }
        active = false
        put(leaveSequence)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved)
        for sig in [SIGINT, SIGTERM, SIGHUP] { signal(sig, SIG_DFL) }
    }

    /// Waits for a key until `deadline` (monotonic seconds): true when it was q or Q, or
    /// stdin ended.
    static func waitForQuit(until deadline: Double) -> Bool {
        while true {
            let left = deadline - Top.monotonic()
            if left <= 0 { return false }
            var fds = pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0)
            let n = poll(&fds, 1, Int32(min(left * 1000, 60_000).rounded(.up)))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return n < 0 }
            var byte: UInt8 = 0
            let r = read(STDIN_FILENO, &byte, 1)
            if r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN) { return true }
            if r == 1 && (byte == UInt8(ascii: "q") || byte == UInt8(ascii: "Q")) { return true }
        }
    }

    /// Home, the frame line by line (each cleared to its end), then clear the rest.
    static func draw(_ lines: [String], rows: Int?) {
        let shown = rows.map { Array(lines.prefix($0)) } ?? lines
        put("\u{1B}[H" + shown.map { $0 + "\u{1B}[K" }.joined(separator: "\r\n") + "\u{1B}[J")
    }

    /// The window's rows and columns, nil when the terminal does not say.
    static var size: (rows: Int, columns: Int)? {
        var rows: Int32 = 0, cols: Int32 = 0
        guard vs_tty_size(STDOUT_FILENO, &rows, &cols) == 0, rows > 0, cols > 0 else { return nil }
        return (Int(rows), Int(cols))
    }

    static func put(_ s: String) {
        var bytes = Array(s.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeMutableBytes { write(STDOUT_FILENO, $0.baseAddress! + off, $0.count - off) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            off += n
        }
    }
}
