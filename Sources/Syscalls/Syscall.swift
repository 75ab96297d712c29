#if canImport(Glibc)
import Glibc
#endif

/// The control plane's one convention for system calls a signal can interrupt, after
/// swift-nio's `syscall(blocking:)`: retry while the call fails with EINTR, then hand the
/// caller the result or the errno, so each caller words its own error. The forwarding
/// thread does not use it: its calls are nonblocking shims (CShims) that retry themselves.
public enum Syscall {
    /// `body`'s result and 0, or its negative result and the errno it failed with (never EINTR).
    @inline(__always)
    public static func retrying<T: SignedInteger>(_ body: () -> T) -> (result: T, errno: Int32) {
        while true {
            let r = body()
            if r >= 0 { return (r, 0) }
            let e = errno
            if e != EINTR { return (r, e) }
        }
    }

    /// Writes all of `bytes` through `write` (write(2), send(2) with flags...): partial writes
    /// continue, EINTR is retried. 0, or the errno of the failed call (EIO if it wrote nothing).
    public static func writeAll(_ bytes: UnsafeRawBufferPointer, _ write: (UnsafeRawPointer, Int) -> Int) -> Int32 {
        guard var p = bytes.baseAddress else { return 0 }
        var left = bytes.count
        while left > 0 {
            let (n, e) = retrying { write(UnsafeRawPointer(p), left) }
            if n < 0 { return e }
            if n == 0 { return EIO }
            p += n
            left -= n
        }
        return 0
    }
}
