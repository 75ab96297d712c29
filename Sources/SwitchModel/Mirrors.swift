/// A port mirror as the user defines it (`vswitch add-mirror`): which frames of a bridge it
/// selects and the port their copies go to. Port names are the bridge's.
public struct MirrorSpec: Codable, Sendable, Equatable {
    /// Frames these ports send into the bridge.
    public var selectSrc: [String]
    /// Frames the bridge delivers to these ports.
    public var selectDst: [String]
    /// Frames in these VLANs (tag, or the access VLAN of the port they came from).
    public var selectVlan: [Int]
    /// Every frame of the bridge.
    public var selectAll: Bool
    public var output: String

    public init(selectSrc: [String] = [], selectDst: [String] = [], selectVlan: [Int] = [], selectAll: Bool = false,
                output: String) {
        self.selectSrc = selectSrc
        self.selectDst = selectDst
        self.selectVlan = selectVlan
        self.selectAll = selectAll
        self.output = output
    }

    /// What `show` prints for the selection: "all", or "src vm1,vm2 dst vm1 vlan 10".
    public var selectionDescription: String {
        if selectAll { return "all" }
        var parts: [String] = []
        if !selectSrc.isEmpty { parts.append("src " + selectSrc.joined(separator: ",")) }
        if !selectDst.isEmpty { parts.append("dst " + selectDst.joined(separator: ",")) }
        if !selectVlan.isEmpty { parts.append("vlan " + selectVlan.map(String.init).joined(separator: ",")) }
        return parts.joined(separator: " ")
    }
}

/// A mirror in `show`: its definition and what it did.
public struct MirrorInfo: Codable, Sendable, Equatable {
    public var name: String
    public var spec: MirrorSpec
    /// Copies delivered to the output port.
    public var mirrored: UInt64
    /// Copies the output could not take (full ring, over its MTU).
    public var dropped: UInt64
    /// Frames the output port sent into the bridge (dropped: an output is not a member).
    public var outputSentDropped: UInt64

    public init(name: String, spec: MirrorSpec, mirrored: UInt64, dropped: UInt64, outputSentDropped: UInt64) {
        self.name = name
        self.spec = spec
        self.mirrored = mirrored
        self.dropped = dropped
        self.outputSentDropped = outputSentDropped
    }
}
