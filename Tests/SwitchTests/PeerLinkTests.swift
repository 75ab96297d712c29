import CShims
import Foundation
import GuestSimulator
import Logging
import Virtio
import XCTest
@testable import Datapath

/// Peer ports (PeerLink.swift): one bridge in halves on several engines, linked by rings.
final class PeerLinkTests: XCTestCase {
    /// An engine (not started: pollOnce by hand) with one bridge.
    final class Half {
        let engine = ForwardingEngine(logger: Logger(label: "half"))
        let bridge: Int
        var memories: [GuestMemory] = []
        init() { bridge = engine.addBridge(agingSeconds: 300)! }

        @discardableResult
        func attach(_ g: SimulatedGuest) throws -> Int {
            let p = try XCTUnwrap(engine.addPort(bridge: bridge))
            let memory = try g.makeMemory()
            memories.append(memory)
            for q in 0..<2 { engine.startQueue(port: p, g.vringConfiguration(queue: q, memory: memory)) }
            g.postReceiveBuffers(64)
            return p
        }

        @discardableResult
        func link(_ end: UnsafeMutablePointer<PeerEnd>) throws -> Int {
            try XCTUnwrap(engine.addPeerPort(bridge: bridge, end: end))
        }
    }

    static let macA = TestFrame.mac(0xa1), macB = TestFrame.mac(0xb2), macC = TestFrame.mac(0xc3)

    func testFramesCrossBothWaysAndAreLearnedOnThePeer() throws {
        let h0 = Half(), h1 = Half()
        let a = SimulatedGuest(), b = SimulatedGuest()
        try h0.attach(a)
        try h1.attach(b)
        let link = PeerLink()
        let peer0 = try h0.link(link.ends.0)
        let peer1 = try h1.link(link.ends.1)
        // A broadcast from A crosses to B.
        let arp = TestFrame.make(dst: TestFrame.broadcast, src: Self.macA, etherType: 0x0806)
        a.transmit(arp)
        XCTAssertEqual(h0.engine.pollOnce(), 1)
        XCTAssertEqual(h1.engine.pollOnce(), 1, "the frame from the ring")
        XCTAssertEqual(b.receivedFrames(), [arp])
        // B's unicast answer: h1 learned A behind its peer port, h0 B behind its own.
        let reply = TestFrame.make(dst: Self.macA, src: Self.macB, payload: 100, fill: 0x5a)
        b.transmit(reply)
        h1.engine.pollOnce()
        h0.engine.pollOnce()
        XCTAssertEqual(a.receivedFrames(), [reply])
        XCTAssertEqual(Set(h0.engine.fdbEntries(bridge: h0.bridge).map(\.port)), [0, peer0], "A on its port, B on the peer")
        XCTAssertEqual(Set(h1.engine.fdbEntries(bridge: h1.bridge).map(\.port)), [0, peer1])
        // Unicast bursts of every size class cross intact, in order.
        var sent: [[UInt8]] = []
        for round in 0..<20 {
            for i in 0..<16 {
                let f = TestFrame.make(dst: Self.macB, src: Self.macA, payload: [46, 200, 1500, 1486][i & 3], fill: UInt8(truncatingIfNeeded: round * 16 + i))
                a.transmit(f)
                sent.append(f)
            }
            h0.engine.pollOnce()
            h1.engine.pollOnce()
            _ = a.reclaimUsed(queue: 1)
            b.postReceiveBuffers(b.reclaimUsed(queue: 0))
        }
        XCTAssertEqual(h0.engine.counters(port: peer0).txPackets, 1 + 320)
        XCTAssertEqual(h1.engine.counters(port: peer1).rxPackets, 1 + 320)
        XCTAssertEqual(h1.engine.counters(port: 0).txPackets, 1 + 320, "every frame reached B")
        XCTAssertEqual(h1.engine.counters(port: 0).txDropNoBuffers, 0)
        h0.engine.removePort(peer0)
        h1.engine.removePort(peer1)
    }

    /// Three halves in a full mesh: a broadcast reaches each other half once and stops
    /// there (split horizon), however often the engines poll.
    func testFloodsDoNotLoopInAMesh() throws {
        let halves = [Half(), Half(), Half()]
        let guests = [SimulatedGuest(), SimulatedGuest(), SimulatedGuest()]
        for (h, g) in zip(halves, guests) { try h.attach(g) }
        let links = [PeerLink(), PeerLink(), PeerLink()]   // 0-1, 0-2, 1-2
        try halves[0].link(links[0].ends.0); try halves[1].link(links[0].ends.1)
        try halves[0].link(links[1].ends.0); try halves[2].link(links[1].ends.1)
        try halves[1].link(links[2].ends.0); try halves[2].link(links[2].ends.1)
        let arp = TestFrame.make(dst: TestFrame.broadcast, src: Self.macA, etherType: 0x0806)
        guests[0].transmit(arp)
        for _ in 0..<5 { for h in halves { h.engine.pollOnce() } }
        XCTAssertEqual(guests[0].receivedFrames(), [])
        XCTAssertEqual(guests[1].receivedFrames(), [arp])
        XCTAssertEqual(guests[2].receivedFrames(), [arp])
        for h in halves { for p in 1...2 { h.engine.removePort(p) } }
    }

    /// A unicast that came in by a peer port never leaves by another one, even when this
    /// half's table points there (a stale entry in a mesh would bounce it between halves).
    func testNoUnicastFromPeerToPeer() throws {
        let halves = [Half(), Half(), Half()]
        let guests = [SimulatedGuest(), SimulatedGuest(), SimulatedGuest()]
        for (h, g) in zip(halves, guests) { try h.attach(g) }
        let ab = PeerLink(), ac = PeerLink(), bc = PeerLink()
        let aToB = try halves[0].link(ab.ends.0); try halves[1].link(ab.ends.1)
        try halves[0].link(ac.ends.0); try halves[2].link(ac.ends.1)
        let bToC = try halves[1].link(bc.ends.0); let cFromB = try halves[2].link(bc.ends.1)
        // C's guest is learned everywhere by its broadcast; then A's table goes stale: C behind B.
        guests[2].transmit(TestFrame.make(dst: TestFrame.broadcast, src: Self.macC, etherType: 0x0806))
        for _ in 0..<3 { for h in halves { h.engine.pollOnce() } }
        _ = guests[0].receivedFrames(); _ = guests[1].receivedFrames()
        let b0 = halves[0].bridge
        halves[0].engine.bridges[b0].table?.learn(MacTable.key(mac: Self.macValue(Self.macC), vlan: 0), port: Int32(aToB), now: halves[0].engine.hot.pointee.now)
        guests[0].transmit(TestFrame.make(dst: Self.macC, src: Self.macA, payload: 60))
        for _ in 0..<3 { for h in halves { h.engine.pollOnce() } }
        XCTAssertEqual(halves[0].engine.counters(port: aToB).txPackets, 1, "A sent it to B (stale)")
        XCTAssertEqual(halves[1].engine.counters(port: bToC).txPackets, 0, "B did not pass it on to C")
        XCTAssertEqual(halves[2].engine.counters(port: cFromB).rxPackets, 0)
        XCTAssertEqual(guests[1].receivedFrames(), [], "nor to its own guest: it is not B's")
        for h in halves { for p in 1...2 { h.engine.removePort(p) } }
    }

    static func macValue(_ mac: [UInt8]) -> UInt64 {
        mac.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }

    /// A full ring drops and counts (txDropNoBuffers on the sending peer port), and works
    /// again once drained.
    func testFullRingDropsAndRecovers() throws {
        let h0 = Half(), h1 = Half()
        let a = SimulatedGuest(queueSize: 256, bufferSize: 2048), b = SimulatedGuest()
        try h0.attach(a)
        try h1.attach(b)
        let link = PeerLink()
        let peer0 = try h0.link(link.ends.0)
        try h1.link(link.ends.1)
        let big = TestFrame.make(dst: TestFrame.broadcast, src: Self.macA, payload: 1986)   // 2000-byte entries
        var pushed = 0
        while pushed < PeerRingState.capacity / 2000 + 200 {
            for _ in 0..<32 { a.transmit(big) }
            h0.engine.pollOnce()
            _ = a.reclaimUsed(queue: 1)
            pushed += 32
        }
        let c = h0.engine.counters(port: peer0)
        XCTAssertGreaterThan(c.txDropNoBuffers, 0)
        XCTAssertEqual(Int(c.txPackets + c.txDropNoBuffers), pushed)
        while h1.engine.pollOnce() > 0 { b.postReceiveBuffers(b.reclaimUsed(queue: 0)) }
        XCTAssertEqual(h1.engine.counters(port: 1).rxPackets, c.txPackets, "everything that entered the ring came out")
        a.transmit(big)
        h0.engine.pollOnce()
        XCTAssertEqual(h0.engine.counters(port: peer0).txPackets, c.txPackets + 1, "room again")
    }

    /// Two running threads: the receiving one sleeps in epoll, the ring's doorbell wakes it,
    /// every frame arrives; idle, both threads sleep.
    func testDoorbellWakesASleepingThread() throws {
        let h0 = EngineHarness(), h1 = EngineHarness()
        let a = SimulatedGuest(), b = SimulatedGuest()
        try h0.attach(a)
        try h1.attach(b)
        a.postReceiveBuffers(64)
        b.postReceiveBuffers(64)
        let link = PeerLink()
        let (b0, b1) = (h0.bridge, h1.bridge)
        let e0 = link.ends.0, e1 = link.ends.1
        XCTAssertNotNil(h0.engine.sync { $0.addPeerPort(bridge: b0, end: e0) })
        XCTAssertNotNil(h1.engine.sync { $0.addPeerPort(bridge: b1, end: e1) })
        XCTAssertLessThan(h1.idlePolls(over: 0.2), 50, "asleep before the frame")
        for round in 0..<20 {
            let ab = TestFrame.make(dst: round == 0 ? TestFrame.broadcast : Self.macB, src: Self.macA, payload: 100, fill: UInt8(round))
            let ba = TestFrame.make(dst: Self.macA, src: Self.macB, payload: 60, fill: UInt8(round))
            a.transmit(ab)
            h0.kick(a)
            var got: [[UInt8]] = []
            XCTAssertTrue(h1.wait { got += b.receivedFrames(); return got.contains(ab) }, "round \(round): A -> B")
            b.transmit(ba)
            h1.kick(b)
            got = []
            XCTAssertTrue(h0.wait { got += a.receivedFrames(); return got.contains(ba) }, "round \(round): B -> A")
            _ = a.reclaimUsed(queue: 1); _ = b.reclaimUsed(queue: 1)
            a.postReceiveBuffers(1); b.postReceiveBuffers(1)
            if round % 5 == 4 { usleep(5_000) }   // let both threads fall asleep between some rounds
        }
        XCTAssertLessThan(h0.idlePolls(over: 0.2), 50)
        XCTAssertLessThan(h1.idlePolls(over: 0.2), 50)
        h0.engine.sync { $0.removePort(1) }
        h1.engine.sync { $0.removePort(1) }
    }
}
