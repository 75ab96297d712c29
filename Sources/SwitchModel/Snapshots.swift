/// Snapshots for `show`, `fdb show` and `port stats`.
public struct PortSnapshot: Sendable {
    public var name: String
    public var kind: PortKind
    public var path: String
    public var state: String
    public var linkUp: Bool
    public var features: UInt64
    public var protocolFeatures: UInt64
    public var mtu: Int?
    public var queues: [(index: Int, size: Int, enabled: Bool, running: Bool)]
    /// Kind-specific facts for `show` (interface name, file, remote, capture drops...).
    public var options: [String: String] = [:]

    public init(name: String, kind: PortKind, path: String, state: String, linkUp: Bool, features: UInt64,
                protocolFeatures: UInt64, mtu: Int?, queues: [(index: Int, size: Int, enabled: Bool, running: Bool)],
                options: [String: String] = [:]) {
        self.name = name
        self.kind = kind
        self.path = path
        self.state = state
        self.linkUp = linkUp
        self.features = features
        self.protocolFeatures = protocolFeatures
        self.mtu = mtu
        self.queues = queues
        self.options = options
    }
}

public struct BridgeSnapshot: Sendable {
    public var name: String
    public var agingSeconds: Int
    public var ports: [PortSnapshot]
    public init(name: String, agingSeconds: Int, ports: [PortSnapshot]) {
        self.name = name
        self.agingSeconds = agingSeconds
        self.ports = ports
    }
}

public struct FdbRow: Sendable {
    public var mac: String
    public var port: String
    public var vlan: Int
    public var ageSeconds: Int
    public init(mac: String, port: String, vlan: Int, ageSeconds: Int) {
        self.mac = mac
        self.port = port
        self.vlan = vlan
        self.ageSeconds = ageSeconds
    }
}
