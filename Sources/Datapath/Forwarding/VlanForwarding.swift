/// Forwarding in a bridge where some port has an access or trunk policy: the frame's VLAN
/// comes from the ingress policy, only ports carrying that VLAN receive it, and the tag is
/// pushed or popped per destination during the one copy.
extension ForwardingEngine {
    @inline(never)
    func forwardVlanAware(from p: Int, frameLength: Int, header: Int, dst: UInt64, src: UInt64,
                          tagged: Bool, vid: UInt16) {
        let slot = ports + p
        guard let vlan = slot.pointee.vlan.ingress(tagged: tagged, vid: vid) else {
            slot.pointee.counters.unsafelyUnwrapped.add(.rxDropVlan)
            return
        }
        learn(src, vlan: vlan, port: p)
        let bridge = bridges + Int(slot.pointee.bridge)
        if dst & 1 == 0 {
            let out = Int(bridge.pointee.table.unsafelyUnwrapped.lookup(MacTable.key(mac: dst, vlan: vlan), now: hot.pointee.now))
            if out >= 0 {
                if out != p && ports[out].vlan.carries(vlan) {
                    deliver(to: out, frameLength: frameLength, sourceHeader: header, edit: edit(to: out, vlan, tagged))
                }
                return
            }
        }
        let members = bridge.pointee.members.unsafelyUnwrapped
        var i = 0
        while i < bridge.pointee.memberCount {
            let m = Int(members[i])
            if m != p && ports[m].vlan.carries(vlan) {
                deliver(to: m, frameLength: frameLength, sourceHeader: header, edit: edit(to: m, vlan, tagged))
            }
            i &+= 1
        }
    }

    @inline(__always)
    private func edit(to d: Int, _ vlan: UInt16, _ sourceTagged: Bool) -> UInt32 {
        let wantTag = ports[d].vlan.egressTagged(vlan)
        if wantTag == sourceTagged { return VlanEdit.none }
        return wantTag ? VlanEdit.push(vlan) : VlanEdit.pop
    }

    /// Sets a port's VLAN policy and MTU limit (control path, inside `sync`). Addresses the
    /// port learned are forgotten: they may belong to another VLAN now.
    public func setPortPolicy(port p: Int, access: UInt16?, trunks: [UInt16]?, native: UInt16?, mtu: Int?) {
        guard ports[p].inUse else { return }
        ports[p].vlan.release()
        if let access {
            ports[p].vlan = .access(access)
        } else if let trunks {
            ports[p].vlan = .trunk(trunks, native: native ?? 0)
        }
        ports[p].maxFrame = mtu.map { $0 + 14 } ?? (Int.max >> 1)
        forgetAddresses(port: p)
        let b = Int(ports[p].bridge)
        refreshVlanAware(bridge: b)
    }

    func refreshVlanAware(bridge b: Int) {
        guard bridges[b].inUse else { return }
        var aware = false
        for p in 0..<Self.maxPorts where ports[p].inUse && ports[p].bridge == Int32(b) && ports[p].vlan.mode != .all {
            aware = true
        }
        bridges[b].vlanAware = aware
    }
}
