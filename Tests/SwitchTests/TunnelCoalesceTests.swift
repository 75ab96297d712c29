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

/// Receive-side coalescing on tunnel ports (TunnelCoalesce.swift), over real sockets on
/// loopback: a far VTEP's datagrams (one UDP GSO super-datagram, which the tunnel's UDP_GRO
/// socket gets as one message, or several) whose inner frames are consecutive segments of one
/// TCP flow reach a guest that takes TSO as ONE frame with a GSO_TCPV4/6 header, exactly as
/// the kernel's GRO would build it; anything that does not match (order, flags, flow,
/// checksum, destination) ends the run and goes as it came.
final class TunnelCoalesceTests: XCTestCase {
    typealias O = OffloadTests
    var engine: ForwardingEngine!
    var bridge = 0
    var port = 0
    var fds: [Int32] = []
    var tunnels: [VxlanTunnel] = []
    var vx = 0
    var far: Int32 = -1

    override func setUp() {
        engine = ForwardingEngine(logger: Logger(label: "test"))
        bridge = engine.addBridge(agingSeconds: 300)!
        port = VxlanTests.freePort()
        let t = try! VxlanTunnel(spec: PortSpec(kind: .vxlan, remotes: ["127.0.0.2"], vni: 42, local: "127.0.0.1", dstPort: port))
        tunnels.append(t)
        vx = engine.addTunnelPort(bridge: bridge, tunnel: t.state)!
        far = vs_udp_open(VxlanTests.addr("127.0.0.2"), UInt16(port), 4 << 20)
        XCTAssertGreaterThanOrEqual(far, 0)
        fds.append(far)
    }

    override func tearDown() {
        engine = nil
        tunnels.removeAll()
        for fd in fds { close(fd) }
        fds.removeAll()
    }

    /// A guest on MAC `mac`, learned by the bridge (it sent one frame), with `features`.
    func guest(mac: UInt8, features: UInt64 = O.offloads) throws -> (SimulatedGuest, Int) {
        let g = SimulatedGuest(memorySize: 16 << 20, queueSize: 256, bufferSize: 2048, features: features)
        let p = engine.addPort(bridge: bridge)!
        let memory = try g.makeMemory()
        engine.startQueue(port: p, g.vringConfiguration(queue: 0, memory: memory))
        engine.startQueue(port: p, g.vringConfiguration(queue: 1, memory: memory))
        g.postReceiveBuffers(256)
        g.transmit(TestFrame.make(dst: TestFrame.mac(9), src: TestFrame.mac(mac), payload: 50), header: [UInt8](repeating: 0, count: 12))
        engine.pollOnce()
        var b = [UInt8](repeating: 0, count: 2048)
        while recv(far, &b, b.count, Int32(MSG_DONTWAIT)) > 0 {}   // the flood to the tunnel
        return (g, p)
    }

    /// One TCP segment with complete checksums: 10.0.0.1:12345 -> 10.0.0.2:80 (or IPv6),
    /// to MAC `dst`, `n` payload bytes of `fill`.
    static func segment(seq: UInt32, n: Int, flags: UInt8 = 0x10, fill: UInt8 = 0, v6: Bool = false, id: UInt16 = 0x1234,
                        df: Bool = true, dst: UInt8 = 2, sport: UInt16 = 12345, window: UInt16 = 0xffff) -> [UInt8] {
        let eth: [UInt8] = TestFrame.mac(dst) + TestFrame.mac(1) + (v6 ? [0x86, 0xdd] : [0x08, 0x00])
        let data = (0..<n).map { fill &+ UInt8(truncatingIfNeeded: $0 &* 7) }
        var tcp: [UInt8] = O.be16(sport) + [0x00, 0x50] + O.be32(seq) + O.be32(7) + [0x50, flags] + O.be16(window) + [0, 0, 0, 0]
        let tcpLength = tcp.count + data.count
        var ip: [UInt8]
        let pseudo: UInt32
        if v6 {
            let src = [UInt8](repeating: 0, count: 15) + [1], dstA = [UInt8](repeating: 0, count: 15) + [2]
            ip = [0x60, 0, 0, 0] + O.be16(UInt16(tcpLength)) + [6, 64] + src + dstA
            pseudo = O.sum(ArraySlice(src + dstA)) + UInt32(tcpLength) + 6
        } else {
            let src: [UInt8] = [10, 0, 0, 1], dstA: [UInt8] = [10, 0, 0, 2]
            ip = [0x45, 0] + O.be16(UInt16(20 + tcpLength)) + O.be16(id) + [df ? 0x40 : 0, 0, 64, 6, 0, 0] + src + dstA
            let c = ~O.fold(O.sum(ArraySlice(ip)))
            ip[10] = UInt8(c >> 8); ip[11] = UInt8(c & 0xff)
            pseudo = O.sum(ArraySlice(src + dstA)) + UInt32(tcpLength) + 6
        }
        let c = ~O.fold(O.sum(ArraySlice(tcp + data), initial: pseudo))
        tcp[16] = UInt8(c >> 8); tcp[17] = UInt8(c & 0xff)
        return eth + ip + tcp + data
    }

    /// Sends the frames as one UDP GSO super-datagram (all the size of the first, the last
    /// may be shorter), which the tunnel's socket receives as one coalesced message.
    func sendCoalesced(_ frames: [[UInt8]]) {
        var bytes: [UInt8] = []
        for f in frames { bytes += VxlanTests.header(vni: 42) + f }
        var to = TunnelAddress(ipv4: VxlanTests.addr("127.0.0.1"))
        let sent = bytes.withUnsafeMutableBytes { b -> Int in
            var iov = iovec(iov_base: b.baseAddress, iov_len: b.count)
            return vs_udp_sendv_gso(far, &iov, 1, &to, UInt16(port), UInt16(8 + frames[0].count))
        }
        XCTAssertEqual(sent, bytes.count)
    }

    /// Sends each frame as a datagram of its own.
    func sendEach(_ frames: [[UInt8]]) {
        var to = TunnelAddress(ipv4: VxlanTests.addr("127.0.0.1"))
        for f in frames {
            var bytes = VxlanTests.header(vni: 42) + f
            let sent = bytes.withUnsafeMutableBytes { b -> Int in
                var iov = iovec(iov_base: b.baseAddress, iov_len: b.count)
                return vs_udp_sendv(far, &iov, 1, &to, UInt16(port))
            }
            XCTAssertEqual(sent, bytes.count)
        }
    }

    func poll() {
        usleep(20_000)
        engine.pollOnce()
    }

    static func le16(_ h: [UInt8], _ at: Int) -> Int { Int(h[at]) | Int(h[at + 1]) << 8 }
    static func be16(_ f: [UInt8], _ at: Int) -> Int { Int(f[at]) << 8 | Int(f[at + 1]) }

    /// Checks that `got` is the TSO frame the kernel's GRO would make of `segments`: the first
    /// one's headers with the whole IP length, the last one's flags, the pseudo-header sum in
    /// the TCP checksum, every payload in order; and its virtio-net header.
    func assertMerged(_ got: (header: [UInt8], frame: [UInt8], buffers: Int), of segments: [[UInt8]], v6: Bool = false,
                      file: StaticString = #filePath, line: UInt = #line) {
        let l3 = 14, l4 = v6 ? 54 : 34, headers = l4 + 20
        let (h, f) = (got.header, got.frame)
        XCTAssertEqual(h[0], 1, "NEEDS_CSUM", file: file, line: line)
        XCTAssertEqual(h[1], v6 ? 4 : 1, "GSO_TCPV4/6", file: file, line: line)
        XCTAssertEqual(Self.le16(h, 2), headers, "hdr_len", file: file, line: line)
        XCTAssertEqual(Self.le16(h, 4), segments[0].count - headers, "gso_size: the first segment's payload", file: file, line: line)
        XCTAssertEqual(Self.le16(h, 6), l4, "csum_start", file: file, line: line)
        XCTAssertEqual(Self.le16(h, 8), 16, "csum_offset", file: file, line: line)
        XCTAssertEqual(f.count, headers + segments.reduce(0) { $0 + $1.count - headers }, "length", file: file, line: line)
        XCTAssertEqual(Array(f[..<l3]), Array(segments[0][..<l3]), file: file, line: line)
        if v6 {
            XCTAssertEqual(Self.be16(f, l3 + 4), f.count - l3 - 40, "IPv6 payload length", file: file, line: line)
            XCTAssertEqual(Array(f[l3..<l3 + 4]) + Array(f[(l3 + 6)..<l4]), Array(segments[0][l3..<l3 + 4]) + Array(segments[0][(l3 + 6)..<l4]),
                           file: file, line: line)
        } else {
            XCTAssertEqual(Self.be16(f, l3 + 2), f.count - l3, "IPv4 total length", file: file, line: line)
            XCTAssertEqual(O.fold(O.sum(f[l3..<l4])), 0xffff, "IPv4 header checksum", file: file, line: line)
            XCTAssertEqual(Array(f[(l3 + 4)..<(l3 + 10)]), Array(segments[0][(l3 + 4)..<(l3 + 10)]), "id, DF, TTL: the first's",
                           file: file, line: line)
        }
        XCTAssertEqual(Array(f[l4..<(l4 + 13)]), Array(segments[0][l4..<(l4 + 13)]), "ports, first seq, ack, offset", file: file, line: line)
        XCTAssertEqual(f[l4 + 13], segments.last![l4 + 13], "the last segment's flags", file: file, line: line)
        let tcpLength = f.count - l4
        let pseudo = (v6 ? O.sum(ArraySlice(f[22..<54])) : O.sum(ArraySlice(f[26..<34]))) + UInt32(tcpLength) + 6
        XCTAssertEqual(Self.be16(f, l4 + 16), Int(O.fold(pseudo)), "pseudo-header sum (NEEDS_CSUM)", file: file, line: line)
        XCTAssertTrue(Array(f[headers...]) == segments.flatMap { $0[headers...] }, "payloads in order", file: file, line: line)
    }

    func testSegmentsOfOneFlowBecomeOneTsoFrame() throws {
        let (g, pg) = try guest(mac: 2)
        for v6 in [false, true] {
            let before = engine.counters(port: vx)
            var segs = (0..<9).map { Self.segment(seq: 5000 + UInt32($0 * 1000), n: 1000, fill: UInt8($0), v6: v6, id: 0x1234 + UInt16($0)) }
            segs.append(Self.segment(seq: 14000, n: 300, flags: 0x18, fill: 9, v6: v6, id: 0x123d))   // shorter, PSH
            sendCoalesced(segs)
            poll()
            let got = g.receivedMergedFramesWithHeaders()
            XCTAssertEqual(got.count, 1, "one TSO frame (v6=\(v6))")
            if let m = got.first { assertMerged(m, of: segs, v6: v6) }
            let c = engine.counters(port: vx)
            XCTAssertEqual(c.rxPackets - before.rxPackets, 10, "each segment an rx packet")
            XCTAssertEqual(c.rxBytes - before.rxBytes, UInt64(segs.reduce(0) { $0 + $1.count }))
            XCTAssertEqual(c.rxCoalescedFrames - before.rxCoalescedFrames, 10)
            XCTAssertEqual(c.rxGroDatagrams - before.rxGroDatagrams, 1)
        }
        XCTAssertEqual(engine.counters(port: pg).txPackets, 2)
    }

    /// Separate datagrams of one recvmmsg batch merge too, and so do two coalesced messages;
    /// a merged frame stops at 64 KiB.
    func testSeparateDatagramsMergeAndAFrameStopsAt64KiB() throws {
        let (g, _) = try guest(mac: 2)
        let one = (0..<20).map { Self.segment(seq: 1 + UInt32($0 * 1448), n: 1448, fill: UInt8($0), id: UInt16($0)) }
        sendEach(one)
        poll()
        let first = g.receivedMergedFramesWithHeaders()
        XCTAssertEqual(first.count, 1)
        if let m = first.first { assertMerged(m, of: one) }
        // 43 datagrams of 1,510 bytes fill one UDP GSO message; 54 + 45 x 1448 = 65,214 bytes,
        // one segment more would be over 65,535.
        let segs = (0..<50).map { Self.segment(seq: 1 + UInt32($0 * 1448), n: 1448, fill: UInt8($0), id: UInt16($0)) }
        sendCoalesced(Array(segs[..<43]))
        sendCoalesced(Array(segs[43...]))
        poll()
        let got = g.receivedMergedFramesWithHeaders()
        XCTAssertEqual(got.map { ($0.frame.count - 54) / 1448 }, [45, 5])
        if got.count == 2 {
            assertMerged(got[0], of: Array(segs[..<45]))
            assertMerged(got[1], of: Array(segs[45...]))
        }
        XCTAssertEqual(engine.counters(port: vx).rxCoalescedFrames, 70)
        XCTAssertEqual(engine.counters(port: vx).rxGroDatagrams, 2)
    }

    /// What does not continue the run ends it and goes alone (or starts the next run).
    func testWhatDoesNotMatchEndsTheRun() throws {
        let (g, _) = try guest(mac: 2)
        let (other, _) = try guest(mac: 3)
        _ = g.receivedMergedFramesWithHeaders()                    // its flood
        func s(_ i: Int, flags: UInt8 = 0x10, fill: UInt8? = nil, id: UInt16? = nil, df: Bool = true, dst: UInt8 = 2,
               sport: UInt16 = 12345, window: UInt16 = 0xffff) -> [UInt8] {
            Self.segment(seq: 100 + UInt32(i * 1000), n: 1000, flags: flags, fill: fill ?? UInt8(i), id: id ?? UInt16(i), df: df,
                         dst: dst, sport: sport, window: window)
        }
        var bad = s(2)
        bad[54] ^= 0xff                                           // a payload byte: TCP checksum wrong
        // (case, segments sent as one message, what the guest at MAC 2 must get: runs of indexes)
        let cases: [(String, [[UInt8]], [[Int]])] = [
            ("wrong order (ids in sending order)", [s(0), s(2, id: 1), s(1, id: 2), s(3)], [[0], [1], [2], [3]]),
            ("PSH in the middle", [s(0), s(1, flags: 0x18), s(2), s(3)], [[0, 1], [2, 3]]),
            ("FIN", [s(0), s(1), s(2, flags: 0x11), s(3)], [[0, 1], [2], [3]]),
            ("another flow", [s(0), s(1), s(2, sport: 999), s(3)], [[0, 1], [2], [3]]),
            ("another window", [s(0), s(1), s(2, window: 100), s(3)], [[0, 1], [2], [3]]),
            ("bad checksum", [s(0), s(1), bad, s(3)], [[0, 1], [2], [3]]),
            ("no DF, id not incremented", [s(0, df: false), s(1, id: 0, df: false), s(2, id: 1, df: false)], [[0], [1, 2]]),
            ("DF differs", [s(0), s(1, df: false), s(2, df: false)], [[0], [1, 2]]),
        ]
        for (name, segs, runs) in cases {
            sendCoalesced(segs)
            poll()
            let got = g.receivedMergedFramesWithHeaders()
            XCTAssertEqual(got.count, runs.count, name)
            for (r, m) in zip(runs, got) {
                if r.count == 1 {
                    XCTAssertEqual(m.header[1], 0, "\(name): a single frame has no GSO")
                    XCTAssertEqual(m.frame, segs[r[0]], "\(name): segment \(r[0]) as it came")
                } else {
                    assertMerged(m, of: r.map { segs[$0] })
                }
            }
        }
        // Another destination: the run ends, each goes to its own guest (and MAC 3 takes TSO
        // too: its two frames merge).
        sendCoalesced([s(0), s(1), s(2, dst: 3), s(3, dst: 3), s(4)])
        poll()
        let mine = g.receivedMergedFramesWithHeaders()
        XCTAssertEqual(mine.count, 2)
        if mine.count == 2 {
            assertMerged(mine[0], of: [s(0), s(1)])
            XCTAssertEqual(mine[1].frame, s(4))
        }
        let theirs = other.receivedMergedFramesWithHeaders()
        XCTAssertEqual(theirs.count, 1)
        if let t = theirs.first { assertMerged(t, of: [s(2, dst: 3), s(3, dst: 3)]) }
    }

    /// A destination that does not take TSO (or has no mergeable buffers) gets every frame as before.
    func testDestinationWithoutTsoGetsTheFramesAsTheyCame() throws {
        for features in [SimulatedGuest.defaultFeatures,
                         O.offloads & ~VirtioFeature.netGuestTso4,
                         O.offloads & ~VirtioFeature.netMergeableRxBuffers] {
            tearDown()
            setUp()
            let (g, _) = try guest(mac: 2, features: features)
            let segs = (0..<6).map { Self.segment(seq: 1 + UInt32($0 * 1000), n: 1000, fill: UInt8($0), id: UInt16($0)) }
            sendCoalesced(segs)
            poll()
            let got = features & VirtioFeature.netMergeableRxBuffers != 0
                ? g.receivedMergedFramesWithHeaders().map { $0.frame } : g.receivedFrames()
            XCTAssertEqual(got, segs)
            XCTAssertEqual(engine.counters(port: vx).rxCoalescedFrames, 0)
            XCTAssertEqual(engine.counters(port: vx).rxPackets, 6)
        }
    }

    /// The 8-bytes-at-a-time sum that checks segments is the plain sum, for every length,
    /// alignment and carry pattern.
    func testWideChecksumSumIsThePlainSum() {
        var rng = SystemRandomNumberGenerator()
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 4200, alignment: 8)
        defer { buffer.deallocate() }
        for round in 0..<400 {
            for i in 0..<4200 { buffer.storeBytes(of: round % 3 == 0 ? 0xff : UInt8.random(in: 0...255, using: &rng), toByteOffset: i, as: UInt8.self) }
            let offset = round % 8, count = round < 100 ? round : Int.random(in: 0...4000, using: &rng)
            let initial = UInt64.random(in: 0...0xffff_ffff, using: &rng)
            XCTAssertEqual(InternetChecksum.fold(InternetChecksum.sumWide(buffer + offset, count: count, initial: initial)),
                           InternetChecksum.fold(InternetChecksum.sum(buffer + offset, count: count, initial: initial)),
                           "count \(count) at offset \(offset)")
        }
    }
}
