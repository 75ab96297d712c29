import ArgumentParser
import Control
import SwitchModel

/// `vswitch add-mirror` / `del-mirror`: port mirroring (SPAN), like OVS mirrors.
public struct AddMirror: ControlSubcommand {
    public static let configuration = CommandConfiguration(
        commandName: "add-mirror", abstract: "Copy a bridge's selected frames to an output port (port mirroring).",
        discussion: """
            The output port (vhostuser, vhostuserclient, tap or vxlan) gets a copy of every selected frame,
            once per frame, and nothing else: no floods, no learned traffic; frames it sends are dropped.
            Use a TAP port with tcpdump, a monitoring guest, or a VXLAN port for a remote monitor.
            """)
    @OptionGroup public var global: GlobalOptions
    @Argument(help: "Bridge name.") public var bridge: String
    @Argument(help: "Mirror name.") public var mirror: String
    @Option(help: "Frames these ports send into the bridge, comma-separated.") public var selectSrc: String?
    @Option(help: "Frames the bridge delivers to these ports, comma-separated.") public var selectDst: String?
    @Option(help: "Frames in these VLANs, comma-separated (0: untagged).") public var selectVlan: String?
    @Flag(help: "Every frame of the bridge.") public var selectAll = false
    @Option(help: "The port the copies go to.") public var output: String
    public init() {}

    static func names(_ list: String?) -> [String] {
        (list ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    var vlans: [Int]? {
        guard let selectVlan else { return [] }
        let parts = selectVlan.split(separator: ",", omittingEmptySubsequences: false)
        let values = parts.compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        return values.count == parts.count ? values : nil
    }

    public func validate() throws {
        try Validate.name(bridge, "bridge")
        try Validate.name(mirror, "mirror")
        try Validate.name(output, "port")
        for p in Self.names(selectSrc) + Self.names(selectDst) { try Validate.name(p, "port") }
        guard let vlans, vlans.allSatisfy({ (0...4094).contains($0) }) else {
            throw ValidationError("--select-vlan needs VLAN ids 0-4094, comma-separated (e.g. 10,20)")
        }
        guard selectAll || !Self.names(selectSrc).isEmpty || !Self.names(selectDst).isEmpty || !vlans.isEmpty else {
            throw ValidationError("give at least one of --select-src, --select-dst, --select-vlan, --select-all")
        }
    }

    public func makeRequest() -> ControlRequest {
        ControlRequest(command: .addMirror, bridge: bridge, mirror: mirror, mirrorSpec: MirrorSpec(
            selectSrc: Self.names(selectSrc), selectDst: Self.names(selectDst), selectVlan: vlans ?? [],
            selectAll: selectAll, output: output))
    }
}

public struct DeleteMirror: ControlSubcommand {
    public static let configuration = CommandConfiguration(
        commandName: "del-mirror", abstract: "Delete a port mirror; its output becomes an ordinary port again.")
    @OptionGroup public var global: GlobalOptions
    @Argument(help: "Bridge name.") public var bridge: String
    @Argument(help: "Mirror name.") public var mirror: String
    public init() {}

    public func validate() throws {
        try Validate.name(bridge, "bridge")
        try Validate.name(mirror, "mirror")
    }
    public func makeRequest() -> ControlRequest { ControlRequest(command: .deleteMirror, bridge: bridge, mirror: mirror) }
}
