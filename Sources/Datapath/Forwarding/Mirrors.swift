import SwitchModel
import Virtio

/// Port mirroring (SPAN/RSPAN, like OVS mirrors): a mirror selects frames (sent into the
/// bridge by some ports, delivered to some ports, in some VLANs, or all of them) and delivers
/// a copy of each to its output port, once per frame however many selections match. The copy
/// is made the way every frame is: straight from the source guest's buffer into the output's.
///
/// The output port is no longer an ordinary member: it gets no floods and no learned traffic,
/// and frames it sends are dropped and counted. Cost: ports no mirror selects keep the fast
/// lane; the general path tests `mirrorIn` once per frame and `mirrorOut` once per delivery.
struct MirrorSlot {
    var inUse = false
    var bridge: Int32 = -1
    var output: Int32 = -1
    var selectAll = false
    /// Frames in these VLANs (one bit per VID), or nil: no VLAN selection.
    var vlans: UnsafeMutablePointer<UInt64>? = nil
    /// Copies delivered to the output, copies it could not take (full ring, MTU), frames
    /// the output port sent (dropped). Forwarding thread only; read through `sync`.
    var mirrored: UInt64 = 0
    var dropped: UInt64 = 0
    var outputSent: UInt64 = 0

    mutating func release() {
        vlans?.deallocate()
        self = MirrorSlot()
    }

    func selects(vlan: UInt16) -> Bool {
        guard let vlans else { return false }
        return vlans[Int(vlan >> 6)] & (1 << UInt64(vlan & 63)) != 0
    }
}

extension PortSlot {
    /// In `mirrorIn`: this port is a mirror's output; frames it sends are dropped.
    static let mirrorOutputBit: UInt32 = 1 << 31
}

extension ForwardingEngine {
    /// At most 31 mirrors (bit 31 of `PortSlot.mirrorIn` marks output ports).
    public static let maxMirrors = 31

    /// Sets up (or replaces) mirror `m` on bridge `b`. `sources` and `destinations` are port
    /// slots of the bridge; `vlans` nil selects no VLAN. The control plane has checked names,
    /// that the output is not selected by its own mirror and is no other mirror's output.
    public func setMirror(_ m: Int, bridge b: Int, output: Int, sources: [Int], destinations: [Int],
                          vlans: [UInt16]?, all: Bool) {
        guard m < Self.maxMirrors, bridges[b].inUse, ports[output].inUse else { return }
        removeMirror(m)
        mirrors[m].inUse = true
        mirrors[m].bridge = Int32(b)
        mirrors[m].output = Int32(output)
        mirrors[m].selectAll = all
        if let vlans {
            let set = UnsafeMutablePointer<UInt64>.allocate(capacity: 64)
            set.initialize(repeating: 0, count: 64)
            for v in vlans where v < 4096 { set[Int(v >> 6)] |= 1 << UInt64(v & 63) }
            mirrors[m].vlans = set
        }
        mirrorSources[m] = sources
        mirrorDestinations[m] = destinations
        bridges[b].table?.remove(port: Int32(output), now: hot.pointee.now)   // no learned traffic any more
        refreshMirrors(bridge: b)
    }

    public func removeMirror(_ m: Int) {
        guard m < Self.maxMirrors, mirrors[m].inUse else { return }
        let b = Int(mirrors[m].bridge)
        mirrors[m].release()
        mirrorSources[m] = []
        mirrorDestinations[m] = []
        refreshMirrors(bridge: b)
    }

    /// (copies delivered, copies dropped, frames from the output port dropped).
    public func mirrorCounters(_ m: Int) -> (mirrored: UInt64, dropped: UInt64, outputSent: UInt64) {
        guard m < Self.maxMirrors, mirrors[m].inUse else { return (0, 0, 0) }
        return (mirrors[m].mirrored, mirrors[m].dropped, mirrors[m].outputSent)
    }

    /// Recomputes every member's `mirrorIn`/`mirrorOut` and the flood list of bridge `b`
    /// (after a mirror or a port changed).
    func refreshMirrors(bridge b: Int) {
        guard bridges[b].inUse else { return }
        for p in 0..<Self.maxPorts where ports[p].inUse && ports[p].bridge == Int32(b) {
            var mirrorIn: UInt32 = 0, mirrorOut: UInt32 = 0
            for m in 0..<Self.maxMirrors where mirrors[m].inUse && mirrors[m].bridge == Int32(b) {
                let bit: UInt32 = 1 << UInt32(m)
                if Int(mirrors[m].output) == p {
                    mirrorIn |= PortSlot.mirrorOutputBit
                    continue
                }
                if mirrors[m].selectAll || mirrors[m].vlans != nil || mirrorSources[m].contains(p) { mirrorIn |= bit }
                if mirrorDestinations[m].contains(p) { mirrorOut |= bit }
            }
            ports[p].mirrorIn = mirrorIn
            ports[p].mirrorOut = mirrorOut
            ports[p].recomputeRxQueue()
        }
        rebuildMembers(bridge: b)
    }

    /// A frame from port `p` (in `txScratch`) enters the bridge: copies for the mirrors that
    /// select it there. False if `p` is a mirror's output (the frame is dropped and counted).
    @inline(never)
    func mirrorIngress(from p: Int, header: Int, frameLength: Int) -> Bool {
        let slot = ports + p
        let selected = slot.pointee.mirrorIn
        if selected & PortSlot.mirrorOutputBit != 0 {
            for m in 0..<Self.maxMirrors where mirrors[m].inUse && Int(mirrors[m].output) == p { mirrors[m].outputSent &+= 1 }
            return false
        }
        var mask: UInt32 = 0
        var vlanChecked = false
        var vlan: UInt16? = nil
        var rest = selected
        while rest != 0 {
            let m = rest.trailingZeroBitCount
            rest &= rest &- 1
            if mirrors[m].selectAll || mirrorSources[m].contains(p) {
                mask |= 1 << UInt32(m)
            } else if mirrors[m].vlans != nil {
                if !vlanChecked {
                    let (_, w1) = FrameCopy.peek16(txScratch.pointee, at: header)
                    let tpid = UInt16(truncatingIfNeeded: w1 >> 32).byteSwapped
                    let tagged = tpid == 0x8100 && frameLength >= 18
                    vlan = slot.pointee.vlan.ingress(tagged: tagged, vid: UInt16(truncatingIfNeeded: w1 >> 48).byteSwapped & 0xfff)
                    vlanChecked = true
                }
                if let vlan, mirrors[m].selects(vlan: vlan) { mask |= 1 << UInt32(m) }
            }
        }
        hot.pointee.mirrored = 0
        if mask != 0 {
            if slot.pointee.sendsOffloads { readOffloadHeader() } else { hot.pointee.offloadHeader = 0 }
            copyToMirrors(mask, frameLength: frameLength, sourceHeader: header)
        }
        return true
    }

    /// A frame is being delivered to port `d`: copies for the mirrors that select frames
    /// delivered there and have none of this frame yet.
    @inline(never)
    func mirrorEgress(to d: Int, frameLength: Int, sourceHeader: Int) {
        let mask = ports[d].mirrorOut & ~hot.pointee.mirrored
        if mask != 0 { copyToMirrors(mask, frameLength: frameLength, sourceHeader: sourceHeader) }
    }

    /// Delivers the frame in `txScratch`, as it entered the bridge, to the output of each
    /// mirror in `mask`; a copy the output cannot take is dropped and counted on the mirror.
    private func copyToMirrors(_ mask: UInt32, frameLength: Int, sourceHeader: Int) {
        let already = hot.pointee.mirrored | mask
        hot.pointee.mirrored = UInt32.max   // a copy never makes copies
        var rest = mask
        while rest != 0 {
            let m = rest.trailingZeroBitCount
            rest &= rest &- 1
            let out = Int(mirrors[m].output)
            guard out >= 0, ports[out].inUse, let counters = ports[out].counters else { continue }
            let before = counters.pointee.txPackets
            deliver(to: out, frameLength: frameLength, sourceHeader: sourceHeader)
            if counters.pointee.txPackets != before { mirrors[m].mirrored &+= 1 } else { mirrors[m].dropped &+= 1 }
        }
        hot.pointee.mirrored = already
    }
}
