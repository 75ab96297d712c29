import CShims

/// Why a descriptor chain or ring was rejected. Every value comes from guest memory, so
/// each is a counted drop, never a crash.
public enum ChainError: UInt8, Error, Sendable {
    case headOutOfRange        // avail.ring entry >= queue size
    case nextOutOfRange        // desc.next >= table size
    case chainTooLong          // more hops than descriptors: a loop (virtio 1.2, 2.7.5.2)
    case badAddress            // buffer not inside guest memory
    case nestedIndirect        // indirect descriptor inside an indirect table (2.7.5.3.1)
    case indirectWithNext      // INDIRECT and NEXT both set (2.7.5.3.1)
    case badIndirectTable      // length 0, not a multiple of 16, unmapped or too big
    case wrongDirection        // writable buffer in a TX chain or read-only in an RX chain
    case tooManySegments       // more pieces than the caller's scratch space
    case frameTooLong          // total length beyond 4 GiB / the caller's limit
}

/// A piece of a guest buffer, translated to host memory.
public struct BufferSegment {
    public var base: UnsafeMutableRawPointer
    public var length: Int
    @inlinable public init(base: UnsafeMutableRawPointer, length: Int) {
        self.base = base
        self.length = length
    }
}

/// Fixed-capacity scratch list of segments, allocated once per forwarding thread.
public struct SegmentList {
    public let storage: UnsafeMutablePointer<BufferSegment>
    public let capacity: Int
    public var count: Int = 0
    public var totalLength: Int = 0

    public init(capacity: Int) {
        self.capacity = capacity
        storage = .allocate(capacity: capacity)
    }
    public func deallocate() { storage.deallocate() }

    @inlinable public mutating func removeAll() {
        count = 0
        totalLength = 0
    }
    @inlinable public subscript(i: Int) -> BufferSegment { storage[i] }

    /// Translates one descriptor's buffer (guest address and length, both guest-supplied)
    /// through `memory` and appends it, split at region edges. Shared by split and packed rings.
    @inlinable
    public mutating func appendGuestBuffer(_ addr: UInt64, _ len: UInt32, memory: GuestMemoryView,
                                           limit: Int) -> ChainError? {
        guard len > 0 else { return nil }
        guard totalLength + Int(len) <= limit else { return .frameTooLong }
        var gpa = addr
        var remaining = UInt64(len)
        while remaining > 0 {
            guard count < capacity else { return .tooManySegments }
            guard let (host, n) = memory.translate(gpa, remaining) else { return .badAddress }
            storage[count] = BufferSegment(base: host, length: Int(n))
            count &+= 1
            // No overflow: n <= remaining, and gpa + n stays inside a region (checked at map).
            remaining &-= n
            gpa &+= n
        }
        totalLength &+= Int(len)
        return nil
    }
}

/// Where the three parts of a split virtqueue live in host memory (virtio 1.2, 2.7).
public struct SplitRingLayout {
    public var size: UInt16
    public var descriptors: UnsafeMutableRawPointer   // 16 * size bytes, 16-aligned
    public var avail: UnsafeMutableRawPointer         // 6 + 2 * size bytes, 2-aligned
    public var used: UnsafeMutableRawPointer          // 6 + 8 * size bytes, 4-aligned
    public init(size: UInt16, descriptors: UnsafeMutableRawPointer, avail: UnsafeMutableRawPointer,
                used: UnsafeMutableRawPointer) {
        self.size = size
        self.descriptors = descriptors
        self.avail = avail
        self.used = used
    }

    public static func isValidSize(_ n: UInt32) -> Bool { n > 0 && n <= 32768 && n & (n - 1) == 0 }
    public static func descriptorBytes(_ n: UInt16) -> UInt64 { 16 * UInt64(n) }
    public static func availBytes(_ n: UInt16) -> UInt64 { 6 + 2 * UInt64(n) }
    public static func usedBytes(_ n: UInt16) -> UInt64 { 6 + 8 * UInt64(n) }
}

/// The device side of one split virtqueue. Plain value type: the forwarding thread owns it.
///
/// Every field read from the rings is read once into a local and checked before use.
public struct SplitQueue {
    public static let descFlagNext: UInt16 = 1
    public static let descFlagWrite: UInt16 = 2
    public static let descFlagIndirect: UInt16 = 4
    public static let availFlagNoInterrupt: UInt16 = 1
    public static let usedFlagNoNotify: UInt16 = 1
    /// Indirect tables longer than this are refused (Linux uses at most MAX_SKB_FRAGS + 2).
    public static let maxIndirectDescriptors = 1024

    public let layout: SplitRingLayout
    public let memory: GuestMemoryView
    public let mask: UInt16
    public let eventIndex: Bool
    public let indirect: Bool
    /// Next avail.ring slot to consume (the "last_avail_idx" of vhost).
    public var lastAvail: UInt16
    /// used.idx as we will publish it.
    public var usedIndex: UInt16
    /// used.idx as the guest last saw it (for the event-idx notification decision).
    public var signalledUsed: UInt16
    /// avail.idx as last read (see `cachedAvailableCount`).
    public var availSeen: UInt16 = 0

    public init(layout: SplitRingLayout, memory: GuestMemoryView, lastAvail: UInt16,
                eventIndex: Bool, indirect: Bool) {
        self.layout = layout
        self.memory = memory
        self.mask = layout.size &- 1
        self.eventIndex = eventIndex
        self.indirect = indirect
        self.lastAvail = lastAvail
        self.availSeen = lastAvail
        // The used index continues from what the guest already has; a restarted ring
        // resumes where avail stopped (every consumed chain has been returned).
        let used = vs_load_acquire_u16(layout.used + 2)
        self.usedIndex = used
        self.signalledUsed = used
    }

    // MARK: avail side

    /// Number of chains the driver has made available, or nil if avail.idx is corrupt
    /// (more than `size` ahead of us; virtio 1.2, 2.7.6 - the ring cannot hold more).
    @inlinable
    public mutating func availableCount() -> Int? {
        // SAFETY: avail was translated with availBytes(size) bytes at start; offset 2 is idx.
        let idx = vs_load_acquire_u16(layout.avail + 2)
        let n = idx &- lastAvail
        guard n <= layout.size else { return nil }   // the caller stops the ring (RingFaults.swift)
        availSeen = idx
        return Int(n)
    }

    /// Like `availableCount()`, but reads the driver's avail.idx only when the chains seen
    /// last time are used up. The RX side asks once per frame; re-reading a cache line
    /// the other core keeps writing would cost a transfer each time (DPDK and the kernel
    /// also read avail.idx once per burst).
    @inlinable @inline(__always)
    public mutating func cachedAvailableCount() -> Int? {
        let n = availSeen &- lastAvail
        if n != 0 && n <= layout.size { return Int(n) }
        return availableCount()
    }

    /// The head descriptor index at `lastAvail + offset`, checked against the size.
    @inlinable
    public func head(at offset: Int) -> UInt16? {
        let slot = Int((lastAvail &+ UInt16(truncatingIfNeeded: offset)) & mask)
        // SAFETY: slot <= mask < size; ring starts at avail + 4.
        let head = (layout.avail + 4 + 2 * slot).loadUnaligned(as: UInt16.self)
        return head < layout.size ? head : nil
    }

    /// The buffer of chain `head` when the chain is one direct descriptor (no NEXT, no
    /// INDIRECT) of the given direction, non-empty and inside one memory region: how Linux
    /// and DPDK post most buffers. nil means "not that simple": `walkChain` then handles
    /// (or rejects) the chain.
    @inlinable @inline(__always)
    public func singleBuffer(head: UInt16, writable: Bool) -> BufferSegment? {
        guard head < layout.size else { return nil }
        // SAFETY: head < size; the table was translated with 16 * size bytes.
        let d = layout.descriptors + 16 * Int(head)
        guard d.loadUnaligned(fromByteOffset: 12, as: UInt16.self) == (writable ? Self.descFlagWrite : 0) else { return nil }
        let addr = d.loadUnaligned(as: UInt64.self)
        let len = d.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
        guard len > 0, let (host, n) = memory.translate(addr, UInt64(len)), n == UInt64(len) else { return nil }
        return BufferSegment(base: host, length: Int(len))
    }

    /// Walks the chain starting at `head`, appending translated buffers to `segments`.
    /// `writable`: true for RX chains (device writes), false for TX (device reads).
    /// `limit`: total bytes accepted before the chain is refused.
    @inlinable @inline(__always)
    public func walkChain(head: UInt16, writable: Bool, into segments: inout SegmentList,
                          limit: Int = Int(UInt32.max)) -> ChainError? {
        guard head < layout.size else { return .headOutOfRange }
        // Fast path: one direct descriptor in one memory region (how Linux and DPDK post
        // most buffers). Same checks as below, in fewer steps.
        if segments.count < segments.capacity, let buffer = singleBuffer(head: head, writable: writable),
           segments.totalLength + buffer.length <= limit {
            segments.storage[segments.count] = buffer
            segments.count &+= 1
            segments.totalLength &+= buffer.length
            return nil
        }
        return Self.walkChainSlowly(head: head, writable: writable, into: &segments, limit: limit,
                                    descriptors: layout.descriptors, size: layout.size, memory: memory,
                                    indirect: indirect)
    }

    /// Any chain: several descriptors, indirect tables, buffers across regions. Static, with
    /// the ring's fields as arguments: an instance method would make the inlined fast path
    /// copy the whole queue struct to the stack first, for every frame.
    @inlinable @inline(never)
    public static func walkChainSlowly(head: UInt16, writable: Bool, into segments: inout SegmentList,
                                       limit: Int, descriptors: UnsafeMutableRawPointer, size: UInt16,
                                       memory: GuestMemoryView, indirect: Bool) -> ChainError? {
        var table = descriptors
        var tableSize = Int(size)
        var index = Int(head)
        var hops = 0
        var inIndirect = false
        while true {
            // SAFETY: index < tableSize, and the table was translated with 16 * tableSize bytes.
            let d = table + 16 * index
            let addr = d.loadUnaligned(as: UInt64.self)
            let len = d.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
            let flags = d.loadUnaligned(fromByteOffset: 12, as: UInt16.self)
            let next = d.loadUnaligned(fromByteOffset: 14, as: UInt16.self)
            hops &+= 1
            if hops > tableSize { return .chainTooLong }

            if flags & Self.descFlagIndirect != 0 {
                guard indirect else { return .badIndirectTable }
                if inIndirect { return .nestedIndirect }
                if flags & Self.descFlagNext != 0 { return .indirectWithNext }
                guard len > 0, len % 16 == 0, Int(len / 16) <= Self.maxIndirectDescriptors,
                      let t = memory.translateContiguous(addr, UInt64(len)) else { return .badIndirectTable }
                table = t
                tableSize = Int(len / 16)
                index = 0
                hops = 0
                inIndirect = true
                continue
            }
            if (flags & Self.descFlagWrite != 0) != writable { return .wrongDirection }
            if let e = segments.appendGuestBuffer(addr, len, memory: memory, limit: limit) { return e }
            if flags & Self.descFlagNext == 0 { return nil }
            guard Int(next) < tableSize else { return .nextOutOfRange }
            index = Int(next)
        }
    }

    /// Marks `count` chains as consumed.
    @inlinable public mutating func consume(_ count: Int) {
        lastAvail &+= UInt16(truncatingIfNeeded: count)
    }

    // MARK: used side

    /// Writes a used element; not visible to the guest until `publishUsed()`.
    @inlinable
    public mutating func pushUsed(id: UInt16, length: UInt32) {
        let slot = Int(usedIndex & mask)
        // SAFETY: slot < size; used ring elements start at used + 4, 8 bytes each.
        let e = layout.used + 4 + 8 * slot
        e.storeBytes(of: UInt32(id), as: UInt32.self)
        e.storeBytes(of: length, toByteOffset: 4, as: UInt32.self)
        usedIndex &+= 1
    }

    /// Publishes used.idx (release: elements before index) and says whether the guest
    /// asked to be interrupted (virtio 1.2, 2.7.10 and 2.7.7.2 for event idx).
    @inlinable
    public mutating func publishUsed() -> Bool {
        let new = usedIndex
        let old = signalledUsed
        guard new != old else { return false }
        vs_store_release_u16(layout.used + 2, new)
        signalledUsed = new
        // Order the used.idx store before reading the driver's suppression state.
        vs_fence_seq_cst()
        if eventIndex {
            // used_event lives after the avail ring: avail + 4 + 2 * size.
            let usedEvent = vs_load_relaxed_u16(layout.avail + 4 + 2 * Int(layout.size))
            return (new &- usedEvent &- 1) < (new &- old)
        }
        return vs_load_relaxed_u16(layout.avail) & Self.availFlagNoInterrupt == 0
    }

    // MARK: kick suppression

    /// Ask the guest to kick when it adds buffers (before sleeping). The caller must
    /// re-check `availableCount()` afterwards (full fence included here).
    @inlinable
    public func enableKicks() {
        if eventIndex {
            // avail_event lives after the used ring: used + 4 + 8 * size.
            vs_store_relaxed_u16(layout.used + 4 + 8 * Int(layout.size), lastAvail)
        } else {
            vs_store_relaxed_u16(layout.used, 0)
        }
        vs_fence_seq_cst()
    }

    /// Tell the guest not to kick while we are polling anyway.
    @inlinable
    public func disableKicks() {
        if !eventIndex { vs_store_relaxed_u16(layout.used, Self.usedFlagNoNotify) }
    }
}
