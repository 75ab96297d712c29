import CPcap
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

/// Capture taps in the engine with simulated guests, and the libpcap writer: files read
/// back with pcap_open_offline, filters, rotation, the live stream over a socket.
final class CaptureTests: XCTestCase {
    var engine: ForwardingEngine!
    var bridge = 0
    var dir = ""

    override func setUp() {
        engine = ForwardingEngine(logger: Logger(label: "test"))
        bridge = engine.addBridge(agingSeconds: 300)!
        dir = NSTemporaryDirectory() + "vsw-capture-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() {
        engine = nil
        try? FileManager.default.removeItem(atPath: dir)
    }

    func attachGuest(_ guest: SimulatedGuest) throws -> Int {
        let port = engine.addPort(bridge: bridge)!
        let memory = try guest.makeMemory()
        engine.startQueue(port: port, guest.vringConfiguration(queue: 0, memory: memory))
        engine.startQueue(port: port, guest.vringConfiguration(queue: 1, memory: memory))
        guest.postReceiveBuffers(64)
        return port
    }

    /// Frames (bytes, original length) of a pcap file, read by libpcap; nil if unreadable.
    static func readPcap(_ path: String) -> [(bytes: [UInt8], length: Int)]? {
        var err = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE))
        guard let p = pcap_open_offline_with_tstamp_precision(path, UInt32(PCAP_TSTAMP_PRECISION_NANO), &err) else { return nil }
        defer { pcap_close(p) }
        XCTAssertEqual(pcap_datalink(p), DLT_EN10MB)
        var out: [([UInt8], Int)] = []
        var header: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<UInt8>?
        while pcap_next_ex(p, &header, &data) == 1 {
            guard let h = header, let d = data else { break }
            out.append((Array(UnsafeBufferPointer(start: d, count: Int(h.pointee.caplen))), Int(h.pointee.len)))
            let ns = UInt64(h.pointee.ts.tv_sec) * 1_000_000_000 + UInt64(h.pointee.ts.tv_usec)
            XCTAssertLessThan(abs(Double(ns) - Double(vs_realtime_ns())), 60e9, "nanosecond wall-clock timestamps")
        }
        return out
    }

    // MARK: engine hooks

    func testBridgeWideRecordsOnceAndPortTapsSeeTheirDirection() throws {
        let a = SimulatedGuest(), b = SimulatedGuest(), c = SimulatedGuest()
        _ = try attachGuest(a)
        let pb = try attachGuest(b)
        _ = try attachGuest(c)
        let whole = CaptureBuffer(), bRx = CaptureBuffer(), bTx = CaptureBuffer()
        XCTAssertNotNil(engine.addCaptureTap(ring: whole.ring, snaplen: 65536, bridge: bridge))
        XCTAssertNotNil(engine.addCaptureTap(ring: bRx.ring, snaplen: 65536, bridge: bridge, port: pb, rx: true, tx: false))
        XCTAssertNotNil(engine.addCaptureTap(ring: bTx.ring, snaplen: 65536, bridge: bridge, port: pb, rx: false, tx: true))

        // a floods to b and c: once on the bridge, once into b, nothing from b.
        a.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1)))
        engine.pollOnce()
        XCTAssertEqual([whole.ring.recorded, bRx.ring.recorded, bTx.ring.recorded], [1, 0, 1])
        // b answers a (learned): bridge +1, from b +1.
        let reply = TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(2), payload: 300)
        b.transmit(reply)
        engine.pollOnce()
        XCTAssertEqual([whole.ring.recorded, bRx.ring.recorded, bTx.ring.recorded], [2, 1, 1])
        XCTAssertEqual(bRx.ring.peek().map { Array($0.bytes) }, reply, "no virtio-net header in the capture")
        // c -> a: bridge only.
        c.transmit(TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(3)))
        engine.pollOnce()
        XCTAssertEqual([whole.ring.recorded, bRx.ring.recorded, bTx.ring.recorded], [3, 1, 1])
        XCTAssertEqual(a.receivedFrames().count, 2, "forwarding unchanged")
    }

    func testRemovedTapStopsAndFullRingNeverDropsForwarding() throws {
        let a = SimulatedGuest(), b = SimulatedGuest()
        _ = try attachGuest(a)
        let pb = try attachGuest(b)
        let small = CaptureBuffer(capacity: 1 << 17)
        let t = try XCTUnwrap(engine.addCaptureTap(ring: small.ring, snaplen: 65536, bridge: bridge))
        let frame = TestFrame.make(dst: TestFrame.mac(2), src: TestFrame.mac(1), payload: 1400)
        for _ in 0..<6 {
            for _ in 0..<32 { a.transmit(frame) }
            engine.pollOnce()
            b.postReceiveBuffers(32)
            _ = a.takeUsed(queue: 1)
        }
        XCTAssertEqual(engine.counters(port: pb).txPackets, 192, "every frame forwarded")
        XCTAssertEqual(engine.counters(port: pb).txDropNoBuffers, 0)
        XCTAssertGreaterThan(small.ring.dropped, 0, "the capture lost frames, counted")
        XCTAssertEqual(small.ring.recorded + small.ring.dropped, 192)
        engine.removeCaptureTap(t)
        a.transmit(frame)
        engine.pollOnce()
        XCTAssertEqual(small.ring.recorded + small.ring.dropped, 192, "no longer fed")
        XCTAssertEqual(engine.freeCaptureTaps, ForwardingEngine.maxCaptureTaps)
    }

    func testRemovingTheWatchedPortClosesTheCapture() throws {
        let a = SimulatedGuest()
        let pa = try attachGuest(a)
        let ring = CaptureBuffer()
        XCTAssertNotNil(engine.addCaptureTap(ring: ring.ring, snaplen: 100, bridge: bridge, port: pa))
        XCTAssertNil(engine.addCaptureTap(ring: ring.ring, snaplen: 100, bridge: bridge, port: 200), "no such port")
        XCTAssertFalse(ring.ring.isClosed)
        engine.removePort(pa)
        XCTAssertTrue(ring.ring.isClosed)
    }

    // MARK: libpcap writer

    func session(file: String, filter: String? = nil, snaplen: Int = 65536, rotate: Int? = nil, count: Int = 3) throws -> (CaptureSession, PcapFileSink) {
        let format = try PcapFormat(snaplen: snaplen, filter: filter)
        let sink = try PcapFileSink(format: format, path: file, rotateBytes: rotate, rotateCount: count)
        return (CaptureSession(engine: engine, format: format, sink: sink), sink)
    }

    func testPcapPortWritesWhatCrossesTheBridgeAndFilterKeepsMatches() throws {
        let a = SimulatedGuest(), b = SimulatedGuest()
        _ = try attachGuest(a)
        _ = try attachGuest(b)
        let (all, _) = try session(file: dir + "/all.pcap", snaplen: 100)
        let (arpOnly, _) = try session(file: dir + "/arp.pcap", filter: "arp")
        XCTAssertTrue(all.attach(bridge: bridge, port: nil, rx: true, tx: false))
        XCTAssertTrue(arpOnly.attach(bridge: bridge, port: nil, rx: true, tx: false))
        all.startThread()
        arpOnly.startThread()
        let arp = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), etherType: 0x0806)
        let ip = TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(2), payload: 1000)
        a.transmit(arp)
        engine.pollOnce()
        b.transmit(ip)
        engine.pollOnce()
        a.transmit(arp)
        engine.pollOnce()
        // The writer flushes as it goes: a reader sees the frames before the port is closed.
        let deadline = Date().addingTimeInterval(5)
        while all.framesWritten < 3 && Date() < deadline { usleep(10_000) }
        XCTAssertEqual(Self.readPcap(dir + "/all.pcap")?.count, 3, "readable while open")
        all.finish()
        arpOnly.finish()
        let frames = try XCTUnwrap(Self.readPcap(dir + "/all.pcap"))
        XCTAssertEqual(frames.map(\.bytes), [arp, Array(ip[..<100]), arp])
        XCTAssertEqual(frames.map(\.length), [arp.count, ip.count, arp.count])
        XCTAssertEqual(try XCTUnwrap(Self.readPcap(dir + "/arp.pcap")).map(\.bytes), [arp, arp])
        XCTAssertEqual(arpOnly.framesFilteredOut, 1)
        XCTAssertEqual(arpOnly.end, .stopped)
    }

    /// Small records are copied into the writer's buffer, large ones written straight from
    /// the ring (their pcap header over the ring's): a batch of thousands, mixed, more than
    /// one writev holds, comes out of libpcap byte for byte and in order.
    func testSmallAndLargeRecordsMixedComeOutExactlyInOrder() throws {
        let (s, _) = try session(file: dir + "/mixed.pcap")
        XCTAssertTrue(s.attach(bridge: bridge, port: nil, rx: true, tx: false))
        let a = SimulatedGuest()
        _ = try attachGuest(a)
        let sizes = [60, 300, 1400, 100, 2000 - 12 - 14, 241, 242, 243]
        var sent: [[UInt8]] = []
        for i in 0..<2400 {   // recorded before the writer starts: one batch, 1500 large records
            let frame = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), payload: sizes[i % sizes.count],
                                       fill: UInt8(truncatingIfNeeded: i))
            sent.append(frame)
            a.transmit(frame)
            engine.pollOnce()
            _ = a.takeUsed(queue: 1)
        }
        s.startThread()
        let deadline = Date().addingTimeInterval(10)
        while s.framesWritten < 2400 && Date() < deadline { usleep(10_000) }
        s.finish()
        XCTAssertEqual(s.framesDropped, 0)
        let frames = try XCTUnwrap(Self.readPcap(dir + "/mixed.pcap"))
        XCTAssertEqual(frames.count, sent.count)
        XCTAssertTrue(frames.map(\.bytes) == sent, "every frame byte for byte, in order")
        XCTAssertEqual(frames.map(\.length), sent.map(\.count))
    }

    func testRotationKeepsCompleteFiles() throws {
        let path = dir + "/rot.pcap"
        let (s, sink) = try session(file: path, rotate: 4096, count: 3)
        XCTAssertTrue(s.attach(bridge: bridge, port: nil, rx: true, tx: false))
        let a = SimulatedGuest()
        _ = try attachGuest(a)
        s.startThread()
        for i in 0..<60 {
            a.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), payload: 200, fill: UInt8(i)))
            engine.pollOnce()
            _ = a.takeUsed(queue: 1)
        }
        let deadline = Date().addingTimeInterval(5)
        while s.framesWritten < 60 && Date() < deadline { usleep(10_000) }
        s.finish()
        XCTAssertGreaterThanOrEqual(sink.rotations, 3)
        let files = [path, path + ".1", path + ".2"]
        var fills: [UInt8] = []
        for f in files.reversed() {
            let frames = try XCTUnwrap(Self.readPcap(f), "\(f) is a complete pcap file")
            XCTAssertLessThanOrEqual(try XCTUnwrap(FileManager.default.attributesOfItem(atPath: f)[.size] as? Int), 4096 + 300)
            fills += frames.map { $0.bytes[20] }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".3"), "only 3 files kept")
        XCTAssertEqual(fills, Array(UInt8(60 - fills.count)..<60), "newest frames, in order, across the files")
    }

    func testBadFilterAndUnwritableFileAreClearErrors() {
        XCTAssertThrowsError(try PcapFormat(snaplen: 100, filter: "icmp or")) { e in
            XCTAssertTrue("\(e)".contains("invalid filter 'icmp or'"), "\(e)")
        }
        XCTAssertThrowsError(try PcapFormat(snaplen: 0, filter: nil))
        let format = try? PcapFormat(snaplen: 100, filter: nil)
        XCTAssertThrowsError(try PcapFileSink(format: format!, path: "/nonexistent-dir/x.pcap", rotateBytes: nil, rotateCount: 1)) { e in
            XCTAssertTrue("\(e)".contains("No such file or directory"), "\(e)")
        }
    }

    // MARK: live stream

    func testLiveStreamStopsAfterCountAndNoticesAPeerThatLeaves() throws {
        let a = SimulatedGuest()
        _ = try attachGuest(a)
        var pair: [Int32] = [-1, -1]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair), 0)
        defer { close(pair[0]) }
        let format = try PcapFormat(snaplen: 65536, filter: "arp")
        let live = CaptureSession(engine: engine, format: format, sink: try PcapStreamSink(format: format, socket: pair[0]), limit: 2)
        XCTAssertTrue(live.attach(bridge: bridge, port: nil, rx: true, tx: false))
        let arp = TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1), etherType: 0x0806)
        for frame in [arp, TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(1)), arp, arp] {
            a.transmit(frame)
            engine.pollOnce()
        }
        XCTAssertEqual(live.runWriter(peer: pair[0]), .limit)
        live.detach()
        shutdown(pair[0], Int32(SHUT_WR))
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(pair[1], &chunk, chunk.count)
            if n <= 0 { break }
            bytes += chunk[..<n]
        }
        close(pair[1])
        let file = dir + "/live.pcap"
        XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data(bytes)))
        XCTAssertEqual(try XCTUnwrap(Self.readPcap(file)).map(\.bytes), [arp, arp], "exactly -c frames that match")

        // A client that goes away while nothing flows ends the session within its wait.
        var pair2: [Int32] = [-1, -1]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair2), 0)
        defer { close(pair2[0]) }
        let idle = CaptureSession(engine: engine, format: format, sink: try PcapStreamSink(format: format, socket: pair2[0]))
        XCTAssertTrue(idle.attach(bridge: bridge, port: nil, rx: true, tx: false))
        let clientEnd = pair2[1]
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.2) { close(clientEnd) }
        let start = Date()
        XCTAssertEqual(idle.runWriter(peer: pair2[0]), .peerGone)
        XCTAssertLessThan(Date().timeIntervalSince(start), 3)
        idle.detach()
        XCTAssertEqual(engine.freeCaptureTaps, ForwardingEngine.maxCaptureTaps)
    }
}
