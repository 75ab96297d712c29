import SwitchModel
import Control
import Foundation
import Glibc
import XCTest

/// The persisted configuration: what is recorded, the file round trip, atomic replacement,
/// and clear errors for every kind of bad file.
final class ConfigStoreTests: XCTestCase {
    static let addBr = ControlRequest(command: .addBridge, bridge: "br0", agingSeconds: 120)
    static let vm1 = ControlRequest(command: .addPort, bridge: "br0", port: "vm1", type: .vhostUserClient, path: "/tmp/vm1.sock")
    static let vm2 = ControlRequest(command: .addPort, bridge: "br0", port: "vm2", type: .vhostUser, path: "vm2.sock")

    func built() -> SwitchConfig {
        var c = SwitchConfig()
        for r in [Self.addBr, Self.vm1, Self.vm2, ControlRequest(command: .addBridge, bridge: "br1")] {
            XCTAssertTrue(c.record(r), "\(r)")
        }
        return c
    }

    func testRecordKeepsTheOriginalRequests() {
        var c = built()
        XCTAssertEqual(c.requests, [Self.addBr, Self.vm1, Self.vm2, ControlRequest(command: .addBridge, bridge: "br1")])
        XCTAssertTrue(c.record(ControlRequest(command: .setAging, bridge: "br0", agingSeconds: 60)))
        XCTAssertEqual(c.bridges[0].addBridge.agingSeconds, 60)
        XCTAssertTrue(c.record(ControlRequest(command: .deletePort, bridge: "br0", port: "vm1")))
        XCTAssertEqual(c.bridges[0].addPorts, [Self.vm2])
        XCTAssertTrue(c.record(ControlRequest(command: .deleteBridge, bridge: "br0")))
        XCTAssertEqual(c.requests, [ControlRequest(command: .addBridge, bridge: "br1")])
        // Queries and requests about things that are not there change nothing.
        for r in [ControlRequest(command: .show), ControlRequest(command: .fdbFlush, bridge: "br1"),
                  ControlRequest(command: .deletePort, bridge: "br1", port: "nope"),
                  ControlRequest(command: .addPort, bridge: "br9", port: "x")] {
            XCTAssertFalse(c.record(r), "\(r)")
        }
        XCTAssertEqual(c.requests, [ControlRequest(command: .addBridge, bridge: "br1")])
        XCTAssertTrue(SwitchConfig.changes(.setAging))
        XCTAssertFalse(SwitchConfig.changes(.fdbFlush))
    }

    func testFileRoundTrip() throws {
        let path = try makeTempDir(self) + "/vswitchd.json"
        XCTAssertNil(try ConfigFile.load(path), "no file: nothing to restore")
        let c = built()
        try ConfigFile.save(c, to: path)
        XCTAssertEqual(try ConfigFile.load(path), c)
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        XCTAssertFalse(FileManager.default.fileExists(atPath: ConfigFile.temporaryPath(for: path)))
        // Every request field is kept, in the protocol's own spelling.
        let text = try String(contentsOfFile: path, encoding: .utf8)
        for needle in [#""path" : "vm2.sock""#, #""type" : "vhostuserclient""#, #""agingSeconds" : 120"#, #""version" : 1"#] {
            XCTAssertTrue(text.contains(needle), "\(needle) in\n\(text)")
        }
    }

    func testTheExampleInConfigsIsValid() throws {
        let here = URL(fileURLWithPath: #filePath)
        let example = here.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Configs/two-vms.json").path
        let c = try XCTUnwrap(try ConfigFile.load(example))
        XCTAssertEqual(c.requests.map(\.command), [.addBridge, .addPort, .addPort])
    }

    func testFailedSaveLeavesTheOldFile() throws {
        let dir = try makeTempDir(self)
        let path = dir + "/vswitchd.json"
        try ConfigFile.save(built(), to: path)
        let before = try Data(contentsOf: URL(fileURLWithPath: path))

        // The temporary file cannot be created: the save fails, the old file stays.
        let tmp = ConfigFile.temporaryPath(for: path)
        XCTAssertEqual(mkdir(tmp, 0o700), 0)
        XCTAssertThrowsError(try ConfigFile.save(SwitchConfig(), to: path)) { error in
            XCTAssertTrue("\(error)".hasPrefix("configuration file \(path): open \(tmp) failed"), "\(error)")
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), before)
        XCTAssertEqual(rmdir(tmp), 0)

        // A symlink at the temporary name is not followed.
        let victim = dir + "/victim"
        XCTAssertTrue(FileManager.default.createFile(atPath: victim, contents: Data("keep".utf8)))
        XCTAssertEqual(symlink(victim, tmp), 0)
        XCTAssertThrowsError(try ConfigFile.save(SwitchConfig(), to: path))
        XCTAssertEqual(FileManager.default.contents(atPath: victim), Data("keep".utf8))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), before)
        unlink(tmp)

        // The rename fails (the target is a directory): the temporary file is removed.
        let target = dir + "/adir"
        XCTAssertEqual(mkdir(target, 0o700), 0)
        XCTAssertTrue(FileManager.default.createFile(atPath: target + "/inside", contents: Data()))
        XCTAssertThrowsError(try ConfigFile.save(built(), to: target)) { error in
            XCTAssertTrue("\(error)".contains("rename"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: ConfigFile.temporaryPath(for: target)))
        XCTAssertTrue(FileManager.default.fileExists(atPath: target + "/inside"))
    }

    func testBadFilesGiveOneClearError() throws {
        let dir = try makeTempDir(self)
        let path = dir + "/c.json"
        let cases: [(String, String)] = [
            ("", "the file is empty"),
            ("{\"version\":1,", "not a vswitchd configuration: not valid JSON"),
            ("[1,2]", "not a vswitchd configuration:"),
            (#"{"version":1}"#, "not a vswitchd configuration: missing field 'bridges'"),
            (#"{"version":2,"bridges":[]}"#, "unsupported version 2 (this vswitchd reads version 1)"),
            (#"{"version":1,"bridges":[{"addBridge":{"command":"add-br","bridge":"br0","agingSeconds":"x"},"addPorts":[]}]}"#,
             "not a vswitchd configuration: field 'bridges.[0].addBridge.agingSeconds' should be a number"),
            (#"{"version":1,"bridges":[{"addBridge":{"command":"add-port","bridge":"br0"},"addPorts":[]}]}"#,
             "bridges[0].addBridge must be an add-br request with a 'bridge'"),
            (#"{"version":1,"bridges":[{"addBridge":{"command":"add-br","bridge":"br0"},"addPorts":[{"command":"add-port","bridge":"br1","port":"p"}]}]}"#,
             "port p is listed under bridge br0 but names bridge br1"),
            (#"{"version":1,"bridges":[{"addBridge":{"command":"add-br","bridge":"br0"},"addPorts":[]},{"addBridge":{"command":"add-br","bridge":"br0"},"addPorts":[]}]}"#,
             "bridge br0 appears twice"),
            (#"{"version":1,"bridges":[{"addBridge":{"command":"add-br","bridge":"br0"},"addPorts":[{"command":"add-port","bridge":"br0","port":"p"},{"command":"add-port","bridge":"br0","port":"p"}]}]}"#,
             "port p appears twice"),
            (#"{"version":1,"bridges":[{"addBridge":{"command":"add-br","bridge":"br0"},"addPorts":[{"command":"add-port","bridge":"br0","port":"p","type":"warp"}]}]}"#,
             "not a vswitchd configuration: invalid value for 'bridges.[0].addPorts.[0].type'"),
        ]
        for (text, expected) in cases {
            XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
            XCTAssertThrowsError(try ConfigFile.load(path), text) { error in
                XCTAssertTrue("\(error)".hasPrefix("configuration file \(path): \(expected)"), "\(text): got \(error)")
            }
            XCTAssertEqual(FileManager.default.contents(atPath: path), Data(text.utf8), "a bad file is never changed")
        }

        XCTAssertThrowsError(try ConfigFile.load(dir)) { error in
            XCTAssertEqual("\(error)", "configuration file \(dir): not a regular file")
        }
        let fifo = dir + "/fifo"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        XCTAssertThrowsError(try ConfigFile.load(fifo)) { error in   // and does not hang
            XCTAssertEqual("\(error)", "configuration file \(fifo): not a regular file")
        }
        let big = dir + "/big.json"
        XCTAssertTrue(FileManager.default.createFile(atPath: big, contents: Data(count: ConfigFile.maxBytes + 1)))
        XCTAssertThrowsError(try ConfigFile.load(big)) { error in
            XCTAssertTrue("\(error)".contains("more than the \(ConfigFile.maxBytes) accepted"), "\(error)")
        }
    }
}
