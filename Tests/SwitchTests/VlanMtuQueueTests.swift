import GuestSimulator
import Logging
import Virtio
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
@testable import CaptureWriter

/// 802.1Q policies (access, trunk, native VLAN), the per-port MTU limit and the choice of
/// RX queue on multiqueue ports, against simulated guests.
final class VlanMtuQueueTests: XCTestCase {
    var engine: ForwardingEngine!
    var bridge = 0

    override func setUp() {
        engine = ForwardingEngine(logger: Logger(label: "test"))
        bridge = engine.addBridge(agingSeconds: 300)!
    }

    func attach(_ guest: SimulatedGuest, access: UInt16? = nil, trunks: [UInt16]? = nil, native: UInt16? = nil,
                mtu: Int? = nil) throws -> Int {
        let port = engine.addPort(bridge: bridge)!
        let memory = try guest.makeMemory()
        engine.startQueue(port: port, guest.vringConfiguration(queue: 0, memory: memory))
        engine.startQueue(port: port, guest.vringConfiguration(queue: 1, memory: memory))
        if access != nil || trunks != nil || mtu != nil {
            engine.setPortPolicy(port: port, access: access, trunks: trunks, native: native, mtu: mtu)
        }
        guest.postReceiveBuffers(32)
        return port
    }

    /// `frame` with an 802.1Q tag for `vlan` inserted after the addresses.
    func tagged(_ frame: [UInt8], _ vlan: UInt16) -> [UInt8] {
        Array(frame[0..<12]) + [0x81, 0x00, UInt8(vlan >> 8), UInt8(vlan & 0xff)] + Array(frame[12...])
    }

    func testAccessPortsOnDifferentVlansAreIsolatedAndTrunkSeesBothTagged() throws {
        let a10 = SimulatedGuest(), b10 = SimulatedGuest(), c20 = SimulatedGuest(), trunk = SimulatedGuest()
        let pa = try attach(a10, access: 10)
        _ = try attach(b10, access: 10)
        _ = try attach(c20, access: 20)
        _ = try attach(trunk, trunks: [10, 20])

        let fromA = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), etherType: 0x0806)
        a10.transmit(fromA)
        engine.pollOnce()
        XCTAssertEqual(b10.receivedFrames(), [fromA], "same access VLAN: untagged")
        XCTAssertEqual(c20.receivedFrames(), [], "other VLAN: nothing")
        XCTAssertEqual(trunk.receivedFrames(), [tagged(fromA, 10)], "trunk: tagged with 10")

        let fromC = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(3), etherType: 0x0806)
        c20.transmit(fromC)
        engine.pollOnce()
        XCTAssertEqual(a10.receivedFrames(), [])
        XCTAssertEqual(b10.receivedFrames(), [])
        XCTAssertEqual(trunk.receivedFrames(), [tagged(fromC, 20)])

        // The trunk answers a on VLAN 10 (tagged): a gets it untagged, learned per VLAN.
        let reply = TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(4), payload: 100)
        trunk.transmit(tagged(reply, 10))
        engine.pollOnce()
        XCTAssertEqual(a10.receivedFrames(), [reply])
        XCTAssertEqual(b10.receivedFrames(), [], "a was learned: unicast, not flooded")
        let keys = engine.fdbEntries(bridge: bridge).map { ($0.key >> 48, $0.port) }
        XCTAssertTrue(keys.contains { $0.0 == 10 && $0.1 == pa })

        // A tagged frame on an access port and a VLAN the trunk does not carry are dropped.
        a10.transmit(tagged(fromA, 10))
        trunk.transmit(tagged(fromA, 30))
        engine.pollOnce()
        XCTAssertEqual(engine.counters(port: pa).rxDropVlan, 1)
        XCTAssertEqual(b10.receivedFrames() + c20.receivedFrames(), [])
    }

    func testTrunkNativeVlanAndDefaultPortsKeepTags() throws {
        let native = SimulatedGuest(), plain = SimulatedGuest(), access = SimulatedGuest()
        _ = try attach(native, trunks: [10], native: 5)
        _ = try attach(plain)             // default: every VLAN, frames as they are
        _ = try attach(access, access: 5)
        let untagged = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1))
        native.transmit(untagged)          // native VLAN 5
        engine.pollOnce()
        XCTAssertEqual(access.receivedFrames(), [untagged])
        XCTAssertEqual(plain.receivedFrames(), [tagged(untagged, 5)], "default port: VLAN 5 tagged")

        let t10 = tagged(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(2)), 10)
        plain.transmit(t10)
        engine.pollOnce()
        XCTAssertEqual(native.receivedFrames(), [t10], "tagged in, tagged out: no edit")
        XCTAssertEqual(access.receivedFrames(), [])

        let t5 = tagged(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(2), payload: 300), 5)
        plain.transmit(t5)
        engine.pollOnce()
        XCTAssertEqual(native.receivedFrames(), [Array(t5[0..<12]) + Array(t5[16...])], "native VLAN leaves untagged")
        XCTAssertEqual(access.receivedFrames(), [Array(t5[0..<12]) + Array(t5[16...])])
    }

    func testFramesLongerThanTheMtuAreDroppedAndCounted() throws {
        let a = SimulatedGuest(), small = SimulatedGuest(), big = SimulatedGuest()
        _ = try attach(a)
        let ps = try attach(small, mtu: 1000)
        _ = try attach(big)
        let ok = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), payload: 1000)
        let tooBig = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), payload: 1001)
        a.transmit(ok)
        a.transmit(tooBig)
        engine.pollOnce()
        XCTAssertEqual(small.receivedFrames(), [ok])
        XCTAssertEqual(big.receivedFrames(), [ok, tooBig])
        XCTAssertEqual(engine.counters(port: ps).txDropTooBig, 1)
    }

    /// One port whose RX queue 0 lives in `q0`'s memory and RX queue 2 in `q2`'s, each
    /// with 200 receive buffers.
    func twoQueuePort(_ q0: SimulatedGuest, _ q2: SimulatedGuest) throws -> Int {
        let port = engine.addPort(bridge: bridge)!
        let m0 = try q0.makeMemory(), m2 = try q2.makeMemory()
        engine.startQueue(port: port, q0.vringConfiguration(queue: 0, memory: m0))
        var second = q2.vringConfiguration(queue: 0, memory: m2)
        second.index = 2
        engine.startQueue(port: port, second)
        q0.postReceiveBuffers(200)
        q2.postReceiveBuffers(200)
        return port
    }

    func testMultiqueueKeepsAFlowOnOneQueueAndSpreadsFlows() throws {
        let src = SimulatedGuest(), q0 = SimulatedGuest(), q2 = SimulatedGuest()
        _ = try attach(src)
        let port = try twoQueuePort(q0, q2)

        var queueOf: [UInt8: Int] = [:]
        for round in 0..<3 {
            for s in UInt8(1)...40 {
                src.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(s)))
                engine.pollOnce()
                let on0 = q0.receivedFrames().count, on2 = q2.receivedFrames().count
                XCTAssertEqual(on0 + on2, 1)
                let q = on0 == 1 ? 0 : 2
                if round > 0 { XCTAssertEqual(queueOf[s], q, "flow \(s) moved queues") }
                queueOf[s] = q
            }
        }
        let onQueue0 = queueOf.values.filter { $0 == 0 }.count
        XCTAssertTrue((5...35).contains(onQueue0), "40 flows spread over 2 queues: \(onQueue0) on queue 0")

        // Queue 2 stops (the guest disabled it): everything goes to queue 0.
        engine.stopQueue(port: port, queue: 2)
        for s in UInt8(1)...10 { src.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(s))) }
        engine.pollOnce()
        XCTAssertEqual(q0.receivedFrames().count, 10)
    }

    /// Unicast to a port with two RX queues takes the fast lane (`lastDestination` is set
    /// only by the lane) and lands on the queue the general path picks for the same flow.
    func testLaneDeliversToTheQueueOfTheFlowLikeTheGeneralPath() throws {
        let src = SimulatedGuest(), q0 = SimulatedGuest(), q2 = SimulatedGuest()
        let ps = try attach(src)
        let port = try twoQueuePort(q0, q2)
        XCTAssertTrue(engine.ports[port].rxSlowPath && engine.ports[port].rxLaneOpen)
        let behind = TestFrame.mac(99)

        /// A MAC as the engine reads it: the 6 bytes little-endian in the low 48 bits.
        func value(_ mac: [UInt8]) -> UInt64 { mac.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * $1.offset) } }
        func queueOf(_ frame: [UInt8]) -> Int {
            src.transmit(frame)
            engine.pollOnce()
            _ = src.takeUsed(queue: 1)
            let on0 = q0.receivedFrames(), on2 = q2.receivedFrames()
            XCTAssertEqual(on0 + on2, [frame])
            return on0.isEmpty ? 2 : 0
        }
        let b = Int(engine.ports[port].bridge)
        _ = engine.bridges[b].table?.learn(MacTable.key(mac: value(behind), vlan: 0), port: Int32(port), now: engine.hot.pointee.now)
        var queues: Set<Int> = []
        for s in UInt8(1)...24 {
            let unicast = TestFrame.make(dst: behind, src: TestFrame.mac(s), payload: 60)
            engine.ports[ps].lastDestination = -1
            let q = queueOf(unicast)
            XCTAssertEqual(engine.ports[ps].lastDestination, Int32(port), "flow \(s): the lane delivered it")
            let expected = engine.ports[port].rxQueue(forAddresses: value(behind), value(TestFrame.mac(s)))
            XCTAssertEqual(q, expected, "flow \(s) on the queue deliverFrame picks")
            XCTAssertEqual(queueOf(unicast), q, "flow \(s) stays on its queue")
            queues.insert(q)
        }
        XCTAssertEqual(queues, [0, 2], "flows spread over both queues")
        XCTAssertEqual(engine.counters(port: port).txPackets, 48)
    }
}
