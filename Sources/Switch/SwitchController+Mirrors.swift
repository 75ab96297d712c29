import Datapath
import SwitchModel

/// Port mirrors of a bridge (`vswitch add-mirror`), checked here and handed to the engine
/// (Datapath/Forwarding/Mirrors.swift) as port slots.
extension SwitchController {
    struct Mirror {
        let name: String
        let spec: MirrorSpec
        /// The engine's mirror slot.
        let index: Int

        /// Whether the mirror names port `port` (as output or selection).
        func names(_ port: String) -> Bool {
            spec.output == port || spec.selectSrc.contains(port) || spec.selectDst.contains(port)
        }
    }

    public func addMirror(bridge: String, name: String, spec: MirrorSpec) throws(SwitchError) {
        let b = try bridgeIndex(bridge)
        guard Self.isValidName(name) else { throw .invalidName(name) }
        try refuseIfSpanning(b, "a mirror")
        guard !bridges[b].mirrors.contains(where: { $0.name == name }) else {
            throw .invalidOption("bridge \(bridge) already has a mirror named \(name)")
        }
        guard spec.selectAll || !spec.selectSrc.isEmpty || !spec.selectDst.isEmpty || !spec.selectVlan.isEmpty else {
            throw .invalidOption("mirror \(name) selects nothing: give --select-src, --select-dst, --select-vlan or --select-all")
        }
        func member(_ port: String, as role: String) throws(SwitchError) -> Int {
            guard let p = bridges[b].ports.first(where: { $0.name == port }) else {
                throw .noSuchPort(bridge: bridge, port: port)
            }
            guard p.slot >= 0 else {
                throw .invalidOption("port \(port) is a \(p.kind.rawValue) port, not a bridge member: it cannot be a mirror's \(role)")
            }
            return p.slot
        }
        let output = try member(spec.output, as: "output")
        if spec.selectSrc.contains(spec.output) || spec.selectDst.contains(spec.output) {
            throw .invalidOption("mirror \(name): its output \(spec.output) cannot be one of the ports it selects")
        }
        if let other = bridges[b].mirrors.first(where: { $0.spec.output == spec.output }) {
            throw .invalidOption("port \(spec.output) is already the output of mirror \(other.name): one mirror per output port")
        }
        var sources: [Int] = [], destinations: [Int] = []
        for p in spec.selectSrc { sources.append(try member(p, as: "selected port")) }
        for p in spec.selectDst { destinations.append(try member(p, as: "selected port")) }
        if let bad = spec.selectVlan.first(where: { !(0...4094).contains($0) }) {
            throw .invalidOption("invalid --select-vlan \(bad): use 0-4094 (0: untagged)")
        }
        let used = Set(bridges.flatMap(\.mirrors).map(\.index))
        guard let index = (0..<ForwardingEngine.maxMirrors).first(where: { !used.contains($0) }) else { throw .tooMany("mirrors") }
        let bridgeSlot = bridges[b].slot
        let vlans = spec.selectVlan.isEmpty ? nil : spec.selectVlan.map { UInt16($0) }
        bridges[b].engine.sync { $0.setMirror(index, bridge: bridgeSlot, output: output, sources: sources, destinations: destinations,
                                   vlans: vlans, all: spec.selectAll) }
        bridges[b].mirrors.append(Mirror(name: name, spec: spec, index: index))
        logger.info("mirror added", metadata: ["bridge": "\(bridge)", "mirror": "\(name)",
                                               "select": "\(spec.selectionDescription)", "output": "\(spec.output)"])
    }

    public func deleteMirror(bridge: String, name: String) throws(SwitchError) {
        let b = try bridgeIndex(bridge)
        guard let i = bridges[b].mirrors.firstIndex(where: { $0.name == name }) else {
            throw .noSuchMirror(bridge: bridge, mirror: name)
        }
        let index = bridges[b].mirrors.remove(at: i).index
        bridges[b].engine.sync { $0.removeMirror(index) }
        logger.info("mirror deleted", metadata: ["bridge": "\(bridge)", "mirror": "\(name)"])
    }

    func mirrorSnapshot(_ m: Mirror, engine: ForwardingEngine) -> MirrorInfo {
        let index = m.index
        let c = engine.sync { $0.mirrorCounters(index) }
        return MirrorInfo(name: m.name, spec: m.spec, mirrored: c.mirrored, dropped: c.dropped, outputSentDropped: c.outputSent)
    }
}
