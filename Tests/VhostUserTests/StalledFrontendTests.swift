import CShims
import Foundation
import Logging
import Virtio
import XCTest
@testable import VhostUser

/// Frontends that stop mid-message, send in pieces or never read: each costs its own
/// connection only, never the control thread (issue 21, part 2).
final class StalledFrontendTests: XCTestCase {
    var loop: EventLoop!
    var dir: String!
    let backend = RecordingBackend()

    override func setUp() {
        dir = NSTemporaryDirectory() + "vsw-stall-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        loop = EventLoop()
        let thread = Thread { [loop] in loop!.run() }
        thread.start()
    }

    override func tearDown() {
        loop.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    func listeningEndpoint(_ name: String) throws -> VhostUserEndpoint {
        let path = dir + "/" + name
        let ep = loop.sync { VhostUserEndpoint(path: path, role: .server, backend: self.backend, loop: self.loop,
                                               logger: Logger(label: "t")) }
        try loop.sync { Result { try ep.start() } }.get()
        return ep
    }

    func connect(_ ep: VhostUserEndpoint) -> Int32 {
        let fd = vs_unix_connect(ep.path)
        XCTAssertGreaterThanOrEqual(fd, 0)
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        waitFor("connected") { loop.sync { ep.state == .connected } }
        return fd
    }

    func sendRaw(_ fd: Int32, _ bytes: [UInt8], fds: [Int32] = []) {
        XCTAssertTrue(VhostUserConnection.send(fd, bytes, fds: fds))
    }

    /// One reply: its header, then exactly the payload it announces.
    func readReply(_ fd: Int32) -> [UInt8]? {
        var h = [UInt8](repeating: 0, count: 12)
        guard recv(fd, &h, 12, Int32(MSG_WAITALL)) == 12 else { return nil }
        let size = Int(h[8]) | Int(h[9]) << 8
        var payload = [UInt8](repeating: 0, count: size)
        guard size == 0 || recv(fd, &payload, size, Int32(MSG_WAITALL)) == size else { return nil }
        return payload
    }

    func waitFor(_ what: String, seconds: Double = 5, _ cond: () -> Bool) {
        let deadline = Date().addingTimeInterval(seconds)
        var ok = cond()
        while !ok && Date() < deadline {
            usleep(20_000)
            ok = cond()
        }
        XCTAssertTrue(ok, what)
    }

    static func header(_ r: VhostUserRequest, size: Int) -> [UInt8] {
        VhostUserHeader(request: r.rawValue, flags: 1, size: UInt32(size)).encoded
    }

    /// 16 frontends stopped mid-header and mid-payload; a 17th is answered at once and the
    /// loop stays responsive; after the stall timeout each of the 16 is cut and counted.
    func testSixteenStalledFrontendsHoldNobody() throws {
        var stalled: [(VhostUserEndpoint, Int32)] = []
        for i in 0..<16 {
            let ep = try listeningEndpoint("s\(i).sock")
            loop.sync { ep.stallTimeout = 1.5 }
            let fd = connect(ep)
            let h = Self.header(.setFeatures, size: 8)
            sendRaw(fd, i % 2 == 0 ? Array(h[..<5]) : h + [1, 2, 3])   // mid-header / mid-payload
            stalled.append((ep, fd))
        }
        let live = try listeningEndpoint("live.sock")
        let fd = connect(live)
        var worst = 0.0
        for _ in 0..<20 {
            let t0 = Date()
            sendRaw(fd, Self.header(.getFeatures, size: 0))
            XCTAssertEqual(readReply(fd), encodeU64(VhostUserDevice.offeredFeatures))
            _ = loop.sync { live.state }
            worst = max(worst, Date().timeIntervalSince(t0))
        }
        // Before, each stalled frontend held the loop for its 2 s receive timeout in turn.
        XCTAssertLessThan(worst, 1.0, "the 17th frontend waited on the stalled ones")
        for (ep, _) in stalled {
            waitFor("stalled frontend cut") { loop.sync { ep.state == .listening && ep.stalledMessages == 1 } }
        }
        XCTAssertEqual(loop.sync { live.state }, .connected, "the live frontend stays")
        XCTAssertEqual(loop.sync { live.faultCounts }, [:])
        XCTAssertEqual(loop.sync { stalled[0].0.faultCounts }, ["stalledMessages": "1"])
        for (ep, fd) in stalled {
            close(fd)
            loop.sync { ep.close() }
        }
        close(fd)
        loop.sync { live.close() }
    }

    /// A message sent one byte at a time, with its descriptor on the first byte, is
    /// assembled and handled as if it came whole; so are two messages in one send.
    func testMessagesInPiecesAndTogetherAreAssembled() throws {
        let ep = try listeningEndpoint("p.sock")
        let fd = connect(ep)
        let call = vs_eventfd(0)
        var msg = Self.header(.setVringCall, size: 8) + encodeU64(0)
        sendRaw(fd, [msg.removeFirst()], fds: [call])
        close(call)
        for b in msg {
            sendRaw(fd, [b])
            usleep(2_000)
        }
        waitFor("call fd taken") { loop.sync { ep.device.queues[0].callFd != nil } }
        let getFeatures = Self.header(.getFeatures, size: 0)
        sendRaw(fd, getFeatures + Self.header(.getQueueNum, size: 0))
        XCTAssertEqual(readReply(fd), encodeU64(VhostUserDevice.offeredFeatures))
        XCTAssertEqual(readReply(fd), encodeU64(8))
        XCTAssertEqual(loop.sync { ep.faultCounts }, [:])
        close(fd)
        loop.sync { ep.close() }
    }

    /// A frontend that sends requests and never reads the replies fills its socket, then
    /// the reply queue, and is cut; a message with too many descriptors is refused and its
    /// descriptors are closed.
    func testFrontendThatNeverReadsIsCut() throws {
        let ep = try listeningEndpoint("r.sock")
        let fd = connect(ep)
        let request = Self.header(.getFeatures, size: 0)
        let burst = [UInt8]((0..<256).flatMap { _ in request })
        var sent = 0
        while sent < 4 << 20, loop.sync({ ep.state == .connected }) {
            let n = burst.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
            if n > 0 { sent += n } else { usleep(1_000) }
        }
        waitFor("cut for unread replies") { loop.sync { ep.unreadReplies == 1 && ep.state == .listening } }
        close(fd)
        loop.sync { ep.close() }
    }

    func testTooManyDescriptorsAcrossPiecesAreRefusedAndClosed() throws {
        let ep = try listeningEndpoint("f.sock")
        let fd = connect(ep)
        let before = openDescriptorCount()
        let extra = (0..<5).map { _ in vs_eventfd(0) }
        let h = Self.header(.setMemTable, size: 8)
        sendRaw(fd, Array(h[..<4]), fds: extra)
        sendRaw(fd, Array(h[4...]), fds: extra)   // 10 descriptors for one message: more than 8
        waitFor("refused") { loop.sync { ep.state == .listening } }
        for e in extra { close(e) }
        waitFor("no descriptor kept") { openDescriptorCount() <= before }
        close(fd)
        loop.sync { ep.close() }
    }

    /// Without REPLY_ACK a frontend cannot learn that its memory change failed; it would go
    /// on as if the region were mapped, so the session is cut instead.
    func testFailedMemoryChangeWithoutReplyAckCutsTheSession() throws {
        let ep = try listeningEndpoint("m.sock")
        let fd = connect(ep)
        let region = MemoryRegionDescription(guestPhysicalAddress: 0, size: 1 << 20, userAddress: 0x7000_0000, mmapOffset: 0)
        let table = MemoryTable(regions: [region]).encoded
        sendRaw(fd, Self.header(.setMemTable, size: table.count) + table)   // one region, no fd
        waitFor("cut") { loop.sync { ep.state == .listening } }
        close(fd)
        loop.sync { ep.close() }
    }

    func openDescriptorCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
    }
}
