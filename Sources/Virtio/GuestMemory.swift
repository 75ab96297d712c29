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
}

public enum GuestMemoryError: Error, Equatable, CustomStringConvertible {
    case emptyRegion(index: Int)
    case addressOverflow(index: Int)
    case overlapping(index: Int)
    case fileTooSmall(index: Int, fileSize: Int64, needed: UInt64)
    case fstatFailed(index: Int, errno: Int32)
    case notAFile(index: Int)
    case mmapFailed(index: Int, errno: Int32)

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

/// Guest memory mapped from the fds of SET_MEM_TABLE. Unmapped in `deinit`, so a mapping
/// lives exactly as long as somebody (the forwarding thread's port state) holds it: the
/// control plane can never unmap memory the data plane still reads.
public final class GuestMemory: @unchecked Sendable {
    public let descriptions: [MemoryRegionDescription]
    private let storage: UnsafeMutablePointer<MappedRegion>
    private let mappings: [(UnsafeMutableRawPointer, Int)]
    /// Each mapping's slot in the SIGBUS guard's table (-1: the table was full).
    private let guardSlots: [Int32]
    public var view: GuestMemoryView { GuestMemoryView(regions: storage, count: descriptions.count) }

    /// Maps every region; takes ownership of `fds` (all closed before returning, mapped or not).
    public init(regions: [MemoryRegionDescription], fds: [Int32]) throws(GuestMemoryError) {
        defer { for fd in fds { close(fd) } }
        precondition(regions.count == fds.count, "caller checks one fd per region")
        // Map everything before any stored property is set, so a failure leaves nothing
        // for deinit and nothing mapped.
        var mapped: [(UnsafeMutableRawPointer, Int)] = []
        var entries: [MappedRegion] = []
        do {
            for (i, r) in regions.enumerated() {
                try Self.validate(r, index: i, against: regions[..<i])
                let (base, len, host) = try Self.map(r, fd: fds[i], index: i)
                mapped.append((base, len))
                entries.append(MappedRegion(
                    guestStart: r.guestPhysicalAddress, guestEnd: r.guestPhysicalAddress + r.size,
                    userStart: r.userAddress, userEnd: r.userAddress + r.size, host: host))
            }
        } catch {
            for (base, len) in mapped { munmap(base, len) }
            throw error
        }
        descriptions = regions
        mappings = mapped
        guardSlots = mapped.map { vs_memguard_add($0.0, $0.1) }
        storage = .allocate(capacity: max(entries.count, 1))
        storage.initialize(from: entries, count: entries.count)
    }

    deinit {
        for slot in guardSlots { vs_memguard_remove(slot) }
        for (base, len) in mappings { munmap(base, len) }
        storage.deallocate()
    }

    /// The first region whose file shrank under a mapping (the SIGBUS handler replaced the
    /// mapping with zeros: memguard.c), or nil. Its contents are gone; the owner must drop
    /// this memory table and the connection that sent it.
    public var faultedRegion: Int? {
        guardSlots.firstIndex { vs_memguard_faults($0) > 0 }
    }

    private static func validate(_ r: MemoryRegionDescription, index i: Int,
                                 against earlier: ArraySlice<MemoryRegionDescription>) throws(GuestMemoryError) {
        guard r.size > 0 else { throw .emptyRegion(index: i) }
        let (gEnd, o1) = r.guestPhysicalAddress.addingReportingOverflow(r.size)
        let (_, o2) = r.userAddress.addingReportingOverflow(r.size)
        let (_, o3) = r.mmapOffset.addingReportingOverflow(r.size)
        guard !o1, !o2, !o3, r.size <= UInt64(Int.max) else { throw .addressOverflow(index: i) }
        for e in earlier where r.guestPhysicalAddress < e.guestPhysicalAddress + e.size
            && e.guestPhysicalAddress < gEnd {
            throw .overlapping(index: i)
        }
    }

    /// mmap(fd) from offset 0 to mmap_offset + size. Mapping from 0 keeps the mmap offset
    /// page-aligned for any page size (hugetlbfs needs 2 MiB alignment).
    private static func map(_ r: MemoryRegionDescription, fd: Int32, index i: Int)
        throws(GuestMemoryError) -> (UnsafeMutableRawPointer, Int, UnsafeMutableRawPointer) {
        // A frontend that shrinks the file after we mapped it would make our next access
        // raise SIGBUS. QEMU's memfd backend seals it already; seal what we can.
        _ = vs_seal_shrink(fd)
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
        return (base, len, base + Int(r.mmapOffset))
    }
}
