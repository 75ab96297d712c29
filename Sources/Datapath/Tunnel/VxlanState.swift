/// What the forwarding thread knows about one VXLAN tunnel port (behind `PortSlot.local`).
/// Plain values and raw pointers only: the send and receive paths read it without reference
/// counting. `VxlanTunnel` (control plane) allocates it before the port slot exists and
/// frees it after the slot is gone, so the forwarding thread never sees it half-built.
public struct VxlanState {
    /// RFC 7348, 5: outer IPv4 (20) + UDP (8) + VXLAN (8) bytes around the inner Ethernet
    /// frame; the outer Ethernet header (14) makes the usual "50 bytes" of overhead.
    public static let ipUdpVxlanOverhead = 36
    /// The same over IPv6 (40-byte header): 56, and 70 bytes with the outer Ethernet header.
    public static let ip6UdpVxlanOverhead = 56
    public static let maxRemotes = 16
    /// Remotes a `--learning` port may add to its configured ones.
    public static let maxLearnedRemotes = 48
    public static let remoteCapacity = maxRemotes + maxLearnedRemotes
    /// Send sockets, each bound to its own UDP source port (see `flowHash`).
    public static let sendSockets = 8
    /// Learned inner MAC -> remote entries (open addressing, power of two).
    public static let tableSize = 4096
    static let probeLimit = 8
    /// Seconds a learned remote is trusted; after that a unicast frame is flooded to every
    /// remote again (the bridge's own MAC table decides whether it goes to the tunnel at all).
    static let learnSeconds: UInt32 = 300

    /// The 8-byte VXLAN header, ready to send (network byte order): flags 0x08 (I: the VNI
    /// is valid), 24 reserved bits, the VNI, 8 reserved bits.
    public var header: UnsafeMutablePointer<UInt64>
    /// The VNI as it appears in bytes 4-7 of a received header (VNI << 8, big-endian).
    public var vniWord: UInt32
    public var dstPort: UInt16
    /// `--type geneve` (RFC 8926): received headers are decoded by `GeneveCodec`; `header`
    /// is a Geneve one (8 bytes, no options, like VXLAN's). Everything else is shared.
    public var geneve = false
    /// Remotes in `remotes`: the configured ones (`floodCount`, where floods go), then the
    /// learned ones. Written only by the forwarding thread after start.
    public var remoteCount: Int
    public var floodCount: Int
    /// `--learning`: datagrams from an unknown address in this prefix (address & mask ==
    /// prefix; an IPv4 prefix's mask covers the ::ffff:0:0/96 of the mapped form) add it as
    /// a remote, with `learnedMaxFrame`.
    public var learning = false
    public var learnPrefix = TunnelAddress.zero
    public var learnMask = TunnelAddress.zero
    public var learnedMaxFrame = 0
    /// Remote addresses (IPv4-mapped or IPv6, one family per port) and the largest inner
    /// Ethernet frame that fits the underlay MTU towards each.
    public var remotes: UnsafeMutablePointer<TunnelAddress>
    public var maxFrame: UnsafeMutablePointer<Int>
    public var sendFds: UnsafeMutablePointer<Int32>
    public var sendCount: Int
    public var learned: UnsafeMutablePointer<LearnedRemote>
    /// Send sockets (bit i: `sendFds[i]`) on which the kernel refused a UDP GSO send (EIO or
    /// EINVAL: no checksum offload on the route, SO_NO_CHECK, IPsec, ...): TSO segments for
    /// them are cut in software from then on (`sendTunnelGso`). Forwarding thread only.
    public var gsoRefused: UInt32 = 0
    /// The receive socket, shared with the other tunnel ports on the same UDP port and local
    /// address (each with its own VNI: `TunnelSocketState`).
    public var socket: UnsafeMutablePointer<TunnelSocketState>
    /// The VNI (24 bits), the key of this port in `socket`'s table.
    public var vni: UInt32 { UInt32(bigEndian: vniWord) >> 8 }

    public struct LearnedRemote {
        /// `MacTable.key` of the inner source (MAC + VLAN); UInt64.max: empty.
        var key = UInt64.max
        var remote: Int32 = 0
        var seen: UInt32 = 0
        public init() {}
        init(key: UInt64, remote: Int32, seen: UInt32) {
            self.key = key
            self.remote = remote
            self.seen = seen
        }
    }

    public init(header: UnsafeMutablePointer<UInt64>, vniWord: UInt32, dstPort: UInt16, remoteCount: Int,
                remotes: UnsafeMutablePointer<TunnelAddress>, maxFrame: UnsafeMutablePointer<Int>,
                sendFds: UnsafeMutablePointer<Int32>, sendCount: Int, learned: UnsafeMutablePointer<LearnedRemote>,
                socket: UnsafeMutablePointer<TunnelSocketState>) {
        self.header = header
        self.vniWord = vniWord
        self.dstPort = dstPort
        self.remoteCount = remoteCount
        self.floodCount = remoteCount
        self.remotes = remotes
        self.maxFrame = maxFrame
        self.sendFds = sendFds
        self.sendCount = sendCount
        self.learned = learned
        self.socket = socket
    }

    public static func header(vni: UInt32) -> UInt64 {
        // Bytes on the wire: 08 00 00 00 | v2 v1 v0 00. Little-endian load of those bytes:
        let word1 = UInt64((vni << 8).bigEndian)
        return 0x08 | word1 << 32
    }

    @inline(__always)
    static func slot(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: mix(key) >> 52) & (tableSize - 1)
    }

    /// A 64-bit finalizer (splitmix64): cheap, and every input bit moves every output bit.
    @inline(__always)
    static func mix(_ x: UInt64) -> UInt64 {
        var h = x &* 0x9E37_79B9_7F4A_7C15
        h ^= h >> 29
        h &*= 0xBF58_476D_1CE4_E5B9
        h ^= h >> 32
        return h
    }

    /// Records that inner source `key` lives behind remote `r` (forwarding thread).
    @inline(__always)
    func learn(_ key: UInt64, remote r: Int32, now: UInt32) {
        var i = Self.slot(key)
        var victim = i
        var oldest = UInt32.max
        var n = 0
        while n < Self.probeLimit {
            let e = learned + i
            if e.pointee.key == key || e.pointee.key == .max {
                e.pointee = LearnedRemote(key: key, remote: r, seen: now)
                return
            }
            let age = now &- e.pointee.seen
            if oldest == .max || age > oldest { oldest = age; victim = i }
            i = (i &+ 1) & (Self.tableSize - 1)
            n &+= 1
        }
        learned[victim] = LearnedRemote(key: key, remote: r, seen: now)
    }

    /// Adds `address` as a learned remote if learning allows it; its index, or -1.
    mutating func learnRemote(_ address: TunnelAddress) -> Int {
        guard learning, address & learnMask == learnPrefix, remoteCount < Self.remoteCapacity else { return -1 }
        remotes[remoteCount] = address
        maxFrame[remoteCount] = learnedMaxFrame
        remoteCount += 1
        return remoteCount - 1
    }

    /// The remote `key` was learned from, or -1 (unknown or too old: flood to all).
    @inline(__always)
    func remote(for key: UInt64, now: UInt32) -> Int {
        var i = Self.slot(key)
        var n = 0
        while n < Self.probeLimit {
            let e = learned[i]
            if e.key == key { return now &- e.seen < Self.learnSeconds ? Int(e.remote) : -1 }
            if e.key == .max { return -1 }
            i = (i &+ 1) & (Self.tableSize - 1)
            n &+= 1
        }
        return -1
    }
}
