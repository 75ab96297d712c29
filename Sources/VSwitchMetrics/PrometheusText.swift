import Prometheus
import SwitchModel

/// Renders a `MetricsSnapshot` in the Prometheus text format with swift-prometheus. A
/// fresh registry per scrape: the snapshot already holds the totals, so each series is
/// set once, and a deleted port's series disappear with it (a long-lived registry would
/// keep them forever). Names follow Prometheus conventions: `vswitch_` prefix, `_total`
/// on counters, base units (bytes, seconds), labels `bridge`, `port`, `reason`.
public enum PrometheusText {
    public static func render(_ s: MetricsSnapshot) -> [UInt8] {
        let r = PrometheusCollectorRegistry()
        for p in s.ports { port(p, into: r) }
        for b in s.bridges { bridge(b, into: r) }
        for f in s.forwardingThreads.isEmpty ? [s.forwarding] : s.forwardingThreads { forwarding(f, into: r) }
        gauge(r, "vswitch_uptime_seconds", help: "Seconds since vswitchd started.").set(to: s.uptimeSeconds)
        gauge(r, "vswitch_build_info", [("version", s.version)],
                    help: "The vswitchd release (always 1).").set(to: 1)
        var out: [UInt8] = []
        out.reserveCapacity(4096 + 2048 * s.ports.count)
        r.emit(into: &out)
        return out
    }

    /// The registry's descriptor form (its `name:help:` calls are deprecated); the whole name
    /// is `metricName`, already ending in its unit (`_total`, `_bytes_total`, `_seconds`).
    private static func counter(_ r: PrometheusCollectorRegistry, _ name: String, _ labels: [(String, String)] = [],
                                help: String) -> Counter {
        r.makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }

    private static func gauge(_ r: PrometheusCollectorRegistry, _ name: String, _ labels: [(String, String)] = [],
                              help: String) -> Gauge {
        r.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }

    /// Which Prometheus series a `PortCounter` is. Drop counters share one family per
    /// direction with a `reason` label derived from the case name (`txDropNoBuffers` ->
    /// `no_buffers`), so a counter added to `PortCounter` appears here with no change.
    public static func series(_ c: PortCounter) -> (name: String, reason: String?) {
        switch c {
        case .rxPackets: return ("vswitch_port_rx_packets_total", nil)
        case .rxBytes: return ("vswitch_port_rx_bytes_total", nil)
        case .txPackets: return ("vswitch_port_tx_packets_total", nil)
        case .txBytes: return ("vswitch_port_tx_bytes_total", nil)
        default:
            let n = c.name
            for dir in ["rx", "tx"] where n.hasPrefix(dir + "Drop") {
                return ("vswitch_port_\(dir)_dropped_packets_total", snakeCase(String(n.dropFirst(dir.count + 4))))
            }
            return ("vswitch_port_\(snakeCase(n))_total", nil)
        }
    }

    static func snakeCase(_ s: String) -> String {
        var out = ""
        for ch in s {
            if ch.isUppercase, !out.isEmpty { out += "_" }
            out += ch.lowercased()
        }
        return out
    }

    private static func help(_ name: String) -> String {
        switch name {
        case "vswitch_port_rx_packets_total": return "Frames the switch received from the port."
        case "vswitch_port_rx_bytes_total": return "Bytes the switch received from the port."
        case "vswitch_port_tx_packets_total": return "Frames the switch delivered to the port."
        case "vswitch_port_tx_bytes_total": return "Bytes the switch delivered to the port."
        case "vswitch_port_rx_dropped_packets_total": return "Frames from the port dropped, by reason."
        case "vswitch_port_tx_dropped_packets_total": return "Frames for the port dropped, by reason."
        default: return "Port counter \(name)."
        }
    }

    private static func port(_ p: MetricsSnapshot.Port, into r: PrometheusCollectorRegistry) {
        let labels = [("bridge", p.bridge), ("port", p.info.name)]
        for c in PortCounter.allCases where p.tunnel || !c.tunnelOnly {
            let (name, reason) = series(c)
            let l = reason.map { labels + [("reason", $0)] } ?? labels
            counter(r, name, l, help: help(name)).increment(by: Int64(clamping: p.counters[c]))
        }
        gauge(r, "vswitch_port_link_up", labels + [("type", p.info.type.rawValue)],
                    help: "1 when the port forwards (a vhost-user port: at least one RX and one TX queue running).")
            .set(to: p.info.link == "up" ? 1 : 0)
        if p.info.type == .vhostUser || p.info.type == .vhostUserClient {
            gauge(r, "vswitch_port_queue_pairs", labels,
                        help: "Queue pairs the frontend set up (negotiated).").set(Int64(p.info.queues.count / 2))
            gauge(r, "vswitch_port_running_queues", labels,
                        help: "Virtqueues running in the forwarding thread.")
                .set(Int64(p.info.queues.filter(\.running).count))
        }
        if let o = p.info.options, let w = o["framesWritten"].flatMap(UInt64.init), let d = o["framesDropped"].flatMap(UInt64.init) {
            counter(r, "vswitch_capture_written_packets_total", labels,
                          help: "Frames a pcap port wrote to its file.").increment(by: Int64(clamping: w))
            counter(r, "vswitch_capture_dropped_packets_total", labels,
                          help: "Frames a pcap port lost (its capture ring was full).").increment(by: Int64(clamping: d))
        }
    }

    private static func bridge(_ b: MetricsSnapshot.Bridge, into r: PrometheusCollectorRegistry) {
        let labels = [("bridge", b.name)]
        gauge(r, "vswitch_bridge_mac_entries", labels, help: "Learned MAC addresses.").set(Int64(b.macEntries))
        gauge(r, "vswitch_bridge_aging_seconds", labels, help: "MAC aging time.").set(Int64(b.agingSeconds))
        counter(r, "vswitch_bridge_mac_learned_total", labels,
                help: "MAC addresses learned: new, moved to another port, or back after aging out.")
            .increment(by: Int64(clamping: b.macLearned))
        counter(r, "vswitch_bridge_mac_aged_total", labels, help: "MAC table entries that aged out.")
            .increment(by: Int64(clamping: b.macAged))
        for m in b.mirrors {
            let l = labels + [("mirror", m.name)]
            counter(r, "vswitch_mirror_mirrored_packets_total", l,
                          help: "Copies a mirror delivered to its output port.").increment(by: Int64(clamping: m.mirrored))
            counter(r, "vswitch_mirror_dropped_packets_total", l,
                          help: "Copies the mirror's output could not take.").increment(by: Int64(clamping: m.dropped))
            counter(r, "vswitch_mirror_output_sent_dropped_packets_total", l,
                          help: "Frames the output port sent into the bridge (dropped).")
                .increment(by: Int64(clamping: m.outputSentDropped))
        }
    }

    private static func forwarding(_ f: MetricsSnapshot.Forwarding, into r: PrometheusCollectorRegistry) {
        let l = [("thread", f.thread)]
        let counters: [(String, UInt64, String)] = [
            ("polls", f.polls, "Passes over all polled queues."),
            ("empty_polls", f.emptyPolls, "Passes that found no frame."),
            ("sleeps", f.sleeps, "Times the thread went to sleep in epoll."),
            ("frames", f.frames, "Frames taken from TX rings."),
            ("busy_cycles", f.busyCycles, "TSC cycles spent in passes that forwarded frames."),
            ("awake_cycles", f.awakeCycles, "TSC cycles spent awake (polling or forwarding)."),
        ]
        for (name, v, h) in counters {
            counter(r, "vswitch_forwarding_\(name)_total", l, help: h).increment(by: Int64(clamping: v))
        }
        counter(r, "vswitch_forwarding_cpu_seconds_total", l,
                      help: "CPU time of the forwarding thread (user + system).").increment(by: f.cpuSeconds)
    }
}
