import Virtio

/// vhost-user request codes this backend understands (vhost-user.rst, "Master message types").
public enum VhostUserRequest: UInt32, Sendable {
    case getFeatures = 1
    case setFeatures = 2
    case setOwner = 3
    case resetOwner = 4
    case setMemTable = 5
    case setLogBase = 6
    case setLogFd = 7
    case setVringNum = 8
    case setVringAddr = 9
    case setVringBase = 10
    case getVringBase = 11
    case setVringKick = 12
    case setVringCall = 13
    case setVringErr = 14
    case getProtocolFeatures = 15
    case setProtocolFeatures = 16
    case getQueueNum = 17
    case setVringEnable = 18
    case sendRarp = 19
    case netSetMtu = 20
    case setBackendReqFd = 21
    case getMaxMemSlots = 36
    case addMemReg = 37
    case remMemReg = 38
}

/// vhost-user protocol feature bits (vhost-user.rst, "Protocol features").
public enum VhostUserProtocolFeature {
    public static let multiqueue: UInt64 = 1 << 0
    public static let logShmfd: UInt64 = 1 << 1
    public static let rarp: UInt64 = 1 << 2
    public static let replyAck: UInt64 = 1 << 3
    public static let mtu: UInt64 = 1 << 4
    public static let configureMemSlots: UInt64 = 1 << 15

    public static func describe(_ bits: UInt64) -> [String] {
        let names: [(UInt64, String)] = [(multiqueue, "MQ"), (logShmfd, "LOG_SHMFD"), (rarp, "RARP"),
                                         (replyAck, "REPLY_ACK"), (mtu, "MTU"), (1 << 5, "BACKEND_REQ"),
                                         (configureMemSlots, "CONFIGURE_MEM_SLOTS")]
        return names.filter { bits & $0.0 != 0 }.map(\.1)
    }
}

/// The 12-byte message header.
public struct VhostUserHeader: Equatable, Sendable {
    public static let size = 12
    public static let versionMask: UInt32 = 0x3
    public static let version: UInt32 = 0x1
    public static let replyFlag: UInt32 = 1 << 2
    public static let needReplyFlag: UInt32 = 1 << 3
    /// Largest payload accepted: the biggest message we handle (a memory table of 8 regions;
    /// more regions come one per ADD_MEM_REG) is 264 bytes; rust-vmm and QEMU cap at 4 KiB.
    public static let maxPayload: UInt32 = 0x1000

    public var request: UInt32
    public var flags: UInt32
    public var size: UInt32

    public init(request: UInt32, flags: UInt32, size: UInt32) {
        self.request = request
        self.flags = flags
        self.size = size
    }

    public var needsReply: Bool { flags & Self.needReplyFlag != 0 }

    /// Decodes and validates a header: version 1, not a reply, no unknown flag bits, size bounded.
    public init(validating bytes: [UInt8]) throws(VhostUserError) {
        guard bytes.count == Self.size else { throw .shortMessage }
        request = bytes.readLE(UInt32.self, at: 0)
        flags = bytes.readLE(UInt32.self, at: 4)
        size = bytes.readLE(UInt32.self, at: 8)
        guard flags & Self.versionMask == Self.version else { throw .badVersion(flags) }
        guard flags & ~(Self.versionMask | Self.needReplyFlag) == 0 else { throw .badFlags(flags) }
        guard size <= Self.maxPayload else { throw .payloadTooLarge(size) }
    }

    public var encoded: [UInt8] {
        var b = [UInt8]()
        b.reserveCapacity(Self.size)
        b.appendLE(request)
        b.appendLE(flags)
        b.appendLE(size)
        return b
    }
}

/// Everything that can be wrong with a message from the frontend.
public enum VhostUserError: Error, Equatable, CustomStringConvertible {
    case shortMessage
    case badVersion(UInt32)
    case badFlags(UInt32)
    case payloadTooLarge(UInt32)
    case unknownRequest(UInt32)
    case unsupportedRequest(String)
    case badPayloadSize(request: String, size: Int)
    case badFdCount(request: String, count: Int)
    case badQueueIndex(UInt32)
    case badQueueSize(UInt32)
    case tooManyRegions(UInt32)
    case memorySlotsFull(limit: Int)
    case featureNotNegotiated(request: String, feature: String)
    case unsupportedFeatures(UInt64)
    case queueRunning(UInt32)
    case badMtu(UInt64)
    case memory(GuestMemoryError)
    case dirtyLog(DirtyLogError)
    case ringAddress(queue: UInt32)
    case peerClosed

    public var description: String {
        switch self {
        case .shortMessage: return "short message"
        case .badVersion(let f): return "unsupported protocol version in flags 0x\(String(f, radix: 16))"
        case .badFlags(let f): return "unknown flag bits 0x\(String(f, radix: 16))"
        case .payloadTooLarge(let s): return "payload of \(s) bytes exceeds 4096"
        case .unknownRequest(let r) where (28...30).contains(r):
            return "postcopy migration request \(r) is not supported (PAGEFAULT not offered): migrate with precopy"
        case .unknownRequest(let r): return "unknown request \(r)"
        case .unsupportedRequest(let r): return "request \(r) is not supported (feature not offered)"
        case .badPayloadSize(let r, let s): return "\(r): payload of \(s) bytes has the wrong size"
        case .badFdCount(let r, let n): return "\(r): carries \(n) file descriptors"
        case .badQueueIndex(let i): return "queue index \(i) out of range"
        case .badQueueSize(let n): return "queue size \(n) is not a power of two in 1...32768"
        case .tooManyRegions(let n): return "memory table with \(n) regions (at most \(MemoryTable.maxRegions))"
        case .memorySlotsFull(let limit):
            return "ADD_MEM_REG: all \(limit) memory slots are in use (the limit GET_MAX_MEM_SLOTS reported)"
        case .featureNotNegotiated(let r, let f): return "\(r) needs protocol feature \(f), which was not negotiated"
        case .unsupportedFeatures(let f): return "frontend acked features not offered: 0x\(String(f, radix: 16))"
        case .queueRunning(let i): return "queue \(i) is running"
        case .badMtu(let m): return "MTU \(m) out of range 68...65535"
        case .memory(let e): return e.description
        case .dirtyLog(let e): return e.description
        case .ringAddress(let q): return "queue \(q): ring addresses are not inside guest memory or misaligned"
        case .peerClosed: return "peer closed the connection"
        }
    }
}

/// One message: header, payload and the descriptors that came with it (owned: whoever
/// consumes a message closes fds it does not keep).
public struct VhostUserMessage {
    public var header: VhostUserHeader
    public var payload: [UInt8]
    public var fds: [Int32]
    public init(header: VhostUserHeader, payload: [UInt8], fds: [Int32]) {
        self.header = header
        self.payload = payload
        self.fds = fds
    }
}

extension Array where Element == UInt8 {
    /// Little-endian read; the caller has checked `offset + size <= count`.
    @inlinable
    func readLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var v: T = 0
        for i in 0..<MemoryLayout<T>.size { v |= T(self[offset + i]) << (8 * i) }
        return v
    }

    mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        for i in 0..<MemoryLayout<T>.size { append(UInt8(truncatingIfNeeded: value >> (8 * i))) }
    }
}
