#if canImport(Glibc)
import Glibc
#endif

/// Who may connect to a vhost-user socket file, worked out from its owner, group, mode and
/// the search bits of its directories, for the users QEMU commonly runs as. A QEMU that
/// is refused by the file mode fails in its own log only ("Permission denied"); the switch
/// never sees the attempt, so this is the only way it can say why nobody connects.
public struct SocketAccess: Equatable, Sendable {
    /// Users libvirt runs QEMU as: Debian/Ubuntu, then Fedora/RHEL/SUSE.
    public static let qemuUsers = ["libvirt-qemu", "qemu"]
    /// How long a link check may reuse what it found (a chmod shows within this time).
    public static let cacheSeconds = 5.0

    public var owner: String
    public var group: String
    public var mode: UInt32
    /// The users of `qemuUsers` that exist on this host and may not connect.
    public var denied: [String]
    /// The users of `qemuUsers` that exist on this host and may connect.
    public var allowed: [String]
    /// A directory above the socket that keeps the first denied user out ("directory /tmp/x
    /// is root:root 0700"); nil when the socket's own mode and group do.
    public var blocker: String?

    /// "root:kvm 0660".
    public var description: String { "\(owner):\(group) \(Self.octal(mode))" }

    /// A file's owner, group and permission bits as `ls` users read them: "root:kvm 0660".
    public static func describe(_ st: stat) -> String {
        "\(userName(st.st_uid)):\(groupName(st.st_gid)) \(octal(UInt32(st.st_mode)))"
    }

    static func octal(_ mode: UInt32) -> String {
        let digits = String(mode & 0o7777, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    /// Nil if `path` does not exist.
    public static func inspect(_ path: String, users: [String] = qemuUsers) -> SocketAccess? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        var denied: [String] = [], allowed: [String] = [], blocker: String?
        for name in users {
            guard let ids = Identity(user: name) else { continue }
            switch ids.access(to: path, st) {
            case .allowed: allowed.append(name)
            case .socket: denied.append(name)
            case .directory(let d):
                denied.append(name)
                if blocker == nil { blocker = "directory \(d)" }
            }
        }
        return SocketAccess(owner: userName(st.st_uid), group: groupName(st.st_gid), mode: UInt32(st.st_mode),
                            denied: denied, allowed: allowed, blocker: blocker)
    }

    public static func userName(_ uid: uid_t) -> String {
        guard let p = getpwuid(uid) else { return "\(uid)" }
        return String(cString: p.pointee.pw_name)
    }

    public static func groupName(_ gid: gid_t) -> String {
        guard let g = getgrgid(gid) else { return "\(gid)" }
        return String(cString: g.pointee.gr_name)
    }

    /// The groups `user` is in (primary and supplementary), by name; empty if no such user.
    public static func groups(of user: String) -> [String] {
        guard let ids = Identity(user: user) else { return [] }
        var seen = Set<gid_t>()
        return ids.groups.filter { seen.insert($0).inserted }.map(groupName)
    }

    /// A user's uid and groups, and the DAC checks `connect` makes for it.
    struct Identity {
        let uid: uid_t
        let groups: [gid_t]

        init?(user: String) {
            guard let p = getpwnam(user) else { return nil }
            uid = p.pointee.pw_uid
            let gid = p.pointee.pw_gid
            var n: Int32 = 64
            var list = [gid_t](repeating: 0, count: Int(n))
            if getgrouplist(user, gid, &list, &n) < 0 {
                list = [gid_t](repeating: 0, count: Int(n))
                _ = getgrouplist(user, gid, &list, &n)
            }
            groups = Array(list.prefix(Int(max(n, 0)))) + [gid]
        }

        enum Access: Equatable { case allowed, socket, directory(String) }

        /// connect(2) needs write on the socket and search on every directory above it.
        func access(to path: String, _ st: stat) -> Access {
            guard uid != 0 else { return .allowed }
            var dir = path
            while let slash = dir.lastIndex(of: "/") {
                dir = String(dir[..<slash])
                let name = dir.isEmpty ? "/" : dir
                var d = stat()
                guard lstat(name, &d) == 0 else { return .directory(name) }
                guard permits(d, write: false) else { return .directory("\(name) is \(SocketAccess.describe(d))") }
            }
            return permits(st, write: true) ? .allowed : .socket
        }

        private func permits(_ st: stat, write: Bool) -> Bool {
            let bit: mode_t = write ? 0o2 : 0o1
            if st.st_uid == uid { return st.st_mode & (bit << 6) != 0 }
            if groups.contains(st.st_gid) { return st.st_mode & (bit << 3) != 0 }
            return st.st_mode & bit != 0
        }
    }
}
