import SwitchModel
import ArgumentParser
import Control
import Foundation
import VSwitchCLI
import XCTest

final class CLITests: XCTestCase {
    private func request(_ args: [String]) throws -> ControlRequest {
        let command = try VSwitchCommand.parseAsRoot(args)
        let sub = try XCTUnwrap(command as? any ControlSubcommand, "\(type(of: command))")
        return sub.makeRequest()
    }

    private func assertRejected(_ args: [String], mentioning text: String,
                                file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try VSwitchCommand.parseAsRoot(args), file: file, line: line) { error in
            let message = VSwitchCommand.message(for: error)
            XCTAssertTrue(message.contains(text), "\(args): \(message)", file: file, line: line)
        }
    }

    func testPortPolicyOptionsReachTheRequest() throws {
        let r = try request(["add-port", "br0", "vm1", "--path", "/x", "--vlan-mode", "trunk", "--trunks", "10,20",
                             "--tag", "5", "--mtu", "9000", "--queues", "2"])
        XCTAssertEqual(r.vlanMode, "trunk")
        XCTAssertEqual(r.trunks, [10, 20])
        XCTAssertEqual(r.tag, 5)
        XCTAssertEqual(r.mtu, 9000)
        XCTAssertEqual(r.queues, 2)
        let t = try request(["add-port", "br0", "t0", "--type", "tap", "--ifname", "vs-tap0", "--vlan-mode", "access", "--tag", "10"])
        XCTAssertEqual(t.type, .tap)
        XCTAssertEqual(t.ifname, "vs-tap0")
        XCTAssertEqual(t.tag, 10)
    }

    func testVxlanLearningOptions() throws {
        let r = try request(["add-port", "br0", "vx0", "--type", "vxlan", "--remote", "192.0.2.1", "--vni", "42",
                             "--learning", "--remote-prefix", "192.0.2.0/24"])
        XCTAssertEqual(r.learning, true)
        XCTAssertEqual(r.remotePrefix, "192.0.2.0/24")
        XCTAssertNil(try request(["add-port", "br0", "vx0", "--type", "vxlan", "--remote", "192.0.2.1", "--vni", "42"]).learning)
        assertRejected(["add-port", "br0", "vx0", "--type", "vxlan", "--remote", "192.0.2.1", "--vni", "42", "--learning"],
                       mentioning: "--learning needs --remote-prefix")
        assertRejected(["add-port", "br0", "vx0", "--type", "vxlan", "--remote", "192.0.2.1", "--vni", "42",
                        "--remote-prefix", "192.0.2.0/24"], mentioning: "--remote-prefix needs --learning")
    }

    func testVxlanGroupOptions() throws {
        let r = try request(["add-port", "br0", "vx0", "--type", "vxlan", "--group", "239.1.1.1", "--dev", "eth0",
                             "--ttl", "4", "--vni", "42"])
        XCTAssertEqual(r.group, "239.1.1.1")
        XCTAssertEqual(r.dev, "eth0")
        XCTAssertEqual(r.ttl, 4)
        XCTAssertNil(r.remotes)
        // Persisted as the request itself (SwitchConfig): the group options survive a restart.
        var config = SwitchConfig()
        config.record(ControlRequest(command: .addBridge, bridge: "br0"))
        config.record(r)
        let restored = try JSONDecoder().decode(SwitchConfig.self, from: JSONEncoder().encode(config))
        XCTAssertEqual(restored.requests.last, r)
        assertRejected(["add-port", "br0", "vx0", "--type", "vxlan", "--remote", "192.0.2.1", "--group", "239.1.1.1", "--vni", "42"],
                       mentioning: "--remote and --group are mutually exclusive")
        assertRejected(["add-port", "br0", "vx0", "--type", "vxlan", "--vni", "42"], mentioning: "needs --remote or --group")
        assertRejected(["add-port", "br0", "vx0", "--type", "vxlan", "--remote", "192.0.2.1", "--vni", "42", "--ttl", "2"],
                       mentioning: "--dev and --ttl need --group")
        assertRejected(["add-port", "br0", "vx0", "--type", "vxlan", "--group", "239.1.1.1", "--vni", "42", "--ttl", "256"],
                       mentioning: "--ttl must be 1-255")
    }

    func testGeneveOptions() throws {
        let r = try request(["add-port", "br0", "gn0", "--type", "geneve", "--remote", "192.0.2.1", "--vni", "42"])
        XCTAssertEqual(r.type, .geneve)
        XCTAssertEqual(r.remotes, ["192.0.2.1"])
        assertRejected(["add-port", "br0", "gn0", "--type", "geneve", "--vni", "42"], mentioning: "--type geneve needs --remote")
        assertRejected(["add-port", "br0", "gn0", "--type", "geneve", "--remote", "192.0.2.1"], mentioning: "--type geneve needs --vni")
        assertRejected(["add-port", "br0", "gn0", "--type", "geneve", "--group", "239.1.1.1", "--vni", "42"],
                       mentioning: "--group applies to --type vxlan only")
    }

    func testMirrorCommands() throws {
        let r = try request(["add-mirror", "br0", "m0", "--select-src", "vm1,vm2", "--select-dst", "vm1",
                             "--select-vlan", "10,20", "--output", "ids"])
        XCTAssertEqual(r, ControlRequest(command: .addMirror, bridge: "br0", mirror: "m0", mirrorSpec: MirrorSpec(
            selectSrc: ["vm1", "vm2"], selectDst: ["vm1"], selectVlan: [10, 20], output: "ids")))
        XCTAssertEqual(try request(["add-mirror", "br0", "m1", "--select-all", "--output", "vx"]).mirrorSpec?.selectAll, true)
        XCTAssertEqual(try request(["del-mirror", "br0", "m0"]), ControlRequest(command: .deleteMirror, bridge: "br0", mirror: "m0"))
        assertRejected(["add-mirror", "br0", "m0", "--output", "ids"], mentioning: "at least one of --select-src")
        assertRejected(["add-mirror", "br0", "m0", "--select-vlan", "10,x", "--output", "ids"], mentioning: "--select-vlan")
        assertRejected(["add-mirror", "br0", "m0", "--select-vlan", "4095", "--output", "ids"], mentioning: "0-4094")
        assertRejected(["add-mirror", "br0", "m0", "--select-all"], mentioning: "--output")
    }

    func testValidParsesBuildRequests() throws {
        XCTAssertEqual(try request(["add-br", "br0"]), ControlRequest(command: .addBridge, bridge: "br0"))
        var onCPU = ControlRequest(command: .addBridge, bridge: "br0")
        onCPU.cpu = 1
        XCTAssertEqual(try request(["add-br", "br0", "--cpu", "1"]), onCPU)
        XCTAssertThrowsError(try request(["add-br", "br0", "--cpu", "-1"]))
        XCTAssertEqual(try request(["add-port", "br0", "vm1", "--type", "vhostuser", "--path", "vm1.sock", "--cpu", "1"]).cpu, 1)
        XCTAssertEqual(try request(["add-br", "br0", "--aging", "60"]),
                       ControlRequest(command: .addBridge, bridge: "br0", agingSeconds: 60))
        XCTAssertEqual(try request(["del-br", "br0"]), ControlRequest(command: .deleteBridge, bridge: "br0"))
        XCTAssertEqual(try request(["add-port", "br0", "vm1", "--path", "/run/vm1.sock"]),
                       ControlRequest(command: .addPort, bridge: "br0", port: "vm1", type: .vhostUser,
                                      path: "/run/vm1.sock"))
        XCTAssertEqual(try request(["add-port", "br0", "vm-2.a", "--type", "vhostuserclient", "--path", "/q"]),
                       ControlRequest(command: .addPort, bridge: "br0", port: "vm-2.a",
                                      type: .vhostUserClient, path: "/q"))
        XCTAssertEqual(try request(["del-port", "br0", "vm1"]),
                       ControlRequest(command: .deletePort, bridge: "br0", port: "vm1"))
        XCTAssertEqual(try request(["show"]), ControlRequest(command: .show))
        XCTAssertEqual(try request(["fdb", "show", "br0"]), ControlRequest(command: .fdbShow, bridge: "br0"))
        XCTAssertEqual(try request(["fdb", "flush", "br0"]), ControlRequest(command: .fdbFlush, bridge: "br0"))
        XCTAssertEqual(try request(["port", "stats", "br0"]), ControlRequest(command: .portStats, bridge: "br0"))
        XCTAssertEqual(try request(["port", "stats", "br0", "vm1"]),
                       ControlRequest(command: .portStats, bridge: "br0", port: "vm1"))
        XCTAssertEqual(try request(["set-aging", "br0", "86400"]),
                       ControlRequest(command: .setAging, bridge: "br0", agingSeconds: 86400))
    }

    func testGlobalOptionsOnSubcommands() throws {
        let show = try XCTUnwrap(try VSwitchCommand.parseAsRoot(
            ["show", "--format", "json", "--control", "/tmp/x.sock"]) as? Show)
        XCTAssertEqual(show.global.format, .json)
        XCTAssertEqual(show.global.socketPath, "/tmp/x.sock")
        // Also accepted before the subcommand name.
        let fdb = try XCTUnwrap(try VSwitchCommand.parseAsRoot(
            ["--format", "json", "--control", "/tmp/y.sock", "fdb", "show", "br0"]) as? FdbShow)
        XCTAssertEqual(fdb.global.format, .json)
        XCTAssertEqual(fdb.global.control, "/tmp/y.sock")
        let plain = try XCTUnwrap(try VSwitchCommand.parseAsRoot(["show"]) as? Show)
        XCTAssertEqual(plain.global.format, .text)
        XCTAssertNil(plain.global.control)
    }

    func testSocketPathResolution() {
        XCTAssertEqual(ControlDefaults.resolveSocketPath(option: "/a", environment: ["VSWITCH_SOCK": "/b"]), "/a")
        XCTAssertEqual(ControlDefaults.resolveSocketPath(option: nil, environment: ["VSWITCH_SOCK": "/b"]), "/b")
        XCTAssertEqual(ControlDefaults.resolveSocketPath(option: nil, environment: [:]), "/run/vswitch/vswitchd.sock")
    }

    func testArgumentErrors() {
        assertRejected(["add-port", "br0", "vm1", "--type", "tun", "--path", "/x"], mentioning: "vhostuserclient")
        assertRejected(["add-port", "br0", "vm1", "--type", "tun", "--path", "/x"], mentioning: "geneve")
        assertRejected(["add-port", "br0", "vm1", "--type", "tap", "--path", "/x"], mentioning: "--ifname")
        assertRejected(["add-port", "br0", "t0", "--type", "tap", "--ifname", "much-too-long-name0"], mentioning: "interface")
        assertRejected(["add-port", "br0", "c", "--type", "pcap"], mentioning: "--file")
        assertRejected(["add-port", "br0", "c", "--type", "pcap", "--file", "/x", "--rotate-size", "10Q"], mentioning: "--rotate-size")
        assertRejected(["add-port", "br0", "c", "--type", "pcap", "--file", "/x", "--direction", "up"], mentioning: "--direction")
        assertRejected(["add-port", "br0", "v", "--type", "vxlan", "--vni", "1"], mentioning: "--remote")
        assertRejected(["add-port", "br0", "vm1", "--path", "/x", "--vlan-mode", "access"], mentioning: "--tag")
        assertRejected(["add-port", "br0", "vm1", "--path", "/x", "--vlan-mode", "access", "--tag", "4095"], mentioning: "1-4094")
        assertRejected(["add-port", "br0", "vm1", "--path", "/x", "--vlan-mode", "trunk", "--trunks", "10,x"], mentioning: "--trunks")
        assertRejected(["add-port", "br0", "vm1", "--path", "/x", "--vlan-mode", "hybrid", "--tag", "1"], mentioning: "access or trunk")
        assertRejected(["add-port", "br0", "vm1", "--path", "/x", "--tag", "10"], mentioning: "--vlan-mode")
        assertRejected(["add-port", "br0", "vm1", "--path", "/x", "--mtu", "20"], mentioning: "--mtu")
        assertRejected(["add-port", "br0", "vm1", "--path", "/x", "--queues", "9"], mentioning: "--queues")
        assertRejected(["add-port", "br0", "v", "--type", "vxlan", "--remote", "192.0.2.1", "--vni", "16777216"], mentioning: "--vni")
        assertRejected(["add-port", "br0", "vm1"], mentioning: "--path")
        assertRejected(["add-port", "br0", "vm1", "--path", ""], mentioning: "--path")
        assertRejected(["add-br", "bad name"], mentioning: "invalid bridge name")
        assertRejected(["add-br", ""], mentioning: "invalid bridge name")
        assertRejected(["add-br", "a234567890123456"], mentioning: "invalid bridge name")
        assertRejected(["add-port", "br0", "vm/1", "--path", "/x"], mentioning: "invalid port name")
        assertRejected(["del-br", "br#0"], mentioning: "invalid bridge name")
        assertRejected(["fdb", "show", "b r"], mentioning: "invalid bridge name")
        assertRejected(["add-br", "br0", "--aging", "0"], mentioning: "invalid aging time 0")
        assertRejected(["set-aging", "br0", "0"], mentioning: "invalid aging time 0")
        assertRejected(["set-aging", "br0", "86401"], mentioning: "invalid aging time")
        assertRejected(["show", "--format", "xml"], mentioning: "json")
    }

    func testNameBoundaries() throws {
        XCTAssertNoThrow(try VSwitchCommand.parseAsRoot(["add-br", "a23456789012345"]))
        XCTAssertNoThrow(try VSwitchCommand.parseAsRoot(["add-br", "A_b.c-9"]))
        XCTAssertNoThrow(try VSwitchCommand.parseAsRoot(["set-aging", "br0", "1"]))
    }

    /// End to end through a real socket: success exits normally, ok:false throws exit code 1,
    /// and a missing daemon is a clean exit 1 too.
    func testRunAgainstFakeDaemon() throws {
        let path = try makeTempDir(self) + "/d.sock"
        let server = try ControlServer(path: path) { request in
            request.bridge == "br0" ? .success() : .failure("no bridge named \(request.bridge ?? "")")
        }
        server.start()
        defer { server.stop() }
        var ok = try VSwitchCommand.parseAsRoot(["fdb", "flush", "br0", "--control", path])
        XCTAssertNoThrow(try ok.run())
        var bad = try VSwitchCommand.parseAsRoot(["fdb", "flush", "br9", "--control", path])
        XCTAssertThrowsError(try bad.run()) { XCTAssertEqual($0 as? ExitCode, .failure) }
        var absent = try VSwitchCommand.parseAsRoot(["show", "--control", path + ".missing"])
        XCTAssertThrowsError(try absent.run()) { XCTAssertEqual($0 as? ExitCode, .failure) }
    }
}
