import Syscalls
import CShims
#if canImport(Glibc)
import Glibc
#endif

/// Framing of vhost-user messages on a connected Unix socket, with SCM_RIGHTS.
public enum VhostUserConnection {
    /// Reads one message. Descriptors arrive with the header (QEMU and DPDK send header,
    /// payload and fds in one sendmsg). Throws `.peerClosed` on EOF.
    public static func read(_ fd: Int32) throws(VhostUserError) -> VhostUserMessage {
        var headerBytes = [UInt8](repeating: 0, count: VhostUserHeader.size)
        var fds = [Int32](repeating: -1, count: Int(VS_MAX_FDS))
        var nfds: Int32 = 0
        var truncated: Int32 = 0
        let n = vs_recv_with_fds(fd, &headerBytes, headerBytes.count, &fds, VS_MAX_FDS, &nfds, &truncated)
        let received = Array(fds.prefix(Int(max(nfds, 0))))
        func fail(_ e: VhostUserError) -> VhostUserError {
            for f in received { close(f) }
            return e
        }
        if n == 0 { throw fail(.peerClosed) }
        guard n > 0 else { throw fail(.peerClosed) }
        guard truncated == 0 else { throw fail(.badFdCount(request: "message", count: Int(VS_MAX_FDS) + 1)) }
        if n < headerBytes.count {
            guard readExactly(fd, &headerBytes, from: n) else { throw fail(.shortMessage) }
        }
        let header: VhostUserHeader
        do { header = try VhostUserHeader(validating: headerBytes) } catch { throw fail(error) }
        var payload = [UInt8](repeating: 0, count: Int(header.size))
        if header.size > 0 {
            guard readExactly(fd, &payload, from: 0) else { throw fail(.shortMessage) }
        }
        return VhostUserMessage(header: header, payload: payload, fds: received)
    }

    /// Reads the rest of a buffer; a peer that stalls mid-message is cut off by the
    /// socket's receive timeout (set when the connection is made).
    private static func readExactly(_ fd: Int32, _ buffer: inout [UInt8], from start: Int) -> Bool {
        var have = start
        while have < buffer.count {
            let (r, _) = Syscall.retrying { buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + have, $0.count - have, 0) } }
            guard r > 0 else { return false }
            have += r
        }
        return true
    }

    /// Sends a reply to `request` with `payload`.
    public static func reply(_ fd: Int32, to request: UInt32, payload: [UInt8]) -> Bool {
        let header = VhostUserHeader(request: request, flags: VhostUserHeader.version | VhostUserHeader.replyFlag,
                                     size: UInt32(payload.count))
        return send(fd, header.encoded + payload, fds: [])
    }

    public static func send(_ fd: Int32, _ bytes: [UInt8], fds: [Int32]) -> Bool {
        let r = bytes.withUnsafeBytes { b in
            fds.withUnsafeBufferPointer { f in vs_send_with_fds(fd, b.baseAddress, b.count, f.baseAddress, Int32(f.count)) }
        }
        return r == bytes.count
    }

    /// Applies the socket options every vhost-user connection gets: blocking with a
    /// 2-second receive timeout, so a stalled peer cannot hang the control thread.
    public static func configure(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK)
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }
}
