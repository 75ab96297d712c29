import SwitchModel
import Control
import Switch
import Virtio
import VhostUser

/// Maps control-socket requests onto the `SwitchController`. Runs on the control loop
/// thread (the caller hops there with `EventLoop.sync`).
struct RequestHandler {
    let controller: SwitchController

    func handle(_ r: ControlRequest) -> ControlResponse {
        do {
            switch r.command {
            case .addBridge:
                try controller.addBridge(try need(r.bridge, "bridge"), agingSeconds: r.agingSeconds ?? 300, cpu: r.cpu)
                return .success()
            case .deleteBridge:
                try controller.deleteBridge(try need(r.bridge, "bridge"))
                return .success()
            case .setAging:
                try controller.setAging(bridge: try need(r.bridge, "bridge"), seconds: try need(r.agingSeconds, "agingSeconds"))
                return .success()
            case .addPort:
                try controller.addPort(bridge: try need(r.bridge, "bridge"), name: try need(r.port, "port"),
                                       spec: try Self.portSpec(r))
                return .success()
            case .deletePort:
                try controller.deletePort(bridge: try need(r.bridge, "bridge"), port: try need(r.port, "port"))
                return .success()
            case .show:
                return .success(ControlResult(bridges: controller.snapshot()))
            case .fdbShow:
                let bridge = try need(r.bridge, "bridge")
                let rows = try controller.fdb(bridge: bridge)
                return .success(ControlResult(fdb: FdbTable(bridge: bridge, entries: rows,
                                                            counts: try controller.macCounts(bridge: bridge))))
            case .fdbFlush:
                try controller.flushFdb(bridge: try need(r.bridge, "bridge"))
                return .success()
            case .datapathStats:
                return .success(ControlResult(datapath: DatapathStats(summing: controller.threadBridges().map { e, bridges in
                    let c = e.loopStatistics()
                    return DatapathStats(polls: c.polls, emptyPolls: c.emptyPolls, sleeps: c.sleeps, frames: c.frames,
                                         cpuSeconds: e.threadCPUSeconds(), busyCycles: c.busyCycles,
                                         awakeCycles: c.awakeCycles, thread: e.threadName, cpu: e.cpu, bridges: bridges)
                })))
            case .portStats:
                let bridge = try need(r.bridge, "bridge")
                let rows = try controller.stats(bridge: bridge, port: r.port)
                return .success(ControlResult(stats: rows.map { name, c in
                    PortStats(port: name, counters: c, tunnel: controller.isTunnel(bridge: bridge, port: name))
                }))
            case .addMirror:
                try controller.addMirror(bridge: try need(r.bridge, "bridge"), name: try need(r.mirror, "mirror"),
                                         spec: try need(r.mirrorSpec, "mirrorSpec"))
                return .success()
            case .deleteMirror:
                try controller.deleteMirror(bridge: try need(r.bridge, "bridge"), name: try need(r.mirror, "mirror"))
                return .success()
            case .doctor:
                return .success(ControlResult(doctor: try controller.doctor(port: r.port)))
            case .capture:
                return .failure("capture streams pcap: it is served by LiveCapture, not here")
            }
        } catch let e as SwitchError {
            return .failure(e.description)
        } catch let e as MissingField {
            return .failure("request is missing '\(e.name)'")
        } catch {
            return .failure("\(error)")
        }
    }

    struct MissingField: Error { let name: String }

    static func portSpec(_ r: ControlRequest) throws -> PortSpec {
        var spec = PortSpec(kind: r.type ?? .vhostUser, path: r.path, ifname: r.ifname, file: r.file, filter: r.filter,
                            snaplen: r.snaplen, rotateBytes: r.rotateBytes, rotateCount: r.rotateCount,
                            watchPort: r.watchPort, direction: r.direction, remotes: r.remotes ?? [], vni: r.vni,
                            local: r.local, dstPort: r.dstPort, vlanMode: r.vlanMode, tag: r.tag, trunks: r.trunks,
                            mtu: r.mtu, queues: r.queues, socketGroup: r.socketGroup)
        spec.captureFormat = r.captureFormat
        spec.learning = r.learning
        spec.remotePrefix = r.remotePrefix
        spec.captureBuffer = r.captureBuffer
        spec.captureCPU = r.captureCPU
        spec.group = r.group
        spec.dev = r.dev
        spec.ttl = r.ttl
        spec.cpu = r.cpu
        return spec
    }

    private func need<T>(_ v: T?, _ name: String) throws -> T {
        guard let v else { throw MissingField(name: name) }
        return v
    }
}
