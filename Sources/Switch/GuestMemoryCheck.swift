import Foundation
import SwitchModel
import VhostUser
#if canImport(Glibc)
import Glibc
#endif

/// The memory backing of a connected guest, as `vswitch doctor` reports it: for each region
/// the switch mapped, the file behind it (memfd, hugetlbfs), whether it is sealed against
/// shrinking, and whether QEMU maps it shared (`share=on`). A QEMU mapping that is private
/// means the guest writes into pages the switch never sees: the link is up, no frame passes.
/// Read from /proc (this process's maps and map_files, the frontend's maps): root only,
/// and best effort: what cannot be read is left out, never guessed.
enum GuestMemoryCheck {
    struct Mapping {
        let start: UInt, end: UInt
        let shared: Bool
        let inode: String   // "dev inode"
        let path: String
    }

    static func checks(_ endpoint: VhostUserEndpoint) -> [DoctorCheck] {
        guard let memory = endpoint.device.memory else {
            return endpoint.state == .connected ? [DoctorCheck(.warning, "guest memory: no memory table yet")] : []
        }
        let mine = maps("/proc/self/maps")
        let theirs = endpoint.peer.map { maps("/proc/\($0.pid)/maps") } ?? []
        let view = memory.view
        return (0..<view.count).map { i in
            let address = UInt(bitPattern: view.regions[i].host)
            let size = memory.descriptions[i].size >> 20
            guard let m = mine.first(where: { $0.start <= address && address < $0.end }) else {
                return DoctorCheck(.warning, "memory region \(i) (\(size) MiB): mapping not found in /proc/self/maps")
            }
            let (sealed, huge) = fileFacts(m)
            var facts = ["\(size) MiB", m.path.isEmpty ? "anonymous" : m.path]
            facts.append(huge ? "hugepages" : "4 KiB pages")
            if let sealed { facts.append(sealed ? "sealed against shrinking" : "not sealed") }
            let qemu = theirs.filter { $0.inode == m.inode }
            if qemu.isEmpty {
                return DoctorCheck(.ok, "memory region \(i): " + facts.joined(separator: ", "))
            }
            guard qemu.allSatisfy(\.shared) else {
                return DoctorCheck(.problem, "memory region \(i): " + facts.joined(separator: ", ") + ", private in QEMU",
                                   fix: "share=on on the memory backend (libvirt: <memoryBacking><access mode='shared'/>)")
            }
            return DoctorCheck(.ok, "memory region \(i): " + (facts + ["shared with QEMU"]).joined(separator: ", "))
        }
    }

    /// Seals (nil: unknown) and hugepages, through /proc/self/map_files (needs CAP_SYS_ADMIN).
    static func fileFacts(_ m: Mapping) -> (sealed: Bool?, huge: Bool) {
        let hugePath = m.path.hasPrefix("/dev/hugepages") || m.path.contains("hugepages")
        let fd = open("/proc/self/map_files/\(String(m.start, radix: 16))-\(String(m.end, radix: 16))", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return (nil, hugePath) }
        defer { close(fd) }
        let seals = fcntl(fd, 1034 /* F_GET_SEALS */)
        // hugetlbfs reports its page size as the block size.
        var st = stat()
        let huge = fstat(fd, &st) == 0 ? st.st_blksize >= 2 << 20 : hugePath
        return (seals < 0 ? false : seals & 2 /* F_SEAL_SHRINK */ != 0, huge)
    }

    static func maps(_ file: String) -> [Mapping] {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard f.count >= 5 else { return nil }
            let range = f[0].split(separator: "-")
            guard range.count == 2, let s = UInt(range[0], radix: 16), let e = UInt(range[1], radix: 16) else { return nil }
            let path = f.count > 5 ? f[5].trimmingCharacters(in: .whitespaces) : ""
            return Mapping(start: s, end: e, shared: f[1].contains("s"), inode: "\(f[3]) \(f[4])", path: path)
        }
    }
}
