import SwitchModel
import Virtio

/// Checksum and segmentation offloads (virtio 1.2, 5.1.6.2). A guest that negotiated
/// CSUM / HOST_TSO may send frames with a partial checksum (NEEDS_CSUM) or one large TCP
/// segment (gso_type). Each destination either takes them as they are (it negotiated
/// GUEST_CSUM / GUEST_TSO: the header fields are passed on) or gets ordinary frames: the
/// switch finishes the checksum or cuts the segment into MSS-sized frames itself (for a
/// tunnel port, the kernel cuts it: one UDP GSO datagram, `sendTunnelGso`). Only
/// frames with offload metadata come here; everything else keeps the fast path.
extension ForwardingEngine {
    static let needsCsum: UInt8 = 1
    static let gsoTcp4: UInt8 = 1
    static let gsoTcp6: UInt8 = 4

    /// Reads the source's virtio-net header of the frame in `txScratch` (ports that may
    /// send offloads only). Sets `hot.offloadHeader` (0: an ordinary frame).
    @inline(__always)
    func readOffloadHeader() {
        let (h0, h1) = FrameCopy.peek16(txScratch.pointee, at: 0)
        // Only NEEDS_CSUM and gso_type mean work; other flag bits (DATA_VALID is for the
        // other direction) are dropped.
        let fields = h0 & ~0xfe
        hot.pointee.offloadHeader = UInt16(truncatingIfNeeded: fields) == 0 ? 0 : fields
        hot.pointee.offloadCsumOffset = UInt16(truncatingIfNeeded: h1)
        hot.pointee.linearized = false
    }

    /// Delivers a frame that has offload metadata to port `d`, as the port can take it.
    @inline(never)
    func deliverOffloaded(to d: Int, frameLength: Int, sourceHeader: Int, edit: UInt32) {
        let h = hot.pointee.offloadHeader
        let flags = UInt8(truncatingIfNeeded: h)
        let gso = UInt8(truncatingIfNeeded: h >> 8)
        let slot = ports + d
        // Guests that negotiated the offloads and TAP ports with a virtio-net header take
        // them (tunnels never set acceptsCsum). A TCP segment longer than the port's MTU
        // limit is cut in software instead, each piece checked against the limit.
        let accepts = slot.pointee.acceptsCsum
            && (gso == 0 || (gso == Self.gsoTcp4 && slot.pointee.acceptsTso4) || (gso == Self.gsoTcp6 && slot.pointee.acceptsTso6))
            && (gso == 0 || VlanEdit.length(frameLength, edit) <= slot.pointee.maxFrame)
        if accepts {
            // Pass the metadata on; offsets move with an inserted or removed VLAN tag.
            let delta: Int64 = edit == VlanEdit.none ? 0 : (edit == VlanEdit.pop ? -4 : 4)
            var fields = h
            if gso != 0 { fields = adjust16(fields, shift: 16, by: delta) }           // hdr_len
            if flags & Self.needsCsum != 0 { fields = adjust16(fields, shift: 48, by: delta) } // csum_start
            // The kernel gets only metadata that describes the frame it goes with.
            if slot.pointee.kind == .tap
                && !Self.offloadFieldsValid(fields, csumOffset: hot.pointee.offloadCsumOffset,
                                            frameLength: VlanEdit.length(frameLength, edit)) {
                slot.pointee.counters.unsafelyUnwrapped.add(.txDropBadOffload)
                return
            }
            hot.pointee.passHeader = fields
            hot.pointee.passCsumOffset = hot.pointee.offloadCsumOffset
            hot.pointee.offloadHeader = 0
            deliverFrame(to: d, frameLength: frameLength, sourceHeader: sourceHeader, edit: edit)
            hot.pointee.offloadHeader = h
            hot.pointee.passHeader = 0
            hot.pointee.passCsumOffset = 0
            return
        }
        guard linearize(sourceHeader: sourceHeader, frameLength: frameLength) else {
            slot.pointee.counters.unsafelyUnwrapped.add(.txDropBadOffload)
            return
        }
        let frame = offloadBuffer + sourceHeader
        if gso == 0 {
            // Finish the checksum once, in the linear copy: every later destination of this
            // frame then gets a complete one (always acceptable).
            guard completeChecksum(frame, frameLength: frameLength) else {
                slot.pointee.counters.unsafelyUnwrapped.add(.txDropBadOffload)
                return
            }
            hot.pointee.offloadHeader = 0
            deliverFrame(to: d, frameLength: frameLength, sourceHeader: sourceHeader, edit: edit)
            return
        }
        // A tunnel port: one UDP GSO super-datagram per remote, cut by the kernel
        // (TunnelGso.swift); else, or if the kernel refuses, cut here.
        if slot.pointee.kind == .vxlan && slot.pointee.captureTx == 0
            && sendTunnelGso(frame, frameLength: frameLength, gso: gso, sourceHeader: sourceHeader, to: d, edit: edit) {
            loadScratch(offloadBuffer, length: sourceHeader + frameLength)
            return
        }
        if !segment(frame, frameLength: frameLength, sourceHeader: sourceHeader, gso: gso, to: d, edit: edit) {
            slot.pointee.counters.unsafelyUnwrapped.add(.txDropBadOffload)
        }
        loadScratch(offloadBuffer, length: sourceHeader + frameLength)
    }

    @inline(__always)
    private func adjust16(_ v: UInt64, shift: UInt64, by delta: Int64) -> UInt64 {
        let old = Int64((v >> shift) & 0xffff)
        let new = UInt64(truncatingIfNeeded: max(0, old + delta)) & 0xffff   // hdr_len 0 stays 0
        return (v & ~(0xffff << shift)) | new << shift
    }

    /// Whether offload fields (virtio-net header bytes 0-7 as one little-endian word, and
    /// csum_offset) describe a frame of `frameLength` bytes: NEEDS_CSUM with csum_start
    /// after the Ethernet header and the checksum field inside the frame; a gso_type of
    /// TCPv4 or TCPv6 (ECN allowed) with NEEDS_CSUM (virtio 1.2, 5.1.6.2), gso_size above
    /// 0 and hdr_len inside the frame. Other flag bits (DATA_VALID) do not matter. Checked
    /// for every frame read from a TAP and before metadata is written to one.
    @inline(__always)
    static func offloadFieldsValid(_ h: UInt64, csumOffset: UInt16, frameLength: Int) -> Bool {
        let flags = UInt8(truncatingIfNeeded: h)
        let gso = UInt8(truncatingIfNeeded: h >> 8)
        if flags & needsCsum != 0 {
            let start = Int((h >> 48) & 0xffff)
            guard start >= 14, start + Int(csumOffset) + 2 <= frameLength else { return false }
        }
        guard gso != 0 else { return true }
        let type = gso & 0x7f
        return (type == gsoTcp4 || type == gsoTcp6) && flags & needsCsum != 0
            && (h >> 32) & 0xffff != 0 && Int((h >> 16) & 0xffff) <= frameLength
    }

    /// Copies the frame (with its header bytes) into `offloadBuffer` once per frame and
    /// points `txScratch` at it, so it can be changed without touching guest memory.
    private func linearize(sourceHeader: Int, frameLength: Int) -> Bool {
        if hot.pointee.linearized { return true }
        let total = sourceHeader + frameLength
        guard total <= Self.localBufferSize, total == txScratch.pointee.totalLength else { return false }
        offloadList.pointee.storage[0] = BufferSegment(base: offloadBuffer, length: Self.localBufferSize)
        offloadList.pointee.count = 1
        offloadList.pointee.totalLength = Self.localBufferSize
        FrameCopy.copy(from: txScratch.pointee, srcOffset: 0, to: offloadList.pointee, dstOffset: 0, count: total)
        loadScratch(offloadBuffer, length: total)
        hot.pointee.linearized = true
        return true
    }

    /// NEEDS_CSUM: the sum from csum_start to the end, stored at csum_start + csum_offset
    /// (the guest left the pseudo-header sum there).
    private func completeChecksum(_ frame: UnsafeMutableRawPointer, frameLength: Int) -> Bool {
        let start = Int((hot.pointee.offloadHeader >> 48) & 0xffff)
        let offset = Int(hot.pointee.offloadCsumOffset)
        guard start < frameLength, start + offset + 2 <= frameLength else { return false }
        let field = frame + start + offset
        let sum = InternetChecksum.sum(frame + start, count: frameLength - start)
        // A computed 0 goes out as 0xffff (the same in ones' complement): for UDP, 0 would
        // mean "no checksum" (RFC 768; the kernel's skb_checksum_help does the same).
        let value = InternetChecksum.finish(sum)
        InternetChecksum.store(value == 0 ? 0xffff : value, at: field)
        return true
    }

    /// Where the headers of a TSO frame (IPv4 or IPv6, optionally 802.1Q-tagged, TCP) lie:
    /// the IP header at `l3` (`ipHeader` bytes), TCP at `l4`, the payload at `headers`; its
    /// MSS. nil for anything the switch does not cut (an MSS below 64, IP options it cannot
    /// read, IPv6 extension headers, not TCP, headers past the frame). Shared by `segment`
    /// and the UDP GSO path of tunnels (`sendTunnelGso`).
    struct TcpLayout {
        var l3: Int, ipHeader: Int, l4: Int, tcpHeader: Int, headers: Int, mss: Int, v4: Bool
    }

    func tcpLayout(_ frame: UnsafeMutableRawPointer, frameLength: Int, gso: UInt8) -> TcpLayout? {
        let mss = Int((hot.pointee.offloadHeader >> 32) & 0xffff)
        // Linux never goes below 88 bytes (TCP_MIN_MSS); a tiny MSS from a hostile guest
        // would turn one frame into thousands.
        guard mss >= 64, gso & 0x7f == Self.gsoTcp4 || gso & 0x7f == Self.gsoTcp6 else { return nil }
        var l3 = 14
        if frameLength >= 18, UInt16(bigEndian: frame.loadUnaligned(fromByteOffset: 12, as: UInt16.self)) == 0x8100 { l3 = 18 }
        let v4 = gso & 0x7f == Self.gsoTcp4
        guard l3 + (v4 ? 20 : 40) <= frameLength else { return nil }
        let ipHeader: Int
        if v4 {
            let vihl = frame.load(fromByteOffset: l3, as: UInt8.self)
            guard vihl >> 4 == 4, frame.load(fromByteOffset: l3 + 9, as: UInt8.self) == 6 else { return nil }
            ipHeader = Int(vihl & 0xf) * 4
            guard ipHeader >= 20 else { return nil }
        } else {
            guard frame.load(fromByteOffset: l3, as: UInt8.self) >> 4 == 6,
                  frame.load(fromByteOffset: l3 + 6, as: UInt8.self) == 6 else { return nil }   // no extension headers
            ipHeader = 40
        }
        let l4 = l3 + ipHeader
        guard l4 + 20 <= frameLength else { return nil }
        let tcpHeader = Int(frame.load(fromByteOffset: l4 + 12, as: UInt8.self) >> 4) * 4
        let headers = l4 + tcpHeader
        guard tcpHeader >= 20, headers <= frameLength else { return nil }
        return TcpLayout(l3: l3, ipHeader: ipHeader, l4: l4, tcpHeader: tcpHeader, headers: headers, mss: mss, v4: v4)
    }

    /// Cuts one TCP segment (IPv4 or IPv6, optionally 802.1Q-tagged) into frames of at most
    /// gso_size payload bytes with complete checksums, and delivers each to `d`.
    private func segment(_ frame: UnsafeMutableRawPointer, frameLength: Int, sourceHeader: Int, gso: UInt8,
                         to d: Int, edit: UInt32) -> Bool {
        guard let layout = tcpLayout(frame, frameLength: frameLength, gso: gso) else { return false }
        let (l3, ipHeader, l4, tcpHeader, headers, mss, v4) = (layout.l3, layout.ipHeader, layout.l4, layout.tcpHeader,
                                                               layout.headers, layout.mss, layout.v4)
        let payload = frameLength - headers
        let seq0 = UInt32(bigEndian: frame.loadUnaligned(fromByteOffset: l4 + 4, as: UInt32.self))
        let flags0 = frame.load(fromByteOffset: l4 + 13, as: UInt8.self)
        let id0 = v4 ? UInt16(bigEndian: frame.loadUnaligned(fromByteOffset: l3 + 4, as: UInt16.self)) : 0
        let saved = hot.pointee.offloadHeader
        hot.pointee.offloadHeader = 0
        defer { hot.pointee.offloadHeader = saved }
        var offset = 0
        var i = 0
        repeat {
            let n = min(mss, payload - offset)
            let out = segmentBuffer + sourceHeader
            out.copyMemory(from: frame, byteCount: headers)
            (out + headers).copyMemory(from: frame + headers + offset, byteCount: n)
            let last = offset + n >= payload
            // IP: length, id, header checksum.
            if v4 {
                InternetChecksum.store(UInt16(ipHeader + tcpHeader + n), at: out + l3 + 2)
                InternetChecksum.store(id0 &+ UInt16(truncatingIfNeeded: i), at: out + l3 + 4)
                InternetChecksum.store(0, at: out + l3 + 10)
                InternetChecksum.store(InternetChecksum.finish(InternetChecksum.sum(out + l3, count: ipHeader)), at: out + l3 + 10)
            } else {
                InternetChecksum.store(UInt16(tcpHeader + n), at: out + l3 + 4)
            }
            // TCP: sequence number, FIN/PSH only on the last piece, CWR only on the first.
            (out + l4 + 4).storeBytes(of: (seq0 &+ UInt32(truncatingIfNeeded: offset)).bigEndian, as: UInt32.self)
            var f = flags0
            if !last { f &= ~0x09 }
            if i > 0 { f &= ~0x80 }
            out.storeBytes(of: f, toByteOffset: l4 + 13, as: UInt8.self)
            // TCP checksum with the pseudo-header.
            let tcpLength = tcpHeader + n
            var pseudo: UInt64 = UInt64(tcpLength) + 6
            pseudo = v4 ? InternetChecksum.sum(out + l3 + 12, count: 8, initial: pseudo)
                        : InternetChecksum.sum(out + l3 + 8, count: 32, initial: pseudo)
            InternetChecksum.store(0, at: out + l4 + 16)
            let sum = InternetChecksum.sum(out + l4, count: tcpLength, initial: pseudo)
            InternetChecksum.store(InternetChecksum.finish(sum), at: out + l4 + 16)
            loadScratch(segmentBuffer, length: sourceHeader + headers + n)
            deliverFrame(to: d, frameLength: headers + n, sourceHeader: sourceHeader, edit: edit)
            offset += n
            i += 1
        } while offset < payload
        return true
    }
}
