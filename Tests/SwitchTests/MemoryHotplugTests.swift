import CShims
import GuestSimulator
import Logging
import Virtio
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
@testable import VhostUser

/// Memory regions added and removed under the real forwarding thread (issue 21, part 3): a
/// guest whose rings live in a region that came by ADD_MEM_REG, driven through the real
/// device and the real backend, keeps forwarding with a partner while its table grows to the
/// limit and shrinks again; removing the region with its rings stops that port's queues
/// cleanly, the partner and the forwarding thread carry on.
final class MemoryHotplugTests: XCTestCase {
    var h: EngineHarness!
    var device: VhostUserDevice!
    var backend: VhostPortBackend!
    let a = SimulatedGuest()
    let b = SimulatedGuest()
    var kickB: Int32 = -1
    static let macA = TestFrame.mac(0xa1), macB = TestFrame.mac(0xb2)

    override func setUpWithError() throws {
        h = EngineHarness()
        try h.attach(a)
        a.postReceiveBuffers(64)
        let bridge = h.bridge
        let slot = try XCTUnwrap(h.engine.sync { $0.addPort(bridge: bridge) })
        backend = VhostPortBackend(engine: h.engine, slot: slot)
        device = VhostUserDevice(backend: backend, logger: Logger(label: "t"))
    }

    override func tearDown() {
        device.reset()
        if kickB >= 0 { close(kickB) }
        h = nil
    }

    func send(_ r: VhostUserRequest, _ payload: [UInt8] = [], fds: [Int32] = []) throws {
        _ = try device.handle(VhostUserMessage(header: VhostUserHeader(request: r.rawValue, flags: 1, size: UInt32(payload.count)),
                                               payload: payload, fds: fds))
    }

    /// A 64 KiB memfd region at guest-physical `k` MiB (below b's memory at 4 GiB).
    func extra(_ k: Int) -> MemoryRegionDescription {
        MemoryRegionDescription(guestPhysicalAddress: UInt64(k) << 20, size: 64 << 10,
                                userAddress: 0x1000_0000_0000 + (UInt64(k) << 20), mmapOffset: 0)
    }

    func add(_ r: MemoryRegionDescription, fd: Int32) throws { try send(.addMemReg, SingleMemoryRegion(region: r).encoded, fds: [fd]) }
    func remove(_ r: MemoryRegionDescription) throws { try send(.remMemReg, SingleMemoryRegion(region: r).encoded) }
    func memfd() -> Int32 {
        let fd = vs_memfd_create("hotplug-test")
        ftruncate(fd, 64 << 10)
        return fd
    }

    /// QEMU's sequence with CONFIGURE_MEM_SLOTS: features, regions one by one (b's RAM
    /// after another region), then both rings.
    func connectB() throws {
        try send(.setFeatures, encodeU64(SimulatedGuest.defaultFeatures))
        try send(.setProtocolFeatures, encodeU64(VhostUserProtocolFeature.configureMemSlots | VhostUserProtocolFeature.replyAck))
        try add(extra(1), fd: memfd())
        let (r, fd) = b.memoryTable()
        try add(r, fd: fd)
        kickB = vs_eventfd(0)
        for q in 0..<2 {
            let ring = b.rings[q]
            func user(_ gpa: UInt64) -> UInt64 { gpa - SimulatedGuest.guestBase + SimulatedGuest.userBase }
            var addr = [UInt8]()
            addr.appendLE(UInt32(q)); addr.appendLE(UInt32(0))
            addr.appendLE(user(ring.desc)); addr.appendLE(user(ring.used)); addr.appendLE(user(ring.avail)); addr.appendLE(UInt64(0))
            try send(.setVringNum, VringState(index: UInt32(q), num: UInt32(b.queueSize)).encoded)
            try send(.setVringBase, VringState(index: UInt32(q), num: 0).encoded)
            try send(.setVringAddr, addr)
            try send(.setVringKick, encodeU64(UInt64(q)), fds: [q == 1 ? dup(kickB) : vs_eventfd(0)])
            try send(.setVringEnable, VringState(index: UInt32(q), num: 1).encoded)
        }
        b.postReceiveBuffers(64)
        XCTAssertEqual(device.runningQueueCount, 2)
    }

    /// `burst` frames each way between a and b; true when every one arrived intact.
    func exchange(burst: Int = 8) -> Bool {
        let ab = TestFrame.make(dst: Self.macB, src: Self.macA, payload: 100, fill: 0xab)
        let ba = TestFrame.make(dst: Self.macA, src: Self.macB, payload: 200, fill: 0xba)
        for _ in 0..<burst {
            a.transmit(ab)
            b.transmit(ba)
        }
        h.kick(a)
        _ = vs_eventfd_signal(kickB)
        var gotA = 0, gotB = 0
        let ok = h.wait {
            gotA += a.receivedFrames().filter { $0 == ba }.count
            gotB += b.receivedFrames().filter { $0 == ab }.count
            return gotA >= burst && gotB >= burst
        }
        _ = a.reclaimUsed(queue: 1)
        _ = b.reclaimUsed(queue: 1)
        a.postReceiveBuffers(burst)
        b.postReceiveBuffers(burst)
        return ok && gotA == burst && gotB == burst
    }

    func testFramesForwardWhileRegionsComeAndGo() throws {
        try connectB()
        XCTAssertTrue(exchange(), "rings in an added region")
        for k in 2..<VhostUserDevice.maxMemorySlots {
            try add(extra(k), fd: memfd())
            if k % 8 == 0 { XCTAssertTrue(exchange(), "\(k + 1) regions") }
        }
        XCTAssertEqual(device.memoryRegions.count, VhostUserDevice.maxMemorySlots)
        XCTAssertTrue(exchange(), "at the limit")
        for k in stride(from: VhostUserDevice.maxMemorySlots - 1, to: 1, by: -1) {
            try remove(extra(k))
            if k % 8 == 0 { XCTAssertTrue(exchange(), "\(k) regions") }
        }
        try remove(extra(1))
        XCTAssertEqual(device.memoryRegions.count, 1)
        XCTAssertTrue(exchange(), "only b's own region left")
        XCTAssertFalse(h.engine.sync { [backend] in $0.isBroken(port: backend!.slot) })
    }

    func testRemovingTheRegionWithTheRingsStopsOnlyThatPort() throws {
        try connectB()
        XCTAssertTrue(exchange())
        let (r, unused) = b.memoryTable()
        close(unused)
        try remove(r)
        XCTAssertEqual(device.runningQueueCount, 0, "b's rings are not in guest memory any more")
        // The forwarding thread goes on: a's frames to b are dropped (b has no ring), and a
        // third guest exchanges frames with a.
        a.transmit(TestFrame.make(dst: Self.macB, src: Self.macA))
        h.kick(a)
        let c = SimulatedGuest()
        try h.attach(c)
        c.postReceiveBuffers(16)
        let ac = TestFrame.make(dst: TestFrame.mac(0xc3), src: Self.macA, payload: 64)
        c.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(0xc3)))   // c's MAC learned
        h.kick(c)
        XCTAssertTrue(h.wait { !a.receivedFrames().isEmpty })
        a.postReceiveBuffers(1)
        a.transmit(ac)
        h.kick(a)
        var got = 0
        XCTAssertTrue(h.wait {
            got += c.receivedFrames().filter { $0 == ac }.count
            return got == 1
        }, "the other ports keep forwarding")
        // b's port comes back when the frontend puts its memory back and sets the rings up.
        let (again, fd) = b.memoryTable()
        try add(again, fd: fd)
        for q in 0..<2 {
            try send(.setVringKick, encodeU64(UInt64(q)), fds: [q == 1 ? dup(kickB) : vs_eventfd(0)])
        }
        XCTAssertEqual(device.runningQueueCount, 2)
        XCTAssertTrue(exchange(), "b forwards again")
    }
}
