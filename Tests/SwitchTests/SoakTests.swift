import CShims
import Foundation
import GuestSimulator
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
@testable import CaptureWriter

/// Load (issue 6, promise 6): 16 simulated guests on one bridge, all sending at once
/// through the real forwarding thread, one of them short of RX buffers so drops happen.
/// Checks that no port stalls (every port sends and receives in every 1-second window),
/// that memory does not grow, and that the counters add up for the bridge:
/// frames in = frames the guests sent, frames out + drops = frames in x fan-out.
///
/// Runs for VSWITCH_SOAK_SECONDS (default 3; Tools/test gives it 60 in CI).
final class SoakTests: XCTestCase {
    static let ports = 16
    static let burst = 16
    static let broadcastEvery = 64   // one frame in 64 is a broadcast (fan-out 15)
    static let starving = 15         // this guest refills at most 32 RX buffers: drops

    struct Guest {
        let sim: SimulatedGuest
        let unicast: [UInt8]
        let broadcast: [UInt8]
        var sent = 0, broadcasts = 0, txDone = 0
        var rxPosted = 0, received = 0
    }

    func testSixteenPortsUnderLoad() throws {
        let seconds = Double(ProcessInfo.processInfo.environment["VSWITCH_SOAK_SECONDS"] ?? "") ?? 3
        let h = EngineHarness()
        var guests: [Guest] = []
        for i in 0..<Self.ports {
            let sim = SimulatedGuest(queueSize: 256, bufferSize: 2048)
            try h.attach(sim)
            let me = TestFrame.mac(UInt8(i + 1)), next = TestFrame.mac(UInt8((i + 1) % Self.ports + 1))
            guests.append(Guest(sim: sim, unicast: TestFrame.make(dst: next, src: me, payload: 64 + 32 * i),
                                broadcast: TestFrame.make(dst: TestFrame.broadcast, src: me, etherType: 0x0806)))
        }
        // Every guest announces itself once so that unicast is learned, not flooded.
        for i in guests.indices {
            guests[i].sim.postReceiveBuffers(64)
            guests[i].rxPosted = 64
        }
        for i in guests.indices {
            guests[i].sim.transmit(guests[i].broadcast)
            guests[i].sent += 1
            guests[i].broadcasts += 1
            h.kick(guests[i].sim)
        }
        XCTAssertTrue(h.wait { h.engine.sync { e in e.fdbEntries(bridge: h.bridge).count } == Self.ports })

        var windowStart = Date()
        var last = (0..<Self.ports).map { h.counters(guests[$0].sim) }
        var baselineRSS = 0, peakAfterBaseline = 0
        let start = Date()
        let baselineAt = min(max(1, seconds / 6), 10)
        var windows = 0
        while Date().timeIntervalSince(start) < seconds {
            for i in guests.indices { pump(&guests[i], index: i, h: h, send: true) }
            if Date().timeIntervalSince(windowStart) >= 1 {
                let now = (0..<Self.ports).map { h.counters(guests[$0].sim) }
                for p in 0..<Self.ports {
                    XCTAssertGreaterThan(now[p].rxPackets, last[p].rxPackets, "port \(p) sent nothing for 1 s")
                    XCTAssertGreaterThan(now[p].txPackets, last[p].txPackets, "port \(p) received nothing for 1 s")
                }
                last = now
                windowStart = Date()
                windows += 1
                let rss = Self.residentBytes()
                if baselineRSS == 0 && Date().timeIntervalSince(start) >= baselineAt { baselineRSS = rss }
                if baselineRSS != 0 { peakAfterBaseline = max(peakAfterBaseline, rss) }
            }
        }
        // Let the switch finish every frame handed to it.
        XCTAssertTrue(h.wait(10) {
            for i in guests.indices { pump(&guests[i], index: i, h: h, send: false) }
            return guests.allSatisfy { $0.txDone == $0.sent }
        }, "every TX chain came back")
        XCTAssertTrue(h.wait {
            let c = (0..<Self.ports).map { h.counters(guests[$0].sim) }
            for i in guests.indices { pump(&guests[i], index: i, h: h, send: false) }
            return c.reduce(0) { $0 + Int($1.txPackets) } == guests.reduce(0) { $0 + $1.received }
        }, "every delivered frame was seen by its guest")

        let c = (0..<Self.ports).map { h.counters(guests[$0].sim) }
        let sent = guests.reduce(0) { $0 + $1.sent }
        let broadcasts = guests.reduce(0) { $0 + $1.broadcasts }
        let framesIn = c.reduce(0) { $0 + Int($1.rxPackets + $1.rxDropRunt + $1.rxDropBadDescriptor) }
        let out = c.reduce(0) { $0 + Int($1.txPackets) }
        let drops = c.reduce(0) { $0 + Int($1.txDropNoBuffers + $1.txDropBadDescriptor) }
        let received = guests.reduce(0) { $0 + $1.received }
        print("soak: \(seconds) s, \(Self.ports) ports: \(sent) frames sent (\(broadcasts) broadcasts), "
              + "in \(framesIn), out \(out), dropped \(drops), received \(received); "
              + "RSS \(baselineRSS >> 10) KiB after warm-up, peak \(peakAfterBaseline >> 10) KiB")
        XCTAssertEqual(framesIn, sent, "frames in = frames the guests sent")
        XCTAssertEqual(out + drops, (sent - broadcasts) + broadcasts * (Self.ports - 1),
                       "frames out + drops = unicast + broadcast x 15")
        XCTAssertEqual(received, out, "frames out = frames the guests received")
        XCTAssertGreaterThan(c[Self.starving].txDropNoBuffers, 0, "the starving guest's ring ran full")
        XCTAssertGreaterThanOrEqual(windows, Int(seconds * 0.8) - 1, "1-second progress checks made")
        if baselineRSS != 0 {
            XCTAssertLessThan(peakAfterBaseline - baselineRSS, 4 << 20, "memory grew under steady load")
        }
        XCTAssertLessThan(h.idlePolls(over: 0.3), 10_000, "the forwarding thread sleeps once traffic stops")
    }

    /// One guest's turn: take back TX chains and RX buffers, refill RX, send a burst.
    func pump(_ g: inout Guest, index i: Int, h: EngineHarness, send: Bool) {
        let size = Int(g.sim.queueSize)
        g.txDone += g.sim.reclaimUsed(queue: 1)
        g.received += g.sim.reclaimUsed(queue: 0)
        let outstanding = g.rxPosted - g.received
        let target = i == Self.starving ? 32 : size
        if outstanding < target {
            g.sim.postReceiveBuffers(target - outstanding)
            g.rxPosted += target - outstanding
        }
        guard send, g.sent - g.txDone + Self.burst <= size else { return }
        for _ in 0..<Self.burst {
            if g.sent % Self.broadcastEvery == 0 {
                g.sim.transmit(g.broadcast)
                g.broadcasts += 1
            } else {
                g.sim.transmit(g.unicast)
            }
            g.sent += 1
        }
        h.kick(g.sim)
    }

    /// Resident set size of this process, from /proc/self/statm (pages).
    static func residentBytes() -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let f = s.split(separator: " ")
        return f.count > 1 ? (Int(f[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
    }
}
