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
    public enum State: String { case listening, connecting, connected, stopped }

    public let path: String
    public let role: SocketRole
    public let device: VhostUserDevice
    public private(set) var state: State = .stopped
    private let loop: EventLoop
    private let logger: Logger
    private var listenFd: Int32 = -1
    private var connFd: Int32 = -1
    private var retryTimer: Int?
    private var loggedWaiting = false
    public var retryInterval = 1.0
    /// Mode of the socket file of a server port: owner and group may connect, others not.
    /// Group access lets a QEMU running as another user in the daemon's group (or in the
    /// group of a setgid run directory) connect; nobody else can reach the guest's port.
    public static let socketMode: mode_t = 0o660
    /// Device and inode of the socket file we bound, so `close()` removes only our own file.
    private var socketIdentity: (dev: UInt, ino: UInt)?
    /// Times a frontend's memory file shrank under the switch (each cost its connection).
    public private(set) var memoryFaults = 0
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
        var fd = vs_unix_listen_mode(path, 4, UInt32(Self.socketMode))
        if fd < 0 && errno == EADDRINUSE {
            try removeStaleSocket()
            fd = vs_unix_listen_mode(path, 4, UInt32(Self.socketMode))
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
            if !loggedWaiting {
                logger.info("waiting for the frontend's socket", metadata: ["path": "\(path)",
                                                                            "reason": "\(String(cString: strerror(errno)))"])
                loggedWaiting = true
            }
            retryTimer = loop.schedule(after: retryInterval) { [weak self] in self?.tryConnect() }
            return
        }
        loggedWaiting = false
        attach(fd)
    }

    // MARK: connection

    private func attach(_ fd: Int32) {
        VhostUserConnection.configure(fd)
        connFd = fd
        state = .connected
        logger.info("frontend connected", metadata: ["path": "\(path)"])
        loop.register(fd) { [weak self] _ in self?.readable() }
        onStateChange?(.connected)
    }

    private func readable() {
        guard connFd >= 0 else { return }
        let message: VhostUserMessage
        do {
            message = try VhostUserConnection.read(connFd)
        } catch {
            if error != .peerClosed { logger.warning("bad message from frontend: \(error); disconnecting", metadata: ["path": "\(path)"]) }
            dropConnection(reconnect: true)
            return
        }
        process(message)
    }

    private func process(_ message: VhostUserMessage) {
        let wantsAck = message.header.needsReply
            && device.ackedProtocolFeatures & VhostUserProtocolFeature.replyAck != 0
        let request = message.header.request
        do {
            let reply = try device.handle(message)
            if let reply {
                _ = VhostUserConnection.reply(connFd, to: request, payload: reply)
            } else if wantsAck {
                _ = VhostUserConnection.reply(connFd, to: request, payload: encodeU64(0))
            }
        } catch {
            logger.warning("rejected request \(request): \(error)", metadata: ["path": "\(path)"])
            if wantsAck {
                _ = VhostUserConnection.reply(connFd, to: request, payload: encodeU64(1))
            } else if VhostUserRequest(rawValue: request).map(Self.hasReply) ?? false {
                // The frontend waits for a reply we cannot give: cut the session.
                dropConnection(reconnect: true)
            }
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

    private static func hasReply(_ r: VhostUserRequest) -> Bool {
        [.getFeatures, .getProtocolFeatures, .getVringBase, .getQueueNum, .getMaxMemSlots].contains(r)
    }

    private func dropConnection(reconnect: Bool) {
        guard connFd >= 0 else { return }
        loop.unregister(connFd)
        Glibc.close(connFd)
        connFd = -1
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
