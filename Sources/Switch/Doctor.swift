import SwitchModel
import VhostUser
#if canImport(Glibc)
import Glibc
#endif

/// `vswitch doctor`: what the daemon can check of a vhost-user port from its side of the
/// socket, and what to change. The checks that matter most are the ones QEMU reports only
/// in its own log: a socket file its user may not open, and guest memory the switch cannot
/// share.
extension SwitchController {
    public func doctor(port name: String?) throws(SwitchError) -> [DoctorReport] {
        let ports = bridges.flatMap { b in b.ports.map { (b.name, $0) } }.filter { $0.1.endpoint != nil }
        let chosen = name.map { n in ports.filter { $0.1.name == n } } ?? ports
        if let name, chosen.isEmpty {
            guard let owner = bridges.first(where: { $0.ports.contains { $0.name == name } }) else {
                throw .invalidOption("no port named \(name)")
            }
            throw .invalidOption("port \(name) of bridge \(owner.name) is not a vhost-user port: doctor checks vhost-user ports")
        }
        return chosen.compactMap { bridge, port in
            port.endpoint.map { DoctorReport(bridge: bridge, port: port.name, checks: checks(port, $0)) }
        }
    }

    private func checks(_ port: Port, _ endpoint: VhostUserEndpoint) -> [DoctorCheck] {
        var out: [DoctorCheck] = []
        if let reason = linkReason(endpoint, broken: nil) {
            out.append(DoctorCheck(.problem, "link down: \(reason.0)"))
        } else {
            out.append(DoctorCheck(.ok, "link up"))
        }
        out += endpoint.role == .server ? serverSocketChecks(port, endpoint) : clientSocketChecks(endpoint)
        if let peer = endpoint.peer {
            out.append(DoctorCheck(.ok, "frontend: pid \(peer.pid), user \(SocketAccess.userName(peer.uid))"))
        }
        out += GuestMemoryCheck.checks(endpoint)
        return out
    }

    /// The switch created the socket: can the usual QEMU users reach it, and will it still
    /// be so after a reboot?
    private func serverSocketChecks(_ port: Port, _ endpoint: VhostUserEndpoint) -> [DoctorCheck] {
        guard let access = SocketAccess.inspect(endpoint.path) else {
            return [DoctorCheck(.problem, "socket \(endpoint.path) does not exist",
                                fix: "something removed it: vswitch del-port and add-port again")]
        }
        var out = [DoctorCheck(.ok, "socket \(endpoint.path): \(access.description)")]
        for user in access.allowed { out.append(DoctorCheck(.ok, "\(user) may connect")) }
        if let blocker = access.blocker {
            out.append(DoctorCheck(.problem, "\(access.denied.joined(separator: " and ")) cannot reach the socket: \(blocker)",
                                   fix: "put the socket in a directory QEMU's user can search (e.g. the run directory), or chmod o+x that directory"))
        }
        for user in access.denied where access.blocker == nil {
            let groups = SocketAccess.groups(of: user)
            let pick = groups.contains("kvm") ? "kvm" : groups.first ?? "GROUP"
            out.append(DoctorCheck(.problem, "\(user) may not connect (it is in \(groups.joined(separator: ", ")); the socket is \(access.description))",
                                   fix: "vswitchd --socket-group \(pick), or vswitch add-port ... --socket-group \(pick); check the directories above the socket too"))
        }
        if port.spec.socketGroup == nil && socketGroup == nil && access.group != SocketAccess.groupName(getegid()) {
            out.append(DoctorCheck(.warning, "the socket's group \(access.group) comes from its directory, not from --socket-group",
                                   fix: "a directory under /run is created again after a reboot without it: use vswitchd --socket-group \(access.group)"))
        }
        return out
    }

    /// QEMU created the socket (server=on): vswitchd connects, so only its own access matters.
    private func clientSocketChecks(_ endpoint: VhostUserEndpoint) -> [DoctorCheck] {
        var st = stat()
        guard lstat(endpoint.path, &st) == 0 else {
            return [DoctorCheck(.problem, "\(endpoint.path) does not exist",
                                fix: "start the guest (QEMU creates it with server=on; libvirt: <source mode='server'>)")]
        }
        guard st.st_mode & S_IFMT == S_IFSOCK else {
            return [DoctorCheck(.problem, "\(endpoint.path) is not a socket", fix: "remove it and restart the guest")]
        }
        let desc = SocketAccess.describe(st)
        if geteuid() != 0 && access(endpoint.path, W_OK) != 0 {
            return [DoctorCheck(.problem, "socket \(endpoint.path) (\(desc)) is not writable by vswitchd",
                                fix: "run vswitchd as root or in the socket's group")]
        }
        return [DoctorCheck(.ok, "socket \(endpoint.path): \(desc), created by the frontend")]
    }
}
