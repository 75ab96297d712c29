import GuestSimulator
import Logging
import Virtio
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
@testable import CaptureWriter

/// Checksum and TCP segmentation offloads between simulated guests: metadata passed on to
/// a destination that negotiated it, finished in software for one that did not.
final class OffloadTests: XCTestCase {
    var engine: ForwardingEngine!
    var bridge = 0
    static let plain = SimulatedGuest.defaultFeatures
    static let offloads = SimulatedGuest.defaultFeatures | VirtioFeature.netOffloads

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

    // MARK: frames

    static func sum(_ bytes: ArraySlice<UInt8>, initial: UInt32 = 0) -> UInt32 {
        var s = initial
        var i = bytes.startIndex
        while i + 1 < bytes.endIndex { s &+= UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1]); i += 2 }
        if i < bytes.endIndex { s &+= UInt32(bytes[i]) << 8 }
        return s
    }
    static func fold(_ s: UInt32) -> UInt16 {
        var v = s
        while v >> 16 != 0 { v = (v & 0xffff) + (v >> 16) }
        return UInt16(v)
    }

    /// An Ethernet + IPv4 (or IPv6) + TCP frame. With `partial`, the TCP checksum field holds
    /// the pseudo-header sum only, as a guest using NEEDS_CSUM leaves it.
    static func tcpFrame(payload: Int, v6: Bool = false, partial: Bool = true, seq: UInt32 = 1000,
                         flags: UInt8 = 0x18) -> [UInt8] {
        let eth: [UInt8] = TestFrame.mac(2) + TestFrame.mac(1) + (v6 ? [0x86, 0xdd] : [0x08, 0x00])
        let data = (0..<payload).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        var tcp: [UInt8] = [0x30, 0x39, 0x00, 0x50] + be32(seq) + be32(7) + [0x50, flags, 0xff, 0xff, 0, 0, 0, 0]
        let tcpLength = tcp.count + data.count
        var ip: [UInt8]
        var pseudo: UInt32
        if v6 {
            let src = [UInt8](repeating: 0, count: 15) + [1], dst = [UInt8](repeating: 0, count: 15) + [2]
            ip = [0x60, 0, 0, 0] + be16(UInt16(tcpLength)) + [6, 64] + src + dst
            pseudo = sum(ArraySlice(src + dst)) + UInt32(tcpLength) + 6
        } else {
            let src: [UInt8] = [10, 0, 0, 1], dst: [UInt8] = [10, 0, 0, 2]
            ip = [0x45, 0] + be16(UInt16(20 + tcpLength)) + [0x12, 0x34, 0x40, 0, 64, 6, 0, 0] + src + dst
            let c = ~fold(sum(ArraySlice(ip)))
            ip[10] = UInt8(c >> 8); ip[11] = UInt8(c & 0xff)
            pseudo = sum(ArraySlice(src + dst)) + UInt32(tcpLength) + 6
        }
        let p = partial ? fold(pseudo) : ~fold(sum(ArraySlice(tcp + data), initial: pseudo))
        tcp[16] = UInt8(p >> 8); tcp[17] = UInt8(p & 0xff)
        return eth + ip + tcp + data
    }
    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }

    /// Header bytes: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (LE).
    static func header(flags: UInt8 = 1, gso: UInt8 = 0, hdrLen: UInt16 = 0, gsoSize: UInt16 = 0,
                       csumStart: UInt16, csumOffset: UInt16 = 16) -> [UInt8] {
        [flags, gso] + le16(hdrLen) + le16(gsoSize) + le16(csumStart) + le16(csumOffset)
    }
    static func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xff), UInt8(v >> 8)] }

    /// True if the frame's IPv4 header checksum (if v4) and TCP checksum are complete.
    static func checksumsValid(_ f: [UInt8]) -> Bool {
        let v6 = f[12] == 0x86
        let l4 = v6 ? 54 : 34
        let tcpLength = f.count - l4
        var pseudo: UInt32
        if v6 {
            pseudo = sum(f[22..<54]) + UInt32(tcpLength) + 6
        } else {
            guard fold(sum(f[14..<34])) == 0xffff else { return false }
            pseudo = sum(f[26..<34]) + UInt32(tcpLength) + 6
        }
        return fold(sum(f[l4...], initial: pseudo)) == 0xffff
    }

    // MARK: tests

    func testPartialChecksumPassedOnOrFinished() throws {
        let src = SimulatedGuest(features: Self.offloads)
        let taker = SimulatedGuest(features: Self.offloads), plain = SimulatedGuest(features: Self.plain)
        _ = try attach(src); _ = try attach(taker); _ = try attach(plain)
        let frame = Self.tcpFrame(payload: 500)
        XCTAssertFalse(Self.checksumsValid(frame))
        src.transmit(frame, header: Self.header(csumStart: 34))
        engine.pollOnce()
        let got = taker.receivedFramesWithHeaders()
        XCTAssertEqual(got.count, 1)
        XCTAssertEqual(got.first?.header.prefix(10).map { $0 }, Self.header(csumStart: 34), "metadata passed on")
        XCTAssertEqual(got.first?.frame, frame, "payload untouched for a taker")
        let fixed = plain.receivedFramesWithHeaders()
        XCTAssertEqual(fixed.count, 1)
        XCTAssertEqual(fixed.first?.header[0], 0, "no NEEDS_CSUM for a port without GUEST_CSUM")
        XCTAssertTrue(Self.checksumsValid(fixed.first?.frame ?? []), "checksum finished by the switch")
        XCTAssertEqual(Array(fixed.first!.frame[0..<50]), Array(frame[0..<50]), "headers otherwise the same")
    }

    func testTsoSegmentedForPortsWithoutTsoAndPassedToPortsWithIt() throws {
        for v6 in [false, true] {
            setUp()
            let src = SimulatedGuest(memorySize: 16 << 20, bufferSize: 8192, features: Self.offloads)
            let taker = SimulatedGuest(memorySize: 16 << 20, bufferSize: 8192, features: Self.offloads)
            let plain = SimulatedGuest(features: Self.plain)
            _ = try attach(src); _ = try attach(taker); let pp = try attach(plain)
            let l4: UInt16 = v6 ? 54 : 34
            let frame = Self.tcpFrame(payload: 3500, v6: v6, flags: 0x19)   // FIN|PSH|ACK
            let hdr = Self.header(gso: v6 ? 4 : 1, hdrLen: l4 + 20, gsoSize: 1000, csumStart: l4)
            src.transmit(frame, header: hdr)
            engine.pollOnce()

            let whole = taker.receivedFramesWithHeaders()
            XCTAssertEqual(whole.count, 1, "v6=\(v6)")
            XCTAssertEqual(whole.first?.frame, frame)
            XCTAssertEqual(whole.first.map { Array($0.header.prefix(10)) }, hdr)

            let pieces = plain.receivedFramesWithHeaders().map(\.frame)
            XCTAssertEqual(pieces.map(\.count), [1000, 1000, 1000, 500].map { $0 + Int(l4) + 20 }, "v6=\(v6)")
            var payload: [UInt8] = []
            for (i, p) in pieces.enumerated() {
                XCTAssertTrue(Self.checksumsValid(p), "piece \(i) v6=\(v6)")
                let seq = UInt32(p[Int(l4) + 4]) << 24 | UInt32(p[Int(l4) + 5]) << 16 | UInt32(p[Int(l4) + 6]) << 8 | UInt32(p[Int(l4) + 7])
                XCTAssertEqual(seq, 1000 + UInt32(i * 1000))
                XCTAssertEqual(p[Int(l4) + 13], i == 3 ? 0x19 : 0x10, "FIN/PSH only on the last piece")
                payload += p[(Int(l4) + 20)...]
            }
            XCTAssertEqual(payload, Array(frame[(Int(l4) + 20)...]), "payload reassembles")
            XCTAssertEqual(engine.counters(port: pp).txPackets, 4)
        }
    }

    func testMalformedOffloadMetadataIsDroppedAndCounted() throws {
        let src = SimulatedGuest(features: Self.offloads), plain = SimulatedGuest(features: Self.plain)
        _ = try attach(src)
        let pp = try attach(plain)
        let frame = Self.tcpFrame(payload: 100)
        src.transmit(frame, header: Self.header(csumStart: 500))                        // beyond the frame
        src.transmit(frame, header: Self.header(gso: 1, gsoSize: 10, csumStart: 34))     // MSS below 64
        src.transmit(Array(frame[0..<40]), header: Self.header(gso: 1, gsoSize: 1000, csumStart: 34)) // no TCP header
        src.transmit(frame, header: [0x02, 0] + [UInt8](repeating: 0, count: 8))        // DATA_VALID only: ordinary
        engine.pollOnce()
        XCTAssertEqual(engine.counters(port: pp).txDropBadOffload, 3)
        XCTAssertEqual(plain.receivedFrames(), [frame])
    }
}
