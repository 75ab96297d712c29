import XCTest
@testable import VhostUser

final class CodecTests: XCTestCase {
    func header(_ request: UInt32, flags: UInt32 = 1, size: UInt32 = 0) -> [UInt8] {
        VhostUserHeader(request: request, flags: flags, size: size).encoded
    }

    func testHeaderRoundTrip() throws {
        let h = VhostUserHeader(request: 5, flags: 1 | VhostUserHeader.needReplyFlag, size: 264)
        XCTAssertEqual(try VhostUserHeader(validating: h.encoded), h)
        XCTAssertTrue(h.needsReply)
    }

    func testHeaderRejections() {
        XCTAssertThrowsError(try VhostUserHeader(validating: [1, 2, 3])) { XCTAssertEqual($0 as? VhostUserError, .shortMessage) }
        XCTAssertThrowsError(try VhostUserHeader(validating: header(1, flags: 2))) {
            XCTAssertEqual($0 as? VhostUserError, .badVersion(2))
        }
        XCTAssertThrowsError(try VhostUserHeader(validating: header(1, flags: 1 | VhostUserHeader.replyFlag))) {
            XCTAssertEqual($0 as? VhostUserError, .badFlags(5))
        }
        XCTAssertThrowsError(try VhostUserHeader(validating: header(1, size: 0x1001))) {
            XCTAssertEqual($0 as? VhostUserError, .payloadTooLarge(0x1001))
        }
    }

    func testMemoryTableRoundTripAndRejections() throws {
        let t = MemoryTable(regions: [.init(guestPhysicalAddress: 0, size: 1 << 20, userAddress: 0x7f00, mmapOffset: 0)])
        XCTAssertEqual(try MemoryTable(validating: t.encoded, fdCount: 1), t)
        XCTAssertThrowsError(try MemoryTable(validating: t.encoded, fdCount: 0))
        XCTAssertThrowsError(try MemoryTable(validating: Array(t.encoded.dropLast()), fdCount: 1))
        var nine = t.encoded
        nine[0] = 9
        XCTAssertThrowsError(try MemoryTable(validating: nine, fdCount: 9)) {
            XCTAssertEqual($0 as? VhostUserError, .tooManyRegions(9))
        }
        XCTAssertThrowsError(try MemoryTable(validating: [], fdCount: 0))
    }

    func testVringPayloads() throws {
        XCTAssertEqual(try VringState(validating: VringState(index: 3, num: 256).encoded, "x"), VringState(index: 3, num: 256))
        XCTAssertThrowsError(try VringState(validating: [0, 0, 0], "x"))
        XCTAssertThrowsError(try VringAddress(validating: [UInt8](repeating: 0, count: 39)))
        // kick with an fd flag mismatch: "no fd" bit set but an fd attached
        var v = [UInt8](repeating: 0, count: 8)
        v[1] = 1
        XCTAssertThrowsError(try VringFileDescriptor(validating: v, fds: [5], "kick"))
        XCTAssertEqual(try VringFileDescriptor(validating: v, fds: [], "kick").fd, nil)
        v[1] = 0
        v[0] = 7
        XCTAssertEqual(try VringFileDescriptor(validating: v, fds: [9], "kick").index, 7)
        v[2] = 1   // unknown high bits
        XCTAssertThrowsError(try VringFileDescriptor(validating: v, fds: [9], "kick"))
    }
}
