import CShims
import Foundation
import GuestSimulator
import Logging
import Virtio
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
@testable import CaptureWriter

/// The real forwarding thread with simulated guests on one bridge, kicked through
/// eventfds the way a guest kicks: what the hostile-guest and soak tests drive.
final class EngineHarness {
    let engine: ForwardingEngine
    let bridge: Int
    let log = CapturedLog()
    private(set) var kickFds: [Int32] = []
    /// Port slot and kick eventfd of each attached guest.
    private var attached: [ObjectIdentifier: (port: Int, kick: Int32)] = [:]
    /// The switch-side memory of each attached guest.
    private(set) var memories: [ObjectIdentifier: GuestMemory] = [:]

    init(batchSize: Int? = nil) {
        let log = self.log
        engine = ForwardingEngine(logger: Logger(label: "engine") { _ in CapturedLogHandler(log: log) })
        if let batchSize { engine.batchSize = batchSize }
        bridge = engine.addBridge(agingSeconds: 300)!
        engine.start()
    }

    deinit {
        engine.stop()
        for fd in kickFds { close(fd) }
    }

    /// Adds a port whose RX and TX queues run on `guest`'s rings; returns the port slot.
    @discardableResult
    func attach(_ guest: SimulatedGuest) throws -> Int {
        let memory = try guest.makeMemory()
        let kick = vs_eventfd(0)
        kickFds.append(kick)
        let bridge = self.bridge
        let rx = guest.vringConfiguration(queue: 0, memory: memory)
        let tx = guest.vringConfiguration(queue: 1, memory: memory, kickFd: kick)
        let port = try XCTUnwrap(engine.sync { e -> Int? in
            guard let p = e.addPort(bridge: bridge) else { return nil }
            e.startQueue(port: p, rx)
            e.startQueue(port: p, tx)
            return p
        })
        attached[ObjectIdentifier(guest)] = (port, kick)
        memories[ObjectIdentifier(guest)] = memory
        return port
    }

    func port(_ g: SimulatedGuest) -> Int { attached[ObjectIdentifier(g)]!.port }

    func memory(_ g: SimulatedGuest) -> GuestMemory { memories[ObjectIdentifier(g)]! }

    /// Removes the guest's port (what a disconnect does), dropping the switch's memory of it.
    func detach(_ g: SimulatedGuest) {
        let p = port(g)
        engine.sync { $0.removePort(p) }
        attached[ObjectIdentifier(g)] = nil
        memories[ObjectIdentifier(g)] = nil
    }

    /// What a guest does after adding TX buffers: kick the switch.
    func kick(_ g: SimulatedGuest) { _ = vs_eventfd_signal(attached[ObjectIdentifier(g)]!.kick) }

    func counters(_ g: SimulatedGuest) -> PortCounters {
        let p = port(g)
        return engine.sync { $0.counters(port: p) }
    }

    func isBroken(_ g: SimulatedGuest) -> Bool {
        let p = port(g)
        return engine.sync { $0.isBroken(port: p) }
    }

    /// Polls `cond` every millisecond for up to `seconds`.
    @discardableResult
    func wait(_ seconds: Double = 5, _ cond: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !cond() {
            if Date() > deadline { return false }
            usleep(1000)
        }
        return true
    }

    /// Forwarding-loop passes made while nobody sends anything for `seconds`: a thread
    /// that sleeps in epoll makes none, one that spins makes millions.
    func idlePolls(over seconds: Double) -> UInt64 {
        usleep(20_000)   // let the adaptive-polling spin (50 us) run out
        let before = engine.loopStatistics().polls
        usleep(UInt32(seconds * 1e6))
        return engine.loopStatistics().polls &- before
    }
}

/// A guest pair that exchanges unicast frames through the engine and checks each one
/// arrives: the "other ports keep forwarding" half of every hostile-guest test.
struct GoodPair {
    let a = SimulatedGuest()
    let b = SimulatedGuest()
    static let macA = TestFrame.mac(0xa1), macB = TestFrame.mac(0xb2)

    func attach(to h: EngineHarness) throws {
        try h.attach(a)
        try h.attach(b)
        a.postReceiveBuffers(64)
        b.postReceiveBuffers(64)
    }

    /// One round: `burst` frames each way; true when every frame arrived intact.
    func exchange(_ h: EngineHarness, burst: Int = 16) -> Bool {
        let ab = TestFrame.make(dst: Self.macB, src: Self.macA, payload: 100, fill: 0xab)
        let ba = TestFrame.make(dst: Self.macA, src: Self.macB, payload: 200, fill: 0xba)
        for _ in 0..<burst {
            a.transmit(ab)
            b.transmit(ba)
        }
        h.kick(a)
        h.kick(b)
        var gotA: [[UInt8]] = [], gotB: [[UInt8]] = []
        let ok = h.wait {
            gotA += a.receivedFrames().filter { $0 == ba }
            gotB += b.receivedFrames().filter { $0 == ab }
            return gotA.count >= burst && gotB.count >= burst
        }
        _ = a.reclaimUsed(queue: 1)
        _ = b.reclaimUsed(queue: 1)
        a.postReceiveBuffers(burst)
        b.postReceiveBuffers(burst)
        return ok && gotA.count == burst && gotB.count == burst
    }
}

/// Log lines kept in memory so tests can count them (rate limiting).
final class CapturedLog: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [(Logger.Level, String)] = []
    func append(_ level: Logger.Level, _ line: String) {
        lock.lock()
        lines.append((level, line))
        lock.unlock()
    }
    func count(level: Logger.Level, containing text: String) -> Int {
        lock.lock()
        defer { lock.unlock() }
        return lines.filter { $0.0 == level && $0.1.contains(text) }.count
    }
}

struct CapturedLogHandler: LogHandler {
    let log: CapturedLog
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
             file: String, function: String, line: UInt) {
        log.append(level, "\(message) \(metadata ?? [:])")
    }
}
