import SwitchModel
import CShims
import Virtio

/// The forwarding path: guest TX ring -> MAC table -> guest RX ring(s), one copy per
/// destination, straight from guest buffer to guest buffer. Everything here runs on the
/// forwarding thread, allocates nothing and takes no locks.
extension ForwardingEngine {
    /// Largest frame accepted from a guest (64 KiB plus header); longer chains are dropped.
    static let maxFrame = 65535 + VirtioNetHeader.size

    /// One pass over every polled TX queue. Returns the number of frames taken.
    @discardableResult
    public func pollOnce() -> Int {
        var frames = 0
        hot.pointee.captureTimestamp = 0   // frames captured by a command in between get a fresh clock
        var i = 0
        while i < hot.pointee.pollCount {
            let p = Int(pollList[i])
            var m = ports[p].runningMask & PortSlot.txMask
            while m != 0 {
                let q = m.trailingZeroBitCount
                frames &+= processTx(port: p, queue: q)
                m &= m &- 1
            }
            i &+= 1
        }
        if hot.pointee.peerCount != 0 { frames &+= pollPeers() }
        if hot.pointee.localCount > 0 && (frames == 0 || loopCounters[LoopCounter.polls.rawValue] & 7 == 0) {
            frames &+= pollLocalPorts()
        }
        publishDirtyRx()
        if tunnelSends.pointee.count != 0 { flushTunnelSends() }
        // Relaxed atomic stores (same instructions as plain ones): loopStatistics() reads them.
        bump(.polls)
        if frames == 0 { bump(.emptyPolls) } else { bump(.frames, UInt64(frames)) }
        return frames
    }

    @inline(__always)
    private func processTx(port p: Int, queue qi: Int) -> Int {
        let slot = ports + p
        if slot.pointee.packedMask & (1 << UInt32(qi)) != 0 { return processPackedTx(port: p, queue: qi) }
        let q = slot.pointee.queues.unsafelyUnwrapped + qi
        guard let available = q.pointee.availableCount() else {
            ringFailed(port: p, queue: qi, .availIndexJump)
            return 0
        }
        let n = min(available, hot.pointee.batchSize, Self.maxBatch)
        // Fast-lane batches: every chain's buffer found (and prefetched) up front.
        let gathered = fastLaneOpen(from: p) ? gatherTransmitBuffers(port: p, queue: q, count: n) : 0
        let watched = gathered > 0 ? ingressCaptures(of: p) : 0
        if watched != 0 { prepareIngressCaptures(watched) }
        var k = 0
        while k < n {
            guard let head = q.pointee.head(at: k) else {
                slot.pointee.counters.unsafelyUnwrapped.add(.rxDropBadDescriptor)
                q.pointee.consume(k)
                if tunnelSends.pointee.count != 0 { flushTunnelSends() }
                _ = q.pointee.publishUsed()
                ringFailed(port: p, queue: qi, .headOutOfRange)
                return k
            }
            if k < gathered {
                let buffer = batchBuffers[k]
                if buffer.length > 0
                    && (watched == 0 ? forwardFast(buffer, from: p) : forwardFastCaptured(buffer, from: p, watched: watched)) {
                    q.pointee.pushUsed(id: head, length: 0)
                    k &+= 1
                    continue
                }
            }
            txScratch.pointee.removeAll()
            if q.pointee.walkChain(head: head, writable: false, into: &txScratch.pointee, limit: Self.maxFrame) != nil {
                slot.pointee.counters.unsafelyUnwrapped.add(.rxDropBadDescriptor)
            } else {
                forwardFrame(from: p)
            }
            q.pointee.pushUsed(id: head, length: 0)
            k &+= 1
        }
        q.pointee.consume(n)
        // Datagrams queued for tunnels point into these TX buffers: send them before returning them.
        if tunnelSends.pointee.count != 0 { flushTunnelSends() }
        if q.pointee.publishUsed() { signal(slot.pointee.callFds.unsafelyUnwrapped[qi]) }
        if slot.pointee.dirtyLog != nil && n > 0 { logRing(port: p, queue: qi) }   // once per batch
        // Hand the delivered frames to their guests now, not after the other ports' batches:
        // in a closed loop (or a request/response exchange) that wait is pure latency.
        publishDirtyRx()
        return n
    }

    /// Learns the source, picks destinations and delivers the frame in `txScratch`.
    @inline(__always)
    func forwardFrame(from p: Int) { forwardFrame(from: p, viaPeer: false) }

    /// `viaPeer`: `p` is a peer port (PeerPortDatapath.swift). A constant at every call site,
    /// so the split-horizon tests below compile away everywhere but on the peer path.
    @inline(__always)
    func forwardFrame(from p: Int, viaPeer fromPeer: Bool) {
        let slot = ports + p
        let counters = slot.pointee.counters.unsafelyUnwrapped
        let header = slot.pointee.headerLength
        let frameLength = txScratch.pointee.totalLength - header
        guard frameLength >= 14 else {
            counters.add(.rxDropRunt)
            return
        }
        if slot.pointee.mirrorIn != 0 {
            guard mirrorIngress(from: p, header: header, frameLength: frameLength) else { return }   // an output port's
        } else {
            hot.pointee.mirrored = 0
        }
        counters.add(.rxPackets)
        counters.add(.rxBytes, UInt64(frameLength))
        if slot.pointee.sendsOffloads { readOffloadHeader() } else { hot.pointee.offloadHeader = 0 }
        let (w0, w1) = FrameCopy.peek16(txScratch.pointee, at: header)
        let dst = w0 & 0xFFFF_FFFF_FFFF
        let src = (w0 >> 48) | (w1 & 0xFFFF_FFFF) << 16
        // 802.1Q: TPID 0x8100 at bytes 12-13 (big-endian on the wire), VID in bytes 14-15.
        let tpid = UInt16(truncatingIfNeeded: w1 >> 32).byteSwapped
        let vlan: UInt16 = tpid == 0x8100 && frameLength >= 18
            ? UInt16(truncatingIfNeeded: w1 >> 48).byteSwapped & 0xfff : 0
        let b = Int(slot.pointee.bridge)
        let bridge = bridges + b
        let watched = bridge.pointee.captureMask | slot.pointee.captureRx
        if watched != 0 { captureFrame(watched, offset: header, length: frameLength, port: p, outbound: false) }
        // (A bridge with peer ports is never VLAN-aware: the control plane refuses VLAN
        // policies on a bridge across threads, so forwardVlanAware needs no split horizon.)
        if bridge.pointee.vlanAware {
            forwardVlanAware(from: p, frameLength: frameLength, header: header, dst: dst, src: src,
                             tagged: tpid == 0x8100 && frameLength >= 18, vid: vlan)
            return
        }
        learn(src, vlan: vlan, port: p)
        // From a peer port to no other peer port (split horizon): the sender's half reaches
        // every half itself, and a stale table in a mesh of three could bounce a frame.
        if dst & 1 == 0 {
            let out = bridge.pointee.table.unsafelyUnwrapped.lookup(MacTable.key(mac: dst, vlan: vlan), now: hot.pointee.now)
            if out >= 0 {
                if Int(out) != p && !(fromPeer && ports[Int(out)].kind == .peer) {
                    deliver(to: Int(out), frameLength: frameLength, sourceHeader: header)
                }
                return
            }
        }
        // Broadcast, multicast or unknown unicast: every other member (no other peer port
        // when it came from one).
        let members = bridge.pointee.members.unsafelyUnwrapped
        var i = 0
        while i < bridge.pointee.memberCount {
            let m = Int(members[i])
            if m != p && !(fromPeer && ports[m].kind == .peer) { deliver(to: m, frameLength: frameLength, sourceHeader: header) }
            i &+= 1
        }
    }

    /// Learns that `src` (a MAC, low 48 bits) is behind port `p` in `vlan`, unless the
    /// port learned that very address this second and the table has not changed since.
    @inline(__always)
    func learn(_ src: UInt64, vlan: UInt16, port p: Int) {
        guard src & 1 == 0 else { return }     // a multicast source is never learned
        let slot = ports + p
        let bridge = bridges + Int(slot.pointee.bridge)
        let key = MacTable.key(mac: src, vlan: vlan)
        let now = hot.pointee.now
        if key != slot.pointee.learnedKey || now != slot.pointee.learnedSecond
            || bridge.pointee.table.unsafelyUnwrapped.generation != slot.pointee.learnedGeneration {
            bridge.pointee.table?.learn(key, port: Int32(p), now: now)
            slot.pointee.learnedKey = key
            slot.pointee.learnedSecond = now
            slot.pointee.learnedGeneration = bridge.pointee.table.unsafelyUnwrapped.generation
        }
    }

    /// Copies the frame in `txScratch` into port `d`'s RX ring, or drops and counts.
    /// `frameLength` is the source frame's; `edit` says how its VLAN tag changes (`VlanEdit`).
    @inline(__always)
    func deliver(to d: Int, frameLength sourceLength: Int, sourceHeader: Int, edit: UInt32 = VlanEdit.none) {
        if ports[d].mirrorOut != 0 { mirrorEgress(to: d, frameLength: sourceLength, sourceHeader: sourceHeader) }
        if hot.pointee.offloadHeader != 0 {
            deliverOffloaded(to: d, frameLength: sourceLength, sourceHeader: sourceHeader, edit: edit)
            return
        }
        deliverFrame(to: d, frameLength: sourceLength, sourceHeader: sourceHeader, edit: edit)
    }

    /// The delivery itself, for a frame without offload metadata left to handle. Separate
    /// from `deliver` so the offload path can call it without recursion, which would keep
    /// the compiler from inlining `deliver` into the forwarding loop (measured: +18
    /// instructions per frame).
    @inline(__always)
    func deliverFrame(to d: Int, frameLength sourceLength: Int, sourceHeader: Int, edit: UInt32) {
        let slot = ports + d
        let counters = slot.pointee.counters.unsafelyUnwrapped
        let frameLength = VlanEdit.length(sourceLength, edit)
        if frameLength > slot.pointee.maxFrame && !fitsWithTag(d, frameLength, sourceHeader, edit) {
            counters.add(.txDropTooBig)
            return
        }
        var qi = slot.pointee.rxQueue
        guard qi >= 0 else {
            // Not a running vhost port (checked off the vhost fast path).
            if slot.pointee.kind != .vhost {
                if slot.pointee.captureTx == 0 {
                    deliverLocal(to: d, frameLength: sourceLength, sourceHeader: sourceHeader, edit: edit)
                } else {
                    deliverLocalCaptured(to: d, frameLength: sourceLength, sourceHeader: sourceHeader, edit: edit)
                }
            } else {
                counters.add(.txDropNoBuffers)
            }
            return
        }
        if slot.pointee.rxSlowPath {   // several RX queues, or packed ones
            if slot.pointee.rxQueueCount > 1 {
                let (w0, w1) = FrameCopy.peek16(txScratch.pointee, at: sourceHeader)
                qi = slot.pointee.rxQueue(forAddresses: w0 & 0xFFFF_FFFF_FFFF, (w0 >> 48) | (w1 & 0xFFFF_FFFF) << 16)
            }
            if slot.pointee.packedMask & (1 << UInt32(qi)) != 0 {
                deliverPacked(to: d, queue: qi, frameLength: frameLength, sourceLength: sourceLength,
                              sourceHeader: sourceHeader, edit: edit)
                return
            }
        }
        let q = slot.pointee.queues.unsafelyUnwrapped + qi
        guard var available = q.pointee.cachedAvailableCount() else {
            counters.add(.txDropNoBuffers)
            ringFailed(port: d, queue: qi, .availIndexJump)
            return
        }
        guard available > 0 else {
            counters.add(.txDropNoBuffers)
            return
        }
        let header = slot.pointee.headerLength
        let needed = header + frameLength
        // Fast path: the frame lies in the source's first buffer and the destination's next
        // chain is one buffer that holds it (DPDK mbufs, Linux's mergeable pages): header,
        // one memcpy, one used entry; no scatter lists.
        if edit == VlanEdit.none, sourceHeader + frameLength <= txScratch.pointee[0].length,
           let head = q.pointee.head(at: 0), let buffer = q.pointee.singleBuffer(head: head, writable: true),
           buffer.length >= needed {
            // SAFETY: needed = header + frameLength <= buffer.length; the source range was just checked.
            FrameCopy.writeHeader(hot.pointee.passHeader, UInt32(hot.pointee.passCsumOffset) | 1 << 16,
                                  length: header, at: buffer.base)
            (buffer.base + header).copyMemory(from: txScratch.pointee[0].base + sourceHeader, byteCount: frameLength)
            if slot.pointee.rxSlowPath, let log = slot.pointee.dirtyLog { logWritten(log, buffer, length: needed, memory: q.pointee.memory) }
            q.pointee.pushUsed(id: head, length: UInt32(truncatingIfNeeded: needed))
            q.pointee.consume(1)
            finishDelivery(to: d, queue: qi, frameLength: frameLength, sourceLength: sourceLength, sourceHeader: sourceHeader)
            return
        }
        rxScratch.pointee.removeAll()
        var chains = 0
        if slot.pointee.mergeable {
            // virtio 1.2, 5.1.6.4: a frame may use several chains; num_buffers says how many.
            while rxScratch.pointee.totalLength < needed {
                if chains == available { available = q.pointee.availableCount() ?? 0 }   // look for more
                guard chains < available, chains < 256, let head = q.pointee.head(at: chains) else {
                    counters.add(.txDropNoBuffers)
                    return
                }
                if q.pointee.walkChain(head: head, writable: true, into: &rxScratch.pointee) != nil {
                    counters.add(.txDropBadDescriptor)
                    return
                }
                chainHeads[chains] = head
                chainEnds[chains] = rxScratch.pointee.totalLength
                chains &+= 1
            }
        } else {
            guard let head = q.pointee.head(at: 0) else {
                counters.add(.txDropBadDescriptor)
                return
            }
            if q.pointee.walkChain(head: head, writable: true, into: &rxScratch.pointee) != nil {
                counters.add(.txDropBadDescriptor)
                return
            }
            guard rxScratch.pointee.totalLength >= needed else {
                counters.add(.txDropNoBuffers)
                return
            }
            chainHeads[0] = head
            chainEnds[0] = rxScratch.pointee.totalLength
            chains = 1
        }
        // The virtio-net header: no offloads (or the source's, when this port takes them),
        // num_buffers = chains used.
        FrameCopy.writeHeader(hot.pointee.passHeader, UInt32(hot.pointee.passCsumOffset) | UInt32(chains) << 16,
                              length: header, to: rxScratch.pointee)
        if edit == VlanEdit.none {
            FrameCopy.copy(from: txScratch.pointee, srcOffset: sourceHeader, to: rxScratch.pointee, dstOffset: header, count: frameLength)
        } else {
            FrameCopy.copyEditingTag(from: txScratch.pointee, srcOffset: sourceHeader, to: rxScratch.pointee,
                                     dstOffset: header, count: sourceLength, edit: edit)
        }
        if slot.pointee.rxSlowPath, let log = slot.pointee.dirtyLog {
            logWritten(log, rxScratch.pointee, length: needed, memory: q.pointee.memory)
        }
        var start = 0
        var c = 0
        while c < chains {
            let end = chainEnds[c]
            q.pointee.pushUsed(id: chainHeads[c], length: UInt32(min(end, needed) - start))
            start = end
            c &+= 1
        }
        q.pointee.consume(chains)
        finishDelivery(to: d, queue: qi, frameLength: frameLength, sourceLength: sourceLength, sourceHeader: sourceHeader)
    }

    /// After a frame went into RX queue `qi` of port `d`: the queue is marked for publishing
    /// (`publishDirtyRx`), the port's counters move, and its tx captures see the frame, as
    /// it entered the bridge (before any VLAN edit).
    @inline(__always)
    func finishDelivery(to d: Int, queue qi: Int, frameLength: Int, sourceLength: Int, sourceHeader: Int) {
        let slot = ports + d
        if slot.pointee.dirtyMask == 0 {
            dirtyPorts[hot.pointee.dirtyCount] = Int32(d)
            hot.pointee.dirtyCount &+= 1
        }
        slot.pointee.dirtyMask |= 1 << UInt32(qi)
        let counters = slot.pointee.counters.unsafelyUnwrapped
        counters.add(.txPackets)
        counters.add(.txBytes, UInt64(frameLength))
        let watched = slot.pointee.captureTx
        if watched != 0 { captureFrame(watched, offset: sourceHeader, length: sourceLength, port: d, outbound: true) }
    }

    /// A frame over the port's MTU still fits if it leaves with an 802.1Q tag that the MTU
    /// does not count (off the fast path: only for ports with an MTU limit).
    @inline(never)
    func fitsWithTag(_ d: Int, _ frameLength: Int, _ sourceHeader: Int, _ edit: UInt32) -> Bool {
        guard frameLength <= ports[d].maxFrame + 4 else { return false }
        if edit == VlanEdit.pop { return false }
        if edit != VlanEdit.none { return true }
        let (_, w1) = FrameCopy.peek16(txScratch.pointee, at: sourceHeader)
        return UInt16(truncatingIfNeeded: w1 >> 32).byteSwapped == 0x8100
    }

    /// Publishes every RX used ring written in this pass and interrupts the guests that
    /// asked for it: one release store and at most one eventfd write per queue per pass.
    @inline(__always)
    func publishDirtyRx() {
        if hot.pointee.unpublishedCaptures != 0 { publishCaptures() }
        if hot.pointee.dirtyPeerCount != 0 { publishPeers() }
        var i = 0
        while i < hot.pointee.dirtyCount {
            let slot = ports + Int(dirtyPorts[i])
            var m = slot.pointee.dirtyMask
            while m != 0 {
                let qi = m.trailingZeroBitCount
                let bit: UInt32 = 1 << UInt32(qi)
                if slot.pointee.runningMask & bit != 0,
                   slot.pointee.packedMask & bit != 0 ? slot.pointee.packedQueues.unsafelyUnwrapped[qi].publishUsed()
                                                      : slot.pointee.queues.unsafelyUnwrapped[qi].publishUsed() {
                    signal(slot.pointee.callFds.unsafelyUnwrapped[qi])
                }
                if slot.pointee.dirtyLog != nil { logRing(port: Int(dirtyPorts[i]), queue: qi) }
                m &= m &- 1
            }
            slot.pointee.dirtyMask = 0
            i &+= 1
        }
        hot.pointee.dirtyCount = 0
    }

    @inline(__always)
    func signal(_ fd: Int32) {
        if fd >= 0 { _ = vs_eventfd_signal(fd) }
    }
}
