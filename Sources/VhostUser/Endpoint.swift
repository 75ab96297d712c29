import CShims
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Which side of the Unix socket the switch is.
public enum SocketRole: Sendable {
    /// The switch listens on the path and QEMU connects (OVS `dpdkvhostuser`).
    case server
    /// QEMU listens (`server=on`); the switch connects, retrying once a second, and
    /// reconnects after the guest goes away (OVS `dpdkvhostuserclient`).
    case client
}

public enum EndpointError: Error, CustomStringConvertible {
    case pathInUse(String)
    case notASocket(String)
    case socketFailed(String, Int32)

    public var description: String {
        switch self {
        case .pathInUse(let p): return "\(p) is in use: another process listens on it"
        case .notASocket(let p): return "\(p) exists and is not a socket; refusing to replace it"
        case .socketFailed(let p, let e): return "cannot listen on \(p): \(String(cString: strerror(e)))"
        }
    }
}

/// One vhost-user socket (either role) and the device behind it. Lives on the control
/// `EventLoop` thread. Reconnects forever until `close()`.
public final class VhostUserEndpoint {
    public enum State: String, Sendable { case listening, connecting, connected, stopped }

    public let path: String
    public let role: SocketRole
    public let device: VhostUserDevice
    public private(set) var state: State = .stopped {
        didSet { if state != oldValue { stateSince = vs_monotonic_ns() } }
    }
    /// What `linkReason` is made of (Endpoint+Link.swift): when `state` began, the errno of
    /// the last failed connect and since when, the last request handled and when.
    var stateSince = vs_monotonic_ns()
    var connectErrno: (code: Int32, since: UInt64)?
    var lastRequest: (raw: UInt32, at: UInt64)?
    var reasonLog = LinkReasonLog()
    /// The socket file's access, re-read after `SocketAccess.cacheSeconds` (user lookups may
    /// go to the network with NSS; the link is checked every second).
    var socketAccess: (at: UInt64, value: SocketAccess?)?
    /// Group of the socket file a server port creates (`--socket-group`); nil: the daemon's.
    public var socketGroup: gid_t?
    private let loop: EventLoop
    let logger: Logger
    private var listenFd: Int32 = -1
    private(set) var connFd: Int32 = -1
    private var retryTimer: Int?
    public var retryInterval = 1.0
    /// Mode of the socket file of a server port: owner and group may connect, others not.
    /// Group access lets a QEMU running as another user in the socket's group connect
    /// (`socketGroup`, else the daemon's group or that of a setgid run directory); nobody
    /// else can reach the guest's port.
    public static let socketMode: mode_t = 0o660
    /// Device and inode of the socket file we bound, so `close()` removes only our own file.
    private var socketIdentity: (dev: UInt, ino: UInt)?
    /// Times a frontend's memory file shrank under the switch (each cost its connection).
    public private(set) var memoryFaults = 0
    /// Connections closed because the frontend stopped in the middle of a message.
    public private(set) var stalledMessages = 0
    /// Connections closed because the frontend left more than `ReplyQueue.limit` unread.
    public private(set) var unreadReplies = 0
    /// How long a frontend may take to finish a message it started.
    public var stallTimeout = 5.0
    /// Whole messages handled per readiness event before the loop serves others.
    static let messagesPerWakeup = 64
    private var assembler = MessageAssembler()
    private var replies = ReplyQueue()
    private var stallTimer: Int?
    /// The connections this endpoint cut to protect the others, by cause, for `vswitch show`
    /// (only causes that happened).
    public var faultCounts: [String: String] {
        let counts = [("memoryFaults", memoryFaults), ("stalledMessages", stalledMessages), ("unreadReplies", unreadReplies)]
        return Dictionary(uniqueKeysWithValues: counts.filter { $0.1 > 0 }.map { ($0.0, String($0.1)) })
    }
    /// Called on the loop thread after a frontend connects or disconnects.
    public var onStateChange: ((State) -> Void)?

    public init(path: String, role: SocketRole, backend: VhostUserBackend, loop: EventLoop, logger: Logger) {
        self.path = path
        self.role = role
        self.loop = loop
        self.logger = logger
        self.device = VhostUserDevice(backend: backend, logger: logger)
    }

    /// Starts listening (server) or connecting (client). Server errors are thrown so that
    /// `add-port` can report them; client retries happen in the background.
    public func start() throws {
        switch role {
        case .server:
            try listen()
            state = .listening
        case .client:
            state = .connecting
            tryConnect()
        }
    }

    /// Disconnects, stops retrying, releases the device (queues stopped, memory unmapped)
    /// and removes the socket file we created.
    public func close() {
        if let t = retryTimer { loop.cancelTimer(t) }
        retryTimer = nil
        dropConnection(reconnect: false)
        if listenFd >= 0 {
            loop.unregister(listenFd)
            Glibc.close(listenFd)
            listenFd = -1
            var st = stat()
            if let id = socketIdentity, lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFSOCK,
               UInt(st.st_dev) == id.dev, UInt(st.st_ino) == id.ino {
                unlink(path)
            }
            socketIdentity = nil
        }
        state = .stopped
    }

    // MARK: server role

    private func listen() throws {
        let gid = socketGroup.map { Int64($0) } ?? -1
        var fd = vs_unix_listen_owned(path, 4, UInt32(Self.socketMode), gid)
        if fd < 0 && errno == EADDRINUSE {
            try removeStaleSocket()
            fd = vs_unix_listen_owned(path, 4, UInt32(Self.socketMode), gid)
        }
        guard fd >= 0 else { throw EndpointError.socketFailed(path, errno) }
        listenFd = fd
        var st = stat()
        socketIdentity = lstat(path, &st) == 0 ? (UInt(st.st_dev), UInt(st.st_ino)) : nil
        loop.register(fd) { [weak self] _ in self?.accept() }
        logger.info("listening for a vhost-user frontend", metadata: ["path": "\(path)"])
    }

    /// A socket file left by an earlier run blocks bind(). Remove it only if it is a socket
    /// that nobody listens on; never delete anything else.
    private func removeStaleSocket() throws {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        guard st.st_mode & S_IFMT == S_IFSOCK else { throw EndpointError.notASocket(path) }
        let probe = vs_unix_connect(path)
        if probe >= 0 {
            Glibc.close(probe)
            throw EndpointError.pathInUse(path)
        }
        guard errno == ECONNREFUSED else { throw EndpointError.socketFailed(path, errno) }
        logger.info("removing stale socket", metadata: ["path": "\(path)"])
        unlink(path)
    }

    private func accept() {
        let fd = vs_accept(listenFd)
        guard fd >= 0 else { return }
        if connFd >= 0 {
            // One frontend per port: a second one is refused outright.
            logger.warning("refusing a second frontend on a connected port", metadata: ["path": "\(path)"])
            Glibc.close(fd)
            return
        }
        attach(fd)
    }

    // MARK: client role

    private func tryConnect() {
        retryTimer = nil
        guard state == .connecting else { return }
        let fd = vs_unix_connect(path)
        if fd < 0 {
            let code = errno
            // Said once per change by checkLink (Endpoint+Link.swift), not on every retry.
            if connectErrno?.code != code { connectErrno = (code, vs_monotonic_ns()) }
            retryTimer = loop.schedule(after: retryInterval) { [weak self] in self?.tryConnect() }
            return
        }
        attach(fd)
    }

    // MARK: connection

    private func attach(_ fd: Int32) {
        VhostUserConnection.configure(fd)
        connFd = fd
        connectErrno = nil
        lastRequest = nil
        state = .connected
        logger.info("frontend connected", metadata: ["path": "\(path)"])
        loop.register(fd) { [weak self] events in self?.ready(events) }
        onStateChange?(.connected)
    }

    private func ready(_ events: UInt32) {
        if events & vs_epollout() != 0 { flushReplies() }
        if connFd >= 0 && events & ~vs_epollout() != 0 { readable() }
    }

    /// Handles every whole message the socket has, up to a batch, so one busy frontend
    /// cannot keep the loop from the others (epoll reports the rest again).
    private func readable() {
        for _ in 0..<Self.messagesPerWakeup {
            guard connFd >= 0 else { return }
            let step: MessageAssembler.Step
            do {
                step = try assembler.receive(from: connFd)
            } catch {
                logger.warning("bad message from frontend: \(error); disconnecting", metadata: ["path": "\(path)"])
                dropConnection(reconnect: true)
                return
            }
            switch step {
            case .message(let message):
                process(message)
            case .needMore:
                armStallTimer()
                return
            case .closed:
                dropConnection(reconnect: true)
                return
            }
        }
        armStallTimer()
    }

    /// A frontend that stops in the middle of a message holds nothing but its own
    /// connection; after `stallTimeout` the connection is closed (and the port accepts or
    /// reconnects again, as after any disconnect).
    private func armStallTimer() {
        guard stallTimer == nil, let started = assembler.startedAt else { return }
        let elapsed = Double(vs_monotonic_ns() &- started) / 1e9
        stallTimer = loop.schedule(after: max(stallTimeout - elapsed, 0)) { [weak self] in self?.stallTimerFired() }
    }

    private func stallTimerFired() {
        stallTimer = nil
        guard connFd >= 0, let started = assembler.startedAt else { return }
        let elapsed = Double(vs_monotonic_ns() &- started) / 1e9
        guard elapsed >= stallTimeout else { return armStallTimer() }   // a later message
        stalledMessages += 1
        logger.warning("frontend stalled in the middle of a message for \(Int(stallTimeout)) s; disconnecting",
                       metadata: ["path": "\(path)"])
        dropConnection(reconnect: true)
    }

    private func process(_ message: VhostUserMessage) {
        let wantsAck = message.header.needsReply
            && device.ackedProtocolFeatures & VhostUserProtocolFeature.replyAck != 0
        let request = message.header.request
        lastRequest = (request, vs_monotonic_ns())
        do {
            let reply = try device.handle(message)
            if let reply {
                send(reply: reply, to: request)
            } else if wantsAck {
                send(reply: encodeU64(0), to: request)
            }
        } catch {
            logger.warning("rejected request \(request): \(error)", metadata: ["path": "\(path)"])
            if wantsAck {
                send(reply: encodeU64(1), to: request)
            } else if VhostUserRequest(rawValue: request).map({ Self.hasReply($0) || Self.changesMemory($0) }) ?? false {
                // The frontend waits for a reply we cannot give, or would go on believing its
                // memory was mapped or unmapped: cut the session.
                dropConnection(reconnect: true)
            }
        }
    }

    private func send(reply payload: [UInt8], to request: UInt32) {
        guard connFd >= 0 else { return }
        let header = VhostUserHeader(request: request, flags: VhostUserHeader.version | VhostUserHeader.replyFlag,
                                     size: UInt32(payload.count))
        let wasEmpty = replies.isEmpty
        handle(replies.send(header.encoded + payload, on: connFd), wasWaiting: !wasEmpty)
    }

    private func flushReplies() {
        guard connFd >= 0 else { return }
        handle(replies.flush(on: connFd), wasWaiting: true)
    }

    private func handle(_ outcome: ReplyQueue.Outcome, wasWaiting: Bool) {
        switch outcome {
        case .sent:
            if wasWaiting { loop.watchWritable(connFd, false) }
        case .waiting:
            if !wasWaiting { loop.watchWritable(connFd, true) }
        case .overflow:
            unreadReplies += 1
            logger.warning("frontend does not read its replies (\(ReplyQueue.limit / 1024) KiB waiting); disconnecting",
                           metadata: ["path": "\(path)"])
            dropConnection(reconnect: true)
        case .failed:
            dropConnection(reconnect: true)
        }
    }

    /// Disconnects the frontend if a file behind its memory table shrank under the switch
    /// (the SIGBUS guard replaced that mapping with zeros); as after any disconnect, the
    /// port then accepts or reconnects again. Loop thread; true if it disconnected.
    @discardableResult
    public func checkMemory() -> Bool {
        guard connFd >= 0, let region = device.memory?.faultedRegion else { return false }
        memoryFaults += 1
        logger.error("memory file shrunk under the switch: the frontend truncated the file behind a memory region; disconnecting",
                     metadata: ["path": "\(path)", "region": "\(region)"])
        dropConnection(reconnect: true)
        return true
    }

    /// Memory changes a frontend without REPLY_ACK cannot learn failed.
    private static func changesMemory(_ r: VhostUserRequest) -> Bool {
        [.setMemTable, .addMemReg, .remMemReg].contains(r)
    }

    private static func hasReply(_ r: VhostUserRequest) -> Bool {
        [.getFeatures, .getProtocolFeatures, .getVringBase, .getQueueNum, .getMaxMemSlots, .setLogBase].contains(r)
    }

    private func dropConnection(reconnect: Bool) {
        guard connFd >= 0 else { return }
        loop.unregister(connFd)
        Glibc.close(connFd)
        connFd = -1
        assembler.discard()
        replies.clear()
        if let t = stallTimer { loop.cancelTimer(t) }
        stallTimer = nil
        device.reset()   // stops queues in the data plane first, then closes fds and unmaps
        logger.info("frontend disconnected", metadata: ["path": "\(path)"])
        switch role {
        case .server: state = .listening
        case .client:
            state = .connecting
            if reconnect { retryTimer = loop.schedule(after: retryInterval) { [weak self] in self?.tryConnect() } }
        }
        onStateChange?(state)
    }
}
