import CShims
import Logging
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// The vhost-user device state machine for one virtio-net port: features, memory table,
/// per-queue set-up. It never touches rings itself; it decides when a queue may run and
/// hands a checked `VringConfiguration` to the backend (vhost-user.rst, "Starting and
/// stopping rings").
public final class VhostUserDevice {
    public static let maxQueuePairs = VirtioNetQueues.maxPairs
    public static let maxQueues = VirtioNetQueues.maxQueues

    /// Features offered to the frontend: checksum and TCP segmentation offloads (finished
    /// in software for destinations without them), packed rings, dirty logging and guest
    /// announcements for live migration, no IOMMU: never offer what we do not do.
    public static let offeredFeatures: UInt64 =
        VirtioFeature.netOffloads | VirtioFeature.version1 | VirtioFeature.ringIndirectDescriptors | VirtioFeature.ringEventIndex
        | VirtioFeature.netMergeableRxBuffers | VirtioFeature.netMTU | VirtioFeature.netMultiqueue
        | VirtioFeature.anyLayout | VirtioFeature.vhostUserProtocolFeatures | VirtioFeature.ringPacked
        | VirtioFeature.inOrder | VirtioFeature.logAll | VirtioFeature.netGuestAnnounce
    /// No PAGEFAULT: postcopy migration is not offered.
    public static let offeredProtocolFeatures: UInt64 =
        VhostUserProtocolFeature.multiqueue | VhostUserProtocolFeature.replyAck | VhostUserProtocolFeature.mtu
        | VhostUserProtocolFeature.logShmfd | VhostUserProtocolFeature.rarp
        | VhostUserProtocolFeature.configureMemSlots
    /// Memory regions a port may have with CONFIGURE_MEM_SLOTS (GET_MAX_MEM_SLOTS): QEMU
    /// needs one per DIMM besides main RAM (one region with QEMU 7.2). The SIGBUS guard's
    /// table (memguard.c) holds 32 for each of the engine's 256 ports.
    public static let maxMemorySlots = 64

    struct Queue {
        var size: UInt32 = 0
        var base: UInt16 = 0
        var address: VringAddress?
        var kickFd: Int32?
        var kickSet = false       // a SET_VRING_KICK arrived (possibly with the no-fd flag)
        var callFd: Int32?
        var errFd: Int32?
        var enabled = false
        var running = false
    }

    public private(set) var ackedFeatures: UInt64 = 0
    public private(set) var ackedProtocolFeatures: UInt64 = 0
    public private(set) var mtu: Int?
    public private(set) var memory: GuestMemory?
    /// The dirty log from SET_LOG_BASE (kept until replaced or reset), and the one the data
    /// plane logs into now: the same while LOG_ALL is acked, else nil.
    public private(set) var dirtyLog: DirtyLog?
    /// Regions added by ADD_MEM_REG and how many times each (one per queue pair's vhost device).
    private var regionReferences: [(region: MemoryRegionDescription, count: Int)] = []
    private var activeLog: DirtyLog?
    public var isLogging: Bool { activeLog != nil }
    /// Test of the migration test only (vswitchd's VSWITCH_TEST_IGNORE_DIRTY_LOG=1): accept the
    /// log but never mark it, to show `Tests/e2e/migration.sh` catches the damage. Set at start.
    nonisolated(unsafe) public static var ignoresDirtyLogForTesting = false
    var queues = [Queue](repeating: Queue(), count: maxQueues)
    /// Queue pairs offered in GET_QUEUE_NUM (`add-port --queues`); rings above are refused.
    public var queuePairLimit = maxQueuePairs {
        didSet { queuePairLimit = min(max(queuePairLimit, 1), Self.maxQueuePairs) }
    }
    unowned let backend: VhostUserBackend
    let logger: Logger

    public init(backend: VhostUserBackend, logger: Logger) {
        self.backend = backend
        self.logger = logger
    }

    deinit { reset() }

    /// Summary of each queue for `vswitch show`: (index, size, enabled, running).
    public var queueSummary: [(index: Int, size: Int, enabled: Bool, running: Bool)] {
        queues.enumerated().filter { $0.element.size != 0 || $0.element.running }
            .map { ($0.offset, Int($0.element.size), $0.element.enabled, $0.element.running) }
    }
    /// The mapped memory regions for `vswitch show`, in guest-physical order.
    public var memoryRegions: [(description: MemoryRegionDescription, backing: MemoryBacking, sealed: Bool)] {
        (memory?.mappings ?? []).map { ($0.description, $0.backing, $0.sealed) }
            .sorted { $0.description.guestPhysicalAddress < $1.description.guestPhysicalAddress }
    }
    public var runningQueueCount: Int { queues.filter(\.running).count }

    /// Handles one message. Returns the reply payload for requests that have one, nil for
    /// others. Throws for messages that are wrong; the caller turns that into a REPLY_ACK
    /// failure or, for framing errors, a disconnect. Consumes `message.fds`.
    public func handle(_ message: VhostUserMessage) throws(VhostUserError) -> [UInt8]? {
        var fds = message.fds
        defer { for fd in fds { close(fd) } }   // whatever a handler did not keep
        guard let request = VhostUserRequest(rawValue: message.header.request) else {
            throw .unknownRequest(message.header.request)
        }
        let p = message.payload
        let name = "\(request)"
        if ![.setMemTable, .setVringKick, .setVringCall, .setVringErr, .setLogBase, .setLogFd, .addMemReg, .remMemReg]
            .contains(request) && !fds.isEmpty {
            throw .badFdCount(request: name, count: fds.count)
        }
        switch request {
        case .getFeatures:
            return encodeU64(Self.offeredFeatures)
        case .setFeatures:
            let f = try decodeU64(p, name)
            guard f & ~Self.offeredFeatures == 0 else { throw .unsupportedFeatures(f & ~Self.offeredFeatures) }
            ackedFeatures = f
            applyLogging()   // QEMU turns LOG_ALL on and off while the rings run
            return nil
        case .getProtocolFeatures:
            return encodeU64(Self.offeredProtocolFeatures)
        case .setProtocolFeatures:
            let f = try decodeU64(p, name)
            guard f & ~Self.offeredProtocolFeatures == 0 else { throw .unsupportedFeatures(f) }
            ackedProtocolFeatures = f
            return nil
        case .setOwner:
            return nil
        case .resetOwner:
            // Deprecated; the spec recommends treating it as "disable all rings".
            for i in queues.indices { stop(i) }
            return nil
        case .getQueueNum:
            return encodeU64(UInt64(queuePairLimit))
        case .getMaxMemSlots:
            return encodeU64(UInt64(Self.maxMemorySlots))
        case .addMemReg:
            try requireMemorySlots(name)
            let r = try SingleMemoryRegion(validating: p, name)
            guard fds.count == 1 else { throw .badFdCount(request: name, count: fds.count) }
            let fd = fds.removeFirst()
            try addRegion(r.region, fd: fd)
            return nil
        case .remMemReg:
            try requireMemorySlots(name)
            let r = try SingleMemoryRegion(validating: p, name)
            // QEMU 7.2 sends the region's fd along (closed unused); later versions send none.
            guard fds.count <= 1 else { throw .badFdCount(request: name, count: fds.count) }
            try removeRegion(r.region)
            return nil
        case .setMemTable:
            let table = try MemoryTable(validating: p, fdCount: fds.count)
            let owned = fds
            fds = []
            try setMemoryTable(table, fds: owned)
            return nil
        case .setVringNum:
            let s = try VringState(validating: p, name)
            let i = try queueIndex(s.index)
            guard isPacked ? PackedRingLayout.isValidSize(s.num) : SplitRingLayout.isValidSize(s.num)
            else { throw .badQueueSize(s.num) }
            guard !queues[i].running else { throw .queueRunning(s.index) }
            queues[i].size = s.num
            return nil
        case .setVringBase:
            let s = try VringState(validating: p, name)
            let i = try queueIndex(s.index)
            guard !queues[i].running else { throw .queueRunning(s.index) }
            // Packed rings: bits 0-14 position, bit 15 wrap counter; QEMU adds the used
            // position and wrap in bits 16-31, which we take to be the same (see GET).
            guard isPacked || s.num <= 0xffff else { throw .badPayloadSize(request: name, size: p.count) }
            queues[i].base = UInt16(truncatingIfNeeded: s.num)
            return nil
        case .setVringAddr:
            let a = try VringAddress(validating: p)
            let i = try queueIndex(a.index)
            stop(i)
            queues[i].address = a
            try reconcile(i)
            return nil
        case .getVringBase:
            let s = try VringState(validating: p, name)
            let i = try queueIndex(s.index)
            stop(i)
            // The ring stays stopped until a new SET_VRING_KICK (vhost-user.rst, "Starting
            // and stopping rings").
            if let fd = queues[i].kickFd { close(fd) }
            queues[i].kickFd = nil
            queues[i].kickSet = false
            // Packed: a stopped ring has returned every chain it took, so the used
            // position and wrap counter (bits 16-31, as QEMU reads them) equal the avail ones.
            let base = UInt32(queues[i].base)
            logger.debug("queue \(i) stopped (GET_VRING_BASE)", metadata: ["base": "\(base)"])
            return VringState(index: s.index, num: isPacked ? base | base << 16 : base).encoded
        case .setVringKick:
            let (i, fd) = try takeVringFd(p, &fds, name)
            stop(i)
            if let old = queues[i].kickFd { close(old) }
            queues[i].kickFd = fd
            queues[i].kickSet = true
            try reconcile(i)
            return nil
        case .setVringCall:
            let (i, fd) = try takeVringFd(p, &fds, name)
            if queues[i].running { backend.updateCallFd(i, fd) }
            if let old = queues[i].callFd { close(old) }
            queues[i].callFd = fd
            return nil
        case .setVringErr:
            let (i, fd) = try takeVringFd(p, &fds, name)
            if let old = queues[i].errFd { close(old) }
            queues[i].errFd = fd
            return nil
        case .setVringEnable:
            let s = try VringState(validating: p, name)
            let i = try queueIndex(s.index)
            queues[i].enabled = s.num != 0
            if !queues[i].enabled { stop(i) }
            try reconcile(i)
            return nil
        case .netSetMtu:
            let m = try decodeU64(p, name)
            guard (68...65535).contains(m) else { throw .badMtu(m) }
            mtu = Int(m)
            return nil
        case .setLogBase:
            guard ackedProtocolFeatures & VhostUserProtocolFeature.logShmfd != 0 else { throw .unsupportedRequest(name) }
            let d = try LogDescription(validating: p)
            guard fds.count == 1 else { throw .badFdCount(request: name, count: fds.count) }
            let fd = fds.removeFirst()
            let log: DirtyLog
            do {
                log = try DirtyLog(fd: fd, size: d.size, offset: d.offset)
                try log.check(covers: memory?.descriptions ?? [])
            } catch { throw .dirtyLog(error) }
            dirtyLog = log   // the old one is released once the data plane lets go of it
            applyLogging()
            logger.info("dirty log set", metadata: ["bytes": "\(d.size)", "logging": "\(isLogging)"])
            return []   // QEMU waits for an empty reply
        case .setLogFd:
            // An eventfd to tell the frontend the log changed: QEMU reads the log itself.
            guard ackedProtocolFeatures & VhostUserProtocolFeature.logShmfd != 0 else { throw .unsupportedRequest(name) }
            guard fds.count == 1 else { throw .badFdCount(request: name, count: fds.count) }
            return nil
        case .sendRarp:
            guard ackedProtocolFeatures & VhostUserProtocolFeature.rarp != 0 else { throw .unsupportedRequest(name) }
            guard p.count == 8 else { throw .badPayloadSize(request: name, size: p.count) }
            backend.announce(mac: Array(p[0..<6]))
            return nil
        case .setBackendReqFd:
            throw .unsupportedRequest(name)
        }
    }

    /// Stops every queue, closes every fd and drops the memory table: the state of a
    /// device whose frontend went away. Safe to call repeatedly.
    public func reset() {
        regionReferences = []
        for i in queues.indices {
            stop(i)
            for fd in [queues[i].kickFd, queues[i].callFd, queues[i].errFd].compactMap({ $0 }) { close(fd) }
            queues[i] = Queue()
        }
        memory = nil
        if activeLog != nil { backend.setDirtyLog(nil) }
        activeLog = nil
        dirtyLog = nil
        ackedFeatures = 0
        ackedProtocolFeatures = 0
        mtu = nil
    }

    // MARK: internals

    private var isPacked: Bool { ackedFeatures & VirtioFeature.ringPacked != 0 }

    /// Hands the data plane the log to write into: the dirty log while LOG_ALL is acked,
    /// else none. Writes made before this need no marks (QEMU copies all memory after it).
    private func applyLogging() {
        let wanted = ackedFeatures & VirtioFeature.logAll != 0 && !Self.ignoresDirtyLogForTesting ? dirtyLog : nil
        guard wanted !== activeLog else { return }
        backend.setDirtyLog(wanted)
        activeLog = wanted
        logger.info(wanted == nil ? "dirty logging off" : "dirty logging on (live migration)")
    }

    private func queueIndex(_ raw: UInt32) throws(VhostUserError) -> Int {
        guard raw < UInt32(2 * queuePairLimit) else { throw .badQueueIndex(raw) }
        return Int(raw)
    }

    /// Decodes SET_VRING_KICK/CALL/ERR and takes ownership of its fd (removed from `fds`;
    /// closed here if the queue index is bad).
    private func takeVringFd(_ p: [UInt8], _ fds: inout [Int32], _ name: String) throws(VhostUserError) -> (Int, Int32?) {
        let v = try VringFileDescriptor(validating: p, fds: fds, name)
        fds = []
        do {
            return (try queueIndex(v.index), v.fd)
        } catch {
            if let fd = v.fd { close(fd) }
            throw error
        }
    }

    private func stop(_ i: Int) {
        guard queues[i].running else { return }
        queues[i].base = backend.stopQueue(i)
        queues[i].running = false
    }

    private func setMemoryTable(_ table: MemoryTable, fds: [Int32]) throws(VhostUserError) {
        let newMemory: GuestMemory
        do { newMemory = try GuestMemory(regions: table.regions, fds: fds) } catch { throw .memory(error) }
        replaceMemory(with: newMemory)
        regionReferences = []
    }

    /// ADD_MEM_REG and REM_MEM_REG are only defined with CONFIGURE_MEM_SLOTS (vhost-user.rst).
    private func requireMemorySlots(_ name: String) throws(VhostUserError) {
        guard ackedProtocolFeatures & VhostUserProtocolFeature.configureMemSlots != 0 else {
            throw .featureNotNegotiated(request: name, feature: "CONFIGURE_MEM_SLOTS")
        }
    }

    /// ADD_MEM_REG: the current table plus one region; takes `fd` (closed whatever happens).
    /// The unchanged regions stay mapped as they are (shared with the old table).
    private func addRegion(_ r: MemoryRegionDescription, fd: Int32) throws(VhostUserError) {
        let current = memory ?? GuestMemory()
        // QEMU runs one vhost device per queue pair on the same connection, and each sends
        // ADD_MEM_REG / REM_MEM_REG for every region: the same region again is a reference.
        if let k = regionReferences.firstIndex(where: { Self.sameRegion($0.region, r) }),
           current.mappings.contains(where: { Self.sameRegion($0.description, r) }) {
            close(fd)
            regionReferences[k].count += 1
            logger.debug("memory region added again (another queue pair's vhost device)",
                         metadata: Self.metadata(r, regions: current.mappings.count))
            return
        }
        guard current.mappings.count < Self.maxMemorySlots else {
            close(fd)
            throw .memorySlotsFull(limit: Self.maxMemorySlots)
        }
        let next: GuestMemory
        do { next = try current.adding(r, fd: fd) } catch { throw .memory(error) }
        replaceMemory(with: next)
        regionReferences.removeAll { Self.sameRegion($0.region, r) }
        regionReferences.append((r, 1))
        logger.debug("memory region added", metadata: Self.metadata(r, regions: next.mappings.count))
    }

    /// How many times each region was added (see `addRegion`).
    private static func sameRegion(_ a: MemoryRegionDescription, _ b: MemoryRegionDescription) -> Bool {
        a.guestPhysicalAddress == b.guestPhysicalAddress && a.size == b.size && a.userAddress == b.userAddress
    }

    private static func metadata(_ r: MemoryRegionDescription, regions: Int) -> Logger.Metadata {
        ["gpa": "0x\(String(r.guestPhysicalAddress, radix: 16))", "size": "\(r.size)", "regions": "\(regions)"]
    }

    /// REM_MEM_REG: the removed region is unmapped once the data plane let go of the old
    /// table (in `replaceMemory`, when the last ring translated through it has stopped).
    private func removeRegion(_ r: MemoryRegionDescription) throws(VhostUserError) {
        if let k = regionReferences.firstIndex(where: { Self.sameRegion($0.region, r) }), regionReferences[k].count > 1 {
            regionReferences[k].count -= 1   // still added by another queue pair's vhost device
            return
        }
        regionReferences.removeAll { Self.sameRegion($0.region, r) }
        let next: GuestMemory
        do throws(GuestMemoryError) {
            next = try (memory ?? GuestMemory()).removing(r)
        } catch { throw .memory(error) }
        replaceMemory(with: next.mappings.isEmpty ? nil : next)
        logger.debug("memory region removed", metadata: Self.metadata(r, regions: next.mappings.count))
    }

    /// The data-plane handoff for any change of the memory table: rings translated through
    /// the old table stop (the forwarding thread acknowledges and drops its reference), the
    /// table is swapped, and the rings are translated again through the new one. A ring that
    /// is no longer inside guest memory (its region was removed) stays stopped; the frontend
    /// can set it up again (SET_VRING_ADDR, SET_VRING_KICK) as after any stop.
    private func replaceMemory(with newMemory: GuestMemory?) {
        let wasRunning = queues.indices.filter { queues[$0].running }
        for i in wasRunning { stop(i) }
        memory = newMemory   // old table unmapped here: no ring holds it any more
        for i in wasRunning {
            do { try reconcile(i) } catch {
                logger.error("queue stopped: its ring is not inside guest memory after the memory table changed",
                             metadata: ["queue": "\(i)", "regions": "\(newMemory?.mappings.count ?? 0)"])
            }
        }
    }

    /// With PROTOCOL_FEATURES rings start disabled until SET_VRING_ENABLE; without it a
    /// ring starts when its kick fd arrives (vhost-user.rst, "Ring states").
    private func shouldRun(_ q: Queue) -> Bool {
        let enabled = ackedFeatures & VirtioFeature.vhostUserProtocolFeatures != 0 ? q.enabled : true
        return enabled && q.kickSet && q.address != nil && q.size != 0 && memory != nil
    }

    private func reconcile(_ i: Int) throws(VhostUserError) {
        let q = queues[i]
        guard !q.running, shouldRun(q), let memory, let a = q.address else { return }
        let n = UInt16(truncatingIfNeeded: q.size)
        let size = q.size == 32768 ? UInt16(32768) : n
        let view = memory.view
        if isPacked {
            // virtio 1.2, 2.8.10.1: descriptor ring 16-aligned, event areas 4 bytes, 4-aligned.
            guard PackedRingLayout.isValidSize(q.size), Int(q.base & 0x7fff) < Int(size),
                  a.descriptorUser % 16 == 0, a.availUser % 4 == 0, a.usedUser % 4 == 0,
                  let desc = view.translateUser(a.descriptorUser, PackedRingLayout.descriptorBytes(size)),
                  let driverEvent = view.translateUser(a.availUser, PackedRingLayout.eventBytes),
                  let deviceEvent = view.translateUser(a.usedUser, PackedRingLayout.eventBytes)
            else { throw .ringAddress(queue: UInt32(i)) }
            start(i, SplitRingLayout(size: size, descriptors: desc, avail: driverEvent, used: deviceEvent), memory)
            return
        }
        guard SplitRingLayout.isValidSize(q.size), a.descriptorUser % 16 == 0, a.availUser % 2 == 0, a.usedUser % 4 == 0,
              let desc = view.translateUser(a.descriptorUser, SplitRingLayout.descriptorBytes(size)),
              let avail = view.translateUser(a.availUser, SplitRingLayout.availBytes(size)),
              let used = view.translateUser(a.usedUser, SplitRingLayout.usedBytes(size))
        else { throw .ringAddress(queue: UInt32(i)) }
        start(i, SplitRingLayout(size: size, descriptors: desc, avail: avail, used: used), memory)
    }

    private func start(_ i: Int, _ layout: SplitRingLayout, _ memory: GuestMemory) {
        let q = queues[i]
        let base = isPacked ? q.base : resumePoint(queue: i, base: q.base, layout: layout)
        var config = VringConfiguration(index: i, layout: layout, lastAvail: base, kickFd: q.kickFd,
                                        callFd: q.callFd, memory: memory, features: ackedFeatures)
        if let a = q.address, a.flags & VringAddress.logFlag != 0 { config.usedLogAddress = a.log }
        backend.startQueue(config)
        queues[i].running = true
        logger.debug("queue \(i) started", metadata: ["size": "\(layout.size)", "base": "\(base)",
                                                      "ring": "\(isPacked ? "packed" : "split")"])
    }

    /// Where a split ring resumes. The switch returns every chain it takes, in order, before
    /// a ring stops, so a ring always restarts at its used index, and a frontend's
    /// SET_VRING_BASE normally says just that (QEMU sends what GET_VRING_BASE returned, or
    /// after losing the backend restores it from the used index itself). DPDK's
    /// virtio-user sends 0 whenever it reconnects to a backend that went away (the port
    /// deleted and added again, vswitchd restarted): taking 0 then put the avail index
    /// thousands of chains ahead and stopped the ring as corrupt. Like DPDK's vhost
    /// library, trust the used index in guest memory when the two disagree. A hostile
    /// value can only misplace this guest's own ring (avail is still checked per batch).
    private func resumePoint(queue i: Int, base: UInt16, layout: SplitRingLayout) -> UInt16 {
        // SAFETY: the used ring was translated with usedBytes(size) bytes; offset 2 is idx.
        let used = vs_load_acquire_u16(layout.used + 2)
        guard used != base else { return base }
        logger.warning("frontend's ring base is not where its used ring stands; resuming at the used index",
                       metadata: ["queue": "\(i)", "base": "\(base)", "used": "\(used)"])
        return used
    }
}
