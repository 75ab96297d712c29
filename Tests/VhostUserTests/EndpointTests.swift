import CShims
import Foundation
import Logging
import XCTest
@testable import VhostUser

/// Sockets end to end with a scripted frontend (rust-vmm's vhost-user-server test idea).
final class EndpointTests: XCTestCase {
    var loop: EventLoop!
    var thread: Thread!
    var dir: String!
    let backend = RecordingBackend()

    override func setUp() {
        dir = NSTemporaryDirectory() + "vsw-ep-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        loop = EventLoop()
        thread = Thread { [loop] in loop!.run() }
        thread.start()
    }

    override func tearDown() {
        loop.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    func endpoint(_ role: SocketRole, _ path: String) -> VhostUserEndpoint {
        loop.sync { VhostUserEndpoint(path: path, role: role, backend: self.backend, loop: self.loop, logger: Logger(label: "t")) }
    }

    func request(_ fd: Int32, _ r: VhostUserRequest) -> [UInt8]? {
        let h = VhostUserHeader(request: r.rawValue, flags: 1, size: 0)
        XCTAssertTrue(VhostUserConnection.send(fd, h.encoded, fds: []))
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var buf = [UInt8](repeating: 0, count: 64)
        let n = recv(fd, &buf, 64, 0)
        guard n >= 12 else { return nil }
        return Array(buf[12..<n])
    }

    func waitFor(_ what: String, _ cond: () -> Bool) {
        let deadline = Date().addingTimeInterval(5)
        var ok = cond()
        while !ok && Date() < deadline {
            usleep(20_000)
            ok = cond()
        }
        XCTAssertTrue(ok, what)
    }

    func testServerAnswersAndRefusesASecondFrontend() throws {
        let path = dir + "/s.sock"
        let ep = endpoint(.server, path)
        try loop.sync { Result { try ep.start() } }.get()
        let a = vs_unix_connect(path)
        XCTAssertGreaterThanOrEqual(a, 0)
        XCTAssertEqual(request(a, .getFeatures), encodeU64(VhostUserDevice.offeredFeatures))
        let b = vs_unix_connect(path)
        var byte: UInt8 = 0
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        XCTAssertEqual(recv(b, &byte, 1, 0), 0, "second frontend is closed at once")
        close(b)
        // After the first goes away, a new frontend is accepted.
        close(a)
        waitFor("back to listening") { loop.sync { ep.state == .listening } }
        let c = vs_unix_connect(path)
        XCTAssertEqual(request(c, .getQueueNum), encodeU64(8))
        close(c)
        loop.sync { ep.close() }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "socket file removed")
    }

    func testMalformedMessageDisconnectsWithoutCrashing() throws {
        let path = dir + "/m.sock"
        let ep = endpoint(.server, path)
        try loop.sync { Result { try ep.start() } }.get()
        let a = vs_unix_connect(path)
        waitFor("connected") { loop.sync { ep.state == .connected } }
        let bad = VhostUserHeader(request: 1, flags: 0x1, size: 0x2000).encoded
        XCTAssertTrue(VhostUserConnection.send(a, bad, fds: []))
        waitFor("dropped") { loop.sync { ep.state == .listening } }
        close(a)
        loop.sync { ep.close() }
    }

    func testStaleSocketIsReplacedButOtherFilesAreNot() throws {
        let stale = dir + "/stale.sock"
        let fd = vs_unix_listen(stale, 1)
        close(fd)   // a socket file nobody listens on
        let ep = endpoint(.server, stale)
        XCTAssertNoThrow(try loop.sync { Result { try ep.start() } }.get())
        loop.sync { ep.close() }

        let file = dir + "/regular"
        FileManager.default.createFile(atPath: file, contents: Data("keep".utf8))
        let ep2 = endpoint(.server, file)
        XCTAssertThrowsError(try loop.sync { Result { try ep2.start() } }.get())
        XCTAssertEqual(FileManager.default.contents(atPath: file), Data("keep".utf8))

        let live = dir + "/live.sock"
        let l = vs_unix_listen(live, 1)
        let ep3 = endpoint(.server, live)
        XCTAssertThrowsError(try loop.sync { Result { try ep3.start() } }.get())
        close(l)
    }

    func testServerSocketIsNotWorldAccessibleAndCloseRemovesOnlyItsOwnFile() throws {
        let path = dir + "/m.sock"
        let old = umask(0)   // the loosest umask: the mode must not come from it
        defer { umask(old) }
        let ep = endpoint(.server, path)
        try loop.sync { Result { try ep.start() } }.get()
        var st = stat()
        XCTAssertEqual(lstat(path, &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFSOCK)
        XCTAssertEqual(st.st_mode & 0o777, 0o660)
        // Someone replaces the socket file with a regular file: close() must leave it alone.
        unlink(path)
        FileManager.default.createFile(atPath: path, contents: Data("theirs".utf8))
        loop.sync { ep.close() }
        XCTAssertEqual(FileManager.default.contents(atPath: path), Data("theirs".utf8))
        // And a new port on that path is refused, with the reason.
        let ep2 = endpoint(.server, path)
        XCTAssertThrowsError(try loop.sync { Result { try ep2.start() } }.get()) { error in
            XCTAssertEqual("\(error)", "\(path) exists and is not a socket; refusing to replace it")
        }
        XCTAssertEqual(FileManager.default.contents(atPath: path), Data("theirs".utf8))
    }

    func testClientRetriesUntilTheFrontendListensAndAfterItLeaves() throws {
        let path = dir + "/c.sock"
        let ep = endpoint(.client, path)
        loop.sync { ep.retryInterval = 0.1 }
        try loop.sync { Result { try ep.start() } }.get()
        XCTAssertEqual(loop.sync { ep.state }, .connecting)
        let listener = vs_unix_listen(path, 1)
        var conn: Int32 = -1
        waitFor("switch connected") {
            conn = vs_accept(listener)
            return conn >= 0
        }
        XCTAssertEqual(request(conn, .getFeatures)?.count, 8)
        close(conn)   // guest goes away ...
        waitFor("reconnected") {
            conn = vs_accept(listener)
            return conn >= 0
        }
        XCTAssertEqual(request(conn, .getQueueNum), encodeU64(8))
        close(conn)
        close(listener)
        loop.sync { ep.close() }
    }
}
