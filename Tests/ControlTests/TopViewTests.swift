import SwitchModel
import Control
import VSwitchCLI
import XCTest

final class TopViewTests: XCTestCase {
    private func port(_ name: String, link: String = "up", bridge: String = "br0", _ c: [PortCounter: UInt64]) -> TopView.Port {
        TopView.Port(bridge: bridge, name: name, link: link, stats: PortStats(port: name, c))
    }

    /// Two samples 2 s apart: vm2 carries the most traffic, vm1 drops for two reasons,
    /// idle is down, new appeared only in the second sample.
    private func samples() -> (TopView.Sample, TopView.Sample) {
        let a = TopView.Sample(ports: [
            port("vm1", [.rxPackets: 100, .rxBytes: 10_000, .txPackets: 50, .txBytes: 5_000, .txDropNoBuffers: 4]),
            port("vm2", [.rxPackets: 1_000, .rxBytes: 1_000_000, .txPackets: 1_000, .txBytes: 1_000_000]),
            port("idle", link: "down", [:]),
        ], datapath: DatapathStats(polls: 0, emptyPolls: 0, sleeps: 0, frames: 0, cpuSeconds: 1.0,
                                   busyCycles: 1_000, awakeCycles: 10_000))
        let b = TopView.Sample(ports: [
            port("idle", link: "down", [:]),
            port("vm1", [.rxPackets: 120, .rxBytes: 12_000, .txPackets: 60, .txBytes: 6_000, .txDropNoBuffers: 10,
                         .rxDropRunt: 2]),
            port("vm2", [.rxPackets: 3_000, .rxBytes: 3_500_000, .txPackets: 2_000, .txBytes: 2_000_000]),
            port("new", [.rxPackets: 999_999]),
        ], datapath: DatapathStats(polls: 0, emptyPolls: 0, sleeps: 0, frames: 0, cpuSeconds: 1.5,
                                   busyCycles: 3_500, awakeCycles: 20_000))
        return (a, b)
    }

    func testRatesFromTwoSamplesSortedByTraffic() {
        let (a, b) = samples()
        let r = TopView.rates(previous: a, current: b, elapsed: 2)
        XCTAssertEqual(r.map(\.port), ["vm2", "vm1", "idle", "new"], "busiest first, then by name")
        XCTAssertEqual(r[0].rxPps, 1_000)
        XCTAssertEqual(r[0].txPps, 500)
        XCTAssertEqual(r[0].rxBps, 10_000_000)    // 2.5 MB in 2 s
        XCTAssertEqual(r[0].txBps, 4_000_000)
        XCTAssertEqual(r[1].rxPps, 10)
        XCTAssertEqual(r[1].txBps, 4_000)
        XCTAssertEqual(r[1].drops.map(\.counter), [.rxDropRunt, .txDropNoBuffers])
        XCTAssertEqual(r[1].drops.map(\.perSecond), [1, 3])
        XCTAssertEqual(r[1].dropsPerSecond, 4)
        XCTAssertEqual(r[3].rxPps, 0, "a port without a previous sample has no rate yet")
        let f = TopView.forwarding(previous: a.datapath, current: b.datapath, elapsed: 2)
        XCTAssertEqual(f?.busy ?? -1, 25, accuracy: 1e-9)   // 2500 of 10000 awake cycles
        XCTAssertEqual(f?.cpu ?? -1, 25, accuracy: 1e-9)    // 0.5 s of CPU in 2 s
    }

    func testFrameColumns() {
        let (a, b) = samples()
        let lines = TopView.render(previous: a, current: b, elapsed: 2)
        XCTAssertEqual(lines[0], "vswitch top - 4 ports - interval 2.0 s")
        XCTAssertEqual(lines[1], "forwarding thread: busy 25.0% of awake cycles, cpu 25.0%")
        XCTAssertEqual(lines[3], "BRIDGE  PORT  LINK  RX pkt/s  TX pkt/s  RX bit/s  TX bit/s  DROP/s  DROPS BY REASON (/s)")
        XCTAssertEqual(lines[4], "br0     vm2   up        1000       500     10.0M     4.00M       0  -")
        XCTAssertEqual(lines[5], "br0     vm1   up          10       5.0     8.00k     4.00k     4.0  rx runt frame 1.0, tx no guest buffers 3.0")
        XCTAssertEqual(lines[6], "br0     idle  down         0         0         0         0       0  -")
        XCTAssertEqual(lines.count, 8)
        XCTAssertFalse(lines.joined().contains("\u{1B}"), "no escape codes in the frame itself")
        XCTAssertEqual(TopView.render(previous: a, current: b, elapsed: 2, width: 20)[3], "BRIDGE  PORT  LINK  ")
    }

    func testEmptyAndCounterReset() {
        let none = TopView.Sample(ports: [], datapath: nil)
        XCTAssertEqual(TopView.render(previous: none, current: none, elapsed: 1).suffix(2),
                       ["BRIDGE  PORT  LINK  RX pkt/s  TX pkt/s  RX bit/s  TX bit/s  DROP/s  DROPS BY REASON (/s)", "(no ports)"])
        let old = TopView.Sample(ports: [port("vm1", [.rxPackets: 500])], datapath: nil)
        let recreated = TopView.Sample(ports: [port("vm1", [.rxPackets: 7])], datapath: nil)
        XCTAssertEqual(TopView.rates(previous: old, current: recreated, elapsed: 1)[0].rxPps, 7)
    }

    func testParsing() throws {
        let t = try Top.parseAsRoot(["--interval", "0.5", "--once"]) as! Top
        XCTAssertEqual(t.interval, 0.5)
        XCTAssertTrue(t.once)
        XCTAssertThrowsError(try Top.parseAsRoot(["--interval", "0"]))
    }

    /// Several forwarding threads: the summed line, then one line per thread.
    func testOneLinePerForwardingThread() {
        func stats(_ busy: UInt64, _ awake: UInt64, _ cpu: Double) -> DatapathStats {
            DatapathStats(summing: [
                DatapathStats(polls: 0, emptyPolls: 0, sleeps: 0, frames: 0, cpuSeconds: cpu, busyCycles: busy,
                              awakeCycles: awake, thread: "vswitch-fwd", cpu: 0, bridges: ["br0"]),
                DatapathStats(polls: 0, emptyPolls: 0, sleeps: 0, frames: 0, cpuSeconds: 0, busyCycles: 0,
                              awakeCycles: 0, thread: "vswitch-fwd1", cpu: 1, bridges: []),
            ])
        }
        let a = TopView.Sample(ports: [], datapath: stats(0, 0, 0))
        let b = TopView.Sample(ports: [], datapath: stats(500, 1_000, 1))
        let lines = TopView.render(previous: a, current: b, elapsed: 2)
        XCTAssertEqual(Array(lines[1...3]), [
            "forwarding thread: busy 50.0% of awake cycles, cpu 50.0%",
            "  vswitch-fwd (cpu 0): busy 50.0%, cpu 50.0%, bridges br0",
            "  vswitch-fwd1 (cpu 1): busy 0.0%, cpu 0.0%, bridges -",
        ])
    }
}
