/// An underlay address of a tunnel (IPv4 or IPv6): 16 bytes in network order laid out as a
/// struct in6_addr, IPv4 as IPv4-mapped (::ffff:a.b.c.d), which is how the UDP shims
/// (udp.c) take and return them. Two words, compared and masked without allocation.
public struct TunnelAddress: Equatable, Hashable, Sendable {
    /// Bytes 0-7 and 8-15, loaded as little-endian words (the raw memory of the 16 bytes).
    public var hi: UInt64
    public var lo: UInt64

    public init(hi: UInt64, lo: UInt64) {
        self.hi = hi
        self.lo = lo
    }

    /// The all-zero address (the IPv6 any address).
    public static let zero = TunnelAddress(hi: 0, lo: 0)

    /// An IPv4 address as `inet_pton` writes it (network order in memory), mapped.
    public init(ipv4 a: UInt32) {
        var t = TunnelAddress.zero
        withUnsafeMutableBytes(of: &t) {
            $0[10] = 0xff
            $0[11] = 0xff
            $0.storeBytes(of: a, toByteOffset: 12, as: UInt32.self)
        }
        self = t
    }

    /// From 16 bytes in network order.
    public init(bytes: [UInt8]) {
        precondition(bytes.count == 16)
        var a = TunnelAddress.zero
        withUnsafeMutableBytes(of: &a) { $0.copyBytes(from: bytes) }
        self = a
    }

    /// The 16 bytes in network order.
    public var bytes: [UInt8] { withUnsafeBytes(of: self) { Array($0) } }

    /// Byte `i` (0-15) in network order.
    @inline(__always)
    public func byte(_ i: Int) -> UInt8 { withUnsafeBytes(of: self) { $0[i] } }

    /// ::ffff:0:0/96, the IPv4-mapped prefix.
    static let mappedPrefix = TunnelAddress(ipv4: 0)
    static let mappedMask = TunnelAddress.mask(bits: 96)

    /// IPv4-mapped (::ffff:0:0/96).
    public var isIPv4: Bool { self & Self.mappedMask == Self.mappedPrefix }
    /// The IPv4 address (network order in memory, as `inet_pton` writes it); for IPv4 only.
    public var ipv4: UInt32 { withUnsafeBytes(of: self) { $0.loadUnaligned(fromByteOffset: 12, as: UInt32.self) } }

    /// The any address of this family: 0.0.0.0 (mapped) or ::.
    public var anyOfFamily: TunnelAddress { isIPv4 ? Self.mappedPrefix : .zero }

    /// The first `bits` bits set (a prefix mask over all 128 bits, in network order).
    public static func mask(bits: Int) -> TunnelAddress {
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<16 {
            let left = bits - 8 * i
            bytes[i] = left >= 8 ? 0xff : left <= 0 ? 0 : UInt8(0xff) << UInt8(8 - left)
        }
        return TunnelAddress(bytes: bytes)
    }

    /// Set bits (the length of a prefix mask).
    public var bitCount: Int { hi.nonzeroBitCount + lo.nonzeroBitCount }

    public static func | (a: TunnelAddress, b: TunnelAddress) -> TunnelAddress {
        TunnelAddress(hi: a.hi | b.hi, lo: a.lo | b.lo)
    }

    public static prefix func ~ (a: TunnelAddress) -> TunnelAddress {
        TunnelAddress(hi: ~a.hi, lo: ~a.lo)
    }

    @inline(__always)
    public static func & (a: TunnelAddress, b: TunnelAddress) -> TunnelAddress {
        TunnelAddress(hi: a.hi & b.hi, lo: a.lo & b.lo)
    }
}
