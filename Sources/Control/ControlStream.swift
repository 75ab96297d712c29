import Syscalls
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The client side of a streaming command (live capture): one request line, one response
/// line, and then, if the response is ok, raw bytes (a pcap stream) until the daemon closes
/// the connection. The bytes go to a file descriptor as they arrive.
public struct ControlStreamClient: Sendable {
    public var path: String
    /// For connecting and the response line; the stream itself may be idle for any time.
    public var timeout: Double

    public init(path: String, timeout: Double = 10) {
        self.path = path
        self.timeout = timeout
    }

    public enum End: Equatable, Sendable {
        /// The daemon ended the stream (count reached, bridge removed...).
        case finished
        /// Writing to `output` failed (a closed pipe: the reader has seen enough).
        case outputClosed(errno: Int32)
    }

    /// Sends `request`; on a failed response returns it with no stream. On success calls
    /// `output` (so a refused request creates no file), copies the stream to the descriptor
    /// it returns, and returns how the stream ended.
    public func run(_ request: ControlRequest, output: () throws -> Int32) throws -> (ControlResponse, End?) {
        let fd = try UnixSocket.connectToDaemon(path: path, timeout: timeout)
        defer { close(fd) }
        let sendError = UnixSocket.sendAll(fd, try ControlCoding.encode(request))
        guard sendError == 0 else { throw ControlClientError.ioFailed(path: path, errno: sendError) }

        // The response line, read in chunks; what follows the newline is stream data.
        var pending = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var newline: Int?
        while newline == nil {
            let (n, e) = Syscall.retrying { chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) } }
            if n == 0 { throw ControlClientError.noResponse(path: path) }
            if n < 0 {
                if e == EAGAIN { throw ControlClientError.timedOut(path: path, seconds: timeout) }
                throw ControlClientError.ioFailed(path: path, errno: e)
            }
            pending += chunk[..<n]
            newline = pending.firstIndex(of: UInt8(ascii: "\n"))
            if newline == nil && pending.count > ControlWire.maxLineBytes {
                throw ControlClientError.badResponse(path: path, detail: "response line too long")
            }
        }
        let cut = newline ?? pending.count
        let response: ControlResponse
        do {
            response = try ControlCoding.decodeResponse(Data(pending[..<cut]))
        } catch {
            throw ControlClientError.badResponse(path: path, detail: "\(error)")
        }
        guard response.ok else { return (response, nil) }
        let out = try output()

        UnixSocket.setTimeout(fd, option: SO_RCVTIMEO, seconds: 0)   // 0: wait as long as it takes
        var rest = Array(pending[(cut + 1)...])
        while true {
            if !rest.isEmpty {
                let e = Self.writeAll(out, rest)
                if e != 0 { return (response, .outputClosed(errno: e)) }
            }
            let (n, e) = Syscall.retrying { chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) } }
            if n == 0 { return (response, .finished) }
            if n < 0 { throw ControlClientError.ioFailed(path: path, errno: e) }
            rest = Array(chunk[..<n])
        }
    }

    /// write(2) of all bytes; 0 or errno (EPIPE when the reader closed its end).
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Int32 {
        bytes.withUnsafeBytes { raw in Syscall.writeAll(raw) { write(fd, $0, $1) } }
    }
}
