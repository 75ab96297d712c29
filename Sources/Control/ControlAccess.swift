import CShims
#if canImport(Glibc)
import Glibc
#endif

/// Who is at the other end of a control connection, as the kernel saw it at connect time.
public struct PeerCredentials: Equatable, Sendable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    public init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }

    /// SO_PEERCRED of a connected Unix socket, or nil if the kernel will not tell.
    public static func of(_ fd: Int32) -> PeerCredentials? {
        var pid: Int32 = 0, uid: UInt32 = 0, gid: UInt32 = 0
        guard vs_peer_credentials(fd, &pid, &uid, &gid) == 0 else { return nil }
        return PeerCredentials(pid: pid, uid: uid, gid: gid)
    }
}

/// Who may send control requests. The socket file's mode already keeps others out; this
/// check is the second lock on the door, for when the file's mode or its directory is
/// looser than intended (a chmod by hand, a socket path in a shared directory).
public struct ControlAccess: Equatable, Sendable {
    /// User ids that may connect.
    public var users: Set<UInt32>
    /// A group whose members (primary or supplementary group of the peer) may connect.
    public var group: UInt32?
    /// The group's name, for the refusal message.
    public var groupName: String?

    public init(users: Set<UInt32>, group: UInt32? = nil, groupName: String? = nil) {
        self.users = users
        self.group = group
        self.groupName = groupName
    }

    /// Root and the daemon's own user; plus the members of `group` when one is given
    /// (`vswitchd --control-group NAME`).
    public static func daemonDefault(group: UInt32? = nil, groupName: String? = nil) -> ControlAccess {
        ControlAccess(users: [0, geteuid()], group: group, groupName: groupName)
    }

    /// nil if the peer on `fd` is admitted, else the message to send before closing.
    public func refusal(forPeerOf fd: Int32) -> String? {
        guard let peer = PeerCredentials.of(fd) else {
            return "permission denied: cannot read the credentials of this connection"
        }
        if users.contains(peer.uid) { return nil }
        if let group, peer.gid == group || vs_peer_in_group(fd, group) == 1 { return nil }
        var allowed = users.sorted().map { $0 == 0 ? "root" : "uid \($0)" }
        if let group { allowed.append("members of group \(groupName ?? String(group))") }
        return "permission denied: uid \(peer.uid) may not use the vswitchd control socket "
            + "(allowed: \(allowed.joined(separator: ", ")))"
    }
}
