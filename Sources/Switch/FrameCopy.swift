import Virtio

/// Scatter-gather copy between two translated chains: the single copy of a frame from the
/// source guest's TX buffers into the destination guest's RX buffers.
enum FrameCopy {
    /// Copies `count` bytes from `src` starting at byte `srcOffset` to `dst` starting at
    /// byte `dstOffset`. The caller has checked both lists hold enough bytes.
    @inline(__always)
    static func copy(from src: SegmentList, srcOffset: Int, to dst: SegmentList, dstOffset: Int, count: Int) {
        guard count > 0 else { return }
        // Fast path: frame in one TX segment, room in the first RX segment (the usual case
        // for Linux and DPDK guests).
        if srcOffset + count <= src[0].length && dstOffset + count <= dst[0].length {
            // SAFETY: both ranges were just checked against segment lengths.
            (dst[0].base + dstOffset).copyMemory(from: src[0].base + srcOffset, byteCount: count)
            return
        }
        var si = 0, so = srcOffset
        while so >= src[si].length { so -= src[si].length; si += 1 }
        var di = 0, dOff = dstOffset
        while dOff >= dst[di].length { dOff -= dst[di].length; di += 1 }
        var left = count
        while left > 0 {
            let s = src[si], d = dst[di]
            let n = min(left, s.length - so, d.length - dOff)
            // SAFETY: so < s.length and dOff < d.length, n fits in both segments, and both
            // segments were bounds-checked against guest memory by `walkChain`.
            (d.base + dOff).copyMemory(from: s.base + so, byteCount: n)
            left -= n
            so += n
            dOff += n
            if so == s.length && left > 0 { si += 1; so = 0 }
            if dOff == d.length && left > 0 { di += 1; dOff = 0 }
        }
    }

    /// Writes `count` bytes from `bytes` into `dst` at byte 0 (the virtio-net header).
    @inline(__always)
    static func write(_ bytes: UnsafeRawPointer, count: Int, to dst: SegmentList) {
        if count <= dst[0].length {
            dst[0].base.copyMemory(from: bytes, byteCount: count)
            return
        }
        var di = 0, off = 0, done = 0
        while done < count {
            let d = dst[di]
            let n = min(count - done, d.length - off)
            (d.base + off).copyMemory(from: bytes + done, byteCount: n)
            done += n
            off += n
            if off == d.length { di += 1; off = 0 }
        }
    }

    /// Reads up to 16 bytes at `offset` (the Ethernet header) into a local.
    @inline(__always)
    static func peek16(_ src: SegmentList, at offset: Int) -> (UInt64, UInt64) {
        if offset + 16 <= src[0].length {
            // SAFETY: 16 bytes at offset lie inside the first segment.
            let p = src[0].base + offset
            return (p.loadUnaligned(as: UInt64.self), p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        }
        var out: (UInt64, UInt64) = (0, 0)
        let available = min(16, src.totalLength - offset)
        withUnsafeMutableBytes(of: &out) { o in
            var si = 0, so = offset, done = 0
            while so >= src[si].length { so -= src[si].length; si += 1 }
            while done < available {
                let s = src[si]
                let n = min(available - done, s.length - so)
                (o.baseAddress! + done).copyMemory(from: s.base + so, byteCount: n)
                done += n
                so += n
                if so == s.length { si += 1; so = 0 }
            }
        }
        return out
    }
}
