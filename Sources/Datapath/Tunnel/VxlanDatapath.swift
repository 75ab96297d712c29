import SwitchModel
import CShims
#if canImport(Glibc)
import Glibc
#endif

/// VXLAN tunnel ports on the forwarding thread (RFC 7348). A frame leaves as one UDP
/// datagram per remote whose first iovec is the 8-byte VXLAN header and whose others point
/// straight into the source guest's buffers (the kernel's copy is the only one); a guest TX
/// batch's datagrams go out by one sendmmsg per socket (TunnelBatch.swift). A guest's TSO
/// segment leaves as one UDP GSO super-datagram per remote, cut by the kernel
/// (TunnelGso.swift). Datagrams arrive by one recvmmsg per batch, a message the kernel
/// coalesced (UDP GRO) is split into its datagrams, and each goes through the bridge like a
/// frame from a guest, except that consecutive segments of one TCP flow to a destination that
/// takes TSO are merged into one TSO frame (TunnelCoalesce.swift). Nothing here allocates.
extension ForwardingEngine {
    @inline(__always)
    func tunnel(_ slot: UnsafeMutablePointer<PortSlot>) -> UnsafeMutablePointer<VxlanState> {
        // SAFETY: a vxlan slot's `local` is set by `addLocalPort` to a VxlanState that the
        // control plane frees only after `removePort` has released the slot.
        slot.pointee.local.unsafelyUnwrapped.assumingMemoryBound(to: VxlanState.self)
    }

    /// Reads at most one batch of datagrams from the socket that port `p` carries (its
    /// anchor), hands each to the port of its VNI (one table lookup, `TunnelSocketState`),
    /// which checks its header, learns which remote each inner source lives behind, and
    /// forwards the inner frame. A datagram too short for a VNI, or with a VNI no port of
    /// the socket has, is counted on port `p`. Returns the datagrams handled.
    func receiveFromTunnel(port p: Int) -> Int {
        let slot = ports + p
        let socket = tunnel(slot).pointee.socket
        let counters = slot.pointee.counters.unsafelyUnwrapped
        let fd = socket.pointee.fd
        let rx = tunnelReceive
        var k = 0
        var frames = 0
        while k < hot.pointee.batchSize {
            let want = min(hot.pointee.batchSize - k, TunnelReceiveBatch.count)
            let got = Int(vs_udp_recv_batch_gro(fd, rx.pointee.buffers, Self.localBufferSize, Int32(want),
                                                rx.pointee.lengths, rx.pointee.segmentSizes, rx.pointee.sources))
            guard got > 0 else { break }     // drained
            for i in 0..<got {
                let buffer = rx.pointee.buffers + i * Self.localBufferSize
                let length = Int(rx.pointee.lengths[i])
                let size = Int(rx.pointee.segmentSizes[i])
                // UDP GRO: the kernel put datagrams of `size` bytes back to back (the last
                // may be shorter); each is a datagram of its own. length <= the buffer
                // (a cut message is -1), so every piece lies inside it.
                if size > 0 && length > size {
                    countGro(socket, buffer, size: size, anchor: counters)
                    var at = 0
                    while at < length {
                        receiveOne(socket, buffer + at, length: min(size, length - at), from: rx.pointee.sources[i],
                                   anchor: counters)
                        at += size
                        frames &+= 1
                    }
                } else {
                    receiveOne(socket, buffer, length: length, from: rx.pointee.sources[i], anchor: counters)
                    frames &+= 1
                }
            }
            // A run of merged segments points into these buffers: it goes before they are reused.
            if rx.pointee.run.count > 0 { flushRun() }
            k &+= got
            if got < want { break }
        }
        publishDirtyRx()
        return frames
    }

    /// A GRO message is counted on the port of its first datagram's VNI (the anchor if none).
    private func countGro(_ socket: UnsafeMutablePointer<TunnelSocketState>, _ buffer: UnsafeMutableRawPointer,
                          size: Int, anchor: UnsafeMutablePointer<PortCounters>) {
        // SAFETY: the first datagram is `size` bytes; its VNI is read only if it has a header.
        let q = size >= 8 ? socket.pointee.slot(vni: TunnelSocketState.vni(buffer)) : -1
        (q >= 0 ? ports[q].counters.unsafelyUnwrapped : anchor).add(.rxGroDatagrams)
    }

    /// One datagram of `length` bytes (-1: cut) to the port of its VNI, or dropped and counted
    /// on the anchor port.
    @inline(__always)
    private func receiveOne(_ socket: UnsafeMutablePointer<TunnelSocketState>, _ buffer: UnsafeMutableRawPointer,
                            length: Int, from: TunnelAddress, anchor: UnsafeMutablePointer<PortCounters>) {
        guard length >= 8 else {
            // Shorter than any tunnel header, or cut (-1: longer than the buffer).
            anchor.add(length < 0 ? .rxDropTooLong : .rxDropShortHeader)
            return
        }
        let q = socket.pointee.slot(vni: TunnelSocketState.vni(buffer))
        guard q >= 0 else {
            anchor.add(.rxDropVni)
            return
        }
        let target = ports + q
        receiveDatagram(port: q, buffer, length: length, from: from, vx: tunnel(target),
                        counters: target.pointee.counters.unsafelyUnwrapped)
    }

    /// One received datagram: its VXLAN or Geneve header checked (`VxlanCodec`/`GeneveCodec.decode`, drops counted
    /// by reason), its inner source learned behind the remote it came from, its frame forwarded.
    @inline(__always)
    private func receiveDatagram(port p: Int, _ buffer: UnsafeMutableRawPointer, length r: Int, from: TunnelAddress,
                                 vx: UnsafeMutablePointer<VxlanState>, counters: UnsafeMutablePointer<PortCounters>) {
        // The port's MTU plus an 802.1Q tag, as on the way out (Forwarding.fitsWithTag);
        // never more than the receive buffer.
        let maxFrame = min(ports[p].maxFrame, Self.localBufferSize) &+ 4
        // One header codec per encapsulation; everything else is shared.
        let decoded = vx.pointee.geneve
            ? GeneveCodec.decode(buffer, length: r, vniWord: vx.pointee.vniWord, maxFrame: maxFrame)
            : VxlanCodec.decode(buffer, length: r, vniWord: vx.pointee.vniWord, maxFrame: maxFrame)
        // Only configured remotes may put frames on the bridge (as OVS does): anyone
        // else who can reach the UDP port would otherwise inject into the segment.
        var remote = 0
        while remote < vx.pointee.remoteCount && vx.pointee.remotes[remote] != from { remote &+= 1 }
        if remote == vx.pointee.remoteCount {
            // `--learning`: an address of the allowed prefix becomes a remote (kernel `learning`),
            // but only for a datagram that decodes.
            guard case .frame = decoded, vx.pointee.learnRemote(from) >= 0 else {
                counters.add(.rxDropUnknownRemote)
                return
            }
        }
        guard case .frame(let offset, let length) = decoded else {
            if case .drop(let why) = decoded { counters.add(why.counter) }
            return
        }
        let inner = buffer + offset
        if vx.pointee.remoteCount > 1 || vx.pointee.learning {
            // SAFETY: length >= 14 (VxlanCodec.decode).
            let src = UInt64(inner.loadUnaligned(fromByteOffset: 6, as: UInt32.self))
                | UInt64(inner.loadUnaligned(fromByteOffset: 10, as: UInt16.self)) << 32
            if src & 1 == 0 {
                vx.pointee.learn(MacTable.key(mac: src, vlan: Self.vlan(inner, length: length)),
                                 remote: Int32(remote), now: hot.pointee.now)
            }
        }
        receiveInner(port: p, inner, length: length, from: from)   // alone, or merged with its neighbours (TunnelCoalesce.swift)
    }

    /// Sends the frame in `txScratch` (after `sourceHeader` bytes) into the tunnel: to the
    /// remote its destination was learned from, else to every remote.
    /// `frameLength` is the source frame's; `edit` changes its 802.1Q tag on the way (`VlanEdit`).
    func sendToTunnel(port d: Int, frameLength sourceLength: Int, sourceHeader: Int, edit: UInt32 = VlanEdit.none) {
        let slot = ports + d
        let vx = tunnel(slot)
        let counters = slot.pointee.counters.unsafelyUnwrapped
        let frameLength = VlanEdit.length(sourceLength, edit)
        iovecs[0] = iovec(iov_base: UnsafeMutableRawPointer(vx.pointee.header), iov_len: 8)
        let n = Int32(scratchIovecs(from: sourceHeader, start: 1, edit: edit))
        let route = tunnelRoute(vx, sourceLength: sourceLength, sourceHeader: sourceHeader, edit: edit)
        let fd = vx.pointee.sendFds[route.socket]
        let port = vx.pointee.dstPort
        var first = route.first
        let last = route.last
        if edit == VlanEdit.none && scratchIsGuestMemory() {
            // Batched: sent with the TX batch's other datagrams by one sendmmsg (TunnelBatch.swift).
            var r = first
            while r < last {
                if frameLength > vx.pointee.maxFrame[r] {
                    counters.add(.txDropTooBig)
                } else {
                    queueTunnelSend(port: d, header: UnsafeMutableRawPointer(vx.pointee.header), sourceHeader: sourceHeader,
                                    frameLength: frameLength, fd: fd, dstPort: port, remotes: vx.pointee.remotes + r,
                                    first: 0, last: 1)
                }
                r &+= 1
            }
            return
        }
        // Datagrams still waiting in the batch were queued before this one: they go first,
        // so a flow's frames keep their order.
        if tunnelSends.pointee.count != 0 { flushTunnelSends() }
        while first < last {
            if frameLength > vx.pointee.maxFrame[first] {
                counters.add(.txDropTooBig)
            } else if vs_udp_sendv(fd, iovecs, n, vx.pointee.remotes + first, port) == frameLength &+ 8 {
                counters.add(.txPackets)
                counters.add(.txBytes, UInt64(frameLength))
            } else {
                counters.add(.txDropNoBuffers)     // socket buffer full, no route, ...
            }
            first &+= 1
        }
    }

    /// Where the frame in `txScratch` goes: the index of the send socket its flow hash picks,
    /// and the remotes [first, last): the one its destination was learned behind, else every
    /// configured remote.
    @inline(__always)
    func tunnelRoute(_ vx: UnsafeMutablePointer<VxlanState>, sourceLength: Int, sourceHeader: Int,
                     edit: UInt32) -> (socket: Int, first: Int, last: Int) {
        let (w0, w1) = FrameCopy.peek16(txScratch.pointee, at: sourceHeader)
        let hash = flowHash(w0, w1, frameLength: sourceLength, offset: sourceHeader)
        let socket = Int(truncatingIfNeeded: hash % UInt64(vx.pointee.sendCount))
        var first = 0
        var last = vx.pointee.floodCount   // floods go to the configured remotes, not learned ones
        let dst = w0 & 0xFFFF_FFFF_FFFF
        if vx.pointee.remoteCount > 1 && dst & 1 == 0 {
            let tpid = UInt16(truncatingIfNeeded: w1 >> 32).byteSwapped
            var vlan: UInt16 = tpid == 0x8100 && sourceLength >= 18 ? UInt16(truncatingIfNeeded: w1 >> 48).byteSwapped & 0xfff : 0
            if edit != VlanEdit.none { vlan = edit == VlanEdit.pop ? 0 : UInt16(truncatingIfNeeded: edit) & 0xfff }
            let r = vx.pointee.remote(for: MacTable.key(mac: dst, vlan: vlan), now: hot.pointee.now)
            if r >= 0 { first = r; last = r &+ 1 }
        }
        return (socket, first, last)
    }

    /// A hash of the inner frame's addresses (MACs; for IPv4, the IP addresses and the TCP
    /// or UDP ports too) picks the send socket, hence the UDP source port: routers that
    /// spread traffic over equal-cost paths by the outer 5-tuple (ECMP) then spread the
    /// tunnel's flows, while each flow keeps one path (RFC 7348, 5, "Source Port").
    @inline(__always)
    private func flowHash(_ w0: UInt64, _ w1: UInt64, frameLength: Int, offset: Int) -> UInt64 {
        var h = VxlanState.mix(w0 ^ (w1 & 0xFFFF_FFFF))
        let s = txScratch.pointee[0]
        // EtherType 0x0800 (bytes 12-13), IPv4 without options (0x45) in the first segment.
        guard UInt16(truncatingIfNeeded: w1 >> 32) == 0x0008, frameLength >= 38, offset + 38 <= s.length,
              (s.base + offset).load(fromByteOffset: 14, as: UInt8.self) == 0x45 else { return h }
        // SAFETY: offset + 38 <= the first segment's length, checked above.
        h = VxlanState.mix(h ^ (s.base + offset).loadUnaligned(fromByteOffset: 26, as: UInt64.self))
        let proto = (s.base + offset).load(fromByteOffset: 23, as: UInt8.self)
        if proto == 6 || proto == 17 {
            h = VxlanState.mix(h ^ UInt64((s.base + offset).loadUnaligned(fromByteOffset: 34, as: UInt32.self)))
        }
        return h
    }

    /// The 802.1Q VID of an inner frame, or 0.
    @inline(__always)
    private static func vlan(_ frame: UnsafeMutableRawPointer, length: Int) -> UInt16 {
        guard length >= 18, frame.loadUnaligned(fromByteOffset: 12, as: UInt16.self) == UInt16(0x8100).bigEndian else { return 0 }
        return UInt16(bigEndian: frame.loadUnaligned(fromByteOffset: 14, as: UInt16.self)) & 0xfff
    }
}
