import CShims
import Syscalls
#if canImport(Glibc)
import Glibc
#endif

/// Assembles vhost-user messages from a nonblocking socket, one readiness event at a time.
///
/// A frontend may send a message in as many pieces as it likes, and stop in the middle of
/// one. The control thread must not wait for the rest (it serves every other port and the
/// control socket), so the bytes and descriptors of the message in progress wait here,
/// and `receive` returns `.needMore` until the message is whole. The owner closes a
/// connection that stays mid-message for too long (`startedAt`).
///
/// Each `recv` asks for no more than the rest of the current header or payload, so a read
/// never takes bytes of the next message; descriptors (SCM_RIGHTS) arrive with the first
/// byte of the `sendmsg` that carried them, so they always belong to the message being read.
struct MessageAssembler {
    enum Step {
        case message(VhostUserMessage)
        /// The socket has no more bytes now; wait for the next readiness event.
        case needMore
        /// The peer closed the connection (or it failed).
        case closed
    }

    private var headerBytes = [UInt8](repeating: 0, count: VhostUserHeader.size)
    private var headerHave = 0
    private var header: VhostUserHeader?
    private var payload: [UInt8] = []
    private var payloadHave = 0
    private var fds: [Int32] = []
    /// When the first byte of the message in progress arrived (monotonic ns); nil between messages.
    private(set) var startedAt: UInt64?

    var isMidMessage: Bool { startedAt != nil }

    /// Reads what the socket has of the current message. Throws for a malformed header or
    /// too many descriptors (whatever was held is closed first); the connection must then end.
    mutating func receive(from fd: Int32) throws(VhostUserError) -> Step {
        while true {
            let n: Int
            let wantsHeader = header == nil
            if wantsHeader {
                n = try take(Self.recv(fd, &headerBytes, at: headerHave))
            } else {
                n = try take(Self.recv(fd, &payload, at: payloadHave))
            }
            if n == 0 { return .closed }
            if n < 0 { return .needMore }
            if startedAt == nil { startedAt = vs_monotonic_ns() }
            if wantsHeader {
                headerHave += n
                guard headerHave == VhostUserHeader.size else { continue }
                let decoded: VhostUserHeader
                do { decoded = try VhostUserHeader(validating: headerBytes) } catch {
                    discard()
                    throw error
                }
                header = decoded
                payload = [UInt8](repeating: 0, count: Int(decoded.size))
                payloadHave = 0
            } else {
                payloadHave += n
            }
            if let h = header, payloadHave == Int(h.size) {
                let message = VhostUserMessage(header: h, payload: payload, fds: fds)
                fds = []   // now owned by the message
                reset()
                return .message(message)
            }
        }
    }

    /// Closes the descriptors of an unfinished message and forgets it (connection closed).
    mutating func discard() {
        for fd in fds { close(fd) }
        fds = []
        reset()
    }

    private mutating func reset() {
        headerHave = 0
        header = nil
        payload = []
        payloadHave = 0
        startedAt = nil
    }

    /// One recvmsg for the rest of `buffer` from `offset`.
    private static func recv(_ fd: Int32, _ buffer: inout [UInt8], at offset: Int)
        -> (n: Int, errno: Int32, fds: [Int32], truncated: Bool) {
        var received = [Int32](repeating: -1, count: Int(VS_MAX_FDS))
        var count: Int32 = 0
        var truncated: Int32 = 0
        let n = buffer.withUnsafeMutableBytes { b in
            vs_recv_with_fds(fd, b.baseAddress! + offset, b.count - offset, &received, VS_MAX_FDS, &count, &truncated)
        }
        let code = errno
        return (n, code, Array(received.prefix(Int(max(count, 0)))), truncated != 0)
    }

    /// Keeps the descriptors of one read and says what it got: the byte count, 0 on EOF
    /// or a hard error, -1 when the socket has nothing now.
    private mutating func take(_ r: (n: Int, errno: Int32, fds: [Int32], truncated: Bool)) throws(VhostUserError) -> Int {
        fds += r.fds
        if r.truncated || fds.count > Int(VS_MAX_FDS) {
            let total = fds.count
            discard()
            throw .badFdCount(request: "message", count: max(total, Int(VS_MAX_FDS) + 1))
        }
        if r.n < 0 { return r.errno == EAGAIN || r.errno == EWOULDBLOCK ? -1 : 0 }
        return r.n
    }
}
