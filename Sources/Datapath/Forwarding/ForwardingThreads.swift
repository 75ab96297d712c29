import CShims
import Logging

/// The forwarding threads of a daemon (`vswitchd --forwarding-cpus 0,1`): one
/// `ForwardingEngine` per CPU, each a thread pinned to its CPU with its own port and bridge
/// slots, MAC tables, poll list and scratch buffers.
///
/// The unit of ownership is a bridge: the control plane puts each new bridge, and with it
/// every port of that bridge, on one engine (`SwitchController.engineForNewBridge`). A frame
/// never leaves its bridge, so it never leaves its thread: the frame path takes no lock and
/// touches no other thread's memory, and one engine runs exactly the code (and instruction
/// count) of a single-threaded switch. What crosses threads is control only: `sync` on the
/// engine that owns a bridge, `syncAll` for what concerns every engine.
public final class ForwardingThreads: @unchecked Sendable {
    public let engines: [ForwardingEngine]
    /// The CPU each engine is pinned to when started (nil: not pinned), in `engines` order.
    public let cpus: [Int?]

    /// One engine per entry of `cpus` (a single `nil`: one unpinned thread, the default).
    /// The first is named `vswitch-fwd` as a single thread always was, the others
    /// `vswitch-fwd1`, `vswitch-fwd2`, ...
    public init(cpus: [Int?], logger: Logger, configure: (ForwardingEngine) -> Void = { _ in }) {
        precondition(!cpus.isEmpty, "at least one forwarding thread")
        self.cpus = cpus
        engines = cpus.indices.map { i in
            let e = ForwardingEngine(logger: logger, threadName: i == 0 ? "vswitch-fwd" : "vswitch-fwd\(i)")
            configure(e)
            return e
        }
    }

    /// Engines made elsewhere (tests, a controller over one engine); `start` leaves them unpinned.
    public init(engines: [ForwardingEngine]) {
        precondition(!engines.isEmpty, "at least one forwarding thread")
        self.engines = engines
        cpus = engines.map { _ in nil }
    }

    public var count: Int { engines.count }

    /// Starts every thread, each pinned to its CPU.
    public func start() {
        for (e, cpu) in zip(engines, cpus) { e.start(cpu: cpu) }
    }

    public func stop() {
        for e in engines { e.stop() }
    }

    /// Runs `body` on every forwarding thread (each between its batches, one after the other)
    /// and returns the results in `engines` order: for what every engine must see or answer.
    @discardableResult
    public func syncAll<T>(_ body: @escaping (ForwardingEngine) -> T) -> [T] {
        engines.map { $0.sync(body) }
    }

    /// The index of `engine` in `engines`.
    public func index(of engine: ForwardingEngine) -> Int? {
        engines.firstIndex { $0 === engine }
    }
}

/// `--forwarding-cpus`: a list of CPU numbers and ranges (`0,1`, `2-5,7`), each CPU once, each
/// one this process may run on (its affinity mask: online, allowed by taskset and the cgroup).
public enum ForwardingCPUList {
    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    public static func parse(_ text: String,
                             allowed: (Int) -> Bool = { vs_cpu_allowed(Int32(clamping: $0)) == 1 }) throws(Invalid) -> [Int] {
        var cpus: [Int] = []
        let items = text.split(separator: ",", omittingEmptySubsequences: false)
        for item in items {
            let bounds = item.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(bounds.count), let first = Int(bounds[0]), let last = Int(bounds[bounds.count - 1]),
                  first >= 0, first <= last, last < 4096 else {
                throw Invalid(description: "invalid --forwarding-cpus '\(text)': '\(item)' is not a CPU number or range (e.g. 0,1 or 2-5)")
            }
            for cpu in first...last {
                if cpus.contains(cpu) { throw Invalid(description: "--forwarding-cpus '\(text)': CPU \(cpu) is given twice") }
                guard allowed(cpu) else {
                    throw Invalid(description: "--forwarding-cpus '\(text)': CPU \(cpu) does not exist or vswitchd may not run on it (not in its affinity mask: see /sys/devices/system/cpu/online, taskset, the cgroup's cpuset)")
                }
                cpus.append(cpu)
            }
        }
        guard cpus.count <= 64 else { throw Invalid(description: "--forwarding-cpus '\(text)': at most 64 threads") }
        return cpus
    }
}
