import CShims
import GuestSimulator
import Logging
import VhostUser
import Virtio
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
@testable import CaptureWriter
#if canImport(Glibc)
import Glibc
#endif

/// VXLAN tunnel ports with real UDP sockets on loopback: the tunnel binds 127.0.0.1, its
/// remotes are sockets of the test on 127.0.0.2 and 127.0.0.3 (all of 127/8 is local).
final class VxlanTests: XCTestCase {
    var engine: ForwardingEngine!
    var bridge = 0
    var port: Int = 0
    var fds: [Int32] = []
    var tunnels: [VxlanTunnel] = []

    override func setUp() {
        engine = ForwardingEngine(logger: Logger(label: "test"))
        bridge = engine.addBridge(agingSeconds: 300)!
        port = Self.freePort()
    }

    override func tearDown() {
        engine = nil        // releases the slots before the tunnels go
        tunnels.removeAll()
        for fd in fds { close(fd) }
    }

    static func freePort() -> Int {
        let fd = vs_udp_open(addr("127.0.0.1"), 0, 0)
        defer { close(fd) }
        return Int(vs_udp_local_port(fd))
    }

    static func addr(_ s: String) -> UInt32 {
        var a: UInt32 = 0
        XCTAssertEqual(vs_resolve4(s, &a), 0)
        return a
    }

    /// A tunnel port on the bridge; returns its slot.
    func attachTunnel(remotes: [String], vni: Int = 42, kind: PortKind = .vxlan) throws -> (Int, VxlanTunnel) {
        let t = try VxlanTunnel(spec: PortSpec(kind: kind, remotes: remotes, vni: vni, local: "127.0.0.1", dstPort: port))
        tunnels.append(t)
        let slot = try XCTUnwrap(engine.addTunnelPort(bridge: bridge, tunnel: t.state))
        return (slot, t)
    }

    /// A remote VTEP played by the test: a UDP socket on `address`:port.
    func remote(_ address: String) -> Int32 {
        let fd = vs_udp_open(Self.addr(address), UInt16(port), 0)
        XCTAssertGreaterThanOrEqual(fd, 0, "bind \(address):\(port)")
        fds.append(fd)
        return fd
    }

    func attachGuest(_ guest: SimulatedGuest) throws -> Int {
        let p = engine.addPort(bridge: bridge)!
        let memory = try guest.makeMemory()
        engine.startQueue(port: p, guest.vringConfiguration(queue: 0, memory: memory))
        engine.startQueue(port: p, guest.vringConfiguration(queue: 1, memory: memory))
        return p
    }

    /// One datagram waiting on `fd`: its bytes and its UDP source port.
    func receive(_ fd: Int32) -> (bytes: [UInt8], sourcePort: Int)? {
        var buffer = [UInt8](repeating: 0, count: 70000)
        var from = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let n = withUnsafeMutablePointer(to: &from) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT), $0, &len) }
        }
        return n >= 0 ? (Array(buffer[..<n]), Int(UInt16(bigEndian: from.sin_port))) : nil
    }

    func send(_ fd: Int32, _ bytes: [UInt8]) {
        var to = sockaddr_in()
        to.sin_family = sa_family_t(AF_INET)
        to.sin_port = UInt16(port).bigEndian
        to.sin_addr.s_addr = Self.addr("127.0.0.1")
        let n = withUnsafePointer(to: &to) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, bytes, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        XCTAssertEqual(n, bytes.count)
    }

    static func header(vni: Int, flags: UInt8 = 0x08) -> [UInt8] {
        [flags, 0, 0, 0, UInt8(vni >> 16 & 0xff), UInt8(vni >> 8 & 0xff), UInt8(vni & 0xff), 0]
    }

    func testFramingOfAGuestFrame() throws {
        let guest = SimulatedGuest()
        _ = try attachGuest(guest)
        let (slot, tunnel) = try attachTunnel(remotes: ["127.0.0.2"], vni: 0x12_3456)
        let peer = remote("127.0.0.2")
        let frame = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), etherType: 0x0806)
        guest.transmit(frame)
        XCTAssertEqual(engine.pollOnce(), 1)
        let got = try XCTUnwrap(receive(peer))
        // RFC 7348, 5: flags 0x08, 24 reserved bits, VNI, 8 reserved bits, then the frame
        // without the virtio-net header.
        XCTAssertEqual(Array(got.bytes.prefix(8)), [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0])
        XCTAssertEqual(Array(got.bytes.dropFirst(8)), frame)
        XCTAssertTrue(tunnel.sourcePorts.contains(got.sourcePort), "source port \(got.sourcePort) not one of ours")
        XCTAssertNil(receive(peer))
        XCTAssertEqual(engine.counters(port: slot).txPackets, 1)
        XCTAssertEqual(engine.counters(port: slot).txBytes, UInt64(frame.count))
    }

    func testReceiveChecksVniFlagsAndRemote() throws {
        let guest = SimulatedGuest()
        let pg = try attachGuest(guest)
        guest.postReceiveBuffers(8)
        let (slot, _) = try attachTunnel(remotes: ["127.0.0.2"])
        let peer = remote("127.0.0.2")
        let stranger = remote("127.0.0.9")
        let frame = TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(9), payload: 1000)
        send(peer, Self.header(vni: 42) + frame)
        send(peer, Self.header(vni: 43) + frame)                 // another segment
        send(peer, Self.header(vni: 42, flags: 0) + frame)       // no I flag
        send(stranger, Self.header(vni: 42) + frame)             // not a remote
        send(peer, Self.header(vni: 42) + [1, 2, 3])             // runt
        send(peer, [0x08, 0, 0])                                  // shorter than the header
        send(peer, Self.header(vni: 42, flags: 0xff) + frame)    // reserved flag bits: ignored
        XCTAssertEqual(engine.pollOnce(), 7)
        XCTAssertEqual(guest.receivedFrames(), [frame, frame])
        let c = engine.counters(port: slot)
        XCTAssertEqual(c.rxPackets, 2)
        XCTAssertEqual(c.rxBytes, UInt64(2 * frame.count))
        XCTAssertEqual(c.rxDropVni, 1)
        XCTAssertEqual(c.rxDropNoVniFlag, 1)
        XCTAssertEqual(c.rxDropUnknownRemote, 1)
        XCTAssertEqual(c.rxDropRunt, 1)
        XCTAssertEqual(c.rxDropShortHeader, 1)
        // The inner source is learned on the tunnel port.
        let fdb = engine.fdbEntries(bridge: bridge)
        XCTAssertEqual(fdb.first { $0.key & 0xFFFF_FFFF_FFFF == MacTable.key(mac: Self.mac(9), vlan: 0) }?.port, slot)
        XCTAssertEqual(engine.counters(port: pg).txPackets, 2)
    }

    /// `--type geneve`: the same datapath with a Geneve header (RFC 8926, 3.4) each way;
    /// options are skipped, a critical one drops the packet.
    func testGeneveFramingAndOptions() throws {
        let guest = SimulatedGuest()
        let pg = try attachGuest(guest)
        guest.postReceiveBuffers(8)
        let (slot, _) = try attachTunnel(remotes: ["127.0.0.2"], vni: 0x12_3456, kind: .geneve)
        let peer = remote("127.0.0.2")
        let arp = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), etherType: 0x0806)
        guest.transmit(arp)
        engine.pollOnce()
        let got = try XCTUnwrap(receive(peer))
        XCTAssertEqual(Array(got.bytes.prefix(8)), [0, 0, 0x65, 0x58, 0x12, 0x34, 0x56, 0])
        XCTAssertEqual(Array(got.bytes.dropFirst(8)), arp)

        let frame = TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(9), payload: 100)
        let option: [UInt8] = [0x01, 0x02, 0x03, 0x01, 0xaa, 0xbb, 0xcc, 0xdd]   // class 0x0102, type 3, 1 word
        send(peer, [0x02, 0, 0x65, 0x58, 0x12, 0x34, 0x56, 0] + option + frame)  // Opt Len 2 words: skipped
        send(peer, [0x02, 0x40, 0x65, 0x58, 0x12, 0x34, 0x56, 0] + option + frame)  // C flag: dropped
        send(peer, [0x40, 0, 0x65, 0x58, 0x12, 0x34, 0x56, 0] + frame)            // version 1
        XCTAssertEqual(engine.pollOnce(), 3)
        XCTAssertEqual(guest.receivedFrames(), [frame])
        let c = engine.counters(port: slot)
        XCTAssertEqual(c.rxPackets, 1)
        XCTAssertEqual(c.rxDropCriticalOption, 1)
        XCTAssertEqual(c.rxDropBadVersion, 1)
        XCTAssertEqual(engine.counters(port: pg).txPackets, 1)
    }

    static func mac(_ last: UInt8) -> UInt64 {
        TestFrame.mac(last).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }

    func testLearnedUnicastGoesToItsRemoteAndFloodsGoToAll() throws {
        let guest = SimulatedGuest()
        _ = try attachGuest(guest)
        guest.postReceiveBuffers(8)
        let (slot, _) = try attachTunnel(remotes: ["127.0.0.2", "127.0.0.3"])
        let a = remote("127.0.0.2")
        let b = remote("127.0.0.3")

        let arp = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), etherType: 0x0806)
        guest.transmit(arp)
        engine.pollOnce()
        XCTAssertEqual(receive(a)?.bytes, Self.header(vni: 42) + arp, "flood to remote A")
        XCTAssertEqual(receive(b)?.bytes, Self.header(vni: 42) + arp, "flood to remote B")

        // Host 9 answers from behind B: learned there.
        let reply = TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(9))
        send(b, Self.header(vni: 42) + reply)
        engine.pollOnce()
        XCTAssertEqual(guest.receivedFrames(), [reply])

        let unicast = TestFrame.make(dst: TestFrame.mac(9), src: TestFrame.mac(1), payload: 500)
        guest.transmit(unicast)
        engine.pollOnce()
        XCTAssertEqual(receive(b)?.bytes, Self.header(vni: 42) + unicast)
        XCTAssertNil(receive(a), "learned unicast must not go to A")

        // An unknown unicast destination behind the tunnel: every remote.
        engine.flushFdb(bridge: bridge)
        let unknown = TestFrame.make(dst: TestFrame.mac(7), src: TestFrame.mac(1))
        guest.transmit(unknown)
        engine.pollOnce()
        XCTAssertNotNil(receive(a))
        XCTAssertNotNil(receive(b))
        XCTAssertEqual(engine.counters(port: slot).txPackets, 5)
    }

    /// `--learning --remote-prefix`: a VTEP of the prefix that is not configured is accepted
    /// and learned (unicast to its hosts goes to it alone), floods still go to the configured
    /// remotes only, and addresses outside the prefix stay refused.
    func testLearningAcceptsRemotesOfThePrefixOnly() throws {
        let guest = SimulatedGuest()
        _ = try attachGuest(guest)
        guest.postReceiveBuffers(16)
        var spec = PortSpec(kind: .vxlan, remotes: ["127.0.0.2"], vni: 42, local: "127.0.0.1", dstPort: port)
        spec.learning = true
        spec.remotePrefix = "127.0.0.0/29"
        let t = try VxlanTunnel(spec: spec)
        tunnels.append(t)
        let slot = try XCTUnwrap(engine.addTunnelPort(bridge: bridge, tunnel: t.state))
        let configured = remote("127.0.0.2")
        let newcomer = remote("127.0.0.5")   // inside 127.0.0.0/29
        let outsider = remote("127.0.0.9")   // outside it
        let fromNewcomer = TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(5))
        send(newcomer, Self.header(vni: 43) + fromNewcomer)   // wrong VNI: not learned from
        send(newcomer, Self.header(vni: 42) + fromNewcomer)
        send(outsider, Self.header(vni: 42) + TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(6)))
        engine.pollOnce()
        XCTAssertEqual(guest.receivedFrames(), [fromNewcomer])
        XCTAssertEqual(engine.counters(port: slot).rxDropUnknownRemote, 1)
        XCTAssertEqual(engine.counters(port: slot).rxDropVni, 1, "no port has VNI 43: dropped before any port's checks")
        XCTAssertEqual(t.state.pointee.remoteCount, 2, "one learned remote")
        let unicast = TestFrame.make(dst: TestFrame.mac(5), src: TestFrame.mac(1), payload: 200)
        guest.transmit(unicast)
        engine.pollOnce()
        XCTAssertEqual(receive(newcomer)?.bytes, Self.header(vni: 42) + unicast, "to the learned remote")
        XCTAssertNil(receive(configured))
        let flood = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), etherType: 0x0806)
        guest.transmit(flood)
        engine.pollOnce()
        XCTAssertEqual(receive(configured)?.bytes, Self.header(vni: 42) + flood, "floods go to the configured remote")
        XCTAssertNil(receive(newcomer), "not to learned ones")
        XCTAssertNil(receive(outsider))
    }

    func testLearningOptionsAreChecked() {
        func refused(_ learning: Bool?, _ prefix: String?) -> String {
            var spec = PortSpec(kind: .vxlan, remotes: ["127.0.0.2"], vni: 42, local: "127.0.0.1", dstPort: port)
            spec.learning = learning
            spec.remotePrefix = prefix
            do { _ = try VxlanTunnel(spec: spec); return "accepted" } catch { return "\(error)" }
        }
        XCTAssertTrue(refused(true, nil).contains("needs --remote-prefix"))
        XCTAssertTrue(refused(nil, "10.0.0.0/8").contains("needs --learning"))
        XCTAssertTrue(refused(true, "10.0.0.1/8").contains("host bits set"))
        XCTAssertTrue(refused(true, "10.0.0.0/33").contains("invalid --remote-prefix"))
        XCTAssertTrue(refused(true, "fe80::/10").contains("all be IPv4 or all IPv6"), refused(true, "fe80::/10"))
        XCTAssertTrue(refused(true, "10.0.0.0").contains("invalid --remote-prefix"))
    }

    func testFrameTooBigForTheUnderlayIsDroppedAndCounted() throws {
        XCTAssertEqual(VxlanTunnel.largestInnerFrame(underlayMtu: 1500), 1464)   // guest MTU 1450
        let guest = SimulatedGuest()
        _ = try attachGuest(guest)
        let (slot, tunnel) = try attachTunnel(remotes: ["127.0.0.2"])
        let peer = remote("127.0.0.2")
        XCTAssertGreaterThan(tunnel.underlayMtu[0], 1500, "loopback route MTU")
        tunnel.state.pointee.maxFrame[0] = 1464                         // as on a 1500-byte underlay
        guest.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), payload: 1450))   // 1464
        guest.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), payload: 1451))   // 1465
        engine.pollOnce()
        XCTAssertEqual(receive(peer)?.bytes.count, 8 + 1464)
        XCTAssertNil(receive(peer))
        XCTAssertEqual(engine.counters(port: slot).txDropTooBig, 1)
        XCTAssertEqual(engine.counters(port: slot).txPackets, 1)
    }

    func testFlowsSpreadOverSourcePortsAndEachFlowKeepsOne() throws {
        let guest = SimulatedGuest()
        _ = try attachGuest(guest)
        _ = try attachTunnel(remotes: ["127.0.0.2"])
        let peer = remote("127.0.0.2")
        /// IPv4/UDP from 10.0.0.1 to 10.0.0.2, source port `sport`.
        func udp(_ sport: UInt16) -> [UInt8] {
            let ip: [UInt8] = [0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]
            return TestFrame.mac(2) + TestFrame.mac(1) + [0x08, 0x00] + ip + [UInt8(sport >> 8), UInt8(sport & 0xff), 0, 53, 0, 8, 0, 0]
                + [UInt8](repeating: 0, count: 18)
        }
        var seen: [UInt16: Int] = [:]
        for round in 0..<2 {
            for flow in UInt16(1000)..<1032 {
                guest.transmit(udp(flow))
                engine.pollOnce()
                let got = try XCTUnwrap(receive(peer))
                if round == 0 { seen[flow] = got.sourcePort } else { XCTAssertEqual(seen[flow], got.sourcePort, "flow \(flow) moved") }
            }
        }
        XCTAssertGreaterThanOrEqual(Set(seen.values).count, 4, "32 flows over 8 source ports: \(Set(seen.values))")
    }

    /// A guest TX batch leaves by sendmmsg, and datagrams arrive by recvmmsg: every one of a
    /// burst larger than a batch gets through, in order, each counted once; the TX buffers are
    /// returned to the guest only after their datagrams were sent (the ring's used index).
    func testBurstsInBothDirectionsGoThroughInBatches() throws {
        let (tp, _) = try attachTunnel(remotes: ["127.0.0.2"])
        let peer = remote("127.0.0.2")
        let g = SimulatedGuest()
        let gp = try attachGuest(g)
        g.postReceiveBuffers(128)
        let frames = (0..<100).map { i in TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), payload: 60, fill: UInt8(i)) }
        for f in frames { g.transmit(f) }
        var polls = 0
        while g.takeUsed(queue: 1).count < 100 && polls < 20 { engine.pollOnce(); polls += 1 }
        var got: [[UInt8]] = []
        while let d = receive(peer) { got.append(Array(d.bytes.dropFirst(8))) }
        XCTAssertEqual(got, frames, "all 100 datagrams, in order, after the TX buffers came back")
        XCTAssertEqual(engine.counters(port: tp).txPackets, 100)
        for i in 0..<100 { send(peer, Self.header(vni: 42) + TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(9), fill: UInt8(i))) }
        usleep(50_000)
        for _ in 0..<10 { engine.pollOnce() }
        let received = g.receivedFrames()
        XCTAssertEqual(received.count, 100, "all 100 datagrams reached the guest")
        XCTAssertEqual(received.map { $0[14] }, (0..<100).map { UInt8($0) }, "in order")
        XCTAssertEqual(engine.counters(port: gp).txPackets, 100)
    }

    /// `--group`: exclusive with `--remote`, a multicast address, an existing `--dev`; a good
    /// one joins the group and `show` says so (traffic: Tests/e2e/vxlan_multicast.sh).
    func testGroupOptionsAreChecked() throws {
        let controller = SwitchController(engine: engine, loop: EventLoop(), runDirectory: "/tmp",
                                          logger: Logger(label: "test"))
        try controller.addBridge("br0")
        func spec(remotes: [String] = [], group: String?, dev: String? = nil, ttl: Int? = nil) -> PortSpec {
            var s = PortSpec(kind: .vxlan, remotes: remotes, vni: 42, dstPort: port)
            s.group = group
            s.dev = dev
            s.ttl = ttl
            return s
        }
        func refuse(_ s: PortSpec, _ expected: String, line: UInt = #line) {
            XCTAssertThrowsError(try controller.addPort(bridge: "br0", name: "vx0", spec: s), line: line) {
                XCTAssertTrue("\($0)".contains(expected), "\($0)", line: line)
            }
            XCTAssertEqual(controller.snapshot().first?.ports.count, 0, line: line)
        }
        refuse(spec(remotes: ["127.0.0.2"], group: "239.1.1.1"), "mutually exclusive")
        refuse(spec(group: "192.0.2.1"), "not a multicast address")
        refuse(spec(group: "239.1.1.1", dev: "vsw-no-such0"), "no such interface")
        refuse(spec(group: "239.1.1.1", ttl: 0), "--ttl")
        refuse(spec(remotes: ["127.0.0.2"], group: nil, dev: "lo"), "need --group")
        try controller.addPort(bridge: "br0", name: "vx0", spec: spec(group: "239.1.1.1", dev: "lo", ttl: 3))
        let p = try XCTUnwrap(controller.snapshot().first?.ports.first)
        XCTAssertEqual(p.options?["group"], "239.1.1.1")
        XCTAssertEqual(p.options?["dev"], "lo")
        XCTAssertEqual(p.options?["ttl"], "3")
        XCTAssertEqual(p.options?["learning"], "0.0.0.0/0", "group mode learns remotes from any source")
        try controller.deletePort(bridge: "br0", port: "vx0")
    }

    func testBadOptionsCreateNothing() throws {
        let controller = SwitchController(engine: engine, loop: EventLoop(), runDirectory: "/tmp",
                                          logger: Logger(label: "test"))
        try controller.addBridge("br0")
        func refuse(_ spec: PortSpec, _ expected: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try controller.addPort(bridge: "br0", name: "vx0", spec: spec), file: file, line: line) {
                XCTAssertTrue("\($0)".contains(expected), "\($0)", file: file, line: line)
            }
            XCTAssertEqual(controller.snapshot().first?.ports.count, 0, file: file, line: line)
        }
        refuse(PortSpec(kind: .vxlan, remotes: ["127.0.0.2"], vni: 1 << 24, dstPort: port), "invalid VNI")
        refuse(PortSpec(kind: .vxlan, remotes: ["300.1.2.3"], vni: 1, dstPort: port), "cannot resolve remote")
        refuse(PortSpec(kind: .vxlan, remotes: ["no-such-host.invalid"], vni: 1, dstPort: port), "cannot resolve remote")
        refuse(PortSpec(kind: .vxlan, remotes: ["fe80::1"], vni: 1, dstPort: port), "IPv6")
        refuse(PortSpec(kind: .vxlan, remotes: ["239.1.1.1"], vni: 1, dstPort: port), "not a unicast")
        refuse(PortSpec(kind: .vxlan, remotes: [], vni: 1, dstPort: port), "needs --remote")
        refuse(PortSpec(kind: .vxlan, remotes: ["127.0.0.2"], vni: 1, local: "192.0.2.77", dstPort: port),
               "not an address of this host")
        refuse(PortSpec(kind: .vxlan, remotes: ["127.0.0.2", "127.0.0.2"], vni: 1, dstPort: port), "given twice")
        refuse(PortSpec(kind: .vxlan, remotes: ["127.0.0.1"], vni: 1, local: "127.0.0.1", dstPort: port), "own --local")
        let squatter = vs_udp_open(0, UInt16(port), 0)   // another program on the port
        fds.append(squatter)
        refuse(PortSpec(kind: .vxlan, remotes: ["127.0.0.2"], vni: 1, dstPort: port), "already in use by another program")

        // With the port free, the same tunnel works, and `show` says what it is.
        close(squatter)
        fds.removeAll { $0 == squatter }
        try controller.addPort(bridge: "br0", name: "vx0", spec: PortSpec(kind: .vxlan, remotes: ["127.0.0.2", "127.0.0.3"],
                                                                          vni: 42, dstPort: port))
        let p = try XCTUnwrap(controller.snapshot().first?.ports.first)
        XCTAssertEqual(p.options?["vni"], "42")
        XCTAssertEqual(p.options?["remote"], "127.0.0.2,127.0.0.3")
        XCTAssertEqual(p.options?["dst_port"], String(port))
        XCTAssertEqual(p.options?["local"], "0.0.0.0")
        XCTAssertTrue(controller.isTunnel(bridge: "br0", port: "vx0"))
        XCTAssertThrowsError(try controller.addPort(bridge: "br0", name: "vx1", spec: PortSpec(
            kind: .vxlan, remotes: ["127.0.0.4"], vni: 42, dstPort: port))) {
            XCTAssertEqual($0 as? SwitchError, .vniInUse(vni: 42, udpPort: port, port: "vx0", bridge: "br0"), "a typed value, not a string")
            XCTAssertTrue("\($0)".contains("VNI 42 on UDP port \(port) is already taken by port vx0 of bridge br0"), "\($0)")
        }
        try controller.deletePort(bridge: "br0", port: "vx0")
        // The UDP port is free again once the port is gone.
        let again = vs_udp_open(0, UInt16(port), 0)
        XCTAssertGreaterThanOrEqual(again, 0)
        if again >= 0 { close(again) }
    }
}
