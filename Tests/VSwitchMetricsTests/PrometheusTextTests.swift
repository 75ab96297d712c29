import VSwitchMetrics
import SwitchModel
import XCTest

final class PrometheusTextTests: XCTestCase {
    private func sample() -> MetricsSnapshot {
        var s = MetricsSnapshot()
        var c = PortCounters()
        c.rxPackets = 10
        c.rxBytes = 1400
        c.txPackets = 9
        c.txBytes = 1300
        c.txDropNoBuffers = 3
        let q = [QueueInfo(index: 0, size: 256, enabled: true, running: true),
                 QueueInfo(index: 1, size: 256, enabled: true, running: true)]
        let vm1 = PortInfo(name: "vm1", type: .vhostUserClient, path: "/run/vswitch/vm1.sock", state: "connected",
                           link: "up", features: [], protocolFeatures: [], mtu: nil, queues: q)
        let vx = PortInfo(name: "vx\"0", type: .vxlan, path: "", state: "", link: "down", features: [],
                          protocolFeatures: [], mtu: nil, queues: [])
        s.ports = [.init(bridge: "br0", info: vm1, counters: c, tunnel: false),
                   .init(bridge: "br0", info: vx, counters: PortCounters(), tunnel: true)]
        let cap = PortInfo(name: "cap", type: .pcap, path: "", state: "", link: "up", features: [], protocolFeatures: [],
                           mtu: nil, queues: [], options: ["framesWritten": "40", "framesDropped": "1"])
        s.ports.append(.init(bridge: "br0", info: cap, counters: PortCounters(), tunnel: false))
        let mirror = MirrorInfo(name: "m0", spec: MirrorSpec(selectSrc: ["vm1"], output: "cap"), mirrored: 7, dropped: 0, outputSentDropped: 0)
        s.bridges = [.init(name: "br0", macEntries: 2, agingSeconds: 300, mirrors: [mirror],
                              macLearned: 5, macAged: 3)]
        s.forwarding.frames = 19
        s.forwarding.cpuSeconds = 0.25
        s.uptimeSeconds = 12
        return s
    }

    private func lines() -> [String] {
        String(decoding: PrometheusText.render(sample()), as: UTF8.self).split(separator: "\n").map(String.init)
    }

    func testPortCountersWithBridgeAndPortLabels() {
        let l = lines()
        XCTAssertTrue(l.contains(#"vswitch_port_rx_packets_total{bridge="br0",port="vm1"} 10"#), "\(l)")
        XCTAssertTrue(l.contains(#"vswitch_port_tx_bytes_total{bridge="br0",port="vm1"} 1300"#))
        XCTAssertTrue(l.contains(#"vswitch_port_tx_dropped_packets_total{bridge="br0",port="vm1",reason="no_buffers"} 3"#))
        XCTAssertTrue(l.contains(#"vswitch_port_link_up{bridge="br0",port="vm1",type="vhostuserclient"} 1.0"#))
        XCTAssertTrue(l.contains(#"vswitch_port_queue_pairs{bridge="br0",port="vm1"} 1.0"#))
        XCTAssertTrue(l.contains(#"vswitch_bridge_mac_entries{bridge="br0"} 2.0"#))
        XCTAssertTrue(l.contains(#"vswitch_bridge_mac_learned_total{bridge="br0"} 5"#))
        XCTAssertTrue(l.contains(#"vswitch_bridge_mac_aged_total{bridge="br0"} 3"#))
        XCTAssertTrue(l.contains("# TYPE vswitch_bridge_mac_learned_total counter"))
        XCTAssertTrue(l.contains(#"vswitch_forwarding_frames_total{thread="vswitch-fwd"} 19"#))
        XCTAssertTrue(l.contains(#"vswitch_forwarding_cpu_seconds_total{thread="vswitch-fwd"} 0.25"#))
        XCTAssertTrue(l.contains("# TYPE vswitch_port_rx_packets_total counter"))
        XCTAssertTrue(l.contains("# TYPE vswitch_uptime_seconds gauge"))
    }

    func testCaptureAndMirrorCounters() {
        let l = lines()
        XCTAssertTrue(l.contains(#"vswitch_capture_written_packets_total{bridge="br0",port="cap"} 40"#), "\(l)")
        XCTAssertTrue(l.contains(#"vswitch_capture_dropped_packets_total{bridge="br0",port="cap"} 1"#))
        XCTAssertTrue(l.contains(#"vswitch_mirror_mirrored_packets_total{bridge="br0",mirror="m0"} 7"#))
        XCTAssertFalse(l.contains { $0.hasPrefix("vswitch_port_queue_pairs") && $0.contains(#"port="cap""#) })
    }

    func testEveryDropCounterHasAReasonAndTunnelOnesOnlyOnTunnels() {
        let l = lines()
        for c in PortCounter.allCases {
            let (name, reason) = PrometheusText.series(c)
            XCTAssertTrue(name.hasSuffix("_total"), name)
            if c.name.contains("Drop") { XCTAssertNotNil(reason, c.name) }
        }
        XCTAssertEqual(PrometheusText.series(.rxDropUnknownRemote).reason, "unknown_remote")
        XCTAssertFalse(l.contains { $0.contains(#"port="vm1""#) && $0.contains(#"reason="vni""#) })
        // A label value with a quote is escaped, not a broken line.
        XCTAssertTrue(l.contains(#"vswitch_port_rx_dropped_packets_total{bridge="br0",port="vx\"0",reason="vni"} 0"#), "\(l)")
    }

    func testHelpAndTypeOncePerFamily() {
        let types = lines().filter { $0.hasPrefix("# TYPE ") }
        XCTAssertEqual(types.count, Set(types).count)
        XCTAssertEqual(lines().filter { $0.hasPrefix("# HELP vswitch_port_rx_packets_total ") }.count, 1)
    }

    /// Several forwarding threads: one series per thread, labelled with its name.
    func testOneSeriesPerForwardingThread() {
        var s = sample()
        var a = MetricsSnapshot.Forwarding(), b = MetricsSnapshot.Forwarding()
        a.frames = 7
        b.thread = "vswitch-fwd1"
        b.frames = 8
        s.forwardingThreads = [a, b]
        let l = String(decoding: PrometheusText.render(s), as: UTF8.self).split(separator: "\n").map(String.init)
        XCTAssertTrue(l.contains(#"vswitch_forwarding_frames_total{thread="vswitch-fwd"} 7"#), "\(l)")
        XCTAssertTrue(l.contains(#"vswitch_forwarding_frames_total{thread="vswitch-fwd1"} 8"#), "\(l)")
        XCTAssertEqual(l.filter { $0.hasPrefix("# TYPE vswitch_forwarding_frames_total") }.count, 1)
    }
}
