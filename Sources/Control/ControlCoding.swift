import Foundation

/// A line that is not a valid request or response. The description is meant for humans and
/// is what the daemon sends back in a `.failure(...)` response.
public struct ControlDecodingError: Error, CustomStringConvertible, Equatable {
    /// "request" or "response".
    public var kind: String
    /// What was wrong: "not valid JSON", "missing field 'command'", ...
    public var detail: String
    public var description: String { "malformed \(kind): \(detail)" }
}

/// Encodes and decodes protocol messages as single JSON lines.
///
/// Keys are sorted so the wire form is deterministic (easy to diff, log and test), and
/// nothing is pretty-printed because a newline ends a message.
public enum ControlCoding {
    private static func makeEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    /// One message as JSON followed by "\n". JSONEncoder escapes control characters inside
    /// strings, so the output never contains a newline other than the terminator.
    public static func encodeLine<T: Encodable>(_ value: T) throws -> Data {
        var data = try makeEncoder().encode(value)
        data.append(UInt8(ascii: "\n"))
        return data
    }

    public static func encode(_ request: ControlRequest) throws -> Data { try encodeLine(request) }
    public static func encode(_ response: ControlResponse) throws -> Data { try encodeLine(response) }

    /// Decodes one request line (with or without its "\n" or "\r\n").
    public static func decodeRequest(_ line: Data) throws -> ControlRequest {
        try decode(ControlRequest.self, from: line, kind: "request")
    }

    /// Decodes one response line (with or without its "\n" or "\r\n").
    public static func decodeResponse(_ line: Data) throws -> ControlResponse {
        try decode(ControlResponse.self, from: line, kind: "response")
    }

    static func decode<T: Decodable>(_ type: T.Type, from line: Data, kind: String) throws -> T {
        var bytes = line
        while let last = bytes.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: "\r") {
            bytes.removeLast()
        }
        if bytes.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }) {
            throw ControlDecodingError(kind: kind, detail: "empty line")
        }
        do {
            return try JSONDecoder().decode(type, from: bytes)
        } catch let error as DecodingError {
            throw ControlDecodingError(kind: kind, detail: explain(error))
        } catch {
            throw ControlDecodingError(kind: kind, detail: "\(error)")
        }
    }

    /// Turns DecodingError's verbose debug text into one short phrase naming the field.
    private static func explain(_ error: DecodingError) -> String {
        func field(_ path: [CodingKey]) -> String {
            path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            let parent = field(context.codingPath)
            return "missing field '\(parent.isEmpty ? "" : parent + ".")\(key.stringValue)'"
        case .typeMismatch(let type, let context):
            return "field '\(field(context.codingPath))' should be \(typeName(type))"
        case .valueNotFound(let type, let context):
            return "field '\(field(context.codingPath))' is null, expected \(typeName(type))"
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty { return "not valid JSON" }
            return "invalid value for '\(field(context.codingPath))' (\(context.debugDescription))"
        @unknown default:
            return "\(error)"
        }
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Bool.Type: return "a boolean"
        case is Int.Type, is UInt64.Type: return "a number"
        case is [Any].Type: return "an array"
        default: return "\(type)"
        }
    }
}
