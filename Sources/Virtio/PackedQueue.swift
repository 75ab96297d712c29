import CShims

/// Where the three parts of a packed virtqueue live in host memory (virtio 1.2, 2.8).
/// vhost-user's SET_VRING_ADDR carries them in the split ring's fields: descriptor ->
/// descriptor ring, available -> driver event suppression, used -> device event suppression.
public struct PackedRingLayout {
    public var size: UInt16
    public var descriptors: UnsafeMutableRawPointer   // 16 * size bytes, 16-aligned
    public var driverEvent: UnsafeMutableRawPointer   // 4 bytes, 4-aligned: read by the device
    public var deviceEvent: UnsafeMutableRawPointer   // 4 bytes, 4-aligned: written by the device
    public init(size: UInt16, descriptors: UnsafeMutableRawPointer, driverEvent: UnsafeMutableRawPointer,
                deviceEvent: UnsafeMutableRawPointer) {
        self.size = size
        self.descriptors = descriptors
        self.driverEvent = driverEvent
        self.deviceEvent = deviceEvent
    }

    /// Packed rings need not be a power of two (2.8.10.1), up to 2^15 entries.
    public static func isValidSize(_ n: UInt32) -> Bool { n > 0 && n <= 32768 }
    public static func descriptorBytes(_ n: UInt16) -> UInt64 { 16 * UInt64(n) }
    public static let eventBytes: UInt64 = 4
}

/// The device side of one packed virtqueue (virtio 1.2, 2.8). Plain value type owned by
/// the forwarding thread, with the same API shape as `SplitQueue`:
///
/// - `availableCount()` scans ahead from the next unconsumed descriptor and returns how
///   many whole chains are available (each may take several ring slots).
/// - `head(at: k)` is the k-th scanned chain's ring position, encoded as position | wrap
///   counter << 15 (the vhost-user base encoding); `walkChain(head:)` walks it.
/// - `consume(n)` moves past the first n chains, however many slots they took.
/// - `pushUsed(id:length:)` takes that same position and writes the used element.
///
/// Buffers are used in ring order, so the used element of a chain always lands on the
/// chain's first slot. Positions and wrap counters are ours; everything read from the
/// ring is read once, checked, and can only mislead this guest's own ring, never make us
/// touch memory outside it.
public struct PackedQueue {
    public static let descFlagNext: UInt16 = 1
    public static let descFlagWrite: UInt16 = 2
    public static let descFlagIndirect: UInt16 = 4
    public static let descFlagAvail: UInt16 = 1 << 7
    public static let descFlagUsed: UInt16 = 1 << 15
    /// Event suppression flags (2.8.14).
    public static let eventEnable: UInt16 = 0
    public static let eventDisable: UInt16 = 1
    public static let eventDesc: UInt16 = 2
    /// Bit 15 of a position: the ring wrap counter that goes with it.
    public static let wrapBit: UInt16 = 0x8000
    /// Chains scanned ahead of `consume` (RX frames may need up to 256 chains).
    public static let lookahead = 256

    public let layout: PackedRingLayout
    public let memory: GuestMemoryView
    public let size: Int
    public let eventIndex: Bool
    public let indirect: Bool
    /// Position | wrap of the first descriptor not yet consumed (GET_VRING_BASE's value).
    public var nextAvail: UInt16
    /// Position | wrap just after the last chain scanned.
    public var scanCursor: UInt16
    /// Scanned, unconsumed chains: `chains[(scanHead + k) & (lookahead - 1)]`.
    @usableFromInline var scanHead = 0
    public var scanned = 0
    @usableFromInline var scannedSlots = 0
    @usableFromInline let chains: UnsafeMutablePointer<UInt16>
    /// Per ring slot where a scanned chain starts: buffer id | slot count << 16.
    @usableFromInline let chainInfo: UnsafeMutablePointer<UInt32>
    /// Position | wrap where the next used element goes.
    public var usedNext: UInt16
    /// `usedNext` at the last publish (for the DESC event decision).
    @usableFromInline var signalledUsed: UInt16
    /// The first used element not yet visible: its flags are stored last, so the driver
    /// (which polls one position) sees a batch, or a multi-buffer frame, all at once.
    @usableFromInline var pendingFirst = 0
    @usableFromInline var pendingFlags: UInt16 = 0
    @usableFromInline var pending = false

    /// The base given at start was past the ring: every `availableCount()` says corrupt.
    @usableFromInline let badBase: Bool

    /// `base`: position | wrap << 15, from SET_VRING_BASE. The used side resumes there too:
    /// a stopped ring has returned every chain it consumed.
    public init(layout: PackedRingLayout, memory: GuestMemoryView, base: UInt16, eventIndex: Bool, indirect: Bool) {
        self.layout = layout
        self.memory = memory
        self.size = Int(layout.size)
        self.eventIndex = eventIndex
        self.indirect = indirect
        var start = base
        badBase = Int(base & ~Self.wrapBit) >= Int(layout.size)   // the device refuses these; never trust it here
        if badBase { start = Self.wrapBit }
        nextAvail = start
        scanCursor = start
        usedNext = start
        signalledUsed = start
        chains = .allocate(capacity: Self.lookahead)
        chainInfo = .allocate(capacity: max(Int(layout.size), 1))
        chainInfo.initialize(repeating: 1 << 16, count: max(Int(layout.size), 1))
    }

    /// Frees the side tables. The owner calls it once, when the queue stops.
    public func deallocate() {
        chains.deallocate()
        chainInfo.deallocate()
    }

    /// `p` moved forward by `n` slots (n <= size), flipping the wrap counter past the end.
    @inlinable @inline(__always)
    func advance(_ p: UInt16, by n: Int) -> UInt16 {
        var pos = Int(p & ~Self.wrapBit) &+ n
        var wrap = p & Self.wrapBit
        if pos >= size {
            pos &-= size
            wrap ^= Self.wrapBit
        }
        return UInt16(truncatingIfNeeded: pos) | wrap
    }

    /// Available to the device: AVAIL matches the wrap counter, USED does not (2.8.1).
    @inlinable @inline(__always)
    static func isAvailable(_ flags: UInt16, wrap: UInt16) -> Bool {
        let w = wrap != 0
        return (flags & descFlagAvail != 0) == w && (flags & descFlagUsed != 0) != w
    }

    // MARK: avail side

    /// Number of whole chains available from `nextAvail` (scanning ahead up to `lookahead`
    /// chains, at most one ring's worth of slots), or nil if the ring is corrupt.
    @inlinable
    public mutating func availableCount() -> Int? {
        if badBase { return nil }
        // Locals, written back once: stores into the side tables could alias `self`.
        var cursor = scanCursor
        var count = scanned
        var usedSlots = scannedSlots
        let desc = layout.descriptors
        defer {
            scanCursor = cursor
            scanned = count
            scannedSlots = usedSlots
        }
        while count < Self.lookahead && usedSlots < size {
            let pos = Int(cursor & ~Self.wrapBit)
            // SAFETY: pos < size (positions are kept modulo size); 16 * size bytes were translated.
            let flags = vs_load_acquire_u16(desc + 16 * pos + 14)
            guard Self.isAvailable(flags, wrap: cursor & Self.wrapBit) else { break }
            // The driver exposes a chain's first descriptor last (2.8.6), so after the
            // acquire above the rest is written: follow NEXT to its end, within the ring.
            var slots = 1
            var last = cursor
            var f = flags
            while f & Self.descFlagNext != 0 {
                guard usedSlots &+ slots < size else { return nil }   // the caller stops the ring
                last = advance(last, by: 1)
                // SAFETY: as above, the position is < size.
                f = vs_load_relaxed_u16(desc + 16 * Int(last & ~Self.wrapBit) + 14)
                guard Self.isAvailable(f, wrap: last & Self.wrapBit) else { return nil }
                slots &+= 1
            }
            // The buffer id is in the chain's last descriptor (2.8.6).
            let id = (desc + 16 * Int(last & ~Self.wrapBit) + 12).loadUnaligned(as: UInt16.self)
            chainInfo[pos] = UInt32(id) | UInt32(truncatingIfNeeded: slots) << 16
            chains[(scanHead &+ count) & (Self.lookahead - 1)] = cursor
            count &+= 1
            usedSlots &+= slots
            cursor = advance(last, by: 1)
        }
        return count
    }

    /// Like `availableCount()`, but scans only when the chains seen already are used up.
    @inlinable
    public mutating func cachedAvailableCount() -> Int? {
        scanned != 0 ? scanned : availableCount()
    }

    /// Ring position | wrap of the `offset`-th scanned chain, nil if not scanned.
    @inlinable
    public func head(at offset: Int) -> UInt16? {
        guard offset >= 0 && offset < scanned else { return nil }
        return chains[(scanHead &+ offset) & (Self.lookahead - 1)]
    }

    /// Walks the chain at ring position `head` (from `head(at:)`), appending translated
    /// buffers to `segments`. Same contract as `SplitQueue.walkChain`.
    @inlinable @inline(__always)
    public func walkChain(head: UInt16, writable: Bool, into segments: inout SegmentList,
                          limit: Int = Int(UInt32.max)) -> ChainError? {
        let pos = Int(head & ~Self.wrapBit)
        guard pos < size else { return .headOutOfRange }
        let slots = Int(chainInfo[pos] >> 16)
        // Fast path: one direct descriptor in one memory region.
        // SAFETY: pos < size; the ring was translated with 16 * size bytes.
        let d0 = layout.descriptors + 16 * pos
        let flags0 = d0.loadUnaligned(fromByteOffset: 14, as: UInt16.self)
            & (Self.descFlagNext | Self.descFlagWrite | Self.descFlagIndirect)
        if slots == 1, flags0 == (writable ? Self.descFlagWrite : 0), segments.count < segments.capacity {
            let addr = d0.loadUnaligned(as: UInt64.self)
            let len = d0.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
            if len > 0, segments.totalLength + Int(len) <= limit,
               let (host, n) = memory.translate(addr, UInt64(len)), n == UInt64(len) {
                segments.storage[segments.count] = BufferSegment(base: host, length: Int(len))
                segments.count &+= 1
                segments.totalLength &+= Int(len)
                return nil
            }
        }
        return walkChainSlowly(position: pos, slots: slots, writable: writable, into: &segments, limit: limit)
    }

    @inlinable
    public func walkChainSlowly(position: Int, slots: Int, writable: Bool, into segments: inout SegmentList,
                                limit: Int) -> ChainError? {
        guard slots >= 1 && slots <= size else { return .chainTooLong }
        var pos = position
        var s = 0
        while s < slots {
            // SAFETY: pos < size; 16 * size bytes were translated.
            let d = layout.descriptors + 16 * pos
            let addr = d.loadUnaligned(as: UInt64.self)
            let len = d.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
            let flags = d.loadUnaligned(fromByteOffset: 14, as: UInt16.self)
            if flags & Self.descFlagIndirect != 0 {
                guard indirect else { return .badIndirectTable }
                // An indirect descriptor is a whole list on its own (2.8.8).
                if slots != 1 { return .indirectWithNext }
                return walkIndirect(addr, len, writable: writable, into: &segments, limit: limit)
            }
            if (flags & Self.descFlagWrite != 0) != writable { return .wrongDirection }
            if let e = segments.appendGuestBuffer(addr, len, memory: memory, limit: limit) { return e }
            s &+= 1
            pos &+= 1
            if pos == size { pos = 0 }
        }
        return nil
    }

    /// An indirect table: len / 16 descriptors walked in order. Only WRITE means anything
    /// in them (2.8.8: other flags are reserved and ignored), so there is nothing to follow
    /// and no way to nest.
    ///
    /// WRITE is checked on device-writable (RX) queues only. DPDK's virtio driver (22.11
    /// and later) presets WRITE on every entry of its packed TX indirect tables, header
    /// included, and DPDK's own vhost library reads TX tables without looking at the bit:
    /// refusing them dropped every multi-segment frame of a DPDK frontend. Reading a
    /// buffer the driver also lets us write is harmless; writing one it marked read-only
    /// is not, so RX stays strict.
    @inlinable
    func walkIndirect(_ addr: UInt64, _ len: UInt32, writable: Bool, into segments: inout SegmentList,
                      limit: Int) -> ChainError? {
        guard len > 0, len % 16 == 0, Int(len / 16) <= SplitQueue.maxIndirectDescriptors,
              let table = memory.translateContiguous(addr, UInt64(len)) else { return .badIndirectTable }
        var i = 0
        let n = Int(len / 16)
        while i < n {
            // SAFETY: i < len / 16 and the table was translated with len bytes.
            let d = table + 16 * i
            let a = d.loadUnaligned(as: UInt64.self)
            let l = d.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
            let flags = d.loadUnaligned(fromByteOffset: 14, as: UInt16.self)
            if writable && flags & Self.descFlagWrite == 0 { return .wrongDirection }
            if let e = segments.appendGuestBuffer(a, l, memory: memory, limit: limit) { return e }
            i &+= 1
        }
        return nil
    }

    /// Moves past the first `count` scanned chains.
    @inlinable @inline(__always) public mutating func consume(_ count: Int) {
        let n = min(max(count, 0), scanned)
        guard n > 0 else { return }
        let new = n == scanned ? scanCursor : chains[(scanHead &+ n) & (Self.lookahead - 1)]
        scannedSlots &-= distance(from: nextAvail, to: new)
        nextAvail = new
        scanHead = (scanHead &+ n) & (Self.lookahead - 1)
        scanned &-= n
    }

    /// Slots from `a` to `b` going forward (a full ring if same position, other lap).
    @inlinable @inline(__always)
    func distance(from a: UInt16, to b: UInt16) -> Int {
        let d = Int(b & ~Self.wrapBit) &- Int(a & ~Self.wrapBit)
        if d > 0 { return d }
        if d < 0 { return d &+ size }
        return a == b ? 0 : size
    }

    // MARK: used side

    /// Writes the used element of the chain at `id` (a position from `head(at:)`), not
    /// visible to the driver until `publishUsed()`. Chains are used in ring order.
    @inlinable @inline(__always)
    public mutating func pushUsed(id: UInt16, length: UInt32) {
        let pos = Int(id & ~Self.wrapBit)
        let info = pos < size ? chainInfo[pos] : 1 << 16
        var slots = Int(info >> 16)
        if slots < 1 || slots > size { slots = 1 }
        let at = Int(usedNext & ~Self.wrapBit)
        // SAFETY: at < size; 16 * size bytes were translated.
        let d = layout.descriptors + 16 * at
        d.storeBytes(of: length, toByteOffset: 8, as: UInt32.self)
        d.storeBytes(of: UInt16(truncatingIfNeeded: info), toByteOffset: 12, as: UInt16.self)
        // Used: AVAIL and USED both equal to the device wrap counter (2.8.1); WRITE if we
        // wrote data (2.8.3).
        let flags = (usedNext & Self.wrapBit != 0 ? Self.descFlagAvail | Self.descFlagUsed : 0)
            | (length > 0 ? Self.descFlagWrite : 0)
        if pending {
            vs_store_release_u16(d + 14, flags)
        } else {
            pendingFirst = at
            pendingFlags = flags
            pending = true
        }
        usedNext = advance(usedNext, by: slots)
    }

    /// Makes the pushed elements visible (the first one's flags last, release) and says
    /// whether the driver asked for a used buffer notification (2.8.14, 2.8.10).
    @inlinable
    public mutating func publishUsed() -> Bool {
        guard pending else { return false }
        // SAFETY: pendingFirst < size.
        vs_store_release_u16(layout.descriptors + 16 * pendingFirst + 14, pendingFlags)
        pending = false
        let old = signalledUsed
        let new = usedNext
        signalledUsed = new
        // Order the flags store before reading the driver's suppression state.
        vs_fence_seq_cst()
        let mode = vs_load_relaxed_u16(layout.driverEvent + 2) & 3
        if mode == Self.eventDisable { return false }
        // DESC is only valid with EVENT_IDX; anything else (reserved 3 too) means enabled.
        guard mode == Self.eventDesc && eventIndex else { return true }
        return Self.needsEvent(offWrap: vs_load_relaxed_u16(layout.driverEvent), old: old, new: new, size: size)
    }

    /// Whether moving the used position from `old` to `new` passed the driver's event
    /// descriptor `offWrap` (the packed form of vring_need_event, as in DPDK and Linux).
    @inlinable
    public static func needsEvent(offWrap: UInt16, old: UInt16, new: UInt16, size: Int) -> Bool {
        let newIdx = Int(new & ~wrapBit)
        var oldIdx = Int(old & ~wrapBit)
        var off = Int(offWrap & ~wrapBit)
        if newIdx <= oldIdx { oldIdx &-= size }
        if offWrap & wrapBit != new & wrapBit { off &-= size }
        return UInt16(truncatingIfNeeded: newIdx &- off &- 1) < UInt16(truncatingIfNeeded: newIdx &- oldIdx)
    }

    // MARK: kick suppression

    /// Ask the driver to notify us when it adds buffers (before sleeping); the caller must
    /// re-check `availableCount()` afterwards (full fence included here).
    @inlinable
    public func enableKicks() {
        if eventIndex {
            // Notify when the descriptor after what we have seen is made available.
            vs_store_relaxed_u16(layout.deviceEvent, scanCursor)
            vs_store_relaxed_u16(layout.deviceEvent + 2, Self.eventDesc)
        } else {
            vs_store_relaxed_u16(layout.deviceEvent + 2, Self.eventEnable)
        }
        vs_fence_seq_cst()
    }

    /// Tell the driver not to notify while we are polling anyway.
    @inlinable
    public func disableKicks() {
        vs_store_relaxed_u16(layout.deviceEvent + 2, Self.eventDisable)
    }
}
