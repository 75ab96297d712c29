import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The run directory (`--run-dir`). Under /run it is gone after every reboot, so whatever
/// group and setgid bit a user gave it by hand are gone too: when vswitchd creates it and
/// has a `--socket-group`, it gives it that group and the setgid bit itself (mode 02755),
/// so restored `vhostuser` sockets are reachable again without a manual step. An existing
/// directory is left as it is: it belongs to whoever made it.
enum RunDirectory {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    static func create(_ path: String, group: gid_t?) throws(Failure) {
        var st = stat()
        if stat(path, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFDIR else { throw Failure(description: "--run-dir \(path) is not a directory") }
            return
        }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw Failure(description: "cannot create --run-dir \(path): \(error.localizedDescription)")
        }
        guard let group else { return }
        // chown first: it clears the setgid bit.
        guard chown(path, uid_t.max, group) == 0, chmod(path, 0o2755) == 0 else {
            throw Failure(description: "cannot give --run-dir \(path) group \(group): \(String(cString: strerror(errno)))")
        }
    }
}
