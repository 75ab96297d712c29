import SwitchModel
import CShims
#if canImport(Glibc)
import Glibc
#endif

/// UDP GSO for tunnel ports (issue 17): a guest's TSO segment leaves as one super-datagram
/// per remote that the kernel cuts (UDP_SEGMENT), instead of one datagram, and one system
/// call, per MSS-sized frame cut in userspace.
///
/// The kernel cuts a UDP payload into pieces of one size (the last may be shorter) and puts
/// its own IP and UDP headers (and UDP checksum) on each; it knows nothing of what is inside.
/// So every piece must already be a complete tunnel datagram: the 8-byte VXLAN or Geneve
/// header, the inner Ethernet, IP and TCP headers with that piece's IP length, IP id, TCP
/// sequence number, flags and checksums, then MSS bytes of payload. Those headers are built
/// here, one per piece, in `TunnelSendBatch.gsoHeaders`; the payload is not copied again: each
/// piece is two iovecs, its headers and its part of the linear frame (`offloadBuffer`).
extension ForwardingEngine {
    /// The UDP payload of one datagram: 65535 bytes of IPv4 packet minus the IPv4 (20) and
    /// UDP (8) headers (IPv6 would allow 65527).
    static let gsoMaxPayload = 65535 - 20 - 8

    /// Sends the TSO segment at `frame` (linear, `frameLength` bytes, its metadata in
    /// `hot.offloadHeader`; `txScratch` points at it) to tunnel port `d` as one UDP GSO
    /// super-datagram per remote of its route (two when the pieces and their headers exceed one
    /// datagram's `gsoMaxPayload`; all of them by one sendmmsg). False, with nothing sent and
    /// nothing counted, when it cannot: the segment has one piece only or more than
    /// `gsoMaxPieces`, a piece longer than the port's MTU or a remote's underlay, or the
    /// kernel refused GSO on its send socket before (`VxlanState.gsoRefused`), or refuses now
    /// (EIO, EINVAL: counted in `txGsoRefused`). The caller then cuts it in software.
    func sendTunnelGso(_ frame: UnsafeMutableRawPointer, frameLength: Int, gso: UInt8, sourceHeader: Int,
                       to d: Int, edit: UInt32) -> Bool {
        guard let t = tcpLayout(frame, frameLength: frameLength, gso: gso) else { return false }
        let payload = frameLength - t.headers
        guard payload > t.mss else { return false }          // one piece: nothing for the kernel to cut
        if edit == VlanEdit.pop && t.l3 != 18 { return false }
        let pieces = (payload + t.mss - 1) / t.mss
        let delta = edit == VlanEdit.none ? 0 : (edit == VlanEdit.pop ? -4 : 4)
        let inner = t.headers + delta                        // the inner headers of each piece
        let header = VxlanCodec.headerSize + inner           // ... with the tunnel header
        let pieceSize = header + t.mss
        // Pieces per super-datagram: a guest's 64 KiB segment plus a header per piece is more
        // than one UDP datagram holds (44 x 1448 + 44 x 62 > 65507), so it may take two.
        let perDatagram = min(TunnelSendBatch.gsoMaxSegments, Self.gsoMaxPayload / pieceSize)
        guard pieces <= TunnelSendBatch.gsoMaxPieces, header <= TunnelSendBatch.gsoHeaderRoom, perDatagram >= 2 else {
            return false
        }
        // One sendmmsg takes at most 64 messages (vs_udp_send_gso).
        guard (pieces + perDatagram - 1) / perDatagram <= 64 else { return false }
        let slot = ports + d
        let vx = tunnel(slot)
        // The largest piece against the port's MTU (plus a tag it carries, as `deliverFrame`
        // allows with `fitsWithTag`) and against every remote's underlay.
        let pieceFrame = inner + t.mss
        let tagged = edit != VlanEdit.pop && (edit != VlanEdit.none || t.l3 == 18)
        guard pieceFrame <= slot.pointee.maxFrame + (tagged ? 4 : 0) else { return false }
        let route = tunnelRoute(vx, sourceLength: frameLength, sourceHeader: sourceHeader, edit: edit)
        let bit = UInt32(1) << UInt32(truncatingIfNeeded: route.socket & 31)
        guard vx.pointee.gsoRefused & bit == 0 else { return false }
        var r = route.first
        while r < route.last {
            if pieceFrame > vx.pointee.maxFrame[r] { return false }
            r &+= 1
        }

        // The first piece's headers: the tunnel header, then the frame's, its tag edited.
        let batch = tunnelSends
        let base = batch.pointee.gsoHeaders
        let room = TunnelSendBatch.gsoHeaderRoom
        base.storeBytes(of: vx.pointee.header.pointee, as: UInt64.self)
        let eth = base + VxlanCodec.headerSize
        if edit == VlanEdit.none {
            eth.copyMemory(from: frame, byteCount: t.headers)
        } else if edit == VlanEdit.pop {
            eth.copyMemory(from: frame, byteCount: 12)
            (eth + 12).copyMemory(from: frame + 16, byteCount: t.headers - 16)
        } else {
            eth.copyMemory(from: frame, byteCount: 12)
            (eth + 12).storeBytes(of: edit.bigEndian, as: UInt32.self)
            (eth + 16).copyMemory(from: frame + 12, byteCount: t.headers - 12)
        }
        let l3 = t.l3 + delta, l4 = t.l4 + delta
        let seq0 = UInt32(bigEndian: frame.loadUnaligned(fromByteOffset: t.l4 + 4, as: UInt32.self))
        let flags0 = frame.load(fromByteOffset: t.l4 + 13, as: UInt8.self)
        let id0 = t.v4 ? UInt16(bigEndian: frame.loadUnaligned(fromByteOffset: t.l3 + 4, as: UInt16.self)) : 0
        // The pseudo-header's addresses are the same for every piece.
        let addresses = t.v4 ? InternetChecksum.sum(eth + l3 + 12, count: 8) : InternetChecksum.sum(eth + l3 + 8, count: 32)
        let iov = batch.pointee.gsoIovecs
        var offset = 0
        var i = 0
        while i < pieces {
            let n = min(t.mss, payload - offset)
            let h = base + i * room
            // SAFETY: i < pieces <= gsoMaxPieces and header <= room, checked above.
            if i > 0 { h.copyMemory(from: base, byteCount: header) }
            let e = h + VxlanCodec.headerSize
            let tcpLength = t.tcpHeader + n
            // IP: length, id, header checksum (IPv4); payload length (IPv6).
            if t.v4 {
                InternetChecksum.store(UInt16(t.ipHeader + tcpLength), at: e + l3 + 2)
                InternetChecksum.store(id0 &+ UInt16(truncatingIfNeeded: i), at: e + l3 + 4)
                InternetChecksum.store(0, at: e + l3 + 10)
                InternetChecksum.store(InternetChecksum.finish(InternetChecksum.sum(e + l3, count: t.ipHeader)), at: e + l3 + 10)
            } else {
                InternetChecksum.store(UInt16(tcpLength), at: e + l3 + 4)
            }
            // TCP: sequence number, FIN/PSH only on the last piece, CWR only on the first,
            // and the checksum over the pseudo-header, this header and this piece's payload.
            (e + l4 + 4).storeBytes(of: (seq0 &+ UInt32(truncatingIfNeeded: offset)).bigEndian, as: UInt32.self)
            var f = flags0
            if i < pieces - 1 { f &= ~0x09 }
            if i > 0 { f &= ~0x80 }
            e.storeBytes(of: f, toByteOffset: l4 + 13, as: UInt8.self)
            InternetChecksum.store(0, at: e + l4 + 16)
            let data = frame + t.headers + offset
            var sum = InternetChecksum.sum(e + l4, count: t.tcpHeader, initial: addresses &+ UInt64(tcpLength) &+ 6)
            sum = InternetChecksum.sum(data, count: n, initial: sum)
            InternetChecksum.store(InternetChecksum.finish(sum), at: e + l4 + 16)
            iov[2 * i] = iovec(iov_base: h, iov_len: header)
            iov[2 * i + 1] = iovec(iov_base: data, iov_len: n)
            offset += n
            i += 1
        }

        // Datagrams queued before this segment go first: a flow keeps its order.
        if batch.pointee.count != 0 { flushTunnelSends() }
        let counters = slot.pointee.counters.unsafelyUnwrapped
        let fd = vx.pointee.sendFds[route.socket]
        r = route.first
        while r < route.last {
            let sent = Int(vs_udp_send_gso(fd, iov, Int32(2 * pieces), Int32(2 * perDatagram), vx.pointee.remotes + r,
                                           vx.pointee.dstPort, UInt16(pieceSize)))
            if sent == -Int(EIO) || sent == -Int(EINVAL) {
                // The kernel does not do UDP GSO here: remember it for this socket.
                vx.pointee.gsoRefused |= bit
                counters.add(.txGsoRefused)
                if r == route.first { return false }          // nothing sent yet: cut in software
                counters.add(.txDropNoBuffers, UInt64(pieces * (route.last - r)))
                return true
            }
            // The pieces of the datagrams that went (all, or the first `sent`); the others
            // were lost (socket buffer full, no route, ...).
            let done = min(pieces, max(sent, 0) * perDatagram)
            if done > 0 {
                counters.add(.txGsoDatagrams, UInt64(sent))
                counters.add(.txPackets, UInt64(done))
                counters.add(.txBytes, UInt64(done * inner + min(payload, done * t.mss)))
            }
            if done < pieces { counters.add(.txDropNoBuffers, UInt64(pieces - done)) }
            r &+= 1
        }
        return true
    }
}
