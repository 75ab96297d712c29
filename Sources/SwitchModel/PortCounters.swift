/// Every per-port counter, once. Its order is the layout of the data plane's counter block
/// (`PortCounters`, one UInt64 each), its case names are the JSON field names of
/// `port stats`, and `label` is what the CLI prints: add a counter here and all three follow.
/// Directions are the switch's: rx = received from the port, tx = delivered to it.
public enum PortCounter: Int, CaseIterable, Sendable {
    case rxPackets, rxBytes, txPackets, txBytes
    /// Guest TX chains rejected: bad address, loop, too long, writable descriptor, ...
    case rxDropBadDescriptor
    /// Frames shorter than an Ethernet header.
    case rxDropRunt
    /// The destination RX ring had no (or not enough) buffers, or the port was down.
    case txDropNoBuffers
    /// Destination RX buffers malformed (bad address, read-only descriptor, ...).
    case txDropBadDescriptor
    /// Frames the port's VLAN policy refused (tagged on an access port, VLAN not trunked).
    case rxDropVlan
    /// Frames longer than the destination port's MTU (for a VXLAN port: the underlay's).
    case txDropTooBig
    /// Offload metadata (partial checksum, TSO) that could not be finished for this port:
    /// offsets outside the frame, not TCP, MSS below 64.
    case txDropBadOffload
    /// VXLAN: datagrams for another VNI.
    case rxDropVni
    /// VXLAN: datagrams from an address that is not a remote of the port.
    case rxDropUnknownRemote
    /// Tunnels: datagrams shorter than the tunnel header.
    case rxDropShortHeader
    /// VXLAN: datagrams without the I flag (RFC 7348, 5).
    case rxDropNoVniFlag
    /// Tunnels: inner frames longer than the port's MTU (or than the receive buffer).
    case rxDropTooLong
    /// Geneve: a version other than 0.
    case rxDropBadVersion
    /// Geneve: option lengths past Opt Len or the datagram.
    case rxDropBadOptions
    /// Geneve: a critical option (we implement none).
    case rxDropCriticalOption
    /// Geneve: a payload that is not Ethernet (protocol type), or an OAM packet.
    case rxDropNotEthernet
    /// TAP with offloads: the kernel's virtio-net header does not describe its frame
    /// (csum_start/csum_offset past the end, gso_size 0, hdr_len past the frame, a gso_type
    /// other than TCP), or the frame is longer than the 64 KiB receive buffer.
    case rxDropBadOffload
    /// Tunnels: UDP GSO super-datagrams sent (one per guest TSO segment and remote; the
    /// kernel cut each into the `txPackets` it counts for).
    case txGsoDatagrams
    /// Tunnels: TSO segments the kernel refused to send as UDP GSO (EIO, EINVAL): cut in
    /// software instead, and that send socket sends no more GSO.
    case txGsoRefused
    /// Tunnels: received messages in which the kernel coalesced several datagrams (UDP GRO);
    /// each datagram in them is counted in `rxPackets` as usual.
    case rxGroDatagrams
    /// Tunnels: received TCP segments merged with the segments before or after them into one
    /// TSO frame for a destination that takes TSO (receive-side coalescing, like the kernel's
    /// GRO); each is counted in `rxPackets` as usual.
    case rxCoalescedFrames

    /// The field name in `port stats --format json` (the case name).
    public var name: String { String(describing: self) }

    /// Only tunnel ports report it (absent from other ports' JSON and text).
    public var tunnelOnly: Bool {
        switch self {
        case .rxDropVni, .rxDropUnknownRemote, .rxDropShortHeader, .rxDropNoVniFlag, .rxDropTooLong,
             .rxDropBadVersion, .rxDropBadOptions, .rxDropCriticalOption, .rxDropNotEthernet,
             .txGsoDatagrams, .txGsoRefused, .rxGroDatagrams, .rxCoalescedFrames: return true
        default: return false
        }
    }

    /// What `vswitch port stats` prints.
    public var label: String {
        switch self {
        case .rxPackets: return "rx packets"
        case .rxBytes: return "rx bytes"
        case .txPackets: return "tx packets"
        case .txBytes: return "tx bytes"
        case .rxDropBadDescriptor: return "rx dropped, bad descriptor"
        case .rxDropRunt: return "rx dropped, runt frame"
        case .txDropNoBuffers: return "tx dropped, no guest buffers"
        case .txDropBadDescriptor: return "tx dropped, bad descriptor"
        case .rxDropVlan: return "rx dropped, VLAN not allowed"
        case .txDropTooBig: return "tx dropped, larger than MTU"
        case .txDropBadOffload: return "tx dropped, bad offload metadata"
        case .rxDropVni: return "rx dropped, other VNI"
        case .rxDropUnknownRemote: return "rx dropped, unknown remote"
        case .rxDropShortHeader: return "rx dropped, shorter than tunnel header"
        case .rxDropNoVniFlag: return "rx dropped, VXLAN I flag missing"
        case .rxDropTooLong: return "rx dropped, longer than MTU"
        case .rxDropBadVersion: return "rx dropped, Geneve version not 0"
        case .rxDropBadOptions: return "rx dropped, Geneve options malformed"
        case .rxDropCriticalOption: return "rx dropped, Geneve critical option"
        case .rxDropNotEthernet: return "rx dropped, not Ethernet (Geneve protocol or OAM)"
        case .rxDropBadOffload: return "rx dropped, bad offload metadata"
        case .txGsoDatagrams: return "tx UDP GSO datagrams"
        case .txGsoRefused: return "tx UDP GSO refused by the kernel"
        case .rxGroDatagrams: return "rx UDP GRO datagrams"
        case .rxCoalescedFrames: return "rx TCP segments merged into TSO frames"
        }
    }
}

/// One port's counters as a value: the layout of the data plane's counter block, one
/// UInt64 per `PortCounter` in its order (a unit test checks every field's offset). The
/// named fields are for code that wants one counter; `subscript` for code that walks them.
public struct PortCounters: Equatable, Sendable {
    public var rxPackets: UInt64 = 0
    public var rxBytes: UInt64 = 0
    public var txPackets: UInt64 = 0
    public var txBytes: UInt64 = 0
    public var rxDropBadDescriptor: UInt64 = 0
    public var rxDropRunt: UInt64 = 0
    public var txDropNoBuffers: UInt64 = 0
    public var txDropBadDescriptor: UInt64 = 0
    public var rxDropVlan: UInt64 = 0
    public var txDropTooBig: UInt64 = 0
    public var txDropBadOffload: UInt64 = 0
    public var rxDropVni: UInt64 = 0
    public var rxDropUnknownRemote: UInt64 = 0
    public var rxDropShortHeader: UInt64 = 0
    public var rxDropNoVniFlag: UInt64 = 0
    public var rxDropTooLong: UInt64 = 0
    public var rxDropBadVersion: UInt64 = 0
    public var rxDropBadOptions: UInt64 = 0
    public var rxDropCriticalOption: UInt64 = 0
    public var rxDropNotEthernet: UInt64 = 0
    public var rxDropBadOffload: UInt64 = 0
    public var txGsoDatagrams: UInt64 = 0
    public var txGsoRefused: UInt64 = 0
    public var rxGroDatagrams: UInt64 = 0
    public var rxCoalescedFrames: UInt64 = 0
    public init() {}

    public static let count = PortCounter.allCases.count

    public subscript(_ c: PortCounter) -> UInt64 {
        get { withUnsafeBytes(of: self) { $0.load(fromByteOffset: 8 * c.rawValue, as: UInt64.self) } }
        set { withUnsafeMutableBytes(of: &self) { $0.storeBytes(of: newValue, toByteOffset: 8 * c.rawValue, as: UInt64.self) } }
    }
}
