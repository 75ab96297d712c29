import Datapath
import SwitchModel
import VhostUser
#if canImport(Glibc)
import Glibc
#endif

/// Why each vhost-user port is not forwarding (VhostUser/LinkReason.swift), for `show`, and
/// a once-a-second look at every port so that each new reason is logged once, also when
/// nobody runs `vswitch show`: a denied QEMU or a stalled handshake leaves no other trace.
extension SwitchController {
    /// How often the reasons are re-evaluated (and logged when they change).
    static let linkWatchInterval = 1.0

    /// The reason of a vhost-user port and when it began (Unix time); nil while forwarding.
    func linkReason(_ endpoint: VhostUserEndpoint, broken: (queue: Int, fault: String, at: Int)?) -> (String, Int)? {
        let now = time(nil)
        let corrupt = broken.map { b in
            (LinkReason.broken(queue: b.queue, fault: b.fault, at: Self.clock(b.at)), Double(max(now - b.at, 0)))
        }
        guard let link = endpoint.checkLink(broken: corrupt) else { return nil }
        return (link.reason.text(seconds: Int(link.seconds)), now - Int(link.seconds))
    }

    /// Starts the once-a-second check with the first vhost-user port; it stops itself when
    /// the last one goes, so a switch without them never wakes.
    func startLinkWatch() {
        guard linkWatchTimer == nil else { return }
        linkWatchTimer = loop.schedule(after: Self.linkWatchInterval) { [weak self] in self?.watchLinks() }
    }

    private func watchLinks() {
        linkWatchTimer = nil
        let vhost = bridges.flatMap(\.ports).compactMap { p in p.endpoint.map { (p, $0) } }
        guard !vhost.isEmpty else { return }
        // Ask the forwarding threads only after a ring fault, and while a port stays broken:
        // idle guests cost them no wake-up. Slots are per engine: ask each engine for its own.
        let faults = ForwardingEngine.ringFaultCount
        var broken: [ObjectIdentifier: (queue: Int, fault: String, at: Int)] = [:]
        if faults != lastRingFaultCount || anyPortBroken {
            for engine in threads.engines {
                let mine = vhost.filter { $0.0.engine === engine }.map { (ObjectIdentifier($0.0), $0.0.slot) }
                guard !mine.isEmpty else { continue }
                let found = engine.sync { e in mine.compactMap { id, s in e.brokenRing(port: s).map { (id, $0) } } }
                for (id, b) in found { broken[id] = b }
            }
            lastRingFaultCount = faults
            anyPortBroken = !broken.isEmpty
        }
        for (port, endpoint) in vhost { _ = linkReason(endpoint, broken: broken[ObjectIdentifier(port)]) }
        startLinkWatch()
    }

    /// "12:01:03", local time.
    static func clock(_ t: Int) -> String {
        var tt = time_t(t)
        var parts = tm()
        localtime_r(&tt, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))"
    }
}
