import SwitchModel
import ArgumentParser
import Control
@testable import VSwitchCLI
import XCTest

/// `--format pcapng` on the CLI, and the extcap's answers to Wireshark.
final class ExtcapTests: XCTestCase {
    private func request(_ args: [String]) throws -> ControlRequest {
        let command = try VSwitchCommand.parseAsRoot(args)
        return try XCTUnwrap(command as? any ControlSubcommand).makeRequest()
    }

    func testFormatPcapngReachesTheRequest() throws {
        let add = try request(["add-port", "br0", "cap", "--type", "pcap", "--file", "/tmp/x.pcapng", "--format", "pcapng"])
        XCTAssertEqual(add.captureFormat, "pcapng")
        let plain = try request(["add-port", "br0", "cap", "--type", "pcap", "--file", "/tmp/x.pcap"])
        XCTAssertNil(plain.captureFormat, "pcap stays the default (and the field stays out of the config)")
        let json = try request(["add-port", "br0", "cap", "--type", "pcap", "--file", "/tmp/x.pcap", "--format", "json"])
        XCTAssertNil(json.captureFormat)
        let capture = try XCTUnwrap(try VSwitchCommand.parseAsRoot(
            ["capture", "br0", "--format", "pcapng", "--direction", "both", "-w", "/tmp/f"]) as? Capture)
        XCTAssertEqual(capture.makeRequest().captureFormat, "pcapng")
        XCTAssertEqual(capture.makeRequest().direction, "both", "a whole bridge takes --direction now")
    }

    func testInterfaceNamesParse() {
        XCTAssertEqual(ExtcapTool.parse("vswitch:br0").map { [$0.bridge, $0.port ?? "-"] }, ["br0", "-"])
        XCTAssertEqual(ExtcapTool.parse("vswitch:br0/vm1").map { [$0.bridge, $0.port ?? "-"] }, ["br0", "vm1"])
        for bad in ["br0", "vswitch:", "vswitch:br0/", "vswitch:/vm1", "vswitch:a/b/c", "eth0"] {
            XCTAssertNil(ExtcapTool.parse(bad), bad)
        }
    }

    func testInterfaceListHasBridgesAndFrameCarryingPorts() {
        func port(_ name: String, _ type: PortKind) -> PortInfo {
            PortInfo(name: name, type: type, path: "/p", state: "connected", link: "up", features: [],
                     protocolFeatures: [], mtu: nil, queues: [])
        }
        let bridges = [BridgeInfo(name: "br0", agingSeconds: 300,
                                  ports: [port("vm1", .vhostUserClient), port("cap", .pcap), port("tap0", .tap)])]
        XCTAssertEqual(ExtcapTool.interfaceLines(bridges), """
            interface {value=vswitch:br0}{display=vswitch bridge br0}
            interface {value=vswitch:br0/vm1}{display=vswitch br0 port vm1 (vhostuserclient)}
            interface {value=vswitch:br0/tap0}{display=vswitch br0 port tap0 (tap)}

            """)
    }

    func testConfigOffersDirectionSnaplenAndSocket() {
        let port = ExtcapTool.config(port: true, socket: "/run/x.sock")
        XCTAssertTrue(port.contains("{call=--direction}"))
        XCTAssertTrue(port.contains("{call=--snaplen}"))
        XCTAssertTrue(port.contains("{default=/run/x.sock}"))
        XCTAssertTrue(port.contains("value {arg=0}{value=both}{display=both}{default=true}"))
        XCTAssertTrue(ExtcapTool.config(port: false, socket: "s").contains("value {arg=0}{value=rx}{display=rx}{default=true}"),
                      "a bridge: each frame once by default")
    }

    func testUnknownWiresharkOptionsAreIgnored() {
        let t = ExtcapTool(arguments: ["--extcap-interface", "vswitch:br0/vm1", "--extcap-dlts", "--extcap-version=4.0", "--debug"])
        XCTAssertEqual(t.run(), 0)
    }
}
