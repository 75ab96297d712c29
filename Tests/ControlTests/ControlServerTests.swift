import SwitchModel
import Control
import Foundation
import Glibc
import XCTest

/// A fresh short directory under /tmp (socket paths must fit in 107 bytes), removed afterwards.
func makeTempDir(_ test: XCTestCase) throws -> String {
    var template = Array("/tmp/vswctl-XXXXXX".utf8CString)
    guard let dir = mkdtemp(&template) else { throw POSIXError(.EIO) }
    let path = String(cString: dir)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
    return path
}

/// Raw client for protocol-level tests: sends bytes, reads everything until EOF or timeout.
func rawExchange(path: String, send bytes: Data, readTimeout: Double = 2) throws -> String {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
    }
    guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
    var tv = timeval(tv_sec: Int(readTimeout), tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    // Send in pieces; the server may close early (oversize line), so ignore EPIPE.
    bytes.withUnsafeBytes { raw in
        var offset = 0
        while offset < raw.count {
            let n = send(fd, raw.baseAddress! + offset, min(65536, raw.count - offset), Int32(MSG_NOSIGNAL))
            if n <= 0 { break }
            offset += n
        }
    }
    shutdown(fd, Int32(SHUT_WR))
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = recv(fd, &buf, buf.count, 0)
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

final class ControlServerTests: XCTestCase {
    /// Echoes the request back in a recognizable way.
    static let fakeHandler: ControlServer.Handler = { request in
        switch request.command {
        case .show:
            return .success(ControlResult(bridges: [BridgeInfo(name: "br0", agingSeconds: 300, ports: [])]))
        case .deleteBridge:
            return .failure("no bridge named \(request.bridge ?? "?")")
        default:
            return .success()
        }
    }

    func testClientServerRoundTrip() throws {
        let path = try makeTempDir(self) + "/run/vswitchd.sock"  // parent created by the server
        let server = try ControlServer(path: path, handler: Self.fakeHandler)
        server.start()
        defer { server.stop() }

        var st = stat()
        XCTAssertEqual(lstat(path, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        XCTAssertEqual((path as NSString).deletingLastPathComponent.withCString { stat($0, &st) }, 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o755)

        let client = ControlClient(path: path)
        let shown = try client.send(ControlRequest(command: .show))
        XCTAssertTrue(shown.ok)
        XCTAssertEqual(shown.result?.bridges?.first?.name, "br0")
        let failed = try client.send(ControlRequest(command: .deleteBridge, bridge: "br9"))
        XCTAssertEqual(failed, .failure("no bridge named br9"))
    }

    func testStopRemovesSocketAndClientReportsNotRunning() throws {
        let path = try makeTempDir(self) + "/s.sock"
        let server = try ControlServer(path: path, handler: Self.fakeHandler)
        server.start()
        server.stop()
        server.stop()  // idempotent
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
        XCTAssertThrowsError(try ControlClient(path: path).send(ControlRequest(command: .show))) { error in
            XCTAssertEqual("\(error)", "cannot connect to vswitchd at \(path): No such file or directory "
                + "(is vswitchd running? use --control or $VSWITCH_SOCK)")
        }
    }

    func testMalformedLineGetsErrorAndConnectionContinues() throws {
        let path = try makeTempDir(self) + "/s.sock"
        let server = try ControlServer(path: path, handler: Self.fakeHandler)
        server.start()
        defer { server.stop() }
        let output = try rawExchange(path: path, send: Data("garbage\n{\"command\":\"show\"}\n".utf8))
        let lines = output.split(separator: "\n").map { try! ControlCoding.decodeResponse(Data($0.utf8)) }
        XCTAssertEqual(lines.count, 2)
        XCTAssertEqual(lines[0], .failure("malformed request: not valid JSON"))
        XCTAssertEqual(lines[1].ok, true)
    }

    func testOversizeLineGetsErrorAndClose() throws {
        let path = try makeTempDir(self) + "/s.sock"
        let server = try ControlServer(path: path, handler: Self.fakeHandler)
        server.start()
        defer { server.stop() }
        var payload = Data(repeating: UInt8(ascii: "x"), count: ControlWire.maxLineBytes + 10)
        payload.append(Data("\n{\"command\":\"show\"}\n".utf8))
        let output = try rawExchange(path: path, send: payload)
        let lines = output.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "connection must close after the oversize line")
        let response = try ControlCoding.decodeResponse(Data(lines[0].utf8))
        XCTAssertFalse(response.ok)
        XCTAssertTrue(response.error?.contains("longer than") ?? false, "\(response)")
    }

    func testIdleClientDoesNotBlockOthers() throws {
        let path = try makeTempDir(self) + "/s.sock"
        let server = try ControlServer(path: path, handler: Self.fakeHandler)
        server.start()
        defer { server.stop() }
        // A client that connects and never sends anything.
        let idle = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(idle) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        _ = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(idle, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        let start = Date()
        XCTAssertTrue(try ControlClient(path: path, timeout: 2).send(ControlRequest(command: .show)).ok)
        XCTAssertLessThan(Date().timeIntervalSince(start), 1)
    }

    /// Clients that stall halfway through a request, never read a big answer, or never read
    /// a stream cost their own connection only: another client is answered at once.
    func testStalledClientsCostOnlyTheirOwnConnection() throws {
        let path = try makeTempDir(self) + "/s.sock"
        let big = (0..<20_000).map { BridgeInfo(name: "br\($0)-" + String(repeating: "x", count: 100), agingSeconds: 300, ports: []) }
        let server = try ControlServer(path: path) { request in
            request.command == .show ? .success(ControlResult(bridges: big)) : .failure("no bridge named br9")
        }
        server.streamer = { request, fd in
            guard request.command == .capture else { return nil }
            return (.success(), {   // a capture that nobody reads: blocks its own thread only
                let chunk = [UInt8](repeating: 0xAB, count: 65536)
                while send(fd, chunk, chunk.count, Int32(MSG_NOSIGNAL)) > 0 {}
            })
        }
        server.start()
        defer { server.stop() }
        func rawClient(_ line: String) -> Int32 {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
            _ = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            _ = Array(line.utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            return fd
        }
        let stalled = [rawClient("{\"command\":"),                       // half a request line
                       rawClient("{\"command\":\"show\"}\n"),            // ~2 MB answer, never read
                       rawClient("{\"command\":\"capture\",\"bridge\":\"br0\"}\n")]   // a stream, never read
        defer { stalled.forEach { close($0) } }
        usleep(300_000)   // let the big answer and the stream fill their sockets
        let client = ControlClient(path: path, timeout: 2)
        for _ in 0..<10 {
            let start = Date()
            XCTAssertEqual(try client.send(ControlRequest(command: .deleteBridge, bridge: "br9")), .failure("no bridge named br9"))
            XCTAssertLessThan(Date().timeIntervalSince(start), 1)
        }
    }

    func testStaleSocketIsTakenOver() throws {
        let path = try makeTempDir(self) + "/s.sock"
        // Bind and close without unlinking, as a crashed daemon leaves it.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        XCTAssertEqual(rc, 0)
        close(fd)
        XCTAssertTrue(FileManager.default.fileExists(atPath: path))

        let server = try ControlServer(path: path, handler: Self.fakeHandler)
        server.start()
        defer { server.stop() }
        XCTAssertTrue(try ControlClient(path: path).send(ControlRequest(command: .show)).ok)
    }

    func testLiveSocketIsNotStolen() throws {
        let path = try makeTempDir(self) + "/s.sock"
        let first = try ControlServer(path: path, handler: Self.fakeHandler)
        first.start()
        defer { first.stop() }
        XCTAssertThrowsError(try ControlServer(path: path, handler: Self.fakeHandler)) { error in
            XCTAssertEqual(error as? ControlServerError, .alreadyListening(path: path))
            XCTAssertEqual("\(error)", "another vswitchd is already listening on \(path)")
        }
        XCTAssertTrue(try ControlClient(path: path).send(ControlRequest(command: .show)).ok)
    }

    func testRegularFileIsNeverDeleted() throws {
        let path = try makeTempDir(self) + "/s.sock"
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data("keep me".utf8)))
        XCTAssertThrowsError(try ControlServer(path: path, handler: Self.fakeHandler)) { error in
            XCTAssertEqual(error as? ControlServerError, .notASocket(path: path))
        }
        XCTAssertEqual(FileManager.default.contents(atPath: path), Data("keep me".utf8))
    }

    func testPathTooLong() throws {
        let path = "/tmp/" + String(repeating: "a", count: 120)
        XCTAssertThrowsError(try ControlServer(path: path, handler: Self.fakeHandler)) { error in
            XCTAssertEqual(error as? ControlServerError, .pathTooLong(path: path))
        }
        XCTAssertThrowsError(try ControlClient(path: path).send(ControlRequest(command: .show))) { error in
            XCTAssertEqual(error as? ControlClientError, .pathTooLong(path: path))
        }
    }

    func testGroupPermissions() throws {
        let path = try makeTempDir(self) + "/s.sock"
        let server = try ControlServer(path: path, permissions: 0o660, handler: Self.fakeHandler)
        defer { server.stop() }
        var st = stat()
        XCTAssertEqual(lstat(path, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o660)
    }
}
