import SwitchModel
import Control
import Foundation
import VSwitchCLI
import XCTest

/// `show` prints a port's reason and since when; old JSON without them still decodes;
/// `doctor` prints each check and its fix.
final class LinkReasonRenderingTests: XCTestCase {
    func testShowPrintsReasonAndSince() throws {
        var port = PortInfo(name: "vm1", type: .vhostUser, path: "/run/vswitch/vm1.sock", state: "listening",
                            link: "down", features: [], protocolFeatures: [], mtu: nil, queues: [])
        port.reason = "listening: no frontend has connected for 42 s"
        port.reasonSince = 1_000_000
        let text = TextRendering.show([BridgeInfo(name: "br0", agingSeconds: 300, ports: [port])], now: 1_000_042)
        XCTAssertTrue(text.contains("        reason:            listening: no frontend has connected for 42 s\n"), text)
        XCTAssertTrue(text.contains(" (42 s ago)"), text)
        let json = TextRendering.json(ControlResult(bridges: [BridgeInfo(name: "br0", agingSeconds: 300, ports: [port])]))
        XCTAssertTrue(json.contains("\"reason\" : \"listening: no frontend has connected for 42 s\""), json)
        XCTAssertTrue(json.contains("\"reasonSince\" : 1000000"), json)
    }

    func testOldJSONWithoutReasonDecodes() throws {
        let old = #"{"name":"vm1","type":"vhostuser","path":"/p","state":"connected","link":"up","features":[],"protocolFeatures":[],"queues":[]}"#
        let port = try JSONDecoder().decode(PortInfo.self, from: Data(old.utf8))
        XCTAssertNil(port.reason)
        XCTAssertNil(port.reasonSince)
    }

    func testDoctorText() {
        let report = DoctorReport(bridge: "br0", port: "vm2", checks: [
            DoctorCheck(.ok, "socket /run/vswitch/vm2.sock: root:root 0660"),
            DoctorCheck(.problem, "libvirt-qemu may not connect", fix: "vswitchd --socket-group kvm"),
        ])
        XCTAssertEqual(TextRendering.doctor([report]), """
            Port vm2 (bridge br0)
                ok       socket /run/vswitch/vm2.sock: root:root 0660
                PROBLEM  libvirt-qemu may not connect
                         fix: vswitchd --socket-group kvm
            """)
        XCTAssertEqual(TextRendering.doctor([]), "no vhost-user ports")
    }
}

/// `--socket-group` and `doctor` on the command line.
final class SocketGroupCLITests: XCTestCase {
    func testSocketGroupAndDoctorReachTheRequest() throws {
        let add = try VSwitchCommand.parseAsRoot(["add-port", "br0", "vm1", "--path", "/x", "--socket-group", "kvm"])
        XCTAssertEqual((add as? any ControlSubcommand)?.makeRequest().socketGroup, "kvm")
        let doctor = try VSwitchCommand.parseAsRoot(["doctor", "vm1"])
        XCTAssertEqual((doctor as? any ControlSubcommand)?.makeRequest(), ControlRequest(command: .doctor, port: "vm1"))
        let all = try VSwitchCommand.parseAsRoot(["doctor"])
        XCTAssertEqual((all as? any ControlSubcommand)?.makeRequest(), ControlRequest(command: .doctor))
    }

    func testSocketGroupOnAClientPortIsRefused() {
        XCTAssertThrowsError(try VSwitchCommand.parseAsRoot(["add-port", "br0", "vm1", "--type", "vhostuserclient",
                                                              "--path", "/x", "--socket-group", "kvm"])) { error in
            XCTAssertTrue(VSwitchCommand.message(for: error).contains("QEMU creates the socket"))
        }
        XCTAssertThrowsError(try VSwitchCommand.parseAsRoot(["doctor", "bad/name"]))
    }
}
