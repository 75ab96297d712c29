import CShims
import SwitchModel

/// A port's counter block: a `PortCounters` in memory the engine owns. Written only by the
/// forwarding thread (relaxed stores), read by the control thread (relaxed loads): no
/// locks, no read-modify-write atomics on the hot path.
extension PortCounters {
    /// Snapshot of counters that another thread is updating.
    static func load(_ p: UnsafeMutablePointer<PortCounters>) -> PortCounters {
        p.withMemoryRebound(to: UInt64.self, capacity: PortCounters.count) { f in
            var c = PortCounters()
            for counter in PortCounter.allCases { c[counter] = vs_counter_load(f + counter.rawValue) }
            return c
        }
    }
}

extension UnsafeMutablePointer where Pointee == PortCounters {
    /// The hot path names a counter by its `PortCounter` case; the raw value is the offset.
    @inline(__always)
    func add(_ c: PortCounter, _ n: UInt64 = 1) {
        UnsafeMutableRawPointer(self).assumingMemoryBound(to: UInt64.self).advanced(by: c.rawValue)
            .withMemoryRebound(to: UInt64.self, capacity: 1) { vs_counter_add($0, n) }
    }
}
