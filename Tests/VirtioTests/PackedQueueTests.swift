import CShims
import GuestSimulator
import VhostUser
import XCTest
@testable import Virtio

/// The packed ring against a simulated driver (virtio 1.2, 2.8): wrap counters, chains,
/// indirect tables, hostile descriptors and event suppression.
final class PackedQueueTests: XCTestCase {
    typealias E = SimulatedGuest.PackedElement
    var guest: SimulatedGuest!
    var memory: GuestMemory!
    var segments = SegmentList(capacity: 64)
    var queues: [PackedQueue] = []

    func setUp(queueSize: UInt16) throws {
        guest = SimulatedGuest(queueSize: queueSize, features: SimulatedGuest.defaultFeatures | VirtioFeature.ringPacked)
        memory = try guest.makeMemory()
        segments.removeAll()
    }

    override func setUpWithError() throws { try setUp(queueSize: 16) }

    override func tearDown() {
        segments.deallocate()
        for q in queues { q.deallocate() }
    }

    func queue(_ q: Int = 1, eventIndex: Bool = false, indirect: Bool = true, base: UInt16 = 0x8000) -> PackedQueue {
        let c = guest.vringConfiguration(queue: q, memory: memory)
        let p = PackedQueue(layout: c.packedLayout!, memory: memory.view, base: base,
                            eventIndex: eventIndex, indirect: indirect)
        queues.append(p)
        return p
    }

    func buffer(_ i: Int = 0) -> UInt64 { guest.bufferAddress(queue: 1, descriptor: i) }

    func testSingleBufferRoundTrip() {
        let id = guest.makeAvailablePacked(queue: 1, [E(addr: buffer(), len: 60)])
        var q = queue()
        XCTAssertEqual(q.availableCount(), 1)
        let head = q.head(at: 0)!
        XCTAssertNil(q.walkChain(head: head, writable: false, into: &segments))
        XCTAssertEqual(segments.totalLength, 60)
        XCTAssertEqual(segments[0].base, memory.view.translate(buffer(), 1)?.0)
        q.pushUsed(id: head, length: 0)
        q.consume(1)
        XCTAssertEqual(q.availableCount(), 0)
        XCTAssertTrue(guest.takeUsed(queue: 1).isEmpty, "not visible before publishUsed")
        XCTAssertTrue(q.publishUsed(), "driver events enabled by default (flags 0)")
        XCTAssertEqual(guest.takeUsed(queue: 1).map(\.id), [UInt32(id)])
    }

    func testChainTakesSeveralSlotsAndIdComesFromItsLastDescriptor() {
        guest.makeAvailablePacked(queue: 1, [E(addr: buffer(), len: 12), E(addr: buffer() + 100, len: 60),
                                             E(addr: buffer() + 300, len: 8)], id: 7)
        guest.makeAvailablePacked(queue: 1, [E(addr: buffer(1), len: 50)], id: 9)
        var q = queue()
        XCTAssertEqual(q.availableCount(), 2)
        XCTAssertEqual(q.head(at: 0), 0x8000)
        XCTAssertEqual(q.head(at: 1), 0x8003, "second chain starts after the three slots of the first")
        XCTAssertNil(q.head(at: 2))
        XCTAssertNil(q.walkChain(head: q.head(at: 0)!, writable: false, into: &segments))
        XCTAssertEqual(segments.count, 3)
        XCTAssertEqual(segments.totalLength, 80)
        q.pushUsed(id: q.head(at: 0)!, length: 0)
        q.pushUsed(id: q.head(at: 1)!, length: 0)
        q.consume(2)
        XCTAssertEqual(q.nextAvail, 0x8004)
        XCTAssertEqual(q.usedNext, 0x8004, "used side skips the same slots")
        _ = q.publishUsed()
        XCTAssertEqual(guest.takeUsed(queue: 1).map(\.id), [7, 9])
    }

    /// Many laps around a ring whose size is not a power of two, with chains of 1-3
    /// descriptors: both wrap counters flip at the right place, ids come back in order.
    func testWrapAroundManyLaps() throws {
        try setUp(queueSize: 10)
        var q = queue()
        var expected: [UInt32] = []
        var seen: [UInt32] = []
        for round in 0..<200 {
            let len = round % 3 + 1
            let elements = (0..<len).map { E(addr: buffer($0), len: UInt32(10 * ($0 + 1))) }
            expected.append(UInt32(guest.makeAvailablePacked(queue: 1, elements, id: UInt16(round % 10))))
            if round % 2 == 1 {
                let n = try XCTUnwrap(q.availableCount())
                XCTAssertEqual(n, 2, "round \(round)")
                for k in 0..<n {
                    segments.removeAll()
                    XCTAssertNil(q.walkChain(head: q.head(at: k)!, writable: false, into: &segments))
                    XCTAssertEqual(segments.count, [1, 2, 3][(round - 1 + k) % 3])
                    q.pushUsed(id: q.head(at: k)!, length: 0)
                }
                q.consume(n)
                _ = q.publishUsed()
                seen += guest.takeUsed(queue: 1).map(\.id)
            }
        }
        XCTAssertEqual(seen, expected)
        XCTAssertEqual(q.nextAvail, guest.packedAvail[1])
        XCTAssertEqual(q.usedNext, guest.packedUsed[1])
        XCTAssertEqual(q.nextAvail & 0x7fff, 399 % 10, "200 chains of 1, 2, 3, 1, ... slots")
    }

    func testResumesFromBaseWithWrapCounter() {
        // The driver is on its second lap (wrap counter 0) at position 5.
        guest.packedAvail[1] = 5
        guest.packedUsed[1] = 5
        guest.makeAvailablePacked(queue: 1, [E(addr: buffer(), len: 10)])
        var fresh = queue()   // base 0x8000: wrong lap, nothing to see
        XCTAssertEqual(fresh.availableCount(), 0)
        var q = queue(base: 5)
        XCTAssertEqual(q.availableCount(), 1)
        q.pushUsed(id: q.head(at: 0)!, length: 0)
        q.consume(1)
        _ = q.publishUsed()
        XCTAssertEqual(guest.takeUsed(queue: 1).count, 1)
        var bad = queue(base: 0x8000 | 16)
        XCTAssertNil(bad.availableCount(), "a base beyond the ring is refused")
    }

    func testIndirectTable() {
        let table = guest.alloc(32, align: 16)
        let t = guest.host(table)
        t.storeBytes(of: buffer(), as: UInt64.self)
        t.storeBytes(of: UInt32(12), toByteOffset: 8, as: UInt32.self)
        // NEXT/AVAIL junk in an indirect entry is reserved and ignored (2.8.8).
        t.storeBytes(of: PackedQueue.descFlagNext | PackedQueue.descFlagAvail, toByteOffset: 14, as: UInt16.self)
        t.storeBytes(of: buffer() + 64, toByteOffset: 16, as: UInt64.self)
        t.storeBytes(of: UInt32(100), toByteOffset: 24, as: UInt32.self)
        guest.makeAvailablePacked(queue: 1, [E(addr: table, len: 32, flags: PackedQueue.descFlagIndirect)])
        var q = queue()
        XCTAssertEqual(q.availableCount(), 1)
        XCTAssertNil(q.walkChain(head: q.head(at: 0)!, writable: false, into: &segments))
        XCTAssertEqual(segments.totalLength, 112)
        segments.removeAll()
        XCTAssertEqual(q.walkChain(head: q.head(at: 0)!, writable: true, into: &segments), .wrongDirection)
        segments.removeAll()
        var plain = queue(indirect: false)
        XCTAssertEqual(plain.availableCount(), 1)
        XCTAssertEqual(plain.walkChain(head: plain.head(at: 0)!, writable: false, into: &segments), .badIndirectTable)
    }

    func testBadIndirectTables() {
        let table = guest.alloc(16, align: 16)
        for (addr, len) in [(table, UInt32(0)), (table, 15), (table, 1 << 20), (0xdead_0000_0000, 16)] {
            guest.makeAvailablePacked(queue: 1, [E(addr: addr, len: len, flags: PackedQueue.descFlagIndirect)])
        }
        // An indirect descriptor inside a NEXT list is refused too.
        guest.makeAvailablePacked(queue: 1, [E(addr: table, len: 16, flags: PackedQueue.descFlagIndirect),
                                             E(addr: buffer(), len: 10)])
        var q = queue()
        XCTAssertEqual(q.availableCount(), 5)
        var errors: [ChainError?] = []
        for k in 0..<5 {
            segments.removeAll()
            errors.append(q.walkChain(head: q.head(at: k)!, writable: false, into: &segments))
        }
        XCTAssertEqual(errors, [.badIndirectTable, .badIndirectTable, .badIndirectTable, .badIndirectTable, .indirectWithNext])
    }

    func testBadAddressesAreRefusedWithoutTrapping() {
        let end = SimulatedGuest.guestBase + UInt64(guest.size)
        guest.makeAvailablePacked(queue: 1, [E(addr: 0x10, len: 10)])
        guest.makeAvailablePacked(queue: 1, [E(addr: end - 8, len: 16)])
        guest.makeAvailablePacked(queue: 1, [E(addr: UInt64.max - 4, len: UInt32.max)])
        guest.makeAvailablePacked(queue: 1, [E(addr: buffer(), len: 10), E(addr: 0x10, len: 10)])
        guest.makeAvailablePacked(queue: 1, [E(addr: buffer(), len: 10, writable: true)])
        guest.makeAvailablePacked(queue: 1, [E(addr: buffer(), len: 2000)])
        var q = queue()
        XCTAssertEqual(q.availableCount(), 6)
        var errors: [ChainError?] = []
        for k in 0..<6 {
            segments.removeAll()
            errors.append(q.walkChain(head: q.head(at: k)!, writable: false, into: &segments, limit: k == 5 ? 1000 : Int(UInt32.max)))
        }
        XCTAssertEqual(errors, [.badAddress, .badAddress, .badAddress, .badAddress, .wrongDirection, .frameTooLong])
    }

    func testChainLongerThanTheRingBreaksIt() {
        // Every descriptor available with NEXT: a list that never ends.
        let ring = guest.host(guest.rings[1].desc)
        for i in 1..<16 {
            (ring + 16 * i).storeBytes(of: PackedQueue.descFlagAvail | PackedQueue.descFlagNext, toByteOffset: 14, as: UInt16.self)
        }
        (ring).storeBytes(of: PackedQueue.descFlagAvail | PackedQueue.descFlagNext, toByteOffset: 14, as: UInt16.self)
        var q = queue()
        XCTAssertNil(q.availableCount())
        XCTAssertNil(q.availableCount(), "still corrupt on the next look: no state to forget")
    }

    func testHalfAvailableChainBreaksTheRing() {
        let ring = guest.host(guest.rings[1].desc)
        // First descriptor available with NEXT, its successor not available (flags 0).
        ring.storeBytes(of: PackedQueue.descFlagAvail | PackedQueue.descFlagNext, toByteOffset: 14, as: UInt16.self)
        var q = queue()
        XCTAssertNil(q.availableCount())
    }

    func testStaleDescriptorsFromTheLastLapAreNotAvailable() {
        var q = queue()
        for _ in 0..<16 { guest.makeAvailablePacked(queue: 1, [E(addr: buffer(), len: 10)]) }
        XCTAssertEqual(q.availableCount(), 16)
        for k in 0..<16 { q.pushUsed(id: q.head(at: k)!, length: 0) }
        q.consume(16)
        _ = q.publishUsed()
        XCTAssertEqual(q.nextAvail, 0, "one full lap: wrap counter flipped")
        XCTAssertEqual(q.availableCount(), 0, "used descriptors of the last lap are not new buffers")
        XCTAssertEqual(guest.takeUsed(queue: 1).count, 16)
        guest.makeAvailablePacked(queue: 1, [E(addr: buffer(), len: 10)])
        XCTAssertEqual(q.availableCount(), 1)
    }

    func testUsedElementsOfABatchBecomeVisibleTogether() {
        for _ in 0..<3 { guest.makeAvailablePacked(queue: 0, [E(addr: buffer(), len: 100, writable: true)]) }
        var q = queue(0)
        XCTAssertEqual(q.availableCount(), 3)
        for k in 0..<3 { q.pushUsed(id: q.head(at: k)!, length: UInt32(10 + k)) }
        q.consume(3)
        XCTAssertTrue(guest.takeUsed(queue: 0).isEmpty, "the first element's flags are stored last")
        _ = q.publishUsed()
        XCTAssertEqual(guest.takeUsed(queue: 0).map(\.len), [10, 11, 12])
        let flags = guest.host(guest.rings[0].desc).load(fromByteOffset: 14, as: UInt16.self)
        XCTAssertEqual(flags, PackedQueue.descFlagAvail | PackedQueue.descFlagUsed | PackedQueue.descFlagWrite)
    }

    func testInterruptSuppression() {
        for _ in 0..<4 { guest.makeAvailablePacked(queue: 0, [E(addr: buffer(), len: 100, writable: true)]) }
        var q = queue(0, eventIndex: true)
        XCTAssertEqual(q.availableCount(), 4)
        func use(_ k: Int) -> Bool {
            q.pushUsed(id: q.head(at: 0)!, length: 1)
            q.consume(1)
            return q.publishUsed()
        }
        guest.setDriverEvent(queue: 0, flags: PackedQueue.eventDisable)
        XCTAssertFalse(use(0))
        guest.setDriverEvent(queue: 0, flags: PackedQueue.eventEnable)
        XCTAssertTrue(use(1))
        // "Interrupt me when the used descriptor at position 3 (this lap) is written."
        guest.setDriverEvent(queue: 0, flags: PackedQueue.eventDesc, offWrap: 0x8000 | 3)
        XCTAssertFalse(use(2), "position 2 written: not yet")
        XCTAssertTrue(use(3), "position 3 written")
    }

    func testNeedsEventAcrossTheWrap() {
        // Ring of 8, used position moved from 6 (lap 1) to 1 (lap 0): positions 6, 7, 0 written.
        XCTAssertTrue(PackedQueue.needsEvent(offWrap: 0x8000 | 7, old: 0x8000 | 6, new: 1, size: 8))
        XCTAssertTrue(PackedQueue.needsEvent(offWrap: 0, old: 0x8000 | 6, new: 1, size: 8))
        XCTAssertFalse(PackedQueue.needsEvent(offWrap: 1, old: 0x8000 | 6, new: 1, size: 8))
        XCTAssertFalse(PackedQueue.needsEvent(offWrap: 0x8000 | 5, old: 0x8000 | 6, new: 1, size: 8))
    }

    func testKickSuppression() {
        let q = queue()
        q.disableKicks()
        XCTAssertEqual(guest.deviceEvent(queue: 1).flags, PackedQueue.eventDisable)
        q.enableKicks()
        XCTAssertEqual(guest.deviceEvent(queue: 1).flags, PackedQueue.eventEnable)
        var e = queue(eventIndex: true)
        guest.makeAvailablePacked(queue: 1, [E(addr: buffer(), len: 10), E(addr: buffer(), len: 10)])
        XCTAssertEqual(e.availableCount(), 1)
        e.enableKicks()
        XCTAssertEqual(guest.deviceEvent(queue: 1).flags, PackedQueue.eventDesc)
        XCTAssertEqual(guest.deviceEvent(queue: 1).offWrap, 0x8002, "kick when the next descriptor arrives")
    }
}
