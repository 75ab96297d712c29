import GuestSimulator
import Logging
import Virtio
import XCTest
import SwitchModel
@testable import Datapath

/// Port mirroring in the data plane (issue 16): copies of the selected frames reach the
/// output once per frame; the output gets nothing else and what it sends is dropped.
final class MirrorTests: XCTestCase {
    var engine: ForwardingEngine!
    var bridge = 0
    let macA = TestFrame.mac(0xa), macB = TestFrame.mac(0xb), macC = TestFrame.mac(0xc)

    override func setUp() {
        engine = ForwardingEngine(logger: Logger(label: "test"))
        bridge = engine.addBridge(agingSeconds: 300)!
    }

    func attach(_ guest: SimulatedGuest) throws -> Int {
        let port = engine.addPort(bridge: bridge)!
        let memory = try guest.makeMemory()
        engine.startQueue(port: port, guest.vringConfiguration(queue: 0, memory: memory))
        engine.startQueue(port: port, guest.vringConfiguration(queue: 1, memory: memory))
        guest.postReceiveBuffers(64)
        return port
    }

    /// a, b, c and a monitor guest; every MAC learned.
    func fourGuests() throws -> (a: SimulatedGuest, b: SimulatedGuest, c: SimulatedGuest, mon: SimulatedGuest,
                                 pa: Int, pb: Int, pc: Int, pm: Int) {
        let a = SimulatedGuest(), b = SimulatedGuest(), c = SimulatedGuest(), mon = SimulatedGuest()
        let pa = try attach(a), pb = try attach(b), pc = try attach(c), pm = try attach(mon)
        for (g, mac) in [(a, macA), (b, macB), (c, macC)] { g.transmit(TestFrame.make(dst: TestFrame.broadcast, src: mac)) }
        engine.pollOnce()
        for g in [a, b, c, mon] { _ = g.receivedFrames() }
        return (a, b, c, mon, pa, pb, pc, pm)
    }

    func testSourceAndDestinationSelectionsCopyEachFrameOnce() throws {
        let g = try fourGuests()
        engine.setMirror(0, bridge: bridge, output: g.pm, sources: [g.pa], destinations: [g.pa], vlans: nil, all: false)
        let ab = TestFrame.make(dst: macB, src: macA, payload: 100, fill: 1)
        let ba = TestFrame.make(dst: macA, src: macB, payload: 100, fill: 2)
        let cb = TestFrame.make(dst: macB, src: macC, payload: 100, fill: 3)
        g.a.transmit(ab)
        g.b.transmit(ba)
        g.c.transmit(cb)
        engine.pollOnce()
        XCTAssertEqual(g.b.receivedFrames(), [ab, cb])
        XCTAssertEqual(g.a.receivedFrames(), [ba])
        XCTAssertEqual(g.mon.receivedFrames(), [ab, ba], "a's frames both ways, once each; nothing of c's")
        XCTAssertEqual(engine.mirrorCounters(0).mirrored, 2)
        // A broadcast from a: selected at ingress and delivered everywhere: one copy.
        let bcast = TestFrame.make(dst: TestFrame.broadcast, src: macA, fill: 4)
        g.a.transmit(bcast)
        engine.pollOnce()
        XCTAssertEqual(g.mon.receivedFrames(), [bcast], "one copy, not a flood copy and a mirror copy")
        XCTAssertEqual(g.c.receivedFrames(), [bcast])
    }

    func testTheOutputGetsNoFloodsAndWhatItSendsIsDropped() throws {
        let g = try fourGuests()
        engine.setMirror(0, bridge: bridge, output: g.pm, sources: [g.pc], destinations: [], vlans: nil, all: false)
        g.a.transmit(TestFrame.make(dst: TestFrame.broadcast, src: macA))
        engine.pollOnce()
        XCTAssertTrue(g.mon.receivedFrames().isEmpty, "no floods to the output")
        for x in [g.a, g.b, g.c] { _ = x.receivedFrames() }
        g.mon.transmit(TestFrame.make(dst: macA, src: TestFrame.mac(0xd)))
        g.mon.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(0xd)))
        engine.pollOnce()
        XCTAssertTrue(g.a.receivedFrames().isEmpty && g.b.receivedFrames().isEmpty)
        XCTAssertEqual(engine.mirrorCounters(0).outputSent, 2)
        XCTAssertFalse(engine.fdbEntries(bridge: bridge).contains { $0.port == g.pm }, "nothing learned on the output")
        // Removing the mirror makes it an ordinary member again.
        engine.removeMirror(0)
        g.a.transmit(TestFrame.make(dst: TestFrame.broadcast, src: macA))
        engine.pollOnce()
        XCTAssertEqual(g.mon.receivedFrames().count, 1)
    }

    func testSelectAllAndVlanAndAFullOutputRing() throws {
        let g = try fourGuests()
        engine.setMirror(0, bridge: bridge, output: g.pm, sources: [], destinations: [], vlans: nil, all: true)
        let late = SimulatedGuest()
        let pl = try attach(late)
        _ = pl
        late.transmit(TestFrame.make(dst: macA, src: TestFrame.mac(0xe)))
        g.b.transmit(TestFrame.make(dst: macC, src: macB))
        engine.pollOnce()
        XCTAssertEqual(g.mon.receivedFrames().count, 2, "select-all includes a port added later")
        // VLAN selection: only frames tagged 10.
        engine.setMirror(0, bridge: bridge, output: g.pm, sources: [], destinations: [], vlans: [10], all: false)
        func tagged(_ vid: UInt8) -> [UInt8] {
            macB + macA + [0x81, 0x00, 0x00, vid, 0x08, 0x00] + [UInt8](repeating: 7, count: 50)
        }
        g.a.transmit(tagged(10))
        g.a.transmit(tagged(20))
        g.a.transmit(TestFrame.make(dst: macB, src: macA))
        engine.pollOnce()
        XCTAssertEqual(g.mon.receivedFrames(), [tagged(10)])
        // The output ring is full: copies are dropped and counted, forwarding goes on.
        let before = engine.mirrorCounters(0)
        _ = g.b.receivedFrames()
        g.b.postReceiveBuffers(100)
        let bTx = engine.counters(port: g.pb).txPackets
        for _ in 0..<80 { g.a.transmit(tagged(10)) }
        engine.pollOnce()
        engine.pollOnce()
        engine.pollOnce()
        XCTAssertEqual(engine.counters(port: g.pb).txPackets - bTx, 80, "forwarding is not held up by the full output")
        let after = engine.mirrorCounters(0)
        XCTAssertGreaterThan(after.dropped, before.dropped, "monitor posted 64 buffers: the rest is dropped")
        XCTAssertEqual(after.mirrored - before.mirrored + after.dropped - before.dropped, 80)
    }
}
