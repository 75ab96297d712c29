/// Encodes pcapng blocks (draft-ietf-opsawg-pcapng) into a byte buffer. libpcap reads
/// pcapng but cannot write it, and a pcapng file is what lets a capture of a whole bridge
/// say which port each frame crossed: one Interface Description Block per port, each
/// Enhanced Packet Block on its port's interface with the direction in `epb_flags`.
///
/// Blocks are written in host byte order; the Section Header's byte-order magic tells
/// readers which one that is. Every block is `type | total length | body | total length`
/// with the body padded to 32 bits, and every option `code | length | value` padded to 32
/// bits and ended by `opt_endofopt`. The buffer is reused (`removeAll(keepingCapacity:)`),
/// so a writer appending records does not allocate per frame once it has grown.
public struct PcapngWriter {
    public static let sectionHeaderType: UInt32 = 0x0A0D_0D0A
    public static let interfaceDescriptionType: UInt32 = 1
    public static let interfaceStatisticsType: UInt32 = 5
    public static let enhancedPacketType: UInt32 = 6
    public static let byteOrderMagic: UInt32 = 0x1A2B_3C4D
    public static let linkTypeEthernet: UInt16 = 1
    /// `epb_flags` bits 0-1: the direction.
    public static let inbound: UInt32 = 1, outbound: UInt32 = 2

    /// Option codes (common, and per block type).
    enum Option {
        static let endOfOptions: UInt16 = 0, comment: UInt16 = 1
        static let shbUserApplication: UInt16 = 4
        static let ifName: UInt16 = 2, ifDescription: UInt16 = 3, ifTimestampResolution: UInt16 = 9
        static let epbFlags: UInt16 = 2
        static let isbStartTime: UInt16 = 2, isbEndTime: UInt16 = 3, isbIfRecv: UInt16 = 4, isbIfDrop: UInt16 = 5,
                   isbFilterAccept: UInt16 = 6, isbUserDelivered: UInt16 = 8
    }

    /// Encoded blocks not yet handed to the output.
    public private(set) var bytes: [UInt8] = []

    public init(reserve: Int = 1 << 20) { bytes.reserveCapacity(reserve) }

    public mutating func clear() { bytes.removeAll(keepingCapacity: true) }

    // MARK: blocks

    /// Starts a section: byte-order magic, version 1.0, section length unknown (-1).
    public mutating func sectionHeader(application: String) {
        let start = begin(Self.sectionHeaderType)
        append(Self.byteOrderMagic)
        append(UInt16(1))
        append(UInt16(0))
        append(UInt64.max)
        option(Option.shbUserApplication, string: application)
        end(start)
    }

    /// Describes interface number N of the section (N = how many came before): Ethernet,
    /// `snaplen`, nanosecond timestamps (`if_tsresol` 9), and the port's name and description.
    public mutating func interfaceDescription(name: String, description: String, snaplen: Int) {
        let start = begin(Self.interfaceDescriptionType)
        append(Self.linkTypeEthernet)
        append(UInt16(0))
        append(UInt32(truncatingIfNeeded: snaplen))
        option(Option.ifName, string: name)
        if !description.isEmpty { option(Option.ifDescription, string: description) }
        withUnsafeBytes(of: UInt8(9)) { option(Option.ifTimestampResolution, $0) }
        end(start)
    }

    /// One frame on interface `interface`, `outbound` false when it entered the switch by that
    /// port, true when the switch delivered it there.
    public mutating func enhancedPacket(interface: UInt32, timestampNs: UInt64, data: UnsafeRawBufferPointer,
                                        originalLength: Int, outbound: Bool) {
        let start = begin(Self.enhancedPacketType)
        append(interface)
        appendTimestamp(timestampNs)
        append(UInt32(truncatingIfNeeded: data.count))
        append(UInt32(truncatingIfNeeded: originalLength))
        bytes.append(contentsOf: data)
        pad()
        withUnsafeBytes(of: outbound ? Self.outbound : Self.inbound) { option(Option.epbFlags, $0) }
        end(start)
    }

    /// Counters of one interface since the capture started, at `timestampNs`.
    public struct Statistics: Equatable, Sendable {
        public var startNs: UInt64
        /// Frames seen on the interface (written, filtered out, or dropped by the ring).
        public var received: UInt64
        /// Frames the capture lost because its ring was full.
        public var dropped: UInt64
        /// Frames that passed the filter (all of them were written).
        public var accepted: UInt64
        public init(startNs: UInt64, received: UInt64, dropped: UInt64, accepted: UInt64) {
            self.startNs = startNs
            self.received = received
            self.dropped = dropped
            self.accepted = accepted
        }
    }

    public mutating func interfaceStatistics(interface: UInt32, timestampNs: UInt64, _ s: Statistics) {
        let start = begin(Self.interfaceStatisticsType)
        append(interface)
        appendTimestamp(timestampNs)
        option64(Option.isbStartTime, timestamp: s.startNs)
        option64(Option.isbEndTime, timestamp: timestampNs)
        option64(Option.isbIfRecv, s.received)
        option64(Option.isbIfDrop, s.dropped)
        option64(Option.isbFilterAccept, s.accepted)
        option64(Option.isbUserDelivered, s.accepted)
        end(start)
    }

    // MARK: encoding

    private mutating func begin(_ type: UInt32) -> Int {
        let start = bytes.count
        append(type)
        append(UInt32(0))   // total length, patched by `end`
        return start
    }

    /// Ends the options, writes the trailing length and patches the leading one.
    private mutating func end(_ start: Int) {
        append(Option.endOfOptions)
        append(UInt16(0))
        let total = UInt32(truncatingIfNeeded: bytes.count - start + 4)
        append(total)
        withUnsafeBytes(of: total) { t in
            for i in 0..<4 { bytes[start + 4 + i] = t[i] }
        }
    }

    private mutating func append<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v) { bytes.append(contentsOf: $0) }
    }

    /// The timestamp as the two 32-bit halves EPB and ISB use (high first).
    private mutating func appendTimestamp(_ ns: UInt64) {
        append(UInt32(truncatingIfNeeded: ns >> 32))
        append(UInt32(truncatingIfNeeded: ns))
    }

    private mutating func pad() {
        while bytes.count % 4 != 0 { bytes.append(0) }
    }

    private mutating func option(_ code: UInt16, _ value: UnsafeRawBufferPointer) {
        append(code)
        append(UInt16(truncatingIfNeeded: value.count))
        bytes.append(contentsOf: value)
        pad()
    }

    /// A UTF-8 option; the pcapng limit of 65535 bytes cuts longer strings.
    private mutating func option(_ code: UInt16, string: String) {
        var s = Array(string.utf8.prefix(65532))
        s.withUnsafeMutableBytes { option(code, UnsafeRawBufferPointer($0)) }
    }

    private mutating func option64(_ code: UInt16, _ v: UInt64) {
        withUnsafeBytes(of: v) { option(code, $0) }
    }

    /// ISB timestamps are the same two halves as a block's timestamp.
    private mutating func option64(_ code: UInt16, timestamp ns: UInt64) {
        var halves = (UInt32(truncatingIfNeeded: ns >> 32), UInt32(truncatingIfNeeded: ns))
        withUnsafeBytes(of: &halves) { option(code, $0) }
    }
}
