import Datapath
import SwitchModel
import CShims
#if canImport(Glibc)
import Glibc
#endif

/// The control-plane side of a VXLAN tunnel port: checks the options, resolves the remotes,
/// opens the UDP sockets and owns the `VxlanState` the forwarding thread reads. Everything is
/// set up before the port slot exists, so a bad option creates nothing.
final class VxlanTunnel {
    /// IANA: 4789 for VXLAN (RFC 7348, 5), 6081 for Geneve (RFC 8926, 3.3).
    static func defaultPort(_ kind: PortKind) -> Int { kind == .geneve ? 6081 : 4789 }
    /// Receive buffer asked for (SO_RCVBUFFORCE as root, else capped by net.core.rmem_max):
    /// a burst from a fast remote must not overflow while the forwarding thread is busy.
    static let receiveBuffer: Int32 = 4 << 20

    let vni: Int
    let dstPort: Int
    let local: String
    let remoteNames: [String]
    let remoteAddresses: [TunnelAddress]
    /// An IPv6 underlay (all of the port's addresses are IPv6).
    let ipv6: Bool
    /// Underlay MTU towards each remote, when it was known.
    let underlayMtu: [Int]
    /// The receive socket, shared with the tunnel ports on the same UDP port and address.
    let socket: TunnelSocket
    var receiveFd: Int32 { socket.fd }
    let sendFds: [Int32]
    let sourcePorts: [Int]
    /// `--remote-prefix` as given (normalised), with `--learning`; nil without.
    let learningPrefix: String?
    /// `--group` (normalised), its `--dev` and TTL; nil without.
    let group: String?
    let dev: String?
    let ttl: Int
    /// The group membership this port added to `socket` (group, ifindex), left in deinit.
    private let membership: (TunnelAddress, Int32)?
    let state: UnsafeMutablePointer<VxlanState>

    /// `sharing`: the receive socket of other tunnel ports on the same UDP port and receive
    /// address (`receiveKey`), which this port joins with its own VNI; nil: a socket of its own.
    init(spec: PortSpec, sharing: TunnelSocket? = nil) throws(SwitchError) {
        if spec.group != nil && !spec.remotes.isEmpty {
            throw .invalidOption("--remote and --group are mutually exclusive (a tunnel floods to its remotes or to a multicast group)")
        }
        let kind = spec.kind.rawValue
        if spec.kind == .geneve && spec.group != nil { throw .invalidOption("--group applies to --type vxlan only") }
        guard !spec.remotes.isEmpty || spec.group != nil else { throw .missingOption("--remote", kind: kind) }
        if spec.group == nil && (spec.dev != nil || spec.ttl != nil) { throw .invalidOption("--dev and --ttl need --group") }
        let ttl = spec.ttl ?? 1
        guard (1...255).contains(ttl) else { throw .invalidOption("invalid --ttl \(ttl): use 1-255") }
        guard let vni = spec.vni else { throw .missingOption("--vni", kind: kind) }
        guard (0...0xFF_FFFF).contains(vni) else {
            throw .invalidOption("invalid VNI \(vni): use 0-16777215 (24 bits)")
        }
        let dstPort = spec.dstPort ?? Self.defaultPort(spec.kind)
        guard (1...65535).contains(dstPort) else { throw .invalidOption("invalid UDP port \(dstPort): use 1-65535") }
        guard spec.remotes.count <= VxlanState.maxRemotes else {
            throw .invalidOption("too many remotes (\(spec.remotes.count)): at most \(VxlanState.maxRemotes)")
        }
        // One address family per port: --local, the remotes, the group and --remote-prefix
        // are all IPv4 or all IPv6 (the receive and send sockets are of that family).
        var family: (v6: Bool, what: String)?
        func check(_ a: TunnelAddress, _ what: String) throws(SwitchError) {
            if let f = family, f.v6 != !a.isIPv4 {
                throw .invalidOption("\(what) is \(a.isIPv4 ? "IPv4" : "IPv6") but \(f.what) is \(f.v6 ? "IPv6" : "IPv4"): "
                    + "a tunnel's addresses must all be IPv4 or all IPv6")
            }
            if family == nil { family = (!a.isIPv4, what) }
        }
        var localAddress: TunnelAddress?
        if let local = spec.local, !local.isEmpty {
            let a = try Self.resolve(local, what: "local address")
            guard Self.isUnicast(a) else { throw .invalidOption("local address \(local): not a unicast address") }
            try check(a, "--local \(local)")
            localAddress = a
        }
        var addresses: [TunnelAddress] = []
        for name in spec.remotes {
            let a = try Self.resolve(name.trimmingSpaces, what: "remote")
            guard Self.isUnicast(a) else {
                throw .invalidOption("remote \(name): not a unicast address (for a multicast group use --group)")
            }
            try Self.checkScope(a, "remote \(name)")
            try check(a, "remote \(name.trimmingSpaces)")
            guard !addresses.contains(a) else { throw .invalidOption("remote \(name) is given twice") }
            // Our own floods would come back as the remote's and loop through the bridge.
            guard a != localAddress else { throw .invalidOption("remote \(name) is the tunnel's own --local address") }
            addresses.append(a)
        }
        // `--group`: floods go to the group; remotes are learned from any source (or from
        // `--remote-prefix`, if given), as the kernel's vxlan driver does in group mode.
        var groupAddress = TunnelAddress.zero
        var ifindex: Int32 = 0
        if let name = spec.group {
            groupAddress = try Self.resolve(name.trimmingSpaces, what: "group")
            guard Self.isMulticast(groupAddress) else {
                throw .invalidOption("group \(name): not a multicast address (use one of 224.0.0.0/4, e.g. 239.1.1.1, or of ff00::/8, e.g. ff05::100)")
            }
            try check(groupAddress, "group \(name.trimmingSpaces)")
            addresses = [groupAddress]
            if let dev = spec.dev {
                ifindex = Int32(bitPattern: if_nametoindex(dev))
                guard ifindex != 0 else { throw .invalidOption("--dev \(dev): no such interface") }
            }
        }
        let v6 = family?.v6 ?? false
        let local = localAddress ?? (v6 ? TunnelAddress.zero : TunnelAddress(ipv4: 0))
        var learn = try Self.learningPrefix(spec)
        if let (prefix, _) = learn { try check(prefix, "--remote-prefix \(spec.remotePrefix ?? "")") }
        if spec.group != nil && learn == nil { learn = (local.anyOfFamily, TunnelAddress.zero) }
        self.group = spec.group == nil ? nil : Self.format(groupAddress)
        self.dev = spec.dev
        self.ttl = ttl
        self.vni = vni
        self.dstPort = dstPort
        self.ipv6 = v6
        self.local = Self.format(local)
        remoteNames = spec.remotes.map(\.trimmingSpaces)
        remoteAddresses = spec.group == nil ? addresses : []

        // The receive socket owns the tunnel's UDP port: if another program (such as the
        // kernel's own vxlan device with the same dstport) has it, stop here. With a group
        // it is bound to the any address: a socket bound to a unicast address gets no multicast.
        // Other tunnel ports of this daemon on the same UDP port and address share it.
        let receiveAddress = spec.group == nil ? local : local.anyOfFamily
        let socket: TunnelSocket
        if let sharing { socket = sharing } else { socket = try TunnelSocket(kind: spec.kind, address: receiveAddress, udpPort: dstPort) }
        if spec.group != nil {
            try socket.join(group: groupAddress, ifindex: ifindex, dev: spec.dev)
            membership = (groupAddress, ifindex)
        } else {
            membership = nil
        }
        var fds: [Int32] = []
        var ports: [Int] = []
        for _ in 0..<VxlanState.sendSockets {
            var any = local
            let fd = vs_udp_open_addr(&any, 0, 0)
            guard fd >= 0, spec.group == nil || vs_udp_multicast_sender(fd, v6 ? 1 : 0, ifindex, Int32(ttl)) == 0 else {
                let e = errno
                if fd >= 0 { close(fd) }
                for f in fds { close(f) }
                if let (g, i) = membership { socket.leave(group: g, ifindex: i) }
                throw .vxlan(.sendSocket(errno: e))
            }
            fds.append(fd)
            ports.append(Int(vs_udp_local_port(fd)))
        }
        self.socket = socket
        sendFds = fds
        sourcePorts = ports

        // RFC 7348 adds 50 bytes over IPv4, 70 over IPv6; the kernel refuses (EMSGSIZE) or
        // fragments datagrams over the route MTU, so frames that would not fit are dropped
        // and counted instead.
        underlayMtu = addresses.map {
            var l = local, r = $0
            return Int(vs_udp_path_mtu(&l, &r, UInt16(dstPort)))
        }
        let inner = { (mtu: Int) in Self.largestInnerFrame(underlayMtu: mtu, ipv6: v6) }
        state = .allocate(capacity: 1)
        let header = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
        header.initialize(to: spec.kind == .geneve ? GeneveCodec.header(vni: UInt32(vni)) : VxlanState.header(vni: UInt32(vni)))
        // Room for the remotes `--learning` may add after the configured ones.
        let remotes = UnsafeMutablePointer<TunnelAddress>.allocate(capacity: VxlanState.remoteCapacity)
        remotes.initialize(repeating: .zero, count: VxlanState.remoteCapacity)
        remotes.update(from: addresses, count: addresses.count)
        let maxFrame = UnsafeMutablePointer<Int>.allocate(capacity: VxlanState.remoteCapacity)
        maxFrame.initialize(repeating: 0, count: VxlanState.remoteCapacity)
        maxFrame.update(from: underlayMtu.map(inner), count: addresses.count)
        let sends = UnsafeMutablePointer<Int32>.allocate(capacity: fds.count)
        sends.initialize(from: fds, count: fds.count)
        let learned = UnsafeMutablePointer<VxlanState.LearnedRemote>.allocate(capacity: VxlanState.tableSize)
        learned.initialize(repeating: VxlanState.LearnedRemote(), count: VxlanState.tableSize)
        state.initialize(to: VxlanState(
            header: header, vniWord: (UInt32(vni) << 8).bigEndian, dstPort: UInt16(dstPort),
            remoteCount: addresses.count, remotes: remotes, maxFrame: maxFrame, sendFds: sends,
            sendCount: fds.count, learned: learned, socket: socket.state))
        state.pointee.geneve = spec.kind == .geneve
        if let (prefix, mask) = learn {
            state.pointee.learning = true
            state.pointee.learnPrefix = prefix
            // An IPv4 prefix also matches the ::ffff:0:0/96 of the mapped form.
            state.pointee.learnMask = prefix.isIPv4 ? TunnelAddress.mask(bits: 96) | mask : mask
            // A learned remote's path MTU is not known: the smallest of the configured ones.
            state.pointee.learnedMaxFrame = underlayMtu.map(inner).min() ?? inner(0)
        }
        learningPrefix = learn.map { "\(Self.format($0.0))/\($0.1.bitCount)" }
    }

    /// The receive socket a port with `spec` needs: its address (the any address of the
    /// port's family without `--local`, and always with `--group`) and UDP port. Ports with
    /// the same key share a socket.
    static func receiveKey(_ spec: PortSpec) throws(SwitchError) -> (address: TunnelAddress, udpPort: Int) {
        let udpPort = spec.dstPort ?? defaultPort(spec.kind)
        if spec.group == nil, let local = spec.local, !local.isEmpty {
            return (try resolve(local, what: "local address"), udpPort)
        }
        // The family of the first remote or the group (the port's checks come later).
        let first = spec.group ?? spec.remotes.first ?? ""
        let v6 = first.isEmpty ? false : !(try resolve(first.trimmingSpaces, what: spec.group == nil ? "remote" : "group")).isIPv4
        return (v6 ? .zero : TunnelAddress(ipv4: 0), udpPort)
    }

    /// `--learning --remote-prefix A.B.C.D/N` or `X:X::/N`: the prefix and its mask over the
    /// address's own bits (IPv4: the first N of the last 32; the caller widens it to the
    /// mapped form), or nil without `--learning`. Remotes are never learned from anywhere by
    /// default.
    static func learningPrefix(_ spec: PortSpec) throws(SwitchError) -> (TunnelAddress, TunnelAddress)? {
        guard spec.learning == true else {
            if spec.remotePrefix != nil { throw .invalidOption("--remote-prefix needs --learning") }
            return nil
        }
        guard let text = spec.remotePrefix else {
            throw .invalidOption("--learning needs --remote-prefix: remotes are never learned from anywhere by default")
        }
        let usage = "invalid --remote-prefix '\(text)': use a prefix such as 192.0.2.0/24 or 2001:db8::/64"
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let bits = Int(parts[1]), !parts[0].isEmpty, !parts[1].hasPrefix("+") else {
            throw .invalidOption(usage)
        }
        var raw = [UInt8](repeating: 0, count: 16)
        let address: TunnelAddress
        if inet_pton(AF_INET6, String(parts[0]), &raw) == 1 {
            address = TunnelAddress(bytes: raw)
            guard (0...128).contains(bits), !address.isIPv4 else { throw .invalidOption(usage) }
        } else {
            var v4: UInt32 = 0
            guard inet_pton(AF_INET, String(parts[0]), &v4) == 1, (0...32).contains(bits) else { throw .invalidOption(usage) }
            address = TunnelAddress(ipv4: v4)
        }
        let mask = TunnelAddress.mask(bits: address.isIPv4 ? 96 + bits : bits)
        guard address & mask == address else {
            throw .invalidOption("--remote-prefix \(text) has host bits set (did you mean \(format(address & mask))/\(bits)?)")
        }
        // The IPv4 mask without the mapped form's 96 bits (the caller adds them back).
        return (address, address.isIPv4 ? mask & ~TunnelAddress.mask(bits: 96) : mask)
    }

    /// Runs after the engine has released the port's slot (the port object goes last).
    deinit {
        if let (g, i) = membership { socket.leave(group: g, ifindex: i) }
        for fd in sendFds { close(fd) }     // the receive socket closes with its last port
        state.pointee.header.deallocate()
        state.pointee.remotes.deallocate()
        state.pointee.maxFrame.deallocate()
        state.pointee.sendFds.deallocate()
        state.pointee.learned.deallocate()
        state.deallocate()
    }

    /// The largest inner Ethernet frame (with its 14-byte header, VLAN tag included) that
    /// fits an underlay MTU: 36 bytes of IPv4, UDP and VXLAN go around it (56 over IPv6); a
    /// UDP datagram carries at most 65507 bytes. Unknown MTU: assume Ethernet's 1500.
    static func largestInnerFrame(underlayMtu mtu: Int, ipv6: Bool = false) -> Int {
        let m = mtu > 0 ? mtu : 1500
        return min(m - (ipv6 ? VxlanState.ip6UdpVxlanOverhead : VxlanState.ipUdpVxlanOverhead), 65507 - 8)
    }

    /// Bytes the tunnel adds on the wire around a guest frame: outer Ethernet, IP, UDP and
    /// the 8-byte header: 50 over IPv4, 70 over IPv6.
    var overhead: Int { 14 + (ipv6 ? VxlanState.ip6UdpVxlanOverhead : VxlanState.ipUdpVxlanOverhead) }

    /// The largest guest MTU that fits every remote's path (an untagged inner frame).
    var guestMtu: Int {
        underlayMtu.map { Self.largestInnerFrame(underlayMtu: $0, ipv6: ipv6) - 14 }.min() ?? 0
    }

    static func resolve(_ name: String, what: String) throws(SwitchError) -> TunnelAddress {
        guard !name.isEmpty, name.utf8.count < 256, !name.contains("\0") else {
            throw .invalidOption("invalid \(what) '\(name)'")
        }
        if name.contains("%") {
            throw .invalidOption("\(what) \(name): scoped addresses are not supported (use a global IPv6 address)")
        }
        var a = TunnelAddress.zero
        let rc = vs_resolve(name, &a)
        guard rc == 0 else {
            throw .invalidOption("cannot resolve \(what) '\(name)': \(String(cString: vs_resolve_error(rc)))")
        }
        return a
    }

    /// Not the any address, broadcast or multicast (IPv4 224.0.0.0/4, IPv6 ff00::/8).
    static func isUnicast(_ a: TunnelAddress) -> Bool {
        if a.isIPv4 { return a.ipv4 != 0 && a.ipv4 != UInt32.max && !isMulticast(a) }
        return a != .zero && !isMulticast(a)
    }

    static func isMulticast(_ a: TunnelAddress) -> Bool {
        a.isIPv4 ? (224...239).contains(a.byte(12)) : a.byte(0) == 0xff
    }

    /// A link-local IPv6 remote (fe80::/10) would need an interface scope, which a remote
    /// does not carry here.
    static func checkScope(_ a: TunnelAddress, _ what: String) throws(SwitchError) {
        guard !a.isIPv4, a.byte(0) == 0xfe, a.byte(1) & 0xc0 == 0x80 else { return }
        throw .invalidOption("\(what): link-local IPv6 addresses are not supported (use a global address, e.g. 2001:db8::2)")
    }

    static func format(_ a: TunnelAddress) -> String {
        var a = a
        var buffer = [CChar](repeating: 0, count: 64)
        guard vs_addr_format(&a, &buffer, Int32(buffer.count)) == 0 else { return "?" }
        return String(cString: buffer)
    }

    static func bindError(_ e: Int32, address: String, port: Int) -> SwitchError {
        switch e {
        case EADDRINUSE:
            return .vxlan(.addressInUse(address: address, udpPort: port))
        case EADDRNOTAVAIL:
            return .vxlan(.notLocal(address: address))
        case EACCES:
            return .vxlan(.bindNotPermitted(udpPort: port))
        default:
            return .vxlan(.bind(address: address, udpPort: port, errno: e))
        }
    }
}

/// A UDP receive socket of tunnel ports: one per UDP port and receive address, shared by every
/// tunnel port there, each with its own VNI (the datapath demultiplexes by VNI,
/// `TunnelSocketState`). Ports hold it; it closes when the last one goes (after its slot).
final class TunnelSocket {
    let kind: PortKind
    /// The bound address (the any address of its family, or a local one) and UDP port.
    let address: TunnelAddress
    let udpPort: Int
    let fd: Int32
    let state: UnsafeMutablePointer<TunnelSocketState>
    /// Multicast groups joined on this socket ((group, ifindex): ports in that group).
    private var groups: [TunnelAddress: [Int32: Int]] = [:]

    init(kind: PortKind, address: TunnelAddress, udpPort: Int) throws(SwitchError) {
        var a = address
        let fd = vs_udp_open_addr(&a, UInt16(udpPort), VxlanTunnel.receiveBuffer)
        guard fd >= 0 else {
            throw VxlanTunnel.bindError(errno, address: VxlanTunnel.format(address), port: udpPort)
        }
        // UDP GRO: the kernel may hand over several datagrams of one size from one source in
        // one message (64 KiB at most: the receive buffers are `localBufferSize`); the
        // datapath splits them (`receiveFromTunnel`). A kernel without it (before 5.0) gives
        // one datagram per message, as before.
        _ = vs_udp_enable_gro(fd)
        self.kind = kind
        self.address = address
        self.udpPort = udpPort
        self.fd = fd
        state = .allocate(capacity: 1)
        state.initialize(to: TunnelSocketState(fd: fd))
    }

    /// IP_ADD_MEMBERSHIP (IPV6_JOIN_GROUP) for the first port in `group` on `ifindex`; later
    /// ones count.
    func join(group: TunnelAddress, ifindex: Int32, dev: String?) throws(SwitchError) {
        if let n = groups[group]?[ifindex] { groups[group]![ifindex] = n + 1; return }
        var g = group
        guard vs_udp_multicast_join(fd, &g, ifindex) == 0 else {
            throw .invalidOption("cannot join group \(VxlanTunnel.format(group))\(dev.map { " on \($0)" } ?? ""): \(String(cString: strerror(errno)))")
        }
        groups[group, default: [:]][ifindex] = 1
    }

    /// The last port in `group` on `ifindex` leaves it.
    func leave(group: TunnelAddress, ifindex: Int32) {
        guard let n = groups[group]?[ifindex] else { return }
        if n > 1 { groups[group]![ifindex] = n - 1; return }
        groups[group]![ifindex] = nil
        var g = group
        _ = vs_udp_multicast_leave(fd, &g, ifindex)
    }

    deinit {
        close(fd)
        state.pointee.deallocate()
        state.deallocate()
    }
}

extension String {
    var trimmingSpaces: String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
