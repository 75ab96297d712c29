import Virtio

/// Typed payloads, each decoded and validated once (size, counts, overflow) so the device
/// logic can rely on them.

public struct VringState: Equatable, Sendable {
    public var index: UInt32
    public var num: UInt32
    public init(index: UInt32, num: UInt32) {
        self.index = index
        self.num = num
    }
    static let size = 8
    init(validating p: [UInt8], _ request: String) throws(VhostUserError) {
        guard p.count == Self.size else { throw .badPayloadSize(request: request, size: p.count) }
        index = p.readLE(UInt32.self, at: 0)
        num = p.readLE(UInt32.self, at: 4)
    }
    var encoded: [UInt8] {
        var b = [UInt8]()
        b.appendLE(index)
        b.appendLE(num)
        return b
    }
}

public struct VringAddress: Equatable, Sendable {
    public var index: UInt32
    public var flags: UInt32
    public var descriptorUser: UInt64
    public var usedUser: UInt64
    public var availUser: UInt64
    public var log: UInt64
    static let size = 40
    /// VHOST_VRING_F_LOG: log used-ring writes at `log` (live migration).
    public static let logFlag: UInt32 = 1 << 0
    public init(index: UInt32, flags: UInt32, descriptorUser: UInt64, usedUser: UInt64, availUser: UInt64, log: UInt64) {
        self.index = index
        self.flags = flags
        self.descriptorUser = descriptorUser
        self.usedUser = usedUser
        self.availUser = availUser
        self.log = log
    }
    init(validating p: [UInt8]) throws(VhostUserError) {
        guard p.count == Self.size else { throw .badPayloadSize(request: "SET_VRING_ADDR", size: p.count) }
        index = p.readLE(UInt32.self, at: 0)
        flags = p.readLE(UInt32.self, at: 4)
        descriptorUser = p.readLE(UInt64.self, at: 8)
        usedUser = p.readLE(UInt64.self, at: 16)
        availUser = p.readLE(UInt64.self, at: 24)
        log = p.readLE(UInt64.self, at: 32)
    }
}

/// SET_MEM_TABLE: u32 count, u32 padding, then count x (gpa, size, uaddr, mmap_offset).
public struct MemoryTable: Equatable, Sendable {
    /// One fd per region, and a message carries at most 8 (VS_MAX_FDS); tables larger than
    /// this come region by region (ADD_MEM_REG, up to VhostUserDevice.maxMemorySlots).
    public static let maxRegions = 8
    public var regions: [MemoryRegionDescription]
    public init(regions: [MemoryRegionDescription]) { self.regions = regions }

    init(validating p: [UInt8], fdCount: Int) throws(VhostUserError) {
        guard p.count >= 8 else { throw .badPayloadSize(request: "SET_MEM_TABLE", size: p.count) }
        let n = p.readLE(UInt32.self, at: 0)
        guard n >= 1, n <= UInt32(Self.maxRegions) else { throw .tooManyRegions(n) }
        // QEMU sends the full 8-slot array; accept exactly the used part or the full array.
        let needed = 8 + 32 * Int(n)
        guard p.count == needed || p.count == 8 + 32 * Self.maxRegions else {
            throw .badPayloadSize(request: "SET_MEM_TABLE", size: p.count)
        }
        guard fdCount == Int(n) else { throw .badFdCount(request: "SET_MEM_TABLE", count: fdCount) }
        regions = (0..<Int(n)).map { i in
            let o = 8 + 32 * i
            return MemoryRegionDescription(guestPhysicalAddress: p.readLE(UInt64.self, at: o),
                                           size: p.readLE(UInt64.self, at: o + 8),
                                           userAddress: p.readLE(UInt64.self, at: o + 16),
                                           mmapOffset: p.readLE(UInt64.self, at: o + 24))
        }
    }

    public var encoded: [UInt8] {
        var b = [UInt8]()
        b.appendLE(UInt32(regions.count))
        b.appendLE(UInt32(0))
        for r in regions {
            b.appendLE(r.guestPhysicalAddress)
            b.appendLE(r.size)
            b.appendLE(r.userAddress)
            b.appendLE(r.mmapOffset)
        }
        return b
    }
}

/// ADD_MEM_REG and REM_MEM_REG (vhost-user.rst, "Single memory region description"):
/// u64 padding, then one region (gpa, size, uaddr, mmap_offset). The padding is not
/// checked: QEMU zeroes it, and nothing depends on it. The region's own values (size 0,
/// overflowing sums) are checked here, once.
public struct SingleMemoryRegion: Equatable, Sendable {
    static let size = 40
    public var region: MemoryRegionDescription
    public init(region: MemoryRegionDescription) { self.region = region }

    init(validating p: [UInt8], _ request: String) throws(VhostUserError) {
        guard p.count == Self.size else { throw .badPayloadSize(request: request, size: p.count) }
        region = MemoryRegionDescription(guestPhysicalAddress: p.readLE(UInt64.self, at: 8),
                                         size: p.readLE(UInt64.self, at: 16),
                                         userAddress: p.readLE(UInt64.self, at: 24),
                                         mmapOffset: p.readLE(UInt64.self, at: 32))
        do { try region.validate(index: 0) } catch { throw .memory(error) }
    }

    public var encoded: [UInt8] {
        var b = [UInt8]()
        b.appendLE(UInt64(0))
        b.appendLE(region.guestPhysicalAddress)
        b.appendLE(region.size)
        b.appendLE(region.userAddress)
        b.appendLE(region.mmapOffset)
        return b
    }
}

/// SET_VRING_KICK/CALL/ERR: u64 with the queue index in bits 0-7 and "no fd" in bit 8.
public struct VringFileDescriptor: Equatable, Sendable {
    public static let invalidFdFlag: UInt64 = 1 << 8
    public var index: UInt32
    public var fd: Int32?

    init(validating p: [UInt8], fds: [Int32], _ request: String) throws(VhostUserError) {
        guard p.count == 8 else { throw .badPayloadSize(request: request, size: p.count) }
        let v = p.readLE(UInt64.self, at: 0)
        guard v & ~(Self.invalidFdFlag | 0xff) == 0 else { throw .badPayloadSize(request: request, size: p.count) }
        index = UInt32(v & 0xff)
        let noFd = v & Self.invalidFdFlag != 0
        guard fds.count == (noFd ? 0 : 1) else { throw .badFdCount(request: request, count: fds.count) }
        fd = noFd ? nil : fds[0]
    }
}

func decodeU64(_ p: [UInt8], _ request: String) throws(VhostUserError) -> UInt64 {
    guard p.count == 8 else { throw .badPayloadSize(request: request, size: p.count) }
    return p.readLE(UInt64.self, at: 0)
}

func encodeU64(_ v: UInt64) -> [UInt8] {
    var b = [UInt8]()
    b.appendLE(v)
    return b
}

/// SET_LOG_BASE: u64 size and u64 offset of the log in the message's fd (vhost-user "Log
/// description"). The values are checked when the log is mapped (`DirtyLog`).
public struct LogDescription: Equatable, Sendable {
    public var size: UInt64
    public var offset: UInt64
    static let size = 16
    public init(size: UInt64, offset: UInt64) {
        self.size = size
        self.offset = offset
    }
    init(validating p: [UInt8]) throws(VhostUserError) {
        guard p.count == Self.size else { throw .badPayloadSize(request: "SET_LOG_BASE", size: p.count) }
        size = p.readLE(UInt64.self, at: 0)
        offset = p.readLE(UInt64.self, at: 8)
    }
    public var encoded: [UInt8] {
        var b = [UInt8]()
        b.appendLE(size)
        b.appendLE(offset)
        return b
    }
}
