import SwitchModel
import ArgumentParser
import Control
import Foundation
import Glibc
import VSwitchCLI
import XCTest

/// Streaming commands: the server's `streamer` hook takes a connection over after the ok
/// line, and `ControlStreamClient` copies what follows to a descriptor.
final class ControlStreamTests: XCTestCase {
    func testStreamerTakesOverTheConnectionAfterTheOkLine() throws {
        let dir = try makeTempDir(self)
        let server = try ControlServer(path: dir + "/s.sock") { _ in .success() }
        server.streamer = { request, fd in
            guard request.command == .capture else { return nil }
            guard request.bridge == "br0" else { return (.failure("no bridge named \(request.bridge ?? "")"), nil) }
            return (.success(), {
                let n = request.count ?? 0
                _ = (0..<n).map { i in send(fd, [UInt8(i), 0xAA], 2, Int32(MSG_NOSIGNAL)) }
            })
        }
        server.start()
        defer { server.stop() }
        let out = dir + "/out"
        let fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        defer { close(fd) }
        let client = ControlStreamClient(path: dir + "/s.sock")
        let (ok, end) = try client.run(ControlRequest(command: .capture, bridge: "br0", count: 3), output: { fd })
        XCTAssertTrue(ok.ok)
        XCTAssertEqual(end, .finished)
        XCTAssertEqual(Array(try XCTUnwrap(FileManager.default.contents(atPath: out))), [0, 0xAA, 1, 0xAA, 2, 0xAA])

        let (failed, none) = try client.run(ControlRequest(command: .capture, bridge: "br9"), output: { fd })
        XCTAssertEqual(failed.error, "no bridge named br9")
        XCTAssertNil(none)
        // Other commands still go to the plain handler.
        XCTAssertTrue(try ControlClient(path: dir + "/s.sock").send(ControlRequest(command: .show)).ok)
    }

    func testCaptureArguments() throws {
        let c = try XCTUnwrap(VSwitchCommand.parseAsRoot(["capture", "br0", "vm1", "-f", "tcp port 22", "-c", "100",
                                                          "-s", "128", "-w", "-", "--direction", "rx"]) as? Capture)
        XCTAssertEqual(c.makeRequest(), ControlRequest(command: .capture, bridge: "br0", filter: "tcp port 22", snaplen: 128,
                                                       watchPort: "vm1", direction: "rx", count: 100))
        for (args, text) in [(["capture", "br0", "-c", "0"], "-c"), (["capture", "br0", "-s", "0"], "-s"),
                             (["capture", "br0", "--direction", "sideways"], "--direction"),
                             (["capture", "br0", "vm1", "--direction", "up"], "--direction")] {
            XCTAssertThrowsError(try VSwitchCommand.parseAsRoot(args)) { error in
                XCTAssertTrue(VSwitchCommand.message(for: error).contains(text), "\(args): \(VSwitchCommand.message(for: error))")
            }
        }
        // A whole bridge takes a direction too (pcapng: the frame in and each copy out).
        XCTAssertNoThrow(try VSwitchCommand.parseAsRoot(["capture", "br0", "--direction", "both"]))
    }
}
