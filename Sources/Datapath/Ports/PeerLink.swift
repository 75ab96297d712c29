import CShims
#if canImport(Glibc)
import Glibc
#endif

/// A link between two engines' halves of one bridge (ports of one bridge on two forwarding
/// threads): each half has a *peer port*, and a frame that the MAC table sends to the peer
/// port is copied into a ring the other engine drains, which forwards it in its half as a
/// frame that came in on its own peer port. Each half learns on its own (a MAC behind the
/// other thread is learned on the peer port), so no MAC table is shared and nothing on the
/// frame path takes a lock. A frame from a peer is never delivered to another peer, flooded
/// or not (split horizon), so a full mesh of halves cannot loop.
///
/// Each direction is a single-producer, single-consumer byte ring (`PeerRing`): entries of
/// an 8-byte length and the frame, 16-byte aligned; the producer publishes its index once
/// per batch (release), the consumer its index after forwarding what it read. A consumer
/// about to sleep arms the ring and looks once more; a producer that publishes into an armed
/// ring disarms it and writes the ring's eventfd, which is in the consumer's epoll set (the
/// same no-lost-wake-up protocol as guest kicks). The rings take no system call while both
/// sides are awake; the doorbells are polled with the engine's other local descriptors (as
/// TAP ports are: on empty passes and every 8th busy one).
public final class PeerLink: @unchecked Sendable {
    /// The two ends: `ends.0` for one engine's peer port, `ends.1` for the other's.
    public let ends: (UnsafeMutablePointer<PeerEnd>, UnsafeMutablePointer<PeerEnd>)
    private let rings: (PeerRing, PeerRing)

    public init() {
        rings = (PeerRing(), PeerRing())
        let a = UnsafeMutablePointer<PeerEnd>.allocate(capacity: 1)
        let b = UnsafeMutablePointer<PeerEnd>.allocate(capacity: 1)
        a.initialize(to: PeerEnd(outbound: rings.0.state, inbound: rings.1.state))
        b.initialize(to: PeerEnd(outbound: rings.1.state, inbound: rings.0.state))
        ends = (a, b)
    }

    /// After both engines removed their peer ports.
    deinit {
        ends.0.deallocate()
        ends.1.deallocate()
    }
}

/// What one engine's peer port points at (`PortSlot.local`): the ring it writes and the one
/// it reads.
public struct PeerEnd {
    let outbound: UnsafeMutablePointer<PeerRingState>
    let inbound: UnsafeMutablePointer<PeerRingState>
}

/// The memory of one direction; freed when the link goes.
final class PeerRing {
    let state: UnsafeMutablePointer<PeerRingState>
    init() {
        state = .allocate(capacity: 1)
        state.initialize(to: PeerRingState())
    }
    deinit {
        state.pointee.release()
        state.deallocate()
    }
}

/// Plain values and raw pointers, read by two threads: `control` holds each side's index on
/// a cache line of its own, so the producer's and the consumer's writes never share one.
struct PeerRingState {
    static let capacity = 1 << 22   // 4 MiB: 50,000 64-byte frames, 60 64 KiB ones
    static let mask = UInt64(capacity - 1)
    /// An entry's length field when the rest of the buffer is skipped (the next entry is at 0).
    static let wrapMarker = UInt32.max
    /// Words of `control`, each on its own 64-byte line: published head (producer), published
    /// tail (consumer), armed (consumer sleeps), the producer's own head and its last look at
    /// the tail and whether the batch wrote into the ring, the consumer's own tail.
    static let head = 0, tail = 8, armed = 16, producerHead = 24, producerTail = 25, producerDirty = 26, consumerTail = 32

    let buffer: UnsafeMutableRawPointer
    let control: UnsafeMutablePointer<UInt64>
    let eventFd: Int32

    init() {
        buffer = .allocate(byteCount: Self.capacity, alignment: 64)
        control = UnsafeMutableRawPointer.allocate(byteCount: 40 * 8, alignment: 64).bindMemory(to: UInt64.self, capacity: 40)
        control.initialize(repeating: 0, count: 40)
        eventFd = vs_eventfd(0)
    }

    func release() {
        buffer.deallocate()
        control.deallocate()
        if eventFd >= 0 { close(eventFd) }
    }

    /// Bytes an entry of `length` frame bytes takes.
    @inline(__always)
    static func entrySize(_ length: Int) -> UInt64 { UInt64((8 + length + 15) & ~15) }
}
