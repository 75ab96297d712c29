import SwitchModel
import ArgumentParser
import Control

/// `vswitch`: configure and inspect a running vswitchd over its control socket.
public struct VSwitchCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "vswitch",
        abstract: "Configure and inspect vswitchd, the userspace vhost-user switch.",
        subcommands: [AddBridge.self, DeleteBridge.self, AddPort.self, DeletePort.self, Show.self,
                      Fdb.self, Port.self, SetAging.self, DatapathStatsCommand.self, Capture.self, Doctor.self,
                      AddMirror.self, DeleteMirror.self, Extcap.self, Top.self])
    /// Also declared here so global options may come before the subcommand name too
    /// (`vswitch --format json show`); ArgumentParser hands the values to the subcommand.
    @OptionGroup var global: GlobalOptions
    public init() {}
}

public struct AddBridge: ControlSubcommand {
    public static let configuration = CommandConfiguration(
        commandName: "add-br", abstract: "Create a bridge.")
    @OptionGroup public var global: GlobalOptions
    @Argument(help: "Bridge name.") public var bridge: String
    @Option(help: "MAC address aging time in seconds (default: the daemon's, 300).")
    public var aging: Int?
    @Option(help: "Run the bridge on the forwarding thread of this CPU (vswitchd --forwarding-cpus; default: the least loaded thread).")
    public var cpu: Int?
    public init() {}

    public func validate() throws {
        try Validate.name(bridge, "bridge")
        if let aging { try Validate.aging(aging) }
        if let cpu, cpu < 0 { throw ValidationError("invalid --cpu \(cpu): a CPU number, 0 or more") }
    }
    /// Aging rides on add-br itself, so the bridge never exists with the wrong aging time.
    public func makeRequest() -> ControlRequest {
        var r = ControlRequest(command: .addBridge, bridge: bridge, agingSeconds: aging)
        r.cpu = cpu
        return r
    }
}

public struct DeleteBridge: ControlSubcommand {
    public static let configuration = CommandConfiguration(
        commandName: "del-br", abstract: "Delete a bridge and all its ports.")
    @OptionGroup public var global: GlobalOptions
    @Argument(help: "Bridge name.") public var bridge: String
    public init() {}

    public func validate() throws { try Validate.name(bridge, "bridge") }
    public func makeRequest() -> ControlRequest { ControlRequest(command: .deleteBridge, bridge: bridge) }
}

public struct AddPort: ControlSubcommand {
    public static let configuration = CommandConfiguration(
        commandName: "add-port", abstract: "Add a port to a bridge.",
        discussion: """
            vhostuser:       vswitchd listens on --path and QEMU connects to it.
            vhostuserclient: QEMU listens on --path (server=on) and vswitchd connects.
            tap:             a TAP interface --ifname to the host kernel (created if missing).
            pcap:            writes copies of the bridge's frames (or --port's) to --file
                             (--format pcapng: with the port and direction of each frame).
            vxlan:           a VXLAN tunnel to --remote or a multicast --group (RFC 7348, UDP --dst-port, default 4789).
            geneve:          a Geneve tunnel to --remote (RFC 8926, UDP --dst-port, default 6081).
            """)
    @OptionGroup public var global: GlobalOptions
    @Argument(help: "Bridge name.") public var bridge: String
    @Argument(help: "Port name.") public var port: String
    @Option(help: "Port type.") public var type: PortType = .vhostUser
    @Option(help: "vhostuser/vhostuserclient: socket path.") public var path: String?
    @Option(help: "tap: interface name.") public var ifname: String?
    @Option(help: "pcap: output file.") public var file: String?
    @Option(help: "pcap: keep only frames matching this filter (tcpdump syntax).") public var filter: String?
    @Option(help: "pcap: bytes kept per frame (default 262144).") public var snaplen: Int?
    @Option(help: "pcap: start a new file after this size (e.g. 100M).") public var rotateSize: String?
    @Option(help: "pcap: number of files kept when rotating.") public var rotateCount: Int?
    @Option(name: .customLong("port"), help: "pcap: capture only this port's frames.") public var watchPort: String?
    @Option(help: "pcap: rx (sent by --port, or any port, into the bridge), tx (delivered to it) or both.")
    public var direction: String?
    @Option(help: "pcap: the ring between forwarding and the file writer (e.g. 64M; default 4M, 128K-1G).")
    public var bufferSize: String?
    @Option(help: "pcap: pin the file writer thread to this CPU (keep it off the forwarding CPU).")
    public var captureCpu: Int?
    @Option(help: "vxlan: remote address(es), comma-separated, all IPv4 or all IPv6.") public var remote: String?
    @Option(help: "vxlan: VXLAN network identifier (0-16777215).") public var vni: Int?
    @Option(help: "vxlan: local address to send from.") public var local: String?
    @Option(help: "vxlan: UDP destination port (default 4789).") public var dstPort: Int?
    @Flag(help: "vxlan: accept remotes not in --remote when they come from --remote-prefix, and learn who is behind them.")
    public var learning = false
    @Option(help: "vxlan, with --learning: the addresses remotes may be learned from (CIDR, e.g. 192.0.2.0/24 or 2001:db8::/64).")
    public var remotePrefix: String?
    @Option(help: "vxlan: a multicast group (e.g. 239.1.1.1 or ff05::100) instead of --remote: floods go to it, remotes are learned from any source that sends to it.")
    public var group: String?
    @Option(help: "vxlan, with --group: the interface to join the group on and send from.") public var dev: String?
    @Option(help: "vxlan, with --group: the multicast TTL or IPv6 hop limit (1-255, default 1).") public var ttl: Int?
    @Option(help: "Any type: access (untagged, one VLAN: --tag) or trunk (tagged: --trunks, native --tag).")
    public var vlanMode: String?
    @Option(help: "access: the port's VLAN; trunk: the native (untagged) VLAN.") public var tag: Int?
    @Option(help: "trunk: VLANs carried tagged, comma-separated (e.g. 10,20).") public var trunks: String?
    @Option(help: "Any type: frames with a longer payload are not delivered to the port.") public var mtu: Int?
    @Option(help: "vhostuser/vhostuserclient: queue pairs offered to the guest (1-8).") public var queues: Int?
    @Option(help: "vhostuser: group of the socket file (mode 0660), e.g. kvm for libvirt's QEMU (default: vswitchd --socket-group).")
    public var socketGroup: String?
    @Option(help: "vhostuser/vhostuserclient/tap/vxlan: run the port on the forwarding thread of this CPU, another than its bridge's (vswitchd --forwarding-cpus; frames to ports on other threads cross a ring).")
    public var cpu: Int?
    public init() {}

    var trunkList: [Int]? {
        trunks.map { $0.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }
    }

    public func validate() throws {
        try Validate.name(bridge, "bridge")
        try Validate.name(port, "port")
        if let cpu, cpu < 0 { throw ValidationError("invalid --cpu \(cpu): a CPU number, 0 or more") }
        switch type {
        case .vhostUser, .vhostUserClient:
            guard let path, !path.isEmpty else { throw ValidationError("--type \(type.rawValue) needs --path") }
        case .tap:
            guard let ifname else { throw ValidationError("--type tap needs --ifname") }
            try Validate.name(ifname, "interface")
        case .pcap:
            guard let file, !file.isEmpty else { throw ValidationError("--type pcap needs --file") }
            if let rotateSize { _ = try Validate.size(rotateSize, "--rotate-size") }
            if let watchPort { try Validate.name(watchPort, "port") }
            if let direction, !["rx", "tx", "both"].contains(direction) {
                throw ValidationError("--direction must be rx, tx or both")
            }
            if let bufferSize { _ = try Validate.size(bufferSize, "--buffer-size") }
            if let captureCpu, captureCpu < 0 { throw ValidationError("--capture-cpu must be a CPU number (0 or more)") }
        case .vxlan, .geneve:
            if type == .geneve && group != nil { throw ValidationError("--group applies to --type vxlan only") }
            if remote != nil && group != nil {
                throw ValidationError("--remote and --group are mutually exclusive (a tunnel floods to its remotes or to a multicast group)")
            }
            if group == nil {
                guard let remote, !remote.isEmpty else {
                    throw ValidationError(type == .vxlan ? "--type vxlan needs --remote or --group" : "--type geneve needs --remote")
                }
            }
            if group == nil && (dev != nil || ttl != nil) { throw ValidationError("--dev and --ttl need --group") }
            if let ttl, !(1...255).contains(ttl) { throw ValidationError("--ttl must be 1-255") }
            if let dev { try Validate.name(dev, "interface") }
            guard let vni else { throw ValidationError("--type \(type.rawValue) needs --vni") }
            guard (0...0xFF_FFFF).contains(vni) else { throw ValidationError("--vni must be 0-16777215") }
            if let dstPort, !(1...65535).contains(dstPort) { throw ValidationError("--dst-port must be 1-65535") }
            if learning && remotePrefix == nil {
                throw ValidationError("--learning needs --remote-prefix (remotes are never learned from anywhere by default)")
            }
            if remotePrefix != nil && !learning { throw ValidationError("--remote-prefix needs --learning") }
        }
        switch vlanMode {
        case nil:
            if tag != nil || trunks != nil { throw ValidationError("--tag and --trunks need --vlan-mode access or trunk") }
        case "access":
            guard let tag else { throw ValidationError("--vlan-mode access needs --tag") }
            guard (1...4094).contains(tag) else { throw ValidationError("--tag must be 1-4094") }
        case "trunk":
            guard let trunks, let list = trunkList, list.count == trunks.split(separator: ",").count, !list.isEmpty,
                  list.allSatisfy({ (1...4094).contains($0) }) else {
                throw ValidationError("--vlan-mode trunk needs --trunks with VLAN ids 1-4094 (e.g. 10,20)")
            }
            if let tag, !(1...4094).contains(tag) { throw ValidationError("--tag must be 1-4094") }
        default:
            throw ValidationError("--vlan-mode must be access or trunk")
        }
        if let mtu, !(68...65535).contains(mtu) { throw ValidationError("--mtu must be 68-65535") }
        if let queues, !(1...8).contains(queues) { throw ValidationError("--queues must be 1-8") }
        if let socketGroup {
            guard type == .vhostUser else {
                throw ValidationError("--socket-group applies to --type vhostuser only (for \(type.rawValue) QEMU creates the socket)")
            }
            guard !socketGroup.isEmpty, !socketGroup.contains("\0") else { throw ValidationError("--socket-group needs a group name") }
        }
    }
    public func makeRequest() -> ControlRequest {
        var request = ControlRequest(command: .addPort, bridge: bridge, port: port, type: type, path: path, ifname: ifname,
                       file: file.map(Validate.absolutePath), filter: filter, snaplen: snaplen,
                       rotateBytes: rotateSize.flatMap { try? Validate.size($0, "--rotate-size") },
                       rotateCount: rotateCount, watchPort: watchPort, direction: direction,
                       remotes: remote.map { $0.split(separator: ",").map(String.init) }, vni: vni, local: local,
                       dstPort: dstPort, vlanMode: vlanMode, tag: tag, trunks: trunkList, mtu: mtu, queues: queues,
                       socketGroup: socketGroup, captureFormat: global.format.captureFormat,
                       learning: learning ? true : nil, remotePrefix: remotePrefix, group: group, dev: dev, ttl: ttl)
        request.captureBuffer = bufferSize.flatMap { try? Validate.size($0, "--buffer-size") }
        request.captureCPU = captureCpu
        request.cpu = cpu
        return request
    }
}

public struct DeletePort: ControlSubcommand {
    public static let configuration = CommandConfiguration(
        commandName: "del-port", abstract: "Remove a port from a bridge.")
    @OptionGroup public var global: GlobalOptions
    @Argument(help: "Bridge name.") public var bridge: String
    @Argument(help: "Port name.") public var port: String
    public init() {}

    public func validate() throws {
        try Validate.name(bridge, "bridge")
        try Validate.name(port, "port")
    }
    public func makeRequest() -> ControlRequest {
        ControlRequest(command: .deletePort, bridge: bridge, port: port)
    }
}

public struct Show: ControlSubcommand {
    public static let configuration = CommandConfiguration(
        abstract: "Show bridges and ports: type, path, state, link, features, MTU, queues.")
    @OptionGroup public var global: GlobalOptions
    public init() {}

    public func makeRequest() -> ControlRequest { ControlRequest(command: .show) }
    public func renderText(_ result: ControlResult?) -> String {
        TextRendering.show(result?.bridges ?? [])
    }
}

public struct SetAging: ControlSubcommand {
    public static let configuration = CommandConfiguration(
        commandName: "set-aging", abstract: "Set a bridge's MAC address aging time.")
    @OptionGroup public var global: GlobalOptions
    @Argument(help: "Bridge name.") public var bridge: String
    @Argument(help: "Aging time in seconds (1-86400).") public var seconds: Int
    public init() {}

    public func validate() throws {
        try Validate.name(bridge, "bridge")
        try Validate.aging(seconds)
    }
    public func makeRequest() -> ControlRequest {
        ControlRequest(command: .setAging, bridge: bridge, agingSeconds: seconds)
    }
}

/// `vswitch fdb show|flush BRIDGE`: the MAC learning table.
public struct Fdb: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Inspect or flush a bridge's MAC learning table.",
        subcommands: [FdbShow.self, FdbFlush.self])
    public init() {}
}

public struct FdbShow: ControlSubcommand {
    public static let configuration = CommandConfiguration(
        commandName: "show", abstract: "List learned MAC addresses.")
    @OptionGroup public var global: GlobalOptions
    @Argument(help: "Bridge name.") public var bridge: String
    public init() {}

    public func validate() throws { try Validate.name(bridge, "bridge") }
    public func makeRequest() -> ControlRequest { ControlRequest(command: .fdbShow, bridge: bridge) }
    public func renderText(_ result: ControlResult?) -> String {
        TextRendering.fdb(result?.fdb ?? FdbTable(bridge: bridge, entries: []))
    }
}

public struct FdbFlush: ControlSubcommand {
    public static let configuration = CommandConfiguration(
        commandName: "flush", abstract: "Forget all learned MAC addresses.")
    @OptionGroup public var global: GlobalOptions
    @Argument(help: "Bridge name.") public var bridge: String
    public init() {}

    public func validate() throws { try Validate.name(bridge, "bridge") }
    public func makeRequest() -> ControlRequest { ControlRequest(command: .fdbFlush, bridge: bridge) }
}

/// `vswitch port stats BRIDGE [PORT]`.
public struct Port: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Inspect ports.", subcommands: [PortStatsCommand.self])
    public init() {}
}

public struct PortStatsCommand: ControlSubcommand {
    public static let configuration = CommandConfiguration(
        commandName: "stats", abstract: "Show packet, byte and drop counters of one or all ports.")
    @OptionGroup public var global: GlobalOptions
    @Argument(help: "Bridge name.") public var bridge: String
    @Argument(help: "Port name (default: all ports of the bridge).") public var port: String?
    public init() {}

    public func validate() throws {
        try Validate.name(bridge, "bridge")
        if let port { try Validate.name(port, "port") }
    }
    public func makeRequest() -> ControlRequest {
        ControlRequest(command: .portStats, bridge: bridge, port: port)
    }
    public func renderText(_ result: ControlResult?) -> String { TextRendering.stats(result?.stats ?? []) }
}

/// `vswitch dp-stats`: the forwarding thread's own counters.
public struct DatapathStatsCommand: ControlSubcommand {
    public static let configuration = CommandConfiguration(
        commandName: "dp-stats", abstract: "Show the forwarding thread's polls, sleeps, frames and CPU time.")
    @OptionGroup public var global: GlobalOptions
    public init() {}

    public func makeRequest() -> ControlRequest { ControlRequest(command: .datapathStats) }
    public func renderText(_ result: ControlResult?) -> String {
        guard let d = result?.datapath else { return "" }
        return TextRendering.datapath(d)
    }
}

/// `vswitch doctor [PORT]`: the daemon's checks of vhost-user ports and what to change.
public struct Doctor: ControlSubcommand {
    public static let configuration = CommandConfiguration(
        abstract: "Check vhost-user ports from the switch's side (socket, permissions, guest memory) and say what to change.")
    @OptionGroup public var global: GlobalOptions
    @Argument(help: "Port name (default: every vhost-user port).") public var port: String?
    public init() {}

    public func validate() throws {
        if let port { try Validate.name(port, "port") }
    }
    public func makeRequest() -> ControlRequest { ControlRequest(command: .doctor, port: port) }
    public func renderText(_ result: ControlResult?) -> String { TextRendering.doctor(result?.doctor ?? []) }
}
