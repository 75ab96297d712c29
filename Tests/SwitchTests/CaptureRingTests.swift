import CShims
import Virtio
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
@testable import CaptureWriter

/// The capture ring on its own: records in order, wrap-around, a full ring drops and counts.
final class CaptureRingTests: XCTestCase {
    /// A one-segment list over `bytes` (valid while `bytes` lives).
    func withList<T>(_ bytes: inout [UInt8], _ body: (SegmentList) -> T) -> T {
        var list = SegmentList(capacity: 4)
        defer { list.deallocate() }
        return bytes.withUnsafeMutableBytes { raw in
            list.storage[0] = BufferSegment(base: raw.baseAddress!, length: raw.count)
            list.count = 1
            list.totalLength = raw.count
            return body(list)
        }
    }

    func drain(_ ring: CaptureRing) -> [([UInt8], Int)] {
        var out: [([UInt8], Int)] = []
        while let r = ring.peek() {
            out.append((Array(r.bytes), r.originalLength))
            ring.consume(r)
        }
        return out
    }

    func testRecordsComeOutInOrderWithSnaplenAndOffset() {
        let buffer = CaptureBuffer(capacity: 1 << 17)
        let ring = buffer.ring
        var a: [UInt8] = Array(0..<100)
        XCTAssertTrue(withList(&a) { ring.record($0, offset: 12, length: 88, snaplen: 1000) })
        XCTAssertTrue(withList(&a) { ring.record($0, offset: 0, length: 100, snaplen: 10) })
        let got = drain(ring)
        XCTAssertEqual(got.count, 2)
        XCTAssertEqual(got[0].0, Array(a[12...]), "the virtio-net header (offset) is skipped")
        XCTAssertEqual(got[0].1, 88)
        XCTAssertEqual(got[1].0, Array(a[..<10]), "cut to snaplen")
        XCTAssertEqual(got[1].1, 100, "original length kept")
        XCTAssertTrue(ring.isEmpty)
        XCTAssertEqual(ring.recorded, 2)
    }

    /// The fast lane's records (`recordUnpublished(bytes:)`): every length comes out byte
    /// for byte, and no copy touches a byte of the next record.
    func testSingleBufferRecordsOfEveryShortLength() {
        let buffer = CaptureBuffer(capacity: 1 << 17)
        let ring = buffer.ring
        let source: [UInt8] = (0..<200).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        for n in 0...100 {
            source.withUnsafeBytes { raw in
                XCTAssertTrue(ring.recordUnpublished(raw.baseAddress! + 1, length: n, snaplen: 1000,
                                                     origin: CaptureRing.origin(port: 3, outbound: false), timestamp: 42))
            }
        }
        ring.publish()
        let got = drain(ring)
        XCTAssertEqual(got.count, 101)
        for (n, record) in got.enumerated() {
            XCTAssertEqual(record.0, Array(source[1..<(1 + n)]), "length \(n)")
            XCTAssertEqual(record.1, n)
        }
    }

    /// `FrameCopy.copyBytes` (the record copy): every length from 0 to 100 bytes lands
    /// exactly, and nothing around the destination is touched (the inline moves overlap
    /// inside the range, never past it).
    func testShortCopyWritesExactlyTheRange() {
        let source: [UInt8] = (0..<128).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 1) }
        for n in 0...100 {
            var dst = [UInt8](repeating: 0xEE, count: 160)
            source.withUnsafeBytes { s in
                dst.withUnsafeMutableBytes { d in FrameCopy.copyBytes(to: d.baseAddress! + 16, from: s.baseAddress! + 3, count: n) }
            }
            XCTAssertEqual(Array(dst[16..<(16 + n)]), Array(source[3..<(3 + n)]), "length \(n)")
            XCTAssertTrue(dst[..<16].allSatisfy { $0 == 0xEE } && dst[(16 + n)...].allSatisfy { $0 == 0xEE }, "length \(n): outside untouched")
        }
    }

    func testGatherAcrossSegments() {
        let buffer = CaptureBuffer(capacity: 1 << 17)
        var a: [UInt8] = Array(0..<10), b: [UInt8] = Array(10..<30)
        var list = SegmentList(capacity: 4)
        defer { list.deallocate() }
        a.withUnsafeMutableBytes { ra in
            b.withUnsafeMutableBytes { rb in
                list.storage[0] = BufferSegment(base: ra.baseAddress!, length: 10)
                list.storage[1] = BufferSegment(base: rb.baseAddress!, length: 20)
                list.count = 2
                list.totalLength = 30
                XCTAssertTrue(buffer.ring.record(list, offset: 4, length: 26, snaplen: 100))
            }
        }
        XCTAssertEqual(drain(buffer.ring).first?.0, Array(4..<30))
    }

    func testWrapAroundKeepsEveryRecordIntact() {
        let buffer = CaptureBuffer(capacity: 1 << 17)
        let ring = buffer.ring
        // 1000 frames of varying sizes through a 128 KiB ring, consumed as we go: the ring
        // wraps many times, with records running into the slack at odd places.
        var next = 0
        for i in 0..<1000 {
            var frame = [UInt8](repeating: UInt8(i & 0xff), count: 60 + (i * 37) % 1500)
            let n = frame.count
            XCTAssertTrue(withList(&frame) { ring.record($0, offset: 0, length: n, snaplen: 65536) }, "frame \(i)")
            if i % 3 == 2 {
                for (bytes, len) in drain(ring) {
                    XCTAssertEqual(len, 60 + (next * 37) % 1500, "frame \(next) in order")
                    XCTAssertEqual(bytes.count, len)
                    XCTAssertTrue(bytes.allSatisfy { $0 == UInt8(next & 0xff) }, "frame \(next) intact")
                    next += 1
                }
            }
        }
        _ = drain(ring)
        XCTAssertEqual(ring.dropped, 0)
        XCTAssertEqual(ring.recorded, 1000)
        XCTAssertGreaterThan(ring.control[CaptureRing.headWord], UInt64(ring.capacity * 4), "wrapped several times")
    }

    func testFullRingDropsAndCountsThenRecovers() {
        let buffer = CaptureBuffer(capacity: 1 << 17)
        let ring = buffer.ring
        var frame = [UInt8](repeating: 7, count: 1500)
        var accepted = 0
        for _ in 0..<200 where withList(&frame, { ring.record($0, offset: 0, length: 1500, snaplen: 65536) }) {
            accepted += 1
        }
        XCTAssertEqual(accepted, (1 << 17) / (16 + 1504), "as many as fit")
        XCTAssertEqual(ring.dropped, UInt64(200 - accepted))
        XCTAssertEqual(drain(ring).count, accepted, "what was accepted is intact")
        XCTAssertTrue(withList(&frame) { ring.record($0, offset: 0, length: 1500, snaplen: 65536) }, "room again")
    }

    func testWriterWakeUpOnlyWhenSleeping() {
        let buffer = CaptureBuffer(capacity: 1 << 17)
        let ring = buffer.ring
        var frame = [UInt8](repeating: 1, count: 64)
        XCTAssertTrue(withList(&frame) { ring.record($0, offset: 0, length: 64, snaplen: 64) })
        XCTAssertEqual(vs_eventfd_drain(ring.wakeFd), -1, "no signal while the writer is awake")
        ring.setSleeping(true)
        XCTAssertTrue(withList(&frame) { ring.record($0, offset: 0, length: 64, snaplen: 64) })
        XCTAssertEqual(vs_eventfd_drain(ring.wakeFd), 0, "a sleeping writer is signalled")
        XCTAssertTrue(withList(&frame) { ring.record($0, offset: 0, length: 64, snaplen: 64) })
        XCTAssertEqual(vs_eventfd_drain(ring.wakeFd), -1, "once")
    }
}
