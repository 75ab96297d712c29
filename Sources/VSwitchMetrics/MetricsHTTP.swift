/// The HTTP/1.1 that `/metrics` needs and no more: one request per connection (the answer
/// says `Connection: close`), GET (or HEAD) of `/metrics` only, no request body. Pure
/// functions on bytes, so the parser is tested without sockets.
public enum MetricsHTTP {
    /// Longest request head accepted (request line and headers); Prometheus sends ~300 bytes.
    public static let maxHeadBytes = 8192

    public enum Parse: Equatable {
        /// Need more bytes.
        case incomplete
        case request(method: String, target: String)
        case bad(String)
    }

    /// Looks for a complete head (ending in an empty line) in `bytes`.
    public static func parse(_ bytes: [UInt8]) -> Parse {
        guard let end = headEnd(bytes) else {
            return bytes.count > maxHeadBytes ? .bad("request head over \(maxHeadBytes) bytes") : .incomplete
        }
        guard end <= maxHeadBytes else { return .bad("request head over \(maxHeadBytes) bytes") }
        guard let lineEnd = bytes.firstIndex(of: UInt8(ascii: "\n")) else { return .bad("no request line") }
        var line = bytes[..<lineEnd]
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        guard line.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { return .bad("request line is not printable ASCII") }
        let parts = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard parts.count == 3, let version = String(validating: parts[2], as: UTF8.self),
              version == "HTTP/1.1" || version == "HTTP/1.0",
              let method = String(validating: parts[0], as: UTF8.self), !method.isEmpty,
              let target = String(validating: parts[1], as: UTF8.self), !target.isEmpty
        else { return .bad("malformed request line") }
        return .request(method: method, target: target)
    }

    /// Index just past the blank line that ends the head ("\r\n\r\n" or "\n\n").
    static func headEnd(_ b: [UInt8]) -> Int? {
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "\n") {
                if i + 1 < b.count, b[i + 1] == UInt8(ascii: "\n") { return i + 2 }
                if i + 2 < b.count, b[i + 1] == UInt8(ascii: "\r"), b[i + 2] == UInt8(ascii: "\n") { return i + 3 }
            }
            i += 1
        }
        return nil
    }

    /// The whole answer to `parsed`; `metrics` is called only for a good GET /metrics.
    public static func respond(to parsed: Parse, metrics: () -> [UInt8]) -> [UInt8] {
        switch parsed {
        case .incomplete, .bad:
            let why: String
            if case .bad(let w) = parsed { why = w } else { why = "incomplete request" }
            return response(400, "Bad Request", body: Array("\(why)\n".utf8))
        case .request(let method, let target):
            let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? target
            guard path == "/metrics" else {
                return response(404, "Not Found", body: Array("only /metrics is served here\n".utf8))
            }
            guard method == "GET" || method == "HEAD" else {
                return response(405, "Method Not Allowed", body: Array("only GET /metrics\n".utf8), extra: "Allow: GET, HEAD\r\n")
            }
            let body = metrics()
            return response(200, "OK", body: body, type: "text/plain; version=0.0.4; charset=utf-8", head: method == "HEAD")
        }
    }

    static func response(_ code: Int, _ reason: String, body: [UInt8], type: String = "text/plain; charset=utf-8",
                         extra: String = "", head: Bool = false) -> [UInt8] {
        let h = "HTTP/1.1 \(code) \(reason)\r\nContent-Type: \(type)\r\nContent-Length: \(body.count)\r\n"
            + extra + "Connection: close\r\n\r\n"
        return Array(h.utf8) + (head ? [] : body)
    }
}
