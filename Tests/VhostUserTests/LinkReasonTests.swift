import CShims
import Foundation
import Logging
import XCTest
@testable import VhostUser

/// The wording of every link reason, the reason each set of facts gives, how reasons follow
/// one another as a port comes up, and that each is logged once.
final class LinkReasonTests: XCTestCase {
    let p = "/run/vswitch/vm1.sock"

    func testConnectFailureWording() {
        XCTAssertEqual(LinkReason.connectFailed(path: p, errno: ENOENT, retry: 1).text(seconds: 3),
                       "connecting: /run/vswitch/vm1.sock does not exist (QEMU not started yet?), retrying every 1 s")
        XCTAssertEqual(LinkReason.connectFailed(path: p, errno: EACCES, retry: 1).text(seconds: 0),
                       "connecting: permission denied on /run/vswitch/vm1.sock (check the mode of the socket and of its directories), retrying every 1 s")
        XCTAssertEqual(LinkReason.connectFailed(path: p, errno: ECONNREFUSED, retry: 0.5).text(seconds: 0),
                       "connecting: connection refused on /run/vswitch/vm1.sock (stale socket, no QEMU listening), retrying every 0.5 s")
        XCTAssertEqual(LinkReason.connectFailed(path: p, errno: ENAMETOOLONG, retry: 1).text(seconds: 0),
                       "connecting: /run/vswitch/vm1.sock: File name too long, retrying every 1 s")
        XCTAssertEqual(LinkReason.reconnecting(path: p, retry: 1).text(seconds: 0),
                       "connecting: the frontend went away; reconnecting to /run/vswitch/vm1.sock every 1 s")
    }

    func testListeningWording() {
        let alone = LinkReason.listening(path: p, socket: "root:root 0660", denied: [])
        XCTAssertEqual(alone.text(seconds: 0), "listening: no frontend has connected yet")
        XCTAssertEqual(alone.text(seconds: 12), "listening: no frontend has connected for 12 s")
        XCTAssertEqual(alone.text(seconds: 40),
                       "listening: no frontend has connected for 40 s (check the socket's group: root:root 0660; QEMU as libvirt-qemu needs --socket-group)")
        let denied = LinkReason.listening(path: p, socket: "root:root 0660", denied: ["libvirt-qemu"])
        XCTAssertEqual(denied.text(seconds: 2),
                       "listening: no frontend has connected for 2 s (the socket is root:root 0660: QEMU as libvirt-qemu cannot connect; use --socket-group)")
        let dir = LinkReason.listening(path: p, socket: "root:kvm 0660", denied: ["libvirt-qemu"],
                                       blocker: "directory /tmp/x is root:root 0700")
        XCTAssertEqual(dir.text(seconds: 2),
                       "listening: no frontend has connected for 2 s (QEMU as libvirt-qemu cannot reach the socket: directory /tmp/x is root:root 0700)")
    }

    func testHandshakeRingsAndBrokenWording() {
        XCTAssertEqual(LinkReason.handshake(last: "SET_MEM_TABLE", memory: true).text(seconds: 1),
                       "handshake in progress (last request SET_MEM_TABLE)")
        XCTAssertEqual(LinkReason.handshake(last: "SET_MEM_TABLE", memory: true).text(seconds: 5),
                       "handshake stalled at SET_MEM_TABLE for 5 s")
        XCTAssertEqual(LinkReason.handshake(last: "SET_VRING_CALL", memory: false).text(seconds: 30),
                       "handshake stalled at SET_VRING_CALL for 30 s (no memory table yet: the guest's virtio-net driver has not started the device)")
        XCTAssertEqual(LinkReason.stoppedByFrontend.text(seconds: 7),
                       "stopped by the frontend (GET_VRING_BASE 7 s ago): the guest is paused, was migrated to another port,"
                       + " or its driver stopped the device; the rings restart when the frontend starts them")
        XCTAssertEqual(LinkReason.handshake(last: nil, memory: false).text(seconds: 6),
                       "handshake stalled: the frontend connected but sent nothing for 6 s")
        XCTAssertEqual(LinkReason.oneSided(rxRunning: false).text(seconds: 9),
                       "up, but the guest has not enabled its RX queue (driver not loaded?)")
        XCTAssertEqual(LinkReason.oneSided(rxRunning: true).text(seconds: 9), "up, but the guest has not enabled its TX queue")
        XCTAssertEqual(LinkReason.broken(queue: 1, fault: "descriptor head index out of range", at: "12:01:03").text(seconds: 0),
                       "broken: the guest wrote a bad descriptor on TX queue 0 at 12:01:03 (descriptor head index out of range); it works again when the guest resets the device")
        XCTAssertEqual(LinkReason.queueName(4), "RX queue 2")
    }

    func testRequestNamesAreTheSpecsNames() {
        XCTAssertEqual(LinkReason.requestName(VhostUserRequest.setMemTable.rawValue), "SET_MEM_TABLE")
        XCTAssertEqual(LinkReason.requestName(VhostUserRequest.getVringBase.rawValue), "GET_VRING_BASE")
        XCTAssertEqual(LinkReason.requestName(VhostUserRequest.netSetMtu.rawValue), "NET_SET_MTU")
        XCTAssertEqual(LinkReason.requestName(999), "request 999")
    }

    /// A client port from QEMU not started to forwarding, then the guest going away.
    func testClientTransitions() {
        var f = LinkFacts(state: .connecting, path: p)
        XCTAssertEqual(LinkReason.evaluate(f), .reconnecting(path: p, retry: 1))
        f.connectErrno = ENOENT
        XCTAssertEqual(LinkReason.evaluate(f), .connectFailed(path: p, errno: ENOENT, retry: 1))
        f.connectErrno = ECONNREFUSED
        XCTAssertEqual(LinkReason.evaluate(f), .connectFailed(path: p, errno: ECONNREFUSED, retry: 1))
        f = LinkFacts(state: .connected, path: p)
        XCTAssertEqual(LinkReason.evaluate(f), .handshake(last: nil, memory: false))
        f.lastRequest = VhostUserRequest.getFeatures.rawValue
        XCTAssertEqual(LinkReason.evaluate(f), .handshake(last: "GET_FEATURES", memory: false))
        f.memory = true
        f.lastRequest = VhostUserRequest.setMemTable.rawValue
        XCTAssertEqual(LinkReason.evaluate(f), .handshake(last: "SET_MEM_TABLE", memory: true))
        f.lastRequest = VhostUserRequest.getVringBase.rawValue
        XCTAssertEqual(LinkReason.evaluate(f), .stoppedByFrontend, "QEMU stopped the rings (guest paused or migrated)")
        f.lastRequest = VhostUserRequest.setMemTable.rawValue
        f.txRunning = true
        XCTAssertEqual(LinkReason.evaluate(f), .oneSided(rxRunning: false))
        f.rxRunning = true
        XCTAssertNil(LinkReason.evaluate(f), "forwarding: no reason")
        let broken = LinkReason.broken(queue: 1, fault: "x", at: "12:00:00")
        XCTAssertEqual(LinkReason.evaluate(f, broken: broken), broken, "a corrupt ring outranks a running link")
        f = LinkFacts(state: .connecting, path: p)
        XCTAssertEqual(LinkReason.evaluate(f), .reconnecting(path: p, retry: 1), "guest gone: reconnecting")
        XCTAssertNil(LinkReason.evaluate(LinkFacts(state: .stopped, path: p)))
    }

    func testServerTransitions() {
        var f = LinkFacts(state: .listening, path: p, socket: "root:kvm 0660")
        XCTAssertEqual(LinkReason.evaluate(f), .listening(path: p, socket: "root:kvm 0660", denied: []))
        f.denied = ["libvirt-qemu"]
        XCTAssertEqual(LinkReason.evaluate(f), .listening(path: p, socket: "root:kvm 0660", denied: ["libvirt-qemu"]))
        f = LinkFacts(state: .connected, path: p, memory: true, rxRunning: true)
        XCTAssertEqual(LinkReason.evaluate(f), .oneSided(rxRunning: true))
    }

    /// Warned once when the reason has lasted long enough, again only when it changes; the
    /// recovery is logged only after a warning.
    func testEachReasonIsLoggedOnce() {
        var log = LinkReasonLog()
        let missing = LinkReason.connectFailed(path: p, errno: ENOENT, retry: 1)
        XCTAssertEqual(log.update(missing, seconds: 0), .warning(missing.text(seconds: 0)))
        XCTAssertNil(log.update(missing, seconds: 1))
        XCTAssertNil(log.update(missing, seconds: 2))
        let refused = LinkReason.connectFailed(path: p, errno: ECONNREFUSED, retry: 1)
        XCTAssertEqual(log.update(refused, seconds: 0), .warning(refused.text(seconds: 0)))
        let shaking = LinkReason.handshake(last: "SET_MEM_TABLE", memory: true)
        XCTAssertNil(log.update(shaking, seconds: 1), "a handshake in progress is not worth a warning")
        XCTAssertEqual(log.update(shaking, seconds: 5), .warning("handshake stalled at SET_MEM_TABLE for 5 s"))
        XCTAssertNil(log.update(shaking, seconds: 6))
        XCTAssertEqual(log.update(nil, seconds: 0), .recovered)
        XCTAssertNil(log.update(nil, seconds: 0))
        let lonely = LinkReason.listening(path: p, socket: "root:root 0660", denied: [])
        XCTAssertNil(log.update(lonely, seconds: 39))
        XCTAssertNotNil(log.update(lonely, seconds: 40))
        XCTAssertEqual(log.update(nil, seconds: 0), .recovered)
        XCTAssertNil(log.update(.handshake(last: nil, memory: false), seconds: 1))
        XCTAssertNil(log.update(nil, seconds: 0), "nothing was warned: no recovery line")
        let gone = LinkReason.reconnecting(path: p, retry: 1)
        XCTAssertNil(log.update(gone, seconds: 0), "the failed connect that follows says more")
        XCTAssertNotNil(log.update(gone, seconds: 2))
    }
}

/// The endpoint's own facts: a client's connect errors, a server socket's group and mode.
final class EndpointLinkTests: XCTestCase {
    var loop: EventLoop!
    var dir: String!
    let backend = RecordingBackend()

    override func setUp() {
        dir = NSTemporaryDirectory() + "vsw-link-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        loop = EventLoop()
        let thread = Thread { [loop] in loop!.run() }
        thread.start()
    }

    override func tearDown() {
        loop.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    func endpoint(_ role: SocketRole, _ path: String) -> VhostUserEndpoint {
        loop.sync { VhostUserEndpoint(path: path, role: role, backend: self.backend, loop: self.loop, logger: Logger(label: "t")) }
    }

    func reason(_ ep: VhostUserEndpoint) -> LinkReason? { loop.sync { ep.checkLink()?.reason } }

    func waitFor(_ what: String, _ cond: () -> Bool) {
        let deadline = Date().addingTimeInterval(5)
        while !cond() && Date() < deadline { usleep(20_000) }
        XCTAssertTrue(cond(), what)
    }

    func testClientSaysMissingThenRefusedThenHandshake() throws {
        let path = dir + "/c.sock"
        let ep = endpoint(.client, path)
        loop.sync { ep.retryInterval = 0.05; try? ep.start() }
        waitFor("ENOENT") { reason(ep) == .connectFailed(path: path, errno: ENOENT, retry: 0.05) }
        // A socket file nobody listens on (a QEMU that died): ECONNREFUSED.
        let stale = vs_unix_listen(path, 1)
        close(stale)   // the file stays, nobody listens
        waitFor("ECONNREFUSED") { reason(ep) == .connectFailed(path: path, errno: ECONNREFUSED, retry: 0.05) }
        unlink(path)
        let listener = vs_unix_listen(path, 1)
        XCTAssertGreaterThanOrEqual(listener, 0)
        waitFor("connected") { loop.sync { ep.state == .connected } }
        XCTAssertEqual(reason(ep), .handshake(last: nil, memory: false))
        loop.sync { ep.close() }
        close(listener)
    }

    /// A frontend that stops after GET_FEATURES: the handshake reason names it.
    func testHandshakeNamesTheLastRequest() throws {
        let path = dir + "/h.sock"
        let ep = endpoint(.server, path)
        try loop.sync { Result { try ep.start() } }.get()
        let fd = vs_unix_connect(path)
        waitFor("connected") { loop.sync { ep.state == .connected } }
        let h = VhostUserHeader(request: VhostUserRequest.getFeatures.rawValue, flags: 1, size: 0)
        XCTAssertTrue(VhostUserConnection.send(fd, h.encoded, fds: []))
        waitFor("GET_FEATURES handled") { reason(ep) == .handshake(last: "GET_FEATURES", memory: false) }
        let seconds = try XCTUnwrap(loop.sync { ep.checkLink()?.seconds })
        XCTAssertLessThan(seconds, LinkReason.stallSeconds, "counted from the last request")
        close(fd)
        waitFor("listening again") { loop.sync { ep.state == .listening } }
        loop.sync { ep.close() }
    }

    func testServerSocketGetsItsGroupBeforeListen() throws {
        let path = dir + "/s.sock"
        let ep = endpoint(.server, path)
        let gid = getgrnam("daemon")?.pointee.gr_gid ?? getegid()
        try loop.sync { ep.socketGroup = gid; return Result { try ep.start() } }.get()
        var st = stat()
        XCTAssertEqual(lstat(path, &st), 0)
        XCTAssertEqual(st.st_gid, gid)
        XCTAssertEqual(st.st_mode & 0o777, 0o660)
        guard case .listening(path, let socket, _, _)? = reason(ep) else { return XCTFail("listening") }
        XCTAssertEqual(socket, "\(SocketAccess.userName(geteuid())):\(SocketAccess.groupName(gid)) 0660")
        loop.sync { ep.close() }
    }
}

/// Who may connect to a socket file: its mode and group, and the directories above it.
final class SocketAccessTests: XCTestCase {
    func testModeGroupAndDirectories() throws {
        guard getpwnam("nobody") != nil, geteuid() == 0 else { throw XCTSkip("needs root and user nobody") }
        let top = NSTemporaryDirectory() + "vsw-acc-\(getpid())"
        try FileManager.default.createDirectory(atPath: top + "/d", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: top) }
        chmod(top, 0o755)
        chmod(top + "/d", 0o755)
        let path = top + "/d/s.sock"
        let fd = vs_unix_listen_mode(path, 1, 0o660)
        defer { close(fd) }
        var a = try XCTUnwrap(SocketAccess.inspect(path, users: ["nobody", "no-such-user-x"]))
        XCTAssertEqual(a.description, "root:\(SocketAccess.groupName(getegid())) 0660")
        XCTAssertEqual(a.denied, ["nobody"], "users that do not exist are left out")
        XCTAssertNil(a.blocker, "the socket's own mode keeps nobody out")
        chmod(path, 0o666)
        a = try XCTUnwrap(SocketAccess.inspect(path, users: ["nobody"]))
        XCTAssertEqual(a.allowed, ["nobody"])
        chmod(top + "/d", 0o700)
        a = try XCTUnwrap(SocketAccess.inspect(path, users: ["nobody"]))
        XCTAssertEqual(a.denied, ["nobody"])
        XCTAssertEqual(a.blocker, "directory \(top)/d is root:\(SocketAccess.groupName(getegid())) 0700")
        XCTAssertNil(SocketAccess.inspect(top + "/missing"))
    }
}
