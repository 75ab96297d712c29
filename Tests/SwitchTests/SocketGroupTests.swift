import Foundation
import Logging
import VhostUser
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath

/// `--socket-group`: a named group that does not exist is refused at add-port, naming it;
/// the daemon's group applies to vhostuser ports that name none; `show` carries a reason.
final class SocketGroupTests: XCTestCase {
    func testSocketGroupsAndReasons() throws {
        let dir = NSTemporaryDirectory() + "vsw-group-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let loop = EventLoop()
        Thread { loop.run() }.start()
        defer { loop.stop() }
        let engine = ForwardingEngine(logger: Logger(label: "t"))
        engine.start()
        defer { engine.stop() }
        let group = String(cString: getgrgid(getegid())!.pointee.gr_name)
        let controller = loop.sync { SwitchController(engine: engine, loop: loop, runDirectory: dir, logger: Logger(label: "t")) }
        loop.sync { controller.socketGroup = group }
        func add(_ name: String, _ kind: PortKind, group: String? = nil) -> SwitchError? {
            loop.sync { () -> SwitchError? in
                do throws(SwitchError) {
                    try controller.addPort(bridge: "br0", name: name,
                                           spec: PortSpec(kind: kind, path: name + ".sock", socketGroup: group))
                    return nil
                } catch { return error }
            }
        }
        try loop.sync { Result { () throws(SwitchError) in try controller.addBridge("br0") } }.get()
        XCTAssertEqual(add("p1", .vhostUser, group: "no-such-group-x")?.description, "--socket-group: no group named no-such-group-x")
        XCTAssertEqual(add("p2", .vhostUserClient, group: group)?.description,
                       "--socket-group applies to vhostuser ports only: for vhostuserclient QEMU creates the socket")
        XCTAssertNil(add("p3", .vhostUser))
        XCTAssertNil(add("p4", .vhostUserClient))
        var st = stat()
        XCTAssertEqual(lstat(dir + "/p3.sock", &st), 0)
        XCTAssertEqual(st.st_gid, getegid())
        let ports = loop.sync { controller.snapshot()[0].ports }
        XCTAssertEqual(ports.map(\.name), ["p3", "p4"], "refused ports are not added")
        XCTAssertTrue(ports[0].reason?.hasPrefix("listening: no frontend has connected") ?? false, "\(ports[0])")
        XCTAssertEqual(ports[1].reason, "connecting: \(dir)/p4.sock does not exist (QEMU not started yet?), retrying every 1 s")
        XCTAssertNotNil(ports[1].reasonSince)
        let report = try loop.sync { Result { () throws(SwitchError) in try controller.doctor(port: "p4") } }.get()
        XCTAssertEqual(report.first?.checks.first?.status, .problem)
        loop.sync { controller.shutdown() }
    }

    /// A ring the data plane stops as corrupt: show says which queue, what and when, and
    /// the reason goes when the guest sets the ring up again.
    func testBrokenRingReason() throws {
        let dir = NSTemporaryDirectory() + "vsw-brk-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let loop = EventLoop()
        Thread { loop.run() }.start()
        defer { loop.stop() }
        let engine = ForwardingEngine(logger: Logger(label: "t"))
        engine.start()
        defer { engine.stop() }
        let controller = loop.sync { SwitchController(engine: engine, loop: loop, runDirectory: dir, logger: Logger(label: "t")) }
        try loop.sync { Result { () throws(SwitchError) in
            try controller.addBridge("br0")
            try controller.addPort(bridge: "br0", name: "p1", kind: .vhostUser, path: "p1.sock")
        } }.get()
        let slot = loop.sync { controller.bridges[0].ports[0].slot }
        let before = ForwardingEngine.ringFaultCount
        engine.sync { $0.ringFailed(port: slot, queue: 1, .headOutOfRange) }
        XCTAssertEqual(ForwardingEngine.ringFaultCount, before + 1)
        let port = loop.sync { controller.snapshot()[0].ports[0] }
        XCTAssertEqual(port.state, "broken")
        let reason = try XCTUnwrap(port.reason)
        XCTAssertTrue(reason.hasPrefix("broken: the guest wrote a bad descriptor on TX queue 0 at "), reason)
        XCTAssertTrue(reason.contains("(descriptor head index out of range)"), reason)
        engine.sync { _ = $0.stopQueue(port: slot, queue: 1) }   // the frontend let go of the ring
        let after = loop.sync { controller.snapshot()[0].ports[0] }
        XCTAssertEqual(after.state, "listening")
        XCTAssertTrue(after.reason?.hasPrefix("listening:") ?? false)
        loop.sync { controller.shutdown() }
    }
}
