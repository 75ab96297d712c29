import GuestSimulator
import Logging
import Virtio
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
@testable import CaptureWriter

/// Random mixes of single, chained and indirect TX buffers, some of them malformed, on a
/// packed ring, with buffer ids in ring order (IN_ORDER, as DPDK's default) and out of
/// order (a free list, as Linux and DPDK's `in_order=0`). Whatever the switch forwards or
/// drops, every used element it writes must sit where the driver looks for it (the first
/// slot of each buffer, in order), carry the buffer id the driver posted, length 0, and
/// the wrap counter of its lap; good frames arrive intact and in order, bad ones are
/// counted and never stop the ring. Issue 22: rejected buffers broke a DPDK frontend.
final class PackedRandomMixTests: XCTestCase {
    typealias E = SimulatedGuest.PackedElement
    static let macA = TestFrame.mac(0xa1), macB = TestFrame.mac(0xb2)

    /// SplitMix64: reproducible from the seed printed on failure.
    struct Rng {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9e37_79b9_7f4a_7c15
            var z = state
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    enum Kind: CaseIterable { case single, chain, indirect, badDirection, badAddress, badTableLength, badTableEntry }

    struct Posted {
        let id: UInt16
        let slots: Int
        let frame: [UInt8]?   // nil: malformed, must be dropped
    }

    func testRandomMixesInOrder() throws {
        try run(seed: 1, ringSize: 50, inOrder: true, receiverPacked: false)
        try run(seed: 2, ringSize: 256, inOrder: true, receiverPacked: true)
    }

    func testRandomMixesOutOfOrder() throws {
        try run(seed: 3, ringSize: 50, inOrder: false, receiverPacked: true)
        try run(seed: 4, ringSize: 256, inOrder: false, receiverPacked: false)
        try run(seed: 5, ringSize: 17, inOrder: false, receiverPacked: false)
    }

    func run(seed: UInt64, ringSize: UInt16, inOrder: Bool, receiverPacked: Bool, rounds: Int = 300) throws {
        var rng = Rng(state: seed)
        let features = SimulatedGuest.defaultFeatures | VirtioFeature.ringPacked | (inOrder ? VirtioFeature.inOrder : 0)
        let a = SimulatedGuest(memorySize: 16 << 20, queueSize: ringSize, features: features)
        let b = SimulatedGuest(features: SimulatedGuest.defaultFeatures | (receiverPacked ? VirtioFeature.ringPacked : 0))
        let engine = ForwardingEngine(logger: Logger(label: "test"))
        let bridge = engine.addBridge(agingSeconds: 300)!
        var ports: [Int] = []
        for g in [a, b] {
            let p = engine.addPort(bridge: bridge)!
            let memory = try g.makeMemory()
            engine.startQueue(port: p, g.vringConfiguration(queue: 0, memory: memory))
            engine.startQueue(port: p, g.vringConfiguration(queue: 1, memory: memory))
            ports.append(p)
        }
        b.postReceiveBuffers(Int(b.queueSize))
        // B speaks first so A's frames are learned unicast to B, not floods.
        b.transmit(TestFrame.make(dst: TestFrame.broadcast, src: Self.macB))
        _ = engine.pollOnce()
        _ = b.reclaimUsed(queue: 1)

        let size = Int(ringSize)
        let header = a.headerLength
        // Per buffer id: a data area and a 16-entry indirect table, reused when the id is.
        let data = (0..<size).map { _ in a.alloc(2048, align: 64) }
        let tables = (0..<size).map { _ in a.alloc(16 * 16, align: 16) }
        var freeIds = Array(0..<UInt16(size))
        var ringPos: UInt16 = 0x8000        // driver's next position | wrap, as the guest keeps it
        var usedPos: UInt16 = 0x8000        // where the next used element must appear
        var freeSlots = size
        var good = 0, bad = 0, sequence = 0
        let context = "seed \(seed), ring \(ringSize), \(inOrder ? "in order" : "out of order")"

        for round in 0..<rounds {
            var posted: [Posted] = []
            let want = 1 + rng.below(12)
            while posted.count < want {
                let kind = Kind.allCases[rng.below(Kind.allCases.count)]
                let pieces = 1 + rng.below(8)
                let slots = kind == .chain || kind == .badDirection ? pieces + 1 : 1
                guard slots <= freeSlots, inOrder || !freeIds.isEmpty else { break }
                let id: UInt16
                if inOrder {
                    id = ringPos & 0x7fff   // the position of the buffer's first slot
                } else {
                    id = freeIds.remove(at: rng.below(freeIds.count))
                }
                sequence += 1
                let frame = TestFrame.make(dst: Self.macB, src: Self.macA, payload: 46 + rng.below(900),
                                           fill: UInt8(truncatingIfNeeded: sequence))
                let buffer = data[Int(id)]
                memset(a.host(buffer), 0, header)
                frame.withUnsafeBytes { (a.host(buffer) + header).copyMemory(from: $0.baseAddress!, byteCount: frame.count) }
                let total = header + frame.count
                let cuts = split(total, into: pieces, &rng)
                var elements: [E] = []
                var isGood = true
                switch kind {
                case .single:
                    elements = [E(addr: buffer, len: UInt32(total))]
                case .chain, .badDirection:
                    // The header alone first, as DPDK and Linux send it, then the pieces.
                    elements = [E(addr: buffer, len: UInt32(header))]
                    var offset = header
                    for n in split(frame.count, into: pieces, &rng) {
                        elements.append(E(addr: buffer + UInt64(offset), len: UInt32(n)))
                        offset += n
                    }
                    if kind == .badDirection {
                        let k = 1 + rng.below(pieces)
                        elements[k].flags |= PackedQueue.descFlagWrite
                        isGood = false
                    }
                case .indirect, .badTableEntry:
                    let table = a.host(tables[Int(id)])
                    var offset = 0
                    for (k, n) in cuts.enumerated() {
                        let d = table + 16 * k
                        let addr = kind == .badTableEntry && k == cuts.count - 1 ? 0xdead_0000_0000 : buffer + UInt64(offset)
                        d.storeBytes(of: addr, as: UInt64.self)
                        d.storeBytes(of: UInt32(n), toByteOffset: 8, as: UInt32.self)
                        d.storeBytes(of: UInt16(truncatingIfNeeded: rng.next()), toByteOffset: 12, as: UInt16.self)  // ids: reserved
                        // DPDK presets WRITE on its TX tables; Linux leaves it clear: both must work.
                        let junk = rng.below(2) == 0 ? PackedQueue.descFlagWrite : 0
                        d.storeBytes(of: junk | PackedQueue.descFlagNext, toByteOffset: 14, as: UInt16.self)
                        offset += n
                    }
                    elements = [E(addr: tables[Int(id)], len: UInt32(16 * cuts.count), flags: PackedQueue.descFlagIndirect)]
                    isGood = kind == .indirect
                case .badAddress:
                    elements = [E(addr: 0xdead_0000_0000, len: UInt32(total))]
                    isGood = false
                case .badTableLength:
                    elements = [E(addr: tables[Int(id)], len: 24, flags: PackedQueue.descFlagIndirect)]
                    isGood = false
                }
                a.makeAvailablePacked(queue: 1, elements, id: id)
                ringPos = advance(ringPos, by: elements.count, size: size)
                freeSlots -= elements.count
                posted.append(Posted(id: id, slots: elements.count, frame: isGood ? frame : nil))
                if isGood { good += 1 } else { bad += 1 }
            }
            var spins = 0
            while engine.pollOnce() > 0 { spins += 1; XCTAssertLessThan(spins, 1000) }

            // The used elements, one per buffer, at each buffer's first slot, in order.
            let ring = a.host(a.rings[1].desc)
            for (k, p) in posted.enumerated() {
                let d = ring + 16 * Int(usedPos & 0x7fff)
                let flags = d.load(fromByteOffset: 14, as: UInt16.self)
                let wrap = usedPos & 0x8000 != 0
                let avail = flags & PackedQueue.descFlagAvail != 0, used = flags & PackedQueue.descFlagUsed != 0
                guard avail == wrap && used == wrap else {
                    return XCTFail("\(context), round \(round), buffer \(k): no used element at \(usedPos & 0x7fff) (flags \(flags))")
                }
                XCTAssertEqual(d.load(fromByteOffset: 12, as: UInt16.self), p.id, "\(context), round \(round), buffer \(k): id")
                XCTAssertEqual(d.load(fromByteOffset: 8, as: UInt32.self), 0, "\(context), round \(round): TX length")
                usedPos = advance(usedPos, by: p.slots, size: size)
                freeSlots += p.slots
                if !inOrder { freeIds.append(p.id) }
            }
            // Nothing more was marked used: the next slot still belongs to the driver.
            if freeSlots < size {
                let d = ring + 16 * Int(usedPos & 0x7fff)
                let flags = d.load(fromByteOffset: 14, as: UInt16.self)
                let wrap = usedPos & 0x8000 != 0
                XCTAssertFalse((flags & PackedQueue.descFlagAvail != 0) == wrap && (flags & PackedQueue.descFlagUsed != 0) == wrap,
                               "\(context), round \(round): a used element past the last buffer")
            }
            let expected = posted.compactMap(\.frame)
            let received = b.receivedFrames()
            XCTAssertEqual(received.count, expected.count, "\(context), round \(round): frames delivered")
            for (r, e) in zip(received, expected) where r != e {
                XCTFail("\(context), round \(round): a frame arrived changed (\(r.count) bytes, sent \(e.count))")
            }
            b.postReceiveBuffers(received.count)
        }
        let c = engine.counters(port: ports[0])
        XCTAssertEqual(c.rxPackets, UInt64(good), context)
        XCTAssertEqual(c.rxDropBadDescriptor, UInt64(bad), context)
        XCTAssertFalse(engine.isBroken(port: ports[0]), "\(context): malformed buffers are dropped, the ring keeps running")
        XCTAssertGreaterThan(bad, 50, "\(context): the mix exercises rejects")
        XCTAssertGreaterThan(good, 200, "\(context): and forwarding")
    }

    /// `total` bytes in `n` non-empty pieces (fewer if `total` < n).
    func split(_ total: Int, into n: Int, _ rng: inout Rng) -> [Int] {
        let n = max(1, min(n, total))
        var cuts = Set<Int>()
        while cuts.count < n - 1 { cuts.insert(1 + rng.below(total - 1)) }
        let points = [0] + cuts.sorted() + [total]
        return (1..<points.count).map { points[$0] - points[$0 - 1] }
    }

    func advance(_ p: UInt16, by n: Int, size: Int) -> UInt16 {
        var pos = Int(p & 0x7fff) + n
        var wrap = p & 0x8000
        if pos >= size {
            pos -= size
            wrap ^= 0x8000
        }
        return UInt16(pos) | wrap
    }
}
