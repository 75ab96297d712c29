// `vswitch-microbench --engines N`: N forwarding engines on N threads at once, each with its
// own bridge and simulated guest pair, as `vswitchd --forwarding-cpus` runs N bridges on N
// threads. Each thread drives its guests and its engine in a closed loop (the guests' work
// is inside the loop, so the rate is not the engine's alone); the aggregate rate over the
// slowest thread's wall time, against `--engines 1` measured the same way, is the scaling.
// On a shared machine the threads may not get a CPU each: each thread's CPU time (its
// thread clock) is reported too, and the rate per CPU-second shows whether the threads slow
// each other down (shared cache lines, locks) apart from waiting for a CPU.
import CShims
import Foundation
import GuestSimulator
import Logging
import Datapath
import Virtio

/// CPU time of the calling thread, ns.
func threadCPUNs() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

/// One engine with a bridge, guest A sending `frameSize` frames to guest B's learned MAC.
final class EngineLane {
    let engine = ForwardingEngine(logger: Logger(label: "bench"))
    let a = SimulatedGuest(queueSize: 256, bufferSize: 2048)
    let b = SimulatedGuest(queueSize: 256, bufferSize: 2048)
    let toB: [UInt8]
    let batch: Int

    init(frameSize: Int, batch: Int) {
        self.batch = batch
        engine.batchSize = batch
        let bridge = engine.addBridge(agingSeconds: 300)!
        for g in [a, b] {
            let port = engine.addPort(bridge: bridge)!
            let memory = try! g.makeMemory()
            for q in 0..<2 { engine.startQueue(port: port, g.vringConfiguration(queue: q, memory: memory)) }
        }
        toB = TestFrame.make(dst: TestFrame.mac(2), src: TestFrame.mac(1), payload: frameSize - 14)
        let toA = TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(2), payload: frameSize - 14)
        b.postReceiveBuffers(64); a.postReceiveBuffers(64)
        a.transmit(toB); b.transmit(toA)
        engine.pollOnce()
        _ = a.reclaimUsed(queue: 0); _ = a.reclaimUsed(queue: 1); _ = b.reclaimUsed(queue: 0); _ = b.reclaimUsed(queue: 1)
        b.postReceiveBuffers(190)
    }

    /// Forwards `n` frames; returns the nanoseconds spent inside the engine.
    func run(_ n: Int) -> UInt64 {
        var engineNs: UInt64 = 0
        var sent = 0
        while sent < n {
            let burst = min(batch, n - sent)
            for _ in 0..<burst { a.transmit(toB) }
            let t0 = vs_monotonic_ns()
            let forwarded = engine.pollOnce()
            engineNs &+= vs_monotonic_ns() - t0
            precondition(forwarded == burst, "forwarded \(forwarded) of \(burst)")
            _ = a.reclaimUsed(queue: 1)
            b.postReceiveBuffers(b.reclaimUsed(queue: 0))
            sent += burst
        }
        return engineNs
    }
}

/// Runs `rounds` rounds of `frames` frames on each of `count` threads (thread i pinned to
/// CPU i when `pin`), all starting together; prints each round and the median aggregate.
func runEngines(count: Int, frames: Int, rounds: Int, frameSize: Int, batch: Int, pin: Bool) {
    final class Shared: @unchecked Sendable {
        let lock = NSCondition()
        var ready = 0
        var round = 0
        var results: [[(wallNs: UInt64, engineNs: UInt64, cpuNs: UInt64)]]
        init(_ count: Int) { results = Array(repeating: [], count: count) }
    }
    let shared = Shared(count)
    let done = DispatchGroup()
    for i in 0..<count {
        done.enter()
        let t = Thread {
            if pin { _ = vs_pin_to_cpu(Int32(i)) }
            let lane = EngineLane(frameSize: frameSize, batch: batch)   // its memory first touched here
            _ = lane.run(min(frames, 100_000))   // warm-up
            for r in 0...rounds {
                // Every thread starts each round together (round 0 only gathers them).
                shared.lock.lock()
                shared.ready += 1
                if shared.ready == count { shared.ready = 0; shared.round += 1; shared.lock.broadcast() }
                while shared.round <= r { shared.lock.wait() }
                shared.lock.unlock()
                guard r < rounds else { break }
                let t0 = vs_monotonic_ns(), c0 = threadCPUNs()
                let engineNs = lane.run(frames)
                let wall = vs_monotonic_ns() - t0, cpu = threadCPUNs() - c0
                shared.lock.lock()
                shared.results[i].append((wall, engineNs, cpu))
                shared.lock.unlock()
            }
            done.leave()
        }
        t.stackSize = 1 << 20
        t.start()
    }
    done.wait()
    var aggregates: [Double] = [], perCPU: [Double] = []
    for r in 0..<rounds {
        let results = (0..<count).map { shared.results[$0][r] }
        let slowest = results.map(\.wallNs).max()!
        let mpps = Double(frames * count) / Double(slowest) * 1000
        aggregates.append(mpps)
        // Frames per CPU-second of the threads: what the aggregate would be with a CPU each.
        let cpuMpps = Double(frames * count) / Double(results.map(\.cpuNs).reduce(0, +)) * 1000
        perCPU.append(cpuMpps)
        let each = results.map { x in
            String(format: "%.2f Mpps (engine %.1f ns/frame, %.0f%% of a CPU)", Double(frames) / Double(x.wallNs) * 1000,
                   Double(x.engineNs) / Double(frames), 100 * Double(x.cpuNs) / Double(x.wallNs))
        }
        print(String(format: "round %d: aggregate %.2f Mpps, %.2f Mpps per thread-CPU-second; ", r + 1, mpps, cpuMpps)
              + each.joined(separator: ", "))
    }
    let median = aggregates.sorted()[aggregates.count / 2]
    let medianPerCPU = perCPU.sorted()[perCPU.count / 2]
    print(String(format: "median aggregate: %.2f Mpps (%.2f Mpps per thread-CPU-second), %d engine thread%@%@, frame size %d, batch %d, split rings, guests in the loop",
                 median, medianPerCPU, count, count == 1 ? "" : "s", pin ? " (thread i pinned to CPU i)" : "", frameSize, batch))
}

/// `--cross`: one bridge in two halves on two engines (PeerLink): guest A on engine 0 sends
/// to guest B on engine 1, every frame crossing the link. Both engines are polled in turn on
/// this thread, so under callgrind the count covers both halves and nothing spins: the
/// instructions per frame against the one-engine run are the cost of the crossing.
final class CrossLanes {
    let e0 = ForwardingEngine(logger: Logger(label: "bench0"))
    let e1 = ForwardingEngine(logger: Logger(label: "bench1"))
    let a = SimulatedGuest(queueSize: 256, bufferSize: 2048)
    let b = SimulatedGuest(queueSize: 256, bufferSize: 2048)
    let link = PeerLink()
    let toB: [UInt8]
    let batch: Int

    init(frameSize: Int, batch: Int) {
        self.batch = batch
        for (e, g, end) in [(e0, a, link.ends.0), (e1, b, link.ends.1)] {
            e.batchSize = batch
            let bridge = e.addBridge(agingSeconds: 300)!
            let port = e.addPort(bridge: bridge)!
            let memory = try! g.makeMemory()
            for q in 0..<2 { e.startQueue(port: port, g.vringConfiguration(queue: q, memory: memory)) }
            _ = e.addPeerPort(bridge: bridge, end: end)!
        }
        toB = TestFrame.make(dst: TestFrame.mac(2), src: TestFrame.mac(1), payload: frameSize - 14)
        let toA = TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(2), payload: frameSize - 14)
        b.postReceiveBuffers(64); a.postReceiveBuffers(64)
        a.transmit(toB); b.transmit(toA)   // each half learns both MACs
        for _ in 0..<2 { e0.pollOnce(); e1.pollOnce() }
        _ = a.reclaimUsed(queue: 0); _ = a.reclaimUsed(queue: 1); _ = b.reclaimUsed(queue: 0); _ = b.reclaimUsed(queue: 1)
        b.postReceiveBuffers(190)
    }

    /// Forwards `n` frames A -> B; returns the nanoseconds spent inside both engines.
    func run(_ n: Int) -> UInt64 {
        var engineNs: UInt64 = 0
        var sent = 0
        while sent < n {
            let burst = min(batch, n - sent)
            for _ in 0..<burst { a.transmit(toB) }
            let t0 = vs_monotonic_ns()
            let taken = e0.pollOnce()
            let forwarded = e1.pollOnce()
            engineNs &+= vs_monotonic_ns() - t0
            precondition(taken == burst && forwarded == burst, "forwarded \(taken), \(forwarded) of \(burst)")
            _ = a.reclaimUsed(queue: 1)
            b.postReceiveBuffers(b.reclaimUsed(queue: 0))
            sent += burst
        }
        return engineNs
    }
}

func runCross(frames: Int, rounds: Int, frameSize: Int, batch: Int) {
    let lanes = CrossLanes(frameSize: frameSize, batch: batch)
    _ = lanes.run(min(frames, 100_000))   // warm-up
    var perFrame: [Double] = []
    for r in 0..<rounds {
        perFrame.append(Double(lanes.run(frames)) / Double(frames))
        print(String(format: "round %d: %.1f ns/frame in both engines", r + 1, perFrame.last!))
    }
    let c = lanes.e1.counters(port: 0)
    print(String(format: "median: %.1f ns/frame (both halves), frame size %d, batch %d, across a peer link; delivered to B: %llu, dropped: %llu",
                 perFrame.sorted()[perFrame.count / 2], frameSize, batch, c.txPackets, c.txDropNoBuffers))
}

/// `--cross --engines 2 [--pin]`: the same two halves on two threads, as a bridge across
/// threads runs: thread 0 drives guest A and engine 0, thread 1 engine 1 and guest B. The
/// rate is the frames B received over the round's wall time (frames the full ring dropped
/// are counted apart); compare with `--engines 1`, both halves' work on one thread.
func runCrossThreads(frames: Int, rounds: Int, frameSize: Int, batch: Int, pin: Bool) {
    final class State: @unchecked Sendable {
        let lanes: CrossLanes
        let sent = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)   // 1: thread 0 sent all
        init(_ l: CrossLanes) { lanes = l; sent.initialize(to: 0) }
    }
    let s = State(CrossLanes(frameSize: frameSize, batch: batch))
    let lanes = s.lanes
    _ = lanes.run(min(frames, 100_000))   // warm-up on this thread
    let peer0 = 1   // engine 0's peer port slot (after A's)
    var rates: [Double] = []
    for r in 0..<rounds {
        s.sent.pointee = 0
        let before = lanes.e1.counters(port: 0).txPackets, dropsBefore = lanes.e0.counters(port: peer0).txDropNoBuffers
        let done = DispatchGroup()
        let t0 = vs_monotonic_ns()
        done.enter()
        let producer = Thread {
            if pin { _ = vs_pin_to_cpu(0) }
            var sent = 0
            while sent < frames {
                let burst = min(lanes.batch, frames - sent)
                for _ in 0..<burst { lanes.a.transmit(lanes.toB) }
                lanes.e0.pollOnce()
                _ = lanes.a.reclaimUsed(queue: 1)
                sent += burst
            }
            vs_store_release_u64(s.sent, 1)
            done.leave()
        }
        done.enter()
        let consumer = Thread {
            if pin { _ = vs_pin_to_cpu(1) }
            while true {
                let finished = vs_load_acquire_u64(s.sent) == 1
                let n = lanes.e1.pollOnce()
                if n > 0 { lanes.b.postReceiveBuffers(lanes.b.reclaimUsed(queue: 0)) }
                if finished && n == 0 { break }
            }
            done.leave()
        }
        producer.start(); consumer.start()
        done.wait()
        let wall = vs_monotonic_ns() - t0
        let got = lanes.e1.counters(port: 0).txPackets - before
        let dropped = lanes.e0.counters(port: peer0).txDropNoBuffers - dropsBefore
        rates.append(Double(got) / Double(wall) * 1000)
        print(String(format: "round %d: %.2f Mpps delivered across two threads, %llu dropped (ring full)", r + 1, rates.last!, dropped))
    }
    print(String(format: "median: %.2f Mpps delivered, frame size %d, batch %d, one bridge in two halves on two threads%@, guests in the loop",
                 rates.sorted()[rates.count / 2], frameSize, batch, pin ? " (pinned to CPUs 0 and 1)" : ""))
}
