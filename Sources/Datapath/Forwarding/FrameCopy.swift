import SwitchModel
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// How a frame's 802.1Q tag changes on its way to one destination: 0 nothing, `pop`, or
/// the 32-bit tag to insert (TPID 0x8100 in the high half, the VLAN id in the low half).
enum VlanEdit {
    static let none: UInt32 = 0
    static let pop: UInt32 = 1
    @inline(__always) static func push(_ vlan: UInt16) -> UInt32 { 0x8100_0000 | UInt32(vlan & 0xfff) }
    /// Frame length after the edit.
    @inline(__always) static func length(_ n: Int, _ edit: UInt32) -> Int {
        edit == none ? n : (edit == pop ? n - 4 : n + 4)
    }
}

/// Scatter-gather copy between two translated chains: the single copy of a frame from the
/// source guest's TX buffers into the destination guest's RX buffers.
enum FrameCopy {
    /// Copies `n` >= 0 bytes between two buffers: 16-64 bytes (the small frames a packet
    /// rate is made of) inline with four overlapping 16-byte moves, longer ones by memcpy.
    /// Why: at 64 B the call into glibc's memcpy (through the PLT, then its size dispatch)
    /// cost more than the copy: with a bridge-wide capture, whose record copy this is, the
    /// engine took 36.5-38.6 ns per frame instead of 38.1-39.1 (vswitch-microbench
    /// --capture-file, fastest of 15 rounds), for 4 more instructions. Reads and writes
    /// nothing outside `src ..< src + n` and `dst ..< dst + n`.
    @inline(__always)
    static func copyBytes(to dst: UnsafeMutableRawPointer, from src: UnsafeRawPointer, count n: Int) {
        guard n >= 16 && n <= 64 else {
            memcpy(dst, src, n)
            return
        }
        let half = n > 32 ? 32 : 16
        let a = src.loadUnaligned(as: SIMD16<UInt8>.self)
        let b = src.loadUnaligned(fromByteOffset: half &- 16, as: SIMD16<UInt8>.self)
        let c = src.loadUnaligned(fromByteOffset: n &- half, as: SIMD16<UInt8>.self)
        let d = src.loadUnaligned(fromByteOffset: n &- 16, as: SIMD16<UInt8>.self)
        dst.storeBytes(of: a, as: SIMD16<UInt8>.self)
        dst.storeBytes(of: b, toByteOffset: half &- 16, as: SIMD16<UInt8>.self)
        dst.storeBytes(of: c, toByteOffset: n &- half, as: SIMD16<UInt8>.self)
        dst.storeBytes(of: d, toByteOffset: n &- 16, as: SIMD16<UInt8>.self)
    }

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

    /// Copies a frame of `count` bytes while removing or inserting its 802.1Q tag (bytes
    /// 12-15): `edit` is `VlanEdit.pop`, or a tag to push (see `VlanEdit.push`).
    static func copyEditingTag(from src: SegmentList, srcOffset: Int, to dst: SegmentList, dstOffset: Int,
                               count: Int, edit: UInt32) {
        copy(from: src, srcOffset: srcOffset, to: dst, dstOffset: dstOffset, count: 12)
        if edit == VlanEdit.pop {
            copy(from: src, srcOffset: srcOffset + 16, to: dst, dstOffset: dstOffset + 12, count: count - 16)
        } else {
            var tag = edit.bigEndian
            withUnsafeBytes(of: &tag) { write($0.baseAddress!, count: 4, to: dst, at: dstOffset + 12) }
            copy(from: src, srcOffset: srcOffset + 12, to: dst, dstOffset: dstOffset + 16, count: count - 12)
        }
    }

    /// Writes `count` bytes from `bytes` into `dst` at byte `at` (0: the virtio-net header).
    @inline(__always)
    static func write(_ bytes: UnsafeRawPointer, count: Int, to dst: SegmentList, at: Int = 0) {
        if at + count <= dst[0].length {
            (dst[0].base + at).copyMemory(from: bytes, byteCount: count)
            return
        }
        var di = 0, off = at, done = 0
        while off >= dst[di].length { off -= dst[di].length; di += 1 }
        while done < count {
            let d = dst[di]
            let n = min(count - done, d.length - off)
            (d.base + off).copyMemory(from: bytes + done, byteCount: n)
            done += n
            off += n
            if off == d.length { di += 1; off = 0 }
        }
    }

    /// Writes the virtio-net header: bytes 0-7 from `w0` (flags, gso_type, hdr_len, gso_size,
    /// csum_start), then csum_offset and num_buffers from `w1`; `length` is 12, or 10 for a
    /// guest without num_buffers. Two stores when the first buffer holds it (always, for
    /// Linux and DPDK guests), instead of a memcpy call of a variable length.
    @inline(__always)
    static func writeHeader(_ w0: UInt64, _ w1: UInt32, length: Int, to dst: SegmentList) {
        if length <= dst[0].length {
            // SAFETY: `length` bytes fit in the first segment; storeBytes is unaligned-safe.
            let p = dst[0].base
            p.storeBytes(of: w0, as: UInt64.self)
            if length == 12 {
                p.storeBytes(of: w1, toByteOffset: 8, as: UInt32.self)
                return
            }
            if length == 10 {
                p.storeBytes(of: UInt16(truncatingIfNeeded: w1), toByteOffset: 8, as: UInt16.self)
                return
            }
        }
        writeHeaderSlowly(w0, w1, length: length, to: dst)
    }

    /// `writeHeader` into one buffer known to hold `length` (10 or 12) bytes.
    @inline(__always)
    static func writeHeader(_ w0: UInt64, _ w1: UInt32, length: Int, at p: UnsafeMutableRawPointer) {
        p.storeBytes(of: w0, as: UInt64.self)
        if length == 12 {
            p.storeBytes(of: w1, toByteOffset: 8, as: UInt32.self)
        } else {
            p.storeBytes(of: UInt16(truncatingIfNeeded: w1), toByteOffset: 8, as: UInt16.self)
        }
    }

    /// A header split over buffers (or of an unusual length). Out of line: it takes a local's
    /// address, which would put a stack protector into the caller.
    @inline(never)
    static func writeHeaderSlowly(_ w0: UInt64, _ w1: UInt32, length: Int, to dst: SegmentList) {
        var header: (UInt64, UInt32) = (w0, w1)
        withUnsafeBytes(of: &header) { write($0.baseAddress!, count: min(length, 12), to: dst) }
    }

    /// Reads up to 16 bytes at `offset` (the Ethernet header) into a local.
    @inline(__always)
    static func peek16(_ src: SegmentList, at offset: Int) -> (UInt64, UInt64) {
        if offset + 16 <= src[0].length {
            // SAFETY: 16 bytes at offset lie inside the first segment.
            let p = src[0].base + offset
            return (p.loadUnaligned(as: UInt64.self), p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        }
        return peek16Slowly(src, at: offset)
    }

    /// `peek16` over a header split across segments (or a frame shorter than 16 bytes).
    @inline(never)
    static func peek16Slowly(_ src: SegmentList, at offset: Int) -> (UInt64, UInt64) {
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
