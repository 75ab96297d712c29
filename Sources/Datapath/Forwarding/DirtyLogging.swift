import CShims
import Virtio

/// Dirty-page logging during live migration (vhost-user.rst, "Migration"): while a port's
/// frontend has logging on (`VHOST_F_LOG_ALL` and a log from SET_LOG_BASE), every byte the
/// switch writes into that guest's memory marks its page in the log, so QEMU copies the page
/// again. A port that logs has `rxSlowPath` set, so the fast lane never sees it and the
/// general path tests the log only behind its existing `rxSlowPath` branch; ring writes
/// (used entries, used index, event areas) are marked once per published batch. A port
/// without logging pays nothing per frame.
extension ForwardingEngine {
    /// Turns logging for port `p` on (a log) or off (nil). The previous log is released
    /// here, on the forwarding thread, once nothing reads it.
    public func setDirtyLog(port p: Int, _ log: DirtyLog?) {
        guard ports[p].inUse else { return }
        ports[p].dirtyLog = log?.view
        logOwners[p] = log
        ports[p].recomputeRxQueue()
    }

    /// Whether port `p` logs its writes now (for tests and `vswitch show`).
    public func isLogging(port p: Int) -> Bool { ports[p].inUse && ports[p].dirtyLog != nil }

    /// Marks the first `length` bytes written into the segments of `list`.
    @inline(never)
    func logWritten(_ log: DirtyLogView, _ list: SegmentList, length: Int, memory: GuestMemoryView) {
        var left = length
        var i = 0
        while left > 0 && i < list.count {
            let s = list[i]
            let n = min(left, s.length)
            log.mark(host: s.base, length: n, memory: memory)
            left -= n
            i += 1
        }
    }

    /// Marks one buffer written from its start.
    @inline(never)
    func logWritten(_ log: DirtyLogView, _ buffer: BufferSegment, length: Int, memory: GuestMemoryView) {
        log.mark(host: buffer.base, length: min(length, buffer.length), memory: memory)
    }

    /// Marks what the switch writes in queue `qi`'s ring of port `p`: split rings, the
    /// used ring (entries, index, flags, avail_event) at the frontend's log address for it,
    /// if it gave one (VHOST_VRING_F_LOG); packed rings, the descriptor ring (used entries
    /// are written over the descriptors) and the device event area, where they lie in
    /// guest memory. Conservative: a whole ring is a page or two.
    @inline(never)
    func logRing(port p: Int, queue qi: Int) {
        let slot = ports + p
        guard let log = slot.pointee.dirtyLog, slot.pointee.runningMask & (1 << UInt32(qi)) != 0 else { return }
        if slot.pointee.packedMask & (1 << UInt32(qi)) != 0 {
            let q = slot.pointee.packedQueues.unsafelyUnwrapped + qi
            log.mark(host: q.pointee.layout.descriptors, length: 16 * q.pointee.size, memory: q.pointee.memory)
            log.mark(host: q.pointee.layout.deviceEvent, length: Int(PackedRingLayout.eventBytes), memory: q.pointee.memory)
            return
        }
        let address = slot.pointee.usedLogAddresses.unsafelyUnwrapped[qi]
        guard address != UInt64.max else { return }
        let q = slot.pointee.queues.unsafelyUnwrapped + qi
        log.mark(gpa: address, length: SplitRingLayout.usedBytes(q.pointee.layout.size))
    }
}

extension ForwardingEngine {
    /// Marks every running TX ring of port `p` (before the thread sleeps: kicks were just
    /// enabled, which writes the used ring's flags or avail_event).
    @inline(never)
    func logTxRings(port p: Int) {
        var m = ports[p].runningMask & PortSlot.txMask
        while m != 0 {
            logRing(port: p, queue: m.trailingZeroBitCount)
            m &= m &- 1
        }
    }
}

extension ForwardingEngine {
    /// After a live migration: a RARP broadcast from `mac` (6 bytes) enters the bridge from
    /// vhost port `p`, as if its guest had sent it, so this bridge's MAC table, and across
    /// tunnels the remote ones, learn the guest's new port at once (vhost-user SEND_RARP;
    /// DPDK's vhost library and OVS do the same). Counted like any frame the guest sends.
    public func announce(port p: Int, mac: [UInt8]) {
        guard ports[p].inUse, ports[p].kind == .vhost, mac.count == 6 else { return }
        let header = ports[p].headerLength
        let frame = Self.rarpFrame(mac: mac)
        localBuffer.initializeMemory(as: UInt8.self, repeating: 0, count: header)
        frame.withUnsafeBytes { (localBuffer + header).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        loadScratch(localBuffer, length: header + frame.count)
        forwardFrame(from: p)
        publishDirtyRx()
    }

    /// RFC 903 reverse request (opcode 3) from `mac` for `mac`, padded to 60 bytes: the
    /// frame QEMU itself sends for guests without GUEST_ANNOUNCE.
    static func rarpFrame(mac: [UInt8]) -> [UInt8] {
        var f = [UInt8](repeating: 0xff, count: 6) + mac + [0x80, 0x35]   // broadcast, ethertype RARP
        f += [0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x03]                     // Ethernet, IPv4, lengths, op 3
        f += mac + [0, 0, 0, 0] + mac + [0, 0, 0, 0]                        // sender and target
        return f + [UInt8](repeating: 0, count: 60 - f.count)
    }
}
