import Dispatch
import Foundation
import Syscalls
#if canImport(Glibc)
import Glibc
#endif

/// Why the control socket could not be set up.
public enum ControlServerError: Error, CustomStringConvertible, Equatable {
    case pathTooLong(path: String)
    /// A live daemon answered on the path; we must not steal its socket.
    case alreadyListening(path: String)
    /// Something other than a socket is at the path; we never delete it.
    case notASocket(path: String)
    case systemCall(call: String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case .pathTooLong(let path):
            return "control socket path is empty or too long (max 107 bytes): \(path)"
        case .alreadyListening(let path):
            return "another vswitchd is already listening on \(path)"
        case .notASocket(let path):
            return "\(path) exists and is not a socket; refusing to replace it"
        case .systemCall(let call, let path, let code):
            return "control socket \(path): \(call) failed: \(errnoDescription(code))"
        }
    }
}

/// Serves the control protocol on a Unix stream socket.
///
/// Concurrency: each accepted connection gets its own thread, so a client that connects and
/// then stalls (or a long-lived monitoring connection) never delays anyone else. Calls to
/// `handler`, however, are serialized by a lock: control commands are rare and quick, and
/// serializing them means the daemon never sees two of them race (two `add-port` for the same
/// name, `del-br` during `show`). Idle connections are dropped after `idleTimeout`, and at most
/// `maxConnections` are served at once, so a misbehaving client cannot pile up threads.
///
/// Socket file lifecycle: `init` creates the parent directory (0755) if needed, replaces a
/// stale socket left by a crashed daemon, refuses to run beside a live one, and never deletes
/// anything that is not a socket. `stop()` removes the socket file only if it is still ours.
public final class ControlServer: @unchecked Sendable {
    public typealias Handler = @Sendable (ControlRequest) -> ControlResponse

    public let path: String
    public static let idleTimeout: Double = 60
    public static let sendTimeout: Double = 10
    public static let maxConnections = 32

    private let handler: Handler
    private let access: ControlAccess
    /// Optional, set before `start()`: claims requests that stream (live capture). Called
    /// like `handler` (serialized); nil means "not mine, ask `handler`". When it returns a
    /// body, the response line is sent and the body then owns the connection (on this
    /// connection's thread) until it returns; the connection is closed after it.
    public typealias Streamer = @Sendable (ControlRequest, Int32) -> (ControlResponse, (@Sendable () -> Void)?)?
    public var streamer: Streamer?
    /// Serializes handler calls; also taken by `stop()` to wait out a call in progress.
    private let handlerLock = NSLock()
    /// Guards everything below.
    private let lock = NSLock()
    private var listenFD: Int32
    private var connections = Set<Int32>()
    private var started = false
    private var stopped = false
    private let acceptLoopDone = DispatchSemaphore(value: 0)
    /// Device and inode of the socket we bound, so `stop()` never unlinks a successor's socket.
    private let socketIdentity: (dev: UInt, ino: UInt)

    /// Binds and listens on `path` (but does not accept until `start()`).
    /// - Parameter permissions: mode of the socket file; 0600 (root only) by default, 0660 to
    ///   let a group run `vswitch` without sudo.
    /// - Parameter group: group id the socket file is given to (with 0660), or nil to keep
    ///   the daemon's group.
    /// - Parameter access: whose connections are served (SO_PEERCRED); others get one error
    ///   line and are disconnected.
    public init(path: String, permissions: mode_t = 0o600, group: gid_t? = nil,
                access: ControlAccess = .daemonDefault(), handler: @escaping Handler) throws {
        self.path = path
        self.handler = handler
        self.access = access
        guard let addr = UnixSocket.address(for: path) else {
            throw ControlServerError.pathTooLong(path: path)
        }
        try Self.createParentDirectory(of: path)
        try Self.removeStaleSocket(at: path, addr: addr)

        let fd = UnixSocket.makeStreamSocket()
        guard fd >= 0 else { throw ControlServerError.systemCall(call: "socket", path: path, errno: errno) }
        func fail(_ call: String, _ code: Int32) -> ControlServerError {
            close(fd)
            return ControlServerError.systemCall(call: call, path: path, errno: code)
        }
        let bindError = UnixSocket.bind(fd, to: addr)
        if bindError == EADDRINUSE {
            close(fd)  // someone bound it between our check and our bind
            throw ControlServerError.alreadyListening(path: path)
        }
        guard bindError == 0 else { throw fail("bind", bindError) }
        // chmod before listen(): until listen nobody can connect, so there is no window in
        // which the socket is reachable with the umask's (possibly looser) mode.
        guard chmod(path, permissions) == 0 else {
            let code = errno
            unlink(path)
            throw fail("chmod", code)
        }
        if let group, chown(path, uid_t.max, group) != 0 {  // uid_t.max: (uid_t)-1, keep the owner
            let code = errno
            unlink(path)
            throw fail("chown", code)
        }
        var st = stat()
        guard stat(path, &st) == 0 else { throw fail("stat", errno) }
        socketIdentity = (UInt(st.st_dev), UInt(st.st_ino))
        guard listen(fd, 16) == 0 else {
            let code = errno
            unlink(path)
            throw fail("listen", code)
        }
        listenFD = fd
    }

    deinit { stop() }

    /// Starts accepting connections on a background thread. Calling it twice does nothing.
    public func start() {
        let shouldStart = lock.withLock { () -> Bool in
            guard !started, !stopped else { return false }
            started = true
            return true
        }
        guard shouldStart else { return }
        let thread = Thread { [self] in acceptLoop() }
        thread.name = "vswitch-control"
        thread.start()
    }

    /// Stops accepting, disconnects clients, waits for a handler call in progress to finish,
    /// and removes the socket file. After it returns the handler is not called again.
    /// Idempotent. Must not be called from inside the handler (it waits for the handler).
    public func stop() {
        let wasStarted: Bool? = lock.withLock {
            guard !stopped else { return nil }
            stopped = true
            // shutdown() wakes a thread blocked in accept()/recv() on Linux; close() would not,
            // and closing an fd another thread still uses invites fd-number reuse bugs. The
            // owning threads close their fds once they wake up.
            for fd in connections { shutdown(fd, Int32(SHUT_RDWR)) }
            if started { shutdown(listenFD, Int32(SHUT_RDWR)) } else { close(listenFD) }
            return started
        }
        guard let wasStarted else { return }
        handlerLock.withLock {}
        if wasStarted { acceptLoopDone.wait() }
        var st = stat()
        if lstat(path, &st) == 0, UInt(st.st_dev) == socketIdentity.dev, UInt(st.st_ino) == socketIdentity.ino {
            unlink(path)
        }
    }

    // MARK: - Setup helpers

    /// `mkdir -p` of the socket's directory (/run/vswitch is on tmpfs and gone after a reboot).
    /// New directories get 0755 regardless of umask so unprivileged users can reach a 0660 socket.
    private static func createParentDirectory(of path: String) throws {
        let parent = (path as NSString).deletingLastPathComponent
        guard !parent.isEmpty else { return }
        var prefix = parent.hasPrefix("/") ? "" : "."
        for component in parent.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, 0o755) == 0 {
                _ = chmod(prefix, 0o755)
            } else if errno != EEXIST {
                throw ControlServerError.systemCall(call: "mkdir \(prefix)", path: path, errno: errno)
            }
        }
    }

    /// A socket file whose listener died (daemon crash, SIGKILL) stays on disk and makes bind
    /// fail with EADDRINUSE. Probing with connect() tells stale (ECONNREFUSED) from live.
    private static func removeStaleSocket(at path: String, addr: sockaddr_un) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else {
            if errno == ENOENT { return }
            throw ControlServerError.systemCall(call: "lstat", path: path, errno: errno)
        }
        guard (st.st_mode & S_IFMT) == S_IFSOCK else { throw ControlServerError.notASocket(path: path) }
        let probe = UnixSocket.makeStreamSocket()
        guard probe >= 0 else { throw ControlServerError.systemCall(call: "socket", path: path, errno: errno) }
        UnixSocket.setTimeout(probe, option: SO_SNDTIMEO, seconds: 1)
        let rc = UnixSocket.connect(probe, to: addr)
        close(probe)
        switch rc {
        case 0, EAGAIN:  // EAGAIN: a live listener with a full backlog
            throw ControlServerError.alreadyListening(path: path)
        case ECONNREFUSED:
            guard unlink(path) == 0 || errno == ENOENT else {
                throw ControlServerError.systemCall(call: "unlink stale socket", path: path, errno: errno)
            }
        default:
            throw ControlServerError.systemCall(call: "connect (probing existing socket)", path: path, errno: rc)
        }
    }

    // MARK: - Serving

    private var isStopped: Bool { lock.withLock { stopped } }

    private func acceptLoop() {
        defer {
            close(listenFD)
            acceptLoopDone.signal()
        }
        while true {
            // accept4 is not exported by the Glibc module; set FD_CLOEXEC right after instead.
            let (fd, code) = Syscall.retrying { accept(listenFD, nil, nil) }
            if fd < 0 {
                if isStopped { return }
                if code != ECONNABORTED {
                    usleep(100_000)  // EMFILE and friends: back off instead of spinning
                }
                continue
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            let admitted: Bool? = lock.withLock { () -> Bool? in
                if stopped { return nil }
                guard connections.count < Self.maxConnections else { return false }
                connections.insert(fd)
                return true
            }
            switch admitted {
            case nil:
                close(fd)
                return
            case false?:
                _ = UnixSocket.sendAll(fd, (try? ControlCoding.encode(
                    ControlResponse.failure("too many control connections; try again"))) ?? Data())
                close(fd)
            case true?:
                let thread = Thread { [self] in serve(fd) }
                thread.name = "vswitch-control-conn"
                thread.start()
            }
        }
    }

    /// Answers request lines on one connection until EOF, idle timeout, error or oversize line.
    private func serve(_ fd: Int32) {
        defer {
            lock.withLock { _ = connections.remove(fd) }  // before close: see stop()
            close(fd)
        }
        UnixSocket.setTimeout(fd, option: SO_RCVTIMEO, seconds: Self.idleTimeout)
        UnixSocket.setTimeout(fd, option: SO_SNDTIMEO, seconds: Self.sendTimeout)
        var reader = LineReader(fd: fd, maxLineBytes: ControlWire.maxLineBytes)
        if let refusal = access.refusal(forPeerOf: fd) {
            // Take the client's request before closing: a close with unread data, or before the
            // client has written, would show up there as a reset instead of this message.
            UnixSocket.setTimeout(fd, option: SO_RCVTIMEO, seconds: 1)
            _ = reply(.failure(refusal), on: fd)
            var drain = LineReader(fd: fd, maxLineBytes: 4096)  // a stranger gets no big buffer
            _ = drain.next()
            return
        }
        while true {
            switch reader.next() {
            case .line(let line):
                let (response, body) = respond(to: line, fd: fd)
                guard reply(response, on: fd) else { return }
                if let body { return body() }
            case .tooLong:
                // We cannot find the start of the next request reliably, so end the connection.
                _ = reply(.failure("malformed request: line longer than \(ControlWire.maxLineBytes) bytes"), on: fd)
                return
            case .endOfStream, .timedOut, .failed:
                return
            }
        }
    }

    private func respond(to line: Data, fd: Int32) -> (ControlResponse, (@Sendable () -> Void)?) {
        let request: ControlRequest
        do {
            request = try ControlCoding.decodeRequest(line)
        } catch {
            return (.failure("\(error)"), nil)
        }
        return handlerLock.withLock {
            if isStopped { return (.failure("vswitchd is shutting down"), nil) }
            return streamer?(request, fd) ?? (handler(request), nil)
        }
    }

    private func reply(_ response: ControlResponse, on fd: Int32) -> Bool {
        let data = (try? ControlCoding.encode(response))
            ?? Data("{\"error\":\"internal error: cannot encode response\",\"ok\":false}\n".utf8)
        return UnixSocket.sendAll(fd, data) == 0
    }
}
