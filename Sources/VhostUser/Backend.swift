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
}
