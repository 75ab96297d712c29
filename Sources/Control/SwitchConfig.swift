/// The persisted configuration of vswitchd: its bridges and ports, as the control requests
/// that created them.
///
/// Each port is kept as its original `add-port` request with every field, so a port option
/// added to `ControlRequest` later (a new port type, a capture file, a tunnel endpoint) is
/// saved and restored without any change here. Bridges are kept the same way (their `add-br`
/// request, with `agingSeconds` updated by `set-aging`). Restoring is replaying
/// `requests` in order through the same handler the control socket uses, so a restored
/// switch is checked exactly like one built by hand.
///
/// File form (`version` 1), keys sorted:
///
///     {"bridges": [{"addBridge": {"bridge": "br0", "command": "add-br"},
///                   "addPorts": [{"bridge": "br0", "command": "add-port", "path": "vm1.sock",
///                                 "port": "vm1", "type": "vhostuserclient"}]}],
///      "version": 1}
public struct SwitchConfig: Codable, Equatable, Sendable {
    public static let currentVersion = 1

    public struct Bridge: Codable, Equatable, Sendable {
        /// The `add-br` request that creates the bridge.
        public var addBridge: ControlRequest
        /// The `add-port` requests of its ports, oldest first.
        public var addPorts: [ControlRequest]
        /// The `add-mirror` requests of its mirrors, oldest first, replayed after the ports
        /// (absent in files written before mirrors existed).
        public var addMirrors: [ControlRequest]?

        public init(addBridge: ControlRequest, addPorts: [ControlRequest] = [], addMirrors: [ControlRequest]? = nil) {
            self.addBridge = addBridge
            self.addPorts = addPorts
            self.addMirrors = addMirrors
        }
    }

    public var version: Int
    public var bridges: [Bridge]

    public init(bridges: [Bridge] = []) {
        self.version = Self.currentVersion
        self.bridges = bridges
    }

    /// Commands that change what `requests` would rebuild; the daemon saves after each one
    /// that succeeds.
    public static func changes(_ command: ControlCommand) -> Bool {
        switch command {
        case .addBridge, .deleteBridge, .addPort, .deletePort, .setAging, .addMirror, .deleteMirror: return true
        case .show, .fdbShow, .fdbFlush, .portStats, .datapathStats, .capture, .doctor: return false
        }
    }

    /// Every request that rebuilds this configuration, in order: each bridge, then its ports.
    public var requests: [ControlRequest] {
        bridges.flatMap { [$0.addBridge] + $0.addPorts + ($0.addMirrors ?? []) }
    }

    /// Applies a request the daemon has just carried out successfully. Returns whether the
    /// configuration changed. Requests that failed must not be recorded: this does not
    /// re-check what the switch checks (names, paths, ranges).
    @discardableResult
    public mutating func record(_ r: ControlRequest) -> Bool {
        switch r.command {
        case .addBridge:
            guard r.bridge != nil else { return false }
            bridges.append(Bridge(addBridge: r))
        case .deleteBridge:
            guard let b = index(of: r.bridge) else { return false }
            bridges.remove(at: b)
        case .setAging:
            guard let b = index(of: r.bridge) else { return false }
            bridges[b].addBridge.agingSeconds = r.agingSeconds
        case .addPort:
            guard let b = index(of: r.bridge), r.port != nil else { return false }
            bridges[b].addPorts.append(r)
        case .deletePort:
            guard let b = index(of: r.bridge),
                  let p = bridges[b].addPorts.firstIndex(where: { $0.port == r.port }) else { return false }
            bridges[b].addPorts.remove(at: p)
        case .addMirror:
            guard let b = index(of: r.bridge), r.mirror != nil else { return false }
            bridges[b].addMirrors = (bridges[b].addMirrors ?? []) + [r]
        case .deleteMirror:
            guard let b = index(of: r.bridge),
                  let m = bridges[b].addMirrors?.firstIndex(where: { $0.mirror == r.mirror }) else { return false }
            bridges[b].addMirrors?.remove(at: m)
            if bridges[b].addMirrors?.isEmpty == true { bridges[b].addMirrors = nil }
        case .show, .fdbShow, .fdbFlush, .portStats, .datapathStats, .capture, .doctor:
            return false
        }
        return true
    }

    private func index(of bridge: String?) -> Int? {
        guard let bridge else { return nil }
        return bridges.firstIndex { $0.addBridge.bridge == bridge }
    }

    /// Structural checks of a loaded file: the right version, the right commands in the right
    /// places, each port under the bridge it names, no name twice. What the switch itself
    /// checks (name syntax, paths, aging range) is left to the replay.
    public func validate() throws(ConfigError) {
        guard version == Self.currentVersion else {
            throw .invalid("unsupported version \(version) (this vswitchd reads version \(Self.currentVersion))")
        }
        var bridgeNames = Set<String>(), portNames = Set<String>()
        for (i, b) in bridges.enumerated() {
            guard b.addBridge.command == .addBridge, let name = b.addBridge.bridge else {
                throw .invalid("bridges[\(i)].addBridge must be an add-br request with a 'bridge'")
            }
            guard bridgeNames.insert(name).inserted else { throw .invalid("bridge \(name) appears twice") }
            for (k, p) in b.addPorts.enumerated() {
                guard p.command == .addPort, let port = p.port else {
                    throw .invalid("bridges[\(i)].addPorts[\(k)] must be an add-port request with a 'port'")
                }
                guard p.bridge == name else {
                    throw .invalid("port \(port) is listed under bridge \(name) but names bridge \(p.bridge ?? "(none)")")
                }
                guard portNames.insert(port).inserted else { throw .invalid("port \(port) appears twice") }
            }
            for (k, m) in (b.addMirrors ?? []).enumerated() {
                guard m.command == .addMirror, m.mirror != nil, m.mirrorSpec != nil, m.bridge == name else {
                    throw .invalid("bridges[\(i)].addMirrors[\(k)] must be an add-mirror request of bridge \(name) with 'mirror' and 'mirrorSpec'")
                }
            }
        }
    }
}

/// Why a configuration file could not be read or written. Descriptions are complete
/// sentences naming the file.
public enum ConfigError: Error, CustomStringConvertible, Equatable {
    /// The content is wrong (detail only; `ConfigFile` adds the path).
    case invalid(String)
    case badFile(path: String, detail: String)
    case systemCall(call: String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case .invalid(let detail):
            return "invalid configuration: \(detail)"
        case .badFile(let path, let detail):
            return "configuration file \(path): \(detail)"
        case .systemCall(let call, let path, let code):
            return "configuration file \(path): \(call) failed: \(errnoDescription(code))"
        }
    }
}
