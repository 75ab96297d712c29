import SwitchModel
import CShims
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// Ports that are not guests: the kernel's TAP devices, VXLAN tunnels and peer ports
/// (PeerPortDatapath.swift). Frames arrive on a
/// file descriptor (one read per frame) and leave by one writev/sendmsg straight from the
/// source guest's buffers, so a guest-to-kernel frame is still copied only once (by the
/// kernel). Everything here runs on the forwarding thread.
///
/// A TAP with offloads (`enableTapOffloads`) carries a 12-byte virtio-net header before each
/// frame, both ways, like a guest that negotiated CSUM, GUEST_CSUM, HOST_TSO4/6 and
/// GUEST_TSO4/6: a guest's TSO frame reaches the kernel whole (the kernel segments it, or
/// hands it to a socket as it is), and the kernel's 64 KiB TCP segments reach guests that take
/// them whole; `Offloads.swift` finishes them in software for every other port. The kernel
/// allows one frame per read(2)/writev(2) on a TAP; these large frames are the batching.
extension ForwardingEngine {
    /// A frame read from a local port: 64 KiB plus room for a tunnel header.
    static let localBufferSize = 65536 + 256

    /// Adds a port whose frames come from `fd` (nonblocking). `local` is kind-specific
    /// state that must stay valid until `removePort` returns.
    public func addLocalPort(bridge b: Int, kind: UInt8, fd: Int32, local: UnsafeMutableRawPointer? = nil) -> Int? {
        // Tunnel ports share receive sockets: `addTunnelPort`.
        guard let k = SlotKind(rawValue: kind), k == .tap, let p = addPort(bridge: b) else { return nil }
        ports[p].kind = k
        ports[p].fd = fd
        ports[p].local = local
        ports[p].headerLength = 0
        guard vs_epoll_ctl(localEpollFd, vs_epoll_op_add(), fd, vs_epollin(), UInt64(p)) == 0 else {
            removePort(p)
            return nil
        }
        hot.pointee.localCount += 1
        return p
    }

    /// The part of `removePort` for local ports: stop watching the descriptor (the caller
    /// closes it after the slot is gone).
    func detachLocal(port p: Int) {
        // A tunnel port whose socket another port carries has no descriptor of its own.
        guard ports[p].kind != .vhost, ports[p].fd >= 0 || ports[p].kind == .vxlan else { return }
        if tunnelSends.pointee.count != 0 { flushTunnelSends() }   // before its sockets close
        if ports[p].kind == .vxlan { detachTunnel(port: p) }       // may hand the socket to another port
        if ports[p].kind == .peer { detachPeer(port: p) }
        if ports[p].fd >= 0 { _ = vs_epoll_ctl(localEpollFd, vs_epoll_op_del(), ports[p].fd, 0, 0) }
        ports[p].fd = -1
        hot.pointee.localCount -= 1
    }

    /// Reads what the ready local ports have (at most one batch each) and forwards it.
    func pollLocalPorts() -> Int {
        var tokens: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        var events: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0, 0, 0, 0, 0)
        let n = withUnsafeMutableBytes(of: &tokens) { t in
            withUnsafeMutableBytes(of: &events) { e in
                vs_epoll_wait(localEpollFd, t.baseAddress!.assumingMemoryBound(to: UInt64.self),
                              e.baseAddress!.assumingMemoryBound(to: UInt32.self), 8, 0)
            }
        }
        guard n > 0 else { return 0 }
        var frames = 0
        withUnsafeBytes(of: &tokens) { t in
            for i in 0..<Int(n) {
                let p = Int(t.load(fromByteOffset: i * 8, as: UInt64.self))
                guard p < Self.maxPorts, ports[p].inUse else { continue }
                switch ports[p].kind {
                case .tap: frames &+= receiveFromTap(port: p)
                case .vxlan: frames &+= receiveFromTunnel(port: p)
                case .peer: frames &+= peerDoorbell(port: p)
                case .vhost: break
                }
            }
        }
        return frames
    }

    /// Sends the frame in `txScratch` (after `sourceHeader` bytes) out of local port `d`.
    @inline(never)
    func deliverLocal(to d: Int, frameLength: Int, sourceHeader: Int, edit: UInt32) {
        switch ports[d].kind {
        case .tap: sendToTap(port: d, frameLength: frameLength, sourceHeader: sourceHeader, edit: edit)
        case .vxlan: sendToTunnel(port: d, frameLength: frameLength, sourceHeader: sourceHeader, edit: edit)
        case .peer: sendToPeer(port: d, frameLength: frameLength, sourceHeader: sourceHeader, edit: edit)
        case .vhost: break
        }
    }

    /// Points `txScratch` at `length` bytes of `base`: a frame read from a local port goes
    /// through the same forwarding path as one from a guest ring.
    @inline(__always)
    func loadScratch(_ base: UnsafeMutableRawPointer, length: Int) {
        txScratch.pointee.storage[0] = BufferSegment(base: base, length: length)
        txScratch.pointee.count = 1
        txScratch.pointee.totalLength = length
    }

    /// Fills `iovecs` (from index `start`) with the frame in `txScratch` after `offset`
    /// bytes, its 802.1Q tag changed as `edit` says; returns the number of entries used in all.
    @inline(__always)
    func scratchIovecs(from offset: Int, start: Int, edit: UInt32 = VlanEdit.none) -> Int {
        if edit == VlanEdit.none { return scratchIovecs(from: offset, to: Int.max, start: start) }
        var n = scratchIovecs(from: offset, to: offset + 12, start: start)
        if edit == VlanEdit.pop { return scratchIovecs(from: offset + 16, to: Int.max, start: n) }
        tagBuffer.storeBytes(of: edit.bigEndian, as: UInt32.self)
        iovecs[n] = iovec(iov_base: tagBuffer, iov_len: 4)
        n &+= 1
        return scratchIovecs(from: offset + 12, to: Int.max, start: n)
    }

    /// The bytes [offset, end) of the frame in `txScratch` as iovecs from index `start`.
    @inline(__always)
    func scratchIovecs(from offset: Int, to end: Int, start: Int, into out: UnsafeMutablePointer<iovec>? = nil) -> Int {
        let iovecs = out ?? self.iovecs
        var n = start
        var left = end - offset
        var skip = offset
        var i = 0
        let list = txScratch.pointee
        while i < list.count {
            let s = list[i]
            if skip >= s.length {
                skip -= s.length
            } else {
                let len = min(s.length - skip, left)
                iovecs[n] = iovec(iov_base: s.base + skip, iov_len: len)
                left -= len
                skip = 0
                n &+= 1
                if left == 0 { break }
            }
            i &+= 1
        }
        return n
    }

    // MARK: TAP

    /// The virtio-net header on a TAP with offloads (TUNSETVNETHDRSZ): the 12-byte one of
    /// virtio 1.x, num_buffers included (the kernel ignores it and leaves it unwritten).
    public static let tapHeaderLength = 12

    /// TAP port `p`'s descriptor carries virtio-net headers (the device was opened with
    /// IFF_VNET_HDR and TUNSETOFFLOAD CSUM|TSO4|TSO6): it sends and takes offloaded frames.
    public func enableTapOffloads(port p: Int) {
        guard ports[p].inUse, ports[p].kind == .tap else { return }
        ports[p].headerLength = Self.tapHeaderLength
        ports[p].sendsOffloads = true
        ports[p].acceptsCsum = true
        ports[p].acceptsTso4 = true
        ports[p].acceptsTso6 = true
    }

    private func receiveFromTap(port p: Int) -> Int {
        let slot = ports + p
        let fd = slot.pointee.fd
        let header = slot.pointee.headerLength
        var k = 0
        while k < hot.pointee.batchSize {
            let r = read(fd, localBuffer, Self.localBufferSize)
            guard r > 0 else { break }     // EAGAIN: drained; 0/EIO: device went down
            k &+= 1
            // tun returns the frame's whole length even when it did not fit (a gso_max_size
            // above 64 KiB): never forward more than the buffer holds.
            guard r <= Self.localBufferSize else {
                slot.pointee.counters.unsafelyUnwrapped.add(.rxDropBadOffload)
                continue
            }
            if header != 0 {
                guard r >= header + 14 else {
                    slot.pointee.counters.unsafelyUnwrapped.add(.rxDropRunt)
                    continue
                }
                // The kernel's header: checked like a guest's before anything relies on it.
                // SAFETY: r >= header + 14 bytes were read into localBuffer.
                let h0 = localBuffer.loadUnaligned(as: UInt64.self)
                if h0 & 0xff01 != 0 && !Self.offloadFieldsValid(h0, csumOffset: localBuffer.loadUnaligned(fromByteOffset: 8, as: UInt16.self),
                                                                 frameLength: r - header) {
                    slot.pointee.counters.unsafelyUnwrapped.add(.rxDropBadOffload)
                    continue
                }
            }
            loadScratch(localBuffer, length: r)
            forwardFrame(from: p)
        }
        publishDirtyRx()
        return k
    }

    /// One writev per frame: [virtio-net header,] the frame from the source's segments.
    private func sendToTap(port d: Int, frameLength: Int, sourceHeader: Int, edit: UInt32) {
        let slot = ports + d
        let counters = slot.pointee.counters.unsafelyUnwrapped
        let header = slot.pointee.headerLength
        var start = 0
        if header != 0 {
            // No offloads (zeros), or the source's when this port takes them (deliverOffloaded
            // checked them); num_buffers 0.
            FrameCopy.writeHeader(hot.pointee.passHeader, UInt32(hot.pointee.passCsumOffset), length: header, at: tapHeader)
            iovecs[0] = iovec(iov_base: tapHeader, iov_len: header)
            start = 1
        }
        let n = scratchIovecs(from: sourceHeader, start: start, edit: edit)
        let w = writev(slot.pointee.fd, iovecs, Int32(n))
        let sent = VlanEdit.length(frameLength, edit)
        if w == sent + header {
            counters.add(.txPackets)
            counters.add(.txBytes, UInt64(sent))
        } else if w < 0 && errno == EINVAL && hot.pointee.passHeader != 0 {
            counters.add(.txDropBadOffload)    // the kernel refused the metadata
        } else {
            counters.add(.txDropNoBuffers)     // interface down or queue full
        }
    }
}
