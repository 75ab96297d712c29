import Foundation
import Logging
import VhostUser
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
@testable import CaptureWriter

/// `vswitch show` reports a port whose ring was stopped as corrupt as "broken", and goes
/// back to the endpoint's own state once the mark is cleared.
final class BrokenPortStateTests: XCTestCase {
    func testSnapshotShowsBrokenPorts() throws {
        let dir = NSTemporaryDirectory() + "vsw-broken-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let loop = EventLoop()
        let thread = Thread { loop.run() }
        thread.start()
        defer { loop.stop() }
        let engine = ForwardingEngine(logger: Logger(label: "t"))
        engine.start()
        defer { engine.stop() }
        let controller = loop.sync { SwitchController(engine: engine, loop: loop, runDirectory: dir, logger: Logger(label: "t")) }
        try loop.sync { Result { () throws(SwitchError) in
            try controller.addBridge("br0")
            try controller.addPort(bridge: "br0", name: "p1", kind: .vhostUser, path: "p1.sock")
        } }.get()
        func state() -> String? { loop.sync { controller.snapshot().first?.ports.first?.state } }
        XCTAssertEqual(state(), "listening")
        let slot = loop.sync { controller.bridges[0].ports[0].slot }
        engine.sync { $0.ports[slot].brokenMask = 1 << 1 }
        XCTAssertEqual(state(), "broken")
        engine.sync { _ = $0.stopQueue(port: slot, queue: 1) }   // the frontend let go of the ring
        XCTAssertEqual(state(), "listening")
        loop.sync { controller.shutdown() }
    }
}
