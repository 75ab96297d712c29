// A hostile frontend: the fuzzer's bytes are a stream of vhost-user messages (header and
// payload) fed to a device whose memory table points at simulated guest memory. Nothing
// a frontend sends may crash the switch.
import Glibc
import GuestSimulator
import Logging
import VhostUser
import Virtio

final class NullBackend: VhostUserBackend {
    func startQueue(_ config: VringConfiguration) {}
    func stopQueue(_ index: Int) -> UInt16 { 0 }
    func updateCallFd(_ index: Int, _ fd: Int32?) {}
}
let backend = NullBackend()
let guest = SimulatedGuest(memorySize: 1 << 20, queueSize: 16, bufferSize: 64)

/// A file (on /dev/shm, unlinked) big enough for a dirty log of the simulated guest (which ends at 4 GiB + 1 MiB).
func logFile() -> Int32 {
    let path = "/dev/shm/vsw-fuzz-log-\(getpid())"
    let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
    unlink(path)
    _ = ftruncate(fd, off_t(((1 << 32) + (1 << 20)) >> 15))
    return fd
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let device = VhostUserDevice(backend: backend, logger: Logger(label: "fuzz"))
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    var i = 0
    while i + 12 <= bytes.count {
        let header: VhostUserHeader
        do { header = try VhostUserHeader(validating: Array(bytes[i..<i + 12])) } catch { return 0 }
        i += 12
        let n = min(Int(header.size), bytes.count - i)
        let payload = Array(bytes[i..<i + n])
        i += n
        // Requests that carry fds get real ones: the memfd for a memory table or a region
        // (SET_MEM_TABLE, ADD_MEM_REG), a memfd for the dirty log (SET_LOG_BASE), dup'd
        // descriptors else.
        var fds: [Int32] = []
        if header.request == VhostUserRequest.setMemTable.rawValue || header.request == VhostUserRequest.addMemReg.rawValue {
            fds = [guest.memoryTable().1]
        } else if [12, 13, 14].contains(header.request), payload.count == 8, payload[1] & 1 == 0 {
            fds = [dup(0)]
        } else if header.request == VhostUserRequest.setLogBase.rawValue {
            fds = [logFile()]   // the dirty log of a live migration
        } else if header.request == VhostUserRequest.setLogFd.rawValue {
            fds = [dup(0)]
        }
        _ = try? device.handle(VhostUserMessage(header: header, payload: payload, fds: fds))
    }
    device.reset()
    return 0
}
