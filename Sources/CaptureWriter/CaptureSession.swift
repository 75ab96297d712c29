import Datapath
import SwitchModel
import CPcap
import CShims
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One capture: a tap in the engine, its ring, and the writer that drains the ring through
/// the BPF filter into a sink (a pcap file for a pcap port, the control connection for
/// `vswitch capture`). The writer runs on its own thread (pcap ports) or on the caller's
/// (live capture: the control connection's thread).
public final class CaptureSession: @unchecked Sendable {
    /// Why a writer stopped.
    public enum End: UInt64, Sendable {
        case stopped = 1        // del-port, daemon shutdown
        case limit              // -c N frames written
        case peerGone           // the live-capture client went away
        case closed             // the watched bridge or port was removed
        case writeFailed        // disk full, stream error
    }

    let engine: ForwardingEngine
    let buffer: CaptureBuffer
    public let format: PcapFormat
    let sink: CaptureSink
    /// Stop after this many frames passed the filter (live capture `-c`).
    let limit: Int?
    /// written, bytesWritten, filteredOut, stopRequested, end (`End` raw value, 0 = running),
    /// pinFailed
    private let words = UnsafeMutablePointer<UInt64>.allocate(capacity: 6)
    private let lock = NSLock()
    private var tap = -1
    private var done: DispatchSemaphore?

    init(engine: ForwardingEngine, format: PcapFormat, sink: CaptureSink, limit: Int? = nil,
         capacity: Int = CaptureBuffer.defaultCapacity) {
        self.engine = engine
        self.format = format
        self.sink = sink
        self.limit = limit
        buffer = CaptureBuffer(capacity: capacity)
        words.initialize(repeating: 0, count: 6)
        sink.bind(buffer.ring)
    }

    /// Capture ring sizes `--buffer-size` accepts: one largest record must fit; beyond a
    /// GiB a capture only delays its drops.
    public static let bufferSizes = (128 << 10)...(1 << 30)

    /// A pcap port's session: frames go to `sink`'s file, through a `capacity`-byte ring.
    public convenience init(engine: ForwardingEngine, format: PcapFormat, file sink: PcapFileSink,
                            capacity: Int = CaptureBuffer.defaultCapacity) {
        self.init(engine: engine, format: format, sink: sink, capacity: capacity)
    }

    /// A pcapng port's session, or a live pcapng capture's (`limit` frames at most).
    public convenience init(engine: ForwardingEngine, format: PcapFormat, pcapng sink: PcapngSink, limit: Int? = nil,
                            capacity: Int = CaptureBuffer.defaultCapacity) {
        self.init(engine: engine, format: format, sink: sink, limit: limit, capacity: capacity)
    }

    /// A live capture's session: frames go to the control connection, `limit` of them at most.
    public convenience init(engine: ForwardingEngine, format: PcapFormat, stream sink: PcapStreamSink, limit: Int?,
                            capacity: Int = CaptureBuffer.defaultCapacity) {
        self.init(engine: engine, format: format, sink: sink, limit: limit, capacity: capacity)
    }

    /// The ring's size in bytes (the requested size rounded up to a power of two).
    public var bufferBytes: Int { buffer.ring.capacity }

    deinit {
        detach()
        words.deallocate()
    }

    // MARK: statistics (any thread)

    public var framesWritten: UInt64 { vs_counter_load(words) }
    public var bytesWritten: UInt64 { vs_counter_load(words + 1) }
    public var framesFilteredOut: UInt64 { vs_counter_load(words + 2) }
    /// Frames the writer could not take in time (the ring was full): lost to the capture only.
    public var framesDropped: UInt64 { buffer.ring.dropped }
    /// The writer thread could not be pinned to the CPU asked for.
    public var pinFailed: Bool { vs_counter_load(words + 5) != 0 }
    public var end: End? {
        End(rawValue: vs_counter_load(words + 4))
    }

    // MARK: engine

    /// Installs the tap: from now on the forwarding thread copies frames into the ring.
    public func attach(bridge: Int, port: Int?, rx: Bool, tx: Bool) -> Bool {
        let ring = buffer.ring
        let snaplen = format.snaplen
        let t = engine.sync { $0.addCaptureTap(ring: ring, snaplen: snaplen, bridge: bridge, port: port, rx: rx, tx: tx) }
        lock.withLock { tap = t ?? -1 }
        return t != nil
    }

    /// Removes the tap (idempotent). After it returns the forwarding thread no longer
    /// touches the ring.
    public func detach() {
        let t: Int = lock.withLock {
            defer { tap = -1 }
            return tap
        }
        if t >= 0 { engine.sync { $0.removeCaptureTap(t) } }
    }

    // MARK: writer

    /// Runs the writer on a new thread (pcap ports), pinned to `cpu` if given (a failed
    /// pin is reported by `pinFailed`; the writer then runs unpinned).
    public func startThread(cpu: Int? = nil) {
        let sem = DispatchSemaphore(value: 0)
        lock.withLock { done = sem }
        let t = Thread { [self] in
            vs_set_thread_name("vswitch-pcap")
            if let cpu, vs_pin_to_cpu(Int32(cpu)) != 0 { vs_store_relaxed_u64(words + 5, 1) }
            _ = runWriter()
            sem.signal()
        }
        t.name = "vswitch-pcap"
        t.start()
    }

    /// Stops the capture: no new frames, the writer writes what the ring holds, closes its
    /// sink and ends; returns when it has. The file is then complete.
    public func finish() {
        detach()
        vs_store_relaxed_u64(words + 3, 1)
        _ = vs_eventfd_signal(buffer.ring.wakeFd)
        let sem: DispatchSemaphore? = lock.withLock {
            defer { done = nil }
            return done
        }
        sem?.wait()
    }

    /// Drains the ring into the sink until stopped, the limit is reached, the watched
    /// bridge/port goes, the sink fails, or (`peer` >= 0) the peer socket hangs up.
    /// Closes the sink before returning.
    @discardableResult
    public func runWriter(peer: Int32 = -1) -> End {
        let end = drainLoop(peer: peer)
        _ = sink.flush()
        sink.close()
        vs_store_relaxed_u64(words + 4, end.rawValue)
        return end
    }

    /// Naps of an empty ring's writer before it sleeps until woken, and their length: while
    /// frames flow the ring never waits longer than a nap (at 15 Mpps, 50 us of 64 B
    /// records is 60 KB of a 4 MiB ring).
    static let napsBeforeSleep = 20, napMicroseconds: UInt32 = 50

    private func drainLoop(peer: Int32) -> End {
        let ring = buffer.ring
        guard sink.flush() else { return .writeFailed }    // the file header, now
        var time = PcapFormat.SplitTime()
        var naps = Self.napsBeforeSleep   // naps only after frames: idle, back to sleep at once
        while true {
            // Counted per drained batch, not per frame (the counters are atomics others read).
            var n = 0, written: UInt64 = 0, bytes: UInt64 = 0, refused: UInt64 = 0
            defer {
                vs_counter_add(words, written)
                vs_counter_add(words + 1, bytes)
                vs_counter_add(words + 2, refused)
            }
            let room = limit.map { UInt64($0) &- framesWritten } ?? UInt64.max
            // Records are released to the producer only once the sink has flushed them:
            // a pcap file writes large records straight from the ring.
            var position = ring.readPosition
            let published = ring.publishedPosition
            while n < 4096, position != published {
                let r = ring.record(at: position)
                var header = PcapFormat.header(r, &time)
                if format.matches(&header, r.bytes) {
                    guard sink.write(r, &header) else { return .writeFailed }
                    written &+= 1
                    bytes &+= UInt64(r.bytes.count)
                } else {
                    sink.filteredOut(r)
                    refused &+= 1
                }
                position &+= UInt64(r.size)
                n += 1
                if written >= room { break }
            }
            if n > 0 {
                naps = 0
                guard sink.flush() else { return .writeFailed }
                ring.release(upTo: position)
                if written >= room { return .limit }
                continue
            }
            if vs_counter_load(words + 3) != 0 { return .stopped }
            if ring.isClosed { return .closed }
            // Linger before sleeping: nap a few times without telling the producer, so
            // while frames flow the forwarding thread never pays for a wake-up (an eventfd
            // write, a system call per batch when the writer keeps up and sleeps after every
            // batch: +20-30 ns per 64 B frame measured). Idle, it sleeps 1 ms after the last frame.
            if naps < Self.napsBeforeSleep {
                naps += 1
                usleep(Self.napMicroseconds)
                continue
            }
            // Sleep: announce it, look once more (the producer may have published meanwhile).
            ring.setSleeping(true)
            if !ring.isEmpty {
                ring.setSleeping(false)
                continue
            }
            let woke = vs_capture_wait(ring.wakeFd, peer, 100)
            ring.setSleeping(false)
            if woke == 2 { return .peerGone }
        }
    }
}
