import CShims
import GuestSimulator
import Logging
import Virtio
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
@testable import CaptureWriter

/// The forwarding engine between packed-ring and split-ring guests (simulated, no sockets).
final class PackedForwardingTests: XCTestCase {
    var engine: ForwardingEngine!
    var bridge = 0
    static let packedFeatures = SimulatedGuest.defaultFeatures | VirtioFeature.ringPacked

    override func setUp() {
        engine = ForwardingEngine(logger: Logger(label: "test"))
        bridge = engine.addBridge(agingSeconds: 300)!
    }

    func attachGuest(_ guest: SimulatedGuest) throws -> Int {
        let port = engine.addPort(bridge: bridge)!
        let memory = try guest.makeMemory()
        engine.startQueue(port: port, guest.vringConfiguration(queue: 0, memory: memory))
        engine.startQueue(port: port, guest.vringConfiguration(queue: 1, memory: memory))
        return port
    }

    func testPackedAndSplitGuestsTalk() throws {
        let a = SimulatedGuest(features: Self.packedFeatures), b = SimulatedGuest(), c = SimulatedGuest(features: Self.packedFeatures)
        let pa = try attachGuest(a), pb = try attachGuest(b), pc = try attachGuest(c)
        for g in [a, b, c] { g.postReceiveBuffers(16) }
        let first = TestFrame.make(dst: TestFrame.mac(2), src: TestFrame.mac(1))
        a.transmit(first)                                  // packed -> split and packed (flood)
        XCTAssertEqual(engine.pollOnce(), 1)
        XCTAssertEqual(b.receivedFrames(), [first])
        XCTAssertEqual(c.receivedFrames(), [first])
        XCTAssertEqual(a.takeUsed(queue: 1).map(\.len), [0], "TX buffer returned")
        let reply = TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(2), payload: 1400)
        b.transmit(reply)                                  // split -> packed (learned unicast)
        engine.pollOnce()
        XCTAssertEqual(a.receivedFrames(), [reply])
        XCTAssertEqual(c.receivedFrames(), [])
        XCTAssertEqual(engine.counters(port: pa).rxPackets, 1)
        XCTAssertEqual(engine.counters(port: pb).txPackets, 1)
        XCTAssertEqual(engine.counters(port: pc).txPackets, 1)
    }

    /// Packed queues stay off the fast lane (`lastDestination` is only set by the lane: it
    /// ran slower side by side, docs/performance.md), with or without dirty logging, which
    /// the general path honours.
    func testPackedQueuesTakeTheGeneralPathAndLog() throws {
        let a = SimulatedGuest(features: Self.packedFeatures), b = SimulatedGuest(features: Self.packedFeatures)
        let pa = try attachGuest(a), pb = try attachGuest(b)
        a.postReceiveBuffers(8); b.postReceiveBuffers(8)
        a.transmit(TestFrame.make(dst: TestFrame.mac(2), src: TestFrame.mac(1)))
        b.transmit(TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(2)))
        engine.pollOnce()
        _ = a.receivedFrames(); _ = b.receivedFrames()
        XCTAssertFalse(engine.ports[pb].rxLaneOpen)
        engine.ports[pa].lastDestination = -1
        let frame = TestFrame.make(dst: TestFrame.mac(2), src: TestFrame.mac(1), payload: 200, fill: 0x3c)
        a.transmit(frame)
        XCTAssertEqual(engine.pollOnce(), 1)
        XCTAssertEqual(engine.ports[pa].lastDestination, -1, "the general path delivered it")
        XCTAssertEqual(b.receivedFrames(), [frame])
        XCTAssertEqual(engine.counters(port: pb).txPackets, 2)
        XCTAssertEqual(engine.counters(port: pa).rxPackets, 2)

        let bytes = (SimulatedGuest.guestBase + UInt64(b.size)) >> 15
        let fd = vs_memfd_create("dirty-log")
        XCTAssertEqual(ftruncate(fd, off_t(bytes)), 0)
        let log = try DirtyLog(fd: fd, size: bytes, offset: 0)
        engine.setDirtyLog(port: pb, log)
        XCTAssertFalse(engine.ports[pb].rxLaneOpen, "a logging destination is not the lane's")
        engine.ports[pa].lastDestination = -1
        a.transmit(frame)
        XCTAssertEqual(engine.pollOnce(), 1)
        XCTAssertEqual(engine.ports[pa].lastDestination, -1, "the general path delivered it")
        XCTAssertEqual(b.receivedFrames(), [frame])
        let marked = (0..<Int(log.view.bytes)).filter { log.view.bits.load(fromByteOffset: $0, as: UInt8.self) != 0 }.count
        XCTAssertGreaterThan(marked, 0, "and logged the pages it wrote")
    }

    /// Thousands of frames through 16-entry packed rings on both sides: both wrap counters
    /// of both rings flip many times.
    func testManyLapsBothWays() throws {
        let a = SimulatedGuest(queueSize: 16, features: Self.packedFeatures)
        let b = SimulatedGuest(queueSize: 16, features: Self.packedFeatures)
        _ = try attachGuest(a)
        _ = try attachGuest(b)
        a.postReceiveBuffers(16)
        b.postReceiveBuffers(16)
        var delivered = 0
        for i in 0..<500 {
            let (src, dst) = i % 2 == 0 ? (a, b) : (b, a)
            let frame = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(i % 2 == 0 ? 1 : 2), payload: 46 + i % 200)
            for _ in 0..<3 { src.transmit(frame) }
            engine.pollOnce()
            XCTAssertEqual(src.takeUsed(queue: 1).count, 3, "frame \(i)")
            let got = dst.receivedFrames()
            XCTAssertEqual(got, [frame, frame, frame], "frame \(i)")
            delivered += got.count
            dst.postReceiveBuffers(got.count)
        }
        XCTAssertEqual(delivered, 1500)
    }

    func testMergeableFrameSpansPackedReceiveBuffers() throws {
        let a = SimulatedGuest(), b = SimulatedGuest(bufferSize: 512, features: Self.packedFeatures)
        _ = try attachGuest(a)
        _ = try attachGuest(b)
        b.postReceiveBuffers(8)
        let frame = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), payload: 1400)
        a.transmit(frame)
        engine.pollOnce()
        let used = b.takeUsed(queue: 0)
        XCTAssertEqual(used.map(\.len), [512, 512, 402])
        var received: [UInt8] = []
        for (k, e) in used.enumerated() {
            let bytes = Array(UnsafeRawBufferPointer(start: b.host(b.bufferAddress(queue: 0, descriptor: Int(e.id))), count: Int(e.len)))
            if k == 0 {
                XCTAssertEqual(UInt16(bytes[10]) | UInt16(bytes[11]) << 8, 3, "num_buffers")
                received += bytes[12...]
            } else {
                received += bytes
            }
        }
        XCTAssertEqual(received, frame)
    }

    func testHostilePackedTransmitIsDroppedAndFullPackedRingCounts() throws {
        let a = SimulatedGuest(features: Self.packedFeatures), b = SimulatedGuest(features: Self.packedFeatures)
        let pa = try attachGuest(a), pb = try attachGuest(b)
        a.makeAvailablePacked(queue: 1, [.init(addr: 0xdead_0000_0000, len: 100)])
        a.makeAvailablePacked(queue: 1, [.init(addr: SimulatedGuest.guestBase, len: 100, writable: true)])
        a.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1)))
        engine.pollOnce()
        XCTAssertEqual(engine.counters(port: pa).rxDropBadDescriptor, 2)
        XCTAssertEqual(engine.counters(port: pb).txDropNoBuffers, 1, "b posted no buffers")
        XCTAssertEqual(a.takeUsed(queue: 1).count, 3, "bad chains are returned, not leaked")
    }

    func testStopReturnsPositionWithWrapAndRestartResumes() throws {
        let a = SimulatedGuest(queueSize: 4, features: Self.packedFeatures), b = SimulatedGuest()
        let pa = try attachGuest(a)
        _ = try attachGuest(b)
        b.postReceiveBuffers(16)
        let f = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1))
        for _ in 0..<5 {
            a.transmit(f)
            engine.pollOnce()
            _ = a.takeUsed(queue: 1)
        }
        XCTAssertEqual(engine.stopQueue(port: pa, queue: 1), 1, "position 1, second lap: wrap counter 0")
        a.transmit(f)
        engine.pollOnce()
        XCTAssertEqual(b.receivedFrames().count, 5, "stopped queue is not read")
        let memory = try a.makeMemory()
        var config = a.vringConfiguration(queue: 1, memory: memory)
        config.lastAvail = 1
        engine.startQueue(port: pa, config)
        engine.pollOnce()
        XCTAssertEqual(b.receivedFrames().count, 1)
        XCTAssertEqual(a.takeUsed(queue: 1).count, 1)
    }
}
