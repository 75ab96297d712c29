import SwitchModel
import CShims
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// A bounded single-producer single-consumer byte ring that carries captured frames from
/// the forwarding thread (producer) to a capture writer thread (consumer).
///
/// Why a byte ring: records are as long as the captured bytes, so a 4 MiB ring holds
/// thousands of small frames or a few dozen jumbo ones, without a per-frame allocation.
/// When the ring is full the frame is dropped *from the capture* and counted; the data path
/// never waits for the writer.
///
/// Record layout (16-byte aligned):
/// `u64 timestamp ns | u32 where | u32 captured length | bytes | padding`, where `where`
/// packs the original length (bits 0-19), the engine port slot the frame entered or left
/// by (bits 20-30) and the direction (bit 31: left by that port). Packing keeps the header
/// at 16 bytes: a pcapng writer can say which port and direction each frame had without
/// the ring holding fewer frames.
///
/// A record that starts near the end of the ring runs on into a slack area behind it (as
/// long as the largest record), so every record is contiguous and neither side ever
/// handles a wrap: the bytes it occupies at the start of the ring are simply left unused
/// until the positions move past them. That took the wrap test and its marker out of
/// every frame's path (the producer's instructions per frame, docs/performance.md).
///
/// Indexes are free-running byte counts: `head` written only by the producer (release),
/// `tail` only by the consumer (release); each side reads the other's with acquire, so the
/// record bytes are visible before the index that publishes them.
///
/// This struct is a view (pointers only, no reference counting) so the forwarding thread
/// can hold it in an engine slot; `CaptureBuffer` owns the memory.
public struct CaptureRing {
    @usableFromInline static let headerSize = 16
    /// The most bytes a record can capture (the largest snaplen a tap accepts).
    public static let maxCapturedBytes = 262_144
    /// The slack behind the ring: the largest record.
    static let slackBytes = headerSize + maxCapturedBytes
    /// Control block words, in 64-byte cache lines by who writes them: `head` (the
    /// producer, once per batch; the consumer polls it), `tail` (the consumer, per record),
    /// the counters, the sleep and close flags, and the producer's private line.
    /// That private line (`cachedTailWord`, `cursorWord`, `unpublishedWord`) holds what the
    /// producer writes per frame: its last look at `tail` (so a frame reads the consumer's
    /// line only when the ring looks full), its write position and its record count not yet
    /// published (the engine publishes once per batch). On `head`'s line these per-frame
    /// stores took the line away from the polling consumer every frame: 64 B frames cost
    /// the engine about 20 ns more with a writer thread than with the ring drained inline
    /// (docs/performance.md "Capture that keeps up").
    /// `portDropsWord`: one drop counter per port slot (written only when the ring is full),
    /// for a pcapng file's per-interface statistics.
    @usableFromInline static let headWord = 0, tailWord = 8, recordedWord = 16, droppedWord = 17, sleepingWord = 24, closedWord = 25,
               cachedTailWord = 32, cursorWord = 33, unpublishedWord = 34, portDropsWord = 40
    static let controlWords = portDropsWord + maxRecordPorts

    /// Port slots a record can name (11 bits); the engine has fewer.
    public static let maxRecordPorts = 2048
    @usableFromInline static let lengthMask: UInt32 = 0xF_FFFF, portShift: UInt32 = 20, outboundBit: UInt32 = 1 << 31

    /// The `where` bits of a record without its length: the port slot and the direction.
    @inline(__always)
    static func origin(port: Int, outbound: Bool) -> UInt32 {
        UInt32(truncatingIfNeeded: port) << portShift | (outbound ? outboundBit : 0)
    }

    @usableFromInline let control: UnsafeMutablePointer<UInt64>
    @usableFromInline let data: UnsafeMutableRawPointer
    /// Bytes in `data`: a power of two.
    public let capacity: Int
    /// eventfd the producer signals when the consumer sleeps.
    public let wakeFd: Int32

    // MARK: producer (forwarding thread)

    /// Appends `length` bytes of `list` from byte `offset`, cut to `snaplen`, with `origin`
    /// (`origin(port:outbound:)`). Returns false (and counts a drop) when the ring has no
    /// room. Never blocks or allocates.
    @inline(__always)
    func record(_ list: SegmentList, offset: Int, length: Int, snaplen: Int, origin: UInt32 = 0) -> Bool {
        let ok = recordUnpublished(list, offset: offset, length: length, snaplen: snaplen, origin: origin,
                                   timestamp: vs_realtime_ns())
        publish()
        return ok
    }

    /// Like `record`, but the record becomes visible to the writer only at the next
    /// `publish()` (the forwarding engine publishes after each batch), and is stamped with
    /// `timestamp` (the engine reads the clock once per batch, not per frame).
    @inline(__always)
    func recordUnpublished(_ list: SegmentList, offset: Int, length: Int, snaplen: Int, origin: UInt32,
                           timestamp: UInt64) -> Bool {
        let captured = min(length, snaplen)
        guard let p = reserve(captured: captured, length: length, origin: origin, timestamp: timestamp) else { return false }
        Self.gather(list, offset: offset, count: captured, to: p)
        return true
    }

    /// Like `recordUnpublished`, for a frame that lies in one buffer (the fast lane's).
    @inline(__always)
    func recordUnpublished(_ bytes: UnsafeRawPointer, length: Int, snaplen: Int, origin: UInt32,
                           timestamp: UInt64) -> Bool {
        let captured = min(length, snaplen)
        guard let p = reserve(captured: captured, length: length, origin: origin, timestamp: timestamp) else { return false }
        // Not copyMemory: captured >= 0 (min of a frame length and a snaplen), and
        // copyMemory's check of that cost two instructions per frame.
        FrameCopy.copyBytes(to: p, from: bytes, count: captured)
        return true
    }

    /// Writes a record header for `captured` bytes (of a frame `length` long) and returns
    /// where its bytes go, the record counted as written; nil (a drop counted) when the ring
    /// has no room.
    @inline(__always)
    private func reserve(captured: Int, length: Int, origin: UInt32, timestamp: UInt64) -> UnsafeMutableRawPointer? {
        let need = Self.headerSize &+ ((captured &+ 15) & ~15)
        let head = control[Self.cursorWord]
        // head - tail <= capacity always holds (we never publish past it), so no overflow.
        if Int(truncatingIfNeeded: head &- control[Self.cachedTailWord]) &+ need > capacity {
            let tail = vs_load_acquire_u64(control + Self.tailWord)
            control[Self.cachedTailWord] = tail
            guard Int(truncatingIfNeeded: head &- tail) &+ need <= capacity else {
                vs_counter_add(control + Self.droppedWord, 1)
                vs_counter_add(control + Self.portDropsWord + Int(origin >> Self.portShift & 0x7FF), 1)
                return nil
            }
        }
        // SAFETY: the offset is < capacity and need <= slackBytes (captured <= snaplen <= maxCapturedBytes,
        // which `addCaptureTap` checks), so the record ends inside the slack at the latest.
        let p = data + (Int(truncatingIfNeeded: head) & (capacity &- 1))
        p.storeBytes(of: timestamp, as: UInt64.self)
        p.storeBytes(of: UInt32(truncatingIfNeeded: length) & Self.lengthMask | origin, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: UInt32(truncatingIfNeeded: captured), toByteOffset: 12, as: UInt32.self)
        control[Self.cursorWord] = head &+ UInt64(truncatingIfNeeded: need)
        control[Self.unpublishedWord] &+= 1
        return p + Self.headerSize
    }

    /// Makes the records written since the last call visible to the writer (one release
    /// store) and wakes it if it sleeps. Without a full fence a wake-up can be missed in a
    /// rare race; the writer's wait has a timeout, so that costs latency, not frames.
    @inline(__always)
    func publish() {
        let cursor = control[Self.cursorWord]
        guard cursor != control[Self.headWord] else { return }
        vs_store_release_u64(control + Self.headWord, cursor)
        vs_counter_add(control + Self.recordedWord, control[Self.unpublishedWord])
        control[Self.unpublishedWord] = 0
        if vs_counter_load(control + Self.sleepingWord) != 0 {
            vs_store_relaxed_u64(control + Self.sleepingWord, 0)
            _ = vs_eventfd_signal(wakeFd)
        }
    }

    /// Copies `count` bytes of a segment list from byte `offset` to `dst`. The caller has
    /// checked the list holds offset + count bytes.
    @inline(__always)
    static func gather(_ src: SegmentList, offset: Int, count: Int, to dst: UnsafeMutableRawPointer) {
        guard count > 0 else { return }
        if offset &+ count <= src[0].length {
            dst.copyMemory(from: src[0].base + offset, byteCount: count)
            return
        }
        var si = 0, so = offset, done = 0
        while so >= src[si].length { so &-= src[si].length; si &+= 1 }
        while done < count {
            let s = src[si]
            let n = min(count &- done, s.length &- so)
            (dst + done).copyMemory(from: s.base + so, byteCount: n)
            done &+= n
            so &+= n
            if so == s.length { si &+= 1; so = 0 }
        }
    }

    // MARK: consumer (writer thread)

    /// One captured frame, valid until it is consumed (`consume`, or `release` past it).
    /// Until then its 16 header bytes in front of `bytes` are the writer's too: a pcap
    /// writer stores the file's record header there and writes header and bytes from the
    /// ring in one piece (`headerSpace`).
    public struct Record {
        public var timestampNs: UInt64
        public var originalLength: Int
        /// The engine port slot the frame entered by (`outbound` false) or left by (true).
        public var port: Int
        public var outbound: Bool
        public var bytes: UnsafeRawBufferPointer
        /// Ring bytes the record takes: the position of the next one is this much further.
        public internal(set) var size: Int

        @usableFromInline
        init(timestampNs: UInt64, originalLength: Int, port: Int, outbound: Bool, bytes: UnsafeRawBufferPointer, size: Int) {
            self.timestampNs = timestampNs
            self.originalLength = originalLength
            self.port = port
            self.outbound = outbound
            self.bytes = bytes
            self.size = size
        }

        /// The 16 bytes in front of `bytes` (the ring's record header, already read into
        /// this struct), for the writer to reuse.
        public var headerSpace: UnsafeMutableRawPointer {
            UnsafeMutableRawPointer(mutating: bytes.baseAddress.unsafelyUnwrapped) - CaptureRing.headerSize
        }
    }

    /// The consumer's position: its oldest record not yet released.
    @inlinable
    public var readPosition: UInt64 { control[Self.tailWord] }
    /// How far the producer has published (records up to here may be read).
    @inlinable
    public var publishedPosition: UInt64 { vs_load_acquire_u64(control + Self.headWord) }

    /// The record at `position`: a record boundary, readPosition <= position < publishedPosition.
    /// (Inlined into the writer, another module: called per record.)
    @inlinable
    public func record(at position: UInt64) -> Record {
        let p = data + (Int(truncatingIfNeeded: position) & (capacity &- 1))
        let n = Int(p.load(fromByteOffset: 12, as: UInt32.self))
        let whereWord = p.load(fromByteOffset: 8, as: UInt32.self)
        return Record(timestampNs: p.load(as: UInt64.self),
                      originalLength: Int(whereWord & Self.lengthMask),
                      port: Int(whereWord >> Self.portShift & 0x7FF), outbound: whereWord & Self.outboundBit != 0,
                      bytes: UnsafeRawBufferPointer(start: p + Self.headerSize, count: n),
                      size: Self.headerSize + ((n + 15) & ~15))
    }

    /// Frees every record before `position` for the producer.
    @inlinable
    public func release(upTo position: UInt64) {
        vs_store_release_u64(control + Self.tailWord, position)
    }

    /// The oldest record, or nil when the ring is empty.
    @inlinable
    public func peek() -> Record? {
        let tail = control[Self.tailWord]
        guard tail != publishedPosition else { return nil }
        return record(at: tail)
    }

    /// Frees the record returned by `peek` for the producer.
    @inlinable
    public func consume(_ r: Record) {
        release(upTo: control[Self.tailWord] &+ UInt64(r.size))
    }

    public var isEmpty: Bool { vs_load_acquire_u64(control + Self.headWord) == control[Self.tailWord] }

    /// Frames put into the ring, and frames dropped because it was full.
    public var recorded: UInt64 { vs_counter_load(control + Self.recordedWord) }
    public var dropped: UInt64 { vs_counter_load(control + Self.droppedWord) }
    /// Frames of port slot `port` dropped because the ring was full.
    public func dropped(port: Int) -> UInt64 {
        guard port >= 0, port < Self.maxRecordPorts else { return 0 }
        return vs_counter_load(control + Self.portDropsWord + port)
    }

    /// The writer announces it is about to sleep, then must look at the ring once more.
    public func setSleeping(_ on: Bool) {
        vs_store_relaxed_u64(control + Self.sleepingWord, on ? 1 : 0)
        vs_fence_seq_cst()
    }

    /// Set by the engine when what the capture watches (its bridge or port) is removed.
    public var isClosed: Bool { vs_counter_load(control + Self.closedWord) != 0 }
    func markClosed() {
        vs_store_relaxed_u64(control + Self.closedWord, 1)
        _ = vs_eventfd_signal(wakeFd)
    }
}

/// Owns a capture ring's memory and eventfd.
public final class CaptureBuffer: @unchecked Sendable {
    public static let defaultCapacity = 4 << 20
    public let ring: CaptureRing

    /// `capacity` is rounded up to a power of two (at least 128 KiB, so one largest frame,
    /// 64 KiB, always fits in an empty ring); the slack behind it is allocated too.
    public init(capacity: Int = CaptureBuffer.defaultCapacity) {
        var size = 1 << 17
        while size < capacity && size < 1 << 30 { size <<= 1 }
        // Cache-line aligned, so each group of control words has its line to itself.
        let control = UnsafeMutableRawPointer.allocate(byteCount: CaptureRing.controlWords * 8, alignment: 64)
            .bindMemory(to: UInt64.self, capacity: CaptureRing.controlWords)
        control.initialize(repeating: 0, count: CaptureRing.controlWords)
        let data = UnsafeMutableRawPointer.allocate(byteCount: size + CaptureRing.slackBytes, alignment: 64)
        let fd = vs_eventfd(0)
        precondition(fd >= 0, "eventfd: \(errno)")
        ring = CaptureRing(control: control, data: data, capacity: size, wakeFd: fd)
    }

    deinit {
        close(ring.wakeFd)
        ring.control.deallocate()
        ring.data.deallocate()
    }
}
