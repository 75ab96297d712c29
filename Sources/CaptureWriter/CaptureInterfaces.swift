import Datapath
import CShims
import Foundation

/// The ports of one bridge as a pcapng capture names them: engine slot, name, description
/// ("vhostuserclient /tmp/vm1.sock"). The control plane sets the list whenever a port is
/// added or removed; writer threads read it when its generation moves, so a port added
/// after a capture started gets its Interface Description Block before its first frame.
public final class CaptureInterfaces: @unchecked Sendable {
    public struct Interface: Equatable, Sendable {
        public var slot: Int
        public var name: String
        public var description: String
        public init(slot: Int, name: String, description: String) {
            self.slot = slot
            self.name = name
            self.description = description
        }
    }

    private let lock = NSLock()
    private var list: [Interface] = []
    private let generationWord = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)

    public init(_ list: [Interface] = []) {
        self.list = list
        generationWord.initialize(to: 1)
    }

    deinit { generationWord.deallocate() }

    /// Replaces the list (control thread).
    public func set(_ newList: [Interface]) {
        lock.withLock { list = newList }
        vs_counter_add(generationWord, 1)
    }

    /// Changes each time `set` is called: one relaxed load per check for the writer.
    var generation: UInt64 { vs_counter_load(generationWord) }

    var current: [Interface] { lock.withLock { list } }
}

/// What a pcapng writer knows about interfaces: which interface id each engine slot's
/// frames go on, the blocks already written (repeated at the start of a rotated file), and
/// per-interface counters for the closing statistics.
struct PcapngInterfaceTable {
    struct Entry {
        var name: String
        var description: String
        var slot: Int
        var received: UInt64 = 0
        var accepted: UInt64 = 0
    }

    let source: CaptureInterfaces
    private(set) var entries: [Entry] = []
    /// Interface id per engine slot, -1 = none yet.
    private var ids = [Int32](repeating: -1, count: CaptureRing.maxRecordPorts)
    private var seenGeneration: UInt64 = 0

    init(source: CaptureInterfaces) { self.source = source }

    /// The interface of `slot`, appending Interface Description Blocks to `out` for ports
    /// that are new since the last look (and a placeholder for a slot the list does not
    /// name: a frame that raced a port's removal).
    mutating func id(slot: Int, snaplen: Int, _ out: inout PcapngWriter) -> UInt32 {
        refresh(snaplen: snaplen, &out)
        let s = min(max(slot, 0), ids.count - 1)
        if ids[s] < 0 { add(Entry(name: "slot\(s)", description: "port slot \(s) (unknown)", slot: s), snaplen, &out) }
        return UInt32(ids[s])
    }

    /// Picks up ports added (or renamed on a reused slot) since the last call.
    mutating func refresh(snaplen: Int, _ out: inout PcapngWriter) {
        let g = source.generation
        guard g != seenGeneration else { return }
        seenGeneration = g
        for i in source.current where i.slot >= 0 && i.slot < ids.count {
            let known = ids[i.slot] >= 0 ? entries[Int(ids[i.slot])] : nil
            if known?.name != i.name || known?.description != i.description {
                add(Entry(name: i.name, description: i.description, slot: i.slot), snaplen, &out)
            }
        }
    }

    private mutating func add(_ e: Entry, _ snaplen: Int, _ out: inout PcapngWriter) {
        ids[e.slot] = Int32(entries.count)
        entries.append(e)
        out.interfaceDescription(name: e.name, description: e.description, snaplen: snaplen)
    }

    mutating func count(_ id: UInt32, accepted: Bool) {
        entries[Int(id)].received &+= 1
        if accepted { entries[Int(id)].accepted &+= 1 }
    }

    /// Every interface block again, for the start of a new file (same ids).
    func describeAll(snaplen: Int, _ out: inout PcapngWriter) {
        for e in entries { out.interfaceDescription(name: e.name, description: e.description, snaplen: snaplen) }
    }

    /// One statistics block per interface. A slot's ring drops go to its newest interface.
    func statistics(startNs: UInt64, nowNs: UInt64, ring: CaptureRing?, _ out: inout PcapngWriter) {
        for (id, e) in entries.enumerated() {
            let newest = ids[e.slot] == Int32(id)
            let dropped = newest ? ring?.dropped(port: e.slot) ?? 0 : 0
            out.interfaceStatistics(interface: UInt32(id), timestampNs: nowNs, .init(
                startNs: startNs, received: e.received &+ dropped, dropped: dropped, accepted: e.accepted))
        }
    }
}
