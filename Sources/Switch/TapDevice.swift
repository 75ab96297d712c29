import Datapath
import SwitchModel
import CShims
#if canImport(Glibc)
import Glibc
#endif

/// A TAP interface held open by the switch: frames written to `fd` enter the host kernel
/// as if received on the interface, frames the kernel sends out of it are read from `fd`.
/// The descriptor keeps working when the interface is moved to another network namespace.
final class TapDevice {
    let name: String
    let fd: Int32

    /// Creates the interface, or attaches to an existing TAP device of that name, and sets
    /// its link up.
    init(name: String) throws(SwitchError) {
        guard SwitchController.isValidName(name) else { throw .invalidName(name) }
        var buffer = [CChar](repeating: 0, count: 16)
        for (i, c) in name.utf8.enumerated() { buffer[i] = CChar(bitPattern: c) }
        let existed = vs_if_exists(name) == 1
        let fd = vs_tap_open(&buffer, 0)
        guard fd >= 0 else { throw Self.openError(name: name, errno: errno, existed: existed) }
        self.fd = fd
        self.name = name
        if vs_if_set_up(name, 1) != 0 {
            let e = errno
            close(fd)
            throw .socket("TAP \(name): cannot set the link up: \(String(cString: strerror(e)))")
        }
    }

    deinit { close(fd) }

    static func openError(name: String, errno e: Int32, existed: Bool) -> SwitchError {
        switch e {
        case ENOENT, ENODEV:
            return .socket("TAP \(name): /dev/net/tun is missing (load the tun module: modprobe tun)")
        case EBUSY:
            return .socket("TAP \(name): the device is already in use by another program")
        case EPERM, EACCES:
            return .socket(existed
                ? "TAP \(name): the device belongs to another user (ip tuntap add ... user/group)"
                : "TAP \(name): not permitted (needs CAP_NET_ADMIN)")
        case EINVAL:
            return .socket(existed
                ? "TAP \(name): an interface of that name exists and is not a TAP device"
                : "TAP \(name): invalid name")
        default:
            return .socket("TAP \(name): \(String(cString: strerror(e)))")
        }
    }
}
