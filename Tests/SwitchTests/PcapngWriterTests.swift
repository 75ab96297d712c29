import CPcap
import CShims
import Foundation
import XCTest
@testable import CaptureWriter

/// The pcapng encoder on its own: block layout, 32-bit padding, options, the byte-order
/// magic; files read back by libpcap (`pcap_open_offline` reads pcapng) and by tshark.
final class PcapngWriterTests: XCTestCase {
    /// A block as read back: type and body (between the two length fields).
    struct Block {
        var type: UInt32
        var body: [UInt8]
    }

    /// Splits `bytes` into blocks, checking both length fields and 32-bit alignment.
    static func blocks(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> [Block] {
        var out: [Block] = []
        var i = 0
        while i + 12 <= bytes.count {
            let type = u32(bytes, i), total = Int(u32(bytes, i + 4))
            XCTAssertEqual(total % 4, 0, "block length is a multiple of 4", file: file, line: line)
            guard total >= 12, i + total <= bytes.count else {
                XCTFail("block at \(i) overruns the data", file: file, line: line)
                return out
            }
            XCTAssertEqual(Int(u32(bytes, i + total - 4)), total, "trailing length equals leading", file: file, line: line)
            out.append(Block(type: type, body: Array(bytes[(i + 8)..<(i + total - 4)])))
            i += total
        }
        XCTAssertEqual(i, bytes.count, "no bytes after the last block", file: file, line: line)
        return out
    }

    /// Options from `offset` of a body: code -> value, checking padding and the end marker.
    static func options(_ body: [UInt8], from offset: Int) -> [UInt16: [UInt8]] {
        var out: [UInt16: [UInt8]] = [:]
        var i = offset
        while i + 4 <= body.count {
            let code = u16(body, i), length = Int(u16(body, i + 2))
            if code == 0 {
                XCTAssertEqual(length, 0)
                XCTAssertEqual(i + 4, body.count, "opt_endofopt ends the block")
                return out
            }
            out[code] = Array(body[(i + 4)..<(i + 4 + length)])
            i += 4 + (length + 3) & ~3
        }
        XCTFail("options without opt_endofopt")
        return out
    }

    static func u16(_ b: [UInt8], _ i: Int) -> UInt16 { UInt16(b[i]) | UInt16(b[i + 1]) << 8 }
    static func u32(_ b: [UInt8], _ i: Int) -> UInt32 { UInt32(u16(b, i)) | UInt32(u16(b, i + 2)) << 16 }
    static func u64(_ b: [UInt8], _ i: Int) -> UInt64 { UInt64(u32(b, i)) | UInt64(u32(b, i + 4)) << 32 }

    func sample() -> PcapngWriter {
        var w = PcapngWriter()
        w.sectionHeader(application: "vswitch")
        w.interfaceDescription(name: "vm1", description: "vhostuserclient /tmp/vm1.sock", snaplen: 256)
        w.interfaceDescription(name: "tap0.x", description: "", snaplen: 256)
        let frame: [UInt8] = Array(repeating: 0xAB, count: 61)   // odd length: padded to 64
        frame.withUnsafeBytes {
            w.enhancedPacket(interface: 1, timestampNs: 0x1_2345_6789, data: $0, originalLength: 1500, outbound: true)
            w.enhancedPacket(interface: 0, timestampNs: 7, data: $0, originalLength: 61, outbound: false)
        }
        w.interfaceStatistics(interface: 1, timestampNs: 9, .init(startNs: 5, received: 10, dropped: 3, accepted: 6))
        return w
    }

    func testBlockLayoutPaddingAndOptions() {
        let blocks = Self.blocks(sample().bytes)
        XCTAssertEqual(blocks.map(\.type), [0x0A0D_0D0A, 1, 1, 6, 6, 5])
        let shb = blocks[0].body
        XCTAssertEqual(Self.u32(shb, 0), 0x1A2B_3C4D, "byte-order magic in host order (little-endian here)")
        XCTAssertEqual([Self.u16(shb, 4), Self.u16(shb, 6)], [1, 0], "version 1.0")
        XCTAssertEqual(Self.u64(shb, 8), UInt64.max, "section length unknown")
        XCTAssertEqual(Self.options(shb, from: 16)[4], Array("vswitch".utf8))

        let idb = blocks[1].body
        XCTAssertEqual(Self.u16(idb, 0), 1, "LINKTYPE_ETHERNET")
        XCTAssertEqual(Self.u32(idb, 4), 256, "snaplen")
        let o = Self.options(idb, from: 8)
        XCTAssertEqual(o[2], Array("vm1".utf8), "if_name, padded to 4")
        XCTAssertEqual(o[3], Array("vhostuserclient /tmp/vm1.sock".utf8))
        XCTAssertEqual(o[9], [9], "if_tsresol: nanoseconds")
        XCTAssertNil(Self.options(blocks[2].body, from: 8)[3], "no empty description")

        let epb = blocks[3].body
        XCTAssertEqual(Self.u32(epb, 0), 1, "interface id")
        XCTAssertEqual([Self.u32(epb, 4), Self.u32(epb, 8)], [1, 0x2345_6789], "timestamp high, low")
        XCTAssertEqual([Self.u32(epb, 12), Self.u32(epb, 16)], [61, 1500], "captured, original length")
        XCTAssertEqual(Array(epb[20..<81]), Array(repeating: 0xAB, count: 61))
        XCTAssertEqual(Array(epb[81..<84]), [0, 0, 0], "data padded with zeros")
        XCTAssertEqual(Self.options(epb, from: 84)[2], [2, 0, 0, 0], "epb_flags outbound")
        XCTAssertEqual(Self.options(blocks[4].body, from: 84)[2], [1, 0, 0, 0], "epb_flags inbound")

        let isb = blocks[5].body
        let s = Self.options(isb, from: 12)
        XCTAssertEqual(s[2].map { Self.u32($0, 4) }, 5, "isb_starttime low half")
        XCTAssertEqual(s[4].map { Self.u64($0, 0) }, 10, "isb_ifrecv")
        XCTAssertEqual(s[5].map { Self.u64($0, 0) }, 3, "isb_ifdrop")
        XCTAssertEqual(s[6].map { Self.u64($0, 0) }, 6, "isb_filteraccept")
    }

    func testLongStringsAreCutToTheOptionLimit() {
        var w = PcapngWriter()
        w.interfaceDescription(name: "p", description: String(repeating: "x", count: 70_000), snaplen: 1)
        let b = Self.blocks(w.bytes)
        XCTAssertEqual(Self.options(b[0].body, from: 8)[3]?.count, 65532)
    }

    func write(_ w: PcapngWriter) throws -> String {
        let path = NSTemporaryDirectory() + "vsw-pcapng-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).pcapng"
        try Data(w.bytes).write(to: URL(fileURLWithPath: path))
        addTeardownBlock { unlink(path) }
        return path
    }

    func testLibpcapReadsItBack() throws {
        let path = try write(sample())
        var err = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE))
        let p = try XCTUnwrap(pcap_open_offline_with_tstamp_precision(path, UInt32(PCAP_TSTAMP_PRECISION_NANO), &err),
                              String(cString: err))
        defer { pcap_close(p) }
        XCTAssertEqual(pcap_datalink(p), DLT_EN10MB)
        var header: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<UInt8>?
        var got: [(UInt64, UInt32, UInt32)] = []
        while pcap_next_ex(p, &header, &data) == 1, let h = header {
            let ns = UInt64(h.pointee.ts.tv_sec) * 1_000_000_000 + UInt64(h.pointee.ts.tv_usec)
            got.append((ns, h.pointee.caplen, h.pointee.len))
            XCTAssertEqual(data?[60], 0xAB)
        }
        XCTAssertEqual(got.map(\.0), [0x1_2345_6789, 7], "nanosecond timestamps")
        XCTAssertEqual(got.map(\.1), [61, 61])
        XCTAssertEqual(got.map(\.2), [1500, 61])
    }

    /// tshark's view: interface names and directions (skipped where tshark is missing).
    static func tshark(_ path: String, fields: [String]) -> [String]? {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/tshark") else { return nil }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/tshark")
        p.arguments = ["-r", path, "-T", "fields"] + fields.flatMap { ["-e", $0] }
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return ["tshark failed: \(p.terminationStatus)"] }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    func testTsharkShowsInterfaceNamesAndDirections() throws {
        let path = try write(sample())
        guard let lines = Self.tshark(path, fields: ["frame.interface_name", "frame.packet_flags_direction"]) else {
            throw XCTSkip("tshark not installed")
        }
        XCTAssertEqual(lines, ["tap0.x\t0x00000002", "vm1\t0x00000001"], "2 = outbound, 1 = inbound")
    }
}
