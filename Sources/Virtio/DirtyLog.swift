import CShims
#if canImport(Glibc)
import Glibc
#endif

/// Why a frontend's dirty log (VHOST_USER_SET_LOG_BASE) was refused.
public enum DirtyLogError: Error, Equatable, CustomStringConvertible {
    case emptyLog
    case tooLarge(UInt64)
    case addressOverflow
    case notAFile
    case fileTooSmall(fileSize: Int64, needed: UInt64)
    case mmapFailed(Int32)
    case doesNotCover(guestEnd: UInt64, covered: UInt64)

    public var description: String {
        switch self {
        case .emptyLog: return "dirty log of size 0"
        case .tooLarge(let s): return "dirty log of \(s) bytes is larger than \(DirtyLog.maxBytes) (a guest of 32 TiB)"
        case .addressOverflow: return "dirty log: offset + size overflows"
        case .notAFile: return "dirty log: fd is not a regular file (memfd, tmpfs)"
        case .fileTooSmall(let have, let need):
            return "dirty log: fd is \(have) bytes, the log needs \(need) (would SIGBUS)"
        case .mmapFailed(let e): return "dirty log: mmap failed: \(String(cString: strerror(e)))"
        case .doesNotCover(let end, let covered):
            return "dirty log covers guest memory up to 0x\(String(covered, radix: 16)), but a region ends at 0x\(String(end, radix: 16))"
        }
    }
}

/// The frontend's dirty-page bitmap during live migration (vhost-user.rst, "Migration"):
/// bit `page % 8` of byte `page / 8` for each 4 KiB guest-physical page the switch wrote.
/// QEMU reads and clears it while it copies the guest's memory, and copies again every page
/// marked, so each write the switch makes into the guest must be marked before the frame is
/// published. Unmapped in `deinit`, so it lives as long as the data plane holds it.
public final class DirtyLog: @unchecked Sendable {
    public static let pageShift: UInt64 = 12
    /// 1 GiB of bitmap: 32 TiB of guest memory. A larger size is a hostile value.
    public static let maxBytes: UInt64 = 1 << 30

    private let mapping: UnsafeMutableRawPointer
    private let mappingLength: Int
    public let bytes: UInt64
    public var view: DirtyLogView { DirtyLogView(bits: mapping + (mappingLength - Int(bytes)), bytes: bytes) }
    /// Guest-physical addresses below this have a bit in the log.
    public var coveredEnd: UInt64 { bytes << (Self.pageShift + 3) }

    /// Maps `size` bytes at `offset` of `fd` (which it closes).
    public init(fd: Int32, size: UInt64, offset: UInt64) throws(DirtyLogError) {
        defer { close(fd) }
        guard size > 0 else { throw .emptyLog }
        guard size <= Self.maxBytes else { throw .tooLarge(size) }
        let (end, overflow) = offset.addingReportingOverflow(size)
        guard !overflow, end <= UInt64(Int.max) else { throw .addressOverflow }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { throw .notAFile }
        guard UInt64(max(st.st_size, 0)) >= end else { throw .fileTooSmall(fileSize: Int64(st.st_size), needed: end) }
        // From offset 0, so the mmap offset is page-aligned whatever the log offset is.
        guard let base = mmap(nil, Int(end), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), base != MAP_FAILED
        else { throw .mmapFailed(errno) }
        mapping = base
        mappingLength = Int(end)
        bytes = size
    }

    deinit { munmap(mapping, mappingLength) }

    /// Throws unless every region's guest-physical range has bits in the log.
    public func check(covers regions: [MemoryRegionDescription]) throws(DirtyLogError) {
        let end = regions.map { $0.guestPhysicalAddress &+ $0.size }.max() ?? 0
        guard end <= coveredEnd else { throw .doesNotCover(guestEnd: end, covered: coveredEnd) }
    }
}

/// A reference-free view of a `DirtyLog` for the forwarding thread; valid while the log is.
public struct DirtyLogView {
    public let bits: UnsafeMutableRawPointer
    public let bytes: UInt64

    /// Marks every page of `length` bytes at guest-physical `gpa`. Pages beyond the log are
    /// skipped (the log was checked to cover the memory table; a used ring's log address
    /// comes from the frontend and is only ever written here, bounds-checked).
    public func mark(gpa: UInt64, length: UInt64) {
        guard length > 0 else { return }
        let first = gpa >> DirtyLog.pageShift
        let (end, overflow) = gpa.addingReportingOverflow(length - 1)
        let last = overflow ? UInt64.max >> DirtyLog.pageShift : end >> DirtyLog.pageShift
        var page = first
        while page <= last && page >> 3 < bytes {
            // The frontend reads and clears bits concurrently: an atomic OR (vhost-user.rst).
            vs_atomic_or_u8(bits + Int(page >> 3), UInt8(1) << UInt8(page & 7))
            page &+= 1
        }
    }

    /// Marks `length` bytes the switch wrote at host address `host`, inside guest memory
    /// `memory` (a buffer that crosses regions is marked region by region).
    public func mark(host: UnsafeMutableRawPointer, length: Int, memory: GuestMemoryView) {
        var p = UInt(bitPattern: host)
        var left = UInt(length)
        while left > 0, let (gpa, n) = memory.guestAddress(ofHost: p, left) {
            mark(gpa: gpa, length: UInt64(n))
            p &+= n
            left &-= n
        }
    }
}

extension GuestMemoryView {
    /// The guest-physical address of host address `host` and how many of `length` bytes
    /// from there lie in the same region; nil outside every region. The reverse of
    /// `translate`, for the dirty log (off the hot path: a linear search).
    func guestAddress(ofHost host: UInt, _ length: UInt) -> (UInt64, UInt)? {
        var i = 0
        while i < count {
            let r = regions[i]
            let start = UInt(bitPattern: r.host)
            let size = UInt(r.guestEnd &- r.guestStart)
            if host >= start && host &- start < size {
                let offset = host &- start
                return (r.guestStart &+ UInt64(offset), min(length, size &- offset))
            }
            i &+= 1
        }
        return nil
    }
}
