import CShims
import Foundation
import GuestSimulator
import Logging
import VhostUser
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath

/// Several forwarding threads (`vswitchd --forwarding-cpus`): the CPU list, which thread a
/// bridge goes to, control-plane calls reaching the engine that owns a bridge (and every
/// engine), and two threads forwarding at once, each sleeping when idle.
final class ForwardingThreadsTests: XCTestCase {
    // MARK: the CPU list

    func testCPUListParsing() throws {
        let all: (Int) -> Bool = { $0 < 8 }
        XCTAssertEqual(try ForwardingCPUList.parse("0,1", allowed: all), [0, 1])
        XCTAssertEqual(try ForwardingCPUList.parse("3", allowed: all), [3])
        XCTAssertEqual(try ForwardingCPUList.parse("2-4,7", allowed: all), [2, 3, 4, 7])
        func refused(_ s: String, _ words: String, line: UInt = #line) {
            XCTAssertThrowsError(try ForwardingCPUList.parse(s, allowed: all), line: line) {
                XCTAssertTrue("\($0)".contains(words), "\($0)", line: line)
            }
        }
        refused("1,1", "CPU 1 is given twice")
        refused("0-2,2", "CPU 2 is given twice")
        refused("0,9", "CPU 9 does not exist")
        refused("", "is not a CPU number")
        refused("a", "'a' is not a CPU number")
        refused("0,", "'' is not a CPU number")
        refused("-1", "is not a CPU number")
        refused("3-1", "'3-1' is not a CPU number or range")
        refused("1-2-3", "is not a CPU number")
    }

    /// The default check asks the kernel: CPU 0 of the affinity mask is allowed, no process
    /// may run on CPU 4000.
    func testCPUListChecksTheAffinityMask() throws {
        let first = try XCTUnwrap((0..<1024).first { vs_cpu_allowed(Int32($0)) == 1 })
        XCTAssertEqual(try ForwardingCPUList.parse(String(first)), [first])
        XCTAssertThrowsError(try ForwardingCPUList.parse("4000"))
    }

    // MARK: which thread a bridge goes to

    func testLeastLoadedThread() {
        typealias L = SwitchController.ThreadLoad
        XCTAssertEqual(SwitchController.leastLoaded([L(bridges: 3, ports: 9)]), 0)
        XCTAssertEqual(SwitchController.leastLoaded([L(bridges: 0, ports: 0), L(bridges: 0, ports: 0)]), 0, "ties: the lowest index")
        XCTAssertEqual(SwitchController.leastLoaded([L(bridges: 1, ports: 0), L(bridges: 0, ports: 0)]), 1)
        XCTAssertEqual(SwitchController.leastLoaded([L(bridges: 1, ports: 4), L(bridges: 1, ports: 1), L(bridges: 2, ports: 0)]), 1,
                       "equal bridges: fewer ports")
    }

    /// Bridges go round-robin while none is deleted; a deleted bridge's thread takes the next.
    func testBridgesSpreadOverThreads() throws {
        let threads = ForwardingThreads(engines: [ForwardingEngine(logger: Logger(label: "a"), threadName: "vswitch-fwd"),
                                                  ForwardingEngine(logger: Logger(label: "b"), threadName: "vswitch-fwd1")])
        let controller = SwitchController(threads: threads, loop: EventLoop(), runDirectory: "/tmp", logger: Logger(label: "t"))
        for b in ["br0", "br1", "br2", "br3"] { try controller.addBridge(b) }
        func placement() -> [String: String] {
            Dictionary(uniqueKeysWithValues: controller.snapshot().map { ($0.name, $0.thread ?? "none") })
        }
        XCTAssertEqual(placement(), ["br0": "vswitch-fwd", "br1": "vswitch-fwd1", "br2": "vswitch-fwd", "br3": "vswitch-fwd1"])
        try controller.deleteBridge("br1")
        try controller.deleteBridge("br3")
        try controller.addBridge("br4")
        XCTAssertEqual(placement()["br4"], "vswitch-fwd1")
        XCTAssertEqual(controller.threadBridges().map(\.bridges), [["br0", "br2"], ["br4"]])
        // Each engine numbers its own slots: the first bridge of each thread has slot 0.
        XCTAssertEqual(controller.bridges.map(\.slot), [0, 1, 0])
        controller.shutdown()
    }

    /// `add-br --cpu N` places by hand, load or not; a CPU without a thread is refused.
    func testBridgeOnAChosenCPU() throws {
        let threads = ForwardingThreads(cpus: [2, 3], logger: Logger(label: "t"))   // not started: sync runs inline
        let controller = SwitchController(threads: threads, loop: EventLoop(), runDirectory: "/tmp", logger: Logger(label: "t"))
        try controller.addBridge("br0", cpu: 3)
        try controller.addBridge("br1", cpu: 3)
        try controller.addBridge("br2")   // the least loaded: CPU 2's thread
        XCTAssertEqual(controller.threadBridges().map(\.bridges), [["br2"], ["br0", "br1"]])
        XCTAssertThrowsError(try controller.addBridge("br3", cpu: 0)) {
            XCTAssertEqual("\($0)", "--cpu 0: no forwarding thread on CPU 0; vswitchd runs them on CPUs 2,3 (--forwarding-cpus)")
        }
        XCTAssertFalse(controller.bridges.contains { $0.name == "br3" })
        controller.shutdown()
        let one = SwitchController(engine: ForwardingEngine(logger: Logger(label: "a")), loop: EventLoop(),
                                   runDirectory: "/tmp", logger: Logger(label: "t"))
        XCTAssertThrowsError(try one.addBridge("br0", cpu: 0)) { XCTAssertTrue("\($0)".contains("not pinned"), "\($0)") }
    }

    /// One thread (the default): `show` names no thread, as before.
    func testOneThreadShowsNoThread() throws {
        let controller = SwitchController(engine: ForwardingEngine(logger: Logger(label: "a")), loop: EventLoop(),
                                          runDirectory: "/tmp", logger: Logger(label: "t"))
        try controller.addBridge("br0")
        XCTAssertNil(controller.snapshot().first?.thread)
        controller.shutdown()
    }

    // MARK: control calls reach the right engine

    /// `sync` reaches every forwarding thread: each closure of `syncAll` runs on its own
    /// engine's thread, none on the caller's.
    func testSyncAllRunsOnEveryThread() {
        let threads = ForwardingThreads(cpus: [nil, nil, nil], logger: Logger(label: "t"))
        threads.start()
        defer { threads.stop() }
        XCTAssertEqual(threads.engines.map(\.threadName), ["vswitch-fwd", "vswitch-fwd1", "vswitch-fwd2"])
        let tids = threads.syncAll { _ in vs_gettid() }
        XCTAssertEqual(Set(tids).count, 3)
        XCTAssertFalse(tids.contains(vs_gettid()))
        XCTAssertEqual(tids, threads.engines.map { $0.sync { _ in vs_gettid() } })
        // The kernel knows each thread by its engine's name.
        for (tid, e) in zip(tids, threads.engines) {
            let comm = try? String(contentsOfFile: "/proc/self/task/\(tid)/comm", encoding: .utf8)
            XCTAssertEqual(comm?.trimmingCharacters(in: .whitespacesAndNewlines), e.threadName)
        }
    }

    /// Port slots are per engine: two ports with the same slot number on two threads are
    /// told apart in `show` (a ring marked broken on one thread's slot 0 marks that port only).
    func testPortsResolveToTheirBridgesEngine() throws {
        let dir = NSTemporaryDirectory() + "vsw-threads-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let loop = EventLoop()
        let thread = Thread { loop.run() }
        thread.start()
        defer { loop.stop() }
        let threads = ForwardingThreads(cpus: [nil, nil], logger: Logger(label: "t"))
        threads.start()
        defer { threads.stop() }
        let controller = loop.sync { SwitchController(threads: threads, loop: loop, runDirectory: dir, logger: Logger(label: "t")) }
        try loop.sync { Result { () throws(SwitchError) in
            try controller.addBridge("br0")
            try controller.addBridge("br1")
            try controller.addPort(bridge: "br0", name: "p0", kind: .vhostUser, path: "p0.sock")
            try controller.addPort(bridge: "br1", name: "p1", kind: .vhostUser, path: "p1.sock")
        } }.get()
        let slots = loop.sync { controller.bridges.flatMap(\.ports).map(\.slot) }
        XCTAssertEqual(slots, [0, 0])
        threads.engines[1].sync { $0.ports[0].brokenMask = 1 << 1 }
        func states() -> [String] { loop.sync { controller.snapshot().flatMap(\.ports).map(\.state) } }
        XCTAssertEqual(states(), ["listening", "broken"])
        threads.engines[1].sync { _ = $0.stopQueue(port: 0, queue: 1) }
        XCTAssertEqual(states(), ["listening", "listening"])
        loop.sync { try? controller.deletePort(bridge: "br1", port: "p1") }
        XCTAssertEqual(threads.engines.map { e in e.sync { $0.ports[0].inUse } }, [true, false], "removed on its own engine")
        loop.sync { controller.shutdown() }
    }

    /// `add-port --cpu N` with another thread than the bridge's: the bridge gets a half on
    /// that thread, linked by peer ports; show says which thread runs each port; what needs
    /// all frames of a bridge (mirrors, captures, VLAN policies) is refused on it; del-br
    /// leaves nothing in either engine.
    func testPortOnAnotherThreadMakesTheBridgeSpan() throws {
        let dir = NSTemporaryDirectory() + "vsw-span-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let loop = EventLoop()
        let thread = Thread { loop.run() }
        thread.start()
        defer { loop.stop() }
        let cpus = ForwardingThreads(cpus: [0, 1], logger: Logger(label: "t"))
        cpus.start()
        defer { cpus.stop() }
        let controller = loop.sync { SwitchController(threads: cpus, loop: loop, runDirectory: dir, logger: Logger(label: "t")) }
        func vhost(_ name: String, cpu: Int? = nil, vlan: Bool = false) -> PortSpec {
            var s = PortSpec(kind: .vhostUser, path: name + ".sock")
            s.cpu = cpu
            if vlan { s.vlanMode = "access"; s.tag = 10 }
            return s
        }
        func add(_ bridge: String, _ name: String, _ spec: PortSpec) throws {
            try loop.sync { Result { () throws(SwitchError) in try controller.addPort(bridge: bridge, name: name, spec: spec) } }.get()
        }
        try loop.sync { Result { () throws(SwitchError) in try controller.addBridge("br0"); try controller.addBridge("br1") } }.get()
        try add("br0", "p0", vhost("p0"))
        try add("br0", "p1", vhost("p1", cpu: 1))
        try add("br0", "p2", vhost("p2", cpu: 1))
        try add("br0", "p3", vhost("p3", cpu: 0))   // the bridge's own thread
        let (e0, e1) = (cpus.engines[0], cpus.engines[1])
        XCTAssertEqual(loop.sync { controller.bridges[0].halves.count }, 1, "one half on the second thread")
        let threadOf = loop.sync { Dictionary(uniqueKeysWithValues: controller.snapshot()[0].ports.map { ($0.name, $0.options?["thread"] ?? "-") }) }
        XCTAssertEqual(threadOf, ["p0": "vswitch-fwd", "p1": "vswitch-fwd1", "p2": "vswitch-fwd1", "p3": "vswitch-fwd"])
        func kinds(_ e: ForwardingEngine) -> [SlotKind] {
            e.sync { e in (0..<ForwardingEngine.maxPorts).filter { e.ports[$0].inUse }.map { e.ports[$0].kind } }
        }
        XCTAssertEqual(kinds(e0).filter { $0 == .peer }.count, 1)
        XCTAssertEqual(kinds(e1).filter { $0 == .peer }.count, 1)
        XCTAssertEqual(kinds(e1).filter { $0 == .vhost }.count, 2)
        XCTAssertEqual(loop.sync { controller.threadBridges().map(\.bridges) }, [["br0"], ["br0", "br1"]], "br1 is on the second thread")
        // Refused on a spanning bridge, and a bridge with a VLAN port cannot span.
        func refused(_ words: String, line: UInt = #line, _ body: @escaping () throws(SwitchError) -> Void) {
            let r = loop.sync { Result { () throws(SwitchError) in try body() } }
            XCTAssertThrowsError(try r.get(), line: line) { XCTAssertTrue("\($0)".contains(words), "\($0)", line: line) }
        }
        refused("mirror is not supported") { () throws(SwitchError) in
            try controller.addMirror(bridge: "br0", name: "m0", spec: MirrorSpec(selectSrc: ["p0"], output: "p1"))
        }
        refused("a VLAN policy is not supported") { () throws(SwitchError) in try controller.addPort(bridge: "br0", name: "v0", spec: vhost("v0", vlan: true)) }
        refused("a capture is not supported") { () throws(SwitchError) in
            try controller.addPort(bridge: "br0", name: "cap", spec: PortSpec(kind: .pcap, file: dir + "/c.pcap"))
        }
        try add("br1", "v1", vhost("v1", vlan: true))
        refused("has VLAN policies") { () throws(SwitchError) in try controller.addPort(bridge: "br1", name: "q1", spec: vhost("q1", cpu: 0)) }
        refused("no forwarding thread on CPU 7") { () throws(SwitchError) in try controller.addPort(bridge: "br1", name: "q1", spec: vhost("q1", cpu: 7)) }
        XCTAssertEqual(loop.sync { controller.bridges[1].halves.count }, 0)
        // The half goes with its last port; a port that cannot be made leaves no half behind.
        try loop.sync { Result { () throws(SwitchError) in
            try controller.deletePort(bridge: "br0", port: "p1")
            try controller.deletePort(bridge: "br0", port: "p2")
        } }.get()
        XCTAssertEqual(loop.sync { controller.bridges[0].halves.count }, 0)
        XCTAssertEqual(kinds(e0).filter { $0 == .peer }.count, 0)
        XCTAssertEqual(kinds(e1).filter { $0 == .peer }.count, 0)
        XCTAssertEqual(e1.sync { e in (0..<ForwardingEngine.maxBridges).filter { e.bridges[$0].inUse }.count }, 1, "br1 only")
        var bad = vhost("bad", cpu: 1)
        bad.path = String(repeating: "x", count: 200)   // too long for a socket address
        refused("invalid socket path") { () throws(SwitchError) in try controller.addPort(bridge: "br0", name: "bad", spec: bad) }
        XCTAssertEqual(loop.sync { controller.bridges[0].halves.count }, 0)
        XCTAssertEqual(kinds(e1).filter { $0 == .peer }.count, 0)
        try add("br0", "p1", vhost("p1", cpu: 1))   // and spans again
        XCTAssertEqual(loop.sync { controller.bridges[0].halves.count }, 1)
        loop.sync { controller.shutdown() }
        XCTAssertEqual(kinds(e0), [])
        XCTAssertEqual(kinds(e1), [])
        XCTAssertEqual(e1.sync { e in (0..<ForwardingEngine.maxBridges).filter { e.bridges[$0].inUse }.count }, 0)
    }

    /// Tunnel ports sharing one UDP socket must be on one thread (the socket's VNI table
    /// holds one engine's slots): refused with a reason, not forwarded wrongly.
    func testSharedTunnelSocketStaysOnOneThread() throws {
        let threads = ForwardingThreads(engines: [ForwardingEngine(logger: Logger(label: "a")),
                                                  ForwardingEngine(logger: Logger(label: "b"), threadName: "vswitch-fwd1")])
        let controller = SwitchController(threads: threads, loop: EventLoop(), runDirectory: "/tmp", logger: Logger(label: "t"))
        for b in ["br0", "br1", "br2"] { try controller.addBridge(b) }   // br0, br2: thread 0; br1: thread 1
        let port = 40000 + Int(getpid() % 20000)
        func spec(_ vni: Int) -> PortSpec { PortSpec(kind: .vxlan, remotes: ["127.0.0.2"], vni: vni, local: "127.0.0.1", dstPort: port) }
        try controller.addPort(bridge: "br0", name: "vx10", spec: spec(10))
        XCTAssertThrowsError(try controller.addPort(bridge: "br1", name: "vx20", spec: spec(20))) {
            XCTAssertTrue("\($0)".contains("must be on bridges of one thread"), "\($0)")
        }
        try controller.addPort(bridge: "br2", name: "vx30", spec: spec(30))   // same thread: shared
        controller.shutdown()
    }

    // MARK: forwarding on two threads

    /// Two engines, each with its own bridge and guest pair, forward at the same time and
    /// every frame arrives; then both threads sleep (no polls while idle).
    func testTwoThreadsForwardAtOnceAndSleep() throws {
        let harnesses = [EngineHarness(), EngineHarness()]
        let pairs = [GoodPair(), GoodPair()]
        for (h, p) in zip(harnesses, pairs) { try p.attach(to: h) }
        let ok = UnsafeMutablePointer<Bool>.allocate(capacity: 2)
        defer { ok.deallocate() }
        ok.initialize(repeating: false, count: 2)
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            var all = true
            for _ in 0..<200 where all { all = pairs[i].exchange(harnesses[i]) }
            ok[i] = all
        }
        XCTAssertEqual([ok[0], ok[1]], [true, true])
        for h in harnesses { XCTAssertLessThan(h.idlePolls(over: 0.2), 50, "an idle thread sleeps in epoll") }
    }
}
