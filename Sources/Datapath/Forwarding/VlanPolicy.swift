/// A port's 802.1Q policy, on the forwarding thread.
///
/// Inside a bridge every frame belongs to one VLAN (0 = untagged). The policy says which
/// VLANs a port carries and whether frames leave it tagged:
/// - `all` (default): every VLAN, frames as they are (VLAN 0 untagged, others tagged). A
///   bridge whose ports are all `all` never looks at policies (the fast path).
/// - `access(tag)`: untagged frames only, which belong to VLAN `tag`; tagged frames from
///   the port are dropped. Frames leave untagged.
/// - `trunk(set, native)`: tagged frames of the VLANs in `set`; untagged frames belong to
///   `native` (dropped when there is none). Frames of `native` leave untagged.
struct VlanPolicy {
    enum Mode: UInt8 { case all = 0, access, trunk }
    var mode = Mode.all
    /// access: the VLAN; trunk: the native VLAN, 0 = none.
    var tag: UInt16 = 0
    /// trunk: 4096-bit membership set.
    var trunks: UnsafeMutablePointer<UInt64>? = nil

    static func access(_ tag: UInt16) -> VlanPolicy { VlanPolicy(mode: .access, tag: tag) }

    static func trunk(_ vlans: [UInt16], native: UInt16) -> VlanPolicy {
        let set = UnsafeMutablePointer<UInt64>.allocate(capacity: 64)
        set.initialize(repeating: 0, count: 64)
        for v in vlans where v < 4096 { set[Int(v >> 6)] |= 1 << UInt64(v & 63) }
        return VlanPolicy(mode: .trunk, tag: native, trunks: set)
    }

    mutating func release() {
        trunks?.deallocate()
        self = VlanPolicy()
    }

    /// The VLAN a frame from this port belongs to, or nil if the port does not take it.
    @inline(__always)
    func ingress(tagged: Bool, vid: UInt16) -> UInt16? {
        switch mode {
        case .all: return tagged ? vid : 0
        case .access: return tagged ? nil : tag
        case .trunk:
            if tagged { return carriesTrunk(vid) ? vid : nil }
            return tag != 0 ? tag : nil
        }
    }

    /// Does the port carry VLAN `v`?
    @inline(__always)
    func carries(_ v: UInt16) -> Bool {
        switch mode {
        case .all: return true
        case .access: return v == tag
        case .trunk: return (v == tag && tag != 0) || carriesTrunk(v)
        }
    }

    /// Does a frame of VLAN `v` leave this port with an 802.1Q tag?
    @inline(__always)
    func egressTagged(_ v: UInt16) -> Bool {
        switch mode {
        case .all: return v != 0
        case .access: return false
        case .trunk: return v != tag
        }
    }

    @inline(__always)
    private func carriesTrunk(_ v: UInt16) -> Bool {
        guard let t = trunks, v < 4096 else { return false }
        return t[Int(v >> 6)] & (1 << UInt64(v & 63)) != 0
    }
}
