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
    static let defaultPort = 4789
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
    let receiveFd: Int32
    let sendFds: [Int32]
    let sourcePorts: [Int]
    /// `--remote-prefix` as given (normalised), with `--learning`; nil without.
    let learningPrefix: String?
    let state: UnsafeMutablePointer<VxlanState>

    init(spec: PortSpec) throws(SwitchError) {
        guard !spec.remotes.isEmpty else { throw .missingOption("--remote", kind: "vxlan") }
        guard let vni = spec.vni else { throw .missingOption("--vni", kind: "vxlan") }
        guard (0...0xFF_FFFF).contains(vni) else {
            throw .invalidOption("invalid VNI \(vni): use 0-16777215 (24 bits)")
        }
        let dstPort = spec.dstPort ?? Self.defaultPort
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
                throw .invalidOption("remote \(name): not a unicast address (multicast VXLAN groups are not supported)")
            }
            guard !addresses.contains(a) else { throw .invalidOption("remote \(name) is given twice") }
            // Our own floods would come back as the remote's and loop through the bridge.
            guard a != localAddress else { throw .invalidOption("remote \(name) is the tunnel's own --local address") }
            addresses.append(a)
        }
        let learn = try Self.learningPrefix(spec)
        self.vni = vni
        self.dstPort = dstPort
        self.local = localAddress == 0 ? "0.0.0.0" : Self.format(localAddress)
        remoteNames = spec.remotes.map(\.trimmingSpaces)
        remoteAddresses = addresses

        // The receive socket owns the tunnel's UDP port: if another program (such as the
        // kernel's own vxlan device with the same dstport) has it, stop here.
        let rfd = vs_udp_open(localAddress, UInt16(dstPort), Self.receiveBuffer)
        guard rfd >= 0 else { throw Self.bindError(errno, address: self.local, port: dstPort) }
        var fds: [Int32] = []
        var ports: [Int] = []
        for _ in 0..<VxlanState.sendSockets {
            let fd = vs_udp_open(localAddress, 0, 0)
            guard fd >= 0 else {
                let e = errno
                for f in fds + [rfd] { close(f) }
                throw .vxlan(.sendSocket(errno: e))
            }
            fds.append(fd)
            ports.append(Int(vs_udp_local_port(fd)))
        }
        receiveFd = rfd
        sendFds = fds
        sourcePorts = ports

        // RFC 7348 adds 50 bytes; the kernel refuses (EMSGSIZE) or fragments datagrams over
        // the route MTU, so frames that would not fit are dropped and counted instead.
        underlayMtu = addresses.map { Int(vs_udp_path_mtu(localAddress, $0, UInt16(dstPort))) }
        state = .allocate(capacity: 1)
        let header = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
        header.initialize(to: VxlanState.header(vni: UInt32(vni)))
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
            sendCount: fds.count, learned: learned))
        if let (prefix, mask) = learn {
            state.pointee.learning = true
            state.pointee.learnPrefix = prefix
            state.pointee.learnMask = mask
            // A learned remote's path MTU is not known: the smallest of the configured ones.
            state.pointee.learnedMaxFrame = underlayMtu.map(Self.largestInnerFrame).min() ?? Self.largestInnerFrame(underlayMtu: 0)
        }
        learningPrefix = learn.map { "\(Self.format($0.0))/\($0.1.nonzeroBitCount)" }
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
        close(receiveFd)
        for fd in sendFds { close(fd) }
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

extension String {
    var trimmingSpaces: String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
