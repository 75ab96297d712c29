import CaptureWriter
import Datapath
import SwitchModel
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// pcap ports and live captures on the control thread: option checks, then a session
/// (CaptureSession.swift) with a tap in the engine. A pcap port is not a bridge member: it
/// has no engine port slot (`Port.slot` is -1) and floods never visit it.
extension SwitchController {
    /// Rotated files kept when `--rotate-size` is given without `--rotate-count`.
    public static let defaultRotateCount = 10

    /// What to watch: the whole bridge, or one port slot in some directions.
    struct CaptureTarget {
        var bridgeSlot: Int
        var portSlot: Int?
        var rx = true
        var tx = true
        /// For `show`: "bridge br0" or "port vm1 rx".
        var description: String
    }

    /// A port as a pcapng interface: its name, and its type and path as the description.
    static func captureInterface(_ p: Port) -> CaptureInterfaces.Interface {
        CaptureInterfaces.Interface(slot: p.slot, name: p.name, description: "\(p.kind.rawValue) \(p.path)")
    }

    /// Checks `--buffer-size` (nil: the default ring).
    static func captureBuffer(_ bytes: Int?) throws(SwitchError) -> Int {
        guard let bytes else { return CaptureBuffer.defaultCapacity }
        guard CaptureSession.bufferSizes.contains(bytes) else {
            throw .invalidOption("invalid buffer size \(bytes): use 128K-1G bytes")
        }
        return bytes
    }

    /// Checks `--capture-cpu` against the CPUs this machine has.
    static func captureCPU(_ cpu: Int?) throws(SwitchError) -> Int? {
        guard let cpu else { return nil }
        let cpus = sysconf(Int32(_SC_NPROCESSORS_CONF))
        guard cpu >= 0, cpu < min(cpus, 1024) else {
            throw .invalidOption("invalid capture CPU \(cpu): this machine has CPUs 0-\(cpus - 1)")
        }
        return cpu
    }

    /// Checks a capture file format: pcap (the default) or pcapng.
    static func captureFormat(_ f: String?) throws(SwitchError) -> Bool {
        switch f ?? "pcap" {
        case "pcap": return false
        case "pcapng": return true
        case let other: throw .invalidOption("invalid capture format '\(other)': use pcap or pcapng")
        }
    }

    /// Checks `--port` and `--direction` against bridge `b`.
    func captureTarget(bridge b: Int, port: String?, direction: String?) throws(SwitchError) -> CaptureTarget {
        try refuseIfSpanning(b, "a capture")
        let bridge = bridges[b]
        guard let port else {
            // A whole bridge: by default each frame once, as it enters (rx); tx = every
            // delivery, both = the frame in and each copy out (for pcapng's per-port view).
            guard let direction else { return CaptureTarget(bridgeSlot: bridge.slot, tx: false, description: "bridge \(bridge.name)") }
            guard ["rx", "tx", "both"].contains(direction) else {
                throw .invalidOption("invalid direction '\(direction)': use rx, tx or both")
            }
            return CaptureTarget(bridgeSlot: bridge.slot, rx: direction != "tx", tx: direction != "rx",
                                 description: "bridge \(bridge.name) \(direction)")
        }
        guard let watched = bridge.ports.first(where: { $0.name == port }) else {
            throw .noSuchPort(bridge: bridge.name, port: port)
        }
        guard watched.slot >= 0 else { throw .invalidOption("port \(port) is a \(watched.kind.rawValue) port: it carries no frames") }
        let dir = direction ?? "both"
        guard ["rx", "tx", "both"].contains(dir) else {
            throw .invalidOption("invalid direction '\(dir)': use rx, tx or both")
        }
        return CaptureTarget(bridgeSlot: bridge.slot, portSlot: watched.slot, rx: dir != "tx", tx: dir != "rx",
                             description: "port \(port) \(dir)")
    }

    func makePcapPort(bridge b: Int, name: String, spec: PortSpec) throws(SwitchError) -> Port {
        guard let rawFile = spec.file, !rawFile.isEmpty, !rawFile.contains("\0") else {
            throw .missingOption("--file", kind: "pcap")
        }
        // Relative paths go to the run directory, like socket paths (the CLI sends absolute ones).
        let file = rawFile.hasPrefix("/") ? rawFile : runDirectory + "/" + rawFile
        if let other = bridges.flatMap(\.ports).first(where: { $0.kind == .pcap && $0.path == file }) {
            throw .invalidOption("capture file \(file) is already written by port \(other.name)")
        }
        if let r = spec.rotateBytes, r < 4096 { throw .invalidOption("invalid rotate size \(r): use at least 4096 bytes") }
        if let c = spec.rotateCount {
            guard spec.rotateBytes != nil else { throw .invalidOption("--rotate-count needs --rotate-size") }
            guard (1...1000).contains(c) else { throw .invalidOption("invalid rotate count \(c): use 1-1000 files") }
        }
        let target = try captureTarget(bridge: b, port: spec.watchPort, direction: spec.direction)
        let pcapng = try Self.captureFormat(spec.captureFormat)
        let capacity = try Self.captureBuffer(spec.captureBuffer)
        let cpu = try Self.captureCPU(spec.captureCPU)
        let format = try PcapFormat(snaplen: spec.snaplen ?? PcapFormat.maxSnaplen, filter: spec.filter)
        let engine = bridges[b].engine
        guard engine.sync({ $0.freeCaptureTaps }) > 0 else { throw .tooMany("captures (at most \(ForwardingEngine.maxCaptureTaps))") }
        let existed = access(file, F_OK) == 0
        let rotateCount = spec.rotateCount ?? Self.defaultRotateCount
        let sink: any CaptureFile
        let session: CaptureSession
        if pcapng {
            let s = try PcapngSink(format: format, path: file, interfaces: bridges[b].captureInterfaces,
                                   rotateBytes: spec.rotateBytes, rotateCount: rotateCount)
            (sink, session) = (s, CaptureSession(engine: engine, format: format, pcapng: s, capacity: capacity))
        } else {
            let s = try PcapFileSink(format: format, path: file, rotateBytes: spec.rotateBytes, rotateCount: rotateCount)
            (sink, session) = (s, CaptureSession(engine: engine, format: format, file: s, capacity: capacity))
        }
        guard session.attach(bridge: target.bridgeSlot, port: target.portSlot, rx: target.rx, tx: target.tx) else {
            sink.close()
            if !existed { unlink(file) }
            throw .tooMany("captures")
        }
        session.startThread(cpu: cpu)
        let info = PcapPortInfo(session: session, sink: sink, target: target.description)
        return Port(name: name, spec: spec, path: file, slot: -1, engine: engine, attachment: .pcap(info))
    }

    /// Starts a live capture (`vswitch capture`); the caller runs `runWriter(peer:)` on its
    /// connection, then `detach()`. The session ends by itself when the bridge or the
    /// watched port is removed.
    public func startLiveCapture(bridge: String, port: String?, direction: String?, filter: String?,
                                 snaplen: Int?, count: Int?, format fileFormat: String? = nil,
                                 buffer: Int? = nil, socket fd: Int32) throws(SwitchError) -> CaptureSession {
        guard let b = bridges.firstIndex(where: { $0.name == bridge }) else { throw .noSuchBridge(bridge) }
        if let count, count < 1 { throw .invalidOption("invalid count \(count): use 1 or more frames") }
        let target = try captureTarget(bridge: b, port: port, direction: direction)
        let pcapng = try Self.captureFormat(fileFormat)
        let capacity = try Self.captureBuffer(buffer)
        let format = try PcapFormat(snaplen: snaplen ?? PcapFormat.maxSnaplen, filter: filter)
        let engine = bridges[b].engine
        guard engine.sync({ $0.freeCaptureTaps }) > 0 else { throw .tooMany("captures (at most \(ForwardingEngine.maxCaptureTaps))") }
        let session: CaptureSession
        let close: () -> Void
        if pcapng {
            let sink = PcapngSink(format: format, socket: fd, interfaces: bridges[b].captureInterfaces)
            (session, close) = (CaptureSession(engine: engine, format: format, pcapng: sink, limit: count, capacity: capacity), sink.close)
        } else {
            let sink = try PcapStreamSink(format: format, socket: fd)
            (session, close) = (CaptureSession(engine: engine, format: format, stream: sink, limit: count, capacity: capacity), sink.close)
        }
        guard session.attach(bridge: target.bridgeSlot, port: target.portSlot, rx: target.rx, tx: target.tx) else {
            close()
            throw .tooMany("captures")
        }
        logger.info("live capture started", metadata: ["bridge": "\(bridge)", "watch": "\(target.description)"])
        return session
    }

    func pcapSnapshot(_ p: Port, _ info: PcapPortInfo) -> PortInfo {
        let s = info.session
        let state: String
        switch s.end {
        case nil: state = "writing"
        case .closed?: state = "stopped (the watched port or bridge was removed)"
        case .writeFailed?: state = "failed (cannot write the file)"
        case let e?: state = "stopped (\(e))"
        }
        var options = ["file": p.path, "watch": info.target, "snaplen": String(s.format.snaplen),
                       "framesWritten": String(s.framesWritten), "framesDropped": String(s.framesDropped),
                       "framesFilteredOut": String(s.framesFilteredOut)]
        if let f = s.format.filter { options["filter"] = f }
        if let f = p.spec.captureFormat { options["format"] = f }
        options["buffer"] = String(s.bufferBytes)
        if let cpu = p.spec.captureCPU { options["captureCPU"] = s.pinFailed ? "\(cpu) (pinning failed)" : String(cpu) }
        if let r = info.sink.rotateBytes {
            options["rotate"] = "\(r) bytes, \(info.sink.rotateCount) files, \(info.sink.rotations) rotations"
        }
        return self.info(p, state: state, linkUp: s.end == nil, mtu: nil, options: options)
    }

    /// `port stats` of a pcap port: frames written count as transmitted to it; frames the
    /// writer could not keep up with as drops.
    func pcapCounters(_ info: PcapPortInfo) -> PortCounters {
        var c = PortCounters()
        c.txPackets = info.session.framesWritten
        c.txBytes = info.session.bytesWritten
        c.txDropNoBuffers = info.session.framesDropped
        return c
    }
}

/// What a pcap port holds: its session and file.
final class PcapPortInfo {
    let session: CaptureSession
    let sink: any CaptureFile
    let target: String
    init(session: CaptureSession, sink: any CaptureFile, target: String) {
        self.session = session
        self.sink = sink
        self.target = target
    }
}
