import GuestSimulator
import Logging
import Virtio
import XCTest
import SwitchModel
@testable import Datapath

/// Every capture record says which port slot the frame entered or left by, and in which
/// direction (what a pcapng writer turns into an interface and `epb_flags`).
final class CaptureOriginTests: XCTestCase {
    var engine: ForwardingEngine!
    var bridge = 0

    override func setUp() {
        engine = ForwardingEngine(logger: Logger(label: "test"))
        bridge = engine.addBridge(agingSeconds: 300)!
    }

    override func tearDown() { engine = nil }

    func attachGuest(_ guest: SimulatedGuest) throws -> Int {
        let port = engine.addPort(bridge: bridge)!
        let memory = try guest.makeMemory()
        engine.startQueue(port: port, guest.vringConfiguration(queue: 0, memory: memory))
        engine.startQueue(port: port, guest.vringConfiguration(queue: 1, memory: memory))
        guest.postReceiveBuffers(64)
        return port
    }

    /// (port slot, outbound) of every record, oldest first.
    func origins(_ ring: CaptureRing) -> [[Int]] {
        var out: [[Int]] = []
        while let r = ring.peek() {
            out.append([r.port, r.outbound ? 1 : 0, r.originalLength])
            ring.consume(r)
        }
        return out
    }

    func testOriginIsPackedNextToTheLengthAndReadBack() {
        for (port, outbound) in [(0, false), (255, true), (2047, true), (7, false)] {
            let o = CaptureRing.origin(port: port, outbound: outbound)
            XCTAssertEqual(o & CaptureRing.lengthMask, 0, "the length bits stay free")
            XCTAssertEqual(Int(o >> CaptureRing.portShift & 0x7FF), port)
            XCTAssertEqual(o & CaptureRing.outboundBit != 0, outbound)
        }
        XCTAssertGreaterThanOrEqual(CaptureRing.maxRecordPorts, ForwardingEngine.maxPorts)
        XCTAssertGreaterThan(Int(CaptureRing.lengthMask), 65536 + 18, "the longest frame fits")
    }

    func testFloodIsOneRxAndATxPerDeliveryOnlyWithBothDirections() throws {
        let a = SimulatedGuest(), b = SimulatedGuest(), c = SimulatedGuest(), d = SimulatedGuest()
        let pa = try attachGuest(a), pb = try attachGuest(b), pc = try attachGuest(c)
        let once = CaptureBuffer(), both = CaptureBuffer(), txOnly = CaptureBuffer()
        XCTAssertNotNil(engine.addCaptureTap(ring: once.ring, snaplen: 65536, bridge: bridge))
        XCTAssertNotNil(engine.addCaptureTap(ring: both.ring, snaplen: 65536, bridge: bridge, rx: true, tx: true))
        XCTAssertNotNil(engine.addCaptureTap(ring: txOnly.ring, snaplen: 65536, bridge: bridge, rx: false, tx: true))
        let pd = try attachGuest(d)   // joins after the captures started: its deliveries are seen too

        a.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1)))
        engine.pollOnce()
        engine.publishCaptures()
        XCTAssertEqual(origins(once.ring), [[pa, 0, 60]], "the default: each frame once, on its ingress port")
        let all = origins(both.ring)
        XCTAssertEqual(all.first, [pa, 0, 60])
        XCTAssertEqual(Set(all.dropFirst().map { $0[0] }), [pb, pc, pd])
        XCTAssertTrue(all.dropFirst().allSatisfy { $0[1] == 1 }, "deliveries are outbound")
        XCTAssertEqual(origins(txOnly.ring).map { $0[0] }.sorted(), [pb, pc, pd].sorted())

        // b answers a (unicast): rx on b, tx on a.
        b.transmit(TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(2), payload: 100))
        engine.pollOnce()
        engine.publishCaptures()
        XCTAssertEqual(origins(both.ring), [[pb, 0, 114], [pa, 1, 114]])
        XCTAssertEqual(a.receivedFrames().count, 1, "forwarding unchanged")
    }

    func testOnePortTapRecordsItsSlotAndDropsAreCountedPerPort() throws {
        let a = SimulatedGuest(), b = SimulatedGuest()
        let pa = try attachGuest(a), pb = try attachGuest(b)
        let small = CaptureBuffer(capacity: 1 << 17)
        XCTAssertNotNil(engine.addCaptureTap(ring: small.ring, snaplen: 65536, bridge: bridge, port: pb))
        let frame = TestFrame.make(dst: TestFrame.mac(2), src: TestFrame.mac(1), payload: 1400)
        for _ in 0..<4 {
            for _ in 0..<32 { a.transmit(frame) }
            engine.pollOnce()
            b.postReceiveBuffers(32)
            _ = a.takeUsed(queue: 1)
        }
        XCTAssertGreaterThan(small.ring.dropped, 0)
        XCTAssertEqual(small.ring.dropped(port: pb), small.ring.dropped, "every drop was a delivery to b")
        XCTAssertEqual(small.ring.dropped(port: pa), 0)
        XCTAssertEqual(small.ring.dropped(port: -1), 0)
        let got = origins(small.ring)
        XCTAssertEqual(UInt64(got.count), small.ring.recorded)
        XCTAssertTrue(got.allSatisfy { $0 == [pb, 1, 1414] })
    }
}
