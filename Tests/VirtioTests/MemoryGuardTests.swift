import CShims
import XCTest
@testable import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// A frontend may truncate the file behind a memory region after the switch mapped it (a
/// plain file, or a memfd created without sealing). The next access must not kill the
/// process: the guard (memguard.c) replaces the mapping with zeros and names the region.
final class MemoryGuardTests: XCTestCase {
    override func setUp() {
        XCTAssertGreaterThanOrEqual(vs_memguard_install(), 0)
    }

    func region(_ size: Int) -> MemoryRegionDescription {
        MemoryRegionDescription(guestPhysicalAddress: 0x1_0000_0000, size: UInt64(size),
                                userAddress: 0x7f00_0000_0000, mmapOffset: 0)
    }

    /// 20 times in a row: map, touch, shrink the file to 0, touch again.
    func shrinkRepeatedly(_ makeFile: () -> Int32, file: StaticString = #filePath, line: UInt = #line) throws {
        for round in 0..<20 {
            let fd = makeFile()
            XCTAssertGreaterThanOrEqual(fd, 0, file: file, line: line)
            XCTAssertEqual(ftruncate(fd, 1 << 20), 0, file: file, line: line)
            let memory = try GuestMemory(regions: [region(1 << 20)], fds: [dup(fd)])
            let (p, _) = try XCTUnwrap(memory.view.translate(0x1_0000_0000 + 8192, 16))
            p.storeBytes(of: 42 as UInt64, as: UInt64.self)
            XCTAssertEqual(p.load(as: UInt64.self), 42, file: file, line: line)
            XCTAssertNil(memory.faultedRegion, file: file, line: line)
            XCTAssertEqual(ftruncate(fd, 0), 0, "round \(round): the file could be shrunk", file: file, line: line)
            XCTAssertEqual(p.load(as: UInt64.self), 0, "round \(round): the lost page reads as zeros", file: file, line: line)
            XCTAssertEqual(memory.faultedRegion, 0, "round \(round)", file: file, line: line)
            p.storeBytes(of: 7 as UInt64, as: UInt64.self)   // writes land in anonymous memory now
            XCTAssertEqual(p.load(as: UInt64.self), 7, file: file, line: line)
            close(fd)
        }
    }

    func testUnsealedMemfdShrunkUnderTheMapping() throws {
        try shrinkRepeatedly { vs_memfd_create("guard-test") }   // no MFD_ALLOW_SEALING: it cannot be sealed
    }

    func testPlainShmFileShrunkUnderTheMapping() throws {
        try shrinkRepeatedly {
            let path = "/dev/shm/vsw-guard-\(getpid())"
            let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
            unlink(path)
            return fd
        }
    }

    /// A memfd that allows sealing is sealed at map time: it cannot shrink at all.
    func testSealableMemfdIsSealedAgainstShrinking() throws {
        let fd = vs_memfd_create_sealable("guard-sealable")
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        XCTAssertEqual(ftruncate(fd, 1 << 20), 0)
        let memory = try GuestMemory(regions: [region(1 << 20)], fds: [dup(fd)])
        XCTAssertNotEqual(ftruncate(fd, 0), 0, "F_SEAL_SHRINK was added when the switch mapped it")
        XCTAssertNil(memory.faultedRegion)
    }
}
