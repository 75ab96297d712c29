import SwitchModel
import Virtio

/// The forwarding path for packed virtqueues (virtio 1.2, 2.8). The same steps as the split
/// path in Forwarding.swift: `processTx`, `deliver` and `publishDirtyRx` branch here on the
/// queue's bit in `PortSlot.packedMask`, so split queues pay one bit test per batch or frame.
extension ForwardingEngine {
    /// One batch from a packed guest TX queue. Not inlined: the split path stays compact.
    @inline(never)
    func processPackedTx(port p: Int, queue qi: Int) -> Int {
        let slot = ports + p
        let q = slot.pointee.packedQueues.unsafelyUnwrapped + qi
        guard let available = q.pointee.availableCount() else {
            ringFailed(port: p, queue: qi, .packedList)
            return 0
        }
        let n = min(available, hot.pointee.batchSize)
        // No fast lane for packed queues: tried (2026-12-04), it cut instructions by a third
        // but ran slower side by side (docs/performance.md, "Packed rings and multiqueue in the fast lane").
        var k = 0
        while k < n {
            guard let head = q.pointee.head(at: k) else { break }   // k < available: always there
            txScratch.pointee.removeAll()
            if q.pointee.walkChain(head: head, writable: false, into: &txScratch.pointee, limit: Self.maxFrame) != nil {
                slot.pointee.counters.unsafelyUnwrapped.add(.rxDropBadDescriptor)
            } else {
                forwardFrame(from: p)
            }
            q.pointee.pushUsed(id: head, length: 0)
            k &+= 1
        }
        q.pointee.consume(k)
        if tunnelSends.pointee.count != 0 { flushTunnelSends() }   // their datagrams point into these buffers
        if q.pointee.publishUsed() { signal(slot.pointee.callFds.unsafelyUnwrapped[qi]) }
        if slot.pointee.dirtyLog != nil && k > 0 { logRing(port: p, queue: qi) }
        publishDirtyRx()
        return k
    }

    /// Copies the frame in `txScratch` into packed RX queue `qi` of port `d`, or drops and
    /// counts: the ring part of `deliver`, which has already checked the size and picked the
    /// queue. `frameLength` is after the VLAN `edit`, `sourceLength` before. Not inlined,
    /// like `processPackedTx`.
    @inline(never)
    func deliverPacked(to d: Int, queue qi: Int, frameLength: Int, sourceLength: Int, sourceHeader: Int, edit: UInt32) {
        let slot = ports + d
        let counters = slot.pointee.counters.unsafelyUnwrapped
        let q = slot.pointee.packedQueues.unsafelyUnwrapped + qi
        guard var available = q.pointee.cachedAvailableCount() else {
            counters.add(.txDropNoBuffers)
            ringFailed(port: d, queue: qi, .packedList)
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
        // With mergeable buffers a frame may take several chains (virtio 1.2, 5.1.6.4).
        let maxChains = slot.pointee.mergeable ? 256 : 1
        while rxScratch.pointee.totalLength < needed {
            if chains == available {   // look for more
                guard let more = q.pointee.availableCount() else {
                    counters.add(.txDropNoBuffers)
                    ringFailed(port: d, queue: qi, .packedList)
                    return
                }
                available = more
            }
            guard chains < available, chains < maxChains, let head = q.pointee.head(at: chains) else {
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
        if let log = slot.pointee.dirtyLog { logWritten(log, rxScratch.pointee, length: needed, memory: q.pointee.memory) }
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
}
