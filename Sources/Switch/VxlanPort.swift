import Datapath
import SwitchModel
/// `add-port --type vxlan`: the tunnel's sockets come first, then the engine slot, so a bad
/// option or a busy UDP port leaves nothing behind.
extension SwitchController {
    func makeVxlanPort(bridge b: Int, name: String, spec: PortSpec, at place: Place) throws(SwitchError) -> Port {
        // Tunnel ports on the same UDP port and address share one receive socket and are told
        // apart by VNI: only a VNI already taken there, another encapsulation or another
        // address on the same UDP port is refused.
        let key = try VxlanTunnel.receiveKey(spec)
        var shared: TunnelSocket?
        for other in bridges.flatMap(\.ports) {
            // IPv6 sockets are IPV6_V6ONLY: an IPv4 and an IPv6 port on one UDP port do not meet.
            guard case .vxlan(let t) = other.attachment, t.socket.udpPort == key.udpPort,
                  t.socket.address.isIPv4 == key.address.isIPv4 else { continue }
            let bridgeName = bridges.first { $0.ports.contains { $0 === other } }?.name ?? "?"
            if t.socket.kind != spec.kind {
                throw .udpPortInUse(key.udpPort, port: other.name, reason: "a \(t.socket.kind.rawValue) port; \(PortKind.vxlan.rawValue) and \(PortKind.geneve.rawValue) ports cannot share a UDP port")
            }
            if t.socket.address != key.address {
                throw .udpPortInUse(key.udpPort, port: other.name, reason: "bound to \(VxlanTunnel.format(t.socket.address)); ports on one UDP port need the same --local, and a --group port binds the any address")
            }
            if t.vni == spec.vni {
                throw .vniInUse(vni: t.vni, udpPort: key.udpPort, port: other.name, bridge: bridgeName)
            }
            // The shared socket's VNI table holds slots of one engine, and one thread reads it.
            if other.engine !== place.engine {
                throw .udpPortInUse(key.udpPort, port: other.name, reason: "on bridge \(bridgeName), which forwarding thread \(other.engine.threadName) runs, and this port would be on \(place.engine.threadName): tunnel ports that share a UDP port must be on bridges of one thread (give this port another --dst-port or --local, or create the bridges with add-br --cpu on one CPU)")
            }
            shared = t.socket
        }
        let tunnel = try VxlanTunnel(spec: spec, sharing: shared)
        let (engine, bridgeSlot) = place
        let state = tunnel.state
        guard let slot = engine.sync({ $0.addTunnelPort(bridge: bridgeSlot, tunnel: state) }) else {
            throw .tooMany("ports")
        }
        // `show` prints this after the type; the options carry the rest (VNI, ports, local).
        let remotes = tunnel.group.map { "group \($0)" } ?? tunnel.remoteNames.joined(separator: ",")
        return Port(name: name, spec: spec, path: remotes, slot: slot, engine: engine, attachment: .vxlan(tunnel))
    }

    func vxlanSnapshot(_ p: Port, _ t: VxlanTunnel) -> PortInfo {
        let mtus = t.underlayMtu.map { $0 > 0 ? String($0) : "?" }.joined(separator: ",")
        var learned: [String: String] = [:]
        if let prefix = t.learningPrefix {
            let state = t.state
            let addresses = p.engine.sync { _ in
                (state.pointee.floodCount..<state.pointee.remoteCount).map { state.pointee.remotes[$0] }
            }
            learned = ["learning": prefix, "learned_remotes": addresses.isEmpty ? "-" : addresses.map(VxlanTunnel.format).joined(separator: ",")]
        }
        if let group = t.group {
            learned["group"] = group
            learned["ttl"] = String(t.ttl)
            learned["dev"] = t.dev ?? "-"
        }
        return info(p, state: "attached", linkUp: true, mtu: t.guestMtu,
                    options: learned.merging(["remote": t.remoteNames.isEmpty ? "-" : t.remoteNames.joined(separator: ","),
                                      "remote_ip": t.remoteAddresses.isEmpty ? "-" : t.remoteAddresses.map(VxlanTunnel.format).joined(separator: ","),
                                      "vni": String(t.vni), "dst_port": String(t.dstPort), "local": t.local,
                                      "src_ports": t.sourcePorts.map(String.init).joined(separator: ","),
                                      "underlay_mtu": mtus, "overhead": String(t.overhead)]) { a, _ in a })
    }

    /// True for tunnel ports (their `port stats` include the tunnel drop counters).
    public func isTunnel(bridge: String, port: String) -> Bool {
        bridges.first { $0.name == bridge }?.ports.contains { $0.name == port && $0.kind.isTunnel } ?? false
    }
}
