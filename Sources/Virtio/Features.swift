/// Virtio feature bits this switch knows about (virtio 1.2, 6 "Reserved Feature Bits" and
/// 5.1.3 "Network device feature bits"), plus vhost-user's protocol-feature flag.
public enum VirtioFeature {
    public static let netCsum: UInt64 = 1 << 0
    public static let netGuestCsum: UInt64 = 1 << 1
    public static let netGuestTso4: UInt64 = 1 << 7
    public static let netGuestTso6: UInt64 = 1 << 8
    public static let netHostTso4: UInt64 = 1 << 11
    public static let netHostTso6: UInt64 = 1 << 12
    /// The checksum and TCP segmentation offloads the switch offers (it finishes or
    /// segments in software for destinations that did not negotiate them).
    public static let netOffloads: UInt64 = netCsum | netGuestCsum | netGuestTso4 | netGuestTso6 | netHostTso4 | netHostTso6
    public static let netMTU: UInt64 = 1 << 3
    public static let netMAC: UInt64 = 1 << 5
    public static let netMergeableRxBuffers: UInt64 = 1 << 15
    public static let netStatus: UInt64 = 1 << 16
    public static let netControlQueue: UInt64 = 1 << 17
    /// The guest announces itself (gratuitous ARPs) after a live migration, when QEMU asks.
    public static let netGuestAnnounce: UInt64 = 1 << 21
    public static let netMultiqueue: UInt64 = 1 << 22
    public static let notifyOnEmpty: UInt64 = 1 << 24
    /// vhost: the backend logs its writes into guest memory in the dirty log while this is
    /// acked (live migration).
    public static let logAll: UInt64 = 1 << 26
    public static let anyLayout: UInt64 = 1 << 27
    public static let ringIndirectDescriptors: UInt64 = 1 << 28
    public static let ringEventIndex: UInt64 = 1 << 29
    /// vhost-user: GET/SET_PROTOCOL_FEATURES are available (bit 30).
    public static let vhostUserProtocolFeatures: UInt64 = 1 << 30
    public static let version1: UInt64 = 1 << 32
    public static let accessPlatform: UInt64 = 1 << 33
    public static let ringPacked: UInt64 = 1 << 34
    /// The device uses buffers in the order they were made available (virtio 1.2, 2.7.9 /
    /// 2.8.20). The switch always does: each queue is processed in ring order, and a chain
    /// it cannot use is left where it is.
    public static let inOrder: UInt64 = 1 << 35

    /// Human-readable names for `vswitch show`.
    public static let names: [(UInt64, String)] = [
        (netCsum, "CSUM"), (netGuestCsum, "GUEST_CSUM"), (netGuestTso4, "GUEST_TSO4"),
        (netGuestTso6, "GUEST_TSO6"), (netHostTso4, "HOST_TSO4"), (netHostTso6, "HOST_TSO6"),
        (netMTU, "MTU"), (netMAC, "MAC"), (netMergeableRxBuffers, "MRG_RXBUF"),
        (netStatus, "STATUS"), (netControlQueue, "CTRL_VQ"), (netMultiqueue, "MQ"),
        (netGuestAnnounce, "GUEST_ANNOUNCE"), (notifyOnEmpty, "NOTIFY_ON_EMPTY"), (logAll, "LOG_ALL"), (anyLayout, "ANY_LAYOUT"),
        (ringIndirectDescriptors, "INDIRECT_DESC"), (ringEventIndex, "EVENT_IDX"),
        (vhostUserProtocolFeatures, "PROTOCOL_FEATURES"), (version1, "VERSION_1"),
        (accessPlatform, "ACCESS_PLATFORM"), (ringPacked, "RING_PACKED"), (inOrder, "IN_ORDER"),
    ]

    public static func describe(_ bits: UInt64) -> [String] {
        var out: [String] = []
        var rest = bits
        for (bit, name) in names where bits & bit != 0 {
            out.append(name)
            rest &= ~bit
        }
        var b = 0
        while rest != 0 {
            if rest & 1 != 0 { out.append("bit\(b)") }
            rest >>= 1
            b += 1
        }
        return out
    }
}

/// The 12-byte virtio-net header (virtio 1.2, 5.1.6 "Device Operation").
/// Without VERSION_1 and without MRG_RXBUF the header is 10 bytes (no num_buffers).
public enum VirtioNetHeader {
    public static let size = 12
    public static let legacySize = 10
    /// Offset of `num_buffers` (little-endian u16) in the 12-byte header.
    public static let numBuffersOffset = 10

    public static func size(forFeatures features: UInt64) -> Int {
        features & (VirtioFeature.version1 | VirtioFeature.netMergeableRxBuffers) != 0 ? size : legacySize
    }
}
