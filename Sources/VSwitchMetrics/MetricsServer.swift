import Foundation
import Syscalls
#if canImport(Glibc)
import Glibc
#endif

/// `vswitchd --metrics ADDRESS:PORT`: serves `MetricsHTTP` on its own thread, one `poll`
/// over the listening socket and every open connection, all nonblocking. So a client that
/// sends half a request, or never reads its answer, holds only its own slot until its
/// deadline, never another scrape and never the control loop. Bounded: at most
/// `maxConnections` at once (more are closed at accept), `MetricsHTTP.maxHeadBytes` of
/// request, `deadline` seconds per connection. Why not SwiftNIO: this is one GET a few
/// times a minute; an event-loop library and its dependencies for it would be most of the
/// daemon's link time and binary size.
public final class MetricsServer: @unchecked Sendable {
    public static let maxConnections = 16
    public static let deadline: Double = 10

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    private let listenFd: Int32
    private let wake: (read: Int32, write: Int32)
    private let provider: @Sendable () -> [UInt8]
    public let address: MetricsAddress

    private final class Connection {
        let fd: Int32
        let opened = Date()
        var input: [UInt8] = []
        var output: [UInt8]?
        var sent = 0
        init(fd: Int32) { self.fd = fd }
    }

    /// Binds and listens (errors here stop vswitchd at start); `provider` renders the body
    /// of each GET /metrics and is called on the metrics thread.
    public init(address: MetricsAddress, provider: @escaping @Sendable () -> [UInt8]) throws(Failure) {
        let fd = socket(address.domain, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "metrics: socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if address.domain == AF_INET6 { _ = setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size)) }
        let bound = address.withSockaddr { bind(fd, $0, $1) }
        guard bound == 0, listen(fd, 64) == 0 else {
            let e = String(cString: strerror(errno))
            close(fd)
            throw Failure(description: "metrics: cannot listen on \(address): \(e)")
        }
        var p: [Int32] = [0, 0]
        guard pipe(&p) == 0 else {
            close(fd)
            throw Failure(description: "metrics: pipe: \(String(cString: strerror(errno)))")
        }
        for f in p { Self.setNonblockingCloexec(f) }
        listenFd = fd
        wake = (p[0], p[1])
        self.address = address
        self.provider = provider
    }

    public func start() {
        let t = Thread { [self] in serve() }
        t.name = "vswitch-metrics"
        t.start()
    }

    /// Wakes the thread, which closes every socket and returns. Does not wait: a scrape
    /// being rendered waits for the control loop, which may already have stopped.
    public func stop() {
        var b: UInt8 = 1
        _ = write(wake.write, &b, 1)
    }

    private func serve() {
        var conns: [Connection] = []
        // The wake pipe stays open: `stop()` may still write to it after this returns.
        defer {
            for c in conns { close(c.fd) }
            close(listenFd)
        }
        while true {
            var fds = [pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: listenFd, events: Int16(POLLIN), revents: 0)]
            fds += conns.map { pollfd(fd: $0.fd, events: Int16($0.output == nil ? POLLIN : POLLOUT), revents: 0) }
            let (n, _) = Syscall.retrying { poll(&fds, nfds_t(fds.count), 1000) }
            if n < 0 { return }
            if fds[0].revents != 0 { return }
            // The polled connections first: `fds` has no entry for those accepted below.
            for (i, c) in conns.enumerated() where fds[i + 2].revents != 0 {
                c.output == nil ? read(c) : send(c)
            }
            if fds[1].revents != 0 { accept(into: &conns) }
            let now = Date()
            conns.removeAll { c in
                let done = (c.output.map { c.sent >= $0.count } ?? false) || c.sent < 0
                    || now.timeIntervalSince(c.opened) > Self.deadline
                if done { close(c.fd) }
                return done
            }
        }
    }

    private func accept(into conns: inout [Connection]) {
        while true {
            let fd = Glibc.accept(listenFd, nil, nil)
            if fd < 0 { return }   // EAGAIN: none left (or a transient error: poll tries again)
            Self.setNonblockingCloexec(fd)
            if conns.count >= Self.maxConnections {
                close(fd)
                continue
            }
            conns.append(Connection(fd: fd))
        }
    }

    private static func setNonblockingCloexec(_ fd: Int32) {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    }

    private func read(_ c: Connection) {
        var buf = [UInt8](repeating: 0, count: 4096)
        let (n, e) = Syscall.retrying { recv(c.fd, &buf, buf.count, 0) }
        if n < 0 && (e == EAGAIN || e == EWOULDBLOCK) { return }
        guard n > 0 else { c.sent = -1; return }   // closed or failed: drop it
        c.input += buf[..<n]
        let parsed = MetricsHTTP.parse(c.input)
        guard parsed != .incomplete else { return }
        c.output = MetricsHTTP.respond(to: parsed, metrics: provider)
        send(c)
    }

    private func send(_ c: Connection) {
        guard let out = c.output else { return }
        while c.sent < out.count {
            let (n, e) = out.withUnsafeBytes { b in
                Syscall.retrying { Glibc.send(c.fd, b.baseAddress! + c.sent, b.count - c.sent, Int32(MSG_NOSIGNAL)) }
            }
            if n < 0 {
                if e != EAGAIN && e != EWOULDBLOCK { c.sent = -1 }
                return
            }
            c.sent += n
        }
    }
}
