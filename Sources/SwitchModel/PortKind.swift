/// The kinds of port a bridge can have. The raw values are the wire protocol's and the
/// CLI's `--type` (and the configuration file's), so they never change.
public enum PortKind: String, Codable, Sendable, CaseIterable {
    case vhostUser = "vhostuser"
    case vhostUserClient = "vhostuserclient"
    case tap
    case pcap
    case vxlan
    /// A Geneve tunnel (RFC 8926): the VXLAN port's machinery with another header.
    case geneve

    public var isTunnel: Bool { self == .vxlan || self == .geneve }

    public var isVhost: Bool { self == .vhostUser || self == .vhostUserClient }
}
