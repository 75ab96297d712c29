import VhostUser
import Foundation
import Logging
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
@testable import CaptureWriter

/// `--buffer-size` and `--capture-cpu` of pcap ports: the ring and the pinned writer a user
/// asked for, shown in `show`; out-of-range values refused with the reason, adding nothing.
final class CaptureOptionsTests: XCTestCase {
    var loop: EventLoop!
    var engine: ForwardingEngine!
    var controller: SwitchController!
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "vsw-capopt-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        loop = EventLoop()
        let thread = Thread { [loop] in loop!.run() }
        thread.start()
        engine = ForwardingEngine(logger: Logger(label: "t"))
        engine.start()
        let (engine, loop, dir) = (engine!, loop!, dir!)
        controller = loop.sync { SwitchController(engine: engine, loop: loop, runDirectory: dir, logger: Logger(label: "t")) }
        try run { c throws(SwitchError) in try c.addBridge("br0") }
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

    func spec(_ file: String, buffer: Int? = nil, cpu: Int? = nil) -> PortSpec {
        var s = PortSpec(kind: .pcap, file: dir + "/" + file)
        s.captureBuffer = buffer
        s.captureCPU = cpu
        return s
    }

    func options(_ port: String) -> [String: String]? {
        loop.sync { self.controller.snapshot()[0].ports.first { $0.name == port }?.options }
    }

    func testBufferSizeAndWriterCPUAreUsedAndShown() throws {
        let s = spec("big.pcap", buffer: 48 << 20, cpu: 0)
        try run { c throws(SwitchError) in
            try c.addPort(bridge: "br0", name: "big", spec: s)
            try c.addPort(bridge: "br0", name: "plain", spec: self.spec("plain.pcap"))
        }
        XCTAssertEqual(options("big")?["buffer"], String(64 << 20), "rounded up to a power of two")
        XCTAssertEqual(options("big")?["captureCPU"], "0")
        XCTAssertEqual(options("plain")?["buffer"], String(CaptureBuffer.defaultCapacity))
        XCTAssertNil(options("plain")?["captureCPU"])
    }

    func testOutOfRangeValuesAreRefusedAndAddNothing() {
        let cases: [(PortSpec, String)] = [
            (spec("a.pcap", buffer: 1000), "invalid buffer size 1000: use 128K-1G bytes"),
            (spec("b.pcap", buffer: 2 << 30), "invalid buffer size"),
            (spec("c.pcap", cpu: 100_000), "invalid capture CPU 100000"),
            (spec("d.pcap", cpu: -1), "invalid capture CPU -1"),
        ]
        for (s, expected) in cases {
            var message: String?
            do { try run { c throws(SwitchError) in try c.addPort(bridge: "br0", name: "cap", spec: s) } } catch {
                message = "\(error)"
            }
            XCTAssertTrue(message?.contains(expected) ?? false, "\(s): \(message ?? "accepted")")
            XCTAssertFalse(FileManager.default.fileExists(atPath: s.file!), "no file left behind")
        }
        XCTAssertEqual(loop.sync { self.controller.snapshot()[0].ports.count }, 0)
    }
}
