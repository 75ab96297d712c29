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
    let remoteAddresses: [UInt32]
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
    private let membership: (UInt32, Int32)?
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
        var localAddress: UInt32 = 0
        if let local = spec.local, !local.isEmpty {
            localAddress = try Self.resolve(local, what: "local address")
        }
        var addresses: [UInt32] = []
        for name in spec.remotes {
            let a = try Self.resolve(name.trimmingSpaces, what: "remote")
            let firstOctet = UInt8(truncatingIfNeeded: a)     // network order: first byte is lowest
            guard a != 0, a != UInt32.max, !(224...239).contains(firstOctet) else {
                throw .invalidOption("remote \(name): not a unicast address (for a multicast group use --group)")
            }
            guard !addresses.contains(a) else { throw .invalidOption("remote \(name) is given twice") }
            // Our own floods would come back as the remote's and loop through the bridge.
            guard a != localAddress else { throw .invalidOption("remote \(name) is the tunnel's own --local address") }
            addresses.append(a)
        }
        // `--group`: floods go to the group; remotes are learned from any source (or from
        // `--remote-prefix`, if given), as the kernel's vxlan driver does in group mode.
        var groupAddress: UInt32 = 0
        var ifindex: Int32 = 0
        if let name = spec.group {
            groupAddress = try Self.resolve(name.trimmingSpaces, what: "group")
            guard (224...239).contains(UInt8(truncatingIfNeeded: groupAddress)) else {
                throw .invalidOption("group \(name): not a multicast address (use one of 224.0.0.0/4, e.g. 239.1.1.1)")
            }
            addresses = [groupAddress]
            if let dev = spec.dev {
                ifindex = Int32(bitPattern: if_nametoindex(dev))
                guard ifindex != 0 else { throw .invalidOption("--dev \(dev): no such interface") }
            }
        }
        var learn = try Self.learningPrefix(spec)
        if spec.group != nil && learn == nil { learn = (0, 0) }
        self.group = spec.group == nil ? nil : Self.format(groupAddress)
        self.dev = spec.dev
        self.ttl = ttl
        self.vni = vni
        self.dstPort = dstPort
        self.local = localAddress == 0 ? "0.0.0.0" : Self.format(localAddress)
        remoteNames = spec.remotes.map(\.trimmingSpaces)
        remoteAddresses = spec.group == nil ? addresses : []

        // The receive socket owns the tunnel's UDP port: if another program (such as the
        // kernel's own vxlan device with the same dstport) has it, stop here. With a group
        // it is bound to 0.0.0.0: a socket bound to a unicast address gets no multicast.
        // Other tunnel ports of this daemon on the same UDP port and address share it.
        let receiveAddress = spec.group == nil ? localAddress : 0
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
            let fd = vs_udp_open(localAddress, 0, 0)
            guard fd >= 0, spec.group == nil || vs_udp_multicast_sender(fd, ifindex, Int32(ttl)) == 0 else {
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

        // RFC 7348 adds 50 bytes; the kernel refuses (EMSGSIZE) or fragments datagrams over
        // the route MTU, so frames that would not fit are dropped and counted instead.
        underlayMtu = addresses.map { Int(vs_udp_path_mtu(localAddress, $0, UInt16(dstPort))) }
        state = .allocate(capacity: 1)
        let header = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
        header.initialize(to: spec.kind == .geneve ? GeneveCodec.header(vni: UInt32(vni)) : VxlanState.header(vni: UInt32(vni)))
        // Room for the remotes `--learning` may add after the configured ones.
        let remotes = UnsafeMutablePointer<UInt32>.allocate(capacity: VxlanState.remoteCapacity)
        remotes.initialize(repeating: 0, count: VxlanState.remoteCapacity)
        remotes.update(from: addresses, count: addresses.count)
        let maxFrame = UnsafeMutablePointer<Int>.allocate(capacity: VxlanState.remoteCapacity)
        maxFrame.initialize(repeating: 0, count: VxlanState.remoteCapacity)
        maxFrame.update(from: underlayMtu.map(Self.largestInnerFrame), count: addresses.count)
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
            state.pointee.learnMask = mask
            // A learned remote's path MTU is not known: the smallest of the configured ones.
            state.pointee.learnedMaxFrame = underlayMtu.map(Self.largestInnerFrame).min() ?? Self.largestInnerFrame(underlayMtu: 0)
        }
        learningPrefix = learn.map { "\(Self.format($0.0))/\($0.1.nonzeroBitCount)" }
    }

    /// The receive socket a port with `spec` needs: its address (network byte order; 0 for
    /// any, and always with `--group`) and UDP port. Ports with the same key share a socket.
    static func receiveKey(_ spec: PortSpec) throws(SwitchError) -> (address: UInt32, udpPort: Int) {
        let udpPort = spec.dstPort ?? defaultPort(spec.kind)
        guard spec.group == nil, let local = spec.local, !local.isEmpty else { return (0, udpPort) }
        return (try resolve(local, what: "local address"), udpPort)
    }

    /// `--learning --remote-prefix A.B.C.D/N`: the prefix and mask in network byte order, or
    /// nil without `--learning`. Remotes are never learned from anywhere by default.
    static func learningPrefix(_ spec: PortSpec) throws(SwitchError) -> (UInt32, UInt32)? {
        guard spec.learning == true else {
            if spec.remotePrefix != nil { throw .invalidOption("--remote-prefix needs --learning") }
            return nil
        }
        guard let text = spec.remotePrefix else {
            throw .invalidOption("--learning needs --remote-prefix: remotes are never learned from anywhere by default")
        }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let bits = Int(parts[1]), (0...32).contains(bits), !parts[0].isEmpty else {
            throw .invalidOption("invalid --remote-prefix '\(text)': use an IPv4 prefix such as 192.0.2.0/24")
        }
        var address: UInt32 = 0
        guard !String(parts[0]).contains(":"), inet_pton(AF_INET, String(parts[0]), &address) == 1 else {
            throw .invalidOption("invalid --remote-prefix '\(text)': use an IPv4 prefix such as 192.0.2.0/24")
        }
        let hostMask: UInt32 = bits == 0 ? 0 : UInt32.max << (32 - UInt32(bits))
        let mask = hostMask.bigEndian
        guard address & ~mask == 0 else {
            throw .invalidOption("--remote-prefix \(text) has host bits set (did you mean \(format(address & mask))/\(bits)?)")
        }
        return (address, mask)
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
    /// fits an underlay MTU: 36 bytes of IPv4, UDP and VXLAN go around it; a UDP datagram
    /// carries at most 65507 bytes. Unknown MTU: assume Ethernet's 1500.
    static func largestInnerFrame(underlayMtu mtu: Int) -> Int {
        let m = mtu > 0 ? mtu : 1500
        return min(m - VxlanState.ipUdpVxlanOverhead, 65507 - 8)
    }

    /// The largest guest MTU that fits every remote's path (an untagged inner frame).
    var guestMtu: Int {
        underlayMtu.map { Self.largestInnerFrame(underlayMtu: $0) - 14 }.min() ?? 0
    }

    static func resolve(_ name: String, what: String) throws(SwitchError) -> UInt32 {
        guard !name.isEmpty, name.utf8.count < 256, !name.contains("\0") else {
            throw .invalidOption("invalid \(what) '\(name)'")
        }
        if name.contains(":") {
            throw .invalidOption("\(what) \(name): IPv6 underlays are not supported (use an IPv4 address)")
        }
        var a: UInt32 = 0
        let rc = vs_resolve4(name, &a)
        guard rc == 0 else {
            throw .invalidOption("cannot resolve \(what) '\(name)': \(String(cString: vs_resolve_error(rc)))")
        }
        return a
    }

    static func format(_ a: UInt32) -> String {
        withUnsafeBytes(of: a) { $0.map(String.init).joined(separator: ".") }
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
    /// The bound address (IPv4, network byte order; 0: any) and UDP port.
    let address: UInt32
    let udpPort: Int
    let fd: Int32
    let state: UnsafeMutablePointer<TunnelSocketState>
    /// Multicast groups joined on this socket ((group, ifindex): ports in that group).
    private var groups: [UInt64: Int] = [:]

    init(kind: PortKind, address: UInt32, udpPort: Int) throws(SwitchError) {
        let fd = vs_udp_open(address, UInt16(udpPort), VxlanTunnel.receiveBuffer)
        guard fd >= 0 else {
            throw VxlanTunnel.bindError(errno, address: VxlanTunnel.format(address), port: udpPort)
        }
        self.kind = kind
        self.address = address
        self.udpPort = udpPort
        self.fd = fd
        state = .allocate(capacity: 1)
        state.initialize(to: TunnelSocketState(fd: fd))
    }

    /// IP_ADD_MEMBERSHIP for the first port in `group` on `ifindex`; later ones count.
    func join(group: UInt32, ifindex: Int32, dev: String?) throws(SwitchError) {
        let key = UInt64(group) << 32 | UInt64(UInt32(bitPattern: ifindex))
        if let n = groups[key] { groups[key] = n + 1; return }
        guard vs_udp_multicast_join(fd, group, ifindex) == 0 else {
            throw .invalidOption("cannot join group \(VxlanTunnel.format(group))\(dev.map { " on \($0)" } ?? ""): \(String(cString: strerror(errno)))")
        }
        groups[key] = 1
    }

    /// The last port in `group` on `ifindex` leaves it (IP_DROP_MEMBERSHIP).
    func leave(group: UInt32, ifindex: Int32) {
        let key = UInt64(group) << 32 | UInt64(UInt32(bitPattern: ifindex))
        guard let n = groups[key] else { return }
        if n > 1 { groups[key] = n - 1; return }
        groups[key] = nil
        _ = vs_udp_multicast_leave(fd, group, ifindex)
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
