import CShims
import GuestSimulator
import Virtio
import XCTest
import SwitchModel
@testable import Datapath

/// A corrupt packed ring goes through the same fault path as a corrupt split ring
/// (RingFaults.swift): the queue stops, the port is marked broken, one line is logged at
/// most once a second, the good pair keeps forwarding and the thread goes back to sleep.
/// A corrupt RX ring is stopped too, not counted as "no buffers" for ever.
final class PackedHostileRingTests: XCTestCase {
    typealias E = SimulatedGuest.PackedElement
    var h: EngineHarness!
    var pair: GoodPair!
    var bad: SimulatedGuest!

    override func setUpWithError() throws {
        h = EngineHarness()
        pair = GoodPair()
        try pair.attach(to: h)
        bad = SimulatedGuest(queueSize: 16, features: SimulatedGuest.defaultFeatures | VirtioFeature.ringPacked)
        try h.attach(bad)
        XCTAssertTrue(pair.exchange(h))
    }

    override func tearDown() { h = nil }

    var buffer: UInt64 { bad.bufferAddress(queue: 1, descriptor: 0) }

    func assertBrokenAndOthersForward(_ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(h.wait { self.h.isBroken(self.bad) }, "\(what): port not marked broken", file: file, line: line)
        for r in 0..<10 {
            h.kick(bad)
            XCTAssertTrue(pair.exchange(h), "\(what): good pair lost frames in round \(r)", file: file, line: line)
        }
        XCTAssertEqual(h.log.count(level: .error, containing: "ring is corrupt"), 1,
                       "\(what): exactly one log line", file: file, line: line)
        let polls = h.idlePolls(over: 0.3)
        XCTAssertLessThan(polls, 10_000, "\(what): the thread spins (\(polls) passes in 0.3 s)", file: file, line: line)
    }

    func testHalfAvailableTransmitList() {
        // NEXT on the only descriptor made available: the list's second half never comes.
        bad.makeAvailablePacked(queue: 1, [E(addr: buffer, len: 60, flags: PackedQueue.descFlagNext)])
        h.kick(bad)
        assertBrokenAndOthersForward("half-available TX list")
    }

    func testTransmitListLongerThanTheRing() {
        // 16 descriptors in a 16-entry ring, the last one with NEXT as well.
        let list = (0..<16).map { _ in E(addr: buffer, len: 8, flags: PackedQueue.descFlagNext) }
        bad.makeAvailablePacked(queue: 1, list)
        h.kick(bad)
        assertBrokenAndOthersForward("TX list longer than the ring")
    }

    func testCorruptReceiveRingIsStoppedNotCountedAsNoBuffers() {
        bad.makeAvailablePacked(queue: 0, [E(addr: bad.bufferAddress(queue: 0, descriptor: 0), len: 2048, writable: true,
                                             flags: PackedQueue.descFlagNext)])
        // A broadcast from the pair reaches the bad guest's RX ring and finds it corrupt.
        pair.a.transmit(TestFrame.make(dst: TestFrame.broadcast, src: GoodPair.macA))
        h.kick(pair.a)
        assertBrokenAndOthersForward("half-available RX list")
    }

    func testSettingTheRingUpAgainClearsTheMark() throws {
        bad.makeAvailablePacked(queue: 1, [E(addr: buffer, len: 60, flags: PackedQueue.descFlagNext)])
        h.kick(bad)
        XCTAssertTrue(h.wait { self.h.isBroken(self.bad) })
        let p = h.port(bad)
        h.engine.sync { _ = $0.stopQueue(port: p, queue: 1) }
        XCTAssertFalse(h.isBroken(bad), "the frontend let go of the ring")
    }

    func testBrokenRepeatedlyLogsAtMostOncePerSecond() throws {
        let p = h.port(bad)
        let memory = try bad.makeMemory()
        bad.makeAvailablePacked(queue: 1, [E(addr: buffer, len: 60, flags: PackedQueue.descFlagNext)])
        for _ in 0..<50 {
            let config = bad.vringConfiguration(queue: 1, memory: memory)
            var base = config
            base.lastAvail = 0x8000
            h.engine.sync { $0.startQueue(port: p, base) }
            h.kick(bad)
            XCTAssertTrue(h.wait { self.h.isBroken(self.bad) })
        }
        XCTAssertLessThanOrEqual(h.log.count(level: .error, containing: "ring is corrupt"), 3)
        XCTAssertTrue(pair.exchange(h))
    }
}
