import Datapath
import SwitchModel

/// Which forwarding thread a new bridge goes to (`vswitchd --forwarding-cpus`).
///
/// A bridge is the unit of ownership: all its ports are slots of one engine, so frames never
/// cross threads and need no lock (ForwardingThreads.swift). A bridge is placed when it is
/// added, before it has ports, so the load known then is what each thread already runs: the
/// thread with the fewest bridges, then the fewest ports, then the lowest index. With no
/// deletions that is round-robin; after a `del-br` the next bridge fills the gap. Bridges do
/// not move afterwards (moving one would mean stopping and restarting every ring of it).
extension SwitchController {
    /// One entry per engine: (bridges, ports) it runs.
    struct ThreadLoad: Equatable {
        var bridges: Int
        var ports: Int
    }

    /// The least loaded of `loads` (see the type's comment); 0 for a single thread.
    static func leastLoaded(_ loads: [ThreadLoad]) -> Int {
        var best = 0
        for i in loads.indices.dropFirst()
            where (loads[i].bridges, loads[i].ports) < (loads[best].bridges, loads[best].ports) {
            best = i
        }
        return best
    }

    /// What each engine runs now, in `threads.engines` order.
    var threadLoads: [ThreadLoad] {
        threads.engines.map { e in
            let mine = bridges.filter { $0.engine === e }
            return ThreadLoad(bridges: mine.count, ports: mine.reduce(0) { $0 + $1.ports.count })
        }
    }

    /// The index of the engine for a bridge being added.
    func engineForNewBridge() -> Int { Self.leastLoaded(threadLoads) }

    /// `add-br --cpu N`: the engine pinned to CPU N (placement by hand, like OVS's
    /// pmd-rxq-affinity, at the granularity of a bridge: e.g. to keep tunnel bridges that
    /// share a UDP port on one thread).
    func engineOnCPU(_ cpu: Int) throws(SwitchError) -> Int {
        if let i = threads.cpus.firstIndex(of: cpu) { return i }
        let pinned = threads.cpus.compactMap { $0 }
        throw .invalidOption(pinned.isEmpty
            ? "--cpu \(cpu): vswitchd runs one forwarding thread, not pinned (start it with --forwarding-cpus LIST to place bridges)"
            : "--cpu \(cpu): no forwarding thread on CPU \(cpu); vswitchd runs them on CPUs \(pinned.map(String.init).joined(separator: ",")) (--forwarding-cpus)")
    }

    /// Per forwarding thread: its engine and the names of the bridges it runs, in
    /// `threads.engines` order (`vswitch dp-stats`, metrics).
    public func threadBridges() -> [(engine: ForwardingEngine, bridges: [String])] {
        threads.engines.map { e in (e, bridges.filter { b in parts(b).contains { $0.engine === e } }.map(\.name)) }
    }
}
