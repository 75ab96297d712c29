import Control
import Foundation
import Logging
import VhostUser
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath

/// `add-mirror` / `del-mirror` in the control plane: every wrong request gets a clear error
/// and changes nothing; mirrors show up in `show`, block deleting the ports they name, and
/// survive in the configuration file.
final class MirrorControlTests: XCTestCase {
    var loop: EventLoop!
    var engine: ForwardingEngine!
    var controller: SwitchController!
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "vsw-mirror-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        loop = EventLoop()
        let thread = Thread { [loop] in loop!.run() }
        thread.start()
        engine = ForwardingEngine(logger: Logger(label: "t"))
        engine.start()
        let (engine, loop, dir) = (engine!, loop!, dir!)
        controller = loop.sync { SwitchController(engine: engine, loop: loop, runDirectory: dir, logger: Logger(label: "t")) }
        try run { c throws(SwitchError) in
            try c.addBridge("br0")
            for p in ["vm1", "vm2", "vm3", "ids"] { try c.addPort(bridge: "br0", name: p, kind: .vhostUser, path: p + ".sock") }
            try c.addPort(bridge: "br0", name: "cap", spec: PortSpec(kind: .pcap, file: dir + "/c.pcap"))
        }
    }

    override func tearDown() {
        let c = controller!
        loop.sync { c.shutdown() }
        engine.stop()
        loop.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    func run(_ body: @escaping (SwitchController) throws(SwitchError) -> Void) throws {
        let c = controller!
        try loop.sync { Result { () throws(SwitchError) in try body(c) } }.get()
    }

    func error(_ body: @escaping (SwitchController) throws(SwitchError) -> Void) -> String? {
        do { try run(body); return nil } catch { return "\(error)" }
    }

    func testBadMirrorsAreRefusedWithTheReason() throws {
        let cases: [(MirrorSpec, String, String)] = [
            (MirrorSpec(output: "ids"), "m0", "selects nothing"),
            (MirrorSpec(selectSrc: ["vm9"], output: "ids"), "m0", "no port named vm9"),
            (MirrorSpec(selectSrc: ["vm1"], output: "vm9"), "m0", "no port named vm9"),
            (MirrorSpec(selectSrc: ["ids"], output: "ids"), "m0", "cannot be one of the ports it selects"),
            (MirrorSpec(selectAll: true, output: "cap"), "m0", "not a bridge member"),
            (MirrorSpec(selectVlan: [5000], output: "ids"), "m0", "0-4094"),
            (MirrorSpec(selectAll: true, output: "ids"), "bad name!", "invalid name"),
        ]
        for (spec, name, expected) in cases {
            let e = error { c throws(SwitchError) in try c.addMirror(bridge: "br0", name: name, spec: spec) }
            XCTAssertTrue(e?.contains(expected) ?? false, "\(spec): \(e ?? "accepted")")
        }
        XCTAssertNil(loop.sync { self.controller.snapshot()[0].mirrors }, "nothing was added")
        try run { c throws(SwitchError) in try c.addMirror(bridge: "br0", name: "m0", spec: MirrorSpec(selectSrc: ["vm1"], output: "ids")) }
        XCTAssertTrue(error { c throws(SwitchError) in
            try c.addMirror(bridge: "br0", name: "m1", spec: MirrorSpec(selectSrc: ["vm2"], output: "ids"))
        }?.contains("already the output of mirror m0") ?? false, "two mirrors, one output")
        XCTAssertTrue(error { c throws(SwitchError) in
            try c.addMirror(bridge: "br0", name: "m0", spec: MirrorSpec(selectSrc: ["vm2"], output: "vm3"))
        }?.contains("already has a mirror named m0") ?? false)
        XCTAssertEqual(error { c throws(SwitchError) in try c.deleteMirror(bridge: "br0", name: "m7") },
                       "bridge br0 has no mirror named m7")
        XCTAssertTrue(error { c throws(SwitchError) in try c.deletePort(bridge: "br0", port: "vm1") }?
            .contains("used by mirror m0") ?? false)
        XCTAssertTrue(error { c throws(SwitchError) in try c.deletePort(bridge: "br0", port: "ids") }?
            .contains("used by mirror m0") ?? false)
    }

    func testShowDeleteAndTheOutputBecomesAMemberAgain() throws {
        try run { c throws(SwitchError) in
            try c.addMirror(bridge: "br0", name: "m0", spec: MirrorSpec(selectSrc: ["vm1"], selectDst: ["vm2"], selectVlan: [10],
                                                                      output: "ids"))
        }
        let shown = loop.sync { self.controller.snapshot()[0].mirrors }
        XCTAssertEqual(shown?.map(\.name), ["m0"])
        XCTAssertEqual(shown?.first?.spec.selectionDescription, "src vm1 dst vm2 vlan 10")
        let ids = loop.sync { self.controller.bridges[0].ports.first { $0.name == "ids" }!.slot }
        let bridgeSlot = loop.sync { self.controller.bridges[0].slot }
        XCTAssertFalse(engine.sync { e in (0..<e.bridges[bridgeSlot].memberCount).contains { e.bridges[bridgeSlot].members![$0] == Int32(ids) } },
                       "the output is not in the flood list")
        try run { c throws(SwitchError) in try c.deleteMirror(bridge: "br0", name: "m0") }
        XCTAssertTrue(engine.sync { e in (0..<e.bridges[bridgeSlot].memberCount).contains { e.bridges[bridgeSlot].members![$0] == Int32(ids) } })
        try run { c throws(SwitchError) in try c.deletePort(bridge: "br0", port: "vm1") }
        // del-br removes mirrors first.
        try run { c throws(SwitchError) in
            try c.addMirror(bridge: "br0", name: "m1", spec: MirrorSpec(selectAll: true, output: "ids"))
            try c.deleteBridge("br0")
        }
    }

    func testMirrorsArePersistedAfterTheirPorts() throws {
        var config = SwitchConfig()
        config.record(ControlRequest(command: .addBridge, bridge: "br0"))
        config.record(ControlRequest(command: .addPort, bridge: "br0", port: "ids", type: .tap, ifname: "ids0"))
        let add = ControlRequest(command: .addMirror, bridge: "br0", mirror: "m0",
                                 mirrorSpec: MirrorSpec(selectAll: true, output: "ids"))
        XCTAssertTrue(config.record(add))
        XCTAssertEqual(config.requests.map(\.command), [.addBridge, .addPort, .addMirror])
        let data = try JSONEncoder().encode(config)
        let back = try JSONDecoder().decode(SwitchConfig.self, from: data)
        XCTAssertEqual(back, config)
        XCTAssertNoThrow(try back.validate())
        XCTAssertTrue(config.record(ControlRequest(command: .deleteMirror, bridge: "br0", mirror: "m0")))
        XCTAssertEqual(config.requests.map(\.command), [.addBridge, .addPort])
        // A file written before mirrors existed still decodes.
        let old = #"{"bridges":[{"addBridge":{"bridge":"br0","command":"add-br"},"addPorts":[]}],"version":1}"#
        XCTAssertNoThrow(try JSONDecoder().decode(SwitchConfig.self, from: Data(old.utf8)).validate())
    }
}
