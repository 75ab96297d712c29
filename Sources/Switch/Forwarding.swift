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
        publishDirtyRx()
        // Relaxed atomic stores (same instructions as plain ones): loopStatistics() reads them.
        vs_counter_add(loopCounters, 1)
        if frames == 0 { vs_counter_add(loopCounters + 1, 1) } else { vs_counter_add(loopCounters + 3, UInt64(frames)) }
        return frames
    }

    @inline(__always)
    private func processTx(port p: Int, queue qi: Int) -> Int {
        let slot = ports + p
        let q = slot.pointee.queues.unsafelyUnwrapped + qi
        guard let available = q.pointee.availableCount() else {
            ringFailed(port: p, queue: qi, .availIndexJump)
            return 0
        }
        let n = min(available, hot.pointee.batchSize)
        var k = 0
        while k < n {
            guard let head = q.pointee.head(at: k) else {
                slot.pointee.counters.unsafelyUnwrapped.add(.rxDropBadDescriptor)
                q.pointee.consume(k)
                _ = q.pointee.publishUsed()
                ringFailed(port: p, queue: qi, .headOutOfRange)
                return k
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
        if q.pointee.publishUsed() { signal(slot.pointee.callFds.unsafelyUnwrapped[qi]) }
        // Hand the delivered frames to their guests now, not after the other ports' batches:
        // in a closed loop (or a request/response exchange) that wait is pure latency.
        publishDirtyRx()
        return n
    }

    /// Learns the source, picks destinations and delivers the frame in `txScratch`.
    @inline(__always)
    private func forwardFrame(from p: Int) {
        let slot = ports + p
        let counters = slot.pointee.counters.unsafelyUnwrapped
        let header = slot.pointee.headerLength
        let frameLength = txScratch.pointee.totalLength - header
        guard frameLength >= 14 else {
            counters.add(.rxDropRunt)
            return
        }
        counters.add(.rxPackets)
        counters.add(.rxBytes, UInt64(frameLength))
        let (w0, w1) = FrameCopy.peek16(txScratch.pointee, at: header)
        let dst = w0 & 0xFFFF_FFFF_FFFF
        let src = (w0 >> 48) | (w1 & 0xFFFF_FFFF) << 16
        // 802.1Q: TPID 0x8100 at bytes 12-13 (big-endian on the wire), VID in bytes 14-15.
        let tpid = UInt16(truncatingIfNeeded: w1 >> 32).byteSwapped
        let vlan: UInt16 = tpid == 0x8100 && frameLength >= 18
            ? UInt16(truncatingIfNeeded: w1 >> 48).byteSwapped & 0xfff : 0
        let b = Int(slot.pointee.bridge)
        let bridge = bridges + b
        if src & 1 == 0 {
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
        if dst & 1 == 0 {
            let out = bridge.pointee.table.unsafelyUnwrapped.lookup(MacTable.key(mac: dst, vlan: vlan), now: hot.pointee.now)
            if out >= 0 {
                if Int(out) != p { deliver(to: Int(out), frameLength: frameLength, sourceHeader: header) }
                return
            }
        }
        // Broadcast, multicast or unknown unicast: every other member.
        let members = bridge.pointee.members.unsafelyUnwrapped
        var i = 0
        while i < bridge.pointee.memberCount {
            let m = Int(members[i])
            if m != p { deliver(to: m, frameLength: frameLength, sourceHeader: header) }
            i &+= 1
        }
    }

    /// Copies the frame in `txScratch` into port `d`'s RX ring, or drops and counts.
    @inline(__always)
    private func deliver(to d: Int, frameLength: Int, sourceHeader: Int) {
        let slot = ports + d
        let counters = slot.pointee.counters.unsafelyUnwrapped
        let qi = slot.pointee.rxQueue
        guard qi >= 0 else {
            counters.add(.txDropNoBuffers)
            return
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
        // The virtio-net header: no offloads, num_buffers = chains used.
        var netHeader: (UInt64, UInt32) = (0, UInt32(chains) << 16)
        withUnsafeBytes(of: &netHeader) { FrameCopy.write($0.baseAddress!, count: header, to: rxScratch.pointee) }
        FrameCopy.copy(from: txScratch.pointee, srcOffset: sourceHeader, to: rxScratch.pointee, dstOffset: header, count: frameLength)
        var start = 0
        var c = 0
        while c < chains {
            let end = chainEnds[c]
            q.pointee.pushUsed(id: chainHeads[c], length: UInt32(min(end, needed) - start))
            start = end
            c &+= 1
        }
        q.pointee.consume(chains)
        if slot.pointee.dirtyMask == 0 {
            dirtyPorts[hot.pointee.dirtyCount] = Int32(d)
            hot.pointee.dirtyCount &+= 1
        }
        slot.pointee.dirtyMask |= 1 << UInt32(qi)
        counters.add(.txPackets)
        counters.add(.txBytes, UInt64(frameLength))
    }

    /// Publishes every RX used ring written in this pass and interrupts the guests that
    /// asked for it: one release store and at most one eventfd write per queue per pass.
    @inline(__always)
    func publishDirtyRx() {
        var i = 0
        while i < hot.pointee.dirtyCount {
            let slot = ports + Int(dirtyPorts[i])
            var m = slot.pointee.dirtyMask
            while m != 0 {
                let qi = m.trailingZeroBitCount
                if slot.pointee.runningMask & (1 << UInt32(qi)) != 0,
                   slot.pointee.queues.unsafelyUnwrapped[qi].publishUsed() {
                    signal(slot.pointee.callFds.unsafelyUnwrapped[qi])
                }
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
