import Virtio

/// Data-plane state of one port. Plain values and raw pointers only, so the forwarding
/// loop reads it without reference counting.
struct PortSlot {
    var inUse = false
    var bridge: Int32 = -1
    /// Ring state per virtqueue; an entry is valid only where `runningMask` has its bit.
    var queues: UnsafeMutablePointer<SplitQueue>? = nil
    var runningMask: UInt32 = 0
    var kickFds: UnsafeMutablePointer<Int32>? = nil
    var callFds: UnsafeMutablePointer<Int32>? = nil
    /// Bytes of virtio-net header in this guest's buffers (12 or 10).
    var headerLength = VirtioNetHeader.size
    var mergeable = false
    /// Guest RX queue frames are delivered to (the first running even queue), or -1.
    var rxQueue = -1
    /// RX queues with used entries not yet published.
    var dirtyMask: UInt32 = 0
    var counters: UnsafeMutablePointer<PortCounters>? = nil
    /// The source address this port's last frame was learned from, the second and the MAC
    /// table generation at that time: frames of the same sender in the same second skip
    /// the table (a hash and a probe per frame). UInt64.max is never a valid key.
    var learnedKey = UInt64.max
    var learnedSecond: UInt32 = 0
    var learnedGeneration: UInt32 = 0
    /// Queues stopped because their ring was corrupt, and when that was last logged (BrokenRings.swift).
    var brokenMask: UInt32 = 0
    var brokenLogSecond: UInt32 = 0

    static let txMask: UInt32 = 0xAAAA_AAAA   // odd virtqueues: guest transmit

    mutating func allocate(bridge: Int32) {
        let n = ForwardingEngine.maxQueues
        self = PortSlot()
        inUse = true
        self.bridge = bridge
        queues = .allocate(capacity: n)
        kickFds = .allocate(capacity: n)
        kickFds!.initialize(repeating: -1, count: n)
        callFds = .allocate(capacity: n)
        callFds!.initialize(repeating: -1, count: n)
        counters = .allocate(capacity: 1)
        counters!.initialize(to: PortCounters())
    }

    mutating func release() {
        queues?.deallocate()
        kickFds?.deallocate()
        callFds?.deallocate()
        counters?.deallocate()
        self = PortSlot()
    }

    @inline(__always)
    func forEachRunningTx(_ body: (UnsafeMutablePointer<SplitQueue>) -> Void) {
        var m = runningMask & Self.txMask
        while m != 0 {
            let q = m.trailingZeroBitCount
            body(queues.unsafelyUnwrapped + q)
            m &= m &- 1
        }
    }

    mutating func recomputeRxQueue() {
        let rx = runningMask & ~Self.txMask
        rxQueue = rx == 0 ? -1 : rx.trailingZeroBitCount
    }
}

/// Data-plane state of one bridge: its MAC table and member ports.
struct BridgeSlot {
    var inUse = false
    var table: MacTable? = nil
    var members: UnsafeMutablePointer<Int32>? = nil
    var memberCount = 0

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
