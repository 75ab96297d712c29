import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why a request could not be completed. Descriptions are complete sentences for the CLI
/// to print after "vswitch: ".
public enum ControlClientError: Error, CustomStringConvertible, Equatable {
    case pathTooLong(path: String)
    case connectFailed(path: String, errno: Int32)
    case ioFailed(path: String, errno: Int32)
    case timedOut(path: String, seconds: Double)
    /// The daemon closed the connection without answering.
    case noResponse(path: String)
    case badResponse(path: String, detail: String)

    public var description: String {
        switch self {
        case .pathTooLong(let path):
            return "control socket path is empty or too long (max 107 bytes): \(path)"
        case .connectFailed(let path, let code):
            var message = "cannot connect to vswitchd at \(path): \(errnoDescription(code))"
            switch code {
            case ENOENT, ECONNREFUSED:
                message += " (is vswitchd running? use --control or $\(ControlDefaults.environmentVariable))"
            case EACCES, EPERM:
                message += " (the control socket is only accessible to its owner and group; try sudo)"
            default:
                break
            }
            return message
        case .ioFailed(let path, let code):
            return "lost connection to vswitchd at \(path): \(errnoDescription(code))"
        case .timedOut(let path, let seconds):
            return "vswitchd at \(path) did not answer within \(Int(seconds)) s"
        case .noResponse(let path):
            return "vswitchd at \(path) closed the connection without answering"
        case .badResponse(let path, let detail):
            return "vswitchd at \(path) sent a bad response: \(detail)"
        }
    }
}

/// Sends requests to vswitchd over its control socket, one connection per request.
///
/// A fresh connection per request keeps the CLI stateless; the daemon handles it in
/// microseconds. The timeout bounds how long a hung daemon can hang the CLI.
public struct ControlClient: Sendable {
    public var path: String
    /// Applies to connecting, sending and waiting for the response (SO_SNDTIMEO/SO_RCVTIMEO).
    public var timeout: Double

    public init(path: String, timeout: Double = 10) {
        self.path = path
        self.timeout = timeout
    }

    /// Connects, sends `request`, and returns the daemon's response (which may be `ok: false`;
    /// only transport and protocol failures throw).
    public func send(_ request: ControlRequest) throws -> ControlResponse {
        let fd = try UnixSocket.connectToDaemon(path: path, timeout: timeout)
        defer { close(fd) }

        let line = try ControlCoding.encode(request)
        let sendError = UnixSocket.sendAll(fd, line)
        if sendError == EAGAIN { throw ControlClientError.timedOut(path: path, seconds: timeout) }
        guard sendError == 0 else { throw ControlClientError.ioFailed(path: path, errno: sendError) }

        var reader = LineReader(fd: fd, maxLineBytes: ControlWire.maxLineBytes)
        switch reader.next() {
        case .line(let data):
            do {
                return try ControlCoding.decodeResponse(data)
            } catch {
                throw ControlClientError.badResponse(path: path, detail: "\(error)")
            }
        case .endOfStream:
            throw ControlClientError.noResponse(path: path)
        case .tooLong:
            throw ControlClientError.badResponse(
                path: path, detail: "line longer than \(ControlWire.maxLineBytes) bytes")
        case .timedOut:
            throw ControlClientError.timedOut(path: path, seconds: timeout)
        case .failed(let code):
            throw ControlClientError.ioFailed(path: path, errno: code)
        }
    }
}
