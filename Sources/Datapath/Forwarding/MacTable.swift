/// The MAC learning table of one bridge: open addressing with linear probing over a fixed
/// array, so learning and lookup on the forwarding path never allocate or hash through
/// `Hashable`. Aging is lazy: an entry older than `agingSeconds` is a miss, and expired
/// entries are purged when the table fills up.
///
/// Keys are `MacTable.key(mac:vlan:)`: the 48-bit MAC with the 12-bit VLAN id above it.
public struct MacTable {
    public struct Entry {
        public var key: UInt64
        public var port: Int32          // -1: empty slot
        public var lastSeen: UInt32     // coarse monotonic seconds
    }

    public let capacity: Int
    private let mask: Int
    private let slots: UnsafeMutablePointer<Entry>
    public private(set) var count = 0
    public var agingSeconds: UInt32
    /// Bumped whenever an entry is added, moves to another port or is removed, so a port
    /// can skip re-learning an address it learned this second (see `PortSlot`).
    public private(set) var generation: UInt32 = 0
    /// Addresses learned: new entries, moves to another port, and entries re-learned after
    /// they had aged out. Counted only on those (rare) paths, never per frame.
    public private(set) var learned: UInt64 = 0
    /// Entries that aged out: purged as expired, or found expired when their address came
    /// back. Removal with a port or `fdb flush` is not aging and is not counted.
    public private(set) var aged: UInt64 = 0

    public init(capacity: Int = 8192, agingSeconds: UInt32 = 300) {
        precondition(capacity > 0 && capacity & (capacity - 1) == 0, "capacity is a power of two")
        self.capacity = capacity
        self.mask = capacity - 1
        self.agingSeconds = agingSeconds
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: Entry(key: 0, port: -1, lastSeen: 0), count: capacity)
    }

    /// Frees the storage; the table must not be used afterwards.
    public func deallocate() { slots.deallocate() }

    @inlinable
    public static func key(mac: UInt64, vlan: UInt16) -> UInt64 { mac | UInt64(vlan & 0xfff) << 48 }

    @inline(__always)
    private func home(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 40) & mask
    }

    /// The port `key` was last seen on, or -1 if unknown or aged out.
    @inline(__always)
    public func lookup(_ key: UInt64, now: UInt32) -> Int32 {
        var i = home(key)
        while true {
            let e = slots[i]
            if e.port < 0 { return -1 }
            if e.key == key { return now &- e.lastSeen > agingSeconds ? -1 : e.port }
            i = (i &+ 1) & mask
        }
    }

    /// Records that `key` was seen on `port`. Returns false when the table is full of live
    /// entries (the frame is still forwarded; the address just is not learned).
    @discardableResult
    public mutating func learn(_ key: UInt64, port: Int32, now: UInt32) -> Bool {
        var i = home(key)
        while true {
            let e = slots[i]
            if e.port < 0 { break }
            if e.key == key {
                if e.port != port { generation &+= 1 }
                if e.port != port || e.lastSeen != now {
                    // Wrapping: 2^64 learns do not happen; a counter must not trap.
                    if now &- e.lastSeen > agingSeconds {
                        aged &+= 1
                        learned &+= 1
                    } else if e.port != port {
                        learned &+= 1
                    }
                    slots[i].port = port
                    slots[i].lastSeen = now
                }
                return true
            }
            i = (i &+ 1) & mask
        }
        // Keep a quarter free so probe sequences stay short and always end.
        if count >= capacity - capacity / 4 {
            rebuild(now: now) { _ in true }
            if count >= capacity - capacity / 4 { return false }
            return learn(key, port: port, now: now)
        }
        slots[i] = Entry(key: key, port: port, lastSeen: now)
        count += 1
        generation &+= 1
        learned &+= 1
        return true
    }

    /// Live entries (not aged out) for `fdb show`.
    public func entries(now: UInt32) -> [Entry] {
        (0..<capacity).compactMap { i in
            let e = slots[i]
            return e.port >= 0 && now &- e.lastSeen <= agingSeconds ? e : nil
        }
    }

    /// Forgets every address learned on `port` (port removed or its guest went away).
    public mutating func remove(port: Int32, now: UInt32) { rebuild(now: now) { $0.port != port } }

    public mutating func removeAll() {
        slots.update(repeating: Entry(key: 0, port: -1, lastSeen: 0), count: capacity)
        count = 0
        generation &+= 1
    }

    /// Re-inserts the live entries that `keep` accepts; drops expired ones. O(capacity),
    /// control-path or table-full only.
    private mutating func rebuild(now: UInt32, keep: (Entry) -> Bool) {
        let live = entries(now: now)
        aged &+= UInt64(count - live.count)
        let kept = live.filter(keep)
        removeAll()
        for e in kept {
            var i = home(e.key)
            while slots[i].port >= 0 { i = (i &+ 1) & mask }
            slots[i] = e
            count += 1
        }
    }
}

extension MacTable {
    /// "52:54:00:00:00:01" for the 48 low bits of a key (network byte order: first octet
    /// in the least significant byte, as loaded from the frame).
    public static func format(mac: UInt64) -> String {
        (0..<6).map { i in
            let b = UInt8(truncatingIfNeeded: mac >> (8 * UInt64(i)))
            return (b < 16 ? "0" : "") + String(b, radix: 16)
        }.joined(separator: ":")
    }
}
