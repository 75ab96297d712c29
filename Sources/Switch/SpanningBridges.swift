import Datapath
import SwitchModel

/// Bridges whose ports run on several forwarding threads (`add-port --cpu N` with a CPU
/// other than the bridge's).
///
/// The bridge then has a *half* on each thread that runs one of its ports: a bridge slot in
/// that engine, and a peer port towards every other half (a `PeerLink`: a lock-free ring each
/// way, PeerLink.swift). Each half learns on its own; a frame for a port on another thread
/// crosses one ring. What a spanning bridge cannot have yet: mirrors, captures and VLAN
/// policies (they would have to see or tag frames in every half); each is refused with the
/// reason, and a bridge that has one cannot span.
extension SwitchController {
    /// A bridge's part on one more thread.
    struct Half {
        let engine: ForwardingEngine
        /// The bridge slot in `engine`.
        let slot: Int
    }

    /// An engine and a bridge slot in it: where a new port's slot is made.
    typealias Place = (engine: ForwardingEngine, slot: Int)

    /// A link between two parts and its two peer ports (engine, port slot). The link (its
    /// rings) must outlive both peer ports.
    struct Link {
        let link: PeerLink
        let ends: [(engine: ForwardingEngine, port: Int)]
    }

    /// Every (engine, bridge slot) of bridge `b`: its own first, then its halves.
    func parts(_ b: Bridge) -> [Place] {
        [(b.engine, b.slot)] + b.halves.map { ($0.engine, $0.slot) }
    }

    func spans(_ b: Int) -> Bool { !bridges[b].halves.isEmpty }

    /// Refuses `what` on a bridge that spans threads.
    func refuseIfSpanning(_ b: Int, _ what: String) throws(SwitchError) {
        guard spans(b) else { return }
        throw .invalidOption("bridge \(bridges[b].name) has ports on several forwarding threads (add-port --cpu): \(what) is not supported on it yet")
    }

    /// Where a new port of bridge `b` goes: the bridge's own engine, or with `spec.cpu` the
    /// thread of that CPU, whose half is created (and linked to every other half) the first
    /// time.
    func placement(bridge b: Int, spec: PortSpec) throws(SwitchError) -> Place {
        if spec.vlanMode != nil { try refuseIfSpanning(b, "a VLAN policy") }
        guard let cpu = spec.cpu else { return (bridges[b].engine, bridges[b].slot) }
        let engine = threads.engines[try engineOnCPU(cpu)]
        if let place = parts(bridges[b]).first(where: { $0.engine === engine }) { return place }
        // A new half: nothing of the bridge may need to see all its frames.
        let name = bridges[b].name
        guard spec.kind != .pcap else { throw .invalidOption("--cpu: a pcap port has no thread of its own (it records its bridge's)") }
        guard spec.vlanMode == nil, !bridges[b].ports.contains(where: { $0.spec.vlanMode != nil }) else {
            throw .invalidOption("--cpu \(cpu): bridge \(name) has VLAN policies; its ports must stay on its thread")
        }
        guard bridges[b].mirrors.isEmpty, !bridges[b].ports.contains(where: { $0.kind == .pcap }) else {
            throw .invalidOption("--cpu \(cpu): bridge \(name) has mirrors or pcap ports; its ports must stay on its thread")
        }
        let aging = UInt32(bridges[b].agingSeconds)
        guard let slot = engine.sync({ $0.addBridge(agingSeconds: aging) }) else { throw .tooMany("bridges") }
        var links: [Link] = []
        var added: [(ForwardingEngine, Int)] = []   // peer ports made so far, undone on failure
        var pending: PeerLink?
        for other in parts(bridges[b]) {
            let link = PeerLink()
            pending = link
            let (mine, theirs) = (link.ends.0, link.ends.1)
            let otherSlot = other.slot
            let here = engine.sync { $0.addPeerPort(bridge: slot, end: mine) }
            if let here { added.append((engine, here)) }
            let there = here == nil ? nil : other.engine.sync { $0.addPeerPort(bridge: otherSlot, end: theirs) }
            if let there { added.append((other.engine, there)) }
            guard let here, let there else {
                for (e, p) in added { e.sync { $0.removePort(p) } }   // before `links` lets go of the rings
                engine.sync { $0.removeBridge(slot) }
                withExtendedLifetime(pending) {}
                throw .tooMany("ports")
            }
            links.append(Link(link: link, ends: [(engine, here), (other.engine, there)]))
        }
        bridges[b].halves.append(Half(engine: engine, slot: slot))
        bridges[b].links += links
        logger.info("bridge spans threads", metadata: ["bridge": "\(name)", "thread": "\(engine.threadName)"])
        return (engine, slot)
    }

    /// Removes the halves that run none of the bridge's ports (after `del-port`, or a port
    /// that could not be made): their peer ports on both sides, then their bridge slots, so
    /// floods stop being copied to threads that have no one to give them to.
    func dropEmptyHalves(_ b: Int) {
        for h in bridges[b].halves where !bridges[b].ports.contains(where: { $0.engine === h.engine }) {
            let gone = bridges[b].links.filter { l in l.ends.contains { $0.engine === h.engine } }
            bridges[b].links.removeAll { l in l.ends.contains { $0.engine === h.engine } }
            for l in gone { for (e, p) in l.ends { e.sync { $0.removePort(p) } } }   // `gone` keeps the rings until here
            let slot = h.slot
            h.engine.sync { $0.removeBridge(slot) }
            bridges[b].halves.removeAll { $0.engine === h.engine }
            logger.info("bridge left thread", metadata: ["bridge": "\(bridges[b].name)", "thread": "\(h.engine.threadName)"])
        }
    }

    /// `del-br`: the halves' bridge slots (with their peer ports) go, before the links do.
    func removeHalves(_ b: Int) {
        for h in bridges[b].halves {
            let slot = h.slot
            h.engine.sync { $0.removeBridge(slot) }
        }
    }
}
