import CShims
#if canImport(Glibc)
import Glibc
#endif

/// Kernel I/O of VXLAN ports in batches (issue 17): datagrams arrive by one recvmmsg per
/// batch into preallocated buffers, and leave by one sendmmsg per send socket per guest TX
/// batch instead of one system call per frame.
///
/// A datagram waiting to be sent points into the source guest's TX buffers (no copy), which
/// stay the switch's until the TX batch's used entries are published: so the batch is flushed
/// before every TX publish, before a ring or port goes away, and at the end of each pass.
/// Frames whose bytes are in the engine's own scratch buffers (from TAP and tunnel ports,
/// checksummed or segmented copies) and frames with a VLAN edit are sent at once, as before.
struct TunnelSendBatch {
    static let capacity = 64
    static let iovecCapacity = 1024

    let iovecs = UnsafeMutablePointer<iovec>.allocate(capacity: TunnelSendBatch.iovecCapacity)
    let iovStart = UnsafeMutablePointer<Int32>.allocate(capacity: TunnelSendBatch.capacity)
    let iovCount = UnsafeMutablePointer<Int32>.allocate(capacity: TunnelSendBatch.capacity)
    let addresses = UnsafeMutablePointer<TunnelAddress>.allocate(capacity: TunnelSendBatch.capacity)
    let fds = UnsafeMutablePointer<Int32>.allocate(capacity: TunnelSendBatch.capacity)
    let dstPorts = UnsafeMutablePointer<UInt16>.allocate(capacity: TunnelSendBatch.capacity)
    /// The tunnel port each datagram is counted on, and its inner frame's length.
    let slots = UnsafeMutablePointer<Int32>.allocate(capacity: TunnelSendBatch.capacity)
    let frameLengths = UnsafeMutablePointer<Int32>.allocate(capacity: TunnelSendBatch.capacity)
    var count = 0
    var iovecsUsed = 0

    /// The UDP GSO super-datagrams of one TSO segment (TunnelGso.swift): each piece's tunnel
    /// and inner headers in its own `gsoHeaderRoom` bytes, and two iovecs per piece (headers,
    /// payload). At most `gsoMaxSegments` pieces per datagram (the kernel's UDP_MAX_SEGMENTS
    /// before Linux 6.10), `gsoMaxPieces` per segment (64 KiB at an MSS of 256).
    static let gsoMaxSegments = 64
    static let gsoMaxPieces = 256
    static let gsoHeaderRoom = 256
    let gsoHeaders = UnsafeMutableRawPointer.allocate(byteCount: TunnelSendBatch.gsoMaxPieces * TunnelSendBatch.gsoHeaderRoom,
                                                      alignment: 64)
    let gsoIovecs = UnsafeMutablePointer<iovec>.allocate(capacity: 2 * TunnelSendBatch.gsoMaxPieces)
}

/// Receive side: `count` buffers of `ForwardingEngine.localBufferSize` bytes end to end, each
/// large enough for a UDP GRO message (64 KiB of coalesced datagrams).
struct TunnelReceiveBatch {
    static let count = 32
    let buffers = UnsafeMutableRawPointer.allocate(byteCount: TunnelReceiveBatch.count * ForwardingEngine.localBufferSize,
                                                   alignment: 64)
    let lengths = UnsafeMutablePointer<Int32>.allocate(capacity: TunnelReceiveBatch.count)
    let sources = UnsafeMutablePointer<TunnelAddress>.allocate(capacity: TunnelReceiveBatch.count)
    /// UDP GRO: the size of the datagrams the kernel coalesced into each buffer (0: one datagram).
    let segmentSizes = UnsafeMutablePointer<Int32>.allocate(capacity: TunnelReceiveBatch.count)

    /// Receive-side coalescing (TunnelCoalesce.swift): the inner frames of the run being
    /// built, which stay in `buffers` until the run is flushed (before the next recvmmsg).
    static let maxRun = 64
    let runFrames = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: TunnelReceiveBatch.maxRun)
    let runLengths = UnsafeMutablePointer<Int>.allocate(capacity: TunnelReceiveBatch.maxRun)
    var run = CoalesceRun()

    func contains(_ p: UnsafeMutableRawPointer) -> Bool {
        p >= buffers && p < buffers + TunnelReceiveBatch.count * ForwardingEngine.localBufferSize
    }
}

extension ForwardingEngine {
    /// Whether the frame in `txScratch` lies in guest memory (not in one of the engine's own
    /// buffers, which the next frame overwrites).
    @inline(__always)
    func scratchIsGuestMemory() -> Bool {
        let b = txScratch.pointee[0].base
        let size = Self.localBufferSize
        return !(b >= localBuffer && b < localBuffer + size) && !(b >= offloadBuffer && b < offloadBuffer + size)
            && !(b >= segmentBuffer && b < segmentBuffer + size) && !tunnelReceive.pointee.contains(b)
    }

    /// Sends every waiting datagram: one sendmmsg per run of datagrams on the same socket.
    @inline(never)
    func flushTunnelSends() {
        let batch = tunnelSends
        var i = 0
        while i < batch.pointee.count {
            let fd = batch.pointee.fds[i]
            var run = 1
            while i + run < batch.pointee.count && batch.pointee.fds[i + run] == fd && run < TunnelSendBatch.capacity { run += 1 }
            var e: Int32 = 0
            let sent = Int(max(vs_udp_send_batch(fd, batch.pointee.iovecs, batch.pointee.iovStart + i, batch.pointee.iovCount + i,
                                                 batch.pointee.addresses + i, batch.pointee.dstPorts[i], Int32(run), &e), 0))
            for k in i..<(i + sent) { countTunnelSend(k, sent: true) }
            if sent < run {
                countTunnelSend(i + sent, sent: false)   // socket buffer full, no route, ...
                i += sent + 1
            } else {
                i += run
            }
        }
        batch.pointee.count = 0
        batch.pointee.iovecsUsed = 0
    }

    private func countTunnelSend(_ k: Int, sent: Bool) {
        let batch = tunnelSends
        let p = Int(batch.pointee.slots[k])
        guard ports[p].inUse, let counters = ports[p].counters else { return }
        if sent {
            counters.add(.txPackets)
            counters.add(.txBytes, UInt64(batch.pointee.frameLengths[k]))
        } else {
            counters.add(.txDropNoBuffers)
        }
    }

    /// Queues the frame in `txScratch` (after `sourceHeader`) for tunnel port `d`, to remotes
    /// [first, last). The datagrams of one frame share its iovecs.
    func queueTunnelSend(port d: Int, header: UnsafeMutableRawPointer, sourceHeader: Int, frameLength: Int,
                         fd: Int32, dstPort: UInt16, remotes: UnsafePointer<TunnelAddress>, first: Int, last: Int) {
        let batch = tunnelSends
        if batch.pointee.count + (last - first) > TunnelSendBatch.capacity
            || batch.pointee.iovecsUsed + txScratch.pointee.count + 1 > TunnelSendBatch.iovecCapacity {
            flushTunnelSends()
        }
        let start = batch.pointee.iovecsUsed
        batch.pointee.iovecs[start] = iovec(iov_base: header, iov_len: 8)
        let end = scratchIovecs(from: sourceHeader, to: Int.max, start: start + 1, into: batch.pointee.iovecs)
        batch.pointee.iovecsUsed = end
        var r = first
        while r < last {
            let k = batch.pointee.count
            batch.pointee.iovStart[k] = Int32(start)
            batch.pointee.iovCount[k] = Int32(end - start)
            batch.pointee.addresses[k] = remotes[r]
            batch.pointee.fds[k] = fd
            batch.pointee.dstPorts[k] = dstPort
            batch.pointee.slots[k] = Int32(d)
            batch.pointee.frameLengths[k] = Int32(frameLength)
            batch.pointee.count = k + 1
            r += 1
        }
    }
}
