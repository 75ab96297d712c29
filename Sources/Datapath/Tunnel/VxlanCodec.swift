import SwitchModel

/// Why a received tunnel datagram was dropped; each reason has its own port counter.
public enum TunnelDrop: UInt8, CaseIterable, Sendable {
    /// Shorter than the 8-byte tunnel header.
    case shortHeader
    /// VXLAN: the I flag (0x08) is clear, the VNI is not valid (RFC 7348, 5).
    case noVniFlag
    /// A VNI other than the port's.
    case otherVni
    /// The inner frame is shorter than an Ethernet header (14 bytes).
    case innerRunt
    /// The inner frame is longer than the port's MTU (plus an 802.1Q tag), or was cut
    /// because it did not fit the receive buffer.
    case innerTooLong
    /// Geneve: a version other than 0 (RFC 8926, 3.4).
    case badVersion
    /// Geneve: the options run past the header's Opt Len or the datagram.
    case badOptions
    /// Geneve: a critical option (C flag, or an option type with its critical bit); we
    /// know no options, so we may not forward the packet (RFC 8926, 3.4 and 3.5).
    case criticalOption
    /// Geneve: a protocol type other than Ethernet (0x6558), or an OAM packet (O flag),
    /// which is for the control plane, not for forwarding (RFC 8926, 3.4).
    case notEthernet

    public var counter: PortCounter {
        switch self {
        case .shortHeader: return .rxDropShortHeader
        case .noVniFlag: return .rxDropNoVniFlag
        case .otherVni: return .rxDropVni
        case .innerRunt: return .rxDropRunt
        case .innerTooLong: return .rxDropTooLong
        case .badVersion: return .rxDropBadVersion
        case .badOptions: return .rxDropBadOptions
        case .criticalOption: return .rxDropCriticalOption
        case .notEthernet: return .rxDropNotEthernet
        }
    }
}

/// A decoded datagram: the inner Ethernet frame is `length` bytes at `offset`.
public enum TunnelDecoded: Equatable, Sendable {
    case frame(offset: Int, length: Int)
    case drop(TunnelDrop)
}

/// Bytes 4-6 of both headers are the VNI, byte 7 is reserved: the big-endian word's top 24
/// bits, as loaded from memory (little-endian). (Before this codec the mask was written the
/// other way round, `0x00FF_FFFF`.bigEndian, which compared reserved byte 7 and ignored the
/// VNI's top byte.)
@usableFromInline let vniMask = UInt32(0xFFFF_FF00).bigEndian

/// The inner frame after a header of `header` bytes in a datagram of `length`, checked.
@inline(__always)
func innerFrame(header: Int, length: Int, maxFrame: Int) -> TunnelDecoded {
    let inner = length &- header                         // header <= length, checked by callers
    guard inner >= 14 else { return .drop(.innerRunt) }
    guard inner <= maxFrame else { return .drop(.innerTooLong) }
    return .frame(offset: header, length: inner)
}

/// The receive side of the VXLAN header (RFC 7348, 5), as one pure function of the bytes:
/// the forwarding thread, the unit tests and the fuzzer (Tests/Fuzz FuzzVxlan) call the same
/// code. Nothing here allocates.
public enum VxlanCodec {
    public static let headerSize = 8

    /// `length` bytes at `buffer` (-1: the datagram was cut, longer than the buffer).
    /// `vniWord`: bytes 4-7 of a header for the port's VNI as loaded (`VxlanState.vniWord`);
    /// `maxFrame`: the largest inner frame the port accepts.
    ///
    /// Reserved bits are ignored: RFC 7348, 5 says the 7 other flag bits and the 24 + 8
    /// reserved bits "MUST be set to zero on transmission and ignored on receipt" (the
    /// kernel's vxlan driver ignores them too unless an extension such as GBP is enabled).
    /// So only the I flag and the VNI (bytes 4-6) are looked at; byte 7 and bytes 1-3 are not.
    @inline(__always)
    public static func decode(_ buffer: UnsafeRawPointer, length: Int, vniWord: UInt32, maxFrame: Int) -> TunnelDecoded {
        if length < 0 { return .drop(.innerTooLong) }          // cut: longer than the buffer
        guard length >= headerSize else { return .drop(.shortHeader) }
        // SAFETY: length >= 8, checked above.
        guard buffer.load(as: UInt8.self) & 0x08 != 0 else { return .drop(.noVniFlag) }
        guard buffer.loadUnaligned(fromByteOffset: 4, as: UInt32.self) & vniMask == vniWord else {
            return .drop(.otherVni)
        }
        return innerFrame(header: headerSize, length: length, maxFrame: maxFrame)
    }

    /// The same for a byte array (tests, fuzzer).
    public static func decode(_ bytes: [UInt8], vni: UInt32, maxFrame: Int) -> TunnelDecoded {
        bytes.withUnsafeBytes { b in
            guard let base = b.baseAddress else { return .drop(.shortHeader) }
            return decode(base, length: b.count, vniWord: UInt32((vni << 8).bigEndian), maxFrame: maxFrame)
        }
    }
}
