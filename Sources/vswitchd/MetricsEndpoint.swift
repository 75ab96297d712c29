import Foundation
import VSwitchMetrics
import Switch
import SwitchModel
import VhostUser

/// `--metrics`: each scrape hops onto the control loop (`EventLoop.sync`, like every
/// control request) to copy what `show`, `port stats`, `fdb show` and `dp-stats` read, then
/// renders the text on the metrics thread. Nothing is counted for metrics on the hot path.
enum MetricsEndpoint {
    static func start(_ address: MetricsAddress, controller: SwitchController, loop: EventLoop,
                      started: Date) throws(MetricsServer.Failure) -> MetricsServer {
        let server = try MetricsServer(address: address) {
            var s = loop.sync { snapshot(controller) }
            s.uptimeSeconds = Date().timeIntervalSince(started)
            return PrometheusText.render(s)
        }
        server.start()
        return server
    }

    /// On the control loop thread.
    static func snapshot(_ controller: SwitchController) -> MetricsSnapshot {
        var s = MetricsSnapshot()
        for b in controller.snapshot() {
            let counters = Dictionary((try? controller.stats(bridge: b.name, port: nil)) ?? [], uniquingKeysWith: { a, _ in a })
            for p in b.ports {
                s.ports.append(.init(bridge: b.name, info: p, counters: counters[p.name] ?? PortCounters(),
                                     tunnel: controller.isTunnel(bridge: b.name, port: p.name)))
            }
            s.bridges.append(.init(name: b.name, macEntries: (try? controller.fdb(bridge: b.name).count) ?? 0,
                                   agingSeconds: b.agingSeconds, mirrors: b.mirrors ?? [],
                                   macLearned: b.macTable?.learned ?? 0, macAged: b.macTable?.aged ?? 0))
        }
        s.forwardingThreads = controller.threads.engines.map { e in
            let c = e.loopStatistics()
            var f = MetricsSnapshot.Forwarding()
            f.thread = e.threadName
            f.polls = c.polls
            f.emptyPolls = c.emptyPolls
            f.sleeps = c.sleeps
            f.frames = c.frames
            f.busyCycles = c.busyCycles
            f.awakeCycles = c.awakeCycles
            f.cpuSeconds = e.threadCPUSeconds()
            return f
        }
        return s
    }
}
