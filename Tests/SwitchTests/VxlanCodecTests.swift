import XCTest
@testable import Datapath

/// `VxlanCodec.decode`, one case per drop reason (RFC 7348, 5). Crashes the fuzzer
/// (Tests/Fuzz FuzzVxlan) finds become named cases here.
final class VxlanCodecTests: XCTestCase {
    static func header(vni: UInt32, flags: UInt8 = 0x08, reserved: UInt8 = 0) -> [UInt8] {
        [flags, reserved, reserved, reserved, UInt8(vni >> 16 & 0xff), UInt8(vni >> 8 & 0xff), UInt8(vni & 0xff), reserved]
    }
    let ethernet = [UInt8](repeating: 0xab, count: 60)

    func decode(_ b: [UInt8], maxFrame: Int = 1518) -> TunnelDecoded {
        VxlanCodec.decode(b, vni: 42, maxFrame: maxFrame)
    }

    func testGoodDatagram() {
        XCTAssertEqual(decode(Self.header(vni: 42) + ethernet), .frame(offset: 8, length: 60))
        XCTAssertEqual(decode(Self.header(vni: 42) + ethernet.prefix(14)), .frame(offset: 8, length: 14), "exactly an Ethernet header")
        XCTAssertEqual(decode(Self.header(vni: 42) + [UInt8](repeating: 0, count: 1518)), .frame(offset: 8, length: 1518), "exactly maxFrame")
    }

    func testTooShortForTheHeader() {
        for n in 0..<8 { XCTAssertEqual(decode(Array(Self.header(vni: 42).prefix(n))), .drop(.shortHeader), "\(n) bytes") }
    }

    func testIFlagMissing() {
        XCTAssertEqual(decode(Self.header(vni: 42, flags: 0) + ethernet), .drop(.noVniFlag))
        XCTAssertEqual(decode(Self.header(vni: 42, flags: 0xf7) + ethernet), .drop(.noVniFlag), "every other flag set")
    }

    /// RFC 7348, 5: reserved bits "MUST be set to zero on transmission and ignored on receipt".
    func testReservedBitsAreIgnored() {
        XCTAssertEqual(decode(Self.header(vni: 42, flags: 0xff, reserved: 0xff) + ethernet), .frame(offset: 8, length: 60))
    }

    func testWrongVni() {
        XCTAssertEqual(decode(Self.header(vni: 43) + ethernet), .drop(.otherVni))
        XCTAssertEqual(decode(Self.header(vni: 42 | 1 << 23) + ethernet), .drop(.otherVni))
        XCTAssertEqual(decode(Self.header(vni: 0) + ethernet), .drop(.otherVni))
    }

    func testInnerFrameTooShortForEthernet() {
        XCTAssertEqual(decode(Self.header(vni: 42)), .drop(.innerRunt), "no inner frame")
        XCTAssertEqual(decode(Self.header(vni: 42) + ethernet.prefix(13)), .drop(.innerRunt))
    }

    func testInnerFrameTooLongForTheMtu() {
        XCTAssertEqual(decode(Self.header(vni: 42) + [UInt8](repeating: 0, count: 1519)), .drop(.innerTooLong))
        XCTAssertEqual(decode(Self.header(vni: 42) + ethernet, maxFrame: 59), .drop(.innerTooLong))
        // A datagram cut by recvmmsg (MSG_TRUNC) arrives as length -1.
        XCTAssertEqual(VxlanCodec.decode(ethernet, length: -1, vniWord: 0, maxFrame: 1518), .drop(.innerTooLong))
    }

    func testEveryReasonHasItsOwnCounter() {
        XCTAssertEqual(Set(TunnelDrop.allCases.map(\.counter)).count, TunnelDrop.allCases.count)
        for d in TunnelDrop.allCases where d != .innerRunt { XCTAssertTrue(d.counter.tunnelOnly, "\(d)") }
    }
}
