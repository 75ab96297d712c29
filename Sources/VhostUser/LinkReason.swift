#if canImport(Glibc)
import Glibc
#endif

/// Why a vhost-user port is not forwarding, worded for `vswitch show` and the log. "Link
/// down" alone sends a user to QEMU's log, libvirt's log and the socket's permissions in
/// turn; each case here names the one thing the switch can see and what usually causes it.
/// The values carry no durations, so a reason is the same value for as long as it lasts
/// and can be logged once; `text(seconds:)` adds how long it has lasted.
public enum LinkReason: Equatable, Sendable {
    /// Client role: `connect` to the frontend's socket failed with `errno`.
    case connectFailed(path: String, errno: Int32, retry: Double)
    /// Client role: waiting to retry after the frontend went away (no failure seen yet).
    case reconnecting(path: String, retry: Double)
    /// Server role: no frontend has connected. `socket` is the socket's owner, group and
    /// mode ("root:root 0660"); `denied` the common QEMU users on this host that may not
    /// connect to it.
    /// `blocker`: a directory above the socket that keeps them out, if it is not the socket.
    case listening(path: String, socket: String, denied: [String], blocker: String? = nil)
    /// Connected, but the rings are not set up; `last` is the last request handled (nil:
    /// none yet) and `memory` whether a memory table arrived.
    case handshake(last: String?, memory: Bool)
    /// Connected, but the frontend stopped the rings (its last request was GET_VRING_BASE):
    /// QEMU does that when the guest is paused, has been migrated to another port, or its
    /// virtio-net device is reset or shut down. Nothing is stalled on the switch's side.
    case stoppedByFrontend
    /// Connected and set up on one side only: the guest runs its TX rings but no RX ring
    /// (`rx` false), or the other way round.
    case oneSided(rxRunning: Bool)
    /// A ring was stopped because the guest corrupted it (virtqueue `queue`), at `at`
    /// (local time, "12:01:03").
    case broken(queue: Int, fault: String, at: String)

    /// Seconds a handshake may pause, or a guest may run one direction only, before it
    /// counts as stalled (QEMU sends the whole set-up within milliseconds).
    public static let stallSeconds = 5.0
    /// Seconds without a frontend on a listening socket before the socket's group is
    /// suspected (a guest booting under TCG connects within seconds).
    public static let lonelySeconds = 40.0

    /// The reason's wording after it has lasted `seconds`.
    public func text(seconds: Int) -> String {
        switch self {
        case .connectFailed(let path, let e, let retry):
            return "connecting: \(Self.connectError(path, e)), retrying every \(Self.seconds(retry))"
        case .reconnecting(let path, let retry):
            return "connecting: the frontend went away; reconnecting to \(path) every \(Self.seconds(retry))"
        case .listening(_, let socket, let denied, let blocker):
            let waited = seconds > 0 ? "no frontend has connected for \(seconds) s" : "no frontend has connected yet"
            let who = denied.joined(separator: " and ")
            if let blocker, !denied.isEmpty {
                return "listening: \(waited) (QEMU as \(who) cannot reach the socket: \(blocker))"
            }
            if !denied.isEmpty {
                return "listening: \(waited) (the socket is \(socket): QEMU as \(who) cannot connect; use --socket-group)"
            }
            guard Double(seconds) >= Self.lonelySeconds else { return "listening: \(waited)" }
            return "listening: \(waited) (check the socket's group: \(socket); QEMU as libvirt-qemu needs --socket-group)"
        case .handshake(let last, let memory):
            guard Double(seconds) >= Self.stallSeconds else {
                return "handshake in progress" + (last.map { " (last request \($0))" } ?? "")
            }
            guard let last else { return "handshake stalled: the frontend connected but sent nothing for \(seconds) s" }
            return "handshake stalled at \(last) for \(seconds) s"
                + (memory ? "" : " (no memory table yet: the guest's virtio-net driver has not started the device)")
        case .stoppedByFrontend:
            return "stopped by the frontend (GET_VRING_BASE\(seconds > 0 ? " \(seconds) s ago" : "")): the guest is paused,"
                + " was migrated to another port, or its driver stopped the device; the rings restart when the frontend starts them"
        case .oneSided(let rxRunning):
            return rxRunning ? "up, but the guest has not enabled its TX queue"
                : "up, but the guest has not enabled its RX queue (driver not loaded?)"
        case .broken(let queue, let fault, let at):
            return "broken: the guest wrote a bad descriptor on \(Self.queueName(queue)) at \(at) (\(fault));"
                + " it works again when the guest resets the device"
        }
    }

    /// Seconds a reason must last before it is logged: passing states of a healthy start
    /// (a handshake, a guest still booting) are not worth a warning.
    public var warnAfter: Double {
        switch self {
        case .connectFailed, .broken: return 0
        // The next failed connect (within a retry) usually says more: log that one instead.
        case .reconnecting(_, let retry): return 2 * retry
        case .listening(_, _, let denied, _): return denied.isEmpty ? Self.lonelySeconds : 0
        case .handshake, .oneSided, .stoppedByFrontend: return Self.stallSeconds
        }
    }

    /// "RX queue 0" for virtqueue 0, "TX queue 0" for virtqueue 1 (as the guest names them).
    public static func queueName(_ virtqueue: Int) -> String {
        (virtqueue % 2 == 0 ? "RX" : "TX") + " queue \(virtqueue / 2)"
    }

    /// The request's name as vhost-user.rst spells it: setMemTable -> SET_MEM_TABLE.
    public static func requestName(_ raw: UInt32) -> String {
        guard let request = VhostUserRequest(rawValue: raw) else { return "request \(raw)" }
        var name = ""
        for c in "\(request)" {
            if c.isUppercase { name += "_" }
            name += c.uppercased()
        }
        return name
    }

    static func connectError(_ path: String, _ e: Int32) -> String {
        switch e {
        case ENOENT: return "\(path) does not exist (QEMU not started yet?)"
        case EACCES, EPERM: return "permission denied on \(path) (check the mode of the socket and of its directories)"
        case ECONNREFUSED: return "connection refused on \(path) (stale socket, no QEMU listening)"
        default: return "\(path): \(String(cString: strerror(e)))"
        }
    }

    static func seconds(_ s: Double) -> String {
        s == s.rounded() ? "\(Int(s)) s" : "\(s) s"
    }
}

/// Logs each reason once: when it has lasted its `warnAfter`, and once more (at info) when
/// the link comes up after a logged reason. A reason that changes value (another errno,
/// another last request) counts as new.
public struct LinkReasonLog {
    private var logged: LinkReason?

    public init() {}

    public enum Entry: Equatable {
        case warning(String)
        case recovered
    }

    /// What to log now, if anything, given the reason (nil: forwarding) that has lasted `seconds`.
    public mutating func update(_ reason: LinkReason?, seconds: Double) -> Entry? {
        guard let reason else {
            defer { logged = nil }
            return logged != nil ? .recovered : nil
        }
        guard reason != logged, seconds >= reason.warnAfter else { return nil }
        logged = reason
        return .warning(reason.text(seconds: Int(seconds)))
    }
}

/// What an endpoint knows about its link, from which `LinkReason.evaluate` picks the reason.
public struct LinkFacts: Equatable, Sendable {
    public var state: VhostUserEndpoint.State
    public var path: String
    public var retry: Double
    /// Client role: errno of the last failed `connect` since the last connection.
    public var connectErrno: Int32?
    /// Server role: the socket's owner, group and mode, and the QEMU users it keeps out.
    public var socket: String?
    public var denied: [String]
    public var blocker: String?
    /// Raw value of the last request handled on this connection.
    public var lastRequest: UInt32?
    public var memory: Bool
    public var rxRunning: Bool
    public var txRunning: Bool

    public init(state: VhostUserEndpoint.State, path: String, retry: Double = 1, connectErrno: Int32? = nil,
                socket: String? = nil, denied: [String] = [], blocker: String? = nil, lastRequest: UInt32? = nil, memory: Bool = false,
                rxRunning: Bool = false, txRunning: Bool = false) {
        self.state = state
        self.path = path
        self.retry = retry
        self.connectErrno = connectErrno
        self.socket = socket
        self.denied = denied
        self.blocker = blocker
        self.lastRequest = lastRequest
        self.memory = memory
        self.rxRunning = rxRunning
        self.txRunning = txRunning
    }
}

extension LinkReason {
    /// The reason for these facts; nil when the port forwards (an RX and a TX ring run) or
    /// is stopped. A corrupt ring (`broken`, from the data plane) outranks everything.
    public static func evaluate(_ f: LinkFacts, broken: LinkReason? = nil) -> LinkReason? {
        if let broken { return broken }
        switch f.state {
        case .stopped:
            return nil
        case .connecting:
            guard let e = f.connectErrno else { return .reconnecting(path: f.path, retry: f.retry) }
            return .connectFailed(path: f.path, errno: e, retry: f.retry)
        case .listening:
            return .listening(path: f.path, socket: f.socket ?? "missing", denied: f.denied, blocker: f.blocker)
        case .connected:
            if f.rxRunning && f.txRunning { return nil }
            if f.memory && (f.rxRunning || f.txRunning) { return .oneSided(rxRunning: f.rxRunning) }
            if f.memory && f.lastRequest == VhostUserRequest.getVringBase.rawValue { return .stoppedByFrontend }
            return .handshake(last: f.lastRequest.map(requestName), memory: f.memory)
        }
    }
}
