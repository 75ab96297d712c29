import CShims
#if canImport(Glibc)
import Glibc
#endif

/// Socket set-up and sending for vhost-user connections (SCM_RIGHTS for descriptors).
public enum VhostUserConnection {
    /// Sends one whole message on a blocking socket (frontends in tests and tools; the
    /// endpoint's own replies go through its `ReplyQueue`).
    public static func send(_ fd: Int32, _ bytes: [UInt8], fds: [Int32]) -> Bool {
        let r = bytes.withUnsafeBytes { b in
            fds.withUnsafeBufferPointer { f in vs_send_with_fds(fd, b.baseAddress, b.count, f.baseAddress, Int32(f.count)) }
        }
        return r == bytes.count
    }

    /// Makes a new vhost-user connection nonblocking: the endpoint assembles messages across
    /// readiness events (`MessageAssembler`) and queues replies (`ReplyQueue`), so a stalled
    /// or silent frontend never holds the control thread.
    public static func configure(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    }
}
