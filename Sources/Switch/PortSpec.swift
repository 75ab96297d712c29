/// Everything `add-port` can say about a port. Which fields matter depends on `kind`; the
/// controller checks them and names the missing or wrong one.
public struct PortSpec: Sendable, Equatable {
    public var kind: PortKind
    /// vhostuser / vhostuserclient: the socket path (relative paths go to the run directory).
    public var path: String?
    /// tap: the interface to create or attach to.
    public var ifname: String?
    /// pcap: output file, BPF filter, bytes kept per frame, rotation, what to watch.
    public var file: String?
    public var filter: String?
    public var snaplen: Int?
    public var rotateBytes: Int?
    public var rotateCount: Int?
    /// pcap: watch one port of the bridge instead of the whole bridge.
    public var watchPort: String?
    /// pcap: "rx" (frames the watched port sent into the bridge), "tx" or "both".
    public var direction: String?
    /// vxlan: remote tunnel endpoints, VNI, local address, UDP destination port.
    public var remotes: [String]
    public var vni: Int?
    public var local: String?
    public var dstPort: Int?
    /// Any kind: 802.1Q policy ("access" with `tag`, "trunk" with `trunks` and an optional
    /// native `tag`), and the largest payload delivered (MTU).
    public var vlanMode: String?
    public var tag: Int?
    public var trunks: [Int]?
    public var mtu: Int?
    /// vhost-user: queue pairs offered to the frontend (1-8).
    public var queues: Int?

    public init(kind: PortKind, path: String? = nil, ifname: String? = nil, file: String? = nil,
                filter: String? = nil, snaplen: Int? = nil, rotateBytes: Int? = nil, rotateCount: Int? = nil,
                watchPort: String? = nil, direction: String? = nil, remotes: [String] = [], vni: Int? = nil,
                local: String? = nil, dstPort: Int? = nil, vlanMode: String? = nil, tag: Int? = nil,
                trunks: [Int]? = nil, mtu: Int? = nil, queues: Int? = nil) {
        self.vlanMode = vlanMode
        self.tag = tag
        self.trunks = trunks
        self.mtu = mtu
        self.queues = queues
        self.kind = kind
        self.path = path
        self.ifname = ifname
        self.file = file
        self.filter = filter
        self.snaplen = snaplen
        self.rotateBytes = rotateBytes
        self.rotateCount = rotateCount
        self.watchPort = watchPort
        self.direction = direction
        self.remotes = remotes
        self.vni = vni
        self.local = local
        self.dstPort = dstPort
    }
}

/// A checked VLAN policy and MTU, ready for the engine.
struct PortPolicy: Equatable {
    var access: UInt16?
    var trunks: [UInt16]?
    var native: UInt16?
    var mtu: Int?

    var isDefault: Bool { access == nil && trunks == nil && mtu == nil }

    init(_ spec: PortSpec) throws(SwitchError) {
        func vid(_ v: Int, _ what: String) throws(SwitchError) -> UInt16 {
            guard (1...4094).contains(v) else { throw .invalidOption("invalid \(what) \(v): VLAN ids are 1-4094") }
            return UInt16(v)
        }
        switch spec.vlanMode {
        case nil:
            guard spec.tag == nil, spec.trunks == nil else {
                throw .invalidOption("--tag and --trunks need --vlan-mode access or trunk")
            }
        case "access":
            guard let tag = spec.tag else { throw .invalidOption("--vlan-mode access needs --tag") }
            guard spec.trunks == nil else { throw .invalidOption("--trunks is for --vlan-mode trunk") }
            access = try vid(tag, "--tag")
        case "trunk":
            guard let list = spec.trunks, !list.isEmpty else { throw .invalidOption("--vlan-mode trunk needs --trunks") }
            var vids: [UInt16] = []
            for v in list { vids.append(try vid(v, "VLAN in --trunks")) }
            trunks = vids
            if let tag = spec.tag { native = try vid(tag, "native --tag") }
        case let other?:
            throw .invalidOption("invalid --vlan-mode '\(other)': use access or trunk")
        }
        if let m = spec.mtu {
            guard (68...65535).contains(m) else { throw .invalidOption("invalid --mtu \(m): use 68-65535") }
            mtu = m
        }
    }

    /// For `show`.
    var description: [String: String] {
        var d: [String: String] = [:]
        if let access { d["vlan"] = "access \(access)" }
        if let trunks {
            d["vlan"] = "trunk " + trunks.map(String.init).joined(separator: ",") + (native.map { " native \($0)" } ?? "")
        }
        if let mtu { d["mtu limit"] = String(mtu) }
        return d
    }
}
