import VSwitchMetrics
import XCTest

final class MetricsHTTPTests: XCTestCase {
    private func answer(_ request: String) -> String {
        String(decoding: MetricsHTTP.respond(to: MetricsHTTP.parse(Array(request.utf8))) { Array("m 1\n".utf8) },
               as: UTF8.self)
    }

    func testGetMetrics() {
        let a = answer("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n")
        XCTAssertTrue(a.hasPrefix("HTTP/1.1 200 OK\r\n"), a)
        XCTAssertTrue(a.contains("Content-Length: 4\r\n"))
        XCTAssertTrue(a.hasSuffix("\r\n\r\nm 1\n"))
    }

    func testBadRequestsGet4xx() {
        XCTAssertTrue(answer("GET / HTTP/1.1\r\n\r\n").hasPrefix("HTTP/1.1 404 "))
        XCTAssertTrue(answer("POST /metrics HTTP/1.1\r\n\r\n").hasPrefix("HTTP/1.1 405 "))
        XCTAssertTrue(answer("GARBAGE\r\n\r\n").hasPrefix("HTTP/1.1 400 "))
        XCTAssertTrue(answer("GET /metrics SPDY/9\r\n\r\n").hasPrefix("HTTP/1.1 400 "))
        XCTAssertTrue(answer("GET /me\u{1}trics HTTP/1.1\r\n\r\n").hasPrefix("HTTP/1.1 400 "))
        XCTAssertEqual(MetricsHTTP.parse(Array("GET /metrics HTTP/1.1\r\nHost".utf8)), .incomplete)
        let huge = "GET /metrics HTTP/1.1\r\nX: " + String(repeating: "a", count: 9000)
        XCTAssertTrue(answer(huge).hasPrefix("HTTP/1.1 400 "))
    }

    func testAddresses() throws {
        XCTAssertEqual(try MetricsAddress(parsing: "127.0.0.1:9101").port, 9101)
        XCTAssertEqual(try MetricsAddress(parsing: "[::1]:9101").port, 9101)
        for bad in ["9101", ":9101", "localhost:9101", "127.0.0.1:0", "127.0.0.1:70000", "[::1", "1.2.3:80"] {
            XCTAssertThrowsError(try MetricsAddress(parsing: bad), bad) { e in
                XCTAssertTrue("\(e)".contains("expected ADDRESS:PORT"), "\(e)")
            }
        }
    }
}
