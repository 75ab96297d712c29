import CShims
import GuestSimulator
import Logging
import Virtio
import XCTest
import SwitchModel
@testable import Datapath

/// Dirty-page logging in the data plane (issue 15): while a guest's log is on, exactly the
/// pages the switch wrote into it are marked: receive buffers (header and frame, every buffer
/// of a mergeable frame), the used ring at the frontend's log address, a packed ring's
/// descriptors and event area; nothing while logging is off.
final class DirtyLogTests: XCTestCase {
    var engine: ForwardingEngine!
    var bridge = 0

    override func setUp() {
        engine = ForwardingEngine(logger: Logger(label: "test"))
        bridge = engine.addBridge(agingSeconds: 300)!
    }

    /// A port on `guest`'s rings; `logUsed` gives the queues whose used ring is logged (at
    /// its own guest-physical address, as QEMU sets VHOST_VRING_F_LOG).
    func attach(_ guest: SimulatedGuest, logUsed: Bool = false) throws -> Int {
        let port = engine.addPort(bridge: bridge)!
        let memory = try guest.makeMemory()
        for q in 0..<2 {
            var c = guest.vringConfiguration(queue: q, memory: memory)
            if logUsed { c.usedLogAddress = guest.rings[q].used }
            engine.startQueue(port: port, c)
        }
        return port
    }

    /// A log that covers `guest` (memory up to 4 GiB + its size).
    func makeLog(for guest: SimulatedGuest, bytes: UInt64? = nil) throws -> DirtyLog {
        let n = bytes ?? (SimulatedGuest.guestBase + UInt64(guest.size)) >> 15
        let fd = vs_memfd_create("dirty-log")
        XCTAssertEqual(ftruncate(fd, off_t(n)), 0)
        return try DirtyLog(fd: fd, size: n, offset: 0)
    }

    func markedPages(_ log: DirtyLog) -> Set<UInt64> {
        let v = log.view
        var out = Set<UInt64>()
        for i in 0..<Int(v.bytes) {
            let b = v.bits.load(fromByteOffset: i, as: UInt8.self)
            if b == 0 { continue }
            for bit in 0..<8 where b & (1 << bit) != 0 { out.insert(UInt64(i * 8 + bit)) }
        }
        return out
    }

    func clear(_ log: DirtyLog) { memset(log.view.bits, 0, Int(log.view.bytes)) }

    func pages(_ gpa: UInt64, _ length: UInt64) -> Set<UInt64> {
        Set((gpa >> 12)...((gpa + length - 1) >> 12))
    }

    func usedRingPages(_ g: SimulatedGuest, queue q: Int) -> Set<UInt64> {
        pages(g.rings[q].used, SplitRingLayout.usedBytes(g.queueSize))
    }

    func testAFrameOverSeveralPagesMarksExactlyItsPagesAndTheUsedRing() throws {
        let a = SimulatedGuest(bufferSize: 8192), b = SimulatedGuest(bufferSize: 8192)
        _ = try attach(a)
        let pb = try attach(b, logUsed: true)
        let log = try makeLog(for: b)
        engine.setDirtyLog(port: pb, log)
        XCTAssertTrue(engine.isLogging(port: pb))
        b.postReceiveBuffers(4)
        a.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), payload: 6000))
        engine.pollOnce()
        let used = b.takeUsed(queue: 0)
        XCTAssertEqual(used.map(\.len), [6026])   // header 12, Ethernet 14, payload 6000
        let buffer = pages(b.bufferAddress(queue: 0, descriptor: Int(used[0].id)), 6026)
        XCTAssertGreaterThanOrEqual(buffer.count, 2)
        XCTAssertEqual(markedPages(log), buffer.union(usedRingPages(b, queue: 0)))
    }

    /// QEMU restarts each ring with VHOST_VRING_F_LOG when logging starts; the restart
    /// writes the ring's notification flags (used.flags), which is marked like any write.
    func testARingRestartedWhileLoggingMarksItsUsedRing() throws {
        let b = SimulatedGuest()
        let pb = try attach(b, logUsed: true)
        let log = try makeLog(for: b)
        engine.setDirtyLog(port: pb, log)
        XCTAssertEqual(markedPages(log), [])
        var c = b.vringConfiguration(queue: 1, memory: try b.makeMemory())
        c.usedLogAddress = b.rings[1].used
        engine.startQueue(port: pb, c)
        XCTAssertEqual(b.usedFlags(queue: 1), SplitQueue.usedFlagNoNotify)
        XCTAssertEqual(markedPages(log), usedRingPages(b, queue: 1))
    }

    func testEveryBufferOfAMergeableFrameIsMarked() throws {
        let a = SimulatedGuest(), b = SimulatedGuest(bufferSize: 512)
        _ = try attach(a)
        let pb = try attach(b, logUsed: true)
        let log = try makeLog(for: b)
        engine.setDirtyLog(port: pb, log)
        b.postReceiveBuffers(16)
        a.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), payload: 3000))
        engine.pollOnce()
        let used = b.takeUsed(queue: 0)
        XCTAssertEqual(used.count, 6)
        var expected = usedRingPages(b, queue: 0)
        for e in used { expected.formUnion(pages(b.bufferAddress(queue: 0, descriptor: Int(e.id)), UInt64(e.len))) }
        XCTAssertEqual(markedPages(log), expected)
    }

    /// A learned unicast frame would take the fast lane; a logging destination leaves it,
    /// and a logging source has its TX used ring marked. Logging off marks nothing.
    func testUnicastToALoggingGuestAndFromOneAndLoggingOff() throws {
        let a = SimulatedGuest(), b = SimulatedGuest()
        let pa = try attach(a, logUsed: true)
        let pb = try attach(b, logUsed: true)
        a.postReceiveBuffers(16)
        b.postReceiveBuffers(16)
        let macA = TestFrame.mac(0xa), macB = TestFrame.mac(0xb)
        b.transmit(TestFrame.make(dst: macA, src: macB))   // learn b
        a.transmit(TestFrame.make(dst: macB, src: macA))   // learn a
        engine.pollOnce()
        _ = a.receivedFrames()
        _ = b.receivedFrames()
        let logA = try makeLog(for: a), logB = try makeLog(for: b)
        a.transmit(TestFrame.make(dst: macB, src: macA))
        engine.pollOnce()
        XCTAssertEqual(b.receivedFrames().count, 1)
        XCTAssertTrue(markedPages(logA).isEmpty && markedPages(logB).isEmpty, "no log handed over: nothing marked")

        engine.setDirtyLog(port: pa, logA)
        engine.setDirtyLog(port: pb, logB)
        a.transmit(TestFrame.make(dst: macB, src: macA, payload: 100))
        engine.pollOnce()
        let used = b.takeUsed(queue: 0)
        XCTAssertEqual(used.count, 1)
        XCTAssertEqual(markedPages(logB), pages(b.bufferAddress(queue: 0, descriptor: Int(used[0].id)), UInt64(used[0].len))
                                              .union(usedRingPages(b, queue: 0)))
        XCTAssertEqual(markedPages(logA), usedRingPages(a, queue: 1), "the sender's TX used ring")

        engine.setDirtyLog(port: pa, nil)
        engine.setDirtyLog(port: pb, nil)
        clear(logA)
        clear(logB)
        a.transmit(TestFrame.make(dst: macB, src: macA))
        engine.pollOnce()
        XCTAssertEqual(b.receivedFrames().count, 1)
        XCTAssertTrue(markedPages(logA).isEmpty && markedPages(logB).isEmpty, "logging off")
        XCTAssertFalse(engine.isLogging(port: pb))
    }

    func testPackedRingMarksItsBuffersDescriptorsAndEventArea() throws {
        let a = SimulatedGuest()
        let b = SimulatedGuest(features: SimulatedGuest.defaultFeatures | VirtioFeature.ringPacked)
        _ = try attach(a)
        let pb = try attach(b)
        let log = try makeLog(for: b)
        engine.setDirtyLog(port: pb, log)
        b.postReceiveBuffers(8)
        a.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), payload: 200))
        engine.pollOnce()
        let used = b.takeUsed(queue: 0)
        XCTAssertEqual(used.count, 1)
        let expected = pages(b.bufferAddress(queue: 0, descriptor: Int(used[0].id)), UInt64(used[0].len))
            .union(pages(b.rings[0].desc, 16 * UInt64(b.queueSize)))
            .union(pages(b.rings[0].used, 4))
        XCTAssertEqual(markedPages(log), expected)
    }

    /// A log smaller than the guest (a hostile size the device would refuse anyway): marks
    /// past its end are skipped, frames still flow.
    func testALogTooSmallForTheGuestIsNeverWrittenPastItsEnd() throws {
        let a = SimulatedGuest(), b = SimulatedGuest()
        _ = try attach(a)
        let pb = try attach(b, logUsed: true)
        let log = try makeLog(for: b, bytes: 1)
        engine.setDirtyLog(port: pb, log)
        b.postReceiveBuffers(4)
        a.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1)))
        engine.pollOnce()
        XCTAssertEqual(b.receivedFrames().count, 1)
        XCTAssertTrue(markedPages(log).isEmpty, "every page of the guest lies past an 8-page log")
    }

    /// SEND_RARP after a migration: a RARP broadcast from the guest's MAC enters the bridge
    /// from its new port, so the MAC table moves it there at once.
    func testAnnounceBroadcastsARarpFromTheNewPort() throws {
        let a = SimulatedGuest(), b = SimulatedGuest(), moved = SimulatedGuest()
        let pa = try attach(a)
        _ = try attach(b)
        let pm = try attach(moved)
        for g in [a, b, moved] { g.postReceiveBuffers(4) }
        let mac = TestFrame.mac(0x77)
        a.transmit(TestFrame.make(dst: TestFrame.broadcast, src: mac))   // the guest, before it moved
        engine.pollOnce()
        _ = b.receivedFrames()
        _ = moved.receivedFrames()
        XCTAssertEqual(engine.fdbEntries(bridge: bridge).first { $0.key & 0xFFFF_FFFF_FFFF == MacTable.key(mac: Self.value(mac), vlan: 0) & 0xFFFF_FFFF_FFFF }?.port, pa)
        engine.announce(port: pm, mac: mac)
        let rarp = ForwardingEngine.rarpFrame(mac: mac)
        XCTAssertEqual(rarp.count, 60)
        XCTAssertEqual(Array(rarp[12..<14]), [0x80, 0x35])
        XCTAssertEqual(b.receivedFrames(), [rarp])
        XCTAssertEqual(a.receivedFrames(), [rarp])
        XCTAssertEqual(engine.fdbEntries(bridge: bridge).filter { $0.port == pm }.count, 1, "the MAC moved to the new port")
        XCTAssertFalse(engine.fdbEntries(bridge: bridge).contains { $0.port == pa })
    }

    static func value(_ mac: [UInt8]) -> UInt64 {
        mac.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }
}
