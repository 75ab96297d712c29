import CaptureWriter
import Datapath
import SwitchModel
import CShims
import Logging
import VhostUser
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// The switch's configuration and management, on the control `EventLoop` thread:
/// bridges, ports and their vhost-user endpoints. Ring state lives in the engines: each bridge
/// and all its ports on one forwarding thread (`ForwardingThreads`), chosen when the bridge is
/// added (ThreadAssignment.swift).
public final class SwitchController {
    final class Port {
        /// What the port is connected to; owned here, so it outlives the engine slot.
        enum Attachment {
            case vhost(VhostPortBackend, VhostUserEndpoint)
            case tap(TapDevice)
            case pcap(PcapPortInfo)
            case vxlan(VxlanTunnel)
        }
        let name: String
        let spec: PortSpec
        /// Socket path, interface name or file: what `show` prints after the type.
        let path: String
        /// Engine port slot, or -1 for ports that are not bridge members.
        let slot: Int
        /// The engine of the port's bridge, which `slot` indexes.
        let engine: ForwardingEngine
        let attachment: Attachment
        var kind: PortKind { spec.kind }
        init(name: String, spec: PortSpec, path: String, slot: Int, engine: ForwardingEngine, attachment: Attachment) {
            self.name = name
            self.spec = spec
            self.path = path
            self.slot = slot
            self.engine = engine
            self.attachment = attachment
        }
        var endpoint: VhostUserEndpoint? {
            if case .vhost(_, let e) = attachment { return e }
            return nil
        }
    }

    struct Bridge {
        var name: String
        /// The bridge slot in `engine`, the forwarding thread that runs the bridge and its ports.
        var slot: Int
        let engine: ForwardingEngine
        var agingSeconds: Int
        var ports: [Port] = [] {
            didSet { captureInterfaces.set(ports.filter { $0.slot >= 0 }.map(SwitchController.captureInterface)) }
        }
        /// The ports as pcapng captures of this bridge name them (CapturePort.swift).
        let captureInterfaces = CaptureInterfaces()
        /// Port mirrors (SwitchController+Mirrors.swift), oldest first.
        var mirrors: [Mirror] = []
        /// Its parts on other threads and the links between all parts (SpanningBridges.swift).
        var halves: [Half] = []
        var links: [Link] = []
    }

    /// The forwarding threads; bridges are spread over them.
    public let threads: ForwardingThreads
    let loop: EventLoop
    public let logger: Logger
    /// Where relative socket paths go.
    public let runDirectory: String
    var bridges: [Bridge] = []
    /// Group of the socket files of `vhostuser` ports that name none (`vswitchd --socket-group`).
    public var socketGroup: String?
    var linkWatchTimer: Int?
    /// LinkWatch.swift: the ring fault count at the last look, and whether a port was broken.
    var lastRingFaultCount: UInt64 = 0
    var anyPortBroken = false

    public init(threads: ForwardingThreads, loop: EventLoop, runDirectory: String, logger: Logger) {
        self.threads = threads
        self.loop = loop
        self.runDirectory = runDirectory
        self.logger = logger
    }

    /// A switch with one forwarding thread (tests, tools).
    public convenience init(engine: ForwardingEngine, loop: EventLoop, runDirectory: String, logger: Logger) {
        self.init(threads: ForwardingThreads(engines: [engine]), loop: loop, runDirectory: runDirectory, logger: logger)
    }

    public static func isValidName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 15
            && s.utf8.allSatisfy { $0.isASCIIAlnum || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }

    // MARK: bridges

    /// `cpu`: on the forwarding thread pinned to that CPU; nil: the least loaded thread.
    public func addBridge(_ name: String, agingSeconds: Int = 300, cpu: Int? = nil) throws(SwitchError) {
        guard Self.isValidName(name) else { throw .invalidName(name) }
        guard (1...86400).contains(agingSeconds) else { throw .invalidAging(agingSeconds) }
        guard !bridges.contains(where: { $0.name == name }) else { throw .bridgeExists(name) }
        let aging = UInt32(agingSeconds)
        let engine = threads.engines[try cpu.map(engineOnCPU) ?? engineForNewBridge()]
        guard let slot = engine.sync({ $0.addBridge(agingSeconds: aging) }) else { throw .tooMany("bridges") }
        bridges.append(Bridge(name: name, slot: slot, engine: engine, agingSeconds: agingSeconds))
        logger.info("bridge added", metadata: ["bridge": "\(name)", "thread": "\(engine.threadName)"])
    }

    public func deleteBridge(_ name: String) throws(SwitchError) {
        let b = try bridgeIndex(name)
        for mirror in bridges[b].mirrors { try deleteMirror(bridge: name, name: mirror.name) }
        for port in bridges[b].ports { try deletePort(bridge: name, port: port.name) }
        let slot = bridges[b].slot
        removeHalves(b)
        bridges[b].engine.sync { $0.removeBridge(slot) }
        bridges.remove(at: b)
        logger.info("bridge deleted", metadata: ["bridge": "\(name)"])
    }

    public func setAging(bridge name: String, seconds: Int) throws(SwitchError) {
        let b = try bridgeIndex(name)
        guard (1...86400).contains(seconds) else { throw .invalidAging(seconds) }
        for (engine, slot) in parts(bridges[b]) { engine.sync { $0.setAging(bridge: slot, seconds: UInt32(seconds)) } }
        bridges[b].agingSeconds = seconds
    }

    // MARK: ports

    /// Adds a vhost-user port (tests and callers that only have a socket path).
    public func addPort(bridge: String, name: String, kind: PortKind, path: String) throws(SwitchError) {
        try addPort(bridge: bridge, name: name, spec: PortSpec(kind: kind, path: path))
    }

    public func addPort(bridge: String, name: String, spec: PortSpec) throws(SwitchError) {
        let b = try bridgeIndex(bridge)
        guard Self.isValidName(name) else { throw .invalidName(name) }
        guard findPort(name) == nil else { throw .portExists(name) }
        let policy = try PortPolicy(spec)
        let place = try placement(bridge: b, spec: spec)
        let port: Port
        do {
            switch spec.kind {
            case .vhostUser, .vhostUserClient: port = try makeVhostPort(bridge: b, name: name, spec: spec, at: place)
            case .tap: port = try makeTapPort(bridge: b, name: name, spec: spec, at: place)
            case .pcap: port = try makePcapPort(bridge: b, name: name, spec: spec)
            case .vxlan, .geneve: port = try makeVxlanPort(bridge: b, name: name, spec: spec, at: place)
            }
        } catch {
            dropEmptyHalves(b)   // a half made for this port alone
            throw error
        }
        if !policy.isDefault && port.slot >= 0 {
            let slot = port.slot
            port.engine.sync { $0.setPortPolicy(port: slot, access: policy.access, trunks: policy.trunks,
                                           native: policy.native, mtu: policy.mtu) }
        }
        bridges[b].ports.append(port)
        logger.info("port added", metadata: ["bridge": "\(bridge)", "port": "\(name)", "type": "\(spec.kind.rawValue)",
                                             "path": "\(port.path)"])
    }

    private func makeVhostPort(bridge b: Int, name: String, spec: PortSpec, at place: Place) throws(SwitchError) -> Port {
        let rawPath = spec.path ?? ""
        guard !rawPath.isEmpty, !rawPath.contains("\0") else { throw .invalidPath(rawPath) }
        let path = rawPath.hasPrefix("/") ? rawPath : runDirectory + "/" + rawPath
        guard path.utf8.count < 108 else { throw .invalidPath(path) }
        if let other = bridges.flatMap(\.ports).first(where: { $0.kind.isVhost && $0.path == path }) {
            throw .pathInUse(path: path, port: other.name)
        }
        let (engine, bridgeSlot) = place
        guard let slot = engine.sync({ $0.addPort(bridge: bridgeSlot) }) else { throw .tooMany("ports") }
        let backend = VhostPortBackend(engine: engine, slot: slot)
        var portLogger = logger
        portLogger[metadataKey: "port"] = "\(name)"
        let endpoint = VhostUserEndpoint(path: path, role: spec.kind == .vhostUser ? .server : .client,
                                         backend: backend, loop: loop, logger: portLogger)
        do {
            endpoint.socketGroup = try Self.socketGroupId(spec, default: socketGroup)
        } catch {
            engine.sync { $0.removePort(slot) }
            throw error
        }
        if let q = spec.queues {
            guard (1...VhostUserDevice.maxQueuePairs).contains(q) else {
                engine.sync { $0.removePort(slot) }
                throw .invalidOption("invalid --queues \(q): use 1-\(VhostUserDevice.maxQueuePairs)")
            }
            endpoint.device.queuePairLimit = q
        }
        endpoint.onStateChange = { [engine] state in
            // A departed guest may come back on another port: forget where it was.
            if state != .connected { engine.sync { $0.forgetAddresses(port: slot) } }
        }
        do {
            try endpoint.start()
        } catch {
            engine.sync { $0.removePort(slot) }
            throw .endpoint(path: path, reason: "\(error)")
        }
        startLinkWatch()
        return Port(name: name, spec: spec, path: path, slot: slot, engine: engine, attachment: .vhost(backend, endpoint))
    }

    /// The gid for a port's socket file: its own `--socket-group`, else the daemon's. Only a
    /// `vhostuser` port creates its socket; for a `vhostuserclient` port QEMU does.
    static func socketGroupId(_ spec: PortSpec, default daemonGroup: String?) throws(SwitchError) -> gid_t? {
        if spec.socketGroup != nil && spec.kind != .vhostUser {
            throw .invalidOption("--socket-group applies to vhostuser ports only: for \(spec.kind.rawValue) QEMU creates the socket")
        }
        guard spec.kind == .vhostUser, let name = spec.socketGroup ?? daemonGroup else { return nil }
        guard let g = getgrnam(name) else { throw .invalidOption("--socket-group: no group named \(name)") }
        return g.pointee.gr_gid
    }

    private func makeTapPort(bridge b: Int, name: String, spec: PortSpec, at place: Place) throws(SwitchError) -> Port {
        guard let ifname = spec.ifname, !ifname.isEmpty else { throw .missingOption("--ifname", kind: "tap") }
        if let other = bridges.flatMap(\.ports).first(where: { $0.kind == .tap && $0.path == ifname }) {
            throw .tapInUse(ifname: ifname, port: other.name)
        }
        let device = try TapDevice(name: ifname)
        let (engine, bridgeSlot) = place
        let fd = device.fd
        let offloads = device.offloads
        guard let slot = engine.sync({ e -> Int? in
            guard let p = e.addLocalPort(bridge: bridgeSlot, kind: SlotKind.tap.rawValue, fd: fd) else { return nil }
            if offloads { e.enableTapOffloads(port: p) }
            return p
        }) else {
            throw .tooMany("ports")
        }
        return Port(name: name, spec: spec, path: ifname, slot: slot, engine: engine, attachment: .tap(device))
    }

    public func deletePort(bridge: String, port name: String) throws(SwitchError) {
        let b = try bridgeIndex(bridge)
        guard let i = bridges[b].ports.firstIndex(where: { $0.name == name }) else {
            throw .noSuchPort(bridge: bridge, port: name)
        }
        if let m = bridges[b].mirrors.first(where: { $0.names(name) }) { throw .portInMirror(port: name, mirror: m.name) }
        let port = bridges[b].ports.remove(at: i)
        if let endpoint = port.endpoint {
            endpoint.onStateChange = nil
            endpoint.close()      // stops the rings in the engine, closes fds, unmaps
        }
        let slot = port.slot
        if slot >= 0 { port.engine.sync { $0.removePort(slot) } }
        dropEmptyHalves(b)
        if case .pcap(let info) = port.attachment { info.session.finish() }   // the file is complete and closed
        // A TAP device's or tunnel's descriptors close when `port` goes, after the slot is released.
        logger.info("port deleted", metadata: ["bridge": "\(bridge)", "port": "\(name)"])
    }

    /// Disconnects every frontend whose memory file shrank under the switch. Called on the
    /// loop thread when the SIGBUS guard's eventfd fires (vswitchd), or by tests.
    public func checkMemoryFaults() {
        for case .vhost(_, let endpoint) in bridges.flatMap(\.ports).map(\.attachment) { endpoint.checkMemory() }
    }

    /// Closes every port (daemon shutdown).
    public func shutdown() {
        for b in bridges { try? deleteBridge(b.name) }
    }

    // MARK: queries

    public func snapshot() -> [BridgeInfo] {
        bridges.map { b in
            BridgeInfo(name: b.name, agingSeconds: b.agingSeconds,
                       ports: b.ports.map { p in
                           var s = portSnapshot(p)
                           // A bridge across threads: each port says which thread runs it.
                           if !b.halves.isEmpty && p.slot >= 0 { s.options = (s.options ?? [:]).merging(["thread": p.engine.threadName]) { a, _ in a } }
                           return s
                       },
                       mirrors: b.mirrors.isEmpty ? nil : b.mirrors.map { mirrorSnapshot($0, engine: b.engine) },
                       macTable: macCounts(b),
                       thread: threads.count > 1 ? b.engine.threadName : nil)
        }
    }

    private func portSnapshot(_ p: Port) -> PortInfo {
        var snapshot = attachmentSnapshot(p)
        if let policy = try? PortPolicy(p.spec), !policy.description.isEmpty {
            snapshot.options = (snapshot.options ?? [:]).merging(policy.description) { a, _ in a }
        }
        return snapshot
    }

    /// A port's `show` entry: link "up"/"down", feature bits as their names, no options when
    /// there are none.
    func info(_ p: Port, state: String, linkUp: Bool, features: UInt64 = 0, protocolFeatures: UInt64 = 0,
              mtu: Int?, queues: [(index: Int, size: Int, enabled: Bool, running: Bool)] = [],
              memoryRegions: [MemoryRegionInfo]? = nil, options: [String: String] = [:]) -> PortInfo {
        PortInfo(name: p.name, type: p.kind, path: p.path, state: state, link: linkUp ? "up" : "down",
                 features: VirtioFeature.describe(features),
                 protocolFeatures: VhostUserProtocolFeature.describe(protocolFeatures), mtu: mtu,
                 queues: queues.map { QueueInfo(index: $0.index, size: $0.size, enabled: $0.enabled, running: $0.running) },
                 memoryRegions: memoryRegions, options: options.isEmpty ? nil : options)
    }

    private func attachmentSnapshot(_ p: Port) -> PortInfo {
        switch p.attachment {
        case .vhost(_, let endpoint):
            let d = endpoint.device
            let q = d.queueSummary
            let up = q.contains { $0.running && $0.index % 2 == 0 } && q.contains { $0.running && $0.index % 2 == 1 }
            let slot = p.slot
            let broken = p.engine.sync { $0.brokenRing(port: slot) }   // a corrupt ring was stopped
            var snapshot = info(p, state: broken != nil ? "broken" : endpoint.state.rawValue, linkUp: up,
                                features: d.ackedFeatures, protocolFeatures: d.ackedProtocolFeatures, mtu: d.mtu,
                                queues: q,
                                memoryRegions: d.memoryRegions.map {
                                    MemoryRegionInfo(guestPhysicalAddress: $0.description.guestPhysicalAddress,
                                                     size: $0.description.size, backing: $0.backing.rawValue, sealed: $0.sealed)
                                },
                                options: endpoint.faultCounts.merging(d.isLogging ? ["dirtyLogging": "on"] : [:]) { a, _ in a })
            if let (reason, since) = linkReason(endpoint, broken: broken) {
                snapshot.reason = reason
                snapshot.reasonSince = since
            }
            return snapshot
        case .tap(let device):
            let mtu = vs_if_mtu(device.name)
            // The interface may have moved to another network namespace: then it is not
            // visible here, but the descriptor still carries its frames.
            return info(p, state: "attached", linkUp: true, mtu: mtu > 0 ? Int(mtu) : nil,
                        options: ["ifname": device.name,
                                          "namespace": vs_if_exists(device.name) == 1 ? "host" : "other",
                                          "offloads": device.offloads ? "csum,tso4,tso6" : "off"])
        case .pcap(let info):
            return pcapSnapshot(p, info)
        case .vxlan(let tunnel):
            return vxlanSnapshot(p, tunnel)
        }
    }

    public func fdb(bridge name: String) throws(SwitchError) -> [FdbEntry] {
        let b = try bridgeIndex(name)
        var rows: [FdbEntry] = []
        // Each part reports the addresses behind its own ports; what it learned on a peer
        // port is another part's (its port is not in `names`) and is left out.
        for (engine, slot) in parts(bridges[b]) {
            let names = Dictionary(uniqueKeysWithValues: bridges[b].ports.filter { $0.slot >= 0 && $0.engine === engine }
                .map { ($0.slot, $0.name) })
            rows += engine.sync { $0.fdbEntries(bridge: slot) }.compactMap { e in
                names[e.port].map { FdbEntry(mac: MacTable.format(mac: e.key & 0xFFFF_FFFF_FFFF), port: $0,
                                             vlan: Int(e.key >> 48), ageSeconds: e.age) }
            }
        }
        return rows
            .sorted { ($0.port, $0.vlan, $0.mac) < ($1.port, $1.vlan, $1.mac) }
    }

    public func macCounts(bridge name: String) throws(SwitchError) -> MacTableCounts {
        macCounts(bridges[try bridgeIndex(name)])
    }

    private func macCounts(_ b: Bridge) -> MacTableCounts {
        parts(b).map { engine, slot in engine.sync { $0.macCounts(bridge: slot) } }
            .reduce(MacTableCounts(learned: 0, aged: 0)) { MacTableCounts(learned: $0.learned + $1.learned, aged: $0.aged + $1.aged) }
    }

    public func flushFdb(bridge name: String) throws(SwitchError) {
        let b = try bridgeIndex(name)
        for (engine, slot) in parts(bridges[b]) { engine.sync { $0.flushFdb(bridge: slot) } }
    }

    public func stats(bridge name: String, port: String?) throws(SwitchError) -> [(String, PortCounters)] {
        let b = try bridgeIndex(name)
        var ports = bridges[b].ports
        if let port {
            ports = ports.filter { $0.name == port }
            guard !ports.isEmpty else { throw .noSuchPort(bridge: name, port: port) }
        }
        return ports.map { p in
            if case .pcap(let info) = p.attachment { return (p.name, pcapCounters(info)) }
            let slot = p.slot
            return (p.name, p.engine.sync { $0.counters(port: slot) })
        }
    }

    // MARK: lookup

    func bridgeIndex(_ name: String) throws(SwitchError) -> Int {
        guard let b = bridges.firstIndex(where: { $0.name == name }) else { throw .noSuchBridge(name) }
        return b
    }

    private func findPort(_ name: String) -> Port? {
        bridges.lazy.flatMap(\.ports).first { $0.name == name }
    }
}

extension UInt8 {
    var isASCIIAlnum: Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(self) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(self)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self)
    }
}
