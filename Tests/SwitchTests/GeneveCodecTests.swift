import XCTest
@testable import Datapath

/// `GeneveCodec.decode`, one case per drop reason (RFC 8926, 3.4 and 3.5).
final class GeneveCodecTests: XCTestCase {
    /// Version 0, `optionWords` of options, flags, protocol type, VNI 42.
    static func header(version: UInt8 = 0, optionWords: UInt8 = 0, flags: UInt8 = 0, proto: UInt16 = 0x6558,
                       vni: UInt32 = 42, reserved: UInt8 = 0) -> [UInt8] {
        [version << 6 | optionWords, flags | (reserved & 0x3f), UInt8(proto >> 8), UInt8(proto & 0xff),
         UInt8(vni >> 16 & 0xff), UInt8(vni >> 8 & 0xff), UInt8(vni & 0xff), reserved]
    }
    /// One option: class 0x0102, `type`, `words` of data.
    static func option(type: UInt8 = 3, words: UInt8 = 1) -> [UInt8] {
        [0x01, 0x02, type, words] + [UInt8](repeating: 0xee, count: 4 * Int(words))
    }
    let ethernet = [UInt8](repeating: 0xab, count: 60)

    func decode(_ b: [UInt8], maxFrame: Int = 1518) -> TunnelDecoded {
        GeneveCodec.decode(b, vni: 42, maxFrame: maxFrame)
    }

    func testGoodDatagrams() {
        XCTAssertEqual(decode(Self.header() + ethernet), .frame(offset: 8, length: 60))
        let opts = Self.option(words: 1) + Self.option(words: 0)     // 8 + 4 bytes
        XCTAssertEqual(decode(Self.header(optionWords: 3) + opts + ethernet), .frame(offset: 20, length: 60), "options skipped")
        XCTAssertEqual(decode(Self.header(flags: 0x40) + ethernet), .frame(offset: 8, length: 60), "C without options")
        XCTAssertEqual(decode(Self.header(reserved: 0xff) + ethernet), .frame(offset: 8, length: 60), "reserved bits ignored")
    }

    func testShortHeader() {
        for n in 0..<8 { XCTAssertEqual(decode(Array(Self.header().prefix(n))), .drop(.shortHeader)) }
    }

    func testVersionMustBeZero() {
        for v: UInt8 in 1...3 { XCTAssertEqual(decode(Self.header(version: v) + ethernet), .drop(.badVersion)) }
    }

    func testOptionLengthsAreChecked() {
        XCTAssertEqual(decode(Self.header(optionWords: 63) + ethernet), .drop(.badOptions), "Opt Len past the datagram")
        XCTAssertEqual(decode(Self.header(optionWords: 1) + Self.option(words: 1) + ethernet), .drop(.badOptions),
                       "option longer than Opt Len")
        XCTAssertEqual(decode(Self.header(optionWords: 1) + [0, 0, 0, 31] + ethernet), .drop(.badOptions))
        XCTAssertEqual(decode(Self.header(optionWords: 2) + Self.option(words: 0)), .drop(.badOptions),
                       "Opt Len past the end, nothing after")
    }

    func testCriticalOptionsDrop() {
        XCTAssertEqual(decode(Self.header(optionWords: 2, flags: 0x40) + Self.option() + ethernet), .drop(.criticalOption))
        XCTAssertEqual(decode(Self.header(optionWords: 2) + Self.option(type: 0x83) + ethernet), .drop(.criticalOption),
                       "critical type bit without the C flag")
    }

    func testNotEthernet() {
        XCTAssertEqual(decode(Self.header(proto: 0x0800) + ethernet), .drop(.notEthernet))
        XCTAssertEqual(decode(Self.header(flags: 0x80) + ethernet), .drop(.notEthernet), "OAM packet")
    }

    func testWrongVniAndInnerLength() {
        XCTAssertEqual(decode(Self.header(vni: 43) + ethernet), .drop(.otherVni))
        XCTAssertEqual(decode(Self.header(vni: 42 | 1 << 23) + ethernet), .drop(.otherVni))
        XCTAssertEqual(decode(Self.header() + ethernet.prefix(13)), .drop(.innerRunt))
        XCTAssertEqual(decode(Self.header(optionWords: 1) + Self.option(words: 0) + ethernet.prefix(13)), .drop(.innerRunt))
        XCTAssertEqual(decode(Self.header() + ethernet, maxFrame: 59), .drop(.innerTooLong))
        XCTAssertEqual(GeneveCodec.decode(ethernet, length: -1, vniWord: 0, maxFrame: 1518), .drop(.innerTooLong))
    }

    func testHeaderWeSend() {
        let h = GeneveCodec.header(vni: 0x12_3456)
        XCTAssertEqual(withUnsafeBytes(of: h) { Array($0) }, [0, 0, 0x65, 0x58, 0x12, 0x34, 0x56, 0])
        XCTAssertEqual(withUnsafeBytes(of: h) { GeneveCodec.decode(Array($0) + ethernet, vni: 0x12_3456, maxFrame: 1518) },
                       .frame(offset: 8, length: 60))
    }
}
