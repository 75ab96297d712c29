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
    /// vhostuser: group of the socket file the switch creates (`--socket-group`); nil: the
    /// daemon's `--socket-group`, if any.
    public var socketGroup: String?
    /// pcap: the file format, "pcap" (default) or "pcapng" (an interface per port, the
    /// direction of each frame). Set after `init`, like an option of its own.
    public var captureFormat: String?
    /// vxlan: accept datagrams from remotes not in `remotes` when they come from
    /// `remotePrefix` (CIDR), and learn the inner sources behind them (kernel `learning`).
    /// Set after `init`, like `captureFormat`.
    public var learning: Bool?
    public var remotePrefix: String?
    /// pcap: bytes of the ring between the forwarding thread and the capture's writer
    /// (`--buffer-size`), and the CPU the writer thread is pinned to (`--capture-cpu`).
    /// Set after `init`, like `captureFormat`.
    public var captureBuffer: Int?
    public var captureCPU: Int?
    /// vxlan: floods go to this IPv4 multicast group (joined on `dev`, sent with `ttl`,
    /// default 1) instead of `remotes`; remotes are learned from any source, as the
    /// kernel's vxlan driver does in group mode. Set after `init`, like `learning`.
    public var group: String?
    public var dev: String?
    public var ttl: Int?
    /// The forwarding thread (by its CPU) the port runs on when not its bridge's
    /// (`add-port --cpu`): the bridge then spans threads. Set after `init`.
    public var cpu: Int?

    public init(kind: PortKind, path: String? = nil, ifname: String? = nil, file: String? = nil,
                filter: String? = nil, snaplen: Int? = nil, rotateBytes: Int? = nil, rotateCount: Int? = nil,
                watchPort: String? = nil, direction: String? = nil, remotes: [String] = [], vni: Int? = nil,
                local: String? = nil, dstPort: Int? = nil, vlanMode: String? = nil, tag: Int? = nil,
                trunks: [Int]? = nil, mtu: Int? = nil, queues: Int? = nil, socketGroup: String? = nil) {
        self.socketGroup = socketGroup
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
