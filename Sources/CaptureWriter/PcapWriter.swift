import Datapath
import SwitchModel
import CPcap
import CShims
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// libpcap's side of a capture: a "dead" handle (Ethernet, snaplen, nanosecond
/// timestamps) that the dump files are opened with, and the compiled BPF filter.
/// No hand-written pcap format: the files are whatever libpcap writes.
public final class PcapFormat: @unchecked Sendable {
    public static let maxSnaplen = CaptureRing.maxCapturedBytes
    let handle: OpaquePointer
    public let snaplen: Int
    public let filter: String?
    private var program = bpf_program()
    private let filtered: Bool

    /// Compiles `filter` (tcpdump syntax); a bad expression throws libpcap's message.
    public init(snaplen: Int, filter: String?) throws(SwitchError) {
        guard (1...Self.maxSnaplen).contains(snaplen) else {
            throw .invalidOption("invalid snaplen \(snaplen): use 1-\(Self.maxSnaplen) bytes")
        }
        guard let h = pcap_open_dead_with_tstamp_precision(DLT_EN10MB, Int32(snaplen),
                                                            UInt32(PCAP_TSTAMP_PRECISION_NANO)) else {
            throw .invalidOption("libpcap: cannot create a capture handle")
        }
        // Compile before any stored property is set: a throw then never runs `deinit`.
        let expression = filter.flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0 }
        var compiled = bpf_program()
        if let expression {
            guard !expression.contains("\0"), pcap_compile(h, &compiled, expression, 1, PCAP_NETMASK_UNKNOWN) == 0 else {
                let message = String(cString: pcap_geterr(h))
                pcap_close(h)
                throw .invalidOption("invalid filter '\(expression)': \(message)")
            }
        }
        handle = h
        self.snaplen = snaplen
        self.filter = expression
        program = compiled
        filtered = expression != nil
    }

    deinit {
        if filtered { pcap_freecode(&program) }
        pcap_close(handle)
    }

    /// True if the frame passes the filter (always, without one).
    func matches(_ header: inout pcap_pkthdr, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard filtered, let base = bytes.baseAddress else { return true }
        return pcap_offline_filter(&program, &header, base.assumingMemoryBound(to: UInt8.self)) != 0
    }

    /// The pcap record header of a captured frame (nanosecond precision: `tv_usec` holds ns).
    /// `last` keeps the previous record's time, split: the engine stamps a whole batch with
    /// one time, so most records skip the two 64-bit divisions.
    static func header(_ r: CaptureRing.Record, _ last: inout SplitTime) -> pcap_pkthdr {
        if r.timestampNs != last.ns {
            last = SplitTime(ns: r.timestampNs, seconds: Int(r.timestampNs / 1_000_000_000),
                             nanoseconds: Int(r.timestampNs % 1_000_000_000))
        }
        var h = pcap_pkthdr()
        h.ts.tv_sec = last.seconds
        h.ts.tv_usec = last.nanoseconds
        h.caplen = UInt32(truncatingIfNeeded: r.bytes.count)
        h.len = UInt32(truncatingIfNeeded: r.originalLength)
        return h
    }

    /// A timestamp in nanoseconds and as seconds + nanoseconds.
    struct SplitTime {
        var ns: UInt64 = 0, seconds = 0, nanoseconds = 0
    }
}

/// Where a capture writer puts frames: a pcap or pcapng file (with rotation) or a stream.
protocol CaptureSink: AnyObject {
    /// Writes one frame that passed the filter (`header` is its pcap header); false on an
    /// I/O error (the capture then ends).
    func write(_ record: CaptureRing.Record, _ header: inout pcap_pkthdr) -> Bool
    /// A frame the filter refused (pcapng counts them per interface).
    func filteredOut(_ record: CaptureRing.Record)
    /// The ring the session drains (pcapng reads its per-port drop counters).
    func bind(_ ring: CaptureRing)
    /// Pushes buffered records out, so a reader sees them; false on an I/O error.
    func flush() -> Bool
    func close()
}

extension CaptureSink {
    func filteredOut(_ record: CaptureRing.Record) {}
    func bind(_ ring: CaptureRing) {}
}

/// A capture file of a pcap port, whatever its format: what `show` reports about rotation.
public protocol CaptureFile: AnyObject {
    var rotateBytes: Int? { get }
    var rotateCount: Int { get }
    var rotations: UInt64 { get }
    func close()
}

/// Rotation's renames, shared by both formats: FILE.1 becomes FILE.2 and so on, FILE
/// becomes FILE.1, and at most `keep` files remain once the caller creates a new FILE.
enum CaptureFiles {
    static func shift(_ path: String, keep count: Int) {
        let keep = count - 1
        if keep == 0 {
            discard(path)
            return
        }
        discard("\(path).\(keep)")
        var k = keep - 1
        while k >= 1 {
            rename("\(path).\(k)", "\(path).\(k + 1)")
            k -= 1
        }
        rename(path, "\(path).1")
    }

    /// Removes a file that rotated out, off the writer's thread: it is renamed to a hidden
    /// name at once (so the kept files are right when `shift` returns) and unlinked in the
    /// background, because unlinking frees its pages there and then: 12 ms for 100 MiB on
    /// tmpfs, longer than a 4 MiB ring holds 64 B frames at 4 Mpps (the capture dropped
    /// them, 0.5% at every rotation).
    static func discard(_ path: String) {
        let slash = path.lastIndex(of: "/").map { path.index(after: $0) } ?? path.startIndex
        let doomed = "\(path[..<slash]).\(path[slash...]).deleting-\(UInt32.random(in: 0...UInt32.max))"
        guard rename(path, doomed) == 0 else { return }   // no such file: nothing to remove
        DispatchQueue.global(qos: .utility).async { unlink(doomed) }
    }
}

/// pcap records: the 16-byte record header (`struct pcap_sf_pkthdr`: seconds, nanoseconds,
/// captured and original length, in host order, as libpcap writes them) and the bytes.
/// libpcap writes every file header; the records are the same bytes `pcap_dump` writes.
enum PcapRecords {
    static let headerBytes = 16

    @inline(__always)
    static func storeHeader(_ header: pcap_pkthdr, at p: UnsafeMutableRawPointer) {
        p.storeBytes(of: UInt32(truncatingIfNeeded: header.ts.tv_sec), as: UInt32.self)
        p.storeBytes(of: UInt32(truncatingIfNeeded: header.ts.tv_usec), toByteOffset: 4, as: UInt32.self)
        p.storeBytes(of: header.caplen, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: header.len, toByteOffset: 12, as: UInt32.self)
    }

    /// Writes one record to a stdio stream with unlocked writes (the writer thread is the
    /// stream's only user). Returns the bytes written.
    @inline(__always)
    static func write(_ stream: UnsafeMutablePointer<FILE>, _ header: pcap_pkthdr, _ bytes: UnsafeRawBufferPointer) -> Int {
        var record: (UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &record) { storeHeader(header, at: $0.baseAddress!) }
        _ = withUnsafeBytes(of: &record) { fwrite_unlocked($0.baseAddress, 1, headerBytes, stream) }
        if let base = bytes.baseAddress, bytes.count > 0 { _ = fwrite_unlocked(base, 1, bytes.count, stream) }
        return headerBytes + bytes.count
    }

    /// Opens `path` for writing and has libpcap write the file header, flushed: records then
    /// go straight to the descriptor (`PcapFileSink`).
    static func open(_ format: PcapFormat, _ path: String) throws(SwitchError) -> OpaquePointer {
        guard let f = fopen(path, "w") else {
            throw .invalidOption("cannot write capture file: \(path): \(String(cString: strerror(errno)))")
        }
        guard let d = pcap_dump_fopen(format.handle, f) else {
            fclose(f)
            throw .invalidOption("cannot write capture file: \(String(cString: pcap_geterr(format.handle)))")
        }
        guard fflush(f) == 0 else {
            let message = String(cString: strerror(errno))
            pcap_dump_close(d)
            throw .invalidOption("cannot write capture file: \(path): \(message)")
        }
        return d
    }
}

/// A pcap file, flushed after every batch (a reader can follow it while it grows), rotated
/// by size: when FILE reaches `rotateBytes` it becomes FILE.1 (FILE.1 becomes FILE.2, ...),
/// at most `rotateCount` files are kept (FILE and FILE.1 ... FILE.<count-1>), and a new FILE
/// starts. Every file is a complete pcap file that starts with its own header.
///
/// Records leave by one `writev(2)` per batch: a small record is copied, with its pcap
/// header, into a 1 MiB buffer of our own (runs of them are one iovec); a large one
/// (`inPlaceBytes` or more) is written straight from the capture ring, its pcap header
/// stored over the ring's record header, so the writer does not copy it at all (the
/// session releases the ring's records only after `flush`). stdio's `fwrite` (two per frame,
/// as `pcap_dump` does) cost about 180 instructions per 64 B frame, most of the writer's
/// time. The size is counted as records are written (an `ftell` per frame was a system call).
public final class PcapFileSink: CaptureSink, CaptureFile {
    let format: PcapFormat
    let path: String
    public let rotateBytes: Int?
    public let rotateCount: Int
    private var dumper: OpaquePointer?
    private var fileBytes = 0
    private let rotationCount = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    public var rotations: UInt64 { vs_counter_load(rotationCount) }
    /// The pcap file header libpcap writes (magic, version, zone, sigfigs, snaplen, link type).
    static let fileHeaderBytes = 24
    /// Larger than a record can be (16 + `PcapFormat.maxSnaplen`).
    static let bufferBytes = 1 << 20
    private let buffer = UnsafeMutableRawPointer.allocate(byteCount: PcapFileSink.bufferBytes, alignment: 64)
    private var buffered = 0
    /// Records with at least this many bytes are written from the ring, not copied: below
    /// it, an iovec of its own costs the kernel more than the copy costs us.
    static let inPlaceBytes = 256
    /// iovecs of one writev (IOV_MAX is 1024).
    static let maxIovecs = 1024
    private let iovecs = UnsafeMutablePointer<iovec>.allocate(capacity: PcapFileSink.maxIovecs)
    private var iovecCount = 0

    public init(format: PcapFormat, path: String, rotateBytes: Int?, rotateCount: Int) throws(SwitchError) {
        self.format = format
        self.path = path
        self.rotateBytes = rotateBytes
        self.rotateCount = max(1, rotateCount)
        rotationCount.initialize(to: 0)
        // Every stored property is set by now: if this throws, `deinit` runs and frees.
        dumper = try PcapRecords.open(format, path)
        fileBytes = Self.fileHeaderBytes
    }

    deinit {
        close()
        rotationCount.deallocate()
        buffer.deallocate()
        iovecs.deallocate()
    }

    func write(_ record: CaptureRing.Record, _ header: inout pcap_pkthdr) -> Bool {
        guard dumper != nil else { return false }
        let n = record.bytes.count
        let size = PcapRecords.headerBytes + n
        if n >= Self.inPlaceBytes {
            if iovecCount == Self.maxIovecs { guard drain() else { return false } }
            let p = record.headerSpace
            PcapRecords.storeHeader(header, at: p)
            iovecs[iovecCount] = iovec(iov_base: p, iov_len: size)
            iovecCount += 1
        } else {
            if buffered + size > Self.bufferBytes || iovecCount == Self.maxIovecs { guard drain() else { return false } }
            // SAFETY: size <= 16 + inPlaceBytes < bufferBytes, and buffered + size fits now.
            let p = buffer + buffered
            PcapRecords.storeHeader(header, at: p)
            if let base = record.bytes.baseAddress, n > 0 { (p + PcapRecords.headerBytes).copyMemory(from: base, byteCount: n) }
            if iovecCount > 0, let last = iovecs[iovecCount - 1].iov_base, last + iovecs[iovecCount - 1].iov_len == p {
                iovecs[iovecCount - 1].iov_len += size
            } else {
                iovecs[iovecCount] = iovec(iov_base: p, iov_len: size)
                iovecCount += 1
            }
            buffered += size
        }
        fileBytes += size
        if let limit = rotateBytes, fileBytes >= limit { return rotate() }
        return true
    }

    /// Writes the waiting records to the file (one writev, more after a short write).
    private func drain() -> Bool {
        guard let d = dumper else { return false }
        let fd = fileno(pcap_dump_file(d))
        var first = 0
        while first < iovecCount {
            let n = writev(fd, iovecs + first, Int32(iovecCount - first))
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            var left = n
            while first < iovecCount, left >= iovecs[first].iov_len {
                left -= iovecs[first].iov_len
                first += 1
            }
            if left > 0 {
                iovecs[first].iov_base += left
                iovecs[first].iov_len -= left
            }
        }
        iovecCount = 0
        buffered = 0
        return true
    }

    func flush() -> Bool { drain() }

    public func close() {
        if let d = dumper {
            _ = drain()
            pcap_dump_close(d)
        }
        dumper = nil
        buffered = 0
        iovecCount = 0
    }

    /// Closes FILE (complete), shifts the older files by one, opens a new FILE.
    private func rotate() -> Bool {
        guard drain() else { return false }
        close()
        CaptureFiles.shift(path, keep: rotateCount)
        vs_counter_add(rotationCount, 1)
        dumper = try? PcapRecords.open(format, path)
        fileBytes = Self.fileHeaderBytes
        return dumper != nil
    }
}

/// A pcap stream over a socket (live capture): libpcap writes the file header and records
/// through a stdio stream whose writes never raise SIGPIPE.
public final class PcapStreamSink: CaptureSink {
    private var dumper: OpaquePointer?

    public init(format: PcapFormat, socket fd: Int32) throws(SwitchError) {
        guard let stream = vs_socket_stream(fd) else { throw .captureStream }
        guard let d = pcap_dump_fopen(format.handle, stream) else {
            fclose(stream)
            throw .libpcap(String(cString: pcap_geterr(format.handle)))
        }
        dumper = d
    }

    deinit { close() }

    func write(_ record: CaptureRing.Record, _ header: inout pcap_pkthdr) -> Bool {
        guard let d = dumper else { return false }
        _ = PcapRecords.write(pcap_dump_file(d), header, record.bytes)
        return true
    }

    func flush() -> Bool {
        guard let d = dumper else { return false }
        return pcap_dump_flush(d) == 0 && ferror(pcap_dump_file(d)) == 0
    }

    public func close() {
        if let d = dumper { pcap_dump_close(d) }   // fclose: the cookie leaves the socket open
        dumper = nil
    }
}
