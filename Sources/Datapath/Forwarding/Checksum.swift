/// Internet checksums (RFC 1071) over linear buffers, for finishing a guest's partial
/// checksum and for segmenting TSO frames in software.
enum InternetChecksum {
    /// Ones-complement sum of `count` bytes at `p` (as big-endian 16-bit words) plus
    /// `initial`, not yet folded or inverted.
    static func sum(_ p: UnsafeRawPointer, count: Int, initial: UInt64 = 0) -> UInt64 {
        var acc = initial
        var i = 0
        // 4 bytes at a time: the sum of big-endian 32-bit words folds to the same result.
        while i + 4 <= count {
            acc &+= UInt64(UInt32(bigEndian: p.loadUnaligned(fromByteOffset: i, as: UInt32.self)))
            i += 4
        }
        if i + 2 <= count {
            acc &+= UInt64(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: i, as: UInt16.self)))
            i += 2
        }
        if i < count { acc &+= UInt64(p.load(fromByteOffset: i, as: UInt8.self)) << 8 }
        return acc
    }

    /// The same sum as `sum`, 8 bytes at a time: native 64-bit words added with end-around
    /// carry, folded to 16 bits and byte-swapped (RFC 1071, 2(B): the sum does not depend on
    /// byte order), then the last 0-7 bytes and `initial` as `sum` does. For checking whole
    /// segments (TunnelCoalesce.swift).
    static func sumWide(_ p: UnsafeRawPointer, count: Int, initial: UInt64 = 0) -> UInt64 {
        var acc: UInt64 = 0
        var i = 0
        while i + 8 <= count {
            let (s, o) = acc.addingReportingOverflow(p.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            acc = s &+ (o ? 1 : 0)
            i += 8
        }
        // Fold to 16 bits of little-endian words; swapped, the big-endian sum.
        var v = (acc & 0xffff_ffff) &+ (acc >> 32)
        v = (v & 0xffff) &+ (v >> 16)
        v = (v & 0xffff) &+ (v >> 16)
        v = (v & 0xffff) &+ (v >> 16)
        let native = UInt16(truncatingIfNeeded: v)
        return sum(p + i, count: count - i, initial: initial &+ UInt64(native.byteSwapped))
    }

    /// Folds a sum to 16 bits (without inverting).
    static func fold(_ s: UInt64) -> UInt16 {
        var v = s
        while v >> 16 != 0 { v = (v & 0xffff) &+ (v >> 16) }
        return UInt16(v)
    }

    /// The checksum field value for data whose sum is `s`.
    static func finish(_ s: UInt64) -> UInt16 { ~fold(s) }

    static func store(_ value: UInt16, at p: UnsafeMutableRawPointer) {
        p.storeBytes(of: value.bigEndian, as: UInt16.self)
    }
}
