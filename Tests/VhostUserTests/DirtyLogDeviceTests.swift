import CShims
import Foundation
import GuestSimulator
import Logging
import Virtio
import XCTest
@testable import VhostUser

/// Records what the device asks of the data plane for live migration.
final class MigrationBackend: VhostUserBackend {
    var started: [Int: VringConfiguration] = [:]
    var logs: [DirtyLog?] = []
    var announced: [[UInt8]] = []
    func startQueue(_ config: VringConfiguration) { started[config.index] = config }
    func stopQueue(_ index: Int) -> UInt16 {
        started[index] = nil
        return 0
    }
    func updateCallFd(_ index: Int, _ fd: Int32?) {}
    func setDirtyLog(_ log: DirtyLog?) { logs.append(log) }
    func announce(mac: [UInt8]) { announced.append(mac) }
}

/// The migration half of the protocol (issue 15): SET_LOG_BASE, LOG_ALL, VHOST_VRING_F_LOG
/// and SEND_RARP, with every hostile value a frontend can send.
final class DirtyLogDeviceTests: XCTestCase {
    var backend: MigrationBackend!
    var device: VhostUserDevice!
    let guest = SimulatedGuest(queueSize: 256)
    /// Bytes of log that cover the simulated guest (which ends at 4 GiB + 8 MiB).
    var coveringBytes: UInt64 { (SimulatedGuest.guestBase + UInt64(guest.size)) >> 15 }

    override func setUp() {
        backend = MigrationBackend()
        device = VhostUserDevice(backend: backend, logger: Logger(label: "t"))
    }

    @discardableResult
    func send(_ r: VhostUserRequest, _ payload: [UInt8] = [], fds: [Int32] = []) throws -> [UInt8]? {
        try device.handle(VhostUserMessage(header: VhostUserHeader(request: r.rawValue, flags: 1, size: UInt32(payload.count)),
                                           payload: payload, fds: fds))
    }

    func logFile(bytes: Int) -> Int32 {
        let fd = vs_memfd_create("log")
        ftruncate(fd, off_t(bytes))
        return fd
    }

    func negotiate(logAll: Bool = false) throws {
        let base = VirtioFeature.version1 | VirtioFeature.vhostUserProtocolFeatures
        try send(.setFeatures, encodeU64(base | (logAll ? VirtioFeature.logAll : 0)))
        try send(.setProtocolFeatures, encodeU64(VhostUserProtocolFeature.logShmfd | VhostUserProtocolFeature.rarp
                                                 | VhostUserProtocolFeature.replyAck))
        let (region, fd) = guest.memoryTable()
        try send(.setMemTable, MemoryTable(regions: [region]).encoded, fds: [fd])
    }

    func setLogBase(size: UInt64, offset: UInt64 = 0, fileBytes: Int? = nil) throws -> [UInt8]? {
        try send(.setLogBase, LogDescription(size: size, offset: offset).encoded,
                 fds: [logFile(bytes: fileBytes ?? Int(size + offset))])
    }

    func testOffersLoggingAndNoPostcopy() throws {
        XCTAssertNotEqual(VhostUserDevice.offeredFeatures & VirtioFeature.logAll, 0)
        XCTAssertNotEqual(VhostUserDevice.offeredProtocolFeatures & VhostUserProtocolFeature.logShmfd, 0)
        XCTAssertNotEqual(VhostUserDevice.offeredProtocolFeatures & VhostUserProtocolFeature.rarp, 0)
        XCTAssertEqual(VhostUserDevice.offeredProtocolFeatures & (1 << 8), 0, "PAGEFAULT: no postcopy")
        do {
            _ = try device.handle(VhostUserMessage(header: VhostUserHeader(request: 28, flags: 1, size: 0), payload: [], fds: []))
            XCTFail("postcopy advise accepted")
        } catch {
            XCTAssertTrue("\(error)".contains("postcopy"), "\(error)")
        }
    }

    func testLoggingFollowsLogAllAndTheLog() throws {
        try negotiate()
        XCTAssertEqual(try setLogBase(size: coveringBytes, offset: 4096), [], "QEMU waits for an empty reply")
        XCTAssertFalse(device.isLogging, "log set, LOG_ALL not acked yet")
        XCTAssertTrue(backend.logs.isEmpty)
        let on = VirtioFeature.version1 | VirtioFeature.vhostUserProtocolFeatures | VirtioFeature.logAll
        try send(.setFeatures, encodeU64(on))
        XCTAssertTrue(device.isLogging)
        XCTAssertEqual(backend.logs.count, 1)
        XCTAssertTrue(backend.logs[0] === device.dirtyLog)
        // A new log (QEMU resizes it when memory grows) replaces the old one in the data plane.
        XCTAssertEqual(try setLogBase(size: coveringBytes * 2), [])
        XCTAssertEqual(backend.logs.count, 2)
        XCTAssertTrue(backend.logs[1] === device.dirtyLog)
        try send(.setFeatures, encodeU64(on & ~VirtioFeature.logAll))   // migration done or cancelled
        XCTAssertFalse(device.isLogging)
        XCTAssertEqual(backend.logs.count, 3)
        XCTAssertNil(backend.logs[2] ?? nil)
        try send(.setFeatures, encodeU64(on))
        XCTAssertTrue(device.isLogging, "a second migration reuses the log")
        device.reset()
        XCTAssertFalse(device.isLogging)
        XCTAssertNil(backend.logs.last ?? nil, "disconnect stops logging")
    }

    func testHostileLogBases() throws {
        try negotiate(logAll: true)
        func expectRefused(_ what: String, _ body: () throws -> Void) {
            XCTAssertThrowsError(try body(), what)
            XCTAssertFalse(device.isLogging, what)
        }
        let fdsBefore = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
        expectRefused("size 0") { try setLogBase(size: 0, fileBytes: 4096) }
        expectRefused("too small for the memory table") { try setLogBase(size: coveringBytes - 1) }
        expectRefused("offset past the end of the fd") { try setLogBase(size: coveringBytes, offset: 1 << 30, fileBytes: Int(coveringBytes)) }
        expectRefused("file shorter than offset + size") { try setLogBase(size: coveringBytes, fileBytes: 4096) }
        expectRefused("huge size") { try setLogBase(size: 1 << 40, fileBytes: 4096) }
        expectRefused("offset + size overflows") { try setLogBase(size: coveringBytes, offset: UInt64.max - 10, fileBytes: 4096) }
        expectRefused("no fd") { try send(.setLogBase, LogDescription(size: coveringBytes, offset: 0).encoded) }
        expectRefused("two fds") {
            try send(.setLogBase, LogDescription(size: coveringBytes, offset: 0).encoded,
                     fds: [logFile(bytes: Int(coveringBytes)), logFile(bytes: Int(coveringBytes))])
        }
        expectRefused("an eventfd") { try send(.setLogBase, LogDescription(size: coveringBytes, offset: 0).encoded, fds: [vs_eventfd(0)]) }
        expectRefused("short payload") { try send(.setLogBase, encodeU64(coveringBytes), fds: [logFile(bytes: 4096)]) }
        XCTAssertTrue(backend.logs.isEmpty, "LOG_ALL with no log: nothing to log into")
        let fdsAfter = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
        XCTAssertEqual(fdsAfter, fdsBefore, "every refused log's fd was closed")
        // Without LOG_SHMFD negotiated the request is refused.
        device.reset()
        try send(.setFeatures, encodeU64(VirtioFeature.version1 | VirtioFeature.vhostUserProtocolFeatures))
        XCTAssertThrowsError(try setLogBase(size: coveringBytes))
    }

    func testRingLogAddressReachesTheDataPlane() throws {
        try negotiate(logAll: true)
        for q in 0..<2 {
            let r = guest.rings[q]
            func user(_ gpa: UInt64) -> UInt64 { gpa - SimulatedGuest.guestBase + SimulatedGuest.userBase }
            let a = VringAddress(index: UInt32(q), flags: q == 0 ? VringAddress.logFlag : 0, descriptorUser: user(r.desc),
                                 usedUser: user(r.used), availUser: user(r.avail), log: r.used)
            try send(.setVringNum, VringState(index: UInt32(q), num: 256).encoded)
            try send(.setVringAddr, a.encodedForTests)
            try send(.setVringKick, encodeU64(UInt64(q)), fds: [vs_eventfd(0)])
            try send(.setVringEnable, VringState(index: UInt32(q), num: 1).encoded)
        }
        XCTAssertEqual(backend.started[0]?.usedLogAddress, guest.rings[0].used)
        XCTAssertNil(backend.started[1]?.usedLogAddress, "no VHOST_VRING_F_LOG: no used-ring log address")
    }

    func testSendRarpAnnouncesTheMac() throws {
        try negotiate()
        let mac: [UInt8] = [0x52, 0x54, 0, 0x12, 0x34, 0x56]
        try send(.sendRarp, mac + [0, 0])
        XCTAssertEqual(backend.announced, [mac])
        XCTAssertThrowsError(try send(.sendRarp, mac), "6-byte payload: u64 expected")
        device.reset()
        try send(.setFeatures, encodeU64(VirtioFeature.version1 | VirtioFeature.vhostUserProtocolFeatures))
        XCTAssertThrowsError(try send(.sendRarp, mac + [0, 0]), "RARP not negotiated")
    }
}

extension VringAddress {
    var encodedForTests: [UInt8] {
        var b = [UInt8]()
        b.appendLE(index); b.appendLE(flags)
        b.appendLE(descriptorUser); b.appendLE(usedUser); b.appendLE(availUser); b.appendLE(log)
        return b
    }
}
