import CShims
import Logging

/// Why the endpoint's link is down (LinkReason.swift), from what the endpoint saw: its
/// state, the last connect error, the last request handled, the socket file's access.
extension VhostUserEndpoint {
    public var linkFacts: LinkFacts {
        let q = device.queueSummary
        let access = role == .server ? cachedSocketAccess() : nil
        return LinkFacts(state: state, path: path, retry: retryInterval, connectErrno: connectErrno?.code,
                         socket: access?.description, denied: access?.denied ?? [], blocker: access?.blocker, lastRequest: lastRequest?.raw,
                         memory: device.memory != nil,
                         rxRunning: q.contains { $0.running && $0.index % 2 == 0 },
                         txRunning: q.contains { $0.running && $0.index % 2 == 1 })
    }

    /// The port's reason (nil while it forwards) and how many seconds it has lasted, logged
    /// once per change (warning; info when the link comes back). `broken` is a corrupt
    /// ring the data plane reported and how long ago. Loop thread.
    @discardableResult
    public func checkLink(broken: (reason: LinkReason, seconds: Double)? = nil) -> (reason: LinkReason, seconds: Double)? {
        let reason = LinkReason.evaluate(linkFacts, broken: broken?.reason)
        let seconds = reason.map { broken?.seconds ?? Double(vs_monotonic_ns() &- since($0)) / 1e9 } ?? 0
        switch reasonLog.update(reason, seconds: seconds) {
        case .warning(let text)?: logger.warning("link down: \(text)", metadata: ["path": "\(path)"])
        case .recovered?: logger.info("link up", metadata: ["path": "\(path)"])
        case nil: break
        }
        return reason.map { ($0, seconds) }
    }

    private func cachedSocketAccess() -> SocketAccess? {
        let now = vs_monotonic_ns()
        if let c = socketAccess, Double(now &- c.at) / 1e9 < SocketAccess.cacheSeconds { return c.value }
        let value = SocketAccess.inspect(path)
        socketAccess = (now, value)
        return value
    }

    /// When the condition behind `reason` began (monotonic ns): a handshake stalls from its
    /// last request on, a failing connect from its first failure with that errno.
    private func since(_ reason: LinkReason) -> UInt64 {
        switch reason {
        case .connectFailed: return connectErrno?.since ?? stateSince
        case .handshake, .oneSided, .stoppedByFrontend: return lastRequest?.at ?? stateSince
        case .reconnecting, .listening, .broken: return stateSince
        }
    }
}

extension VhostUserEndpoint {
    /// The connected frontend's process and user (SO_PEERCRED), for `vswitch doctor`.
    public var peer: (pid: Int32, uid: UInt32)? {
        guard connFd >= 0 else { return nil }
        var pid: Int32 = 0, uid: UInt32 = 0, gid: UInt32 = 0
        guard vs_peer_credentials(connFd, &pid, &uid, &gid) == 0 else { return nil }
        return (pid, uid)
    }
}
