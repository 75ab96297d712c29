import Datapath
import SwitchModel
import CShims
#if canImport(Glibc)
import Glibc
#endif

/// A TAP interface held open by the switch: frames written to `fd` enter the host kernel
/// as if received on the interface, frames the kernel sends out of it are read from `fd`.
/// The descriptor keeps working when the interface is moved to another network namespace.
///
/// With `offloads` (the default) the descriptor carries a 12-byte virtio-net header before
/// every frame (`IFF_VNET_HDR`, `TUNSETVNETHDRSZ`) and the kernel may hand over and take
/// partial checksums and TCP segments of up to 64 KiB (`TUNSETOFFLOAD` with `TUN_F_CSUM |
/// TUN_F_TSO4 | TUN_F_TSO6`): the switch can always deliver those, in software for a port
/// that cannot take them. If the kernel refuses any of it the device is opened plain.
final class TapDevice {
    let name: String
    let fd: Int32
    /// Frames on `fd` carry the 12-byte virtio-net header and may be offloaded.
    let offloads: Bool

    /// Creates the interface, or attaches to an existing TAP device of that name, and sets
    /// its link up.
    init(name: String, offloads wanted: Bool = true) throws(SwitchError) {
        guard SwitchController.isValidName(name) else { throw .invalidName(name) }
        var buffer = [CChar](repeating: 0, count: 16)
        for (i, c) in name.utf8.enumerated() { buffer[i] = CChar(bitPattern: c) }
        let existed = vs_if_exists(name) == 1
        var fd = vs_tap_open(&buffer, wanted ? 1 : 0)
        var offloads = wanted && fd >= 0
        if offloads && vs_tap_enable_offloads(fd) != 0 {
            // An old kernel (or a tun without TUNSETOFFLOAD): plain frames, as before.
            close(fd)
            fd = vs_tap_open(&buffer, 0)
            offloads = false
        }
        guard fd >= 0 else { throw Self.openError(name: name, errno: errno, existed: existed) }
        self.fd = fd
        self.name = name
        self.offloads = offloads
        if vs_if_set_up(name, 1) != 0 {
            let e = errno
            close(fd)
            throw .tap(ifname: name, .linkUp(errno: e))
        }
    }

    deinit { close(fd) }

    static func openError(name: String, errno e: Int32, existed: Bool) -> SwitchError {
        switch e {
        case ENOENT, ENODEV:
            return .tap(ifname: name, .noTunDevice)
        case EBUSY:
            return .tap(ifname: name, .busy)
        case EPERM, EACCES:
            return .tap(ifname: name, existed ? .otherOwner : .notPermitted)
        case EINVAL:
            return .tap(ifname: name, existed ? .notATap : .invalidName)
        default:
            return .tap(ifname: name, .system(errno: e))
        }
    }
}
