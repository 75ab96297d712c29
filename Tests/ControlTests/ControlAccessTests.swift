import SwitchModel
import Control
import Foundation
import Glibc
import XCTest

/// Who may use the control socket, the socket file's mode and group, and requests that
/// must get an error line, never a crash.
final class ControlAccessTests: XCTestCase {
    static let handler: ControlServer.Handler = { _ in .success() }

    func testSocketModeAndGroup() throws {
        let dir = try makeTempDir(self)
        let owner = try ControlServer(path: dir + "/a.sock", handler: Self.handler)
        defer { owner.stop() }
        var st = stat()
        XCTAssertEqual(lstat(dir + "/a.sock", &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600, "owner only by default")

        let gid: gid_t = 65534   // nogroup: any group other than ours shows the chown happened
        let grouped = try ControlServer(path: dir + "/b.sock", permissions: 0o660, group: gid, handler: Self.handler)
        defer { grouped.stop() }
        XCTAssertEqual(lstat(dir + "/b.sock", &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o660)
        XCTAssertEqual(st.st_gid, gid)
    }

    func testPeerCredentialsAreRead() throws {
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds), 0)
        defer { close(fds[0]); close(fds[1]) }
        let peer = try XCTUnwrap(PeerCredentials.of(fds[0]))
        XCTAssertEqual(peer, PeerCredentials(pid: getpid(), uid: geteuid(), gid: getegid()))
        XCTAssertNil(ControlAccess.daemonDefault().refusal(forPeerOf: fds[0]))
        XCTAssertNil(PeerCredentials.of(-1))
    }

    func testStrangerIsRefusedWithAClearError() throws {
        let path = try makeTempDir(self) + "/s.sock"
        // This test runs as some uid; admit only another one, as if we were a stranger.
        let other = geteuid() == 4242 ? UInt32(4243) : UInt32(4242)
        let handled = NSLock()
        nonisolated(unsafe) var calls = 0
        let server = try ControlServer(path: path, access: ControlAccess(users: [other])) { _ in
            handled.withLock { calls += 1 }
            return .success()
        }
        server.start()
        defer { server.stop() }
        let response = try ControlClient(path: path, timeout: 5).send(ControlRequest(command: .addBridge, bridge: "br0"))
        XCTAssertEqual(response, .failure("permission denied: uid \(geteuid()) may not use the vswitchd control socket (allowed: uid \(other))"))
        // The connection is closed after the refusal: a second request on it gets nothing.
        let raw = try rawExchange(path: path, send: Data("{\"command\":\"show\"}\n{\"command\":\"show\"}\n".utf8))
        XCTAssertEqual(raw.split(separator: "\n").count, 1, raw)
        XCTAssertEqual(handled.withLock { calls }, 0, "a refused peer never reaches the handler")
    }

    func testGroupMembersAreAdmitted() throws {
        let path = try makeTempDir(self) + "/s.sock"
        let other = geteuid() == 4242 ? UInt32(4243) : UInt32(4242)
        let server = try ControlServer(path: path, access: ControlAccess(users: [other], group: getegid(), groupName: "g"),
                                       handler: Self.handler)
        server.start()
        defer { server.stop() }
        XCTAssertTrue(try ControlClient(path: path, timeout: 5).send(ControlRequest(command: .show)).ok)

        let refused = ControlAccess(users: [other], group: 4242_4242, groupName: "vswitch")
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds), 0)
        defer { close(fds[0]); close(fds[1]) }
        XCTAssertEqual(refused.refusal(forPeerOf: fds[0]),
                       "permission denied: uid \(geteuid()) may not use the vswitchd control socket (allowed: uid \(other), members of group vswitch)")
    }

    /// Each bad line gets one error line and the connection goes on; the server survives.
    func testMalformedRequestsGetErrorsNotCrashes() throws {
        let path = try makeTempDir(self) + "/s.sock"
        let server = try ControlServer(path: path, handler: Self.handler)
        server.start()
        defer { server.stop() }
        var bad: [Data] = [
            "garbage", "{", "[]", "null", "42", "\"add-br\"", "{}", #"{"command":null}"#,
            #"{"command":"explode"}"#, #"{"command":7}"#, #"{"command":"add-br","bridge":["br0"]}"#,
            #"{"command":"add-br","agingSeconds":1e400}"#, #"{"command":"add-br","agingSeconds":99999999999999999999999}"#,
            #"{"command":"add-br","agingSeconds":-1.5}"#, #"{"command":"add-port","type":{"x":1}}"#,
            String(repeating: "[", count: 100_000), String(repeating: "{\"a\":", count: 50_000),
        ].map { Data($0.utf8) }
        bad.append(Data([0xFF, 0xFE, 0x00, 0x7B, 0x80]))          // not UTF-8, a NUL
        bad.append(Data(#"{"command":"show","bridge":"\#u{0}"}"#.utf8))
        var payload = Data()
        for line in bad { payload.append(line); payload.append(UInt8(ascii: "\n")) }
        payload.append(Data("{\"command\":\"show\"}\n".utf8))
        let output = try rawExchange(path: path, send: payload, readTimeout: 10)
        let lines = output.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.isEmpty }
        XCTAssertEqual(lines.count, bad.count + 1, output)
        for (i, line) in lines.enumerated() {
            let response = try ControlCoding.decodeResponse(Data(line.utf8))
            if i < bad.count {
                XCTAssertFalse(response.ok, "line \(i): \(String(decoding: bad[i].prefix(40), as: UTF8.self))")
                XCTAssertTrue(response.error?.hasPrefix("malformed request: ") ?? false, "\(response)")
            } else {
                XCTAssertTrue(response.ok, "the good request after the bad ones")
            }
        }
        XCTAssertTrue(try ControlClient(path: path).send(ControlRequest(command: .show)).ok, "server still serves")
    }
}
