import CShims
#if canImport(Glibc)
import Glibc
#endif

/// One UDP receive socket shared by every tunnel port on the same UDP port and local address
/// (issue 19: several VNIs on one UDP port, as the kernel's vxlan driver shares a socket
/// between its devices). A received datagram goes to the port of its VNI by one lookup in
/// `table`; no port list is searched. Plain values and raw pointers only, like `VxlanState`:
/// the control plane (`TunnelSocket`) allocates it before the first port exists and frees it
/// after the last port's slot is gone; the table is changed only on the forwarding thread
/// (`addTunnelPort`, `removePort`).
public struct TunnelSocketState {
    /// Entries of `table`: a power of two, four times the engine's ports, so a probe always
    /// ends at an empty entry after a few steps.
    public static let tableSize = 1024
    static let shift = UInt32(32 - tableSize.trailingZeroBitCount)

    public let fd: Int32
    /// The slot whose epoll registration carries this socket (its token), and on which the
    /// drops no VNI can be blamed for are counted (shorter than a header, a VNI no port
    /// has); -1 with no port.
    public internal(set) var anchor: Int32 = -1
    public internal(set) var members = 0
    /// (VNI + 1) << 32 | slot; 0: empty. Open addressing, linear probing.
    let table: UnsafeMutablePointer<UInt64>

    public init(fd: Int32) {
        self.fd = fd
        table = .allocate(capacity: Self.tableSize)
        table.initialize(repeating: 0, count: Self.tableSize)
    }

    /// Frees the table; the owner closes `fd`.
    public func deallocate() { table.deallocate() }

    @inline(__always)
    static func index(_ key: UInt32) -> Int { Int(truncatingIfNeeded: (key &* 0x9E37_79B1) >> shift) }

    /// The slot of the port with `vni`, or -1.
    @inline(__always)
    public func slot(vni: UInt32) -> Int {
        let key = vni &+ 1
        var i = Self.index(key)
        while true {
            let e = table[i]
            if e == 0 { return -1 }
            if UInt32(truncatingIfNeeded: e >> 32) == key { return Int(Int32(truncatingIfNeeded: e)) }
            i = (i &+ 1) & (Self.tableSize - 1)
        }
    }

    /// Adds `vni` -> `slot`; false if the VNI is taken (or the table is full, which the
    /// engine's port limit rules out).
    mutating func insert(vni: UInt32, slot: Int) -> Bool {
        guard vni <= 0xFF_FFFF, slot >= 0, members < Self.tableSize / 2, self.slot(vni: vni) < 0 else { return false }
        var i = Self.index(vni + 1)
        while table[i] != 0 { i = (i + 1) & (Self.tableSize - 1) }
        table[i] = UInt64(vni + 1) << 32 | UInt64(UInt32(slot))
        members += 1
        return true
    }

    /// Removes the entry of `slot` (rebuilding the table keeps probes short and needs no
    /// tombstones; it runs only when a port goes). The slots left, in table order.
    @discardableResult
    mutating func remove(slot: Int) -> [Int] {
        var kept: [(UInt32, Int)] = []
        for i in 0..<Self.tableSize where table[i] != 0 {
            let s = Int(Int32(truncatingIfNeeded: table[i]))
            if s != slot { kept.append((UInt32(truncatingIfNeeded: table[i] >> 32) - 1, s)) }
        }
        table.update(repeating: 0, count: Self.tableSize)
        members = 0
        for (v, s) in kept { _ = insert(vni: v, slot: s) }
        return kept.map(\.1)
    }

    /// The VNI of a received VXLAN or Geneve header: both carry it in bytes 4-6 (RFC 7348, 5;
    /// RFC 8926, 3.4). The caller checked that 8 bytes are there.
    @inline(__always)
    static func vni(_ header: UnsafeRawPointer) -> UInt32 {
        UInt32(bigEndian: header.loadUnaligned(fromByteOffset: 4, as: UInt32.self)) >> 8
    }
}

extension ForwardingEngine {
    /// Adds a tunnel port whose state is `vx` (its `socket` may already carry other ports,
    /// each with its own VNI). The first port of a socket registers the descriptor with its
    /// slot as the token; later ones only enter the VNI table. nil when the VNI is taken on
    /// that socket or there is no free slot.
    public func addTunnelPort(bridge b: Int, tunnel vx: UnsafeMutablePointer<VxlanState>) -> Int? {
        let socket = vx.pointee.socket
        let vni = vx.pointee.vni
        guard socket.pointee.slot(vni: vni) < 0, let p = addPort(bridge: b) else { return nil }
        if socket.pointee.anchor < 0 {
            guard vs_epoll_ctl(localEpollFd, vs_epoll_op_add(), socket.pointee.fd, vs_epollin(), UInt64(p)) == 0 else {
                removePort(p)     // still a plain slot: nothing of the tunnel to undo
                return nil
            }
            ports[p].fd = socket.pointee.fd
            socket.pointee.anchor = Int32(p)
        }
        _ = socket.pointee.insert(vni: vni, slot: p)
        ports[p].kind = .vxlan
        ports[p].local = UnsafeMutableRawPointer(vx)
        ports[p].headerLength = 0
        hot.pointee.localCount += 1
        return p
    }

    /// The part of `detachLocal` for a tunnel port: out of its socket's VNI table; if its slot
    /// carried the socket's registration and other ports remain, the registration moves to
    /// one of them (then this slot's `fd` is -1 and `detachLocal` leaves the descriptor alone).
    func detachTunnel(port p: Int) {
        guard let local = ports[p].local else { return }
        let socket = local.assumingMemoryBound(to: VxlanState.self).pointee.socket
        let left = socket.pointee.remove(slot: p)
        guard socket.pointee.anchor == Int32(p) else { return }
        guard let q = left.first else {
            socket.pointee.anchor = -1
            return
        }
        let fd = socket.pointee.fd
        if vs_epoll_ctl(localEpollFd, vs_epoll_op_mod(), fd, vs_epollin(), UInt64(q)) != 0 {
            _ = vs_epoll_ctl(localEpollFd, vs_epoll_op_add(), fd, vs_epollin(), UInt64(q))
        }
        ports[q].fd = fd
        ports[p].fd = -1
        socket.pointee.anchor = Int32(q)
    }
}
