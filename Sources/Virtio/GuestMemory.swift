import CShims
#if canImport(Glibc)
import Glibc
#endif

/// One region of the frontend's memory table as it came over the wire
/// (vhost-user "Memory regions description").
public struct MemoryRegionDescription: Equatable, Sendable {
    public var guestPhysicalAddress: UInt64
    public var size: UInt64
    public var userAddress: UInt64
    public var mmapOffset: UInt64
    public init(guestPhysicalAddress: UInt64, size: UInt64, userAddress: UInt64, mmapOffset: UInt64) {
        self.guestPhysicalAddress = guestPhysicalAddress
        self.size = size
        self.userAddress = userAddress
        self.mmapOffset = mmapOffset
    }

    /// Size not 0, and no end (guest-physical, frontend-virtual, file offset) past 2^64:
    /// after this, `start + size` cannot trap. `index` names the region in the error.
    public func validate(index i: Int) throws(GuestMemoryError) {
        guard size > 0 else { throw .emptyRegion(index: i) }
        let (_, o1) = guestPhysicalAddress.addingReportingOverflow(size)
        let (_, o2) = userAddress.addingReportingOverflow(size)
        let (_, o3) = mmapOffset.addingReportingOverflow(size)
        guard !o1, !o2, !o3, size <= UInt64(Int.max) else { throw .addressOverflow(index: i) }
    }
}

public enum GuestMemoryError: Error, Equatable, CustomStringConvertible {
    case emptyRegion(index: Int)
    case addressOverflow(index: Int)
    case overlapping(index: Int)
    case fileTooSmall(index: Int, fileSize: Int64, needed: UInt64)
    case fstatFailed(index: Int, errno: Int32)
    case notAFile(index: Int)
    case mmapFailed(index: Int, errno: Int32)
    case noSuchRegion(guestPhysicalAddress: UInt64, size: UInt64)

    public var description: String {
        switch self {
        case .emptyRegion(let i): return "memory region \(i) has size 0"
        case .addressOverflow(let i): return "memory region \(i): address + size overflows"
        case .overlapping(let i): return "memory region \(i) overlaps another region"
        case .fileTooSmall(let i, let have, let need):
            return "memory region \(i): fd is \(have) bytes, mapping needs \(need) (would SIGBUS)"
        case .notAFile(let i): return "memory region \(i): fd is not a regular file (memfd, tmpfs, hugetlbfs)"
        case .fstatFailed(let i, let e): return "memory region \(i): fstat failed: \(String(cString: strerror(e)))"
        case .mmapFailed(let i, let e): return "memory region \(i): mmap failed: \(String(cString: strerror(e)))"
        case .noSuchRegion(let gpa, let size):
            return "no memory region at guest address 0x\(String(gpa, radix: 16)) of \(size) bytes to remove"
        }
    }
}

/// A mapped region, laid out for the hot path: plain values, no references.
public struct MappedRegion {
    public let guestStart: UInt64
    public let guestEnd: UInt64   // exclusive; no overflow (checked at decode)
    public let userStart: UInt64
    public let userEnd: UInt64
    public let host: UnsafeMutableRawPointer
}

/// A copyable, reference-free view of a memory table for the forwarding thread.
/// Valid only while the `GuestMemory` that made it is alive.
public struct GuestMemoryView {
    public let regions: UnsafePointer<MappedRegion>
    public let count: Int

    /// Translates the start of a guest-physical range. Returns the host address and how
    /// many of `length` bytes are contiguous there (a buffer may cross region edges:
    /// call again with the rest). nil when `gpa` is in no region.
    @inlinable @inline(__always)
    public func translate(_ gpa: UInt64, _ length: UInt64) -> (UnsafeMutableRawPointer, UInt64)? {
        var i = 0
        while i < count {
            let r = regions[i]
            if gpa >= r.guestStart && gpa < r.guestEnd {
                // SAFETY: gpa - guestStart < region size, so the pointer stays inside the mapping.
                let offset = gpa &- r.guestStart
                let available = r.guestEnd &- gpa
                return (r.host + Int(offset), min(length, available))
            }
            i &+= 1
        }
        return nil
    }

    /// Translates a whole guest-physical range that must be contiguous in host memory
    /// (ring parts, indirect tables). nil if any byte is unmapped or it crosses regions.
    @inlinable
    public func translateContiguous(_ gpa: UInt64, _ length: UInt64) -> UnsafeMutableRawPointer? {
        guard let (p, n) = translate(gpa, length), n == length else { return nil }
        return p
    }

    /// Translates a frontend (QEMU process) virtual address range, as used by SET_VRING_ADDR.
    public func translateUser(_ uva: UInt64, _ length: UInt64) -> UnsafeMutableRawPointer? {
        for i in 0..<count {
            let r = regions[i]
            guard uva >= r.userStart && uva < r.userEnd else { continue }
            guard length <= r.userEnd &- uva else { return nil }
            return r.host + Int(uva &- r.userStart)
        }
        return nil
    }
}

/// What backs a memory region, as far as it is cheap to tell at map time.
public enum MemoryBacking: String, Sendable {
    /// memfd_create (QEMU's memory-backend-memfd).
    case memfd
    /// A hugetlbfs file or a hugetlb memfd (2 MiB pages; DPDK, memory-backend-file on /dev/hugepages).
    case hugetlbfs
    /// Any other regular file (tmpfs, /dev/shm).
    case file
}

/// One region mapped from its fd. Unmapped (and dropped from the SIGBUS guard) in `deinit`,
/// so one mapping can be shared by the memory table before and after ADD_MEM_REG or
/// REM_MEM_REG: only a region that no table holds any more is unmapped, and only once the
/// data plane has let go of the table that held it.
public final class GuestMapping: @unchecked Sendable {
    public let description: MemoryRegionDescription
    public let backing: MemoryBacking
    /// The file is sealed against shrinking (F_SEAL_SHRINK): it cannot fault under us.
    public let sealed: Bool
    let base: UnsafeMutableRawPointer
    let length: Int
    let host: UnsafeMutableRawPointer
    /// The mapping's slot in the SIGBUS guard's table (-1: the table was full).
    let guardSlot: Int32

    /// Validates `r` alone (size, overflow), checks the file and maps it. Does not take `fd`.
    init(_ r: MemoryRegionDescription, fd: Int32, index i: Int) throws(GuestMemoryError) {
        try r.validate(index: i)
        // A frontend that shrinks the file after we mapped it would make our next access
        // raise SIGBUS. QEMU's memfd backend seals it already; seal what we can.
        sealed = vs_seal_shrink(fd) == 1
        (base, length) = try Self.map(r, fd: fd, index: i)
        backing = Self.backing(vs_fd_backing(fd))
        description = r
        // SAFETY: mapOffset + size <= length (map), so host + size stays inside the mapping.
        host = base + Int(r.mmapOffset)
        guardSlot = vs_memguard_add(base, length)
    }

    deinit {
        vs_memguard_remove(guardSlot)
        munmap(base, length)
    }

    /// The file shrank under this mapping and the SIGBUS guard replaced it with zeros.
    var faulted: Bool { vs_memguard_faults(guardSlot) > 0 }

    var entry: MappedRegion {
        // No overflow: checked by MemoryRegionDescription.validate.
        MappedRegion(guestStart: description.guestPhysicalAddress,
                     guestEnd: description.guestPhysicalAddress + description.size,
                     userStart: description.userAddress, userEnd: description.userAddress + description.size,
                     host: host)
    }

    /// Overlap in guest-physical space (both ranges were validated: no overflow).
    func overlaps(_ r: MemoryRegionDescription) -> Bool {
        let d = description
        return r.guestPhysicalAddress < d.guestPhysicalAddress + d.size
            && d.guestPhysicalAddress < r.guestPhysicalAddress + r.size
    }

    private static func backing(_ code: Int32) -> MemoryBacking {
        switch code {
        case 1: return .memfd
        case 2: return .hugetlbfs
        default: return .file
        }
    }

    /// mmap(fd) from offset 0 to mmap_offset + size. Mapping from 0 keeps the mmap offset
    /// page-aligned for any page size (hugetlbfs needs 2 MiB alignment).
    private static func map(_ r: MemoryRegionDescription, fd: Int32, index i: Int)
        throws(GuestMemoryError) -> (UnsafeMutableRawPointer, Int) {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .fstatFailed(index: i, errno: errno) }
        let needed = r.mmapOffset + r.size   // no overflow: checked in validate
        // Guest RAM is a memfd, a tmpfs or hugetlbfs file: a regular file whose size says
        // how much may be touched. Anything else (a device, a pipe) has no size to check
        // against, so a mapping of it could fault: refuse it.
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw .notAFile(index: i) }
        if UInt64(max(st.st_size, 0)) < needed {
            throw .fileTooSmall(index: i, fileSize: Int64(st.st_size), needed: needed)
        }
        guard needed <= UInt64(Int.max) else { throw .addressOverflow(index: i) }
        let len = Int(needed)
        guard let base = mmap(nil, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0),
              base != MAP_FAILED else { throw .mmapFailed(index: i, errno: errno) }
        return (base, len)
    }
}

/// A memory table: the mapped regions of SET_MEM_TABLE, or of ADD_MEM_REG / REM_MEM_REG
/// one at a time. Immutable: a change builds a new table sharing the unchanged mappings
/// (`adding`, `removing`). A running ring holds the table it was translated through, so a
/// mapping lives exactly as long as somebody (the forwarding thread's port state) holds a
/// table with it: the control plane can never unmap memory the data plane still reads.
public final class GuestMemory: @unchecked Sendable {
    public let mappings: [GuestMapping]
    private let storage: UnsafeMutablePointer<MappedRegion>
    public var descriptions: [MemoryRegionDescription] { mappings.map(\.description) }
    public var view: GuestMemoryView { GuestMemoryView(regions: storage, count: mappings.count) }

    /// Maps every region; takes ownership of `fds` (all closed before returning, mapped or not).
    public convenience init(regions: [MemoryRegionDescription], fds: [Int32]) throws(GuestMemoryError) {
        defer { for fd in fds { close(fd) } }
        precondition(regions.count == fds.count, "caller checks one fd per region")
        // A failure drops the mappings made so far (their deinit unmaps them).
        var mapped: [GuestMapping] = []
        for (i, r) in regions.enumerated() {
            try r.validate(index: i)
            if mapped.contains(where: { $0.overlaps(r) }) { throw .overlapping(index: i) }
            mapped.append(try GuestMapping(r, fd: fds[i], index: i))
        }
        self.init(mappings: mapped)
    }

    /// An empty table: what ADD_MEM_REG starts from.
    public convenience init() { self.init(mappings: []) }

    private init(mappings: [GuestMapping]) {
        self.mappings = mappings
        storage = .allocate(capacity: max(mappings.count, 1))
        storage.initialize(from: mappings.map(\.entry), count: mappings.count)
    }

    deinit {
        storage.deinitialize(count: mappings.count)
        storage.deallocate()
    }

    /// This table plus region `r` mapped from `fd` (ADD_MEM_REG). Takes ownership of `fd`
    /// (closed before returning). Nothing is mapped when `r` is invalid or overlaps.
    public func adding(_ r: MemoryRegionDescription, fd: Int32) throws(GuestMemoryError) -> GuestMemory {
        defer { close(fd) }
        let i = mappings.count
        try r.validate(index: i)
        guard !mappings.contains(where: { $0.overlaps(r) }) else { throw .overlapping(index: i) }
        return GuestMemory(mappings: mappings + [try GuestMapping(r, fd: fd, index: i)])
    }

    /// This table without the region at `r`'s guest-physical address and size
    /// (REM_MEM_REG; QEMU sends the mmap offset as 0 there, so it is not compared). The
    /// removed region stays mapped until this table is released too.
    public func removing(_ r: MemoryRegionDescription) throws(GuestMemoryError) -> GuestMemory {
        guard let i = mappings.firstIndex(where: {
            $0.description.guestPhysicalAddress == r.guestPhysicalAddress && $0.description.size == r.size
        }) else { throw .noSuchRegion(guestPhysicalAddress: r.guestPhysicalAddress, size: r.size) }
        var rest = mappings
        rest.remove(at: i)
        return GuestMemory(mappings: rest)
    }

    /// The first region whose file shrank under a mapping (the SIGBUS handler replaced the
    /// mapping with zeros: memguard.c), or nil. Its contents are gone; the owner must drop
    /// this memory table and the connection that sent it.
    public var faultedRegion: Int? {
        mappings.firstIndex { $0.faulted }
    }
}
