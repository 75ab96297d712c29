import CShims
import GuestSimulator
import Logging
import Virtio
import XCTest
@testable import VhostUser

/// Records what the device asks of the data plane.
final class RecordingBackend: VhostUserBackend {
    var started: [Int: VringConfiguration] = [:]
    var stopped: [Int] = []
    var stopIndex: UInt16 = 42
    func startQueue(_ config: VringConfiguration) { started[config.index] = config }
    func stopQueue(_ index: Int) -> UInt16 {
        stopped.append(index)
        // Like the data plane: a stopped split ring has returned every chain it took.
        if let c = started[index], c.packedLayout == nil { vs_store_release_u16(c.layout.used + 2, stopIndex) }
        started[index] = nil
        return stopIndex
    }
    func updateCallFd(_ index: Int, _ fd: Int32?) {}
}

/// Drives the device with the message sequence QEMU sends, against simulated memory.
final class DeviceTests: XCTestCase {
    var backend: RecordingBackend!
    var device: VhostUserDevice!
    let guest = SimulatedGuest(queueSize: 256)

    override func setUp() {
        backend = RecordingBackend()
        device = VhostUserDevice(backend: backend, logger: Logger(label: "t"))
    }

    func message(_ r: VhostUserRequest, _ payload: [UInt8] = [], fds: [Int32] = []) -> VhostUserMessage {
        VhostUserMessage(header: VhostUserHeader(request: r.rawValue, flags: 1, size: UInt32(payload.count)),
                         payload: payload, fds: fds)
    }

    @discardableResult
    func send(_ r: VhostUserRequest, _ payload: [UInt8] = [], fds: [Int32] = []) throws -> [UInt8]? {
        try device.handle(message(r, payload, fds: fds))
    }

    func u64(_ v: UInt64) -> [UInt8] { encodeU64(v) }

    func address(_ q: Int) -> [UInt8] {
        let r = guest.rings[q]
        func user(_ gpa: UInt64) -> UInt64 { gpa - SimulatedGuest.guestBase + SimulatedGuest.userBase }
        var b = [UInt8]()
        b.appendLE(UInt32(q)); b.appendLE(UInt32(0))
        b.appendLE(user(r.desc)); b.appendLE(user(r.used)); b.appendLE(user(r.avail)); b.appendLE(UInt64(0))
        return b
    }

    /// The QEMU start sequence for queues 0 and 1.
    func startRings(protocolFeatures: Bool = true, packed: Bool = false, base: UInt32 = 0) throws {
        var features = VirtioFeature.version1 | VirtioFeature.netMergeableRxBuffers
        if protocolFeatures { features |= VirtioFeature.vhostUserProtocolFeatures }
        if packed { features |= VirtioFeature.ringPacked }
        try send(.setFeatures, u64(features))
        let (region, fd) = guest.memoryTable()
        try send(.setMemTable, MemoryTable(regions: [region]).encoded, fds: [fd])
        for q in 0..<2 {
            try send(.setVringNum, VringState(index: UInt32(q), num: 256).encoded)
            try send(.setVringBase, VringState(index: UInt32(q), num: base).encoded)
            try send(.setVringAddr, address(q))
            try send(.setVringKick, u64(UInt64(q)), fds: [vs_eventfd(0)])
            try send(.setVringCall, u64(UInt64(q)), fds: [vs_eventfd(0)])
        }
    }

    func testNegotiation() throws {
        let f = try XCTUnwrap(send(.getFeatures))
        XCTAssertEqual(f.count, 8)
        XCTAssertThrowsError(try send(.setFeatures, u64(VirtioFeature.accessPlatform))) {
            guard case .unsupportedFeatures = $0 as? VhostUserError else { return XCTFail() }
        }
        XCTAssertEqual(try send(.getQueueNum), u64(8))
        XCTAssertThrowsError(try send(.setProtocolFeatures, u64(1 << 8)))   // PAGEFAULT (postcopy) not offered
        XCTAssertNil(try send(.setProtocolFeatures, u64(VhostUserProtocolFeature.replyAck)))
    }

    func testRingsWaitForEnableWithProtocolFeatures() throws {
        try startRings()
        XCTAssertTrue(backend.started.isEmpty, "rings start disabled (vhost-user.rst, Ring states)")
        try send(.setVringEnable, VringState(index: 0, num: 1).encoded)
        try send(.setVringEnable, VringState(index: 1, num: 1).encoded)
        XCTAssertEqual(Set(backend.started.keys), [0, 1])
        XCTAssertEqual(device.runningQueueCount, 2)
    }

    func testRingsStartOnKickWithoutProtocolFeatures() throws {
        try startRings(protocolFeatures: false)
        XCTAssertEqual(Set(backend.started.keys), [0, 1])
    }

    func testGetVringBaseStopsTheRingAndReportsTheDataPlaneIndex() throws {
        try startRings(protocolFeatures: false)
        let reply = try XCTUnwrap(send(.getVringBase, VringState(index: 1, num: 0).encoded))
        XCTAssertEqual(reply, VringState(index: 1, num: 42).encoded)
        XCTAssertEqual(backend.stopped, [1])
        XCTAssertNil(backend.started[1])
    }


    /// DPDK virtio-user sends base 0 when it reconnects (the port re-added, vswitchd
    /// restarted) while its used ring stands at thousands: the ring resumes at the used
    /// index (issue 22), and a base that matches it is taken as it is.
    func testSplitRingResumesAtItsUsedIndexWhateverTheBaseSays() throws {
        func setUsed(_ v: UInt16) {
            for q in 0..<2 { guest.host(guest.rings[q].used + 2).storeBytes(of: v, as: UInt16.self) }
        }
        func reconnect(base: UInt32) throws {
            device = nil   // disconnects (stopping its rings) before its backend goes
            setUp()
            try startRings(protocolFeatures: false, base: base)
        }
        setUsed(40_000)
        try startRings(protocolFeatures: false, base: 0)
        XCTAssertEqual(backend.started[0]?.lastAvail, 40_000)
        XCTAssertEqual(backend.started[1]?.lastAvail, 40_000)
        backend.stopIndex = 40_000
        try reconnect(base: 40_000)
        XCTAssertEqual(backend.started[1]?.lastAvail, 40_000)
        device = nil
        setUsed(0)   // a fresh ring: used index 0, base 0
        setUp()
        try startRings(protocolFeatures: false, base: 0)
        XCTAssertEqual(backend.started[1]?.lastAvail, 0)
    }

    /// QEMU sends the avail position and wrap counter in bits 0-15 and the used ones in
    /// bits 16-31 (a fresh ring: 0x80008000); GET_VRING_BASE answers in the same form.
    func testPackedRingBaseCarriesWrapCounters() throws {
        try startRings(protocolFeatures: false, packed: true, base: 0x8000_8000)
        let config = try XCTUnwrap(backend.started[1])
        XCTAssertNotNil(config.packedLayout)
        XCTAssertEqual(config.lastAvail, 0x8000)
        backend.stopIndex = 0x8000 | 42
        let reply = try XCTUnwrap(send(.getVringBase, VringState(index: 1, num: 0).encoded))
        XCTAssertEqual(reply, VringState(index: 1, num: 0x802a_802a).encoded)
    }

    func testPackedRingBaseBeyondTheRingIsRefused() throws {
        XCTAssertThrowsError(try startRings(protocolFeatures: false, packed: true, base: 0x8000 | 256)) {
            XCTAssertEqual($0 as? VhostUserError, .ringAddress(queue: 0))
        }
        XCTAssertTrue(backend.started.isEmpty)
    }

    func testPackedRingSizeNeedNotBeAPowerOfTwo() throws {
        try send(.setFeatures, u64(VirtioFeature.version1 | VirtioFeature.ringPacked))
        XCTAssertNoThrow(try send(.setVringNum, VringState(index: 0, num: 100).encoded))
        XCTAssertThrowsError(try send(.setVringNum, VringState(index: 0, num: 40000).encoded))
    }

    func testNewMemoryTableRestartsRunningRings() throws {
        try startRings(protocolFeatures: false)
        let (region, fd) = guest.memoryTable()
        try send(.setMemTable, MemoryTable(regions: [region]).encoded, fds: [fd])
        XCTAssertEqual(Set(backend.stopped), [0, 1])
        XCTAssertEqual(Set(backend.started.keys), [0, 1])
        XCTAssertEqual(backend.started[1]?.lastAvail, 42, "resumes where the data plane stopped")
    }

    func testBadValuesAreErrorsNotCrashes() throws {
        XCTAssertThrowsError(try send(.setVringNum, VringState(index: 0, num: 100).encoded))
        XCTAssertThrowsError(try send(.setVringNum, VringState(index: 99, num: 256).encoded))
        XCTAssertThrowsError(try send(.setVringKick, u64(200), fds: [vs_eventfd(0)]))
        XCTAssertThrowsError(try send(.netSetMtu, u64(10)))
        XCTAssertThrowsError(try send(.getFeatures, [], fds: [vs_eventfd(0)]))
        XCTAssertThrowsError(try device.handle(VhostUserMessage(header: VhostUserHeader(request: 999, flags: 1, size: 0),
                                                                payload: [], fds: [])))
        // Ring addresses outside guest memory: refused when the ring would start.
        try send(.setFeatures, u64(VirtioFeature.version1))
        let (region, fd) = guest.memoryTable()
        try send(.setMemTable, MemoryTable(regions: [region]).encoded, fds: [fd])
        try send(.setVringNum, VringState(index: 0, num: 256).encoded)
        try send(.setVringKick, u64(0), fds: [vs_eventfd(0)])
        var bad = address(0)
        bad.replaceSubrange(8..<16, with: encodeU64(0x1234_0000))
        XCTAssertThrowsError(try send(.setVringAddr, bad)) {
            XCTAssertEqual($0 as? VhostUserError, .ringAddress(queue: 0))
        }
        XCTAssertTrue(backend.started.isEmpty)
    }

    func testResetStopsEverythingAndClosesFds() throws {
        try startRings(protocolFeatures: false)
        let before = openFdCount()
        device.reset()
        XCTAssertEqual(Set(backend.stopped), [0, 1])
        XCTAssertNil(device.memory)
        XCTAssertEqual(openFdCount(), before - 4, "two kick and two call eventfds closed")
    }

    func openFdCount() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1 }
}
