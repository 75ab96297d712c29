import SwitchModel
import CShims
import Foundation
import Logging
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// The data plane: one forwarding thread that owns every ring, MAC table and port slot of
/// the bridges it runs. `vswitchd --forwarding-cpus` makes several engines
/// (`ForwardingThreads`), each a thread of its own with all of this state to itself; a bridge
/// and its ports belong to one engine, so the frame path shares nothing between threads.
///
/// The control plane never touches that state directly. It hands closures to `sync`,
/// which the forwarding thread runs between batches and acknowledges; so after
/// `stopQueue` returns, the ring, its eventfds and its guest memory are free to go.
/// With no work the thread sleeps in epoll on the guests' kick eventfds (0% CPU).
public final class ForwardingEngine: @unchecked Sendable {
    public static let maxPorts = 256
    public static let maxBridges = 64
    static let maxQueues = VirtioNetQueues.maxQueues
    /// Chains taken from one TX queue per visit.
    public var batchSize: Int {
        get { hot.pointee.batchSize }
        set { hot.pointee.batchSize = newValue }
    }
    /// How long the thread keeps polling after the last frame before it re-enables guest
    /// kicks and sleeps (adaptive polling): long enough to ride out gaps between a busy
    /// guest's bursts without a kick/wake-up round trip each time, short enough that an
    /// idle switch uses no CPU.
    public var spinNanoseconds: UInt64 {
        get { hot.pointee.spinNanoseconds }
        set { hot.pointee.spinNanoseconds = newValue }
    }

    // MARK: shared with other threads (lock / eventfd / relaxed counter)
    private let lock = NSLock()
    private var tasks: [() -> Void] = []
    private let pendingTasks = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    private let commandFd: Int32
    let epollFd: Int32
    /// Readiness of non-vhost ports' descriptors; nested in `epollFd` so a frame from the
    /// kernel wakes a sleeping thread, and polled with a zero timeout while busy.
    let localEpollFd: Int32
    private var thread: Thread?
    private var running = false
    private var threadId: pthread_t?
    let logger: Logger
    /// The thread's name (`/proc/PID/task/*/comm`, `dp-stats`, metrics): `vswitch-fwd`, and
    /// `vswitch-fwd1`, `vswitch-fwd2`, ... for the engines after the first.
    public let threadName: String
    /// The CPU the thread was pinned to by `start(cpu:)`, if any.
    public private(set) var cpu: Int?

    // MARK: owned by the forwarding thread
    var ports: UnsafeMutablePointer<PortSlot>
    var bridges: UnsafeMutablePointer<BridgeSlot>
    /// Keeps each running queue's guest memory mapped; index port * maxQueues + queue.
    var memoryOwners: [GuestMemory?]
    /// Keeps each port's dirty log mapped while `PortSlot.dirtyLog` points into it.
    var logOwners: [DirtyLog?]
    /// Ports with at least one running TX queue, polled in order.
    var pollList: UnsafeMutablePointer<Int32>
    /// Mutable scalars of the forwarding loop, behind a pointer: stored `var`s of a class
    /// would cost a dynamic exclusivity check on every access (40% of the instructions
    /// per frame, measured with callgrind).
    let hot: UnsafeMutablePointer<HotState>
    let txScratch: UnsafeMutablePointer<SegmentList>
    let rxScratch: UnsafeMutablePointer<SegmentList>
    let chainHeads = UnsafeMutablePointer<UInt16>.allocate(capacity: 256)
    /// The buffers of a fast-lane TX batch (`gatherTransmitBuffers`); batches are at most
    /// `maxBatch` chains.
    static let maxBatch = 256
    let batchBuffers = UnsafeMutablePointer<BufferSegment>.allocate(capacity: ForwardingEngine.maxBatch)
    let chainEnds = UnsafeMutablePointer<Int>.allocate(capacity: 256)
    /// One frame read from a non-vhost port (TAP, VXLAN), forwarded before the next read.
    let localBuffer = UnsafeMutableRawPointer.allocate(byteCount: ForwardingEngine.localBufferSize, alignment: 64)
    /// Scatter list for writev/sendmsg straight from guest buffers: header + segments.
    let iovecs = UnsafeMutablePointer<iovec>.allocate(capacity: 520)
    /// A frame with offload metadata, copied so its checksum can be finished, and the
    /// frames cut from a TSO segment, one at a time.
    let offloadBuffer = UnsafeMutableRawPointer.allocate(byteCount: ForwardingEngine.localBufferSize, alignment: 64)
    /// VXLAN datagrams waiting for one sendmmsg, and the buffers of one recvmmsg (TunnelBatch.swift).
    let tunnelSends: UnsafeMutablePointer<TunnelSendBatch> = {
        let p = UnsafeMutablePointer<TunnelSendBatch>.allocate(capacity: 1)
        p.initialize(to: TunnelSendBatch())
        return p
    }()
    let tunnelReceive: UnsafeMutablePointer<TunnelReceiveBatch> = {
        let p = UnsafeMutablePointer<TunnelReceiveBatch>.allocate(capacity: 1)
        p.initialize(to: TunnelReceiveBatch())
        return p
    }()
    /// Port mirrors (Mirrors.swift) and, per mirror, the port slots it selects by name.
    let mirrors: UnsafeMutablePointer<MirrorSlot> = {
        let p = UnsafeMutablePointer<MirrorSlot>.allocate(capacity: ForwardingEngine.maxMirrors)
        p.initialize(repeating: MirrorSlot(), count: ForwardingEngine.maxMirrors)
        return p
    }()
    var mirrorSources = [[Int]](repeating: [], count: ForwardingEngine.maxMirrors)
    var mirrorDestinations = [[Int]](repeating: [], count: ForwardingEngine.maxMirrors)
    let segmentBuffer = UnsafeMutableRawPointer.allocate(byteCount: ForwardingEngine.localBufferSize, alignment: 64)
    let offloadList: UnsafeMutablePointer<SegmentList> = {
        let p = UnsafeMutablePointer<SegmentList>.allocate(capacity: 1)
        p.initialize(to: SegmentList(capacity: 1))
        return p
    }()
    /// An 802.1Q tag being inserted by a writev.
    let tagBuffer = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
    /// The virtio-net header in front of a frame written to a TAP with offloads.
    let tapHeader = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 8)
    /// Ports whose RX used rings have unpublished entries.
    var dirtyPorts: UnsafeMutablePointer<Int32>
    /// Peer ports (PeerPortDatapath.swift), polled every pass, and those whose outbound ring
    /// has unpublished frames.
    let peerPorts = UnsafeMutablePointer<Int32>.allocate(capacity: ForwardingEngine.maxPorts)
    let dirtyPeers = UnsafeMutablePointer<Int32>.allocate(capacity: ForwardingEngine.maxPorts)
    /// Capture taps (pcap ports, live capture), indexed by their bit in the capture masks.
    let captureTaps = ForwardingEngine.makeCaptureTapTable()
    /// Statistics of the thread itself, for benchmarks (busy vs idle), one per `LoopCounter`.
    public let loopCounters = UnsafeMutablePointer<UInt64>.allocate(capacity: LoopCounter.allCases.count)

    public init(logger: Logger, threadName: String = "vswitch-fwd") {
        self.logger = logger
        self.threadName = threadName
        commandFd = vs_eventfd(0)
        epollFd = vs_epoll_create()
        localEpollFd = vs_epoll_create()
        precondition(commandFd >= 0 && epollFd >= 0 && localEpollFd >= 0, "eventfd/epoll: \(errno)")
        _ = vs_epoll_ctl(epollFd, vs_epoll_op_add(), commandFd, vs_epollin(), Self.commandToken)
        _ = vs_epoll_ctl(epollFd, vs_epoll_op_add(), localEpollFd, vs_epollin(), Self.localToken)
        pendingTasks.initialize(to: 0)
        loopCounters.initialize(repeating: 0, count: LoopCounter.allCases.count)
        ports = .allocate(capacity: Self.maxPorts)
        for i in 0..<Self.maxPorts { (ports + i).initialize(to: PortSlot()) }
        bridges = .allocate(capacity: Self.maxBridges)
        for i in 0..<Self.maxBridges { (bridges + i).initialize(to: BridgeSlot()) }
        memoryOwners = Array(repeating: nil, count: Self.maxPorts * Self.maxQueues)
        logOwners = Array(repeating: nil, count: Self.maxPorts)
        hot = .allocate(capacity: 1)
        hot.initialize(to: HotState())
        txScratch = .allocate(capacity: 1)
        txScratch.initialize(to: SegmentList(capacity: 512))
        rxScratch = .allocate(capacity: 1)
        rxScratch.initialize(to: SegmentList(capacity: 512))
        pollList = .allocate(capacity: Self.maxPorts)
        dirtyPorts = .allocate(capacity: Self.maxPorts)
        hot.pointee.now = UInt32(truncatingIfNeeded: vs_coarse_seconds())
    }

    deinit {
        stop()
        close(commandFd)
        close(epollFd)
        close(localEpollFd)
        localBuffer.deallocate()
        iovecs.deallocate()
        tagBuffer.deallocate()
        tapHeader.deallocate()
        offloadBuffer.deallocate()
        segmentBuffer.deallocate()
        offloadList.pointee.deallocate()
        offloadList.deallocate()
        for i in 0..<Self.maxPorts where ports[i].inUse { ports[i].release() }
        for i in 0..<Self.maxBridges where bridges[i].inUse { bridges[i].release() }
        ports.deallocate()
        bridges.deallocate()
        pollList.deallocate()
        dirtyPorts.deallocate()
        peerPorts.deallocate()
        dirtyPeers.deallocate()
        captureTaps.deallocate()
        txScratch.pointee.deallocate()
        rxScratch.pointee.deallocate()
        txScratch.deallocate()
        rxScratch.deallocate()
        hot.deallocate()
        chainHeads.deallocate()
        batchBuffers.deallocate()
        chainEnds.deallocate()
        pendingTasks.deallocate()
        loopCounters.deallocate()
    }

    static let commandToken: UInt64 = UInt64.max
    static let localToken: UInt64 = UInt64.max - 1

    // MARK: thread and commands

    /// Starts the forwarding thread, optionally pinned to `cpu`.
    public func start(cpu: Int? = nil) {
        guard thread == nil else { return }
        running = true
        self.cpu = cpu
        let name = threadName
        let t = Thread { [unowned self] in
            vs_set_thread_name(name)
            let altStack = vs_memguard_altstack()   // guest memory that shrinks faults on this thread
            defer { vs_memguard_altstack_release(altStack) }
            if let cpu { Self.pin(to: cpu) }
            self.lock.lock()   // read by sync() on other threads (ThreadSanitizer)
            self.threadId = pthread_self()
            self.lock.unlock()
            self.run()
        }
        t.name = name
        t.stackSize = 1 << 20
        thread = t
        t.start()
        // Wait until the thread is ready to take commands.
        sync { _ in }
    }

    public func stop() {
        guard thread != nil else { return }
        sync { $0.running = false }
        thread = nil
    }

    /// Runs `body` on the forwarding thread between batches and waits for it. Before the
    /// thread starts (tests, microbenchmarks) it runs inline.
    @discardableResult
    public func sync<T>(_ body: @escaping (ForwardingEngine) -> T) -> T {
        lock.lock()
        let forwardingThread = threadId
        lock.unlock()
        if thread == nil || (forwardingThread.map { pthread_equal($0, pthread_self()) != 0 } ?? false) {
            return body(self)
        }
        let done = DispatchSemaphore(value: 0)
        var result: T?
        lock.lock()
        tasks.append {
            result = body(self)
            done.signal()
        }
        vs_counter_add(pendingTasks, 1)
        lock.unlock()
        _ = vs_eventfd_signal(commandFd)
        done.wait()
        return result!
    }

    func runTasks() {
        lock.lock()
        let pending = tasks
        tasks.removeAll()
        pendingTasks.pointee = 0
        lock.unlock()
        for t in pending { t() }
    }

    private static func pin(to cpu: Int) { _ = vs_pin_to_cpu(Int32(cpu)) }

    // MARK: the loop

    private func run() {
        var tokens = [UInt64](repeating: 0, count: 64)
        var events = [UInt32](repeating: 0, count: 64)
        var idlePolls = 0
        var busyPolls = 0
        var idleSince: UInt64 = 0
        var loopStart = vs_rdtsc()
        while running {
            if vs_counter_load(pendingTasks) != 0 { runTasks() }
            let t0 = vs_rdtsc()
            let frames = pollOnce()
            if frames > 0 {
                // Busy time as the TSC counts it: how saturated the thread really is (a
                // share of polls would mislead: an empty pass is 100x cheaper than a full one).
                let t1 = vs_rdtsc()
                bump(.busyCycles, t1 &- t0)
                bump(.awakeCycles, t1 &- loopStart)
                loopStart = t1
                idlePolls = 0
                // MAC aging needs the clock even when the thread never sleeps: refresh it
                // every 256 busy passes (a few ms under load).
                busyPolls &+= 1
                if busyPolls & 255 == 0 { hot.pointee.now = UInt32(truncatingIfNeeded: vs_coarse_seconds()) }
                continue
            }
            // Read the clock only every 16 empty passes: it is the most expensive part of one.
            if idlePolls == 0 { idleSince = vs_monotonic_ns() }
            idlePolls += 1
            if idlePolls & 15 != 0 || vs_monotonic_ns() &- idleSince < hot.pointee.spinNanoseconds { continue }
            idlePolls = 0
            // Sleep without losing a wake-up: enable kicks, then look once more.
            if enableKicksAndCheck() {
                setKicks(enabled: false)
                continue
            }
            bump(.sleeps)
            let beforeSleep = vs_rdtsc()
            bump(.awakeCycles, beforeSleep &- loopStart)
            let timeout: Int32 = hot.pointee.kicklessQueues > 0 ? 1 : -1
            let n = vs_epoll_wait(epollFd, &tokens, &events, 64, timeout)
            for k in 0..<Int(max(n, 0)) {
                if tokens[k] == Self.commandToken {
                    _ = vs_eventfd_drain(commandFd)
                } else if tokens[k] == Self.localToken {
                    // Level-triggered: the next pass reads the ready descriptors.
                } else {
                    _ = vs_eventfd_drain(Int32(truncatingIfNeeded: tokens[k] & 0xffff_ffff))
                }
            }
            setKicks(enabled: false)
            hot.pointee.now = UInt32(truncatingIfNeeded: vs_coarse_seconds())
            loopStart = vs_rdtsc()
        }
        runTasks()
    }

    /// Enables kicks on every polled TX queue; true if work arrived meanwhile.
    private func enableKicksAndCheck() -> Bool {
        var work = false
        for i in 0..<hot.pointee.pollCount {
            let p = ports + Int(pollList[i])
            p.pointee.forEachRunningTx { q in
                q.pointee.enableKicks()
                if (q.pointee.availableCount() ?? 0) > 0 { work = true }
            }
            p.pointee.forEachRunningPackedTx { q in
                q.pointee.enableKicks()
                if (q.pointee.availableCount() ?? 0) > 0 { work = true }
            }
            if p.pointee.dirtyLog != nil { logTxRings(port: Int(pollList[i])) }   // the event fields just written
        }
        if hot.pointee.peerCount > 0 && armPeersAndCheck() { work = true }
        return work
    }

    private func setKicks(enabled: Bool) {
        if !enabled && hot.pointee.peerCount > 0 { disarmPeers() }
        for i in 0..<hot.pointee.pollCount {
            (ports + Int(pollList[i])).pointee.forEachRunningTx { q in
                if enabled { q.pointee.enableKicks() } else { q.pointee.disableKicks() }
            }
            (ports + Int(pollList[i])).pointee.forEachRunningPackedTx { q in
                if enabled { q.pointee.enableKicks() } else { q.pointee.disableKicks() }
            }
            // The suppression fields just written are guest memory too (once per wake-up).
            if ports[Int(pollList[i])].dirtyLog != nil { logTxRings(port: Int(pollList[i])) }
        }
    }
}

/// See `ForwardingEngine.hot`.
struct HotState {
    var pollCount = 0
    var dirtyCount = 0
    /// Mirrors that already have a copy of the current frame (Mirrors.swift).
    var mirrored: UInt32 = 0
    /// Coarse monotonic seconds for MAC aging, refreshed after every sleep.
    var now: UInt32 = 0
    /// Running TX queues without a kick fd (the frontend polls): we must not sleep.
    var kicklessQueues = 0
    /// Non-vhost ports (TAP, VXLAN, peer) registered in `localEpollFd`.
    var localCount = 0
    /// Peer ports, and those with frames not yet published (PeerPortDatapath.swift).
    var peerCount = 0
    var dirtyPeerCount = 0
    var batchSize = 32
    /// Capture taps with records not yet published to their writers.
    var unpublishedCaptures: UInt32 = 0
    /// The wall-clock time (ns) this batch's capture records carry: read at the batch's
    /// first captured frame, 0 again once the batch is published (one clock read per batch).
    var captureTimestamp: UInt64 = 0
    /// The current frame's offload fields (virtio-net header bytes 0-7, 0 = none) and
    /// csum_offset; whether it was copied to `offloadBuffer`.
    var offloadHeader: UInt64 = 0
    var offloadCsumOffset: UInt16 = 0
    var linearized = false
    /// Header fields written into the destination's buffers (0 except when a destination
    /// takes the source's offload metadata as it is).
    var passHeader: UInt64 = 0
    var passCsumOffset: UInt16 = 0
    var spinNanoseconds: UInt64 = 50_000
}

/// What the forwarding loop counts, in `loopCounters` order: passes over the polled queues,
/// passes that found nothing, sleeps in epoll, frames taken from guests, TSC cycles in
/// passes that forwarded something, TSC cycles awake.
public enum LoopCounter: Int, CaseIterable {
    case polls, emptyPolls, sleeps, frames, busyCycles, awakeCycles
}

extension ForwardingEngine {
    /// Loop counters (read racily from another thread: relaxed, monotonic, good enough).
    /// `busyCycles`: TSC cycles spent in passes that forwarded something; `awakeCycles`:
    /// TSC cycles the thread was awake (not sleeping in epoll). busy/awake is the load.
    public func loopStatistics() -> (polls: UInt64, emptyPolls: UInt64, sleeps: UInt64, frames: UInt64,
                                     busyCycles: UInt64, awakeCycles: UInt64) {
        func load(_ c: LoopCounter) -> UInt64 { vs_counter_load(loopCounters + c.rawValue) }
        return (load(.polls), load(.emptyPolls), load(.sleeps), load(.frames), load(.busyCycles), load(.awakeCycles))
    }

    /// The forwarding thread's own counters (relaxed stores by it alone).
    @inline(__always)
    func bump(_ c: LoopCounter, _ n: UInt64 = 1) { vs_counter_add(loopCounters + c.rawValue, n) }

    /// CPU time (user + system) of the forwarding thread, from /proc.
    public func threadCPUSeconds() -> Double {
        let tid = sync { _ in vs_gettid() }
        guard let stat = try? String(contentsOfFile: "/proc/self/task/\(tid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command name: state is field 3, utime 14, stime 15 (proc(5)).
        guard fields.count > 13, let u = Double(String(fields[11])), let s = Double(String(fields[12])) else { return 0 }
        return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}
