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
        let c = controller.engine.loopStatistics()
        s.forwarding.polls = c.polls
        s.forwarding.emptyPolls = c.emptyPolls
        s.forwarding.sleeps = c.sleeps
        s.forwarding.frames = c.frames
        s.forwarding.busyCycles = c.busyCycles
        s.forwarding.awakeCycles = c.awakeCycles
        s.forwarding.cpuSeconds = controller.engine.threadCPUSeconds()
        return s
    }
}
