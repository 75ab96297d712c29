import CShims
import GuestSimulator
import Logging
import Virtio
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
#if canImport(Glibc)
import Glibc
#endif

/// UDP GSO and GRO on tunnel ports, against the real kernel on loopback: a guest's TSO
/// segment leaves as one super-datagram (two for a full 64 KiB) that the kernel cuts
/// (UDP_SEGMENT), and arrives at a
/// plain UDP socket as the datagrams a software cut would have made; messages the kernel
/// coalesced (UDP_GRO) are split into their datagrams; a kernel that refuses GSO gets the
/// software cut, once noticed per socket.
final class TunnelGsoTests: XCTestCase {
    typealias O = OffloadTests
    var engine: ForwardingEngine!
    var bridge = 0
    var port = 0
    var fds: [Int32] = []
    var tunnels: [VxlanTunnel] = []

    override func setUp() {
        engine = ForwardingEngine(logger: Logger(label: "test"))
        bridge = engine.addBridge(agingSeconds: 300)!
        port = VxlanTests.freePort()
    }

    override func tearDown() {
        engine = nil        // the slots go before the tunnels' sockets
        tunnels.removeAll()
        for fd in fds { close(fd) }
        fds.removeAll()
    }

    func bigSender() -> SimulatedGuest {
        SimulatedGuest(memorySize: 16 << 20, queueSize: 32, bufferSize: 66 << 10, features: O.offloads)
    }

    func attach(_ guest: SimulatedGuest, on e: ForwardingEngine? = nil, bridge b: Int? = nil, buffers: Int = 32) throws -> Int {
        let e = e ?? engine!
        let p = e.addPort(bridge: b ?? bridge)!
        let memory = try guest.makeMemory()
        e.startQueue(port: p, guest.vringConfiguration(queue: 0, memory: memory))
        e.startQueue(port: p, guest.vringConfiguration(queue: 1, memory: memory))
        guest.postReceiveBuffers(min(buffers, Int(guest.queueSize)))
        return p
    }

    func attachTunnel(remotes: [String], local: String = "127.0.0.1", kind: PortKind = .vxlan,
                      on e: ForwardingEngine? = nil, bridge b: Int? = nil) throws -> (Int, VxlanTunnel) {
        let t = try VxlanTunnel(spec: PortSpec(kind: kind, remotes: remotes, vni: 42, local: local, dstPort: port))
        tunnels.append(t)
        let slot = try XCTUnwrap((e ?? engine).addTunnelPort(bridge: b ?? bridge, tunnel: t.state))
        return (slot, t)
    }

    /// A plain UDP socket (no UDP_GRO) on address:port: the kernel hands it one datagram each.
    func peer(_ address: String) -> Int32 {
        let fd = vs_udp_open(VxlanTests.addr(address), UInt16(port), 1 << 20)
        XCTAssertGreaterThanOrEqual(fd, 0)
        fds.append(fd)
        return fd
    }

    func datagrams(_ fd: Int32) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var buffer = [UInt8](repeating: 0, count: 70000)
        while true {
            let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if n < 0 { return out }
            out.append(Array(buffer[..<n]))
        }
    }

    static func seq(_ f: [UInt8], l4: Int) -> UInt32 {
        UInt32(f[l4 + 4]) << 24 | UInt32(f[l4 + 5]) << 16 | UInt32(f[l4 + 6]) << 8 | UInt32(f[l4 + 7])
    }

    /// Checks that `inner` are the frames a software cut of `frame` at `mss` gives: sizes,
    /// checksums, sequence numbers, flags, IPv4 ids, payload.
    func assertCut(_ inner: [[UInt8]], of frame: [UInt8], mss: Int, v6: Bool, tag: [UInt8] = [],
                   file: StaticString = #filePath, line: UInt = #line) {
        let l3 = 14 + tag.count
        let l4 = l3 + (v6 ? 40 : 20)
        let payload = frame.count - (v6 ? 74 : 54)
        let n = (payload + mss - 1) / mss
        XCTAssertEqual(inner.count, n, "pieces", file: file, line: line)
        var data: [UInt8] = []
        for (i, p) in inner.enumerated() {
            XCTAssertEqual(p.count, l4 + 20 + min(mss, payload - i * mss), "piece \(i) length", file: file, line: line)
            XCTAssertEqual(Array(p[..<12]), Array(frame[..<12]), file: file, line: line)
            XCTAssertEqual(Array(p[12..<(12 + tag.count)]), tag, "tag", file: file, line: line)
            let untagged = Array(p[..<12]) + Array(p[(12 + tag.count)...])
            XCTAssertTrue(O.checksumsValid(untagged), "piece \(i) checksums", file: file, line: line)
            XCTAssertEqual(Self.seq(p, l4: l4), 1000 + UInt32(i * mss), "piece \(i) seq", file: file, line: line)
            XCTAssertEqual(p[l4 + 13], i == n - 1 ? 0x19 : 0x10, "FIN/PSH only on the last piece", file: file, line: line)
            if !v6 {
                XCTAssertEqual(UInt16(p[l3 + 4]) << 8 | UInt16(p[l3 + 5]), 0x1234 &+ UInt16(i), "IPv4 id", file: file, line: line)
                XCTAssertEqual(Int(p[l3 + 2]) << 8 | Int(p[l3 + 3]), p.count - l3, "IPv4 total length", file: file, line: line)
            } else {
                XCTAssertEqual(Int(p[l3 + 4]) << 8 | Int(p[l3 + 5]), p.count - l3 - 40, "IPv6 payload length", file: file, line: line)
            }
            data += p[(l4 + 20)...]
        }
        XCTAssertTrue(data == Array(frame[(v6 ? 74 : 54)...]), "payload reassembles", file: file, line: line)
    }

    func testGuestTsoLeavesAsOneGsoDatagramAndArrivesAsItsPieces() throws {
        let src = bigSender()
        _ = try attach(src)
        let (vx, _) = try attachTunnel(remotes: ["127.0.0.2"])
        let remote = peer("127.0.0.2")
        // A 64 KiB segment (44 x 1448) and its 44 headers do not fit one datagram: two, by one sendmmsg.
        for (v6, payload, mss, expected) in [(false, 3500, 1000, 1), (true, 3500, 1000, 1), (false, 60000, 1448, 1),
                                              (true, 60000, 1428, 1), (false, 44 * 1448, 1448, 2), (true, 65000, 1428, 2)] {
            let l4 = v6 ? 54 : 34
            let frame = O.tcpFrame(payload: payload, v6: v6, flags: 0x19)
            let before = engine.counters(port: vx)
            src.transmit(frame, header: O.header(gso: v6 ? 4 : 1, hdrLen: UInt16(l4 + 20), gsoSize: UInt16(mss), csumStart: UInt16(l4)))
            engine.pollOnce()
            let got = datagrams(remote)
            XCTAssertTrue(got.allSatisfy { Array($0.prefix(8)) == VxlanTests.header(vni: 42) }, "VXLAN header on every datagram")
            let inner = got.map { Array($0.dropFirst(8)) }
            assertCut(inner, of: frame, mss: mss, v6: v6)
            let c = engine.counters(port: vx)
            XCTAssertEqual(c.txGsoDatagrams - before.txGsoDatagrams, UInt64(expected), "super-datagrams (v6=\(v6), \(payload))")
            XCTAssertEqual(c.txPackets - before.txPackets, UInt64(inner.count))
            XCTAssertEqual(c.txBytes - before.txBytes, UInt64(inner.reduce(0) { $0 + $1.count }))
            XCTAssertEqual(c.txGsoRefused, 0)
        }
    }

    /// Geneve ports share the path: every piece carries the Geneve header.
    func testGeneveTso() throws {
        let src = bigSender()
        _ = try attach(src)
        let (vx, _) = try attachTunnel(remotes: ["127.0.0.2"], kind: .geneve)
        let remote = peer("127.0.0.2")
        let frame = O.tcpFrame(payload: 20000, flags: 0x19)
        src.transmit(frame, header: O.header(gso: 1, hdrLen: 54, gsoSize: 1448, csumStart: 34))
        engine.pollOnce()
        let got = datagrams(remote)
        XCTAssertTrue(got.allSatisfy { Array($0.prefix(8)) == [0, 0, 0x65, 0x58, 0, 0, 42, 0] }, "Geneve header on every datagram")
        assertCut(got.map { Array($0.dropFirst(8)) }, of: frame, mss: 1448, v6: false)
        XCTAssertEqual(engine.counters(port: vx).txGsoDatagrams, 1)
    }

    /// Over an IPv6 underlay (the UDP checksum is mandatory there; the kernel computes it for
    /// every piece): a tunnel port built by hand whose remote is a plain socket on [::1].
    func testIPv6UnderlayTso() throws {
        var loop = try VxlanTunnel.resolve("::1", what: "remote")
        let far = vs_udp_open_addr(&loop, 0, 1 << 20)
        guard far >= 0 else { throw XCTSkip("no IPv6 loopback here") }
        fds.append(far)
        let rx = vs_udp_open_addr(&loop, 0, 0)
        XCTAssertGreaterThanOrEqual(rx, 0)
        fds.append(rx)
        let send = vs_udp_open_addr(&loop, 0, 0)
        fds.append(send)
        let socket = UnsafeMutablePointer<TunnelSocketState>.allocate(capacity: 1)
        socket.initialize(to: TunnelSocketState(fd: rx))
        let header = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
        header.initialize(to: VxlanState.header(vni: 42))
        let remotes = UnsafeMutablePointer<TunnelAddress>.allocate(capacity: 1)
        remotes.initialize(to: loop)
        let maxFrame = UnsafeMutablePointer<Int>.allocate(capacity: 1)
        maxFrame.initialize(to: 65536 - 70)
        let sends = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
        sends.initialize(to: send)
        let learned = UnsafeMutablePointer<VxlanState.LearnedRemote>.allocate(capacity: VxlanState.tableSize)
        learned.initialize(repeating: VxlanState.LearnedRemote(), count: VxlanState.tableSize)
        let state = UnsafeMutablePointer<VxlanState>.allocate(capacity: 1)
        state.initialize(to: VxlanState(header: header, vniWord: (UInt32(42) << 8).bigEndian,
                                        dstPort: UInt16(vs_udp_local_port(far)), remoteCount: 1, remotes: remotes,
                                        maxFrame: maxFrame, sendFds: sends, sendCount: 1, learned: learned, socket: socket))
        let src = bigSender()
        _ = try attach(src)
        let vx = try XCTUnwrap(engine.addTunnelPort(bridge: bridge, tunnel: state))
        for v6 in [false, true] {
            let l4 = v6 ? 54 : 34
            let frame = O.tcpFrame(payload: 30000, v6: v6, flags: 0x19)
            src.transmit(frame, header: O.header(gso: v6 ? 4 : 1, hdrLen: UInt16(l4 + 20), gsoSize: 1400, csumStart: UInt16(l4)))
            engine.pollOnce()
            let got = datagrams(far)
            XCTAssertTrue(got.allSatisfy { Array($0.prefix(8)) == VxlanTests.header(vni: 42) })
            assertCut(got.map { Array($0.dropFirst(8)) }, of: frame, mss: 1400, v6: v6)
        }
        XCTAssertEqual(engine.counters(port: vx).txGsoDatagrams, 2)
        XCTAssertEqual(engine.counters(port: vx).txGsoRefused, 0)
        engine = nil        // the slot goes before its state
        socket.pointee.deallocate()
        socket.deallocate()
        header.deallocate(); remotes.deallocate(); maxFrame.deallocate(); sends.deallocate(); learned.deallocate(); state.deallocate()
    }

    /// A tag pushed on the way (access port -> trunk tunnel) is in every piece; the MTU
    /// limits still hold (a piece too long for the underlay: cut and dropped as before).
    func testVlanPushAndUnderlayLimit() throws {
        let src = bigSender()
        let pg = try attach(src)
        let (vx, tunnel) = try attachTunnel(remotes: ["127.0.0.2"])
        let remote = peer("127.0.0.2")
        engine.setPortPolicy(port: pg, access: 10, trunks: nil, native: nil, mtu: nil)
        engine.setPortPolicy(port: vx, access: nil, trunks: [10], native: nil, mtu: nil)
        let frame = O.tcpFrame(payload: 5000, flags: 0x19)
        src.transmit(frame, header: O.header(gso: 1, hdrLen: 54, gsoSize: 1448, csumStart: 34))
        engine.pollOnce()
        assertCut(datagrams(remote).map { Array($0.dropFirst(8)) }, of: frame, mss: 1448, v6: false, tag: [0x81, 0, 0, 10])
        XCTAssertEqual(engine.counters(port: vx).txGsoDatagrams, 1)

        // An underlay of 1500 bytes takes inner frames of 1464: 1448 + 54 + 4 does not fit.
        tunnel.state.pointee.maxFrame[0] = 1464
        src.transmit(frame, header: O.header(gso: 1, hdrLen: 54, gsoSize: 1448, csumStart: 34))
        engine.pollOnce()
        let last = datagrams(remote)
        XCTAssertEqual(last.count, 1, "only the short last piece fits")
        XCTAssertEqual(engine.counters(port: vx).txGsoDatagrams, 1, "no GSO for pieces that do not fit")
        XCTAssertEqual(engine.counters(port: vx).txDropTooBig, 3)
    }

    /// SO_NO_CHECK on the send sockets makes the kernel refuse UDP GSO (EINVAL): the segment
    /// is cut in software, counted once, and that socket is not asked again.
    func testKernelRefusalFallsBackToTheSoftwareCut() throws {
        let src = bigSender()
        _ = try attach(src)
        let (vx, tunnel) = try attachTunnel(remotes: ["127.0.0.2"])
        let remote = peer("127.0.0.2")
        var one: Int32 = 1
        for fd in tunnel.sendFds {
            XCTAssertEqual(setsockopt(fd, SOL_SOCKET, 11 /* SO_NO_CHECK */, &one, socklen_t(MemoryLayout<Int32>.size)), 0)
        }
        let frame = O.tcpFrame(payload: 10000, flags: 0x19)
        for round in 0..<2 {
            src.transmit(frame, header: O.header(gso: 1, hdrLen: 54, gsoSize: 1448, csumStart: 34))
            engine.pollOnce()
            assertCut(datagrams(remote).map { Array($0.dropFirst(8)) }, of: frame, mss: 1448, v6: false)
            let c = engine.counters(port: vx)
            XCTAssertEqual(c.txGsoRefused, 1, "refused once, then remembered (round \(round))")
            XCTAssertEqual(c.txGsoDatagrams, 0)
            XCTAssertEqual(c.txPackets, UInt64(7 * (round + 1)))
        }
        XCTAssertEqual(tunnel.state.pointee.gsoRefused.nonzeroBitCount, 1, "one socket marked")
    }

    /// A far VTEP that sends with UDP GSO to the tunnel's socket (UDP_GRO on): on loopback the
    /// kernel hands the whole super-datagram over in one message with its segment size; every
    /// datagram in it is checked and forwarded on its own, a bad one dropped and counted.
    func testCoalescedReceiveIsSplitIntoItsDatagrams() throws {
        let guest = SimulatedGuest()
        let pg = try attach(guest)
        let (vx, _) = try attachTunnel(remotes: ["127.0.0.2"])
        let far = peer("127.0.0.2")
        let size = 8 + 1000
        var frames = (0..<5).map { i in TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(9), payload: 1000 - 14, fill: UInt8(i)) }
        frames.append(TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(9), payload: 300, fill: 9))   // the last, shorter
        var bytes: [UInt8] = []
        for (i, f) in frames.enumerated() { bytes += VxlanTests.header(vni: i == 2 ? 43 : 42) + f }   // #2: another VNI
        var to = TunnelAddress(ipv4: VxlanTests.addr("127.0.0.1"))
        let sent = bytes.withUnsafeMutableBytes { b -> Int in
            var iov = iovec(iov_base: b.baseAddress, iov_len: b.count)
            return vs_udp_sendv_gso(far, &iov, 1, &to, UInt16(port), UInt16(size))
        }
        XCTAssertEqual(sent, bytes.count)
        usleep(20_000)
        engine.pollOnce()
        var expected = frames
        expected.remove(at: 2)
        XCTAssertEqual(guest.receivedFrames(), expected)
        let c = engine.counters(port: vx)
        XCTAssertEqual(c.rxGroDatagrams, 1, "one coalesced message")
        XCTAssertEqual(c.rxPackets, 5)
        XCTAssertEqual(c.rxDropVni, 1)
        XCTAssertEqual(engine.counters(port: pg).txPackets, 5)
    }

    /// Two switches on loopback: a TSO segment from a guest on A leaves A's tunnel as one
    /// super-datagram, reaches B's socket as one coalesced message, and B's guest gets the
    /// pieces with correct checksums.
    func testSwitchToSwitchOneDatagramEachWay() throws {
        let b = ForwardingEngine(logger: Logger(label: "b"))
        let bb = b.addBridge(agingSeconds: 300)!
        let src = bigSender()
        _ = try attach(src)
        let (ta, _) = try attachTunnel(remotes: ["127.0.0.2"])
        let dst = SimulatedGuest(memorySize: 16 << 20, queueSize: 64, bufferSize: 2048)
        let pd = try attach(dst, on: b, bridge: bb, buffers: 64)
        let (tb, tunnelB) = try attachTunnel(remotes: ["127.0.0.1"], local: "127.0.0.2", on: b, bridge: bb)
        let frame = O.tcpFrame(payload: 40000, flags: 0x19)
        src.transmit(frame, header: O.header(gso: 1, hdrLen: 54, gsoSize: 1448, csumStart: 34))
        engine.pollOnce()
        usleep(20_000)
        b.pollOnce()
        assertCut(dst.receivedFrames(), of: frame, mss: 1448, v6: false)
        XCTAssertEqual(engine.counters(port: ta).txGsoDatagrams, 1)
        XCTAssertEqual(b.counters(port: tb).rxGroDatagrams, 1)
        XCTAssertEqual(b.counters(port: tb).rxPackets, 28)
        XCTAssertEqual(b.counters(port: pd).txPackets, 28)
        withExtendedLifetime(tunnelB) {}
    }
}
