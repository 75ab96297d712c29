import Virtio

/// The data-plane side of a vhost-user port. The device calls these from the control
/// thread; implementations hand them to the forwarding thread and wait for its
/// acknowledgement, so after `stopQueue` returns the ring, its fds and its memory are no
/// longer touched by the data plane.
public protocol VhostUserBackend: AnyObject {
    func startQueue(_ config: VringConfiguration)
    /// Returns the avail index the data plane really stopped at (for GET_VRING_BASE);
    /// for a packed ring, position | wrap counter << 15.
    func stopQueue(_ index: Int) -> UInt16
    /// Replace the call eventfd of a running queue (nil: do not interrupt).
    func updateCallFd(_ index: Int, _ fd: Int32?)
    /// Live migration: log every write into this guest's memory in `log` from now on, or
    /// stop logging (nil). After it returns the data plane no longer touches an older log.
    func setDirtyLog(_ log: DirtyLog?)
    /// Live migration is over: broadcast a RARP from `mac` (6 bytes) into the port's bridge,
    /// so every MAC table learns where the guest is now (SEND_RARP).
    func announce(mac: [UInt8])
}

extension VhostUserBackend {
    public func setDirtyLog(_ log: DirtyLog?) {}
    public func announce(mac: [UInt8]) {}
}
