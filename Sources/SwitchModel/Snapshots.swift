/// What `show` and `fdb show` report, as the control protocol carries it (JSON, keys
/// sorted) and as the control plane builds it: one set of types for both, so the wire and
/// the switch cannot drift. Feature names are the virtio / vhost-user names.
public struct BridgeInfo: Codable, Sendable, Equatable {
    public var name: String
    public var agingSeconds: Int
    public var ports: [PortInfo]
    /// Port mirrors (absent when there are none, and from daemons older than this field).
    public var mirrors: [MirrorInfo]?
    /// MAC table activity since the bridge was created (absent from older daemons).
    public var macTable: MacTableCounts?
    /// The forwarding thread that runs the bridge and its ports (`vswitch-fwd1`); absent when
    /// the daemon has one thread (and from older daemons).
    public var thread: String?
    public init(name: String, agingSeconds: Int, ports: [PortInfo], mirrors: [MirrorInfo]? = nil,
                macTable: MacTableCounts? = nil, thread: String? = nil) {
        self.name = name
        self.agingSeconds = agingSeconds
        self.ports = ports
        self.mirrors = mirrors
        self.macTable = macTable
        self.thread = thread
    }
}

/// What a bridge's MAC table did: `learned` counts new addresses, moves to another port
/// and addresses back after aging out; `aged` counts entries that aged out. Removal with a
/// port and `fdb flush` count as neither.
public struct MacTableCounts: Codable, Sendable, Equatable {
    public var learned: UInt64
    public var aged: UInt64
    public init(learned: UInt64, aged: UInt64) {
        self.learned = learned
        self.aged = aged
    }
}

public struct QueueInfo: Codable, Sendable, Equatable {
    /// Virtqueue index: even = guest RX (switch -> guest), odd = guest TX (guest -> switch).
    public var index: Int
    public var size: Int
    public var enabled: Bool
    /// Running in the forwarding thread (memory, addresses, kick fd all set and enabled).
    public var running: Bool
    public init(index: Int, size: Int, enabled: Bool, running: Bool) {
        self.index = index
        self.size = size
        self.enabled = enabled
        self.running = running
    }
}

/// One region of a vhost-user port's guest memory, as the switch mapped it.
public struct MemoryRegionInfo: Codable, Sendable, Equatable {
    public var guestPhysicalAddress: UInt64
    public var size: UInt64
    /// "memfd", "hugetlbfs" or "file" (tmpfs, /dev/shm...).
    public var backing: String
    /// Sealed against shrinking (F_SEAL_SHRINK): the frontend cannot truncate it under the
    /// switch. An unsealed region is covered by the SIGBUS guard instead.
    public var sealed: Bool
    public init(guestPhysicalAddress: UInt64, size: UInt64, backing: String, sealed: Bool) {
        self.guestPhysicalAddress = guestPhysicalAddress
        self.size = size
        self.backing = backing
        self.sealed = sealed
    }
}

public struct PortInfo: Codable, Sendable, Equatable {
    public var name: String
    public var type: PortKind
    public var path: String
    /// "listening", "connecting", "connected", "stopped".
    public var state: String
    /// "up" when at least one RX and one TX queue are running.
    public var link: String
    /// Negotiated virtio feature names, e.g. ["VERSION_1", "MRG_RXBUF"].
    public var features: [String]
    public var protocolFeatures: [String]
    public var mtu: Int?
    public var queues: [QueueInfo]
    /// A vhost-user port's guest memory regions in guest-physical order (nil for other
    /// kinds, and from daemons older than this field).
    public var memoryRegions: [MemoryRegionInfo]?
    /// Type-specific facts: TAP interface and namespace, pcap file and drops, VXLAN VNI...
    public var options: [String: String]?
    /// vhost-user ports that do not forward: why, in words ("connecting: /run/vswitch/vm1.sock
    /// does not exist (QEMU not started yet?), retrying every 1 s"). Nil while forwarding.
    public var reason: String?
    /// When the condition behind `reason` began, Unix time in seconds.
    public var reasonSince: Int?
    public init(name: String, type: PortKind, path: String, state: String, link: String,
                features: [String], protocolFeatures: [String], mtu: Int?, queues: [QueueInfo],
                memoryRegions: [MemoryRegionInfo]? = nil, options: [String: String]? = nil,
                reason: String? = nil, reasonSince: Int? = nil) {
        self.options = options
        self.memoryRegions = memoryRegions
        self.reason = reason
        self.reasonSince = reasonSince
        self.name = name
        self.type = type
        self.path = path
        self.state = state
        self.link = link
        self.features = features
        self.protocolFeatures = protocolFeatures
        self.mtu = mtu
        self.queues = queues
    }
}

public struct FdbEntry: Codable, Sendable, Equatable {
    public var mac: String   // "52:54:00:00:00:01"
    public var port: String
    public var vlan: Int     // 0 = untagged
    public var ageSeconds: Int
    public init(mac: String, port: String, vlan: Int, ageSeconds: Int) {
        self.mac = mac
        self.port = port
        self.vlan = vlan
        self.ageSeconds = ageSeconds
    }
}

public struct FdbTable: Codable, Sendable, Equatable {
    public var bridge: String
    public var entries: [FdbEntry]
    /// The table's learn and age-out counts (absent from older daemons).
    public var counts: MacTableCounts?
    public init(bridge: String, entries: [FdbEntry], counts: MacTableCounts? = nil) {
        self.bridge = bridge
        self.entries = entries
        self.counts = counts
    }
}
