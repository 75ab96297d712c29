import Datapath
import SwitchModel
import CPcap
import CShims
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A pcapng capture into a file (rotated like a pcap file) or a stream (live capture).
/// Each file or stream is one section: a Section Header, an Interface Description Block per
/// port of the bridge (more when ports join later), Enhanced Packet Blocks on the interface
/// of the port each frame entered or left by, and at the end an Interface Statistics Block
/// per interface (frames seen, dropped by the ring, accepted by the filter). A rotated file
/// ends with its statistics too and the next starts with every interface again.
public final class PcapngSink: CaptureSink, CaptureFile {
    enum Output {
        case file(path: String)
        case socket(Int32)
    }

    let output: Output
    let snaplen: Int
    public let rotateBytes: Int?
    public let rotateCount: Int
    private var fd: Int32 = -1
    private var writer = PcapngWriter()
    private var table: PcapngInterfaceTable
    private var ring: CaptureRing?
    private var fileBytes = 0
    private let startNs = vs_realtime_ns()
    private let rotationCount = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    public var rotations: UInt64 { vs_counter_load(rotationCount) }
    /// Buffered blocks beyond this are written out before the next batch ends.
    static let flushThreshold = 1 << 20

    /// A pcapng file at `path`; throws if it cannot be created.
    public init(format: PcapFormat, path: String, interfaces: CaptureInterfaces,
                rotateBytes: Int?, rotateCount: Int) throws(SwitchError) {
        output = .file(path: path)
        snaplen = format.snaplen
        self.rotateBytes = rotateBytes
        self.rotateCount = max(1, rotateCount)
        table = PcapngInterfaceTable(source: interfaces)
        rotationCount.initialize(to: 0)
        fd = try Self.create(path)
        startSection()
    }

    /// A pcapng stream on a connected socket (writes never raise SIGPIPE).
    public init(format: PcapFormat, socket: Int32, interfaces: CaptureInterfaces) {
        output = .socket(socket)
        snaplen = format.snaplen
        rotateBytes = nil
        rotateCount = 1
        table = PcapngInterfaceTable(source: interfaces)
        rotationCount.initialize(to: 0)
        fd = socket
        startSection()
    }

    deinit {
        close()
        rotationCount.deallocate()
    }

    private static func create(_ path: String) throws(SwitchError) -> Int32 {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .invalidOption("cannot write capture file: \(path): \(String(cString: strerror(errno)))") }
        return fd
    }

    private func startSection() {
        writer.sectionHeader(application: "vswitch")
        table.describeAll(snaplen: snaplen, &writer)
        table.refresh(snaplen: snaplen, &writer)
    }

    // MARK: CaptureSink

    func bind(_ ring: CaptureRing) { self.ring = ring }

    func write(_ r: CaptureRing.Record, _ header: inout pcap_pkthdr) -> Bool {
        guard fd >= 0 else { return false }
        let id = table.id(slot: r.port, snaplen: snaplen, &writer)
        table.count(id, accepted: true)
        writer.enhancedPacket(interface: id, timestampNs: r.timestampNs, data: r.bytes,
                              originalLength: r.originalLength, outbound: r.outbound)
        if let limit = rotateBytes, fileBytes + writer.bytes.count >= limit {
            return rotate()
        }
        return writer.bytes.count < Self.flushThreshold || flush()
    }

    func filteredOut(_ r: CaptureRing.Record) {
        guard fd >= 0 else { return }
        table.count(table.id(slot: r.port, snaplen: snaplen, &writer), accepted: false)
    }

    func flush() -> Bool {
        guard fd >= 0 else { return false }
        table.refresh(snaplen: snaplen, &writer)
        guard !writer.bytes.isEmpty else { return true }
        let ok = writer.bytes.withUnsafeBytes { Self.writeAll(fd, $0, socket: isSocket) }
        fileBytes += writer.bytes.count
        writer.clear()
        return ok
    }

    /// Ends the section with its statistics and closes a file (a socket stays open: its
    /// owner closes it).
    public func close() {
        guard fd >= 0 else { return }
        table.statistics(startNs: startNs, nowNs: vs_realtime_ns(), ring: ring, &writer)
        _ = flush()
        if !isSocket { Glibc.close(fd) }
        fd = -1
    }

    private var isSocket: Bool {
        if case .socket = output { return true }
        return false
    }

    /// Closes FILE (complete, with its statistics), shifts the older files, opens a new FILE.
    private func rotate() -> Bool {
        guard case .file(let path) = output else { return true }
        close()
        CaptureFiles.shift(path, keep: rotateCount)
        vs_counter_add(rotationCount, 1)
        guard let newFd = try? Self.create(path) else { return false }
        fd = newFd
        fileBytes = 0
        startSection()
        return flush()
    }

    static func writeAll(_ fd: Int32, _ buf: UnsafeRawBufferPointer, socket: Bool) -> Bool {
        guard var p = buf.baseAddress else { return true }
        var left = buf.count
        while left > 0 {
            let n = socket ? send(fd, p, left, Int32(MSG_NOSIGNAL)) : Glibc.write(fd, p, left)
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            p += n
            left -= n
        }
        return true
    }
}
