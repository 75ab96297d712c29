import CShims
import GuestSimulator
import Logging
import Virtio
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
@testable import CaptureWriter
#if canImport(Glibc)
import Glibc
#endif

/// Non-vhost ports in the engine, with a SOCK_SEQPACKET pair standing in for a TAP
/// descriptor (one frame per read and per writev, like /dev/net/tun).
final class LocalPortTests: XCTestCase {
    var engine: ForwardingEngine!
    var bridge = 0
    var fds: [Int32] = []

    override func setUp() {
        engine = ForwardingEngine(logger: Logger(label: "test"))
        bridge = engine.addBridge(agingSeconds: 300)!
    }

    override func tearDown() {
        engine = nil
        for fd in fds { close(fd) }
    }

    /// A local port on the bridge; returns (slot, the peer end the test reads and writes).
    func attachLocal() -> (Int, Int32) {
        var pair: [Int32] = [-1, -1]
        XCTAssertEqual(vs_socketpair_seqpacket(&pair), 0)
        fds += pair
        let slot = engine.addLocalPort(bridge: bridge, kind: SlotKind.tap.rawValue, fd: pair[0])!
        return (slot, pair[1])
    }

    func attachGuest(_ guest: SimulatedGuest) throws -> Int {
        let port = engine.addPort(bridge: bridge)!
        let memory = try guest.makeMemory()
        engine.startQueue(port: port, guest.vringConfiguration(queue: 0, memory: memory))
        engine.startQueue(port: port, guest.vringConfiguration(queue: 1, memory: memory))
        return port
    }

    func readFrame(_ fd: Int32) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 70000)
        let n = read(fd, &buffer, buffer.count)
        return n > 0 ? Array(buffer[..<n]) : nil
    }

    func testGuestToLocalAndBackWithLearning() throws {
        let guest = SimulatedGuest()
        let pg = try attachGuest(guest)
        guest.postReceiveBuffers(8)
        let (pl, peer) = attachLocal()

        // Guest broadcast reaches the local port without the virtio-net header.
        let arp = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), etherType: 0x0806)
        guest.transmit(arp)
        XCTAssertEqual(engine.pollOnce(), 1)
        XCTAssertEqual(readFrame(peer), arp)
        XCTAssertNil(readFrame(peer))

        // The kernel side answers: the frame reaches the guest, the source is learned.
        let reply = TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(9), payload: 1400)
        XCTAssertEqual(write(peer, reply, reply.count), reply.count)
        XCTAssertEqual(engine.pollOnce(), 1)
        XCTAssertEqual(guest.receivedFrames(), [reply])
        let learned = Dictionary(uniqueKeysWithValues: engine.fdbEntries(bridge: bridge).map { ($0.key & 0xFFFF_FFFF_FFFF, $0.port) })
        XCTAssertEqual(learned.count, 2)
        XCTAssertTrue(learned.values.contains(pl) && learned.values.contains(pg))

        // Known unicast to the local port goes there only.
        let unicast = TestFrame.make(dst: TestFrame.mac(9), src: TestFrame.mac(1))
        guest.transmit(unicast)
        engine.pollOnce()
        XCTAssertEqual(readFrame(peer), unicast)
        XCTAssertEqual(engine.counters(port: pl).txPackets, 2)
        XCTAssertEqual(engine.counters(port: pl).rxPackets, 1)
        XCTAssertEqual(engine.counters(port: pg).txPackets, 1)
    }

    func testRuntFromLocalPortIsDroppedAndBatchIsBounded() throws {
        let guest = SimulatedGuest()
        _ = try attachGuest(guest)
        guest.postReceiveBuffers(64)
        let (pl, peer) = attachLocal()
        XCTAssertEqual(write(peer, [1, 2, 3], 3), 3)
        let frame = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(9))
        for _ in 0..<40 { XCTAssertEqual(write(peer, frame, frame.count), frame.count) }
        engine.batchSize = 32
        XCTAssertEqual(engine.pollOnce(), 32, "one batch per visit")
        XCTAssertEqual(engine.pollOnce(), 9)
        XCTAssertEqual(engine.counters(port: pl).rxDropRunt, 1)
        XCTAssertEqual(guest.receivedFrames().count, 40)
    }

    func testLocalToLocalAndClosedPeerCountsDrops() throws {
        let (pa, a) = attachLocal()
        let (pb, b) = attachLocal()
        let frame = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(7))
        XCTAssertEqual(write(a, frame, frame.count), frame.count)
        engine.pollOnce()
        XCTAssertEqual(readFrame(b), frame)
        close(b)
        fds.removeAll { $0 == b }
        XCTAssertEqual(write(a, frame, frame.count), frame.count)
        engine.pollOnce()
        XCTAssertEqual(engine.counters(port: pb).txDropNoBuffers, 1)
        XCTAssertEqual(engine.counters(port: pa).rxPackets, 2)
    }

    func testRemovedLocalPortIsNoLongerPolled() throws {
        let (pl, peer) = attachLocal()
        engine.removePort(pl)
        let frame = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(7))
        XCTAssertEqual(write(peer, frame, frame.count), frame.count)
        XCTAssertEqual(engine.pollOnce(), 0)
    }

    /// Opening a TAP device needs root and /dev/net/tun; the error cases need no traffic.
    func testTapDeviceErrors() throws {
        guard getuid() == 0, access("/dev/net/tun", R_OK | W_OK) == 0 else {
            throw XCTSkip("needs root and /dev/net/tun")
        }
        XCTAssertThrowsError(try TapDevice(name: "lo")) { error in
            XCTAssertEqual(error as? SwitchError, .tap(ifname: "lo", .notATap))
            XCTAssertTrue("\(error)".contains("not a TAP device"), "\(error)")
        }
        XCTAssertThrowsError(try TapDevice(name: "bad/name")) { error in
            XCTAssertTrue("\(error)".contains("invalid name"), "\(error)")
        }
        let tap = try TapDevice(name: "vstest\(getpid() % 10000)")
        XCTAssertEqual(vs_if_exists(tap.name), 1)
        XCTAssertThrowsError(try TapDevice(name: tap.name)) { error in
            XCTAssertEqual(error as? SwitchError, .tap(ifname: tap.name, .busy))
            XCTAssertTrue("\(error)".contains("in use"), "\(error)")
        }
    }
}
