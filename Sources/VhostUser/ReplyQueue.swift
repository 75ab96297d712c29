import CShims
#if canImport(Glibc)
import Glibc
#endif

/// Replies to one frontend that its socket has not taken yet.
///
/// The control thread never waits for a frontend to read: a reply goes out with one
/// nonblocking `sendmsg`, and what the socket buffer cannot take waits here until the
/// socket is writable again. A frontend that never reads would make this grow without end,
/// so past `limit` bytes the owner closes the connection. Replies carry no descriptors.
struct ReplyQueue {
    /// Far more than any frontend leaves unread while it works (a reply is 12 to 52 bytes,
    /// and the kernel's socket buffer holds hundreds of kilobytes before this fills).
    static let limit = 64 * 1024

    enum Outcome: Equatable {
        /// Everything queued has been sent.
        case sent
        /// Some bytes wait for the socket to become writable.
        case waiting
        /// More than `limit` bytes are unread: the frontend does not read its socket.
        case overflow
        /// The socket failed (the peer is gone).
        case failed(Int32)
    }

    private var pending: [UInt8] = []
    private var offset = 0

    var isEmpty: Bool { offset == pending.count }
    var queuedBytes: Int { pending.count - offset }

    /// Queues `bytes` behind what is waiting and sends as much as the socket takes.
    mutating func send(_ bytes: [UInt8], on fd: Int32) -> Outcome {
        if isEmpty {
            pending = bytes
            offset = 0
        } else {
            pending += bytes
        }
        return flush(on: fd)
    }

    /// Sends what waits, for as long as the socket takes it.
    mutating func flush(on fd: Int32) -> Outcome {
        while offset < pending.count {
            let n = pending.withUnsafeBytes { b in vs_send_with_fds(fd, b.baseAddress! + offset, b.count - offset, nil, 0) }
            if n < 0 {
                let code = errno
                guard code == EAGAIN || code == EWOULDBLOCK else { return .failed(code) }
                if offset > Self.limit / 2 {   // keep the buffer from holding what is sent
                    pending.removeFirst(offset)
                    offset = 0
                }
                return queuedBytes > Self.limit ? .overflow : .waiting
            }
            offset += n
        }
        pending = []
        offset = 0
        return .sent
    }

    mutating func clear() {
        pending = []
        offset = 0
    }
}
