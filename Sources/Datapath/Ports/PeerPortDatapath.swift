import CShims
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// Peer ports (PeerLink.swift): the ends of a link to another engine's half of a bridge.
/// Everything here runs on the forwarding thread; the only memory shared with the other
/// engine is the two rings of the link.
extension ForwardingEngine {
    /// Adds a peer port to bridge `b`, the end `end` of a `PeerLink` (which must outlive
    /// the slot: remove the port first). No offloads cross the link (frames with offload
    /// metadata are finished or cut in software before they enter the ring).
    public func addPeerPort(bridge b: Int, end: UnsafeMutablePointer<PeerEnd>) -> Int? {
        guard let p = addPort(bridge: b) else { return nil }
        let fd = end.pointee.inbound.pointee.eventFd
        // The ring's doorbell wakes this thread while it sleeps in epoll (token: the slot).
        guard fd >= 0, vs_epoll_ctl(localEpollFd, vs_epoll_op_add(), fd, vs_epollin(), UInt64(p)) == 0 else {
            removePort(p)
            return nil
        }
        ports[p].kind = .peer
        ports[p].fd = fd
        ports[p].local = UnsafeMutableRawPointer(end)
        ports[p].headerLength = 0
        peerPorts[hot.pointee.peerCount] = Int32(p)
        hot.pointee.peerCount += 1
        hot.pointee.localCount += 1   // its doorbell is drained by pollLocalPorts
        return p
    }

    /// The part of `detachLocal` for a peer port (which then leaves the epoll set): what it
    /// wrote is published first (the other engine still drains it), then it leaves the list
    /// polled every pass.
    func detachPeer(port p: Int) {
        if hot.pointee.dirtyPeerCount != 0 { publishPeers() }
        var n = 0
        for i in 0..<hot.pointee.peerCount where peerPorts[i] != Int32(p) {
            peerPorts[n] = peerPorts[i]
            n += 1
        }
        hot.pointee.peerCount = n
    }

    @inline(__always)
    private func end(_ p: Int) -> UnsafeMutablePointer<PeerEnd> {
        ports[p].local.unsafelyUnwrapped.assumingMemoryBound(to: PeerEnd.self)
    }

    // MARK: sending

    /// Copies the frame in `txScratch` (after `sourceHeader` bytes), its tag edited as `edit`
    /// says, into peer port `d`'s outbound ring; published at the end of the batch
    /// (`publishPeers`). A full ring drops the frame and counts it, as a full guest ring does.
    func sendToPeer(port d: Int, frameLength: Int, sourceHeader: Int, edit: UInt32) {
        let length = VlanEdit.length(frameLength, edit)
        guard let entry = reserve(peer: d, length: length) else {
            ports[d].counters.unsafelyUnwrapped.add(.txDropNoBuffers)
            return
        }
        rxScratch.pointee.storage[0] = BufferSegment(base: entry, length: length)
        rxScratch.pointee.count = 1
        rxScratch.pointee.totalLength = length
        if edit == VlanEdit.none {
            FrameCopy.copy(from: txScratch.pointee, srcOffset: sourceHeader, to: rxScratch.pointee, dstOffset: 0, count: length)
        } else {
            FrameCopy.copyEditingTag(from: txScratch.pointee, srcOffset: sourceHeader, to: rxScratch.pointee,
                                     dstOffset: 0, count: frameLength, edit: edit)
        }
        commit(peer: d, length: length)
    }

    /// The fast lane's delivery to a peer port (`forwardFast`): the plain frame at `frame`,
    /// one copy into the ring. False, with nothing done, when the ring is full (the general
    /// path then drops and counts) or the port has a tx capture.
    @inline(never)
    func laneToPeer(_ d: Int, frame: UnsafeRawPointer, length: Int) -> Bool {
        guard ports[d].captureTx == 0, ports[d].mirrorOut == 0, length <= ports[d].maxFrame, let entry = reserve(peer: d, length: length) else { return false }
        entry.copyMemory(from: frame, byteCount: length)
        commit(peer: d, length: length)
        return true
    }

    /// Room for an entry of `length` frame bytes in peer port `d`'s outbound ring: where the
    /// frame goes (its length already written), or nil when the ring is full.
    @inline(__always)
    private func reserve(peer d: Int, length: Int) -> UnsafeMutableRawPointer? {
        let ring = end(d).pointee.outbound
        let c = ring.pointee.control
        let capacity = UInt64(PeerRingState.capacity)
        let size = PeerRingState.entrySize(length)
        var head = c[PeerRingState.producerHead]
        var pos = head & PeerRingState.mask
        let skip = capacity - pos < size ? capacity - pos : 0   // the end of the buffer is too short: wrap
        if head &+ skip &+ size &- c[PeerRingState.producerTail] > capacity {
            c[PeerRingState.producerTail] = vs_load_acquire_u64(c + PeerRingState.tail)
            guard head &+ skip &+ size &- c[PeerRingState.producerTail] <= capacity else { return nil }
        }
        let buffer = ring.pointee.buffer
        if skip != 0 {
            buffer.storeBytes(of: PeerRingState.wrapMarker, toByteOffset: Int(pos), as: UInt32.self)
            head &+= skip
            pos = 0
            c[PeerRingState.producerHead] = head
        }
        buffer.storeBytes(of: UInt32(length), toByteOffset: Int(pos), as: UInt32.self)
        return buffer + Int(pos) + 8
    }

    /// The entry `reserve` gave is written: it is the ring's until `publishPeers`.
    @inline(__always)
    private func commit(peer d: Int, length: Int) {
        let c = end(d).pointee.outbound.pointee.control
        c[PeerRingState.producerHead] &+= PeerRingState.entrySize(length)
        if c[PeerRingState.producerDirty] == 0 {
            c[PeerRingState.producerDirty] = 1
            dirtyPeers[hot.pointee.dirtyPeerCount] = Int32(d)
            hot.pointee.dirtyPeerCount &+= 1
        }
        let counters = ports[d].counters.unsafelyUnwrapped
        counters.add(.txPackets)
        counters.add(.txBytes, UInt64(length))
    }

    /// Publishes what this batch wrote into each peer ring; rings whose consumer sleeps get
    /// their doorbell (one eventfd write per sleeping peer, none while both are busy).
    @inline(never)
    func publishPeers() {
        var i = 0
        while i < hot.pointee.dirtyPeerCount {
            let c = end(Int(dirtyPeers[i])).pointee.outbound.pointee.control
            c[PeerRingState.producerDirty] = 0
            vs_store_release_u64(c + PeerRingState.head, c[PeerRingState.producerHead])
            // Against the consumer's arm-then-look (armPeersAndCheck): one of the two sees the other.
            vs_fence_seq_cst()
            if vs_counter_load(c + PeerRingState.armed) != 0 {
                vs_store_release_u64(c + PeerRingState.armed, 0)
                _ = vs_eventfd_signal(end(Int(dirtyPeers[i])).pointee.outbound.pointee.eventFd)
            }
            i &+= 1
        }
        hot.pointee.dirtyPeerCount = 0
    }

    // MARK: receiving

    /// Forwards what every peer ring holds (at most a batch each); called on every pass
    /// while the engine has peer ports.
    @inline(never)
    func pollPeers() -> Int {
        var frames = 0
        var i = 0
        while i < hot.pointee.peerCount {
            frames &+= receiveFromPeer(port: Int(peerPorts[i]))
            i &+= 1
        }
        return frames
    }

    /// Forwards up to a batch of frames from peer port `p`'s inbound ring, in place (the
    /// ring's memory is the frame's source buffer), then returns the space to the producer.
    func receiveFromPeer(port p: Int) -> Int {
        let ring = end(p).pointee.inbound
        let c = ring.pointee.control
        let head = vs_load_acquire_u64(c + PeerRingState.head)
        var tail = c[PeerRingState.consumerTail]
        guard tail != head else { return 0 }
        let buffer = ring.pointee.buffer
        let lane = fastLaneOpen(from: p) && ingressCaptures(of: p) == 0
        var k = 0
        while tail != head && k < hot.pointee.batchSize {
            let pos = Int(tail & PeerRingState.mask)
            let length = buffer.load(fromByteOffset: pos, as: UInt32.self)
            if length == PeerRingState.wrapMarker {
                tail &+= UInt64(PeerRingState.capacity - pos)
                continue
            }
            // The lane when the frame is plain (it was, or was made so, by the sender).
            if !lane || !forwardFast(BufferSegment(base: buffer + pos + 8, length: Int(length)), from: p) {
                loadScratch(buffer + pos + 8, length: Int(length))
                forwardFrame(from: p, viaPeer: true)
            }
            tail &+= PeerRingState.entrySize(Int(length))
            k &+= 1
        }
        if tunnelSends.pointee.count != 0 { flushTunnelSends() }   // datagrams point into the ring
        c[PeerRingState.consumerTail] = tail
        vs_store_release_u64(c + PeerRingState.tail, tail)
        return k
    }

    // MARK: sleeping

    /// Before sleeping: arms every inbound ring, then looks once more; true if a frame came.
    func armPeersAndCheck() -> Bool {
        var work = false
        for i in 0..<hot.pointee.peerCount {
            let c = end(Int(peerPorts[i])).pointee.inbound.pointee.control
            vs_store_release_u64(c + PeerRingState.armed, 1)
            vs_fence_seq_cst()
            if vs_load_acquire_u64(c + PeerRingState.head) != c[PeerRingState.consumerTail] { work = true }
        }
        return work
    }

    /// Awake again: no doorbells wanted. A doorbell rung meanwhile stays readable in the
    /// local epoll set until `pollLocalPorts` drains it.
    func disarmPeers() {
        for i in 0..<hot.pointee.peerCount {
            vs_store_release_u64(end(Int(peerPorts[i])).pointee.inbound.pointee.control + PeerRingState.armed, 0)
        }
    }

    /// `pollLocalPorts` found the doorbell of peer port `p` rung.
    func peerDoorbell(port p: Int) -> Int {
        _ = vs_eventfd_drain(ports[p].fd)
        return receiveFromPeer(port: p)
    }
}
