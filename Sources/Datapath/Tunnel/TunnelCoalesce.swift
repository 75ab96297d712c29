import SwitchModel
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// The run of received TCP segments being merged (TunnelCoalesce.swift): where the first
/// frame's headers lie, what the next segment must look like, and where the run goes.
struct CoalesceRun {
    var count = 0
    /// The tunnel port the frames arrived on, their remote, and the port they all go to.
    var port = 0
    var source = TunnelAddress(ipv4: 0)
    var destination = 0
    var l3 = 0, l4 = 0, headers = 0
    var v4 = true
    /// The first segment's payload (the merged frame's gso_size) and the run's payload so far.
    var mss = 0
    var payload = 0
    var nextSeq: UInt32 = 0
    var lastId: UInt16 = 0
    var lastFlags: UInt8 = 0
    /// A segment shorter than `mss` or with PSH was the last that may join.
    var closed = false
    /// The longest merged frame the destination takes (64 KiB at most).
    var limit = 0
}

/// Receive-side coalescing on tunnel ports (issue 17), the userspace counterpart of the
/// kernel's GRO (tcp_gro_receive, inet_gro_receive, ipv6_gro_receive): consecutive inner
/// frames of one recvmmsg batch (of one UDP GRO message or of several) that are segments of
/// one TCP flow, in order, and go to one destination that takes TSO (a TAP with offloads, a
/// guest that negotiated GUEST_TSO4/6 and mergeable buffers) leave as ONE TSO frame: the
/// first frame's headers with the total IP length, the last frame's flags and the
/// pseudo-header checksum, a virtio-net header with GSO_TCPV4/6, gso_size = the first
/// segment's payload, NEEDS_CSUM at the TCP checksum, and the other frames' payloads after
/// it as a scatter list (no copy here: the receive buffers are the frame). For every other
/// destination, and for every frame that does not match, the frames go one by one as before.
///
/// What may merge (as the kernel's GRO decides, made stricter where it is simpler): the
/// same Ethernet header (MACs, 802.1Q tag, EtherType); IPv4 with a 20-byte header, no
/// fragment, the same TOS, TTL, DF bit and addresses, an id one higher (or, with DF, the
/// same), a valid header checksum, total length = the frame; IPv6 with TCP as next header,
/// the same first word (traffic class, flow label), hop limit and addresses, payload length =
/// the frame; TCP with the same ports, ack, window, header length and options, the sequence
/// number right after the previous segment, flags exactly ACK (ACK|PSH on the last), a
/// payload of 1 to `mss` bytes (a shorter one is the last), and a valid checksum (checked
/// here in software: inner frames of a tunnel carry no offload metadata, and an outer UDP
/// checksum of 0 covers nothing). At most 64 segments and 64 KiB per merged frame.
extension ForwardingEngine {
    /// An inner frame that passed its tunnel header's checks, from tunnel port `p`: merged
    /// into the current run, starts a new one, or is forwarded alone.
    @inline(__always)
    func receiveInner(port p: Int, _ inner: UnsafeMutableRawPointer, length: Int, from: TunnelAddress) {
        let rx = tunnelReceive
        if rx.pointee.run.count > 0 {
            if appendToRun(port: p, inner, length: length, from: from) { return }
            flushRun()
        }
        if startRun(port: p, inner, length: length, from: from) { return }
        loadScratch(inner, length: length)
        forwardFrame(from: p)
    }

    /// Whether the frame can begin a run: a TCP segment with payload and only ACK, valid
    /// checksums, going to one known destination that takes TSO for its IP version.
    private func startRun(port p: Int, _ f: UnsafeMutableRawPointer, length: Int, from: TunnelAddress) -> Bool {
        let slot = ports + p
        let bridge = bridges + Int(slot.pointee.bridge)
        // Mirrors and captures see frames as they arrived; VLAN-aware bridges edit tags.
        guard slot.pointee.mirrorIn == 0, bridge.pointee.captureMask | slot.pointee.captureRx == 0,
              !bridge.pointee.vlanAware, length >= 54 else { return false }
        var l3 = 14
        var type = Self.be16(f, 12)
        var vlan: UInt16 = 0
        if type == 0x8100 {
            vlan = Self.be16(f, 14) & 0xfff
            type = Self.be16(f, 16)
            l3 = 18
        }
        let v4: Bool
        let l4: Int
        if type == 0x0800 {
            // SAFETY: length >= 54 >= l3 + 20 + 20.
            guard f.load(fromByteOffset: l3, as: UInt8.self) == 0x45, f.load(fromByteOffset: l3 + 9, as: UInt8.self) == 6,
                  Self.be16(f, l3 + 6) & 0x3fff == 0, Int(Self.be16(f, l3 + 2)) == length - l3 else { return false }
            v4 = true
            l4 = l3 + 20
        } else if type == 0x86dd {
            guard length >= l3 + 60, f.load(fromByteOffset: l3, as: UInt8.self) >> 4 == 6,
                  f.load(fromByteOffset: l3 + 6, as: UInt8.self) == 6, Int(Self.be16(f, l3 + 4)) == length - l3 - 40 else { return false }
            v4 = false
            l4 = l3 + 40
        } else {
            return false
        }
        guard l4 + 20 <= length else { return false }
        let tcpHeader = Int(f.load(fromByteOffset: l4 + 12, as: UInt8.self) >> 4) * 4
        let headers = l4 + tcpHeader
        guard tcpHeader >= 20, headers < length, f.load(fromByteOffset: l4 + 13, as: UInt8.self) == 0x10 else { return false }
        // One destination, known, that takes the merged frame as it is.
        let w0 = f.loadUnaligned(as: UInt64.self) & 0xFFFF_FFFF_FFFF
        guard w0 & 1 == 0, let table = bridge.pointee.table else { return false }
        let d = Int(table.lookup(MacTable.key(mac: w0, vlan: vlan), now: hot.pointee.now))
        guard d >= 0, d != p else { return false }
        let out = ports + d
        guard out.pointee.acceptsCsum, v4 ? out.pointee.acceptsTso4 : out.pointee.acceptsTso6,
              out.pointee.kind == .tap || (out.pointee.kind == .vhost && out.pointee.mergeable),
              out.pointee.captureTx == 0, out.pointee.mirrorOut == 0 else { return false }
        let limit = min(65535, out.pointee.maxFrame)
        guard length < limit, Self.checksumsValid(f, length: length, l3: l3, l4: l4, v4: v4) else { return false }
        let payload = length - headers
        let rx = tunnelReceive
        rx.pointee.run = CoalesceRun(count: 1, port: p, source: from, destination: d, l3: l3, l4: l4, headers: headers,
                                     v4: v4, mss: payload, payload: payload,
                                     nextSeq: Self.be32(f, l4 + 4) &+ UInt32(truncatingIfNeeded: payload),
                                     lastId: v4 ? Self.be16(f, l3 + 4) : 0, lastFlags: 0x10, closed: false, limit: limit)
        rx.pointee.runFrames[0] = f
        rx.pointee.runLengths[0] = length
        return true
    }

    /// Whether the frame continues the run (and was added to it).
    private func appendToRun(port p: Int, _ f: UnsafeMutableRawPointer, length: Int, from: TunnelAddress) -> Bool {
        let rx = tunnelReceive
        let run = rx.pointee.run
        guard !run.closed, run.count < TunnelReceiveBatch.maxRun, p == run.port, from == run.source else { return false }
        let payload = length - run.headers
        guard payload > 0, payload <= run.mss, run.headers + run.payload + payload <= run.limit else { return false }
        let first = rx.pointee.runFrames[0]
        let (l3, l4) = (run.l3, run.l4)
        // The Ethernet header (and tag) as the first frame's.
        guard memcmp(f, first, l3) == 0 else { return false }
        if run.v4 {
            let id = Self.be16(f, l3 + 4)
            let df = Self.be16(first, l3 + 6) & 0x4000 != 0
            // Version/IHL and TOS; fragment word (DF as the first's, no MF, no offset); TTL and
            // protocol; addresses; id one higher, or the same with DF.
            guard Self.be16(f, l3) == Self.be16(first, l3), Self.be16(f, l3 + 6) == Self.be16(first, l3 + 6),
                  Self.be16(f, l3 + 8) == Self.be16(first, l3 + 8),
                  memcmp(f + l3 + 12, first + l3 + 12, 8) == 0, Int(Self.be16(f, l3 + 2)) == length - l3,
                  id == run.lastId &+ 1 || (df && id == run.lastId) else { return false }
            rx.pointee.run.lastId = id
        } else {
            // Version, traffic class, flow label; next header and hop limit; addresses.
            guard memcmp(f + l3, first + l3, 4) == 0, Self.be16(f, l3 + 6) == Self.be16(first, l3 + 6),
                  memcmp(f + l3 + 8, first + l3 + 8, 32) == 0, Int(Self.be16(f, l3 + 4)) == length - l3 - 40 else { return false }
        }
        // TCP: ports, the next sequence number, ack, header length, window, options.
        let flags = f.load(fromByteOffset: l4 + 13, as: UInt8.self)
        guard memcmp(f + l4, first + l4, 4) == 0, Self.be32(f, l4 + 4) == run.nextSeq,
              memcmp(f + l4 + 8, first + l4 + 8, 5) == 0, flags == 0x10 || flags == 0x18,
              Self.be16(f, l4 + 14) == Self.be16(first, l4 + 14),
              memcmp(f + l4 + 20, first + l4 + 20, run.headers - l4 - 20) == 0,
              Self.checksumsValid(f, length: length, l3: l3, l4: l4, v4: run.v4) else { return false }
        let k = run.count
        rx.pointee.runFrames[k] = f
        rx.pointee.runLengths[k] = length
        rx.pointee.run.count = k + 1
        rx.pointee.run.payload = run.payload + payload
        rx.pointee.run.nextSeq = run.nextSeq &+ UInt32(truncatingIfNeeded: payload)
        rx.pointee.run.lastFlags = flags
        rx.pointee.run.closed = flags != 0x10 || payload < run.mss
        return true
    }

    /// Forwards the run: one frame as it came, several as one TSO frame.
    func flushRun() {
        let rx = tunnelReceive
        let run = rx.pointee.run
        rx.pointee.run.count = 0
        let first = rx.pointee.runFrames[0]
        guard run.count > 1 else {
            loadScratch(first, length: rx.pointee.runLengths[0])
            forwardFrame(from: run.port)
            return
        }
        let (l3, l4, headers) = (run.l3, run.l4, run.headers)
        let frameLength = headers + run.payload       // <= run.limit <= 65535, checked on every append
        let tcpLength = frameLength - l4
        // The first frame's headers become the merged frame's (inet_gro_complete, tcp4_gro_complete):
        // IP length (and IPv4 header checksum), the last segment's flags, the pseudo-header sum.
        var pseudo = UInt64(tcpLength) + 6
        if run.v4 {
            InternetChecksum.store(UInt16(frameLength - l3), at: first + l3 + 2)
            InternetChecksum.store(0, at: first + l3 + 10)
            InternetChecksum.store(InternetChecksum.finish(InternetChecksum.sum(first + l3, count: 20)), at: first + l3 + 10)
            pseudo = InternetChecksum.sum(first + l3 + 12, count: 8, initial: pseudo)
        } else {
            InternetChecksum.store(UInt16(frameLength - l3 - 40), at: first + l3 + 4)
            pseudo = InternetChecksum.sum(first + l3 + 8, count: 32, initial: pseudo)
        }
        first.storeBytes(of: run.lastFlags, toByteOffset: l4 + 13, as: UInt8.self)
        InternetChecksum.store(InternetChecksum.fold(pseudo), at: first + l4 + 16)
        // The frame as a scatter list: the first frame whole, then every other one's payload.
        txScratch.pointee.storage[0] = BufferSegment(base: first, length: rx.pointee.runLengths[0])
        var i = 1
        while i < run.count {
            txScratch.pointee.storage[i] = BufferSegment(base: rx.pointee.runFrames[i] + headers,
                                                         length: rx.pointee.runLengths[i] - headers)
            i &+= 1
        }
        txScratch.pointee.count = run.count
        txScratch.pointee.totalLength = frameLength
        let p = run.port
        let counters = ports[p].counters.unsafelyUnwrapped
        // Counted as the frames that arrived: each segment its packet, its headers its bytes.
        counters.add(.rxPackets, UInt64(run.count))
        counters.add(.rxBytes, UInt64(frameLength + (run.count - 1) * headers))
        counters.add(.rxCoalescedFrames, UInt64(run.count))
        let w0 = first.loadUnaligned(as: UInt64.self), w1 = first.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
        learn((w0 >> 48) | UInt64(w1) << 16, vlan: l3 == 18 ? Self.be16(first, 14) & 0xfff : 0, port: p)
        hot.pointee.mirrored = 0
        // virtio-net header: NEEDS_CSUM, GSO_TCPV4/6, hdr_len, gso_size, csum_start; csum_offset 16.
        hot.pointee.offloadHeader = UInt64(Self.needsCsum) | UInt64(run.v4 ? Self.gsoTcp4 : Self.gsoTcp6) << 8
            | UInt64(headers) << 16 | UInt64(run.mss) << 32 | UInt64(l4) << 48
        hot.pointee.offloadCsumOffset = 16
        hot.pointee.linearized = false
        deliver(to: run.destination, frameLength: frameLength, sourceHeader: 0)
        hot.pointee.offloadHeader = 0
    }

    /// Whether the IPv4 header checksum (if v4) and the TCP checksum of a frame are valid.
    @inline(__always)
    static func checksumsValid(_ f: UnsafeMutableRawPointer, length: Int, l3: Int, l4: Int, v4: Bool) -> Bool {
        let tcpLength = length - l4
        var pseudo = UInt64(tcpLength) + 6
        if v4 {
            guard InternetChecksum.fold(InternetChecksum.sum(f + l3, count: 20)) == 0xffff else { return false }
            pseudo = InternetChecksum.sum(f + l3 + 12, count: 8, initial: pseudo)
        } else {
            pseudo = InternetChecksum.sum(f + l3 + 8, count: 32, initial: pseudo)
        }
        return InternetChecksum.fold(InternetChecksum.sumWide(f + l4, count: tcpLength, initial: pseudo)) == 0xffff
    }

    @inline(__always)
    static func be16(_ p: UnsafeMutableRawPointer, _ offset: Int) -> UInt16 {
        UInt16(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inline(__always)
    static func be32(_ p: UnsafeMutableRawPointer, _ offset: Int) -> UInt32 {
        UInt32(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
}
