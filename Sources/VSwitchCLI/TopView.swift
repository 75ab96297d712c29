import SwitchModel
import Control
import Foundation

/// `vswitch top`'s frame, computed from two samples of the daemon's counters: pure, so the
/// rates, sorting and drop columns are tested without a daemon or a terminal.
public enum TopView {
    /// One port as `show` and `port stats` describe it at one moment.
    public struct Port: Sendable, Equatable {
        public var bridge: String
        public var name: String
        public var link: String
        public var stats: PortStats
        public init(bridge: String, name: String, link: String, stats: PortStats) {
            self.bridge = bridge
            self.name = name
            self.link = link
            self.stats = stats
        }
    }

    /// Everything one refresh reads: `show`, `port stats` of each bridge, `dp-stats`.
    public struct Sample: Sendable, Equatable {
        public var ports: [Port]
        public var datapath: DatapathStats?
        public init(ports: [Port], datapath: DatapathStats?) {
            self.ports = ports
            self.datapath = datapath
        }
    }

    /// A port's rates over the interval between two samples.
    public struct Rates: Sendable {
        public var bridge: String
        public var port: String
        public var link: String
        public var rxPps: Double
        public var txPps: Double
        public var rxBps: Double
        public var txBps: Double
        /// Drops per second, by counter (only counters that dropped in the interval).
        public var drops: [(counter: PortCounter, perSecond: Double)]
        public var dropsPerSecond: Double { drops.reduce(0) { $0 + $1.perSecond } }

    }

    /// Per port rates, busiest first (rx + tx packets per second), then by bridge and name.
    /// A port missing from `previous` (just added) shows 0 until the next refresh; a counter
    /// that went down (the port was re-created) counts from 0.
    public static func rates(previous: Sample, current: Sample, elapsed: Double) -> [Rates] {
        let dt = max(elapsed, 0.001)
        var before: [String: PortStats] = [:]
        for p in previous.ports { before[p.bridge + "\u{0}" + p.name] = p.stats }
        func rate(_ p: Port, _ c: PortCounter) -> Double {
            guard let old = before[p.bridge + "\u{0}" + p.name] else { return 0 }
            let now = p.stats[c] ?? 0, was = old[c] ?? 0
            return Double(now >= was ? now - was : now) / dt
        }
        return current.ports.map { p in
            Rates(bridge: p.bridge, port: p.name, link: p.link,
                  rxPps: rate(p, .rxPackets), txPps: rate(p, .txPackets),
                  rxBps: 8 * rate(p, .rxBytes), txBps: 8 * rate(p, .txBytes),
                  drops: PortCounter.allCases.filter(\.isDrop).compactMap { c in
                      let r = rate(p, c)
                      return r > 0 ? (c, r) : nil
                  })
        }.sorted { a, b in
            let (ta, tb) = (a.rxPps + a.txPps, b.rxPps + b.txPps)
            return ta != tb ? ta > tb : (a.bridge, a.port) < (b.bridge, b.port)
        }
    }

    /// The forwarding thread over the interval: busy share of its awake TSC cycles and its
    /// CPU share (both in percent), nil without `dp-stats` in both samples.
    public static func forwarding(previous: DatapathStats?, current: DatapathStats?,
                                  elapsed: Double) -> (busy: Double, cpu: Double)? {
        guard let a = previous, let b = current else { return nil }
        let awake = b.awakeCycles &- a.awakeCycles, busy = b.busyCycles &- a.busyCycles
        let busyShare = awake == 0 || b.awakeCycles < a.awakeCycles ? 0 : 100 * Double(min(busy, awake)) / Double(awake)
        return (busyShare, max(0, 100 * (b.cpuSeconds - a.cpuSeconds) / max(elapsed, 0.001)))
    }

    /// The frame's lines: a header, the forwarding thread, then one row per port. `width`
    /// cuts lines to the terminal; nil (for `--once`) keeps them whole.
    public static func render(previous: Sample, current: Sample, elapsed: Double,
                              width: Int? = nil, clock: String? = nil) -> [String] {
        let rows = rates(previous: previous, current: current, elapsed: elapsed)
        var lines = ["vswitch top - \(rows.count) port\(rows.count == 1 ? "" : "s") - interval "
                     + String(format: "%.1f", elapsed) + " s" + (clock.map { " - " + $0 } ?? "")]
        if let f = forwarding(previous: previous.datapath, current: current.datapath, elapsed: elapsed) {
            lines.append("forwarding thread: busy " + String(format: "%.1f", f.busy) + "% of awake cycles, cpu "
                         + String(format: "%.1f", f.cpu) + "%")
        } else {
            lines.append("forwarding thread: -")
        }
        // Several threads (`--forwarding-cpus`): the line above sums them; then one each.
        let before = previous.datapath?.threads ?? [], now = current.datapath?.threads ?? []
        if now.count > 1 {
            for t in now {
                let name = t.thread ?? "?"
                guard let f = forwarding(previous: before.first { $0.thread == t.thread }, current: t, elapsed: elapsed) else { continue }
                lines.append("  \(name)" + (t.cpu.map { " (cpu \($0))" } ?? "") + ": busy " + String(format: "%.1f", f.busy)
                             + "%, cpu " + String(format: "%.1f", f.cpu) + "%, bridges "
                             + ((t.bridges ?? []).isEmpty ? "-" : t.bridges!.joined(separator: ",")))
            }
        }
        lines.append("")
        let table = TextRendering.table(
            header: ["BRIDGE", "PORT", "LINK", "RX pkt/s", "TX pkt/s", "RX bit/s", "TX bit/s", "DROP/s", "DROPS BY REASON (/s)"],
            rows: rows.map { r in
                [r.bridge, r.port, r.link, number(r.rxPps), number(r.txPps), si(r.rxBps), si(r.txBps),
                 number(r.dropsPerSecond),
                 r.drops.isEmpty ? "-" : r.drops.map { reason($0.counter) + " " + number($0.perSecond) }.joined(separator: ", ")]
            },
            rightAligned: [3, 4, 5, 6, 7])
        lines += table
        if rows.isEmpty { lines.append("(no ports)") }
        guard let width else { return lines }
        return lines.map { $0.count > width ? String($0.prefix(width)) : $0 }
    }

    /// "tx no guest buffers" from the counter's label "tx dropped, no guest buffers".
    static func reason(_ c: PortCounter) -> String { c.label.replacingOccurrences(of: "dropped, ", with: "") }

    /// Packets per second: whole numbers from 10 up, one decimal below (a ping is 1.0).
    static func number(_ v: Double) -> String {
        v == 0 ? "0" : v >= 10 ? String(format: "%.0f", v) : String(format: "%.1f", v)
    }

    /// Bits per second with SI prefixes: 840, 12.3k, 1.23M, 4.56G.
    static func si(_ v: Double) -> String {
        if v < 1000 { return String(format: "%.0f", v) }
        for (limit, suffix) in [(1e6, "k"), (1e9, "M"), (1e12, "G")] where v < limit {
            let x = v / (limit / 1000)
            return String(format: x < 10 ? "%.2f" : x < 100 ? "%.1f" : "%.0f", x) + suffix
        }
        return String(format: "%.2fT", v / 1e12)
    }
}

extension PortCounter {
    /// The drop counters (everything but the four traffic counters).
    public var isDrop: Bool { ![.rxPackets, .rxBytes, .txPackets, .txBytes].contains(self) }
}
