import CShims
import GuestSimulator
import Logging
import VhostUser
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
#if canImport(Glibc)
import Glibc
#endif

/// Several VNIs on one UDP port (issue 19): tunnel ports on the same UDP port and address
/// share one receive socket; datagrams go to the port of their VNI by a table lookup.
extension VxlanTests {
    /// The table: every VNI (0 and 2^24 - 1 included) finds its slot, a taken VNI is refused,
    /// removing one keeps the others, and it never holds more than half its size.
    func testDemuxTableFindsEveryVniAndRemovesOne() {
        var t = TunnelSocketState(fd: -1)
        defer { t.deallocate() }
        var rng = SystemRandomNumberGenerator()
        var vnis: [UInt32] = [0, 0xFF_FFFF, 1, 4789]
        while vnis.count < ForwardingEngine.maxPorts {
            let v = UInt32.random(in: 0...0xFF_FFFF, using: &rng)
            if !vnis.contains(v) { vnis.append(v) }
        }
        for (slot, v) in vnis.enumerated() { XCTAssertTrue(t.insert(vni: v, slot: slot), "VNI \(v)") }
        XCTAssertFalse(t.insert(vni: 4789, slot: 999), "a taken VNI")
        XCTAssertFalse(t.insert(vni: 1 << 24, slot: 999), "not a VNI")
        XCTAssertEqual(t.members, vnis.count)
        for (slot, v) in vnis.enumerated() { XCTAssertEqual(t.slot(vni: v), slot, "VNI \(v)") }
        var absent: UInt32 = 2
        while vnis.contains(absent) { absent += 1 }
        XCTAssertEqual(t.slot(vni: absent), -1)
        let left = t.remove(slot: 3)      // VNI 4789
        XCTAssertEqual(left.count, vnis.count - 1)
        XCTAssertFalse(left.contains(3))
        XCTAssertEqual(t.slot(vni: 4789), -1)
        for (slot, v) in vnis.enumerated() where slot != 3 { XCTAssertEqual(t.slot(vni: v), slot, "VNI \(v) after a removal") }
        XCTAssertTrue(t.insert(vni: 4789, slot: 7777), "free again")
        XCTAssertEqual(t.slot(vni: 4789), 7777)
    }

    /// A tunnel on `bridge` b that shares `socket` (nil: its own).
    func attachTunnel(bridge b: Int, vni: Int, sharing socket: TunnelSocket?) throws -> (Int, VxlanTunnel) {
        let t = try VxlanTunnel(spec: PortSpec(kind: .vxlan, remotes: ["127.0.0.2"], vni: vni, local: "127.0.0.1", dstPort: port),
                                sharing: socket)
        tunnels.append(t)
        return (try XCTUnwrap(engine.addTunnelPort(bridge: b, tunnel: t.state)), t)
    }

    func attachGuest(_ guest: SimulatedGuest, bridge b: Int) throws -> Int {
        let p = engine.addPort(bridge: b)!
        let memory = try guest.makeMemory()
        engine.startQueue(port: p, guest.vringConfiguration(queue: 0, memory: memory))
        engine.startQueue(port: p, guest.vringConfiguration(queue: 1, memory: memory))
        return p
    }

    /// VNI 10 on one bridge and VNI 20 on another, one socket: each datagram reaches only the
    /// guest of its VNI (floods included), a VNI nobody has is counted on the socket's first
    /// port; the second port keeps working when the first goes, and the socket closes with
    /// the last one.
    func testTwoVnisOnOneSocketKeepTheirTrafficApart() throws {
        let bridge2 = try XCTUnwrap(engine.addBridge(agingSeconds: 300))
        let g10 = SimulatedGuest(), g20 = SimulatedGuest()
        _ = try attachGuest(g10, bridge: bridge)
        _ = try attachGuest(g20, bridge: bridge2)
        g10.postReceiveBuffers(16)
        g20.postReceiveBuffers(16)
        let p10: Int, p20: Int
        var t10: VxlanTunnel!, t20: VxlanTunnel!     // released before the end, to see the socket close
        (p10, t10) = try attachTunnel(bridge: bridge, vni: 10, sharing: nil)
        (p20, t20) = try attachTunnel(bridge: bridge2, vni: 20, sharing: t10.socket)
        XCTAssertEqual(t10.receiveFd, t20.receiveFd, "one socket")
        XCTAssertNil(engine.addTunnelPort(bridge: bridge2, tunnel: t20.state), "VNI 20 is taken on that socket")
        let peer = remote("127.0.0.2")
        let on10 = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(10), etherType: 0x0806)
        let on20 = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(20), etherType: 0x0806)
        send(peer, Self.header(vni: 10) + on10)
        send(peer, Self.header(vni: 20) + on20)
        send(peer, Self.header(vni: 30) + on10)      // nobody's
        send(peer, [0x08, 0, 0, 0, 0, 0])            // too short for a VNI
        engine.pollOnce()
        XCTAssertEqual(g10.receivedFrames(), [on10])
        XCTAssertEqual(g20.receivedFrames(), [on20])
        XCTAssertEqual(engine.counters(port: p10).rxPackets, 1)
        XCTAssertEqual(engine.counters(port: p20).rxPackets, 1)
        XCTAssertEqual(engine.counters(port: p10).rxDropVni, 1, "counted on the socket's first port")
        XCTAssertEqual(engine.counters(port: p10).rxDropShortHeader, 1)
        XCTAssertEqual(engine.counters(port: p20).rxDropVni, 0)
        // Each port sends with its own VNI.
        g20.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(2), etherType: 0x0806))
        engine.pollOnce()
        XCTAssertEqual(receive(peer).map { Array($0.bytes.prefix(8)) }, Self.header(vni: 20))
        XCTAssertNil(receive(peer), "not into VNI 10's bridge")

        // The first port (which carried the socket) goes: VNI 20 still arrives.
        engine.removePort(p10)
        tunnels.removeAll { $0 === t10 }
        t10 = nil
        send(peer, Self.header(vni: 20) + on20)
        send(peer, Self.header(vni: 10) + on10)      // nobody's now: counted on p20
        engine.pollOnce()
        XCTAssertEqual(g20.receivedFrames(), [on20])
        XCTAssertEqual(g10.receivedFrames(), [])
        XCTAssertEqual(engine.counters(port: p20).rxDropVni, 1)
        XCTAssertEqual(t20.socket.state.pointee.anchor, Int32(p20))

        // The last port goes: the socket closes, the UDP port is free.
        let fd = t20.receiveFd
        engine.removePort(p20)
        tunnels.removeAll()
        t20 = nil
        XCTAssertEqual(fcntl(fd, F_GETFD), -1, "closed with its last port")
        let again = vs_udp_open(Self.addr("127.0.0.1"), UInt16(port), 0)
        XCTAssertGreaterThanOrEqual(again, 0)
        if again >= 0 { close(again) }
    }

    /// Through the control plane: VNIs 10 and 20 on one UDP port (two bridges) are accepted,
    /// a third port with VNI 20 is refused naming the port that has it, a Geneve port or
    /// another --local on that UDP port is refused; deleting one keeps the other.
    func testAddPortRefusesOnlyATakenVni() throws {
        let controller = SwitchController(engine: engine, loop: EventLoop(), runDirectory: "/tmp",
                                          logger: Logger(label: "test"))
        for b in ["br1", "br2", "br3"] { try controller.addBridge(b) }
        func spec(_ vni: Int, kind: PortKind = .vxlan, local: String? = "127.0.0.1") -> PortSpec {
            PortSpec(kind: kind, remotes: ["127.0.0.2"], vni: vni, local: local, dstPort: port)
        }
        try controller.addPort(bridge: "br1", name: "vx10", spec: spec(10))
        try controller.addPort(bridge: "br2", name: "vx20", spec: spec(20))
        XCTAssertThrowsError(try controller.addPort(bridge: "br3", name: "vx30", spec: spec(20))) {
            XCTAssertEqual($0 as? SwitchError, .vniInUse(vni: 20, udpPort: port, port: "vx20", bridge: "br2"))
            XCTAssertTrue("\($0)".contains("VNI 20 on UDP port \(port) is already taken by port vx20 of bridge br2"), "\($0)")
        }
        XCTAssertThrowsError(try controller.addPort(bridge: "br3", name: "gn30", spec: spec(30, kind: .geneve))) {
            XCTAssertTrue("\($0)".contains("cannot share a UDP port"), "\($0)")
        }
        XCTAssertThrowsError(try controller.addPort(bridge: "br3", name: "vx30", spec: spec(30, local: nil))) {
            XCTAssertTrue("\($0)".contains("need the same --local"), "\($0)")
        }
        XCTAssertEqual(controller.snapshot().first { $0.name == "br3" }?.ports.count, 0, "nothing created")
        try controller.addPort(bridge: "br3", name: "vx30", spec: spec(30))
        try controller.deletePort(bridge: "br1", port: "vx10")
        try controller.deletePort(bridge: "br3", port: "vx30")
        // vx20 still receives on the shared socket.
        let g = SimulatedGuest()
        _ = try attachGuest(g, bridge: try XCTUnwrap(controller.bridges.first { $0.name == "br2" }?.slot))
        g.postReceiveBuffers(4)
        let frame = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(20), etherType: 0x0806)
        send(remote("127.0.0.2"), Self.header(vni: 20) + frame)
        engine.pollOnce()
        XCTAssertEqual(g.receivedFrames(), [frame])
        try controller.deletePort(bridge: "br2", port: "vx20")
        let again = vs_udp_open(Self.addr("127.0.0.1"), UInt16(port), 0)
        XCTAssertGreaterThanOrEqual(again, 0, "the socket closed with the last port")
        if again >= 0 { close(again) }
    }
}
