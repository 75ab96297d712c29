import SwitchModel
import CShims
import Virtio

/// The fast lane: one leaf function for the frames that need nothing but learning, one
/// lookup and one copy, which is almost all of them. The general path (`forwardFrame`,
/// `deliver`) handles every case, at the price of a call per stage and a check per
/// feature; the lane checks once whether a frame is plain and, if it is not, returns false
/// having done nothing (except learning the source, which the general path repeats at no
/// cost). So the lane only has to be right about when it applies.
///
/// A frame is plain when: its source port has no mirror and its bridge no VLAN policy; it
/// carries no offload metadata; it lies in one TX buffer; its destination is a known unicast
/// address behind another vhost port with split RX queues (the one its flow hashes to when
/// there are several), no dirty logging, mirror or tx capture, and an MTU it fits; and that
/// queue's next chain is one buffer that holds it; or behind a peer port with room in its
/// ring (PeerPortDatapath.swift). Packed queues never take the lane.
///
/// Measured (callgrind, `Benchmarks/microbench.sh`, 64 B frames): 397 instructions per
/// frame through the general path, 293 through the lane: the general path pays two calls,
/// their spills and a dozen feature checks per frame.
extension ForwardingEngine {
    /// Whether frames from port `p` may take the lane (asked once per TX batch). An rx
    /// capture of the port or its bridge does not close it: `forwardFastCaptured` records
    /// what the lane forwards.
    @inline(__always)
    func fastLaneOpen(from p: Int) -> Bool {
        let slot = ports + p
        let bridge = bridges + Int(slot.pointee.bridge)
        return !bridge.pointee.vlanAware && slot.pointee.mirrorIn == 0
    }

    /// The capture taps that record frames entering by port `p` (asked once per TX batch).
    @inline(__always)
    func ingressCaptures(of p: Int) -> UInt32 {
        ports[p].captureRx | bridges[Int(ports[p].bridge)].captureMask
    }

    /// Forwards the frame in `buffer` (one whole TX chain of port `p`, virtio-net header
    /// included) if it is plain; false, with nothing done, if it is not.
    @inline(never)
    func forwardFast(_ buffer: BufferSegment, from p: Int) -> Bool {
        fastLane(buffer, from: p, capturing: 0)
    }

    /// The lane itself, inlined into `forwardFast` (no capture: `watched` is 0 there, so the
    /// capture step folds away) and into `forwardFastCaptured` (which records what it
    /// forwarded, sharing the lane's loads instead of calling it and loading them again).
    @inline(__always)
    func fastLane(_ buffer: BufferSegment, from p: Int, capturing watched: UInt32) -> Bool {
        let slot = ports + p
        let header = slot.pointee.headerLength
        let frameLength = buffer.length &- header
        guard frameLength >= 16, buffer.length <= Self.maxFrame else { return false }
        let base = buffer.base
        // SAFETY: header + 16 <= buffer.length, which `singleBuffer` bounds-checked.
        // Offload metadata: NEEDS_CSUM (flags bit 0) or a gso_type (byte 1); see readOffloadHeader.
        if slot.pointee.sendsOffloads && base.loadUnaligned(as: UInt16.self) & 0xff01 != 0 { return false }
        let w0 = (base + header).loadUnaligned(as: UInt64.self)
        let w1 = (base + header).loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        let dst = w0 & 0xFFFF_FFFF_FFFF
        guard dst & 1 == 0 else { return false }   // broadcast or multicast: flooded by forwardFrame
        let src = (w0 >> 48) | (w1 & 0xFFFF_FFFF) << 16
        let tpid = UInt16(truncatingIfNeeded: w1 >> 32).byteSwapped
        let vlan: UInt16 = tpid == 0x8100 && frameLength >= 18 ? UInt16(truncatingIfNeeded: w1 >> 48).byteSwapped & 0xfff : 0
        learn(src, vlan: vlan, port: p)
        let bridge = bridges + Int(slot.pointee.bridge)
        let out = bridge.pointee.table.unsafelyUnwrapped.lookup(MacTable.key(mac: dst, vlan: vlan), now: hot.pointee.now)
        guard out >= 0, Int(out) != p else { return false }
        let d = Int(out)
        let destination = ports + d
        var qi = destination.pointee.rxQueue   // -1 for ports that are not running vhost ports
        if qi < 0 {
            // A peer port (another thread's half of the bridge) takes plain frames too, but
            // never from another peer port (forwardFrame drops those).
            guard destination.pointee.kind == .peer, slot.pointee.kind != .peer,
                  laneToPeer(d, frame: base + header, length: frameLength) else { return false }
            slot.pointee.counters.unsafelyUnwrapped.add(.rxPackets)
            slot.pointee.counters.unsafelyUnwrapped.add(.rxBytes, UInt64(frameLength))
            if watched != 0 { recordIngress(watched, frame: base + header, length: frameLength, port: p) }
            return true
        }
        guard destination.pointee.captureTx == 0, frameLength <= destination.pointee.maxFrame else { return false }
        if !destination.pointee.rxSlowPath {
            guard laneDeliver(into: destination.pointee.queues.unsafelyUnwrapped + qi, frame: base + header,
                              length: frameLength, header: destination.pointee.headerLength) else { return false }
        } else {
            // Several split RX queues are the lane's too; packed ones, logging or a mirror not.
            guard destination.pointee.rxLaneOpen else { return false }
            qi = forwardFastIntoQueue(destination, dst: dst, src: src, frame: base + header, length: frameLength)
            guard qi >= 0 else { return false }
        }
        if destination.pointee.dirtyMask == 0 {
            dirtyPorts[hot.pointee.dirtyCount] = Int32(d)
            hot.pointee.dirtyCount &+= 1
        }
        destination.pointee.dirtyMask |= 1 &<< UInt32(truncatingIfNeeded: qi)   // qi < 32: a running queue
        slot.pointee.lastDestination = out
        let rxCounters = slot.pointee.counters.unsafelyUnwrapped
        rxCounters.add(.rxPackets)
        rxCounters.add(.rxBytes, UInt64(frameLength))
        let txCounters = destination.pointee.counters.unsafelyUnwrapped
        txCounters.add(.txPackets)
        txCounters.add(.txBytes, UInt64(frameLength))
        if watched != 0 { recordIngress(watched, frame: base + header, length: frameLength, port: p) }
        return true
    }

    /// Prefetches, for writing, the first two cache lines (virtio-net header, Ethernet
    /// header) of the next `count` receive buffers of the port that port `p`'s frames went
    /// to last. Those lines were last written by the other CPU, and a store that misses
    /// blocks the store buffer: asked for a batch ahead, the transfers overlap. Hints only:
    /// every value read is bounds-checked as usual, and a wrong guess costs nothing but time.
    @inline(never)
    func prefetchReceiveBuffers(after p: Int, count: Int) {
        let d = Int(ports[p].lastDestination)
        guard d >= 0 else { return }
        let destination = ports + d
        let qi = destination.pointee.rxQueue
        guard qi >= 0, !destination.pointee.rxSlowPath else { return }
        let q = destination.pointee.queues.unsafelyUnwrapped + qi
        let m = min(count, Int(q.pointee.availSeen &- q.pointee.lastAvail), Int(q.pointee.layout.size))
        var j = 0
        while j < m {
            guard let head = q.pointee.head(at: j), let b = q.pointee.singleBuffer(head: head, writable: true) else { return }
            vs_prefetch_write(b.base)
            vs_prefetch_write(b.base + min(b.length &- 1, 64))
            j &+= 1
        }
    }

    /// Finds the buffers of the next `count` chains of TX queue `q` of port `p` into
    /// `batchBuffers` (length 0: not a single buffer, left to the general path) and
    /// prefetches their first two cache lines, and the receive buffers they will probably
    /// go to. Returns how many chains it looked at (fewer only at a bad head index, which
    /// the caller then meets and handles).
    @inline(never)
    func gatherTransmitBuffers(port p: Int, queue q: UnsafeMutablePointer<SplitQueue>, count: Int) -> Int {
        prefetchReceiveBuffers(after: p, count: count)
        var j = 0
        while j < count {
            guard let head = q.pointee.head(at: j) else { return j }
            if let b = q.pointee.singleBuffer(head: head, writable: false) {
                batchBuffers[j] = b
                vs_prefetch(b.base)
                vs_prefetch(b.base + min(b.length &- 1, 64))
            } else {
                batchBuffers[j] = BufferSegment(base: localBuffer, length: 0)
            }
            j &+= 1
        }
        return j
    }

    /// The fast lane's delivery into a port with several split RX queues (no dirty
    /// logging, no mirror): into the queue the frame's addresses hash to, as
    /// `deliverFrame` picks it, if that queue's next chain is one buffer that holds the
    /// frame (with a virtio-net header without offloads). Returns the queue, or -1 with
    /// nothing done. Out of line (the same `laneDeliver` inlined here) so the one-queue
    /// case in `forwardFast` stays as it was: inlining this too cost it 3 instructions per
    /// frame (callgrind 64 B, 366 -> 369).
    @inline(never)
    func forwardFastIntoQueue(_ destination: UnsafeMutablePointer<PortSlot>, dst: UInt64, src: UInt64,
                              frame: UnsafeRawPointer, length frameLength: Int) -> Int {
        let qi = destination.pointee.rxQueue(forAddresses: dst, src)   // rxLaneOpen: 2 or more queues
        return laneDeliver(into: destination.pointee.queues.unsafelyUnwrapped + qi, frame: frame, length: frameLength,
                           header: destination.pointee.headerLength) ? qi : -1
    }

    /// The lane's delivery into split RX queue `q`: a virtio-net header without offloads
    /// (num_buffers 1) and `length` bytes at `frame`, into the next chain if it is one buffer
    /// that holds them; false, with nothing done, otherwise. Inlined into both callers.
    @inline(__always)
    func laneDeliver(into q: UnsafeMutablePointer<SplitQueue>, frame: UnsafeRawPointer, length: Int, header: Int) -> Bool {
        guard let available = q.pointee.cachedAvailableCount(), available > 0,
              let head = q.pointee.head(at: 0), let rx = q.pointee.singleBuffer(head: head, writable: true) else { return false }
        let needed = header + length
        guard rx.length >= needed else { return false }
        // SAFETY: needed <= rx.length, checked by singleBuffer.
        FrameCopy.writeHeader(0, 1 << 16, length: header, at: rx.base)
        (rx.base + header).copyMemory(from: frame, byteCount: length)
        q.pointee.pushUsed(id: head, length: UInt32(truncatingIfNeeded: needed))
        q.pointee.consume(1)
        return true
    }
}
