import SwitchModel
import CShims
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// Changes to data-plane state. Each runs on the forwarding thread (call them inside
/// `sync`, or before `start`) between batches.
extension ForwardingEngine {
    public func addBridge(agingSeconds: UInt32) -> Int? {
        guard let b = (0..<Self.maxBridges).first(where: { !bridges[$0].inUse }) else { return nil }
        bridges[b].allocate(agingSeconds: agingSeconds)
        return b
    }

    public func removeBridge(_ b: Int) {
        closeCaptures(bridge: b)
        for m in 0..<Self.maxMirrors where mirrors[m].inUse && mirrors[m].bridge == Int32(b) { removeMirror(m) }
        for p in 0..<Self.maxPorts where ports[p].inUse && ports[p].bridge == Int32(b) { removePort(p) }
        bridges[b].release()
    }

    public func setAging(bridge b: Int, seconds: UInt32) { bridges[b].table?.agingSeconds = seconds }

    public func addPort(bridge b: Int) -> Int? {
        guard bridges[b].inUse, let p = (0..<Self.maxPorts).first(where: { !ports[$0].inUse }) else { return nil }
        ports[p].allocate(bridge: Int32(b))
        ports[p].captureTx = bridges[b].captureTxAll
        refreshMirrors(bridge: b)   // select-all and VLAN mirrors take the new port in; rebuilds members
        return p
    }

    public func removePort(_ p: Int) {
        guard ports[p].inUse else { return }
        for q in 0..<Self.maxQueues where ports[p].runningMask & (1 << UInt32(q)) != 0 { detachQueue(port: p, queue: q) }
        detachLocal(port: p)
        closeCaptures(port: p)
        let b = Int(ports[p].bridge)
        bridges[b].table?.remove(port: Int32(p), now: hot.pointee.now)
        ports[p].release()
        logOwners[p] = nil
        refreshMirrors(bridge: b)
        refreshVlanAware(bridge: b)
    }

    /// Takes over a checked ring from the control plane.
    public func startQueue(port p: Int, _ c: VringConfiguration) {
        let slot = ports + p
        guard slot.pointee.inUse, c.index < Self.maxQueues else { return }
        if slot.pointee.runningMask & (1 << UInt32(c.index)) != 0 { detachQueue(port: p, queue: c.index) }
        let features = c.features
        let bit: UInt32 = 1 << UInt32(c.index)
        if let packed = c.packedLayout {
            (slot.pointee.packedQueues! + c.index).initialize(to: PackedQueue(
                layout: packed, memory: c.memory.view, base: c.lastAvail,
                eventIndex: features & VirtioFeature.ringEventIndex != 0,
                indirect: features & VirtioFeature.ringIndirectDescriptors != 0))
            slot.pointee.packedMask |= bit
        } else {
            (slot.pointee.queues! + c.index).initialize(to: SplitQueue(
                layout: c.layout, memory: c.memory.view, lastAvail: c.lastAvail,
                eventIndex: features & VirtioFeature.ringEventIndex != 0,
                indirect: features & VirtioFeature.ringIndirectDescriptors != 0))
            slot.pointee.packedMask &= ~bit
        }
        memoryOwners[p * Self.maxQueues + c.index] = c.memory
        slot.pointee.usedLogAddresses![c.index] = c.usedLogAddress ?? .max
        slot.pointee.headerLength = VirtioNetHeader.size(forFeatures: features)
        slot.pointee.mergeable = features & VirtioFeature.netMergeableRxBuffers != 0
        slot.pointee.sendsOffloads = features & VirtioFeature.netCsum != 0
        slot.pointee.acceptsCsum = features & VirtioFeature.netGuestCsum != 0
        slot.pointee.acceptsTso4 = features & VirtioFeature.netGuestTso4 != 0
        slot.pointee.acceptsTso6 = features & VirtioFeature.netGuestTso6 != 0
        slot.pointee.kickFds![c.index] = c.kickFd ?? -1
        slot.pointee.callFds![c.index] = c.callFd ?? -1
        slot.pointee.runningMask |= 1 << UInt32(c.index)
        slot.pointee.brokenMask &= ~(1 << UInt32(c.index))   // set up again: trusted again
        slot.pointee.recomputeRxQueue()
        if c.index & 1 == 1 {
            if let fd = c.kickFd {
                _ = vs_epoll_ctl(epollFd, vs_epoll_op_add(), fd, vs_epollin(), UInt64(UInt32(bitPattern: fd)))
            } else {
                hot.pointee.kicklessQueues += 1
            }
        }
        // TX: kicks stay off while we poll (re-enabled before sleeping). RX: never needed,
        // we do not wait for buffers (a full ring drops), so spare the guest the exits.
        if slot.pointee.packedMask & bit != 0 {
            slot.pointee.packedQueues![c.index].disableKicks()
        } else {
            slot.pointee.queues![c.index].disableKicks()
        }
        // A ring restarted while its frontend logs (SET_VRING_ADDR with VHOST_VRING_F_LOG):
        // the flags just written are marked like every other write into the guest.
        if slot.pointee.dirtyLog != nil { logRing(port: p, queue: c.index) }
        rebuildPollList()
    }

    /// Stops a ring: publishes what was consumed and forgets the fds and memory.
    /// Returns the avail index to resume from.
    @discardableResult
    public func stopQueue(port p: Int, queue q: Int) -> UInt16 {
        guard ports[p].inUse else { return 0 }
        ports[p].brokenMask &= ~(1 << UInt32(q))   // the frontend let go of the ring (BrokenRings.swift)
        guard ports[p].runningMask & (1 << UInt32(q)) != 0 else { return 0 }
        // Packed: position | wrap counter << 15 (vhost-user SET/GET_VRING_BASE).
        let last = ports[p].packedMask & (1 << UInt32(q)) != 0 ? ports[p].packedQueues![q].nextAvail
                                                                : ports[p].queues![q].lastAvail
        detachQueue(port: p, queue: q)
        return last
    }

    public func updateCallFd(port p: Int, queue q: Int, fd: Int32?) {
        guard ports[p].inUse, q < Self.maxQueues else { return }
        ports[p].callFds![q] = fd ?? -1
    }

    func detachQueue(port p: Int, queue q: Int) {
        let slot = ports + p
        let bit: UInt32 = 1 << UInt32(q)
        guard slot.pointee.runningMask & bit != 0 else { return }
        if tunnelSends.pointee.count != 0 { flushTunnelSends() }   // nothing may point into the ring's buffers
        if slot.pointee.dirtyMask & bit != 0 { publishDirtyRx() }
        if q & 1 == 1 {
            let fd = slot.pointee.kickFds![q]
            if fd >= 0 { _ = vs_epoll_ctl(epollFd, vs_epoll_op_del(), fd, 0, 0) } else { hot.pointee.kicklessQueues -= 1 }
        }
        slot.pointee.runningMask &= ~bit
        if slot.pointee.packedMask & bit != 0 {
            slot.pointee.packedQueues![q].deallocate()
            slot.pointee.packedMask &= ~bit
        }
        slot.pointee.kickFds![q] = -1
        slot.pointee.callFds![q] = -1
        slot.pointee.recomputeRxQueue()
        memoryOwners[p * Self.maxQueues + q] = nil
        rebuildPollList()
    }

    // MARK: queries (control path)

    public func counters(port p: Int) -> PortCounters {
        guard ports[p].inUse, let c = ports[p].counters else { return PortCounters() }
        return PortCounters.load(c)
    }

    /// Live MAC entries of a bridge: (key, port slot, age in seconds).
    public func fdbEntries(bridge b: Int) -> [(key: UInt64, port: Int, age: Int)] {
        hot.pointee.now = UInt32(truncatingIfNeeded: vs_coarse_seconds())
        guard let t = bridges[b].table else { return [] }
        return t.entries(now: hot.pointee.now).map { ($0.key, Int($0.port), Int(hot.pointee.now &- $0.lastSeen)) }
    }

    /// The bridge's MAC table learn and age-out counts (plain fields of the table, read here
    /// on the forwarding thread like `fdbEntries`).
    public func macCounts(bridge b: Int) -> MacTableCounts {
        guard let t = bridges[b].table else { return MacTableCounts(learned: 0, aged: 0) }
        return MacTableCounts(learned: t.learned, aged: t.aged)
    }

    public func flushFdb(bridge b: Int) { bridges[b].table?.removeAll() }

    /// Forgets what was learned on a port (its guest went away: it may come back elsewhere).
    public func forgetAddresses(port p: Int) {
        guard ports[p].inUse else { return }
        bridges[Int(ports[p].bridge)].table?.remove(port: Int32(p), now: hot.pointee.now)
    }

    // MARK: bookkeeping

    /// The flood list: every port of the bridge but mirror outputs.
    func rebuildMembers(bridge b: Int) {
        guard bridges[b].inUse else { return }
        var n = 0
        for p in 0..<Self.maxPorts where ports[p].inUse && ports[p].bridge == Int32(b)
            && ports[p].mirrorIn & PortSlot.mirrorOutputBit == 0 {
            bridges[b].members![n] = Int32(p)
            n += 1
        }
        bridges[b].memberCount = n
    }

    private func rebuildPollList() {
        var n = 0
        for p in 0..<Self.maxPorts where ports[p].inUse && ports[p].runningMask & PortSlot.txMask != 0 {
            pollList[n] = Int32(p)
            n += 1
        }
        hot.pointee.pollCount = n
    }
}
