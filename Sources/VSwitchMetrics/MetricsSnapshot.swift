import SwitchModel

/// Everything one scrape reports, copied on the control loop (the same reads as `vswitch
/// show`, `port stats` and `dp-stats`) and rendered afterwards on the metrics thread. The
/// forwarding thread never sees a scrape: its counters are read where they lie, nothing is
/// pushed per frame.
public struct MetricsSnapshot: Sendable {
    public struct Port: Sendable {
        public var bridge: String
        public var info: PortInfo
        public var counters: PortCounters
        /// VXLAN ports: only they have the VNI / remote drop counters.
        public var tunnel: Bool
        public init(bridge: String, info: PortInfo, counters: PortCounters, tunnel: Bool) {
            self.bridge = bridge
            self.info = info
            self.counters = counters
            self.tunnel = tunnel
        }
    }

    public struct Bridge: Sendable {
        public var name: String
        public var macEntries: Int
        public var agingSeconds: Int
        public var mirrors: [MirrorInfo]
        /// MAC table learns (new, moved, back after aging) and age-outs since the bridge was made.
        public var macLearned: UInt64
        public var macAged: UInt64
        public init(name: String, macEntries: Int, agingSeconds: Int, mirrors: [MirrorInfo],
                    macLearned: UInt64 = 0, macAged: UInt64 = 0) {
            self.name = name
            self.macEntries = macEntries
            self.macLearned = macLearned
            self.macAged = macAged
            self.agingSeconds = agingSeconds
            self.mirrors = mirrors
        }
    }

    /// `ForwardingEngine.loopStatistics()` and `threadCPUSeconds()` of one forwarding thread.
    public struct Forwarding: Sendable {
        /// The `thread` label: `vswitch-fwd`, `vswitch-fwd1`, ...
        public var thread = "vswitch-fwd"
        public var polls: UInt64 = 0
        public var emptyPolls: UInt64 = 0
        public var sleeps: UInt64 = 0
        public var frames: UInt64 = 0
        public var busyCycles: UInt64 = 0
        public var awakeCycles: UInt64 = 0
        public var cpuSeconds: Double = 0
        public init() {}
    }

    public var bridges: [Bridge] = []
    public var ports: [Port] = []
    /// The forwarding thread, or one entry per thread (`vswitchd --forwarding-cpus`).
    public var forwarding = Forwarding()
    public var forwardingThreads: [Forwarding] = []
    public var uptimeSeconds: Double = 0
    public var version = VSwitchVersion.string
    public init() {}
}
