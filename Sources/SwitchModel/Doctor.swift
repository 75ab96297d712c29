/// What `vswitch doctor` reports: for each vhost-user port, the checks the daemon could make
/// from its side of the socket (the socket file, who may connect, the guest's memory) and,
/// for each problem, what to change.
public struct DoctorReport: Codable, Sendable, Equatable {
    public var bridge: String
    public var port: String
    public var checks: [DoctorCheck]
    public init(bridge: String, port: String, checks: [DoctorCheck]) {
        self.bridge = bridge
        self.port = port
        self.checks = checks
    }
}

public struct DoctorCheck: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable {
        /// Nothing to change.
        case ok
        /// Works here, but may not elsewhere (another user, a reboot).
        case warning
        /// Keeps the link down.
        case problem
    }
    public var status: Status
    /// What was found: "socket /run/vswitch/vm1.sock: root:kvm 0660".
    public var finding: String
    /// What to change, when something should.
    public var fix: String?
    public init(_ status: Status, _ finding: String, fix: String? = nil) {
        self.status = status
        self.finding = finding
        self.fix = fix
    }
}
