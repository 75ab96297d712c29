/// The receive side of the Geneve header (RFC 8926, 3.4), the counterpart of `VxlanCodec`
/// for `--type geneve` ports. The sending side needs no options: its 8-byte header is
/// `GeneveCodec.header(vni:)`, the same size as VXLAN's, so the datapath is shared.
///
///      0                   1                   2                   3
///     |Ver|  Opt Len  |O|C|    Rsvd.  |          Protocol Type        |
///     |        Virtual Network Identifier (VNI)       |    Reserved   |
///     |                    Variable-Length Options                    |
public enum GeneveCodec {
    public static let headerSize = 8
    /// Transparent Ethernet Bridging (RFC 8926, 3.4: "Protocol Type").
    public static let ethernet: UInt16 = 0x6558

    /// Bytes on the wire: 00 00 65 58 | v2 v1 v0 00 (version 0, no options, Ethernet).
    public static func header(vni: UInt32) -> UInt64 {
        UInt64(UInt32(0x0000_6558).bigEndian) | UInt64((vni << 8).bigEndian) << 32
    }

    /// `length` bytes at `buffer` (-1: cut). Options are walked and skipped: each one's
    /// length must stay within Opt Len, and Opt Len within the datagram (RFC 8926, 3.5);
    /// a critical one (the C flag, or an option type with its top bit) drops the packet,
    /// since we implement no options. Reserved bits are ignored ("MUST be zero on
    /// transmission and ignored on receipt"). Every loop is bounded by Opt Len (<= 63 words).
    @inline(__always)
    public static func decode(_ buffer: UnsafeRawPointer, length: Int, vniWord: UInt32, maxFrame: Int) -> TunnelDecoded {
        if length < 0 { return .drop(.innerTooLong) }
        guard length >= headerSize else { return .drop(.shortHeader) }
        // SAFETY: length >= 8, checked above; option reads are checked against `end` below.
        let b0 = buffer.load(as: UInt8.self)
        let b1 = buffer.load(fromByteOffset: 1, as: UInt8.self)
        guard b0 >> 6 == 0 else { return .drop(.badVersion) }
        let end = headerSize &+ Int(b0 & 0x3F) &* 4          // at most 8 + 252: no overflow
        guard end <= length else { return .drop(.badOptions) }
        var at = headerSize
        while at < end {
            guard at &+ 4 <= end else { return .drop(.badOptions) }
            let type = buffer.load(fromByteOffset: at &+ 2, as: UInt8.self)
            let words = Int(buffer.load(fromByteOffset: at &+ 3, as: UInt8.self) & 0x1F)
            if type & 0x80 != 0 { return .drop(.criticalOption) }
            at = at &+ 4 &+ words &* 4                       // each step >= 4, at <= 8 + 252 + 128
            guard at <= end else { return .drop(.badOptions) }
        }
        if b1 & 0x40 != 0 && end > headerSize { return .drop(.criticalOption) }
        guard b1 & 0x80 == 0,
              buffer.loadUnaligned(fromByteOffset: 2, as: UInt16.self) == ethernet.bigEndian else {
            return .drop(.notEthernet)
        }
        guard buffer.loadUnaligned(fromByteOffset: 4, as: UInt32.self) & vniMask == vniWord else {
            return .drop(.otherVni)
        }
        return innerFrame(header: end, length: length, maxFrame: maxFrame)
    }

    /// The same for a byte array (tests, fuzzer).
    public static func decode(_ bytes: [UInt8], vni: UInt32, maxFrame: Int) -> TunnelDecoded {
        bytes.withUnsafeBytes { b in
            guard let base = b.baseAddress else { return .drop(.shortHeader) }
            return decode(base, length: b.count, vniWord: UInt32((vni << 8).bigEndian), maxFrame: maxFrame)
        }
    }
}
