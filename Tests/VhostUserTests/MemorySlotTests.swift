import CShims
import Foundation
import GuestSimulator
import Logging
import Virtio
import XCTest
@testable import VhostUser

/// More than 8 memory regions (issue 21, part 3): CONFIGURE_MEM_SLOTS, ADD_MEM_REG and
/// REM_MEM_REG driven into the device the way QEMU sends them, with running rings, and the
/// hostile cases: overlaps, removals of regions that do not exist, thousands of adds, short
/// files. Every case counts fds, memfd mappings and SIGBUS-guard entries before and after.
final class MemorySlotTests: XCTestCase {
    var backend: RecordingBackend!
    var device: VhostUserDevice!
    let guest = SimulatedGuest(memorySize: 1 << 20, queueSize: 256, bufferSize: 64)
    var fdsBefore = 0
    var mapsBefore = 0
    var guardsBefore = 0

    override func setUp() {
        backend = RecordingBackend()
        device = VhostUserDevice(backend: backend, logger: Logger(label: "t"))
        fdsBefore = Self.openFds()
        mapsBefore = Self.mappings()
        guardsBefore = Int(vs_memguard_registered())
    }

    /// After each test the device is reset: every fd it took is closed and every region unmapped.
    override func tearDown() {
        device.reset()
        XCTAssertEqual(Self.openFds(), fdsBefore, "fds leaked")
        XCTAssertEqual(Self.mappings(), mapsBefore, "mappings leaked")
        XCTAssertEqual(Int(vs_memguard_registered()), guardsBefore, "SIGBUS guard entries leaked")
    }

    static func openFds() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1 }
    /// Mappings of this test's memfds ("slot-test") and the simulated guest's, by line of /proc/self/maps.
    static func mappings() -> Int {
        procMaps().split(separator: "\n").filter { $0.contains("memfd:") }.count
    }

    /// /proc/self/maps read to its end (a proc file has no size, so read until EOF).
    static func procMaps() -> String {
        let fd = open("/proc/self/maps", O_RDONLY)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    func send(_ r: VhostUserRequest, _ payload: [UInt8] = [], fds: [Int32] = []) throws -> [UInt8]? {
        try device.handle(VhostUserMessage(header: VhostUserHeader(request: r.rawValue, flags: 1, size: UInt32(payload.count)),
                                           payload: payload, fds: fds))
    }

    func memfd(_ size: Int, sealable: Bool = false) -> Int32 {
        let fd = sealable ? vs_memfd_create_sealable("slot-test") : vs_memfd_create("slot-test")
        ftruncate(fd, off_t(size))
        return fd
    }

    /// A 64 KiB region at guest-physical `k` x 1 MiB (below the simulated guest's 4 GiB).
    func region(_ k: Int, size: UInt64 = 64 << 10) -> MemoryRegionDescription {
        MemoryRegionDescription(guestPhysicalAddress: UInt64(k) << 20, size: size,
                                userAddress: 0x1000_0000_0000 + (UInt64(k) << 20), mmapOffset: 0)
    }

    func add(_ r: MemoryRegionDescription, fd: Int32) throws {
        _ = try send(.addMemReg, SingleMemoryRegion(region: r).encoded, fds: [fd])
    }

    func remove(_ r: MemoryRegionDescription, fd: Int32? = nil) throws {
        _ = try send(.remMemReg, SingleMemoryRegion(region: r).encoded, fds: fd.map { [$0] } ?? [])
    }

    func negotiate() throws {
        _ = try send(.setFeatures, encodeU64(VirtioFeature.version1 | VirtioFeature.vhostUserProtocolFeatures))
        _ = try send(.setProtocolFeatures, encodeU64(VhostUserProtocolFeature.configureMemSlots | VhostUserProtocolFeature.replyAck))
    }

    /// QEMU's start with CONFIGURE_MEM_SLOTS: regions one by one (the guest's RAM among
    /// them, where the rings are), then the rings.
    func startRingsInAddedRegion() throws {
        try negotiate()
        try add(region(1), fd: memfd(64 << 10))
        let (r, fd) = guest.memoryTable()
        try add(r, fd: fd)
        for q in 0..<2 {
            let ring = guest.rings[q]
            func user(_ gpa: UInt64) -> UInt64 { gpa - SimulatedGuest.guestBase + SimulatedGuest.userBase }
            var a = [UInt8]()
            a.appendLE(UInt32(q)); a.appendLE(UInt32(0))
            a.appendLE(user(ring.desc)); a.appendLE(user(ring.used)); a.appendLE(user(ring.avail)); a.appendLE(UInt64(0))
            _ = try send(.setVringNum, VringState(index: UInt32(q), num: 256).encoded)
            _ = try send(.setVringAddr, a)
            _ = try send(.setVringKick, encodeU64(UInt64(q)), fds: [vs_eventfd(0)])
            _ = try send(.setVringEnable, VringState(index: UInt32(q), num: 1).encoded)
        }
        XCTAssertEqual(Set(backend.started.keys), [0, 1])
    }

    func assertRefused(_ what: String, _ body: () throws -> Void, check: (VhostUserError) -> Bool) {
        XCTAssertThrowsError(try body(), what) { e in
            guard let e = e as? VhostUserError else { return XCTFail("\(what): \(e)") }
            XCTAssertTrue(check(e), "\(what): \(e)")
        }
    }

    // MARK: negotiation

    func testFeatureOfferedWithSixtyFourSlots() throws {
        let offered = try XCTUnwrap(send(.getProtocolFeatures))
        XCTAssertNotEqual(offered.readLE(UInt64.self, at: 0) & VhostUserProtocolFeature.configureMemSlots, 0)
        XCTAssertEqual(try send(.getMaxMemSlots), encodeU64(64))
        XCTAssertGreaterThanOrEqual(VhostUserDevice.maxMemorySlots, 32)
    }

    func testAddAndRemoveNeedTheFeature() throws {
        _ = try send(.setFeatures, encodeU64(VirtioFeature.version1 | VirtioFeature.vhostUserProtocolFeatures))
        assertRefused("ADD_MEM_REG without CONFIGURE_MEM_SLOTS", { try add(region(0), fd: memfd(64 << 10)) }) {
            $0 == .featureNotNegotiated(request: "addMemReg", feature: "CONFIGURE_MEM_SLOTS")
        }
        assertRefused("REM_MEM_REG without CONFIGURE_MEM_SLOTS", { try remove(region(0)) }) {
            if case .featureNotNegotiated = $0 { return true } else { return false }
        }
        XCTAssertNil(device.memory)
    }

    // MARK: rings keep running

    func testRegionsAddedAndRemovedWhileRingsRunRestartThem() throws {
        try startRingsInAddedRegion()
        // Up to the limit, while the rings run: each change stops and restarts both rings
        // through the new table.
        for k in 2..<(VhostUserDevice.maxMemorySlots) {
            backend.stopped = []
            try add(region(k), fd: memfd(64 << 10))
            XCTAssertEqual(Set(backend.stopped), [0, 1], "region \(k)")
            XCTAssertEqual(Set(backend.started.keys), [0, 1], "region \(k)")
        }
        XCTAssertEqual(device.memory?.mappings.count, VhostUserDevice.maxMemorySlots)
        XCTAssertEqual(device.memoryRegions.count, VhostUserDevice.maxMemorySlots)
        XCTAssertEqual(Int(vs_memguard_registered()), guardsBefore + VhostUserDevice.maxMemorySlots)
        assertRefused("one over the limit", { try add(region(200), fd: memfd(64 << 10)) }) {
            $0 == .memorySlotsFull(limit: VhostUserDevice.maxMemorySlots)
        }
        // The rings' own table went through every change; its mappings are the device's.
        XCTAssertTrue(backend.started[1]?.memory === device.memory)
        for k in 2..<(VhostUserDevice.maxMemorySlots) { try remove(region(k)) }
        XCTAssertEqual(device.memory?.mappings.count, 2)
        XCTAssertEqual(Set(backend.started.keys), [0, 1])
        XCTAssertEqual(Self.mappings(), mapsBefore + 2, "removed regions are unmapped (the guest's own mapping stays)")
    }

    func testRemovingTheRegionWithTheRingsStopsThemCleanly() throws {
        try startRingsInAddedRegion()
        let (r, unused) = guest.memoryTable()
        close(unused)
        try remove(r)
        XCTAssertTrue(backend.started.isEmpty, "rings inside the removed region stopped")
        XCTAssertEqual(device.runningQueueCount, 0)
        XCTAssertEqual(device.memory?.mappings.count, 1)
        // The port is in a sane state: the base can be read, and the rings start again once
        // the frontend puts the region back and sets them up.
        XCTAssertEqual(try send(.getVringBase, VringState(index: 1, num: 0).encoded), VringState(index: 1, num: 42).encoded)
        let (again, fd) = guest.memoryTable()
        try add(again, fd: fd)
        XCTAssertTrue(backend.started.isEmpty, "a stopped ring waits for the frontend")
        for q in 0..<2 { _ = try send(.setVringKick, encodeU64(UInt64(q)), fds: [vs_eventfd(0)]) }
        XCTAssertEqual(Set(backend.started.keys), [0, 1])
    }

    func testRemovalCarryingTheRegionsFdIsAccepted() throws {
        try negotiate()
        let fd = memfd(64 << 10)
        try add(region(3), fd: dup(fd))
        try remove(region(3), fd: fd)   // QEMU 7.2 sends the region's fd along
        XCTAssertNil(device.memory)
    }

    // MARK: hostile frontends

    func testOverlappingAddIsRefusedAndMapsNothing() throws {
        try negotiate()
        try add(region(4, size: 1 << 20), fd: memfd(1 << 20))
        let mapped = Self.mappings()
        var inside = region(4, size: 4096)
        inside.guestPhysicalAddress += 8192
        inside.userAddress = 0x2000_0000_0000
        assertRefused("a region inside another", { try add(inside, fd: memfd(1 << 20)) }) { $0 == .memory(.overlapping(index: 1)) }
        var straddling = region(3, size: 2 << 20)
        straddling.userAddress = 0x3000_0000_0000
        assertRefused("a region across the start of another", { try add(straddling, fd: memfd(2 << 20)) }) {
            $0 == .memory(.overlapping(index: 1))
        }
        XCTAssertEqual(Self.mappings(), mapped)
        XCTAssertEqual(device.memory?.mappings.count, 1)
    }

    /// QEMU runs one vhost device per queue pair on one connection, and each adds (and
    /// removes) every region: the same region again is another reference, not an overlap,
    /// and the mapping goes with the last removal.
    func testTheSameRegionFromEachQueuePairIsReferencedNotRefused() throws {
        try negotiate()
        let fdsBefore = Self.openFds()
        try add(region(4, size: 1 << 20), fd: memfd(1 << 20))
        let mapped = Self.mappings()
        try add(region(4, size: 1 << 20), fd: memfd(1 << 20))
        XCTAssertEqual(device.memory?.mappings.count, 1)
        XCTAssertEqual(Self.mappings(), mapped, "mapped once")
        try remove(region(4, size: 1 << 20))
        XCTAssertEqual(device.memory?.mappings.count, 1, "the other queue pair still has it")
        try remove(region(4, size: 1 << 20))
        XCTAssertNil(device.memory)
        XCTAssertEqual(Self.openFds(), fdsBefore, "the second add's fd was closed")
        assertRefused("a third removal", { try remove(region(4, size: 1 << 20)) }) {
            if case .memory(.noSuchRegion) = $0 { return true } else { return false }
        }
    }

    func testRemovingARegionThatDoesNotExist() throws {
        try negotiate()
        assertRefused("removal from an empty table", { try remove(region(5)) }) {
            $0 == .memory(.noSuchRegion(guestPhysicalAddress: 5 << 20, size: 64 << 10))
        }
        try add(region(5), fd: memfd(64 << 10))
        assertRefused("removal at another address", { try remove(region(6)) }) {
            if case .memory(.noSuchRegion) = $0 { return true } else { return false }
        }
        assertRefused("removal with another size", { try remove(region(5, size: 4096)) }) {
            if case .memory(.noSuchRegion) = $0 { return true } else { return false }
        }
        XCTAssertEqual(device.memory?.mappings.count, 1)
        try remove(region(5))
        assertRefused("removal twice", { try remove(region(5)) }) {
            if case .memory(.noSuchRegion) = $0 { return true } else { return false }
        }
    }

    func testAddWhoseFdIsTooShort() throws {
        try negotiate()
        assertRefused("64 KiB region on a 4 KiB memfd", { try add(region(7), fd: memfd(4096)) }) {
            $0 == .memory(.fileTooSmall(index: 0, fileSize: 4096, needed: 64 << 10))
        }
        var past = region(7)
        past.mmapOffset = 64 << 10
        assertRefused("mmap offset past the end", { try add(past, fd: memfd(64 << 10)) }) {
            if case .memory(.fileTooSmall) = $0 { return true } else { return false }
        }
        XCTAssertNil(device.memory)
    }

    func testMalformedAddsAreRefusedAtDecode() throws {
        try negotiate()
        let good = SingleMemoryRegion(region: region(8)).encoded
        assertRefused("no fd", { _ = try send(.addMemReg, good) }) { $0 == .badFdCount(request: "addMemReg", count: 0) }
        assertRefused("two fds", { _ = try send(.addMemReg, good, fds: [memfd(64 << 10), memfd(64 << 10)]) }) {
            $0 == .badFdCount(request: "addMemReg", count: 2)
        }
        assertRefused("a 32-byte payload", { _ = try send(.addMemReg, Array(good.prefix(32)), fds: [memfd(64 << 10)]) }) {
            $0 == .badPayloadSize(request: "addMemReg", size: 32)
        }
        var zero = region(8)
        zero.size = 0
        assertRefused("size 0", { try add(zero, fd: memfd(64 << 10)) }) { $0 == .memory(.emptyRegion(index: 0)) }
        var wrap = region(8)
        wrap.guestPhysicalAddress = UInt64.max - 100
        assertRefused("gpa + size wraps", { try add(wrap, fd: memfd(64 << 10)) }) { $0 == .memory(.addressOverflow(index: 0)) }
        assertRefused("an eventfd as memory", { try add(region(8), fd: vs_eventfd(0)) }) { $0 == .memory(.notAFile(index: 0)) }
        assertRefused("REM_MEM_REG with two fds", { try _ = send(.remMemReg, good, fds: [memfd(1), memfd(1)]) }) {
            $0 == .badFdCount(request: "remMemReg", count: 2)
        }
        XCTAssertNil(device.memory)
    }

    func testTenThousandAddsHitTheLimitWithAClearError() throws {
        try negotiate()
        var refused = 0
        for k in 0..<10_000 {
            do { try add(region(k), fd: memfd(64 << 10)) } catch {
                XCTAssertEqual(error as? VhostUserError, .memorySlotsFull(limit: VhostUserDevice.maxMemorySlots))
                refused += 1
            }
        }
        XCTAssertEqual(refused, 10_000 - VhostUserDevice.maxMemorySlots)
        XCTAssertEqual(device.memory?.mappings.count, VhostUserDevice.maxMemorySlots)
        XCTAssertEqual(Self.openFds(), fdsBefore, "every fd closed, mapped or refused")
        XCTAssertEqual("\(VhostUserError.memorySlotsFull(limit: 64))",
                       "ADD_MEM_REG: all 64 memory slots are in use (the limit GET_MAX_MEM_SLOTS reported)")
    }

    func testTenThousandAddRemoveCyclesUnderRunningRingsLeakNothing() throws {
        try startRingsInAddedRegion()
        let fds = Self.openFds(), maps = Self.mappings(), guards = vs_memguard_registered()
        for k in 0..<10_000 {
            let r = region(16 + k % 16)
            try add(r, fd: memfd(64 << 10))
            try remove(r)
        }
        XCTAssertEqual(Self.openFds(), fds)
        XCTAssertEqual(Self.mappings(), maps)
        XCTAssertEqual(vs_memguard_registered(), guards)
        XCTAssertEqual(Set(backend.started.keys), [0, 1], "the rings still run")
    }

    // MARK: backing and seals for `vswitch show`

    func testRegionsReportBackingAndSeal() throws {
        try negotiate()
        try add(region(9), fd: memfd(64 << 10, sealable: true))
        try add(region(10), fd: memfd(64 << 10))
        let path = NSTemporaryDirectory() + "vsw-slot-\(getpid())"
        let file = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        unlink(path)
        ftruncate(file, 64 << 10)
        try add(region(11), fd: file)
        let regions = device.memoryRegions
        XCTAssertEqual(regions.map(\.description.guestPhysicalAddress), [9 << 20, 10 << 20, 11 << 20])
        XCTAssertEqual(regions.map(\.sealed), [true, false, false])
        XCTAssertEqual(regions[0].backing, .memfd)
        XCTAssertEqual(regions[1].backing, .memfd)
        XCTAssertEqual(regions[2].backing, .file)
    }
}

/// A removed region stays mapped while the data plane still holds a table with it.
final class GuestMappingLifetimeTests: XCTestCase {
    func testRemovedRegionIsUnmappedOnlyWhenTheLastTableGoes() throws {
        func maps() -> Int { MemorySlotTests.mappings() }
        let before = maps()
        let a = MemoryRegionDescription(guestPhysicalAddress: 0, size: 4096, userAddress: 0x1000_0000, mmapOffset: 0)
        let b = MemoryRegionDescription(guestPhysicalAddress: 1 << 20, size: 4096, userAddress: 0x2000_0000, mmapOffset: 0)
        func memfd() -> Int32 {
            let fd = vs_memfd_create("slot-test")
            ftruncate(fd, 4096)
            return fd
        }
        var held: GuestMemory? = try GuestMemory().adding(a, fd: memfd()).adding(b, fd: memfd())
        XCTAssertEqual(maps(), before + 2)
        // The forwarding thread's ring holds `held`; the control plane removes b.
        let p = try XCTUnwrap(held?.view.translateContiguous(1 << 20, 4096))
        var current: GuestMemory? = try held?.removing(b)
        XCTAssertNil(current?.view.translate(1 << 20, 1))
        XCTAssertTrue(current?.mappings.first === held?.mappings.first, "the unchanged region is shared, not remapped")
        p.storeBytes(of: 7, as: UInt8.self)   // still mapped: the old table is alive
        XCTAssertEqual(maps(), before + 2)
        held = nil                             // the data plane lets go
        XCTAssertEqual(maps(), before + 1)
        current = nil
        XCTAssertEqual(maps(), before)
    }
}
