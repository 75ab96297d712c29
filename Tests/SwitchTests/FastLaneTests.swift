import GuestSimulator
import Logging
import Virtio
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
@testable import CaptureWriter

/// The fast lane (FastLane.swift) against the general path: what the lane delivers must
/// be exactly what the general path would, and every frame the lane declines must still
/// be handled as before.
final class FastLaneTests: XCTestCase {
    var engine: ForwardingEngine!
    var bridge = 0

    override func setUp() {
        engine = ForwardingEngine(logger: Logger(label: "test"))
        bridge = engine.addBridge(agingSeconds: 300)!
    }

    func attachGuest(_ guest: SimulatedGuest, mtu: Int? = nil) throws -> Int {
        let port = engine.addPort(bridge: bridge)!
        let memory = try guest.makeMemory()
        engine.startQueue(port: port, guest.vringConfiguration(queue: 0, memory: memory))
        engine.startQueue(port: port, guest.vringConfiguration(queue: 1, memory: memory))
        if let mtu { engine.setPortPolicy(port: port, access: nil, trunks: nil, native: nil, mtu: mtu) }
        return port
    }

    /// a and b know each other's MAC, so a's next unicast frame to b is a lane candidate.
    func learnedPair(_ a: SimulatedGuest, _ b: SimulatedGuest) {
        a.transmit(TestFrame.make(dst: TestFrame.mac(2), src: TestFrame.mac(1)))
        b.transmit(TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(2)))
        engine.pollOnce()
        _ = a.takeUsed(queue: 0); _ = b.takeUsed(queue: 0)
        _ = a.takeUsed(queue: 1); _ = b.takeUsed(queue: 1)
    }

    func testLaneWritesTheHeaderFrameAndCountersOfTheGeneralPath() throws {
        let a = SimulatedGuest(), b = SimulatedGuest()
        let pa = try attachGuest(a), pb = try attachGuest(b)
        a.postReceiveBuffers(8); b.postReceiveBuffers(8)
        learnedPair(a, b)
        let before = (engine.counters(port: pa), engine.counters(port: pb))
        let frame = TestFrame.make(dst: TestFrame.mac(2), src: TestFrame.mac(1), payload: 50, fill: 0x5a)
        a.transmit(frame)
        XCTAssertEqual(engine.pollOnce(), 1)
        let used = b.takeUsed(queue: 0)
        XCTAssertEqual(used.map(\.len), [UInt32(12 + frame.count)])
        let buf = b.host(b.bufferAddress(queue: 0, descriptor: Int(used[0].id)))
        let bytes = Array(UnsafeRawBufferPointer(start: buf, count: Int(used[0].len)))
        XCTAssertEqual(Array(bytes[0..<10]), [UInt8](repeating: 0, count: 10), "no offload fields")
        XCTAssertEqual(UInt16(bytes[10]) | UInt16(bytes[11]) << 8, 1, "num_buffers")
        XCTAssertEqual(Array(bytes[12...]), frame)
        XCTAssertEqual(a.takeUsed(queue: 1).map(\.len), [0], "TX chain returned")
        XCTAssertEqual(engine.counters(port: pa).rxPackets - before.0.rxPackets, 1)
        XCTAssertEqual(engine.counters(port: pa).rxBytes - before.0.rxBytes, UInt64(frame.count))
        XCTAssertEqual(engine.counters(port: pb).txPackets - before.1.txPackets, 1)
        XCTAssertEqual(engine.counters(port: pb).txBytes - before.1.txBytes, UInt64(frame.count))
    }

    /// A bridge-wide (rx) capture keeps the lane open: each frame the lane forwards is
    /// recorded once, straight from the TX buffer, cut to the snaplen, named by its ingress
    /// port; a batch's records share one clock read.
    func testLaneWithABridgeCaptureRecordsEachFrameOnceWithOneTimestampPerBatch() throws {
        let a = SimulatedGuest(), b = SimulatedGuest()
        let pa = try attachGuest(a), pb = try attachGuest(b)
        a.postReceiveBuffers(8); b.postReceiveBuffers(8)
        learnedPair(a, b)
        let whole = CaptureBuffer(), cut = CaptureBuffer()
        XCTAssertNotNil(engine.addCaptureTap(ring: whole.ring, snaplen: 65536, bridge: bridge))
        XCTAssertNotNil(engine.addCaptureTap(ring: cut.ring, snaplen: 20, bridge: bridge))
        XCTAssertTrue(engine.fastLaneOpen(from: pa), "an rx capture does not close the lane")
        XCTAssertEqual(engine.ingressCaptures(of: pa), 0b11)
        let frames = [60, 300, 1000].map { TestFrame.make(dst: TestFrame.mac(2), src: TestFrame.mac(1), payload: $0, fill: UInt8($0 & 0xff)) }
        for f in frames { a.transmit(f) }
        XCTAssertEqual(engine.pollOnce(), 3)
        XCTAssertEqual(b.receivedFrames(), frames, "forwarding unchanged")
        XCTAssertEqual(engine.counters(port: pb).txPackets, 4, "the learning frame and the three, each once")
        var stamps: Set<UInt64> = []
        for f in frames {
            let r = try XCTUnwrap(whole.ring.peek())
            XCTAssertEqual(Array(r.bytes), f)
            XCTAssertEqual(r.originalLength, f.count)
            XCTAssertEqual(r.port, pa)
            XCTAssertFalse(r.outbound)
            stamps.insert(r.timestampNs)
            whole.ring.consume(r)
            let c = try XCTUnwrap(cut.ring.peek())
            XCTAssertEqual(Array(c.bytes), Array(f.prefix(20)))
            XCTAssertEqual(c.originalLength, f.count)
            cut.ring.consume(c)
        }
        XCTAssertNil(whole.ring.peek(), "each frame once")
        XCTAssertEqual(stamps.count, 1, "one clock read per batch")
        a.transmit(frames[0])
        engine.pollOnce()
        let next = try XCTUnwrap(whole.ring.peek())
        XCTAssertGreaterThan(next.timestampNs, stamps.first!, "the next batch reads the clock again")
    }

    func testFramesTheLaneDeclinesTakeTheGeneralPath() throws {
        // b has 512-byte receive buffers: a 1400-byte frame needs three (mergeable).
        let a = SimulatedGuest(), b = SimulatedGuest(bufferSize: 512), c = SimulatedGuest()
        _ = try attachGuest(a)
        _ = try attachGuest(b)
        let pc = try attachGuest(c, mtu: 1000)
        a.postReceiveBuffers(8); b.postReceiveBuffers(16); c.postReceiveBuffers(8)
        learnedPair(a, b)
        c.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(3)))
        engine.pollOnce()
        _ = a.takeUsed(queue: 0); _ = b.takeUsed(queue: 0); _ = c.takeUsed(queue: 0)   // the floods

        let big = TestFrame.make(dst: TestFrame.mac(2), src: TestFrame.mac(1), payload: 1400)
        a.transmit(big)
        engine.pollOnce()
        XCTAssertEqual(b.takeUsed(queue: 0).map(\.len), [512, 512, 402], "spread over three buffers")

        // Over c's MTU: dropped and counted, as before the lane.
        a.transmit(TestFrame.make(dst: TestFrame.mac(3), src: TestFrame.mac(1), payload: 1200))
        engine.pollOnce()
        XCTAssertEqual(engine.counters(port: pc).txDropTooBig, 1)
        XCTAssertEqual(c.takeUsed(queue: 0).count, 0)

        // To itself: counted as received, delivered nowhere.
        let toSelf = TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(1))
        a.transmit(toSelf)
        XCTAssertEqual(engine.pollOnce(), 1)
        XCTAssertEqual([a.takeUsed(queue: 0).count, b.takeUsed(queue: 0).count, c.takeUsed(queue: 0).count], [0, 0, 0])

        // A frame whose header and data are in two descriptors: walked, then delivered.
        let frame = TestFrame.make(dst: TestFrame.mac(2), src: TestFrame.mac(1), payload: 80, fill: 0x11)
        a.transmitTwoDescriptors(frame)
        engine.pollOnce()
        XCTAssertEqual(b.receivedFrames(), [frame])
    }
    // Offload metadata (NEEDS_CSUM, GSO) is declined by the lane: OffloadTests sends such
    // frames between learned guests and checks that the switch finishes them.
}

extension SimulatedGuest {
    /// Queues one frame in two descriptors, the virtio-net header in the first (as older
    /// Linux drivers do): a chain the lane declines.
    func transmitTwoDescriptors(_ frame: [UInt8]) {
        let i = freeDesc[1] & (queueSize - 1), j = (i + 1) & (queueSize - 1)
        freeDesc[1] &+= 2
        let h = bufferAddress(queue: 1, descriptor: Int(i)), f = bufferAddress(queue: 1, descriptor: Int(j))
        memset(host(h), 0, headerLength)
        frame.withUnsafeBytes { host(f).copyMemory(from: $0.baseAddress!, byteCount: frame.count) }
        writeDescriptor(queue: 1, i, addr: h, len: UInt32(headerLength), flags: SplitQueue.descFlagNext, next: j)
        writeDescriptor(queue: 1, j, addr: f, len: UInt32(frame.count), flags: 0, next: 0)
        makeAvailable(queue: 1, head: i)
    }
}
