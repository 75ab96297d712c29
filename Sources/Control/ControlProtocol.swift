// The control-socket protocol between `vswitch` (CLI) and `vswitchd`.
//
// Transport: a Unix stream socket. The client writes one request as a single line of
// JSON (UTF-8, terminated by "\n"); the daemon answers with one line of JSON. A
// connection may carry several request/response pairs in order. Lines longer than
// `ControlWire.maxLineBytes` are rejected.
//
// This module is deliberately independent of the data plane: the CLI links only this
// and SwitchModel's value types.

import SwitchModel

/// Default control socket path when neither `--control` nor `$VSWITCH_SOCK` is given.
public enum ControlDefaults {
    public static let socketPath = "/run/vswitch/vswitchd.sock"
    public static let environmentVariable = "VSWITCH_SOCK"

    /// `--control PATH`, else `$VSWITCH_SOCK`, else `/run/vswitch/vswitchd.sock`.
    public static func resolveSocketPath(option: String?, environment: [String: String]) -> String {
        if let option, !option.isEmpty { return option }
        if let env = environment[environmentVariable], !env.isEmpty { return env }
        return socketPath
    }
}

public enum ControlWire {
    public static let maxLineBytes = 1 << 20
}

/// The commands the daemon understands.
public enum ControlCommand: String, Codable, Sendable, CaseIterable {
    case addBridge = "add-br"
    case deleteBridge = "del-br"
    case addPort = "add-port"
    case deletePort = "del-port"
    case show = "show"
    case fdbShow = "fdb-show"
    case fdbFlush = "fdb-flush"
    case portStats = "port-stats"
    case setAging = "set-aging"
    case datapathStats = "dp-stats"
    /// Live capture: after the ok line the connection carries a pcap stream (ControlStream.swift).
    case capture = "capture"
    /// What the daemon can check of a port's (or every vhost-user port's) set-up, and what to change.
    case doctor = "doctor"
    /// Port mirrors: `mirror` names it, `mirrorSpec` says what it selects and where copies go.
    case addMirror = "add-mirror"
    case deleteMirror = "del-mirror"
}

/// Port types a user can add: `PortKind` (SwitchModel), the one list the CLI's `--type`,
/// the wire protocol and the configuration file share. Its raw values never change.
public typealias PortType = PortKind

/// One request line. Fields not used by a command are omitted.
public struct ControlRequest: Codable, Sendable, Equatable {
    public var command: ControlCommand
    public var bridge: String?
    public var port: String?
    public var type: PortType?
    public var path: String?
    public var agingSeconds: Int?
    /// tap: interface name.
    public var ifname: String?
    /// pcap: output file, BPF filter (libpcap syntax), bytes kept per frame, rotation.
    public var file: String?
    public var filter: String?
    public var snaplen: Int?
    public var rotateBytes: Int?
    public var rotateCount: Int?
    /// pcap: only frames of this port of the bridge; `direction` "rx", "tx" or "both".
    public var watchPort: String?
    public var direction: String?
    /// vxlan: remote endpoints (addresses), VNI, local address, UDP destination port.
    public var remotes: [String]?
    public var vni: Int?
    public var local: String?
    public var dstPort: Int?
    /// Any port: "access" (with `tag`) or "trunk" (with `trunks`, optional native `tag`).
    public var vlanMode: String?
    public var tag: Int?
    public var trunks: [Int]?
    /// Any port: frames with a longer payload are not delivered to it (dropped, counted).
    public var mtu: Int?
    /// vhost-user: queue pairs offered (1-8).
    public var queues: Int?
    /// vhostuser: group of the socket file the switch creates (mode 0660).
    public var socketGroup: String?
    /// vxlan: learn remotes not in `remotes` from `remotePrefix` (CIDR, e.g. 192.0.2.0/24).
    public var learning: Bool?
    public var remotePrefix: String?
    /// vxlan: a multicast underlay instead of `remotes` (group address, interface, TTL).
    public var group: String?
    public var dev: String?
    public var ttl: Int?
    /// add-mirror / del-mirror: the mirror's name; add-mirror: its selection and output.
    public var mirror: String?
    public var mirrorSpec: MirrorSpec?
    /// capture: stop after this many frames (that passed `filter`).
    public var count: Int?
    /// pcap ports and capture: "pcap" (the default) or "pcapng" (the port and direction of
    /// each frame). Persisted with the port's request like every other field.
    public var captureFormat: String?
    /// pcap ports and capture: the capture ring's size in bytes (`--buffer-size`); pcap
    /// ports: the CPU their writer thread is pinned to (`--capture-cpu`).
    public var captureBuffer: Int?
    public var captureCPU: Int?
    /// add-br: run the bridge on the forwarding thread pinned to this CPU
    /// (`vswitchd --forwarding-cpus`) instead of the least loaded one; add-port: run the
    /// port on that thread, even if its bridge is on another (the bridge then spans threads).
    public var cpu: Int?

    public init(command: ControlCommand, bridge: String? = nil, port: String? = nil,
                type: PortType? = nil, path: String? = nil, agingSeconds: Int? = nil,
                ifname: String? = nil, file: String? = nil, filter: String? = nil, snaplen: Int? = nil,
                rotateBytes: Int? = nil, rotateCount: Int? = nil, watchPort: String? = nil,
                direction: String? = nil, remotes: [String]? = nil, vni: Int? = nil, local: String? = nil,
                dstPort: Int? = nil, vlanMode: String? = nil, tag: Int? = nil, trunks: [Int]? = nil,
                mtu: Int? = nil, queues: Int? = nil, count: Int? = nil, socketGroup: String? = nil,
                captureFormat: String? = nil, learning: Bool? = nil, remotePrefix: String? = nil,
                group: String? = nil, dev: String? = nil, ttl: Int? = nil,
                mirror: String? = nil, mirrorSpec: MirrorSpec? = nil) {
        self.group = group
        self.dev = dev
        self.ttl = ttl
        self.learning = learning
        self.remotePrefix = remotePrefix
        self.socketGroup = socketGroup
        self.captureFormat = captureFormat
        self.mirror = mirror
        self.mirrorSpec = mirrorSpec
        self.vlanMode = vlanMode
        self.tag = tag
        self.trunks = trunks
        self.mtu = mtu
        self.queues = queues
        self.command = command
        self.bridge = bridge
        self.port = port
        self.type = type
        self.path = path
        self.agingSeconds = agingSeconds
        self.ifname = ifname
        self.file = file
        self.filter = filter
        self.snaplen = snaplen
        self.rotateBytes = rotateBytes
        self.rotateCount = rotateCount
        self.watchPort = watchPort
        self.direction = direction
        self.remotes = remotes
        self.vni = vni
        self.local = local
        self.dstPort = dstPort
        self.count = count
        self.captureFormat = captureFormat
    }
}

/// One response line: `ok` with an optional `result`, or not `ok` with an `error` message
/// meant for humans ("no bridge named br9").
public struct ControlResponse: Codable, Sendable, Equatable {
    public var ok: Bool
    public var error: String?
    public var result: ControlResult?

    public static func success(_ result: ControlResult? = nil) -> ControlResponse {
        ControlResponse(ok: true, error: nil, result: result)
    }
    public static func failure(_ message: String) -> ControlResponse {
        ControlResponse(ok: false, error: message, result: nil)
    }
}

/// Results carry at most one of these, depending on the command.
public struct ControlResult: Codable, Sendable, Equatable {
    public var bridges: [BridgeInfo]?
    public var fdb: FdbTable?
    public var stats: [PortStats]?
    public var datapath: DatapathStats?
    public var doctor: [DoctorReport]?

    public init(bridges: [BridgeInfo]? = nil, fdb: FdbTable? = nil, stats: [PortStats]? = nil,
                datapath: DatapathStats? = nil, doctor: [DoctorReport]? = nil) {
        self.doctor = doctor
        self.bridges = bridges
        self.fdb = fdb
        self.stats = stats
        self.datapath = datapath
    }
}

/// Counters from the switch's point of view: `rx` = frames the switch received from the
/// port (the guest transmitted), `tx` = frames the switch delivered to the port. The fields
/// are `PortCounter`'s cases, in its order: `{"port": "vm1", "rxPackets": 10, ...}`.
/// A counter that does not apply to the port (the VXLAN ones elsewhere) is absent.
public struct PortStats: Codable, Sendable, Equatable {
    public var port: String
    /// Indexed by `PortCounter.rawValue`; nil: absent.
    public private(set) var values: [UInt64?]

    public subscript(_ c: PortCounter) -> UInt64? {
        get { values[c.rawValue] }
        set { values[c.rawValue] = newValue }
    }

    /// Every counter that applies to every port set to 0 (or to `set`), tunnel-only ones absent.
    public init(port: String, _ set: [PortCounter: UInt64] = [:]) {
        self.port = port
        values = PortCounter.allCases.map { c in set[c] ?? (c.tunnelOnly ? nil : 0) }
    }

    /// What the daemon reports for a port; `tunnel` adds the tunnel-only counters.
    public init(port: String, counters: PortCounters, tunnel: Bool) {
        self.port = port
        values = PortCounter.allCases.map { c in c.tunnelOnly && !tunnel ? nil : counters[c] }
    }

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ s: String) { stringValue = s }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        port = try c.decode(String.self, forKey: Key("port"))
        values = try PortCounter.allCases.map { try c.decodeIfPresent(UInt64.self, forKey: Key($0.name)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(port, forKey: Key("port"))
        for counter in PortCounter.allCases {
            if let v = self[counter] { try c.encode(v, forKey: Key(counter.name)) }
        }
    }
}

/// What the forwarding thread did since start: tells a switch-bound benchmark run (few
/// empty polls, no sleeps) from a generator-bound one.
public struct DatapathStats: Codable, Sendable, Equatable {
    /// Passes over all polled queues.
    public var polls: UInt64
    /// Passes that found no frame.
    public var emptyPolls: UInt64
    /// Times the thread went to sleep in epoll.
    public var sleeps: UInt64
    /// Frames taken from guests' TX rings.
    public var frames: UInt64
    /// CPU time of the forwarding thread (user + system), seconds.
    public var cpuSeconds: Double
    /// TSC cycles spent in passes that forwarded frames.
    public var busyCycles: UInt64
    /// TSC cycles the thread was awake (polling, busy or not). busy / awake = load.
    public var awakeCycles: UInt64
    /// For one thread of `threads`: its name (`vswitch-fwd`, `vswitch-fwd1`, ...), the CPU it
    /// is pinned to (absent: not pinned) and the bridges it runs.
    public var thread: String?
    public var cpu: Int?
    public var bridges: [String]?
    /// Each forwarding thread's own figures (`vswitchd --forwarding-cpus`); the fields above
    /// are then their sums. Absent from older daemons and inside an entry of the list.
    public var threads: [DatapathStats]?
    public init(polls: UInt64, emptyPolls: UInt64, sleeps: UInt64, frames: UInt64, cpuSeconds: Double,
                busyCycles: UInt64 = 0, awakeCycles: UInt64 = 0, thread: String? = nil, cpu: Int? = nil,
                bridges: [String]? = nil, threads: [DatapathStats]? = nil) {
        self.polls = polls
        self.emptyPolls = emptyPolls
        self.sleeps = sleeps
        self.frames = frames
        self.cpuSeconds = cpuSeconds
        self.busyCycles = busyCycles
        self.awakeCycles = awakeCycles
        self.thread = thread
        self.cpu = cpu
        self.bridges = bridges
        self.threads = threads
    }

    /// The sums of `threads`' figures, with the list itself kept.
    public init(summing threads: [DatapathStats]) {
        func sum(_ k: KeyPath<DatapathStats, UInt64>) -> UInt64 { threads.reduce(0) { $0 &+ $1[keyPath: k] } }
        self.init(polls: sum(\.polls), emptyPolls: sum(\.emptyPolls), sleeps: sum(\.sleeps), frames: sum(\.frames),
                  cpuSeconds: threads.reduce(0) { $0 + $1.cpuSeconds }, busyCycles: sum(\.busyCycles),
                  awakeCycles: sum(\.awakeCycles), threads: threads)
    }
}
