import CShims

/// Per-port counters. Written only by the forwarding thread (relaxed stores), read by the
/// control thread (relaxed loads): no locks, no read-modify-write atomics on the hot path.
/// Directions are the switch's: rx = received from the port's guest, tx = sent to it.
public struct PortCounters: Equatable, Sendable {
    public var rxPackets: UInt64 = 0
    public var rxBytes: UInt64 = 0
    public var txPackets: UInt64 = 0
    public var txBytes: UInt64 = 0
    public var rxDropBadDescriptor: UInt64 = 0
    public var rxDropRunt: UInt64 = 0
    public var txDropNoBuffers: UInt64 = 0
    public var txDropBadDescriptor: UInt64 = 0
    /// Frames the port's VLAN policy does not take (tagged on an access port, ...).
    public var rxDropVlan: UInt64 = 0
    /// Frames longer than the port's MTU.
    public var txDropTooBig: UInt64 = 0
    /// Frames with offload metadata (partial checksum, TSO) that could not be finished
    /// for this port: offsets outside the frame, not TCP, MSS below 64.
    public var txDropBadOffload: UInt64 = 0
    /// VXLAN: datagrams for another VNI (or without the I flag), and from an address that
    /// is not a remote of the port. (Frames too big for the underlay count as txDropTooBig.)
    public var rxDropVni: UInt64 = 0
    public var rxDropUnknownRemote: UInt64 = 0
    public init() {}

    static let fieldCount = 13

    /// Snapshot of counters that another thread is updating.
    static func load(_ p: UnsafeMutablePointer<PortCounters>) -> PortCounters {
        p.withMemoryRebound(to: UInt64.self, capacity: fieldCount) { f in
            var c = PortCounters()
            c.rxPackets = vs_counter_load(f)
            c.rxBytes = vs_counter_load(f + 1)
            c.txPackets = vs_counter_load(f + 2)
            c.txBytes = vs_counter_load(f + 3)
            c.rxDropBadDescriptor = vs_counter_load(f + 4)
            c.rxDropRunt = vs_counter_load(f + 5)
            c.txDropNoBuffers = vs_counter_load(f + 6)
            c.txDropBadDescriptor = vs_counter_load(f + 7)
            c.rxDropVlan = vs_counter_load(f + 8)
            c.txDropTooBig = vs_counter_load(f + 9)
            c.txDropBadOffload = vs_counter_load(f + 10)
            c.rxDropVni = vs_counter_load(f + 11)
            c.rxDropUnknownRemote = vs_counter_load(f + 12)
            return c
        }
    }
}

/// Field offsets for `vs_counter_add` on the hot path.
enum Counter: Int {
    case rxPackets = 0, rxBytes, txPackets, txBytes, rxDropBadDescriptor, rxDropRunt, txDropNoBuffers, txDropBadDescriptor,
         rxDropVlan, txDropTooBig, txDropBadOffload, rxDropVni, rxDropUnknownRemote
}

extension UnsafeMutablePointer where Pointee == PortCounters {
    @inline(__always)
    func add(_ c: Counter, _ n: UInt64 = 1) {
        UnsafeMutableRawPointer(self).assumingMemoryBound(to: UInt64.self).advanced(by: c.rawValue)
            .withMemoryRebound(to: UInt64.self, capacity: 1) { vs_counter_add($0, n) }
    }
}
