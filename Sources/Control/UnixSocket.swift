import Syscalls
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `strerror` text for an errno value, e.g. "No such file or directory".
func errnoDescription(_ code: Int32) -> String {
    String(cString: strerror(code))
}

/// Thin, errno-returning wrappers around the few socket calls the client and server share.
/// They return errno instead of throwing so each caller can word the error for its context.
enum UnixSocket {
    /// `sockaddr_un` for `path`, or nil if the path is empty or does not fit in `sun_path`
    /// (108 bytes on Linux, including the terminating NUL).
    static func address(for path: String) -> sockaddr_un? {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity, !bytes.contains(0) else { return nil }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        return addr
    }

    /// A new close-on-exec stream socket (so it doesn't leak into QEMU or helpers we spawn).
    static func makeStreamSocket() -> Int32 {
        socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    }

    /// connect(2); returns 0 or errno. A connect interrupted by a signal goes on in the
    /// kernel: calling it again reports EISCONN once it is done, which is success.
    static func connect(_ fd: Int32, to addr: sockaddr_un) -> Int32 {
        var addr = addr
        let (_, e) = Syscall.retrying {
            withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
        }
        return e == EISCONN ? 0 : e
    }

    /// A connected socket to the daemon at `path`, with `timeout` on connecting, sending
    /// and receiving: what every control client starts with. The caller closes it.
    static func connectToDaemon(path: String, timeout: Double) throws(ControlClientError) -> Int32 {
        guard let addr = address(for: path) else { throw .pathTooLong(path: path) }
        let fd = makeStreamSocket()
        guard fd >= 0 else { throw .connectFailed(path: path, errno: errno) }
        // Set before connect: a Unix connect blocks (until SO_SNDTIMEO) when the backlog is full.
        setTimeout(fd, option: SO_SNDTIMEO, seconds: timeout)
        setTimeout(fd, option: SO_RCVTIMEO, seconds: timeout)
        let rc = connect(fd, to: addr)
        guard rc == 0 else {
            close(fd)
            if rc == EAGAIN { throw .timedOut(path: path, seconds: timeout) }
            throw .connectFailed(path: path, errno: rc)
        }
        return fd
    }

    /// bind(2); returns 0 or errno.
    static func bind(_ fd: Int32, to addr: sockaddr_un) -> Int32 {
        var addr = addr
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return rc == 0 ? 0 : errno
    }

    /// Sets SO_RCVTIMEO or SO_SNDTIMEO. A blocked recv/send then fails with EAGAIN.
    static func setTimeout(_ fd: Int32, option: Int32, seconds: Double) {
        let whole = seconds.rounded(.down)
        var tv = timeval(tv_sec: Int(whole), tv_usec: Int((seconds - whole) * 1_000_000))
        _ = setsockopt(fd, SOL_SOCKET, option, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Writes all of `data`; returns 0 or errno. MSG_NOSIGNAL turns a peer that went away
    /// into EPIPE instead of a process-killing SIGPIPE.
    static func sendAll(_ fd: Int32, _ data: Data) -> Int32 {
        data.withUnsafeBytes { raw in Syscall.writeAll(raw) { send(fd, $0, $1, Int32(MSG_NOSIGNAL)) } }
    }
}

/// Reads "\n"-terminated lines from a socket, never buffering more than `maxLineBytes`
/// of one line, so a peer that never sends a newline cannot make us grow without bound.
struct LineReader {
    enum Event: Equatable {
        /// One line without its terminator (a final unterminated line before EOF counts too).
        case line(Data)
        case endOfStream
        /// The line exceeded `maxLineBytes`; the stream is no longer in sync.
        case tooLong
        /// SO_RCVTIMEO expired with no complete line.
        case timedOut
        case failed(Int32)
    }

    let fd: Int32
    let maxLineBytes: Int
    private var buffer = Data()
    /// Bytes at the start of `buffer` already known to contain no newline.
    private var scanned = 0

    init(fd: Int32, maxLineBytes: Int) {
        self.fd = fd
        self.maxLineBytes = maxLineBytes
    }

    mutating func next() -> Event {
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            if let newline = buffer[(buffer.startIndex + scanned)...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = Data(buffer[buffer.startIndex..<newline])
                buffer = Data(buffer[(newline + 1)...])
                scanned = 0
                return line.count > maxLineBytes ? .tooLong : .line(line)
            }
            scanned = buffer.count
            if buffer.count > maxLineBytes { return .tooLong }
            let (n, e) = Syscall.retrying { chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) } }
            if n > 0 {
                buffer.append(contentsOf: chunk[0..<n])
            } else if n == 0 {
                if buffer.isEmpty { return .endOfStream }
                let line = buffer
                buffer = Data()
                scanned = 0
                return .line(line)
            } else if e == EAGAIN || e == EWOULDBLOCK {
                return .timedOut
            } else {
                return .failed(e)
            }
        }
    }
}
