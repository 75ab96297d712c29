/// How many queue pairs a port may run: the limit the data plane sizes its per-port tables
/// by and the vhost-user device offers (GET_QUEUE_NUM). One place, so the two cannot drift.
public enum VirtioNetQueues {
    public static let maxPairs = 8
    public static let maxQueues = 2 * maxPairs
}

/// What a running queue needs: checked ring pointers, where to resume, eventfds and the
/// memory that keeps the mapping alive. Built by `VhostUserDevice` only after every
/// address was translated and checked.
public struct VringConfiguration {
    public init(index: Int, layout: SplitRingLayout, lastAvail: UInt16, kickFd: Int32?, callFd: Int32?,
                memory: GuestMemory, features: UInt64) {
        self.index = index
        self.layout = layout
        self.lastAvail = lastAvail
        self.kickFd = kickFd
        self.callFd = callFd
        self.memory = memory
        self.features = features
        if features & VirtioFeature.ringPacked != 0 {
            packedLayout = PackedRingLayout(size: layout.size, descriptors: layout.descriptors,
                                            driverEvent: layout.avail, deviceEvent: layout.used)
        }
    }
    public var index: Int
    /// Split rings: descriptor table, avail and used ring. Packed rings (`packedLayout`
    /// non-nil) keep SET_VRING_ADDR's three areas here as well.
    public var layout: SplitRingLayout
    /// Set when VIRTIO_F_RING_PACKED was negotiated: descriptor ring, driver event area
    /// (SET_VRING_ADDR's "available"), device event area ("used").
    public var packedLayout: PackedRingLayout?
    /// Split: the avail index to resume from. Packed: the descriptor position in bits
    /// 0-14 and the driver's wrap counter in bit 15 (vhost-user, SET_VRING_BASE); the used
    /// position and wrap counter are the same (a stopped ring has returned everything).
    public var lastAvail: UInt16
    /// nil: the frontend polls (no kick fd); the data plane must poll this queue.
    public var kickFd: Int32?
    public var callFd: Int32?
    public var memory: GuestMemory
    public var features: UInt64
    /// The guest-physical address the frontend wants used-ring writes logged at during live
    /// migration (SET_VRING_ADDR's `log` with VHOST_VRING_F_LOG), or nil.
    public var usedLogAddress: UInt64? = nil
}
