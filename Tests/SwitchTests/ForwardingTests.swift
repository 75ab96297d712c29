import GuestSimulator
import Logging
import Virtio
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
@testable import CaptureWriter

/// The forwarding engine against simulated guests: the real ring and copy code, no sockets.
final class ForwardingTests: XCTestCase {
    var engine: ForwardingEngine!
    var bridge = 0

    override func setUp() {
        engine = ForwardingEngine(logger: Logger(label: "test"))
        bridge = engine.addBridge(agingSeconds: 300)!
    }

    /// Adds a port with a simulated guest whose RX and TX queues are running.
    func attachGuest(_ guest: SimulatedGuest) throws -> Int {
        let port = engine.addPort(bridge: bridge)!
        let memory = try guest.makeMemory()
        engine.startQueue(port: port, guest.vringConfiguration(queue: 0, memory: memory))
        engine.startQueue(port: port, guest.vringConfiguration(queue: 1, memory: memory))
        return port
    }

    func testUnknownUnicastFloodsThenLearnedUnicastGoesToOnePort() throws {
        let a = SimulatedGuest(), b = SimulatedGuest(), c = SimulatedGuest()
        let pa = try attachGuest(a), pb = try attachGuest(b), pc = try attachGuest(c)
        for g in [a, b, c] { g.postReceiveBuffers(16) }

        // a -> b while b is unknown: flooded to b and c, never back to a.
        let first = TestFrame.make(dst: TestFrame.mac(2), src: TestFrame.mac(1))
        a.transmit(first)
        XCTAssertEqual(engine.pollOnce(), 1)
        XCTAssertEqual(b.receivedFrames(), [first])
        XCTAssertEqual(c.receivedFrames(), [first])
        XCTAssertEqual(a.receivedFrames(), [])
        XCTAssertEqual(a.takeUsed(queue: 1).map(\.len), [0], "TX chain returned with length 0")

        // b answers: a is learned, so only a gets it; then a -> b goes only to b.
        let reply = TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(2), payload: 1400)
        b.transmit(reply)
        engine.pollOnce()
        XCTAssertEqual(a.receivedFrames(), [reply])
        XCTAssertEqual(c.receivedFrames(), [])
        a.transmit(first)
        engine.pollOnce()
        XCTAssertEqual(b.receivedFrames(), [first])
        XCTAssertEqual(c.receivedFrames(), [])

        let entries = engine.fdbEntries(bridge: bridge)
        XCTAssertEqual(Set(entries.map(\.port)), [pa, pb])
        XCTAssertEqual(engine.counters(port: pa).rxPackets, 2)
        XCTAssertEqual(engine.counters(port: pb).txPackets, 2)
        XCTAssertEqual(engine.counters(port: pc).txPackets, 1)
    }

    func testBroadcastReachesEveryOtherPort() throws {
        let guests = (0..<4).map { _ in SimulatedGuest() }
        for g in guests { _ = try attachGuest(g); g.postReceiveBuffers(4) }
        let frame = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), etherType: 0x0806)
        guests[0].transmit(frame)
        engine.pollOnce()
        XCTAssertEqual(guests[0].receivedFrames(), [])
        for g in guests.dropFirst() { XCTAssertEqual(g.receivedFrames(), [frame]) }
    }

    func testFullDestinationRingDropsAndCountsWithoutBlockingOthers() throws {
        let a = SimulatedGuest(), b = SimulatedGuest(), c = SimulatedGuest()
        _ = try attachGuest(a)
        let pb = try attachGuest(b)
        _ = try attachGuest(c)
        c.postReceiveBuffers(8)            // b posts nothing: its ring is "full"
        let frame = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1))
        a.transmit(frame)
        a.transmit(frame)
        engine.pollOnce()
        XCTAssertEqual(engine.counters(port: pb).txDropNoBuffers, 2)
        XCTAssertEqual(c.receivedFrames().count, 2, "c still gets its frames")
        XCTAssertEqual(a.takeUsed(queue: 1).count, 2, "a's TX buffers are returned anyway")
    }

    func testMergeableFrameSpansSeveralReceiveBuffers() throws {
        let a = SimulatedGuest(), b = SimulatedGuest(bufferSize: 512)
        _ = try attachGuest(a)
        _ = try attachGuest(b)
        b.postReceiveBuffers(8)
        let frame = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), payload: 1400)
        a.transmit(frame)
        engine.pollOnce()
        let used = b.takeUsed(queue: 0)
        // 12 + 1414 bytes over 512-byte buffers: 3 chains, the last partly filled.
        XCTAssertEqual(used.map(\.len), [512, 512, 402])
        var received: [UInt8] = []
        for (k, e) in used.enumerated() {
            let buf = b.host(b.bufferAddress(queue: 0, descriptor: Int(e.id)))
            let bytes = Array(UnsafeRawBufferPointer(start: buf, count: Int(e.len)))
            if k == 0 {
                XCTAssertEqual(UInt16(bytes[10]) | UInt16(bytes[11]) << 8, 3, "num_buffers")
                received += bytes[12...]
            } else {
                received += bytes
            }
        }
        XCTAssertEqual(received, frame)
    }

    func testWithoutMergeableTooSmallBufferDrops() throws {
        let a = SimulatedGuest()
        let b = SimulatedGuest(bufferSize: 512, features: VirtioFeature.version1)
        _ = try attachGuest(a)
        let pb = try attachGuest(b)
        b.postReceiveBuffers(4)
        a.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), payload: 1400))
        a.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), payload: 100))
        engine.pollOnce()
        XCTAssertEqual(engine.counters(port: pb).txDropNoBuffers, 1)
        XCTAssertEqual(b.receivedFrames().map(\.count), [114])
    }

    func testHostileTransmitChainIsDroppedAndCounted() throws {
        let a = SimulatedGuest(), b = SimulatedGuest()
        let pa = try attachGuest(a)
        _ = try attachGuest(b)
        b.postReceiveBuffers(4)
        // Descriptor pointing outside guest memory, then a self-loop, then a good frame.
        a.writeDescriptor(queue: 1, 0, addr: 0xdead_0000_0000, len: 100, flags: 0, next: 0)
        a.makeAvailable(queue: 1, head: 0)
        a.writeDescriptor(queue: 1, 1, addr: SimulatedGuest.guestBase, len: 100, flags: SplitQueue.descFlagNext, next: 1)
        a.makeAvailable(queue: 1, head: 1)
        a.freeDesc[1] = 2
        let good = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1))
        a.transmit(good)
        engine.pollOnce()
        XCTAssertEqual(engine.counters(port: pa).rxDropBadDescriptor, 2)
        XCTAssertEqual(b.receivedFrames(), [good])
        XCTAssertEqual(a.takeUsed(queue: 1).count, 3, "bad chains are returned, not leaked")
    }

    func testRuntFrameIsDropped() throws {
        let a = SimulatedGuest(), b = SimulatedGuest()
        let pa = try attachGuest(a)
        _ = try attachGuest(b)
        b.postReceiveBuffers(4)
        a.transmit([1, 2, 3])
        engine.pollOnce()
        XCTAssertEqual(engine.counters(port: pa).rxDropRunt, 1)
        XCTAssertEqual(b.receivedFrames(), [])
    }

    func testStopQueueReportsWhereItStoppedAndRestartResumes() throws {
        let a = SimulatedGuest(), b = SimulatedGuest()
        let pa = try attachGuest(a)
        _ = try attachGuest(b)
        b.postReceiveBuffers(8)
        let f = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1))
        a.transmit(f)
        a.transmit(f)
        engine.pollOnce()
        XCTAssertEqual(engine.stopQueue(port: pa, queue: 1), 2)
        a.transmit(f)
        engine.pollOnce()
        XCTAssertEqual(b.receivedFrames().count, 2, "stopped queue is not read")
        let memory = try a.makeMemory()
        var config = a.vringConfiguration(queue: 1, memory: memory)
        config.lastAvail = 2
        engine.startQueue(port: pa, config)
        engine.pollOnce()
        XCTAssertEqual(b.receivedFrames().count, 1)
    }

    func testAddressMovingBetweenPortsWithinOneSecondIsRelearned() throws {
        let a = SimulatedGuest(), b = SimulatedGuest(), c = SimulatedGuest()
        let pa = try attachGuest(a), pb = try attachGuest(b)
        _ = try attachGuest(c)
        for g in [a, b, c] { g.postReceiveBuffers(16) }
        let fromX = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(9))
        a.transmit(fromX)
        engine.pollOnce()
        b.transmit(fromX)          // X moved to b
        engine.pollOnce()
        a.transmit(fromX)          // and back to a, same second: a's learning shortcut must not skip
        engine.pollOnce()
        XCTAssertEqual(engine.fdbEntries(bridge: bridge).map(\.port), [pa])
        b.transmit(fromX)
        engine.pollOnce()
        XCTAssertEqual(engine.fdbEntries(bridge: bridge).map(\.port), [pb])
        // Learned once, then moved three times; repeats on the same port are not learns.
        a.transmit(fromX)
        a.transmit(fromX)
        engine.pollOnce()
        XCTAssertEqual(engine.macCounts(bridge: bridge), MacTableCounts(learned: 5, aged: 0))
    }

    func testRemovedPortIsForgottenByTheMacTable() throws {
        let a = SimulatedGuest(), b = SimulatedGuest()
        let pa = try attachGuest(a)
        _ = try attachGuest(b)
        b.postReceiveBuffers(4)
        a.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1)))
        engine.pollOnce()
        XCTAssertEqual(engine.fdbEntries(bridge: bridge).count, 1)
        engine.removePort(pa)
        XCTAssertEqual(engine.fdbEntries(bridge: bridge).count, 0)
    }
}
