// In-process forwarding microbenchmark: two simulated guests in memfd memory, one bridge,
// no sockets and no QEMU. Guest A transmits 64-byte frames to guest B's learned MAC; the
// engine forwards them with the real ring and copy code. Reports ns per frame (median of
// rounds) and heap allocations per frame during forwarding.
//
//   vswitch-microbench [--frames N] [--rounds R] [--size BYTES] [--batch B] [--capture | --capture-inline | --capture-file PATH] [--capture-buffer BYTES] [--pace-mpps R] [--packed] [--dirty-log] [--queues 2] [--engines N [--pin]] [--cross]
// --capture adds a bridge-wide capture tap (4 MiB ring) drained by a second thread, as a pcap
// port's writer would (without the file): the hot-path cost of an active capture.
// --capture-inline: like --capture, but the ring is drained between engine passes on the
// main thread (outside the timed pollOnce), so no record is ever dropped: repeatable
// instruction counts under callgrind, which serialises threads.
// --capture-file PATH: instead, a real pcap capture session (the pcap port's writer thread,
// libpcap, the file at PATH) on the whole bridge: reports frames written and dropped, and the
// writer's rate when the engine offers more than it can write.
// --capture-buffer BYTES: the capture ring's size (a pcap port's --buffer-size).
// --pace-mpps R: offer at most R million frames per second (a spin between bursts, outside
// the timed engine pass): with --capture-file, the rate up to which the writer drops nothing.
// --capture-file PATH --pin: the engine on CPU 1, the writer on CPU 0.
// --packed: both guests use packed virtqueues (VIRTIO_F_RING_PACKED) instead of split ones.
// --dirty-log: both guests log their writes as during a live migration (a dirty log each, used
// rings logged at their own addresses): the cost of logging.
// --queues 2: both ports have two queue pairs (each pair a simulated guest of its own, as in
// the engine's multiqueue tests); A sends two flows, one per TX queue, that hash to B's two
// RX queues; each pass carries the same frames as with one queue (half per queue): the cost
// per frame of a second queue pair at the same offered load.
// --tunnel-tso: a bulk TCP stream of TSO segments through a VXLAN tunnel between two engines
// over loopback UDP (TunnelTso.swift): UDP GSO/GRO against the software cut (--no-gso, --no-gro); --rx-tso: B merges the frames for a guest with TSO.
// --engines N: N engines on N threads at once, each with its own guest pair (Engines.swift);
// --pin pins thread i to CPU i. Reports the aggregate rate; compare with --engines 1.
// --cross: A and B on two engines, one bridge in halves linked by a PeerLink, both polled
// in turn on one thread: the cost of a frame crossing threads (callgrind: microbench.sh --cross).
// --cross --engines 2 [--pin]: the two halves on two threads (A's on one, B's on the other).
// Instructions per frame: Benchmarks/microbench.sh runs this under callgrind.
import CShims
import Foundation
import GuestSimulator
import Logging
import MallocCounter
import CaptureWriter
import Datapath
import Virtio

var frames = 2_000_000
var rounds = 5
var frameSize = 64
var batch = 32
var capture = false
var captureFile: String? = nil
var captureInline = false
/// --capture-buffer BYTES: the capture ring's size (as a pcap port's --buffer-size).
var captureCapacity = CaptureBuffer.defaultCapacity
/// --pace-mpps R: offer at most R million frames per second (the harness waits between
/// bursts), to find the rate a capture writer keeps up with.
var paceMpps = 0.0
var packed = false
var dirtyLog = false
var queuePairs = 1
var tunnelTso = false, tsoRounds = 5000, tsoBurst = 2, tsoSegment = 44 * 1448, tsoMss = 1448, tsoGso = true, tsoGro = true, tsoRxTso = false
var engineThreads: Int? = nil
var pin = false
var cross = false
var args = CommandLine.arguments.dropFirst().makeIterator()
while let a = args.next() {
    switch a {
    case "--frames": frames = Int(args.next() ?? "") ?? frames
    case "--rounds": rounds = Int(args.next() ?? "") ?? rounds
    case "--size": frameSize = Int(args.next() ?? "") ?? frameSize
    case "--batch": batch = Int(args.next() ?? "") ?? batch
    case "--capture": capture = true
    case "--capture-inline": capture = true; captureInline = true
    case "--capture-file": captureFile = args.next()
    case "--capture-buffer": captureCapacity = Int(args.next() ?? "") ?? captureCapacity
    case "--pace-mpps": paceMpps = Double(args.next() ?? "") ?? 0
    case "--packed": packed = true
    case "--dirty-log": dirtyLog = true
    case "--queues": queuePairs = Int(args.next() ?? "") ?? 0
    case "--tunnel-tso": tunnelTso = true
    case "--tso-rounds": tsoRounds = Int(args.next() ?? "") ?? tsoRounds
    case "--tso-burst": tsoBurst = Int(args.next() ?? "") ?? tsoBurst
    case "--segment": tsoSegment = Int(args.next() ?? "") ?? tsoSegment
    case "--mss": tsoMss = Int(args.next() ?? "") ?? tsoMss
    case "--no-gso": tsoGso = false
    case "--no-gro": tsoGro = false
    case "--rx-tso": tsoRxTso = true
    case "--engines": engineThreads = Int(args.next() ?? "") ?? 0
    case "--pin": pin = true
    case "--cross": cross = true
    default:
        FileHandle.standardError.write("usage: vswitch-microbench [--frames N] [--rounds R] [--size BYTES] [--batch B] [--capture | --capture-inline | --capture-file PATH] [--capture-buffer BYTES] [--pace-mpps R] [--packed] [--dirty-log] [--queues 2] [--engines N [--pin]] [--cross]\n       vswitch-microbench --tunnel-tso [--tso-rounds R] [--tso-burst S] [--segment BYTES] [--mss N] [--no-gso] [--no-gro] [--rx-tso]\n".data(using: .utf8)!)
        exit(2)
    }
}

if tunnelTso {
    runTunnelTso(rounds: tsoRounds, segments: tsoBurst, segmentBytes: tsoSegment, mss: tsoMss, gso: tsoGso, gro: tsoGro, rxTso: tsoRxTso)
    exit(0)
}
if cross {
    if engineThreads == 2 {
        runCrossThreads(frames: frames, rounds: rounds, frameSize: frameSize, batch: batch, pin: pin)
    } else {
        runCross(frames: frames, rounds: rounds, frameSize: frameSize, batch: batch)
    }
    exit(0)
}
if let engineThreads {
    guard (1...64).contains(engineThreads), !packed, !dirtyLog, queuePairs == 1, !capture, captureFile == nil else {
        FileHandle.standardError.write("--engines takes 1-64 (split rings, one queue pair, no capture or --dirty-log)\n".data(using: .utf8)!)
        exit(2)
    }
    runEngines(count: engineThreads, frames: frames, rounds: rounds, frameSize: frameSize, batch: batch, pin: pin)
    exit(0)
}
guard queuePairs == 1 || (queuePairs == 2 && !packed && !dirtyLog) else {
    FileHandle.standardError.write("--queues takes 1 or 2 (split rings, no --dirty-log)\n".data(using: .utf8)!)
    exit(2)
}
let engine = ForwardingEngine(logger: Logger(label: "bench"))
engine.batchSize = batch
let bridge = engine.addBridge(agingSeconds: 300)!
let features = SimulatedGuest.defaultFeatures | (packed ? VirtioFeature.ringPacked : 0)
let a = SimulatedGuest(queueSize: 256, bufferSize: 2048, features: features)
let b = SimulatedGuest(queueSize: 256, bufferSize: 2048, features: features)
// The second queue pair of each port (--queues 2): queues 2 and 3, in guests of their own.
let a2 = SimulatedGuest(queueSize: 256, bufferSize: 2048, features: features)
let b2 = SimulatedGuest(queueSize: 256, bufferSize: 2048, features: features)
var logs: [DirtyLog] = []
for (g, second) in [(a, a2), (b, b2)] {
    let port = engine.addPort(bridge: bridge)!
    let memory = try! g.makeMemory()
    for q in 0..<2 {
        var c = g.vringConfiguration(queue: q, memory: memory)
        if dirtyLog { c.usedLogAddress = g.rings[q].used }
        engine.startQueue(port: port, c)
    }
    if queuePairs == 2 {
        let memory2 = try! second.makeMemory()
        for q in 0..<2 {
            var c = second.vringConfiguration(queue: q, memory: memory2)
            c.index = 2 + q
            engine.startQueue(port: port, c)
        }
    }
    if dirtyLog {
        let bytes = (SimulatedGuest.guestBase + UInt64(g.size)) >> 15
        let fd = vs_memfd_create("dirty-log")
        precondition(ftruncate(fd, off_t(bytes)) == 0)
        let log = try! DirtyLog(fd: fd, size: bytes, offset: 0)
        logs.append(log)
        engine.setDirtyLog(port: port, log)
    }
}
let captureBuffer = CaptureBuffer(capacity: captureCapacity)
let drained = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
drained.initialize(to: 0)
if capture {
    _ = engine.addCaptureTap(ring: captureBuffer.ring, snaplen: 262_144, bridge: bridge)
    let t = Thread {
        let ring = captureBuffer.ring
        while true {
            if let r = ring.peek() { ring.consume(r); vs_counter_add(drained, 1) } else { usleep(50) }
        }
    }
    if !captureInline { t.start() }
}
var session: CaptureSession? = nil
if let captureFile {
    let format = try! PcapFormat(snaplen: 262_144, filter: nil)
    let sink = try! PcapFileSink(format: format, path: captureFile, rotateBytes: 100 << 20, rotateCount: 2)
    let s = CaptureSession(engine: engine, format: format, file: sink, capacity: captureCapacity)
    precondition(s.attach(bridge: bridge, port: nil, rx: true, tx: false))
    // --pin: the engine (and the simulated guests) on CPU 1, the writer on CPU 0, as a pcap
    // port with --capture-cpu 0 next to vswitchd --forwarding-cpu 1; unpinned, the two
    // sometimes share a CPU and a round takes twice as long.
    if pin { _ = vs_pin_to_cpu(1) }
    s.startThread(cpu: pin ? 0 : nil)
    session = s
}
let benchStart = vs_monotonic_ns()
let toB = TestFrame.make(dst: TestFrame.mac(2), src: TestFrame.mac(1), payload: frameSize - 14)
let toA = TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(2), payload: frameSize - 14)
// Teach the bridge both MACs.
b.postReceiveBuffers(64); a.postReceiveBuffers(64)
if queuePairs == 2 { b2.postReceiveBuffers(64); a2.postReceiveBuffers(64) }
a.transmit(toB); b.transmit(toA)
engine.pollOnce()
_ = a.reclaimUsed(queue: 0); _ = a.reclaimUsed(queue: 1); _ = b.reclaimUsed(queue: 0); _ = b.reclaimUsed(queue: 1)
/// --queues 2: `toB` goes out by A's queue 1, `toB2` by its queue 3; `toB2` is from a source
/// MAC (also behind A) whose flow B's port hashes to the other RX queue than `toB`'s, found
/// by sending one frame of each candidate.
var toB2 = toB
/// --queues 2: B's RX queue that `toB` lands on (b or b2); `toB2` lands on the other.
if queuePairs == 2 {
    _ = a2.reclaimUsed(queue: 0); _ = b2.reclaimUsed(queue: 0)
    func landsOnFirst(_ frame: [UInt8], from g: SimulatedGuest) -> Bool {
        g.transmit(frame)
        engine.pollOnce()
        _ = g.reclaimUsed(queue: 1)
        let first = b.reclaimUsed(queue: 0), second = b2.reclaimUsed(queue: 0)
        precondition(first + second == 1, "the probe frame was not delivered")
        return first == 1
    }
    let firstOnB = landsOnFirst(toB, from: a)
    var found = false
    for s in UInt8(3)...UInt8(200) where !found {
        let candidate = TestFrame.make(dst: TestFrame.mac(2), src: TestFrame.mac(s), payload: frameSize - 14)
        if landsOnFirst(candidate, from: a2) != firstOnB { toB2 = candidate; found = true }
    }
    precondition(found, "no second flow hashes to B's other RX queue")
    b2.postReceiveBuffers(190)
}
b.postReceiveBuffers(190)

/// One round: returns (ns spent inside the engine, allocations inside the engine).
func round(_ n: Int) -> (UInt64, UInt64) {
    var engineNs: UInt64 = 0
    var allocations: UInt64 = 0
    var sent = 0
    let start = vs_monotonic_ns()
    while sent < n {
        if paceMpps > 0 {
            let due = start + UInt64(Double(sent) * 1000 / paceMpps)
            while vs_monotonic_ns() < due {}
        }
        let burst = min(batch, n - sent)
        if queuePairs == 2 {
            for i in 0..<burst { if i & 1 == 0 { a.transmit(toB) } else { a2.transmit(toB2) } }
        } else {
            for _ in 0..<burst { a.transmit(toB) }
        }
        mc_start()
        let t0 = vs_monotonic_ns()
        let forwarded = engine.pollOnce()
        engineNs &+= vs_monotonic_ns() - t0
        allocations &+= mc_stop()
        precondition(forwarded == burst, "forwarded \(forwarded) of \(burst)")
        _ = a.reclaimUsed(queue: 1)
        b.postReceiveBuffers(b.reclaimUsed(queue: 0))
        if queuePairs == 2 {
            _ = a2.reclaimUsed(queue: 1)
            b2.postReceiveBuffers(b2.reclaimUsed(queue: 0))
        }
        if captureInline {
            while let r = captureBuffer.ring.peek() { captureBuffer.ring.consume(r); drained.pointee &+= 1 }
        }
        sent += burst
    }
    return (engineNs, allocations)
}

_ = round(min(frames, 100_000))   // warm-up
var perFrame: [Double] = []
var allocs: UInt64 = 0
for r in 0..<rounds {
    let (ns, al) = round(frames)
    perFrame.append(Double(ns) / Double(frames))
    allocs += al
    print(String(format: "round %d: %.1f ns/frame (%.2f Mpps in the engine), %llu allocations", r + 1,
                 perFrame.last!, 1000 / perFrame.last!, al))
}
let sorted = perFrame.sorted()
let median = sorted[sorted.count / 2]
let c = engine.counters(port: 1)
print(String(format: "median: %.1f ns/frame = %.2f Mpps, frame size %d, batch %d, %@ rings%@%@, allocations per frame %.6f",
             median, 1000 / median, frameSize, batch, packed ? "packed" : "split", dirtyLog ? ", dirty logging on" : "",
             queuePairs == 2 ? ", 2 queue pairs" : "",
             Double(allocs) / Double(frames * rounds)))
print("delivered to B: \(c.txPackets), dropped no-buffers: \(c.txDropNoBuffers)")
if let session {
    let seconds = Double(vs_monotonic_ns() - benchStart) / 1e9
    session.finish()
    let written = session.framesWritten, dropped = session.framesDropped
    print(String(format: "capture file: %llu written, %llu dropped (%.1f%%), %.2f M frames/s written over %.2f s",
                 written, dropped, 100 * Double(dropped) / Double(max(1, written + dropped)),
                 Double(written) / seconds / 1e6, seconds))
}
if capture {
    print("capture: \(captureBuffer.ring.recorded) recorded, \(captureBuffer.ring.dropped) dropped (ring full), \(vs_counter_load(drained)) drained")
}
