import SwitchModel
import Virtio

/// What sits behind a port slot. vhost-user ports move frames through guest rings; the
/// others through a file descriptor the forwarding thread reads when epoll says so.
public enum SlotKind: UInt8 {
    case vhost = 0
    /// A TAP device: one frame per read(2)/writev(2), each after a 12-byte virtio-net
    /// header when the device has offloads (`headerLength` 12), else none (0).
    case tap = 1
    /// A VXLAN tunnel endpoint (UDP socket); state behind `PortSlot.local`.
    case vxlan = 2
    /// The end of a link to another engine's half of the bridge (`PeerEnd` behind `local`).
    case peer = 3
}

/// Data-plane state of one port. Plain values and raw pointers only, so the forwarding
/// loop reads it without reference counting.
struct PortSlot {
    var inUse = false
    var bridge: Int32 = -1
    var kind = SlotKind.vhost
    /// Non-vhost ports: the descriptor frames are read from and written to.
    var fd: Int32 = -1
    /// Non-vhost ports: kind-specific state owned by the control plane's port object,
    /// which outlives the slot (the slot is released first, inside `sync`).
    var local: UnsafeMutableRawPointer? = nil
    /// Ring state per virtqueue; an entry is valid only where `runningMask` has its bit.
    var queues: UnsafeMutablePointer<SplitQueue>? = nil
    var runningMask: UInt32 = 0
    /// Queues running as packed rings (VIRTIO_F_RING_PACKED): their state is in
    /// `packedQueues`, not `queues`. Per queue, so a frontend that changes its features
    /// between rings can never make one ring's state be read as the other kind.
    var packedMask: UInt32 = 0
    var packedQueues: UnsafeMutablePointer<PackedQueue>? = nil
    var kickFds: UnsafeMutablePointer<Int32>? = nil
    var callFds: UnsafeMutablePointer<Int32>? = nil
    /// Bytes of virtio-net header in this guest's buffers (12 or 10).
    var headerLength = VirtioNetHeader.size
    var mergeable = false
    /// Offloads: the guest may send partial checksums / TSO frames (CSUM), and takes them
    /// (GUEST_CSUM, GUEST_TSO4, GUEST_TSO6).
    var sendsOffloads = false
    var acceptsCsum = false
    var acceptsTso4 = false
    var acceptsTso6 = false
    /// Guest RX queue frames are delivered to (the first running even queue), or -1.
    var rxQueue = -1
    /// Running RX queues (multiqueue): a frame goes to the one its addresses hash to, so
    /// a flow stays on one queue. Packed 4 bits per queue index.
    var rxQueueList: UInt32 = 0
    var rxQueueCount = 0
    /// Several RX queues, a packed one, dirty logging or a mirror selecting its frames:
    /// `deliver` takes its one slower branch, and the fast lane is closed to it (but see
    /// `rxLaneOpen`). A port with one split RX queue tests nothing else.
    var rxSlowPath = false
    /// Several split RX queues, no packed one, no dirty logging and no mirror: the fast
    /// lane still delivers to the port, into the queue the frame's addresses hash to
    /// (`forwardFastIntoQueue`).
    var rxLaneOpen = false
    /// Mirrors that copy the frames this port sends into the bridge, plus
    /// `mirrorOutputBit` if it is a mirror's output; mirrors that copy the frames delivered
    /// to it (Mirrors.swift).
    var mirrorIn: UInt32 = 0
    var mirrorOut: UInt32 = 0
    /// Live migration: the frontend's dirty-page log, while logging is on (DirtyLogging.swift).
    var dirtyLog: DirtyLogView? = nil
    /// Per queue: the guest-physical address the frontend logs the used ring at
    /// (SET_VRING_ADDR with VHOST_VRING_F_LOG), or UInt64.max for none.
    var usedLogAddresses: UnsafeMutablePointer<UInt64>? = nil
    /// RX queues with used entries not yet published.
    var dirtyMask: UInt32 = 0
    var counters: UnsafeMutablePointer<PortCounters>? = nil
    /// The source address this port's last frame was learned from, the second and the MAC
    /// table generation at that time: frames of the same sender in the same second skip
    /// the table (a hash and a probe per frame). UInt64.max is never a valid key.
    var learnedKey = UInt64.max
    var learnedSecond: UInt32 = 0
    var learnedGeneration: UInt32 = 0
    /// Where this port's last fast-lane frame went: the next batch prefetches that port's
    /// receive buffers (a hint only; -1: none).
    var lastDestination: Int32 = -1
    /// 802.1Q membership (see `VlanPolicy`); the default carries every VLAN as it is.
    var vlan = VlanPolicy()
    /// Largest frame (Ethernet header and payload, without an 802.1Q tag) delivered to this
    /// port; longer ones are dropped and counted. Int.max: no limit.
    var maxFrame = Int.max >> 1
    /// Capture taps (CaptureTaps.swift) fed with the frames this port sends into the
    /// bridge (rx) and the frames delivered to it (tx).
    var captureRx: UInt32 = 0
    var captureTx: UInt32 = 0
    /// Queues stopped because their ring was corrupt, and when that was last logged (BrokenRings.swift).
    var brokenMask: UInt32 = 0
    var brokenLogSecond: UInt32 = 0
    /// The first fault since the port was last healthy, for `vswitch show`: which queue,
    /// which `RingFault`, and when (Unix time).
    var brokenQueue: Int32 = -1
    var brokenFault: ForwardingEngine.RingFault?
    var brokenAt = 0

    static let txMask: UInt32 = 0xAAAA_AAAA   // odd virtqueues: guest transmit

    mutating func allocate(bridge: Int32) {
        let n = ForwardingEngine.maxQueues
        self = PortSlot()
        inUse = true
        self.bridge = bridge
        queues = .allocate(capacity: n)
        packedQueues = .allocate(capacity: n)
        kickFds = .allocate(capacity: n)
        kickFds!.initialize(repeating: -1, count: n)
        callFds = .allocate(capacity: n)
        callFds!.initialize(repeating: -1, count: n)
        usedLogAddresses = .allocate(capacity: n)
        usedLogAddresses!.initialize(repeating: .max, count: n)
        counters = .allocate(capacity: 1)
        counters!.initialize(to: PortCounters())
    }

    mutating func release() {
        vlan.release()
        queues?.deallocate()
        packedQueues?.deallocate()
        kickFds?.deallocate()
        callFds?.deallocate()
        usedLogAddresses?.deallocate()
        counters?.deallocate()
        self = PortSlot()
    }

    @inline(__always)
    func forEachRunningTx(_ body: (UnsafeMutablePointer<SplitQueue>) -> Void) {
        var m = runningMask & Self.txMask & ~packedMask
        while m != 0 {
            let q = m.trailingZeroBitCount
            body(queues.unsafelyUnwrapped + q)
            m &= m &- 1
        }
    }

    @inline(__always)
    func forEachRunningPackedTx(_ body: (UnsafeMutablePointer<PackedQueue>) -> Void) {
        var m = runningMask & Self.txMask & packedMask
        while m != 0 {
            let q = m.trailingZeroBitCount
            body(packedQueues.unsafelyUnwrapped + q)
            m &= m &- 1
        }
    }

    mutating func recomputeRxQueue() {
        var rx = runningMask & ~Self.txMask
        rxQueue = rx == 0 ? -1 : rx.trailingZeroBitCount
        rxQueueList = 0
        rxQueueCount = 0
        while rx != 0 {
            rxQueueList |= UInt32(rx.trailingZeroBitCount) << UInt32(4 * rxQueueCount)
            rxQueueCount += 1
            rx &= rx &- 1
        }
        rxSlowPath = rxQueueCount > 1 || runningMask & ~Self.txMask & packedMask != 0 || dirtyLog != nil || mirrorOut != 0
        rxLaneOpen = rxQueueCount > 1 && runningMask & ~Self.txMask & packedMask == 0 && dirtyLog == nil && mirrorOut == 0
    }

    /// The RX queue for a frame between MAC addresses `a` and `b` (either order).
    /// The 24 high bits of the product mix every input bit; scaling them by the queue
    /// count (a multiply and a shift) maps them onto the queues as evenly as a modulo
    /// would, without a division per frame (tens of cycles; callgrind cannot see it).
    @inline(__always)
    func rxQueue(forAddresses a: UInt64, _ b: UInt64) -> Int {
        let h = ((a ^ b) &* 0x9E37_79B9_7F4A_7C15) >> 40
        let k = (h &* UInt64(truncatingIfNeeded: rxQueueCount)) >> 24   // < rxQueueCount <= 8
        return Int((rxQueueList >> UInt32(truncatingIfNeeded: 4 &* k)) & 0xf)
    }
}

/// Data-plane state of one bridge: its MAC table and member ports.
struct BridgeSlot {
    var inUse = false
    var table: MacTable? = nil
    var members: UnsafeMutablePointer<Int32>? = nil
    var memberCount = 0
    /// Some member has an access or trunk VLAN policy: frames take the VLAN-aware path.
    var vlanAware = false
    /// Bridge-wide capture taps: every frame entering the bridge is recorded once.
    var captureMask: UInt32 = 0
    /// Bridge-wide taps that also record every delivery (`--direction tx` or `both`): not
    /// read per frame; copied into `PortSlot.captureTx` of each member, now and when a port
    /// joins later, so delivery checks one mask as for a one-port capture.
    var captureTxAll: UInt32 = 0

    mutating func allocate(agingSeconds: UInt32) {
        self = BridgeSlot()
        inUse = true
        table = MacTable(agingSeconds: agingSeconds)
        members = .allocate(capacity: ForwardingEngine.maxPorts)
    }

    mutating func release() {
        table?.deallocate()
        members?.deallocate()
        self = BridgeSlot()
    }
}
