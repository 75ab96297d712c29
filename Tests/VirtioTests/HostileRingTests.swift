import CShims
import GuestSimulator
import VhostUser
import XCTest
@testable import Virtio

/// The chain walker against the edges a hostile driver can push on, beyond the basic
/// cases in SplitQueueTests: limits exactly at and one past the bound (virtio 1.2,
/// 2.7.5.2 and 2.7.5.3.1), lengths near 2^32, indirect tables that are too long, not
/// negotiated or split across memory regions.
final class HostileRingTests: XCTestCase {
    var guest: SimulatedGuest!
    var memory: GuestMemory!
    var segments = SegmentList(capacity: 64)

    override func setUpWithError() throws {
        guest = SimulatedGuest(queueSize: 16)
        memory = try guest.makeMemory()
    }

    override func tearDown() { segments.deallocate() }

    func queue(indirect: Bool = true) -> SplitQueue {
        let c = guest.vringConfiguration(queue: 1, memory: memory)
        return SplitQueue(layout: c.layout, memory: memory.view, lastAvail: 0, eventIndex: false, indirect: indirect)
    }

    var buffer: UInt64 { guest.bufferAddress(queue: 1, descriptor: 0) }

    func walk(_ head: UInt16 = 0, writable: Bool = false, limit: Int = Int(UInt32.max),
              indirect: Bool = true) -> ChainError? {
        segments.removeAll()
        return queue(indirect: indirect).walkChain(head: head, writable: writable, into: &segments, limit: limit)
    }

    func testChainAsLongAsTheQueueIsAcceptedOneMoreIsALoop() {
        for i in 0..<16 {
            guest.writeDescriptor(queue: 1, UInt16(i), addr: buffer, len: 1,
                                  flags: i < 15 ? SplitQueue.descFlagNext : 0, next: UInt16(i + 1))
        }
        XCTAssertNil(walk())
        XCTAssertEqual(segments.totalLength, 16)
        guest.writeDescriptor(queue: 1, 15, addr: buffer, len: 1, flags: SplitQueue.descFlagNext, next: 0)
        XCTAssertEqual(walk(), .chainTooLong)
    }

    func testLengthsNear4GiBNeverTrap() {
        guest.writeDescriptor(queue: 1, 0, addr: buffer, len: UInt32.max, flags: 0, next: 0)
        XCTAssertEqual(walk(), .badAddress, "runs off the end of guest memory")
        XCTAssertEqual(walk(limit: 65547), .frameTooLong)
        // Two halves that only overflow a 32-bit sum.
        guest.writeDescriptor(queue: 1, 0, addr: buffer, len: 0x8000_0000, flags: SplitQueue.descFlagNext, next: 1)
        guest.writeDescriptor(queue: 1, 1, addr: buffer, len: 0x8000_0000, flags: 0, next: 0)
        XCTAssertEqual(walk(limit: 65547), .frameTooLong)
        XCTAssertEqual(walk(), .badAddress)
    }

    func testIndirectTableNotNegotiated() {
        let table = guest.alloc(16, align: 16)
        guest.writeDescriptor(queue: 1, 0, addr: table, len: 16, flags: SplitQueue.descFlagIndirect, next: 0)
        XCTAssertEqual(walk(indirect: false), .badIndirectTable)
    }

    func testIndirectTableLongerThanTheLimit() {
        let n = SplitQueue.maxIndirectDescriptors
        let table = guest.alloc(UInt64(16 * (n + 1)), align: 16)
        let t = guest.host(table)
        for i in 0...n {
            (t + 16 * i).storeBytes(of: buffer, as: UInt64.self)
            (t + 16 * i).storeBytes(of: UInt32(1), toByteOffset: 8, as: UInt32.self)
            (t + 16 * i).storeBytes(of: UInt16(0), toByteOffset: 12, as: UInt16.self)
        }
        guest.writeDescriptor(queue: 1, 0, addr: table, len: UInt32(16 * n), flags: SplitQueue.descFlagIndirect, next: 0)
        XCTAssertNil(walk(), "the largest table allowed")
        guest.writeDescriptor(queue: 1, 0, addr: table, len: UInt32(16 * (n + 1)), flags: SplitQueue.descFlagIndirect, next: 0)
        XCTAssertEqual(walk(), .badIndirectTable)
    }

    func testLoopInsideAnIndirectTable() {
        let table = guest.alloc(32, align: 16)
        let t = guest.host(table)
        for i in 0..<2 {
            (t + 16 * i).storeBytes(of: buffer, as: UInt64.self)
            (t + 16 * i).storeBytes(of: UInt32(8), toByteOffset: 8, as: UInt32.self)
            (t + 16 * i).storeBytes(of: SplitQueue.descFlagNext, toByteOffset: 12, as: UInt16.self)
            (t + 16 * i).storeBytes(of: UInt16(1 - i), toByteOffset: 14, as: UInt16.self)
        }
        guest.writeDescriptor(queue: 1, 0, addr: table, len: 32, flags: SplitQueue.descFlagIndirect, next: 0)
        XCTAssertEqual(walk(), .chainTooLong)
        (t + 16).storeBytes(of: UInt16(2), toByteOffset: 14, as: UInt16.self)
        XCTAssertEqual(walk(), .nextOutOfRange, "next beyond the indirect table")
    }

    func testIndirectTableSplitAcrossRegionsIsRefused() throws {
        // Two 4 KiB regions back to back: a table straddling the edge is not contiguous in
        // host memory, so it cannot be read in place.
        let fds = (0..<2).map { _ -> Int32 in
            let fd = vs_memfd_create("r")
            ftruncate(fd, 4096)
            return fd
        }
        let a = MemoryRegionDescription(guestPhysicalAddress: 0x10000, size: 4096, userAddress: 0, mmapOffset: 0)
        let b = MemoryRegionDescription(guestPhysicalAddress: 0x11000, size: 4096, userAddress: 0x1000, mmapOffset: 0)
        let split = try GuestMemory(regions: [a, b], fds: fds)
        let c = guest.vringConfiguration(queue: 1, memory: memory)
        let q = SplitQueue(layout: c.layout, memory: split.view, lastAvail: 0, eventIndex: false, indirect: true)
        guest.writeDescriptor(queue: 1, 0, addr: 0x10ff0, len: 32, flags: SplitQueue.descFlagIndirect, next: 0)
        XCTAssertEqual(q.walkChain(head: 0, writable: false, into: &segments), .badIndirectTable)
        // A plain buffer across the same edge is fine: it is split into two segments.
        segments.removeAll()
        guest.writeDescriptor(queue: 1, 0, addr: 0x10ff0, len: 32, flags: 0, next: 0)
        XCTAssertNil(q.walkChain(head: 0, writable: false, into: &segments))
        XCTAssertEqual(segments.count, 2)
    }

    func testMoreSegmentsThanTheScratchListHolds() {
        // A 16-descriptor chain into a 4-entry list.
        var small = SegmentList(capacity: 4)
        defer { small.deallocate() }
        for i in 0..<16 {
            guest.writeDescriptor(queue: 1, UInt16(i), addr: buffer, len: 1,
                                  flags: i < 15 ? SplitQueue.descFlagNext : 0, next: UInt16(i + 1))
        }
        XCTAssertEqual(queue().walkChain(head: 0, writable: false, into: &small), .tooManySegments)
    }

    func testAvailIndexExactlyOneRingAheadIsValid() {
        var q = queue()
        let avail = guest.host(guest.rings[1].avail)
        vs_store_release_u16(avail + 2, 16)
        XCTAssertEqual(q.availableCount(), 16)
        vs_store_release_u16(avail + 2, 17)
        XCTAssertNil(q.availableCount())
        XCTAssertNil(q.availableCount(), "still corrupt on the next look")
    }

    func testAvailIndexWrapsAround() {
        // lastAvail near 0xffff, avail.idx past the wrap: still a count of 4, not 65k.
        let c = guest.vringConfiguration(queue: 1, memory: memory)
        var q = SplitQueue(layout: c.layout, memory: memory.view, lastAvail: 0xfffe, eventIndex: false, indirect: true)
        vs_store_release_u16(guest.host(guest.rings[1].avail) + 2, 2)
        XCTAssertEqual(q.availableCount(), 4)
    }

    func testEveryOutOfRangeHeadIsRefused() {
        let q = queue()
        for head: UInt16 in [16, 17, 0x8000, 0xffff] {
            XCTAssertEqual(q.walkChain(head: head, writable: false, into: &segments), .headOutOfRange)
        }
        guest.makeAvailable(queue: 1, head: 0xffff)
        XCTAssertNil(q.head(at: 0))
    }
}
