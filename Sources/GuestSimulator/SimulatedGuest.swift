import CShims
import VhostUser
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// A virtio-net driver simulated in memfd memory, for tests and the microbenchmark: it
/// lays out split rings and buffers in "guest memory" the way a Linux guest would, so the
/// switch's real ring and forwarding code runs without QEMU. It also lets tests write
/// hostile descriptors.
public final class SimulatedGuest {
    public static let guestBase: UInt64 = 0x1_0000_0000   // guest-physical start
    public static let userBase: UInt64 = 0x7f00_0000_0000 // the "frontend's" virtual start
    public let size: Int
    public let queueSize: UInt16
    public let features: UInt64
    let fd: Int32
    public let base: UnsafeMutableRawPointer   // driver-side mapping
    /// Ring locations (guest-physical) per queue index 0 (RX) and 1 (TX).
    public private(set) var rings: [(desc: UInt64, avail: UInt64, used: UInt64)] = []
    var nextFree: UInt64
    /// Per queue: next free descriptor, driver's avail idx, last seen used idx.
    public var freeDesc: [UInt16] = [0, 0]
    public var availIdx: [UInt16] = [0, 0]
    public var lastUsed: [UInt16] = [0, 0]
    /// Buffer address of each descriptor (fixed per slot, reused).
    var bufferOf: [[UInt64]] = [[], []]
    public let bufferSize: Int
    public let headerLength: Int
    /// VIRTIO_F_RING_PACKED in `features`: the rings are packed (SimulatedGuest+Packed.swift);
    /// `rings[q]` then holds the descriptor ring, driver event area and device event area.
    public let packed: Bool
    /// Packed driver state per queue: next descriptor to make available and next used
    /// descriptor to look at (position | wrap counter << 15), and each buffer id's slot count.
    public var packedAvail: [UInt16] = [0x8000, 0x8000]
    public var packedUsed: [UInt16] = [0x8000, 0x8000]
    var packedSlots: [[UInt16]] = [[], []]
    /// Buffers made available and not yet returned (a zeroed descriptor looks used on the
    /// second lap, so the driver must know when nothing is outstanding).
    var packedOutstanding = [0, 0]

    public init(memorySize: Int = 8 << 20, queueSize: UInt16 = 256, bufferSize: Int = 2048,
                features: UInt64 = SimulatedGuest.defaultFeatures) {
        self.size = memorySize
        self.queueSize = queueSize
        self.bufferSize = bufferSize
        self.features = features
        self.headerLength = VirtioNetHeader.size(forFeatures: features)
        self.packed = features & VirtioFeature.ringPacked != 0
        packedSlots = [[UInt16](repeating: 1, count: Int(queueSize)), [UInt16](repeating: 1, count: Int(queueSize))]
        fd = vs_memfd_create("simulated-guest")
        precondition(fd >= 0 && ftruncate(fd, off_t(memorySize)) == 0)
        base = mmap(nil, memorySize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)!
        nextFree = 0
        for _ in 0..<2 {
            let n = UInt64(queueSize)
            let desc = alloc(16 * n, align: 4096)
            let avail = alloc(6 + 2 * n, align: 2)
            let used = alloc(6 + 8 * n, align: 4096)
            rings.append((desc, avail, used))
        }
        for q in 0..<2 {
            bufferOf[q] = (0..<Int(queueSize)).map { _ in alloc(UInt64(bufferSize), align: 64) }
        }
    }

    deinit {
        munmap(base, size)
        close(fd)
    }

    /// What a hostile frontend can do with a memfd created without sealing: shrink it to 0
    /// under the switch's mapping. The driver side must not touch its memory afterwards
    /// (this process has no guard on the driver's own mapping).
    public func truncateMemory() {
        _ = ftruncate(fd, 0)
    }

    public static let defaultFeatures: UInt64 = VirtioFeature.version1 | VirtioFeature.netMergeableRxBuffers
        | VirtioFeature.ringIndirectDescriptors | VirtioFeature.vhostUserProtocolFeatures

    /// Allocates guest memory (bump allocator); returns a guest-physical address.
    public func alloc(_ bytes: UInt64, align: UInt64) -> UInt64 {
        nextFree = (nextFree + align - 1) / align * align
        let a = nextFree
        nextFree += bytes
        precondition(nextFree <= UInt64(size), "simulated guest memory exhausted")
        return Self.guestBase + a
    }

    @inline(__always)
    public func host(_ gpa: UInt64) -> UnsafeMutableRawPointer { base + Int(gpa - Self.guestBase) }

    /// The memory table as SET_MEM_TABLE would send it, with a fresh dup of the memfd.
    public func memoryTable() -> (MemoryRegionDescription, Int32) {
        (MemoryRegionDescription(guestPhysicalAddress: Self.guestBase, size: UInt64(size),
                                 userAddress: Self.userBase, mmapOffset: 0), dup(fd))
    }

    public func makeMemory() throws -> GuestMemory {
        let (r, f) = memoryTable()
        return try GuestMemory(regions: [r], fds: [f])
    }

    /// The queue configuration the device would build after SET_VRING_*.
    public func vringConfiguration(queue q: Int, memory: GuestMemory, kickFd: Int32? = nil,
                                   callFd: Int32? = nil) -> VringConfiguration {
        let r = rings[q]
        let layout = SplitRingLayout(size: queueSize, descriptors: memory.view.translateContiguous(r.desc, 16)!,
                                     avail: memory.view.translateContiguous(r.avail, 2)!,
                                     used: memory.view.translateContiguous(r.used, 2)!)
        return VringConfiguration(index: q, layout: layout, lastAvail: packed ? packedAvail[q] : availIdx[q], kickFd: kickFd,
                                  callFd: callFd, memory: memory, features: features)
    }

    // MARK: driver operations

    /// Writes descriptor `i` of queue `q`.
    public func writeDescriptor(queue q: Int, _ i: UInt16, addr: UInt64, len: UInt32, flags: UInt16, next: UInt16) {
        let d = host(rings[q].desc) + 16 * Int(i)
        d.storeBytes(of: addr, as: UInt64.self)
        d.storeBytes(of: len, toByteOffset: 8, as: UInt32.self)
        d.storeBytes(of: flags, toByteOffset: 12, as: UInt16.self)
        d.storeBytes(of: next, toByteOffset: 14, as: UInt16.self)
    }

    /// Puts `head` in the avail ring and publishes avail.idx (release).
    public func makeAvailable(queue q: Int, head: UInt16) {
        let a = host(rings[q].avail)
        (a + 4 + 2 * Int(availIdx[q] & (queueSize - 1))).storeBytes(of: head, as: UInt16.self)
        availIdx[q] &+= 1
        vs_store_release_u16(a + 2, availIdx[q])
    }

    /// Queues one frame for transmission (queue 1) in a single descriptor: header + frame.
    public func transmit(_ frame: [UInt8]) {
        if packed { return transmitPacked(frame) }
        let i = freeDesc[1] & (queueSize - 1)
        freeDesc[1] &+= 1
        let buf = bufferOf[1][Int(i)]
        memset(host(buf), 0, headerLength)
        frame.withUnsafeBytes { (host(buf) + headerLength).copyMemory(from: $0.baseAddress!, byteCount: frame.count) }
        writeDescriptor(queue: 1, i, addr: buf, len: UInt32(headerLength + frame.count), flags: 0, next: 0)
        makeAvailable(queue: 1, head: i)
    }

    /// Posts `count` receive buffers (queue 0), each one writable descriptor.
    public func postReceiveBuffers(_ count: Int) {
        if packed { return postReceiveBuffersPacked(count) }
        for _ in 0..<count {
            let i = freeDesc[0] & (queueSize - 1)
            freeDesc[0] &+= 1
            writeDescriptor(queue: 0, i, addr: bufferOf[0][Int(i)], len: UInt32(bufferSize),
                            flags: SplitQueue.descFlagWrite, next: 0)
            makeAvailable(queue: 0, head: i)
        }
    }

    /// New used entries of queue `q` since the last call: (id, len).
    public func takeUsed(queue q: Int) -> [(id: UInt32, len: UInt32)] {
        if packed { return takeUsedPacked(queue: q) }
        let u = host(rings[q].used)
        let idx = vs_load_acquire_u16(u + 2)
        var out: [(UInt32, UInt32)] = []
        while lastUsed[q] != idx {
            let e = u + 4 + 8 * Int(lastUsed[q] & (queueSize - 1))
            out.append((e.load(as: UInt32.self), e.load(fromByteOffset: 4, as: UInt32.self)))
            lastUsed[q] &+= 1
        }
        return out
    }

    /// Frames received on queue 0 (single-buffer frames), without the virtio-net header.
    public func receivedFrames() -> [[UInt8]] {
        takeUsed(queue: 0).map { e in
            let buf = host(bufferOf[0][Int(e.id)])
            let n = Int(e.len) - headerLength
            return n > 0 ? Array(UnsafeRawBufferPointer(start: buf + headerLength, count: n)) : []
        }
    }

    /// used.flags of queue `q` (NO_NOTIFY etc.).
    public func usedFlags(queue q: Int) -> UInt16 {
        // Packed: the device event area's flags (ENABLE 0, DISABLE 1, DESC 2).
        packed ? host(rings[q].used).load(fromByteOffset: 2, as: UInt16.self) : host(rings[q].used).load(as: UInt16.self)
    }
}

/// Ethernet frame builder for tests.
public enum TestFrame {
    public static func make(dst: [UInt8], src: [UInt8], etherType: UInt16 = 0x0800, payload: Int = 46,
                            fill: UInt8 = 0xab) -> [UInt8] {
        dst + src + [UInt8(etherType >> 8), UInt8(etherType & 0xff)] + [UInt8](repeating: fill, count: payload)
    }
    public static let broadcast: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
    public static func mac(_ last: UInt8) -> [UInt8] { [0x52, 0x54, 0x00, 0x00, 0x00, last] }
}

extension SimulatedGuest {
    /// Guest-physical address of the buffer behind descriptor `i` of queue `q`.
    public func bufferAddress(queue q: Int, descriptor i: Int) -> UInt64 { bufferOf[q][i] }
}

extension SimulatedGuest {
    /// Consumes new used entries of queue `q` without looking at them; returns how many
    /// (no allocation: for the benchmark loop).
    public func reclaimUsed(queue q: Int) -> Int {
        if packed { return reclaimUsedPacked(queue: q) }
        let idx = vs_load_acquire_u16(host(rings[q].used) + 2)
        let n = Int(idx &- lastUsed[q])
        lastUsed[q] = idx
        return n
    }
}
