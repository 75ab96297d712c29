import SwitchModel
import CShims
import Virtio

/// Capture taps in the forwarding engine: where copies of frames are handed to capture
/// rings (pcap ports, live capture).
///
/// A tap is not a bridge member: floods do not visit it and it has no port slot. It is a bit
/// in a mask: `BridgeSlot.captureMask` for a bridge-wide capture (each frame recorded once,
/// at ingress), `PortSlot.captureRx` / `captureTx` for one port's frames in one direction.
/// A bridge-wide capture of deliveries too (tx) sets its bit in every member's `captureTx`.
/// Every record says which port slot it entered or left by (`CaptureRing.origin`).
/// With no capture active the cost is one load and branch at ingress and one per delivery.
struct CaptureTapSlot {
    var inUse = false
    var ring: CaptureRing? = nil
    var snaplen = 0
    var bridge: Int32 = -1
    /// Watched port slot, or -1 for the whole bridge.
    var port: Int32 = -1
}

extension ForwardingEngine {
    /// Bits in a UInt32 mask.
    public static let maxCaptureTaps = 32

    static func makeCaptureTapTable() -> UnsafeMutablePointer<CaptureTapSlot> {
        let t = UnsafeMutablePointer<CaptureTapSlot>.allocate(capacity: maxCaptureTaps)
        t.initialize(repeating: CaptureTapSlot(), count: maxCaptureTaps)
        return t
    }

    // MARK: hot path

    /// Records the frame in `txScratch` (`length` bytes after `offset`) into every tap of
    /// `mask`, as having entered the bridge by port slot `port` (`outbound` false) or left
    /// it by that port (true). Out of line: only reached when a capture is active.
    @inline(never)
    func captureFrame(_ mask: UInt32, offset: Int, length: Int, port: Int, outbound: Bool) {
        let origin = CaptureRing.origin(port: port, outbound: outbound)
        let timestamp = captureClock()
        var m = mask
        while m != 0 {
            let t = captureTaps + m.trailingZeroBitCount
            _ = t.pointee.ring.unsafelyUnwrapped.recordUnpublished(txScratch.pointee, offset: offset, length: length,
                                                                   snaplen: t.pointee.snaplen, origin: origin,
                                                                   timestamp: timestamp)
            m &= m &- 1
        }
        hot.pointee.unpublishedCaptures |= mask
    }

    /// The fast lane with the bridge's (or the source port's) rx capture on: forwards the
    /// frame as `forwardFast` does and, if it did, records it straight from the guest's TX
    /// buffer. A twin of the lane (the same body, inlined) rather than a flag in
    /// `forwardFast`, so a bridge without a capture pays nothing for it. Measured
    /// (callgrind, 64 B frames, bridge-wide capture): see docs/performance.md "Capture that
    /// keeps up".
    @inline(never)
    func forwardFastCaptured(_ buffer: BufferSegment, from p: Int, watched mask: UInt32) -> Bool {
        fastLane(buffer, from: p, capturing: mask)
    }

    /// Before a lane batch whose frames the taps of `mask` record: the batch's time is read
    /// and the taps marked for publishing once here, not per frame (`recordIngress`).
    @inline(never)
    func prepareIngressCaptures(_ mask: UInt32) {
        _ = captureClock()
        hot.pointee.unpublishedCaptures |= mask
    }

    /// Records a frame the lane forwarded from port `p` (`length` bytes at `frame`) into
    /// the taps of `mask` (prepared by `prepareIngressCaptures`). One tap (a bridge-wide
    /// capture, the usual case) skips the loop.
    @inline(__always)
    func recordIngress(_ mask: UInt32, frame: UnsafeRawPointer, length: Int, port p: Int) {
        let origin = CaptureRing.origin(port: p, outbound: false)
        let timestamp = hot.pointee.captureTimestamp
        if mask & (mask &- 1) == 0 {
            let t = captureTaps + mask.trailingZeroBitCount
            _ = t.pointee.ring.unsafelyUnwrapped.recordUnpublished(frame, length: length, snaplen: t.pointee.snaplen,
                                                                   origin: origin, timestamp: timestamp)
            return
        }
        recordIngressEach(mask, frame: frame, length: length, origin: origin, timestamp: timestamp)
    }

    /// `recordIngress` for several taps on one frame.
    @inline(never)
    func recordIngressEach(_ mask: UInt32, frame: UnsafeRawPointer, length: Int, origin: UInt32, timestamp: UInt64) {
        var m = mask
        while m != 0 {
            let t = captureTaps + m.trailingZeroBitCount
            _ = t.pointee.ring.unsafelyUnwrapped.recordUnpublished(frame, length: length, snaplen: t.pointee.snaplen,
                                                                   origin: origin, timestamp: timestamp)
            m &= m &- 1
        }
    }

    /// This batch's capture timestamp: the clock is read at the batch's first captured frame.
    @inline(__always)
    func captureClock() -> UInt64 {
        var now = hot.pointee.captureTimestamp
        if now == 0 {
            now = vs_realtime_ns()
            hot.pointee.captureTimestamp = now
        }
        return now
    }

    /// Publishes what the taps in `hot.unpublishedCaptures` recorded (after each batch).
    @inline(never)
    func publishCaptures() {
        var m = hot.pointee.unpublishedCaptures
        hot.pointee.unpublishedCaptures = 0
        hot.pointee.captureTimestamp = 0
        while m != 0 {
            let t = captureTaps + m.trailingZeroBitCount
            if t.pointee.inUse { t.pointee.ring?.publish() }
            m &= m &- 1
        }
    }

    /// A local port (TAP, VXLAN) delivery for a port whose transmitted frames are captured:
    /// the frame is recorded only if the port took it.
    @inline(never)
    func deliverLocalCaptured(to d: Int, frameLength: Int, sourceHeader: Int, edit: UInt32) {
        let counters = ports[d].counters.unsafelyUnwrapped
        let before = PortCounters.load(counters).txPackets
        deliverLocal(to: d, frameLength: frameLength, sourceHeader: sourceHeader, edit: edit)
        if PortCounters.load(counters).txPackets != before {
            captureFrame(ports[d].captureTx, offset: sourceHeader, length: frameLength, port: d, outbound: true)
        }
    }

    // MARK: commands (forwarding thread, inside `sync`)

    public var freeCaptureTaps: Int { (0..<Self.maxCaptureTaps).filter { !captureTaps[$0].inUse }.count }

    /// Starts copying frames of bridge `b` (or of its port slot `port`) into `ring`: rx =
    /// frames entering (by any port of the bridge, or by `port`), tx = frames delivered (to
    /// any port, or to `port`); `tx` defaults to true for a port and to false for a bridge
    /// (each frame once). Returns the tap index, or nil if every tap is taken or the
    /// bridge/port is gone.
    public func addCaptureTap(ring: CaptureRing, snaplen: Int, bridge b: Int, port: Int? = nil,
                              rx: Bool = true, tx txOption: Bool? = nil) -> Int? {
        let tx = txOption ?? (port != nil)
        guard b >= 0, b < Self.maxBridges, bridges[b].inUse, snaplen > 0, snaplen <= CaptureRing.maxCapturedBytes,
              let t = (0..<Self.maxCaptureTaps).first(where: { !captureTaps[$0].inUse }) else { return nil }
        if let port {
            guard port >= 0, port < Self.maxPorts, ports[port].inUse, ports[port].bridge == Int32(b) else { return nil }
        }
        captureTaps[t] = CaptureTapSlot(inUse: true, ring: ring, snaplen: snaplen, bridge: Int32(b),
                                        port: Int32(port ?? -1))
        let bit: UInt32 = 1 << UInt32(t)
        if let port {
            if rx { ports[port].captureRx |= bit }
            if tx { ports[port].captureTx |= bit }
        } else {
            if rx { bridges[b].captureMask |= bit }
            if tx {
                bridges[b].captureTxAll |= bit
                for p in 0..<Self.maxPorts where ports[p].inUse && ports[p].bridge == Int32(b) { ports[p].captureTx |= bit }
            }
        }
        return t
    }

    /// Stops a tap; after this returns (the `sync` is acknowledged) the forwarding thread
    /// no longer touches its ring.
    public func removeCaptureTap(_ t: Int) {
        guard t >= 0, t < Self.maxCaptureTaps, captureTaps[t].inUse else { return }
        captureTaps[t].ring?.publish()
        clearCaptureBit(t)
        captureTaps[t] = CaptureTapSlot()
    }

    /// Ends the captures that watch bridge `b` or port `p` (they are being removed): their
    /// bits are cleared and their writers told to finish. The taps stay reserved until
    /// their owners call `removeCaptureTap`.
    func closeCaptures(bridge b: Int = -1, port p: Int = -1) {
        for t in 0..<Self.maxCaptureTaps where captureTaps[t].inUse {
            let tap = captureTaps[t]
            guard (b >= 0 && tap.bridge == Int32(b)) || (p >= 0 && tap.port == Int32(p)) else { continue }
            clearCaptureBit(t)
            tap.ring?.publish()
            tap.ring?.markClosed()
        }
    }

    private func clearCaptureBit(_ t: Int) {
        let keep = ~(UInt32(1) << UInt32(t))
        for p in 0..<Self.maxPorts {
            ports[p].captureRx &= keep
            ports[p].captureTx &= keep
        }
        for b in 0..<Self.maxBridges {
            bridges[b].captureMask &= keep
            bridges[b].captureTxAll &= keep
        }
    }
}
