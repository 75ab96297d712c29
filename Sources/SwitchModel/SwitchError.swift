#if canImport(Glibc)
import Glibc
#endif

/// What the control plane refuses, and why. Each case carries the values it is about (a
/// name, a path, an errno), and `description` words the one line the CLI prints, so code
/// and tests can match on what went wrong instead of on text.
public enum SwitchError: Error, Equatable, CustomStringConvertible {
    case invalidName(String)
    case bridgeExists(String)
    case noSuchBridge(String)
    case portExists(String)
    case noSuchPort(bridge: String, port: String)
    case pathInUse(path: String, port: String)
    case invalidPath(String)
    case invalidAging(Int)
    case tooMany(String)
    case missingOption(String, kind: String)
    case invalidOption(String)
    case noSuchMirror(bridge: String, mirror: String)
    /// A port a mirror names cannot be deleted before the mirror.
    case portInMirror(port: String, mirror: String)
    /// A vhost-user endpoint could not listen on (or prepare) its socket.
    case endpoint(path: String, reason: String)
    /// The TAP interface is already a port of this switch.
    case tapInUse(ifname: String, port: String)
    /// The kernel refused the TAP interface.
    case tap(ifname: String, TapFailure)
    /// A tunnel port of another kind or address already receives on this UDP port.
    case udpPortInUse(Int, port: String, reason: String)
    /// Tunnel ports on one UDP port share a socket and are told apart by VNI: this one is taken.
    case vniInUse(vni: Int, udpPort: Int, port: String, bridge: String)
    /// A VXLAN port's sockets could not be set up.
    case vxlan(VxlanFailure)
    /// libpcap could not open a dumper on the live-capture connection.
    case libpcap(String)
    /// The live-capture connection could not be turned into a stream.
    case captureStream

    public enum TapFailure: Equatable, Sendable {
        case noTunDevice, busy, otherOwner, notPermitted, notATap, invalidName
        case linkUp(errno: Int32)
        case system(errno: Int32)
    }

    public enum VxlanFailure: Equatable, Sendable {
        case sendSocket(errno: Int32)
        case addressInUse(address: String, udpPort: Int)
        case notLocal(address: String)
        case bindNotPermitted(udpPort: Int)
        case bind(address: String, udpPort: Int, errno: Int32)
    }

    public var description: String {
        switch self {
        case .invalidName(let n): return "invalid name '\(n)': use 1-15 characters from A-Z a-z 0-9 _ . -"
        case .bridgeExists(let b): return "a bridge named \(b) already exists"
        case .noSuchBridge(let b): return "no bridge named \(b)"
        case .portExists(let p): return "a port named \(p) already exists"
        case .noSuchPort(let b, let p): return "bridge \(b) has no port named \(p)"
        case .pathInUse(let path, let p): return "socket path \(path) is already used by port \(p)"
        case .invalidPath(let p): return "invalid socket path '\(p)': must be non-empty and shorter than 108 bytes"
        case .invalidAging(let s): return "invalid MAC aging time \(s): use 1...86400 seconds"
        case .tooMany(let what): return "too many \(what)"
        case .missingOption(let o, let k): return "a \(k) port needs \(o)"
        case .invalidOption(let m): return m
        case .noSuchMirror(let b, let m): return "bridge \(b) has no mirror named \(m)"
        case .portInMirror(let p, let m): return "port \(p) is used by mirror \(m): delete the mirror first (vswitch del-mirror)"
        case .endpoint(_, let reason): return reason
        case .tapInUse(let ifname, let port): return "TAP \(ifname) is already port \(port)"
        case .tap(let name, let failure): return "TAP \(name): " + failure.description
        case .udpPortInUse(let udp, let port, let reason): return "tunnel: UDP port \(udp) is already used by tunnel port \(port) (\(reason))"
        case .vniInUse(let vni, let udp, let port, let bridge):
            return "tunnel: VNI \(vni) on UDP port \(udp) is already taken by port \(port) of bridge \(bridge) (each tunnel port on a UDP port needs its own VNI)"
        case .vxlan(let failure): return "tunnel: " + failure.description
        case .libpcap(let m): return "libpcap: \(m)"
        case .captureStream: return "cannot create a stream on the control socket"
        }
    }
}

extension SwitchError.TapFailure: CustomStringConvertible {
    public var description: String {
        switch self {
        case .noTunDevice: return "/dev/net/tun is missing (load the tun module: modprobe tun)"
        case .busy: return "the device is already in use by another program"
        case .otherOwner: return "the device belongs to another user (ip tuntap add ... user/group)"
        case .notPermitted: return "not permitted (needs CAP_NET_ADMIN)"
        case .notATap: return "an interface of that name exists and is not a TAP device"
        case .invalidName: return "invalid name"
        case .linkUp(let e): return "cannot set the link up: \(errnoText(e))"
        case .system(let e): return errnoText(e)
        }
    }
}

extension SwitchError.VxlanFailure: CustomStringConvertible {
    public var description: String {
        switch self {
        case .sendSocket(let e): return "cannot open a UDP send socket: \(errnoText(e))"
        case .addressInUse(let a, let p):
            return "UDP port \(p) on \(a) is already in use by another program "
                + "(a kernel vxlan device with dstport \(p) in this network namespace, or another vswitchd?)"
        case .notLocal(let a): return "local address \(a) is not an address of this host"
        case .bindNotPermitted(let p): return "not permitted to bind UDP port \(p) (ports below 1024 need root)"
        case .bind(let a, let p, let e): return "cannot bind UDP \(a):\(p): \(errnoText(e))"
        }
    }
}

/// strerror's text for an errno value.
func errnoText(_ e: Int32) -> String { String(cString: strerror(e)) }
