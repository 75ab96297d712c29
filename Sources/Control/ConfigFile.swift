import Syscalls
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads and writes `SwitchConfig` files.
///
/// Writes are atomic: the new text goes to a temporary file in the same directory, which is
/// fsynced and renamed over the old file, and then the directory is fsynced. A crash or a
/// failed write at any point leaves either the old file or the new one, never a mix, and a
/// power cut right after `write` returns cannot bring the old file back.
public enum ConfigFile {
    /// Larger files are refused unread: a configuration of thousands of ports is well below.
    public static let maxBytes = 4 << 20
    /// Mode of a written file: it names socket paths the daemon (root) will create, so only
    /// the owner may change it.
    public static let mode: mode_t = 0o600

    /// The configuration in `path`, or nil if there is no file there. Anything else that
    /// is not a readable, valid configuration throws.
    public static func load(_ path: String) throws(ConfigError) -> SwitchConfig? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw .systemCall(call: "open", path: path, errno: errno)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .systemCall(call: "fstat", path: path, errno: errno) }
        guard st.st_mode & S_IFMT == S_IFREG else { throw .badFile(path: path, detail: "not a regular file") }
        guard st.st_size <= maxBytes else {
            throw .badFile(path: path, detail: "\(st.st_size) bytes, more than the \(maxBytes) accepted")
        }
        var data = Data()
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let (n, e) = Syscall.retrying { chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) } }
            if n < 0 { throw .systemCall(call: "read", path: path, errno: e) }
            if n == 0 { break }
            data.append(contentsOf: chunk[0..<n])
            guard data.count <= maxBytes else { throw .badFile(path: path, detail: "grew past \(maxBytes) bytes while read") }
        }
        return try decode(data, path: path)
    }

    /// Parses and checks file contents (`path` only names the file in errors).
    public static func decode(_ data: Data, path: String) throws(ConfigError) -> SwitchConfig {
        guard data.contains(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) else {
            throw .badFile(path: path, detail: "the file is empty")
        }
        let config: SwitchConfig
        do {
            config = try ControlCoding.decode(SwitchConfig.self, from: data, kind: "configuration")
        } catch let e as ControlDecodingError {
            throw .badFile(path: path, detail: "not a vswitchd configuration: \(e.detail)")
        } catch {
            throw .badFile(path: path, detail: "not a vswitchd configuration: \(error)")
        }
        do {
            try config.validate()
        } catch .invalid(let detail) {
            throw .badFile(path: path, detail: detail)
        } catch {
            throw error
        }
        return config
    }

    /// The file text: pretty-printed, keys sorted, so a diff of two saves shows what changed.
    public static func encode(_ config: SwitchConfig) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // Encoding plain structs of strings and integers cannot fail.
        var data = (try? encoder.encode(config)) ?? Data("{\"bridges\":[],\"version\":1}".utf8)
        data.append(UInt8(ascii: "\n"))
        return data
    }

    /// Where `save` writes before renaming: beside the file, so the rename stays in one
    /// file system. A fixed name: a temporary file left by a crash is reused, not piled up.
    public static func temporaryPath(for path: String) -> String {
        let url = URL(fileURLWithPath: path)
        return url.deletingLastPathComponent().appendingPathComponent("." + url.lastPathComponent + ".tmp").path
    }

    /// Atomically replaces `path` with `config` (see the type's comment). On failure the
    /// old file is untouched and the temporary file removed.
    public static func save(_ config: SwitchConfig, to path: String) throws(ConfigError) {
        try write(encode(config), to: path)
    }

    static func write(_ data: Data, to path: String) throws(ConfigError) {
        let tmp = temporaryPath(for: path)
        // O_NOFOLLOW: a symlink planted at the temporary name must not redirect the write.
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw .systemCall(call: "open \(tmp)", path: path, errno: errno) }
        func fail(_ call: String, _ code: Int32) -> ConfigError {
            unlink(tmp)
            return .systemCall(call: call, path: path, errno: code)
        }
        var error: ConfigError?
        if fchmod(fd, mode) != 0 {  // O_CREAT's mode is cut by the umask; an old file keeps its own
            error = fail("fchmod \(tmp)", errno)
        } else if let code = writeAll(fd, data) {
            error = fail("write \(tmp)", code)
        } else if fsync(fd) != 0 {
            error = fail("fsync \(tmp)", errno)
        }
        close(fd)
        if let error { throw error }
        guard rename(tmp, path) == 0 else { throw fail("rename \(tmp)", errno) }
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { throw .systemCall(call: "open directory \(dir)", path: path, errno: errno) }
        defer { close(dfd) }
        guard fsync(dfd) == 0 else { throw .systemCall(call: "fsync directory \(dir)", path: path, errno: errno) }
    }

    /// nil, or the errno of a failed write.
    private static func writeAll(_ fd: Int32, _ data: Data) -> Int32? {
        let e = data.withUnsafeBytes { raw in Syscall.writeAll(raw) { Glibc.write(fd, $0, $1) } }
        return e == 0 ? nil : e
    }
}
