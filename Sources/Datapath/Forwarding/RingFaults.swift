import SwitchModel
import CShims
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// What the forwarding thread does with a guest ring it cannot trust any more (a split
/// ring's avail index jumped past the ring size or a head index is out of range, a packed
/// ring's descriptor list is longer than the ring or only half available), on TX and RX
/// queues of both kinds alike: the queue is detached, the port
/// is marked broken (`vswitch show` says so) and one line is logged, at most one per port
/// per second, so a guest that breaks its rings in a loop cannot flood the log. Other ports
/// are not affected. The mark goes away when the guest sets the queue up again.
/// Ring faults since start, in every engine of the process (one per forwarding thread),
/// counted with an atomic relaxed add (engines may fault at once): the control plane reads
/// it once a second and asks the engines which port broke only when it moved, so a switch
/// with idle guests never wakes a forwarding thread.
nonisolated(unsafe) private let ringFaultCounter: UnsafeMutablePointer<UInt64> = {
    let p = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    p.initialize(to: 0)
    return p
}()

extension ForwardingEngine {
    /// See `ringFaultCounter`; any thread.
    public static var ringFaultCount: UInt64 { vs_counter_load(ringFaultCounter) }

    enum RingFault: String {
        case availIndexJump = "avail index jumped past the ring size"
        case headOutOfRange = "descriptor head index out of range"
        case packedList = "packed descriptor list longer than the ring or only half available"
    }

    /// Detaches queue `q` of port `p` and marks the port broken. Forwarding thread only.
    func ringFailed(port p: Int, queue q: Int, _ fault: RingFault) {
        let slot = ports + p
        if slot.pointee.brokenMask == 0 {
            slot.pointee.brokenQueue = Int32(q)
            slot.pointee.brokenFault = fault
            slot.pointee.brokenAt = time(nil)
        }
        slot.pointee.brokenMask |= 1 << UInt32(q)
        vs_counter_add_shared(ringFaultCounter, 1)
        let now = UInt32(truncatingIfNeeded: vs_coarse_seconds())
        if slot.pointee.brokenLogSecond != now {
            slot.pointee.brokenLogSecond = now
            logger.error("guest ring is corrupt (\(fault.rawValue)); queue stopped, port marked broken",
                         metadata: ["port": "\(p)", "queue": "\(q)"])
        }
        detachQueue(port: p, queue: q)
    }

    /// True while a queue of port `p` is stopped because its ring was corrupt.
    public func isBroken(port p: Int) -> Bool {
        ports[p].inUse && ports[p].brokenMask != 0
    }

    /// While port `p` is broken: the virtqueue that broke first, what was wrong with it,
    /// and when (Unix time).
    public func brokenRing(port p: Int) -> (queue: Int, fault: String, at: Int)? {
        let s = ports[p]
        guard isBroken(port: p) else { return nil }
        guard let fault = s.brokenFault, s.brokenQueue >= 0 else {   // marked without ringFailed (tests)
            return (s.brokenMask.trailingZeroBitCount, "ring corrupt", time(nil))
        }
        return (Int(s.brokenQueue), fault.rawValue, s.brokenAt)
    }
}
