import Control
import Foundation

/// Keeps the configuration file in step with the switch: loads it at start, replays it, and
/// saves it after every control request that changed bridges or ports.
///
/// Runs on the control loop thread, like `RequestHandler`: requests are serialized there,
/// so the in-memory `config` always matches the switch.
final class ConfigPersistence {
    let path: String
    /// false with `--no-persist`: the file (if any was loaded) is never written.
    let writes: Bool
    private(set) var config: SwitchConfig

    private init(path: String, writes: Bool, config: SwitchConfig) {
        self.path = path
        self.writes = writes
        self.config = config
    }

    /// Loads `path` if `reads` (a missing file is an empty configuration). A file that
    /// exists but cannot be read or is not valid throws: silently starting empty would drop
    /// the user's configuration at the next save.
    static func open(path: String, reads: Bool, writes: Bool) throws -> ConfigPersistence {
        if writes {
            // `--config /etc/vswitch/vswitchd.json` on a fresh machine: make its directory now,
            // so the first save does not fail.
            let dir = (path as NSString).deletingLastPathComponent
            if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        }
        let loaded = reads ? try ConfigFile.load(path) : nil
        return ConfigPersistence(path: path, writes: writes, config: loaded ?? SwitchConfig())
    }

    struct RestoreError: Error, CustomStringConvertible {
        let path: String
        let request: ControlRequest
        let message: String
        var description: String {
            let what: String
            switch request.command {
            case .addPort: what = "port \(request.port ?? "?") of bridge \(request.bridge ?? "?")"
            case .addMirror: what = "mirror \(request.mirror ?? "?") of bridge \(request.bridge ?? "?")"
            default: what = "bridge \(request.bridge ?? "?")"
            }
            return "cannot restore \(what) from \(path): \(message)"
                + " (fix the file or move it away)"
        }
    }

    /// Re-creates every bridge and port of the loaded configuration through `handle` (the
    /// same path as control requests). Stops at the first request the switch refuses.
    func restore(_ handle: (ControlRequest) -> ControlResponse) throws {
        for request in config.requests {
            let response = handle(request)
            guard response.ok else {
                throw RestoreError(path: path, request: request, message: response.error ?? "refused")
            }
        }
    }

    /// Runs `request` through `handle`; if it succeeded and changed the configuration,
    /// records it and saves the file. A failed save is reported to the client: the change
    /// is in effect but would be lost at the next start.
    func handle(_ request: ControlRequest, _ handle: (ControlRequest) -> ControlResponse) -> ControlResponse {
        let response = handle(request)
        guard response.ok, SwitchConfig.changes(request.command), config.record(request), writes else {
            return response
        }
        do {
            try ConfigFile.save(config, to: path)
        } catch {
            return .failure("\(request.command.rawValue) is in effect, but the configuration was not saved: \(error)")
        }
        return response
    }
}
