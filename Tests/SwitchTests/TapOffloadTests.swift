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

/// TAP ports with a virtio-net header (IFF_VNET_HDR, TUNSETOFFLOAD CSUM|TSO4|TSO6), with a
/// SOCK_SEQPACKET pair standing in for the TAP descriptor: guest TSO and partial-checksum
/// frames go to the "kernel" whole, behind their header; the kernel's large segments reach
/// guests that negotiated the offloads whole (mergeable RX buffers) and everyone else cut
/// and checksummed; every header from either side is checked.
final class TapOffloadTests: XCTestCase {
    typealias O = OffloadTests
    var engine: ForwardingEngine!
    var bridge = 0
    var fds: [Int32] = []

    override func setUp() {
        engine = ForwardingEngine(logger: Logger(label: "test"))
        bridge = engine.addBridge(agingSeconds: 300)!
    }

    override func tearDown() {
        engine = nil
        for fd in fds { close(fd) }
        fds = []
    }

    /// A TAP port with offloads; returns (slot, the "kernel" end the test reads and writes).
    func attachTap(offloads: Bool = true) -> (Int, Int32) {
        var pair: [Int32] = [-1, -1]
        XCTAssertEqual(vs_socketpair_seqpacket(&pair), 0)
        fds += pair
        let slot = engine.addLocalPort(bridge: bridge, kind: SlotKind.tap.rawValue, fd: pair[0])!
        if offloads { engine.enableTapOffloads(port: slot) }
        return (slot, pair[1])
    }

    func attach(_ guest: SimulatedGuest, buffers: Int = 64) throws -> Int {
        let port = engine.addPort(bridge: bridge)!
        let memory = try guest.makeMemory()
        engine.startQueue(port: port, guest.vringConfiguration(queue: 0, memory: memory))
        engine.startQueue(port: port, guest.vringConfiguration(queue: 1, memory: memory))
        guest.postReceiveBuffers(min(buffers, Int(guest.queueSize)))
        return port
    }

    /// A guest that can send 64 KiB frames in one buffer.
    func bigSender() -> SimulatedGuest {
        SimulatedGuest(memorySize: 16 << 20, queueSize: 32, bufferSize: 66 << 10, features: O.offloads)
    }

    func readDatagram(_ fd: Int32) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 70000)
        let n = read(fd, &buffer, buffer.count)
        return n > 0 ? Array(buffer[..<n]) : nil
    }

    func send(_ fd: Int32, header: [UInt8], _ frame: [UInt8]) {
        let bytes = header + [0, 0] + frame    // 12-byte header: num_buffers unused
        XCTAssertEqual(write(fd, bytes, bytes.count), bytes.count)
    }

    static let zeroHeader = [UInt8](repeating: 0, count: 12)

    func tcpPayload(_ f: [UInt8], l4: Int) -> ArraySlice<UInt8> { f[(l4 + 20)...] }

    // MARK: guest -> kernel

    func testGuestTsoAndPartialChecksumFramesGoToTheKernelWhole() throws {
        let src = bigSender()
        let ps = try attach(src)
        let (pt, kernel) = attachTap()
        var bytes = 0
        for v6 in [false, true] {
            let l4: UInt16 = v6 ? 54 : 34
            let frame = O.tcpFrame(payload: 60000, v6: v6)
            bytes += frame.count
            let hdr = O.header(gso: v6 ? 4 : 1, hdrLen: l4 + 20, gsoSize: 1448, csumStart: l4)
            src.transmit(frame, header: hdr)
            XCTAssertEqual(engine.pollOnce(), 1)
            let got = try XCTUnwrap(readDatagram(kernel), "v6=\(v6)")
            XCTAssertEqual(got.count, 12 + frame.count, "one write: header + the whole segment")
            XCTAssertEqual(Array(got[..<10]), hdr, "the guest's metadata, as it sent it")
            XCTAssertEqual(Array(got[10..<12]), [0, 0])
            XCTAssertTrue(Array(got[12...]) == frame, "the frame untouched")
            XCTAssertNil(readDatagram(kernel), "not cut into pieces")
        }
        // A partial checksum goes to the kernel unfinished, with its metadata.
        let small = O.tcpFrame(payload: 500)
        src.transmit(small, header: O.header(csumStart: 34))
        engine.pollOnce()
        let got = try XCTUnwrap(readDatagram(kernel))
        XCTAssertEqual(Array(got[..<10]), O.header(csumStart: 34))
        XCTAssertEqual(Array(got[12...]), small)
        // A frame without metadata: a zero header.
        let arp = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), etherType: 0x0806)
        src.transmit(arp)
        engine.pollOnce()
        XCTAssertEqual(readDatagram(kernel), Self.zeroHeader + arp)
        let c = engine.counters(port: pt)
        XCTAssertEqual(c.txPackets, 4)
        XCTAssertEqual(c.txBytes, UInt64(bytes + small.count + arp.count), "frame bytes, without headers")
        XCTAssertEqual(c.txDropBadOffload + c.txDropNoBuffers, 0)
        XCTAssertEqual(engine.counters(port: ps).rxPackets, 4)
    }

    func testPlainGuestFramesGetAZeroHeaderAndAPlainTapNone() throws {
        let src = SimulatedGuest(features: O.plain)
        _ = try attach(src)
        let (_, kernel) = attachTap()
        let (_, plainKernel) = attachTap(offloads: false)
        let frame = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), payload: 1400)
        src.transmit(frame)
        engine.pollOnce()
        XCTAssertEqual(readDatagram(kernel), Self.zeroHeader + frame)
        XCTAssertEqual(readDatagram(plainKernel), frame, "a TAP without offloads: no header")
    }

    /// A legacy guest (no VERSION_1, no mergeable buffers) has a 10-byte header: the TAP still
    /// gets the 12-byte one, with the guest's fields; and the kernel's reach it in 10 bytes.
    func testLegacyTenByteHeaderGuest() throws {
        let features = VirtioFeature.netOffloads | VirtioFeature.ringIndirectDescriptors
        let src = SimulatedGuest(memorySize: 16 << 20, queueSize: 32, bufferSize: 66 << 10, features: features)
        XCTAssertEqual(src.headerLength, 10)
        _ = try attach(src)
        let (_, kernel) = attachTap()
        let frame = O.tcpFrame(payload: 30000)
        let hdr = O.header(gso: 1, hdrLen: 54, gsoSize: 1448, csumStart: 34)
        src.transmit(frame, header: hdr)
        engine.pollOnce()
        let got = try XCTUnwrap(readDatagram(kernel))
        XCTAssertEqual(got.count, 12 + frame.count)
        XCTAssertEqual(Array(got[..<12]), hdr + [0, 0])
        XCTAssertTrue(Array(got[12...]) == frame)
        send(kernel, header: hdr, frame)
        engine.pollOnce()
        let r = src.receivedFramesWithHeaders()
        XCTAssertEqual(r.count, 1)
        XCTAssertEqual(r.first?.header, hdr, "10 bytes, the kernel's fields")
        XCTAssertTrue(r.first?.frame == frame)
    }

    func testBadGuestMetadataNeverReachesTheKernel() throws {
        let src = SimulatedGuest(features: O.offloads)
        _ = try attach(src)
        let (pt, kernel) = attachTap()
        let frame = O.tcpFrame(payload: 1000)
        let n = UInt16(frame.count)
        let bad: [[UInt8]] = [
            O.header(gso: 1, hdrLen: 54, gsoSize: 0, csumStart: 34),                // gso_size 0
            O.header(gso: 1, hdrLen: n + 1, gsoSize: 500, csumStart: 34),           // hdr_len past the frame
            O.header(csumStart: n),                                                  // csum_start past the end
            O.header(csumStart: 34, csumOffset: n - 35),                             // checksum field past the end
            O.header(csumStart: 6),                                                  // inside the Ethernet header
            O.header(gso: 3, hdrLen: 54, gsoSize: 500, csumStart: 34, csumOffset: 6), // UDP (UFO): not offered
            O.header(gso: 0x85, hdrLen: 54, gsoSize: 500, csumStart: 34),           // UDP_L4 | ECN
            O.header(flags: 0, gso: 1, hdrLen: 54, gsoSize: 500, csumStart: 34),    // TSO without NEEDS_CSUM
        ]
        for h in bad { src.transmit(frame, header: h) }
        src.transmit(frame, header: O.header(csumStart: 34))
        XCTAssertEqual(engine.pollOnce(), bad.count + 1)
        XCTAssertEqual(engine.counters(port: pt).txDropBadOffload, UInt64(bad.count))
        let got = try XCTUnwrap(readDatagram(kernel), "the good frame after them")
        XCTAssertEqual(Array(got[..<10]), O.header(csumStart: 34))
        XCTAssertNil(readDatagram(kernel), "nothing else was written")
    }

    // MARK: kernel -> guests

    func testKernelGsoFramesReachOffloadGuestsWholeAndOthersInPieces() throws {
        for v6 in [false, true] {
            setUp()
            let taker = SimulatedGuest(features: O.offloads)     // 2 KiB mergeable buffers
            let plain = SimulatedGuest(features: O.plain)
            let pk = try attach(taker), pp = try attach(plain)
            let (pt, kernel) = attachTap()
            let l4: UInt16 = v6 ? 54 : 34
            let frame = O.tcpFrame(payload: 20000, v6: v6, flags: 0x19)
            let hdr = O.header(gso: v6 ? 4 : 1, hdrLen: l4 + 20, gsoSize: 1448, csumStart: l4)
            send(kernel, header: hdr, frame)
            XCTAssertEqual(engine.pollOnce(), 1)

            let whole = taker.receivedMergedFramesWithHeaders()
            XCTAssertEqual(whole.count, 1, "v6=\(v6): one frame")
            XCTAssertTrue(whole.first?.frame == frame, "v6=\(v6)")
            XCTAssertEqual(whole.first.map { Array($0.header.prefix(10)) }, hdr, "the kernel's metadata passed on")
            XCTAssertGreaterThan(whole.first?.buffers ?? 0, 9, "over mergeable buffers")
            XCTAssertEqual(engine.counters(port: pk).txPackets, 1)

            let pieces = plain.receivedFrames()
            XCTAssertEqual(pieces.count, (20000 + 1447) / 1448, "v6=\(v6)")
            var payload: [UInt8] = []
            for (i, p) in pieces.enumerated() {
                XCTAssertTrue(O.checksumsValid(p), "piece \(i) v6=\(v6)")
                XCTAssertLessThanOrEqual(p.count, Int(l4) + 20 + 1448)
                payload += tcpPayload(p, l4: Int(l4))
            }
            XCTAssertTrue(payload == Array(tcpPayload(frame, l4: Int(l4))), "v6=\(v6): payload reassembles")
            XCTAssertEqual(engine.counters(port: pp).txDropBadOffload, 0)
            let c = engine.counters(port: pt)
            XCTAssertEqual(c.rxPackets, 1)
            XCTAssertEqual(c.rxBytes, UInt64(frame.count), "without the header")
            tearDown()
        }
    }

    func testKernelPartialChecksumIsFinishedForPlainGuests() throws {
        let taker = SimulatedGuest(features: O.offloads), plain = SimulatedGuest(features: O.plain)
        _ = try attach(taker); _ = try attach(plain)
        let (_, kernel) = attachTap()
        let frame = O.tcpFrame(payload: 700)
        send(kernel, header: O.header(csumStart: 34), frame)
        // DATA_VALID only (the kernel's "checksum verified"): an ordinary frame.
        let complete = O.tcpFrame(payload: 100, partial: false)
        send(kernel, header: [0x02] + [UInt8](repeating: 0, count: 9), complete)
        engine.pollOnce()
        let t = taker.receivedFramesWithHeaders()
        XCTAssertEqual(t.map { Array($0.header.prefix(10)) }, [O.header(csumStart: 34), [UInt8](repeating: 0, count: 10)])
        XCTAssertEqual(t.map(\.frame), [frame, complete])
        let p = plain.receivedFramesWithHeaders()
        XCTAssertEqual(p.count, 2)
        XCTAssertEqual(p.first?.header[0], 0)
        XCTAssertTrue(O.checksumsValid(p.first?.frame ?? []), "finished by the switch")
        XCTAssertEqual(p.last?.frame, complete)
    }

    func testBadKernelHeadersAreDroppedAndCounted() throws {
        let taker = SimulatedGuest(features: O.offloads), plain = SimulatedGuest(features: O.plain)
        let pk = try attach(taker), pp = try attach(plain)
        let (pt, kernel) = attachTap()
        let frame = O.tcpFrame(payload: 3000)
        let n = UInt16(frame.count)
        let bad: [[UInt8]] = [
            O.header(gso: 1, hdrLen: 54, gsoSize: 0, csumStart: 34),                // gso_size 0
            O.header(gso: 1, hdrLen: n + 1, gsoSize: 1448, csumStart: 34),          // hdr_len past the frame
            O.header(csumStart: n),                                                  // csum_start past the end
            O.header(csumStart: 34, csumOffset: n - 35),                             // checksum field past the end
            O.header(csumStart: 0xffff, csumOffset: 0xffff),                         // both at their maximum
            O.header(csumStart: 13),                                                 // inside the Ethernet header
            O.header(gso: 3, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 6), // UDP (UFO)
            O.header(gso: 5, hdrLen: 42, gsoSize: 1448, csumStart: 34, csumOffset: 6), // UDP_L4 (USO)
            O.header(gso: 0x80, csumStart: 34),                                      // ECN alone
            O.header(gso: 0x7f, hdrLen: 54, gsoSize: 1448, csumStart: 34),          // unknown
            O.header(flags: 0, gso: 1, hdrLen: 54, gsoSize: 1448, csumStart: 34),   // TSO without NEEDS_CSUM
        ]
        for h in bad { send(kernel, header: h, frame) }
        XCTAssertEqual(write(kernel, [UInt8](repeating: 0, count: 12 + 5), 17), 17)   // header and 5 bytes
        XCTAssertEqual(write(kernel, [UInt8](repeating: 1, count: 7), 7), 7)           // not even a header
        let good = O.tcpFrame(payload: 200)
        send(kernel, header: O.header(csumStart: 34), good)
        XCTAssertEqual(engine.pollOnce(), bad.count + 3)
        let c = engine.counters(port: pt)
        XCTAssertEqual(c.rxDropBadOffload, UInt64(bad.count))
        XCTAssertEqual(c.rxDropRunt, 2)
        XCTAssertEqual(c.rxPackets, 1)
        let received = taker.receivedFrames()
        XCTAssertEqual(received.count, 1, "only the good frame, for both guests")
        XCTAssertTrue(received.first == good)
        XCTAssertEqual(plain.receivedFrames().count, 1)
        XCTAssertEqual(engine.counters(port: pk).txDropBadOffload + engine.counters(port: pp).txDropBadOffload, 0)
    }

    /// The kernel's 64 KiB segment for a VXLAN tunnel (which takes no offloads): cut in
    /// software, one datagram per MSS-sized frame with complete checksums.
    func testKernelGsoFrameIntoATunnelIsCut() throws {
        let (_, kernel) = attachTap()
        let port = VxlanTests.freePort()
        let tunnel = try VxlanTunnel(spec: PortSpec(kind: .vxlan, remotes: ["127.0.0.2"], vni: 42, local: "127.0.0.1",
                                                    dstPort: port))
        let vx = try XCTUnwrap(engine.addTunnelPort(bridge: bridge, tunnel: tunnel.state))
        let peer = vs_udp_open(VxlanTests.addr("127.0.0.2"), UInt16(port), 0)
        XCTAssertGreaterThanOrEqual(peer, 0)
        fds.append(peer)
        let frame = O.tcpFrame(payload: 10000)
        send(kernel, header: O.header(gso: 1, hdrLen: 54, gsoSize: 1448, csumStart: 34), frame)
        engine.pollOnce()
        var inner: [[UInt8]] = []
        while let d = readDatagram(peer) { inner.append(Array(d.dropFirst(8))) }
        XCTAssertEqual(inner.count, 7)
        XCTAssertTrue(inner.allSatisfy { $0.count <= 1514 && O.checksumsValid($0) })
        XCTAssertTrue(inner.flatMap { tcpPayload($0, l4: 34) } == Array(tcpPayload(frame, l4: 34)))
        XCTAssertEqual(engine.counters(port: vx).txPackets, 7)
        engine = nil   // the slot goes before the tunnel's sockets
        withExtendedLifetime(tunnel) {}
    }

    // MARK: VLANs and MTU limits

    func testVlanTagMovesTheOffsetsBothWays() throws {
        let src = bigSender()
        let pg = try attach(src)
        let (pt, kernel) = attachTap()
        engine.setPortPolicy(port: pg, access: 10, trunks: nil, native: nil, mtu: nil)
        engine.setPortPolicy(port: pt, access: nil, trunks: [10], native: nil, mtu: nil)
        // Guest (access 10) -> TAP (trunk): the tag is pushed, csum_start and hdr_len move by 4.
        let frame = O.tcpFrame(payload: 9000)
        src.transmit(frame, header: O.header(gso: 1, hdrLen: 54, gsoSize: 1448, csumStart: 34))
        engine.pollOnce()
        let got = try XCTUnwrap(readDatagram(kernel))
        XCTAssertEqual(Array(got[..<10]), O.header(gso: 1, hdrLen: 58, gsoSize: 1448, csumStart: 38))
        XCTAssertTrue(Array(got[12...]) == Array(frame[..<12]) + [0x81, 0x00, 0x00, 0x0a] + Array(frame[12...]))
        // TAP (tagged 10) -> guest: popped, the offsets move back.
        let reply = O.tcpFrame(payload: 600)
        let tagged = Array(reply[..<12]) + [0x81, 0x00, 0x00, 0x0a] + Array(reply[12...])
        send(kernel, header: O.header(csumStart: 38), tagged)
        engine.pollOnce()
        let r = src.receivedFramesWithHeaders()
        XCTAssertEqual(r.map { Array($0.header.prefix(10)) }, [O.header(csumStart: 34)])
        XCTAssertEqual(r.first?.frame, reply)
    }

    func testSegmentsLongerThanAnMtuAreCutInSoftware() throws {
        // Guest -> TAP with --mtu 1500: the kernel gets MSS-sized frames, finished.
        let src = bigSender()
        let pg = try attach(src)
        let (pt, kernel) = attachTap()
        engine.setPortPolicy(port: pt, access: nil, trunks: nil, native: nil, mtu: 1500)
        let frame = O.tcpFrame(payload: 10000)
        src.transmit(frame, header: O.header(gso: 1, hdrLen: 54, gsoSize: 1448, csumStart: 34))
        engine.pollOnce()
        var pieces: [[UInt8]] = []
        while let d = readDatagram(kernel) { pieces.append(d) }
        XCTAssertEqual(pieces.count, 7)
        for p in pieces {
            XCTAssertEqual(Array(p[..<12]), Self.zeroHeader)
            XCTAssertLessThanOrEqual(p.count - 12, 1514)
            XCTAssertTrue(O.checksumsValid(Array(p[12...])))
        }
        XCTAssertEqual(engine.counters(port: pt).txDropTooBig, 0)
        // TAP -> a guest with offloads and --mtu 1500: the same.
        engine.setPortPolicy(port: pg, access: nil, trunks: nil, native: nil, mtu: 1500)
        send(kernel, header: O.header(gso: 1, hdrLen: 54, gsoSize: 1448, csumStart: 34), frame)
        engine.pollOnce()
        let got = src.receivedFrames()
        XCTAssertEqual(got.count, 7)
        XCTAssertTrue(got.allSatisfy { $0.count <= 1514 && O.checksumsValid($0) })
        XCTAssertEqual(engine.counters(port: pg).txDropTooBig, 0)
    }

    // MARK: the real device

    /// Opening a TAP needs root and /dev/net/tun.
    func testTapDeviceNegotiatesTheHeaderAndOffloads() throws {
        guard getuid() == 0, access("/dev/net/tun", R_OK | W_OK) == 0 else {
            throw XCTSkip("needs root and /dev/net/tun")
        }
        let tap = try TapDevice(name: "vsoff\(getpid() % 10000)")
        XCTAssertTrue(tap.offloads)
        XCTAssertEqual(vs_tap_vnet_header_size(tap.fd), 12)
        let plain = try TapDevice(name: "vsplain\(getpid() % 10000)", offloads: false)
        XCTAssertFalse(plain.offloads)
        XCTAssertEqual(vs_tap_vnet_header_size(plain.fd), 0)
    }
}
