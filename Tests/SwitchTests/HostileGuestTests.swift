import CShims
import GuestSimulator
import Virtio
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
@testable import CaptureWriter

/// A hostile guest next to a good pair on one bridge, the real forwarding thread between
/// them (issue 6, promise 1). For every kind of bad ring or descriptor: the bad frame is
/// dropped and counted, a corrupt ring marks the port broken with one log line, the good
/// pair's frames all arrive, and the thread goes back to sleep (no spinning).
final class HostileGuestTests: XCTestCase {
    static let rounds = 20

    var h: EngineHarness!
    var pair: GoodPair!
    var bad: SimulatedGuest!

    override func setUpWithError() throws {
        h = EngineHarness()
        pair = GoodPair()
        try pair.attach(to: h)
        bad = SimulatedGuest()
        try h.attach(bad)
        // Learn the pair's addresses now: later frames between them are unicast and never
        // reach the bad guest (the RX attacks count exactly the broadcasts they send).
        XCTAssertTrue(pair.exchange(h))
    }

    override func tearDown() {
        h = nil
    }

    var inside: UInt64 { bad.bufferAddress(queue: 1, descriptor: 0) }
    /// 2 KiB of the bad guest's memory for indirect tables (16-byte aligned).
    var tableArea: UInt64 { bad.bufferAddress(queue: 1, descriptor: 5) }
    var memoryEnd: UInt64 { SimulatedGuest.guestBase + UInt64(bad.size) }

    /// Runs `rounds` rounds in which the bad guest posts one hostile TX chain (written by
    /// `post`, which returns the head) and the good pair exchanges frames. Then checks
    /// every bad chain was dropped, counted and returned, and nothing else was disturbed.
    func runTransmitAttack(_ what: String, file: StaticString = #filePath, line: UInt = #line,
                           post: (SimulatedGuest) -> UInt16) {
        resetBadGuest()
        for r in 0..<Self.rounds {
            bad.makeAvailable(queue: 1, head: post(bad))
            h.kick(bad)
            XCTAssertTrue(pair.exchange(h), "\(what): good pair lost frames in round \(r)", file: file, line: line)
        }
        XCTAssertTrue(h.wait { self.h.counters(self.bad).rxDropBadDescriptor == UInt64(Self.rounds) },
                      "\(what): \(h.counters(bad).rxDropBadDescriptor) of \(Self.rounds) bad chains counted",
                      file: file, line: line)
        XCTAssertEqual(bad.takeUsed(queue: 1).count, Self.rounds, "\(what): bad chains returned to the guest",
                       file: file, line: line)
        XCTAssertEqual(h.counters(bad).rxPackets, 0, "\(what): nothing forwarded", file: file, line: line)
        XCTAssertFalse(h.isBroken(bad), "\(what): a bad chain is not a broken ring", file: file, line: line)
        assertSleepsWhenIdle(what, file: file, line: line)
    }

    func assertSleepsWhenIdle(_ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let polls = h.idlePolls(over: 0.3)
        XCTAssertLessThan(polls, 10_000, "\(what): forwarding thread spins while idle (\(polls) passes in 0.3 s)",
                          file: file, line: line)
    }

    // MARK: bad descriptors on TX: dropped, counted, returned

    func testAddressOutsideGuestMemory() {
        runTransmitAttack("address outside memory") { g in
            g.writeDescriptor(queue: 1, 0, addr: 0xdead_0000_0000, len: 100, flags: 0, next: 0)
            return 0
        }
    }

    func testBufferRunningPastTheEndOfMemory() {
        runTransmitAttack("buffer past the end") { g in
            g.writeDescriptor(queue: 1, 0, addr: memoryEnd - 30, len: 100, flags: 0, next: 0)
            return 0
        }
    }

    func testAddressThatWrapsAround() {
        runTransmitAttack("address + length overflows") { g in
            g.writeDescriptor(queue: 1, 0, addr: UInt64.max - 10, len: 100, flags: 0, next: 0)
            return 0
        }
    }

    func testLengthsNear4GiB() {
        runTransmitAttack("lengths near 2^32") { g in
            g.writeDescriptor(queue: 1, 0, addr: inside, len: UInt32.max, flags: 0, next: 0)
            return 0
        }
        // Two descriptors whose lengths only overflow a 32-bit sum.
        runTransmitAttack("lengths summing past 2^32") { g in
            g.writeDescriptor(queue: 1, 3, addr: inside, len: 0x8000_0000, flags: SplitQueue.descFlagNext, next: 4)
            g.writeDescriptor(queue: 1, 4, addr: inside, len: 0x8000_0010, flags: 0, next: 0)
            return 3
        }
    }

    func testNextLoop() {
        runTransmitAttack("self loop") { g in
            g.writeDescriptor(queue: 1, 0, addr: inside, len: 64, flags: SplitQueue.descFlagNext, next: 0)
            return 0
        }
    }

    func testChainLongerThanTheQueue() {
        // Every descriptor of the 256-entry table chained, the last back to the first.
        runTransmitAttack("chain through the whole table and around") { g in
            for i in 0..<Int(g.queueSize) {
                g.writeDescriptor(queue: 1, UInt16(i), addr: inside, len: 1, flags: SplitQueue.descFlagNext,
                                  next: UInt16((i + 1) % Int(g.queueSize)))
            }
            return 0
        }
    }

    func testNextIndexOutOfRange() {
        runTransmitAttack("next out of range") { g in
            g.writeDescriptor(queue: 1, 0, addr: inside, len: 64, flags: SplitQueue.descFlagNext, next: 0xffff)
            return 0
        }
    }

    func testWriteOnlyDescriptorOnTransmit() {
        runTransmitAttack("write-only descriptor on TX") { g in
            g.writeDescriptor(queue: 1, 0, addr: inside, len: 64, flags: SplitQueue.descFlagWrite, next: 0)
            return 0
        }
    }

    func testIndirectTableOutsideMemory() {
        runTransmitAttack("indirect table outside memory") { g in
            g.writeDescriptor(queue: 1, 0, addr: 0xdead_0000_0000, len: 32, flags: SplitQueue.descFlagIndirect, next: 0)
            return 0
        }
        runTransmitAttack("indirect table across the end of memory") { g in
            g.writeDescriptor(queue: 1, 0, addr: memoryEnd - 16, len: 32, flags: SplitQueue.descFlagIndirect, next: 0)
            return 0
        }
    }

    func testIndirectTableOfBadSize() {
        for len: UInt32 in [0, 15, 24, 1 << 16, UInt32.max & ~15] {
            runTransmitAttack("indirect table of \(len) bytes") { g in
                g.writeDescriptor(queue: 1, 0, addr: tableArea, len: len, flags: SplitQueue.descFlagIndirect, next: 0)
                return 0
            }
        }
    }

    /// Entry 0 of the table area: an indirect descriptor again; entry 1: NEXT to itself.
    func writeHostileTable(_ g: SimulatedGuest) {
        let table = tableArea
        let t = g.host(table)
        t.storeBytes(of: table, as: UInt64.self)
        t.storeBytes(of: UInt32(32), toByteOffset: 8, as: UInt32.self)
        t.storeBytes(of: SplitQueue.descFlagIndirect, toByteOffset: 12, as: UInt16.self)
        t.storeBytes(of: inside, toByteOffset: 16, as: UInt64.self)
        t.storeBytes(of: UInt32(64), toByteOffset: 24, as: UInt32.self)
        t.storeBytes(of: SplitQueue.descFlagNext, toByteOffset: 28, as: UInt16.self)
        t.storeBytes(of: UInt16(1), toByteOffset: 30, as: UInt16.self)
    }

    func testNestedIndirectAndLoopInsideAnIndirectTable() {
        runTransmitAttack("nested indirect") { g in
            writeHostileTable(g)
            g.writeDescriptor(queue: 1, 0, addr: tableArea, len: 32, flags: SplitQueue.descFlagIndirect, next: 0)
            return 0
        }
        runTransmitAttack("loop inside an indirect table") { g in
            writeHostileTable(g)
            g.writeDescriptor(queue: 1, 0, addr: tableArea + 16, len: 16, flags: SplitQueue.descFlagIndirect, next: 0)
            return 0
        }
        runTransmitAttack("indirect with NEXT") { g in
            writeHostileTable(g)
            g.writeDescriptor(queue: 1, 0, addr: tableArea, len: 32,
                              flags: SplitQueue.descFlagIndirect | SplitQueue.descFlagNext, next: 1)
            return 0
        }
    }

    /// Counters are cumulative: each attack gets a fresh bad guest on a fresh port.
    func resetBadGuest() {
        let p = h.port(bad)
        h.engine.sync { $0.removePort(p) }
        bad = SimulatedGuest()
        XCTAssertNoThrow(try h.attach(bad))
    }

    // MARK: corrupt rings: queue stopped, port broken, logged once

    func assertBrokenAndOthersForward(_ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(h.wait { self.h.isBroken(self.bad) }, "\(what): port not marked broken", file: file, line: line)
        for r in 0..<Self.rounds {
            h.kick(bad)
            XCTAssertTrue(pair.exchange(h), "\(what): good pair lost frames in round \(r)", file: file, line: line)
        }
        XCTAssertEqual(h.log.count(level: .error, containing: "ring is corrupt"), 1,
                       "\(what): exactly one log line", file: file, line: line)
        assertSleepsWhenIdle(what, file: file, line: line)
    }

    func testAvailIndexJumpingFarAhead() {
        XCTAssertTrue(pair.exchange(h))
        let avail = bad.host(bad.rings[1].avail)
        vs_store_release_u16(avail + 2, 0x8000)
        h.kick(bad)
        assertBrokenAndOthersForward("TX avail index jump")
        // The frontend stopping the ring (GET_VRING_BASE, disconnect) clears the mark too.
        let p0 = h.port(bad)
        h.engine.sync { $0.stopQueue(port: p0, queue: 1) }
        XCTAssertFalse(h.isBroken(bad))
        vs_store_release_u16(avail + 2, 0x8000)
        h.engine.sync { $0.startQueue(port: p0, self.bad.vringConfiguration(queue: 1, memory: try! self.bad.makeMemory())) }
        XCTAssertTrue(h.wait { self.h.isBroken(self.bad) }, "broken again")
        // Setting the queue up again (what a guest reset does) clears the mark.
        let memory = try! bad.makeMemory()
        vs_store_release_u16(avail + 2, 0)
        let config = bad.vringConfiguration(queue: 1, memory: memory)
        let p = h.port(bad)
        h.engine.sync { $0.startQueue(port: p, config) }
        XCTAssertFalse(h.isBroken(bad))
    }

    func testDescriptorHeadOutOfRange() {
        bad.writeDescriptor(queue: 1, 0, addr: inside, len: 20, flags: 0, next: 0)
        bad.makeAvailable(queue: 1, head: 0)      // a runt first: dropped and returned
        bad.makeAvailable(queue: 1, head: 999)
        h.kick(bad)
        assertBrokenAndOthersForward("head index 999 in a 256-entry ring")
        XCTAssertEqual(h.counters(bad).rxDropRunt, 1)
        XCTAssertEqual(h.counters(bad).rxDropBadDescriptor, 1)
        XCTAssertEqual(bad.takeUsed(queue: 1).map(\.id), [0], "the chain before the bad head is returned")
    }

    func testReceiveAvailIndexJumpingFarAhead() {
        let avail = bad.host(bad.rings[0].avail)
        vs_store_release_u16(avail + 2, 0x4000)
        // A broadcast from the pair reaches the bad guest's RX ring and finds it corrupt.
        pair.a.transmit(TestFrame.make(dst: TestFrame.broadcast, src: GoodPair.macA))
        h.kick(pair.a)
        assertBrokenAndOthersForward("RX avail index jump")
    }

    func testRingBrokenRepeatedlyLogsAtMostOncePerSecond() throws {
        let p = h.port(bad)
        let memory = try bad.makeMemory()
        let avail = bad.host(bad.rings[1].avail)
        for _ in 0..<50 {
            vs_store_release_u16(avail + 2, 0)
            let config = bad.vringConfiguration(queue: 1, memory: memory)
            h.engine.sync { $0.startQueue(port: p, config) }
            vs_store_release_u16(avail + 2, 0x9000)
            h.kick(bad)
            XCTAssertTrue(h.wait { self.h.isBroken(self.bad) })
        }
        // 50 breakages within a second or two: one or two lines, never 50.
        XCTAssertLessThanOrEqual(h.log.count(level: .error, containing: "ring is corrupt"), 3)
        XCTAssertTrue(pair.exchange(h))
    }

    // MARK: bad receive buffers

    /// The bad guest offers hostile RX buffers; broadcasts from the pair reach it.
    func runReceiveAttack(_ what: String, file: StaticString = #filePath, line: UInt = #line,
                          post: (SimulatedGuest) -> Void) {
        post(bad)
        let bcast = TestFrame.make(dst: TestFrame.broadcast, src: GoodPair.macA, etherType: 0x0806)
        for r in 0..<Self.rounds {
            pair.a.transmit(bcast)
            h.kick(pair.a)
            var got: [[UInt8]] = []
            XCTAssertTrue(h.wait { got += self.pair.b.receivedFrames(); return !got.isEmpty }, file: file, line: line)
            XCTAssertEqual(got, [bcast], "\(what): round \(r)", file: file, line: line)
            pair.b.postReceiveBuffers(1)
            XCTAssertTrue(pair.exchange(h), "\(what): good pair lost frames in round \(r)", file: file, line: line)
        }
        XCTAssertEqual(h.counters(bad).txDropBadDescriptor, UInt64(Self.rounds), what, file: file, line: line)
        XCTAssertEqual(h.counters(bad).txPackets, 0, what, file: file, line: line)
        assertSleepsWhenIdle(what, file: file, line: line)
    }

    func testReadOnlyDescriptorOnReceive() {
        runReceiveAttack("read-only RX buffer") { g in
            g.writeDescriptor(queue: 0, 0, addr: g.bufferAddress(queue: 0, descriptor: 0), len: 2048, flags: 0, next: 0)
            g.makeAvailable(queue: 0, head: 0)
        }
    }

    func testReceiveBufferOutsideMemory() {
        runReceiveAttack("RX buffer outside memory") { g in
            g.writeDescriptor(queue: 0, 0, addr: 0x10, len: 2048, flags: SplitQueue.descFlagWrite, next: 0)
            g.makeAvailable(queue: 0, head: 0)
        }
    }

    func testReceiveChainLoop() {
        runReceiveAttack("RX chain loop") { g in
            g.writeDescriptor(queue: 0, 0, addr: g.bufferAddress(queue: 0, descriptor: 0), len: 4,
                              flags: SplitQueue.descFlagWrite | SplitQueue.descFlagNext, next: 0)
            g.makeAvailable(queue: 0, head: 0)
        }
    }
}
