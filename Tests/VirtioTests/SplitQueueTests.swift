import CShims
import GuestSimulator
import VhostUser
import XCTest
@testable import Virtio

/// Ring walking over simulated guest memory with good and hostile descriptors
/// (virtio 1.2, 2.7.5 and 2.7.5.3).
final class SplitQueueTests: XCTestCase {
    var guest: SimulatedGuest!
    var memory: GuestMemory!
    var segments = SegmentList(capacity: 64)

    override func setUpWithError() throws {
        guest = SimulatedGuest(queueSize: 16)
        memory = try guest.makeMemory()
        segments.removeAll()
    }

    override func tearDown() { segments.deallocate() }

    func queue(_ q: Int = 1, eventIndex: Bool = false) -> SplitQueue {
        let c = guest.vringConfiguration(queue: q, memory: memory)
        return SplitQueue(layout: c.layout, memory: memory.view, lastAvail: 0, eventIndex: eventIndex, indirect: true)
    }

    var buffer: UInt64 { guest.bufferAddress(queue: 1, descriptor: 0) }

    func testWalksAChainAcrossDescriptors() {
        guest.writeDescriptor(queue: 1, 0, addr: buffer, len: 12, flags: SplitQueue.descFlagNext, next: 5)
        guest.writeDescriptor(queue: 1, 5, addr: buffer + 100, len: 60, flags: 0, next: 0)
        guest.makeAvailable(queue: 1, head: 0)
        var q = queue()
        XCTAssertEqual(q.availableCount(), 1)
        XCTAssertNil(q.walkChain(head: q.head(at: 0)!, writable: false, into: &segments))
        XCTAssertEqual(segments.count, 2)
        XCTAssertEqual(segments.totalLength, 72)
        XCTAssertEqual(segments[1].base, memory.view.translate(buffer + 100, 1)?.0)
    }

    func testIndirectTable() {
        let table = guest.alloc(32, align: 16)
        let t = guest.host(table)
        t.storeBytes(of: buffer, as: UInt64.self)
        t.storeBytes(of: UInt32(12), toByteOffset: 8, as: UInt32.self)
        t.storeBytes(of: SplitQueue.descFlagNext, toByteOffset: 12, as: UInt16.self)
        t.storeBytes(of: UInt16(1), toByteOffset: 14, as: UInt16.self)
        t.storeBytes(of: buffer + 64, toByteOffset: 16, as: UInt64.self)
        t.storeBytes(of: UInt32(100), toByteOffset: 24, as: UInt32.self)
        t.storeBytes(of: UInt16(0), toByteOffset: 28, as: UInt16.self)
        guest.writeDescriptor(queue: 1, 3, addr: table, len: 32, flags: SplitQueue.descFlagIndirect, next: 0)
        guest.makeAvailable(queue: 1, head: 3)
        let q = queue()
        XCTAssertNil(q.walkChain(head: q.head(at: 0)!, writable: false, into: &segments))
        XCTAssertEqual(segments.totalLength, 112)
    }

    func testLoopIsDetected() {
        guest.writeDescriptor(queue: 1, 0, addr: buffer, len: 10, flags: SplitQueue.descFlagNext, next: 1)
        guest.writeDescriptor(queue: 1, 1, addr: buffer, len: 10, flags: SplitQueue.descFlagNext, next: 0)
        guest.makeAvailable(queue: 1, head: 0)
        let q = queue()
        XCTAssertEqual(q.walkChain(head: 0, writable: false, into: &segments), .chainTooLong)
    }

    func testNextOutOfRange() {
        guest.writeDescriptor(queue: 1, 0, addr: buffer, len: 10, flags: SplitQueue.descFlagNext, next: 16)
        XCTAssertEqual(queue().walkChain(head: 0, writable: false, into: &segments), .nextOutOfRange)
    }

    func testHeadOutOfRange() {
        guest.makeAvailable(queue: 1, head: 999)
        XCTAssertNil(queue().head(at: 0))
    }

    func testAvailIndexJumpMarksRingBroken() {
        let avail = guest.host(guest.rings[1].avail)
        vs_store_release_u16(avail + 2, 17)   // more than the 16-entry ring can hold
        var q = queue()
        XCTAssertNil(q.availableCount())
        XCTAssertNil(q.availableCount(), "still corrupt on the next look")
    }

    func testAddressOutsideMemory() {
        guest.writeDescriptor(queue: 1, 0, addr: 0x10, len: 10, flags: 0, next: 0)
        XCTAssertEqual(queue().walkChain(head: 0, writable: false, into: &segments), .badAddress)
    }

    func testBufferRunningPastTheEndOfMemory() {
        let end = SimulatedGuest.guestBase + UInt64(guest.size)
        guest.writeDescriptor(queue: 1, 0, addr: end - 8, len: 16, flags: 0, next: 0)
        XCTAssertEqual(queue().walkChain(head: 0, writable: false, into: &segments), .badAddress)
    }

    func testAddressOverflowDoesNotTrap() {
        guest.writeDescriptor(queue: 1, 0, addr: UInt64.max - 4, len: UInt32.max, flags: 0, next: 0)
        XCTAssertEqual(queue().walkChain(head: 0, writable: false, into: &segments), .badAddress)
    }

    func testNestedIndirectIsRejected() {
        let table = guest.alloc(16, align: 16)
        let t = guest.host(table)
        t.storeBytes(of: table, as: UInt64.self)
        t.storeBytes(of: UInt32(16), toByteOffset: 8, as: UInt32.self)
        t.storeBytes(of: SplitQueue.descFlagIndirect, toByteOffset: 12, as: UInt16.self)
        guest.writeDescriptor(queue: 1, 0, addr: table, len: 16, flags: SplitQueue.descFlagIndirect, next: 0)
        XCTAssertEqual(queue().walkChain(head: 0, writable: false, into: &segments), .nestedIndirect)
    }

    func testIndirectWithNextAndBadLengthsAreRejected() {
        let table = guest.alloc(16, align: 16)
        guest.writeDescriptor(queue: 1, 0, addr: table, len: 16,
                              flags: SplitQueue.descFlagIndirect | SplitQueue.descFlagNext, next: 1)
        XCTAssertEqual(queue().walkChain(head: 0, writable: false, into: &segments), .indirectWithNext)
        for len: UInt32 in [0, 15, 1 << 20] {
            segments.removeAll()
            guest.writeDescriptor(queue: 1, 0, addr: table, len: len, flags: SplitQueue.descFlagIndirect, next: 0)
            XCTAssertEqual(queue().walkChain(head: 0, writable: false, into: &segments), .badIndirectTable, "len \(len)")
        }
    }

    func testDirectionIsEnforced() {
        guest.writeDescriptor(queue: 1, 0, addr: buffer, len: 10, flags: SplitQueue.descFlagWrite, next: 0)
        XCTAssertEqual(queue().walkChain(head: 0, writable: false, into: &segments), .wrongDirection)
        segments.removeAll()
        guest.writeDescriptor(queue: 1, 0, addr: buffer, len: 10, flags: 0, next: 0)
        XCTAssertEqual(queue().walkChain(head: 0, writable: true, into: &segments), .wrongDirection)
    }

    func testLengthLimit() {
        guest.writeDescriptor(queue: 1, 0, addr: buffer, len: 2000, flags: 0, next: 0)
        XCTAssertEqual(queue().walkChain(head: 0, writable: false, into: &segments, limit: 1000), .frameTooLong)
    }

    func testPublishHonoursNoInterrupt() {
        var q = queue(0)
        q.pushUsed(id: 0, length: 10)
        XCTAssertTrue(q.publishUsed())
        guest.host(guest.rings[0].avail).storeBytes(of: SplitQueue.availFlagNoInterrupt, as: UInt16.self)
        q.pushUsed(id: 1, length: 10)
        XCTAssertFalse(q.publishUsed())
        XCTAssertEqual(guest.takeUsed(queue: 0).map(\.id), [0, 1])
    }

    func testPublishHonoursUsedEvent() {
        var q = queue(0, eventIndex: true)
        let usedEvent = guest.host(guest.rings[0].avail) + 4 + 2 * 16
        usedEvent.storeBytes(of: UInt16(2), as: UInt16.self)   // "interrupt me after entry 2"
        q.pushUsed(id: 0, length: 1)
        XCTAssertFalse(q.publishUsed())
        q.pushUsed(id: 1, length: 1)
        q.pushUsed(id: 2, length: 1)
        XCTAssertTrue(q.publishUsed())
    }

    func testKickSuppression() {
        let q = queue()
        q.disableKicks()
        XCTAssertEqual(guest.usedFlags(queue: 1), SplitQueue.usedFlagNoNotify)
        q.enableKicks()
        XCTAssertEqual(guest.usedFlags(queue: 1), 0)
    }
}

final class GuestMemoryTests: XCTestCase {
    func memfd(_ size: Int) -> Int32 {
        let fd = vs_memfd_create("t")
        XCTAssertEqual(ftruncate(fd, off_t(size)), 0)
        return fd
    }

    func testShortFileIsRefusedInsteadOfSIGBUS() {
        let r = MemoryRegionDescription(guestPhysicalAddress: 0, size: 1 << 20, userAddress: 0, mmapOffset: 4096)
        XCTAssertThrowsError(try GuestMemory(regions: [r], fds: [memfd(1 << 20)])) { e in
            guard case .fileTooSmall = e as? GuestMemoryError else { return XCTFail("\(e)") }
        }
    }

    func testOverflowingAndOverlappingRegionsAreRefused() {
        let big = MemoryRegionDescription(guestPhysicalAddress: UInt64.max - 10, size: 4096, userAddress: 0, mmapOffset: 0)
        XCTAssertThrowsError(try GuestMemory(regions: [big], fds: [memfd(4096)]))
        let a = MemoryRegionDescription(guestPhysicalAddress: 0, size: 8192, userAddress: 0, mmapOffset: 0)
        let b = MemoryRegionDescription(guestPhysicalAddress: 4096, size: 8192, userAddress: 1 << 30, mmapOffset: 0)
        XCTAssertThrowsError(try GuestMemory(regions: [a, b], fds: [memfd(8192), memfd(8192)]))
        let empty = MemoryRegionDescription(guestPhysicalAddress: 0, size: 0, userAddress: 0, mmapOffset: 0)
        XCTAssertThrowsError(try GuestMemory(regions: [empty], fds: [memfd(4096)]))
    }

    func testRangeSplitsAtRegionEdges() throws {
        // Two regions back to back in guest-physical space, from different files.
        let a = MemoryRegionDescription(guestPhysicalAddress: 0x1000, size: 0x1000, userAddress: 0x10000, mmapOffset: 0)
        let b = MemoryRegionDescription(guestPhysicalAddress: 0x2000, size: 0x1000, userAddress: 0x20000, mmapOffset: 0)
        let m = try GuestMemory(regions: [a, b], fds: [memfd(0x1000), memfd(0x1000)])
        let (_, first) = try XCTUnwrap(m.view.translate(0x1f00, 0x200))
        XCTAssertEqual(first, 0x100, "only the part inside the first region")
        XCTAssertNotNil(m.view.translate(0x2000, 0x100))
        XCTAssertNil(m.view.translateContiguous(0x1f00, 0x200), "contiguous ranges may not cross")
        XCTAssertNil(m.view.translate(0x3000, 1))
        XCTAssertNotNil(m.view.translateUser(0x20000, 0x1000))
        XCTAssertNil(m.view.translateUser(0x20001, 0x1000))
    }
}
