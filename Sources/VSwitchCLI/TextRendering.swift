import SwitchModel
import Control
import Foundation

/// Pure functions turning results into the text the CLI prints. Kept free of I/O so tests
/// can check the output from sample data.
public enum TextRendering {
    /// `--format json`: the `result` object pretty-printed with sorted keys; `{}` when the
    /// command has no result, so scripts can always parse stdout.
    public static func json(_ result: ControlResult?) -> String {
        guard let result else { return "{}" }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(result) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    /// Bridges and ports, indented like `ovs-vsctl show`.
    public static func show(_ bridges: [BridgeInfo], now: Int = Int(Date().timeIntervalSince1970)) -> String {
        if bridges.isEmpty { return "no bridges" }
        var lines: [String] = []
        for bridge in bridges {
            lines.append("Bridge \(bridge.name)")
            lines.append("    aging: \(bridge.agingSeconds)s")
            if let t = bridge.thread { lines.append("    forwarding thread: \(t)") }
            if let c = bridge.macTable { lines.append("    mac table: \(macCounts(c))") }
            if bridge.ports.isEmpty { lines.append("    (no ports)") }
            for port in bridge.ports {
                lines.append("    Port \(port.name)")
                var fields: [(String, String)] = [
                    ("type", port.type.rawValue),
                    ("path", port.path),
                    ("state", port.state),
                    ("link", port.link),
                    ("mtu", port.mtu.map(String.init) ?? "-"),
                    ("features", port.features.isEmpty ? "-" : port.features.joined(separator: " ")),
                    ("protocol features",
                     port.protocolFeatures.isEmpty ? "-" : port.protocolFeatures.joined(separator: " ")),
                ]
                if let reason = port.reason { fields.append(("reason", reason)) }
                if let since = port.reasonSince { fields.append(("since", sinceText(since, now: now))) }
                fields += (port.options ?? [:]).sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
                let width = fields.map(\.0.count).max() ?? 0
                for (key, value) in fields {
                    lines.append("        " + pad(key + ":", width + 1) + " " + value)
                }
                if port.queues.isEmpty {
                    lines.append("        " + pad("queues:", width + 1) + " -")
                } else {
                    lines.append("        queues:")
                    let rows = port.queues.map { q in
                        // Even virtqueues are the guest's RX (frames to it), odd its TX. Said
                        // as "to/from guest" because port stats count rx/tx from the switch's side.
                        [String(q.index), q.index % 2 == 0 ? "to guest" : "from guest", String(q.size),
                         q.enabled ? "yes" : "no", q.running ? "yes" : "no"]
                    }
                    let table = self.table(header: ["queue", "dir", "size", "enabled", "running"],
                                           rows: rows, rightAligned: [0, 2])
                    lines += table.map { "            " + $0 }
                }
                if let regions = port.memoryRegions {
                    lines += memoryRegions(regions, labelWidth: width)
                }
            }
            lines += mirrors(bridge.mirrors ?? [])
        }
        return lines.joined(separator: "\n")
    }

    /// A bridge's port mirrors: what each selects, its output and what it copied.
    static func mirrors(_ mirrors: [MirrorInfo]) -> [String] {
        mirrors.flatMap { m in
            ["    Mirror \(m.name)",
             "        select: \(m.spec.selectionDescription)",
             "        output: \(m.spec.output)",
             "        mirrored: \(m.mirrored), dropped (output full): \(m.dropped), dropped from the output port: \(m.outputSentDropped)"]
        }
    }

    /// A vhost-user port's memory regions: where each sits in guest-physical space, its
    /// size, what backs it and whether it is sealed against shrinking (issue 21).
    static func memoryRegions(_ regions: [MemoryRegionInfo], labelWidth: Int) -> [String] {
        if regions.isEmpty { return ["        " + pad("memory:", labelWidth + 1) + " -"] }
        let rows = regions.map { r in
            ["0x" + String(r.guestPhysicalAddress, radix: 16), byteSize(r.size), r.backing, r.sealed ? "yes" : "no"]
        }
        let table = self.table(header: ["guest address", "size", "backing", "sealed"], rows: rows, rightAligned: [1])
        return ["        memory: \(regions.count) region\(regions.count == 1 ? "" : "s")"]
            + table.map { "            " + $0 }
    }

    /// 134217728 -> "128 MiB"; sizes that are not a whole number of KiB stay in bytes.
    static func byteSize(_ n: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = n
        var u = 0
        while u < units.count - 1, v >= 1024, v % 1024 == 0 {
            v /= 1024
            u += 1
        }
        return "\(v) \(units[u])"
    }

    /// The MAC table in `ovs-appctl fdb/show` layout:
    /// ```
    ///  port  VLAN  MAC                Age
    ///  vm1      0  52:54:00:00:00:01    3
    /// ```
    public static func fdb(_ table: FdbTable) -> String {
        let portWidth = max(4, table.entries.map(\.port.count).max() ?? 0)
        func row(_ port: String, _ vlan: String, _ mac: String, _ age: String) -> String {
            " " + pad(port, portWidth) + "  " + pad(vlan, 4, right: true) + "  " + pad(mac, 17)
                + "  " + pad(age, 3, right: true)
        }
        var lines = [row("port", "VLAN", "MAC", "Age")]
        for e in table.entries {
            lines.append(row(e.port, String(e.vlan), e.mac, String(e.ageSeconds)))
        }
        if let c = table.counts { lines.append(" (\(macCounts(c)))") }
        return lines.joined(separator: "\n")
    }

    /// "learned 12, aged out 3" (since the bridge was created).
    static func macCounts(_ c: MacTableCounts) -> String { "learned \(c.learned), aged out \(c.aged)" }

    /// One block per port: traffic counters, then every drop counter by name.
    public static func stats(_ stats: [PortStats]) -> String {
        if stats.isEmpty { return "no ports" }
        return stats.map { s in
            // Every counter that applies to every port, 0 if an older daemon left it out;
            // the tunnel-only ones where present.
            let counters: [(String, UInt64)] = PortCounter.allCases.compactMap { c in
                if let v = s[c] { return (c.label, v) }
                return c.tunnelOnly ? nil : (c.label, 0)
            }
            let labelWidth = counters.map(\.0.count).max() ?? 0
            let valueWidth = counters.map { String($0.1).count }.max() ?? 0
            let body = counters.map { "    " + pad($0.0 + ":", labelWidth + 1) + " " + pad(String($0.1), valueWidth, right: true) }
            return (["Port \(s.port)"] + body).joined(separator: "\n")
        }.joined(separator: "\n\n")
    }

    /// "2026-12-03 17:01:02 (42 s ago)", local time.
    static func sinceText(_ t: Int, now: Int) -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        let ago = max(now - t, 0)
        let span = ago < 120 ? "\(ago) s" : ago < 7200 ? "\(ago / 60) min" : "\(ago / 3600) h"
        return formatter.string(from: Date(timeIntervalSince1970: Double(t))) + " (\(span) ago)"
    }

    /// One block per port: each check with ok / warning / PROBLEM, and what to change.
    public static func doctor(_ reports: [DoctorReport]) -> String {
        if reports.isEmpty { return "no vhost-user ports" }
        return reports.map { r in
            var lines = ["Port \(r.port) (bridge \(r.bridge))"]
            for c in r.checks {
                let tag = c.status == .ok ? "ok     " : c.status == .warning ? "warning" : "PROBLEM"
                lines.append("    \(tag)  \(c.finding)")
                if let fix = c.fix { lines.append("             fix: \(fix)") }
            }
            return lines.joined(separator: "\n")
        }.joined(separator: "\n\n")
    }

    // MARK: - Helpers

    /// The forwarding thread's own counters, with the load and cycles per frame worked out.
    public static func datapath(_ d: DatapathStats) -> String {
        let load = d.awakeCycles == 0 ? 0 : 100 * Double(d.busyCycles) / Double(d.awakeCycles)
        let perFrame = d.frames == 0 ? 0 : Double(d.busyCycles) / Double(d.frames)
        return """
            polls:               \(d.polls)
            empty polls:         \(d.emptyPolls)
            sleeps:              \(d.sleeps)
            frames:              \(d.frames)
            busy cycles:         \(d.busyCycles)
            awake cycles:        \(d.awakeCycles)
            load while awake:    \(String(format: "%.1f", load))% (busy / awake cycles)
            busy cycles / frame: \(String(format: "%.0f", perFrame))
            cpu seconds:         \(String(format: "%.3f", d.cpuSeconds))
            """ + threads(d.threads ?? [])
    }

    /// With several forwarding threads, one row each after the sums (nothing for one).
    static func threads(_ list: [DatapathStats]) -> String {
        guard list.count > 1 else { return "" }
        let rows = list.map { t -> [String] in
            let load = t.awakeCycles == 0 ? 0 : 100 * Double(t.busyCycles) / Double(t.awakeCycles)
            return [t.thread ?? "?", t.cpu.map(String.init) ?? "-", String(t.frames), String(t.sleeps),
                    String(format: "%.1f%%", load), t.frames == 0 ? "0" : String(format: "%.0f", Double(t.busyCycles) / Double(t.frames)),
                    String(format: "%.3f", t.cpuSeconds), (t.bridges ?? []).isEmpty ? "-" : t.bridges!.joined(separator: ",")]
        }
        return "\n\n" + table(header: ["thread", "cpu", "frames", "sleeps", "load", "cycles/frame", "cpu s", "bridges"],
                              rows: rows, rightAligned: [1, 2, 3, 4, 5, 6]).joined(separator: "\n")
    }

    /// Rows padded so columns line up; columns in `rightAligned` are right-justified (numbers).
    static func table(header: [String], rows: [[String]], rightAligned: Set<Int>) -> [String] {
        let all = [header] + rows
        let widths = header.indices.map { col in all.map { $0[col].count }.max() ?? 0 }
        return all.map { row in
            row.indices.map { pad(row[$0], widths[$0], right: rightAligned.contains($0)) }
                .joined(separator: "  ")
                .trimmingTrailingSpaces()
        }
    }

    static func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(0, width - s.count))
        return right ? fill + s : s + fill
    }
}

extension String {
    fileprivate func trimmingTrailingSpaces() -> String {
        var s = self
        while s.last == " " { s.removeLast() }
        return s
    }
}
