import CShims
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// The driver side of packed virtqueues (virtio 1.2, 2.8), as a Linux guest runs it: a
/// buffer's descriptors go into the ring in order, its id is the position of its first
/// descriptor, and the first descriptor's flags are written last (release), after the
/// rest of the list.
extension SimulatedGuest {
    /// One element of a buffer: guest-physical address, length, device-writable or not,
    /// and extra flag bits to set (INDIRECT, or junk for hostile tests).
    public struct PackedElement {
        public var addr: UInt64
        public var len: UInt32
        public var flags: UInt16
        public init(addr: UInt64, len: UInt32, writable: Bool = false, flags: UInt16 = 0) {
            self.addr = addr
            self.len = len
            self.flags = flags | (writable ? PackedQueue.descFlagWrite : 0)
        }
    }

    /// Makes one buffer available on queue `q` (chained with NEXT if several elements).
    /// Returns its id (the position of its first descriptor).
    @discardableResult
    public func makeAvailablePacked(queue q: Int, _ elements: [PackedElement], id: UInt16? = nil) -> UInt16 {
        let ring = host(rings[q].desc)
        let first = packedAvail[q]
        let bufferId = id ?? (first & 0x7fff)
        var pos = first
        var firstFlags: UInt16 = 0
        for (k, e) in elements.enumerated() {
            let wrap = pos & 0x8000 != 0
            var f = e.flags | (wrap ? PackedQueue.descFlagAvail : PackedQueue.descFlagUsed)
            if k < elements.count - 1 { f |= PackedQueue.descFlagNext }
            let d = ring + 16 * Int(pos & 0x7fff)
            d.storeBytes(of: e.addr, as: UInt64.self)
            d.storeBytes(of: e.len, toByteOffset: 8, as: UInt32.self)
            d.storeBytes(of: bufferId, toByteOffset: 12, as: UInt16.self)
            if k == 0 { firstFlags = f } else { vs_store_release_u16(d + 14, f) }
            pos = advancePacked(pos, by: 1)
        }
        if Int(bufferId) < Int(queueSize) { packedSlots[q][Int(bufferId)] = UInt16(elements.count) }
        vs_store_release_u16(ring + 16 * Int(first & 0x7fff) + 14, firstFlags)
        packedAvail[q] = pos
        packedOutstanding[q] += 1
        return bufferId
    }

    func advancePacked(_ p: UInt16, by n: Int) -> UInt16 {
        var pos = Int(p & 0x7fff) + n
        var wrap = p & 0x8000
        if pos >= Int(queueSize) {
            pos -= Int(queueSize)
            wrap ^= 0x8000
        }
        return UInt16(pos) | wrap
    }

    func transmitPacked(_ frame: [UInt8]) {
        let buf = bufferOf[1][Int(packedAvail[1] & 0x7fff)]
        memset(host(buf), 0, headerLength)
        frame.withUnsafeBytes { (host(buf) + headerLength).copyMemory(from: $0.baseAddress!, byteCount: frame.count) }
        makeAvailablePacked(queue: 1, [PackedElement(addr: buf, len: UInt32(headerLength + frame.count))])
    }

    func postReceiveBuffersPacked(_ count: Int) {
        for _ in 0..<count {
            let buf = bufferOf[0][Int(packedAvail[0] & 0x7fff)]
            makeAvailablePacked(queue: 0, [PackedElement(addr: buf, len: UInt32(bufferSize), writable: true)])
        }
    }

    /// The next used descriptor of queue `q`, if the device has written it: (id, len).
    func nextUsedPacked(queue q: Int) -> (id: UInt32, len: UInt32)? {
        guard packedOutstanding[q] > 0 else { return nil }
        let d = host(rings[q].desc) + 16 * Int(packedUsed[q] & 0x7fff)
        let flags = vs_load_acquire_u16(d + 14)
        let wrap = packedUsed[q] & 0x8000 != 0
        // Used: AVAIL and USED both equal to our used wrap counter (2.8.1).
        guard (flags & PackedQueue.descFlagAvail != 0) == wrap, (flags & PackedQueue.descFlagUsed != 0) == wrap
        else { return nil }
        let id = d.load(fromByteOffset: 12, as: UInt16.self)
        let len = d.load(fromByteOffset: 8, as: UInt32.self)
        let slots = Int(id) < Int(queueSize) ? Int(packedSlots[q][Int(id)]) : 1
        packedUsed[q] = advancePacked(packedUsed[q], by: max(slots, 1))
        packedOutstanding[q] -= 1
        return (UInt32(id), len)
    }

    func takeUsedPacked(queue q: Int) -> [(id: UInt32, len: UInt32)] {
        var out: [(id: UInt32, len: UInt32)] = []
        while let e = nextUsedPacked(queue: q) { out.append(e) }
        return out
    }

    func reclaimUsedPacked(queue q: Int) -> Int {
        var n = 0
        while nextUsedPacked(queue: q) != nil { n += 1 }
        return n
    }

    /// The driver event suppression area of queue `q` (what the device reads before
    /// interrupting): flags ENABLE/DISABLE/DESC and, for DESC, position | wrap << 15.
    public func setDriverEvent(queue q: Int, flags: UInt16, offWrap: UInt16 = 0) {
        let e = host(rings[q].avail)
        e.storeBytes(of: offWrap, as: UInt16.self)
        e.storeBytes(of: flags, toByteOffset: 2, as: UInt16.self)
    }

    /// The device event suppression area of queue `q`: (offWrap, flags).
    public func deviceEvent(queue q: Int) -> (offWrap: UInt16, flags: UInt16) {
        let e = host(rings[q].used)
        return (e.load(as: UInt16.self), e.load(fromByteOffset: 2, as: UInt16.self))
    }
}
