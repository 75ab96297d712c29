import SwitchModel
import Control
import Foundation
import XCTest

final class ControlCodingTests: XCTestCase {
    func testRequestRoundTripIsOneSortedLine() throws {
        let request = ControlRequest(command: .addPort, bridge: "br0", port: "vm1",
                                     type: .vhostUserClient, path: "/run/vm1.sock")
        let data = try ControlCoding.encode(request)
        let text = String(decoding: data, as: UTF8.self)
        XCTAssertEqual(text, #"{"bridge":"br0","command":"add-port","path":"/run/vm1.sock","port":"vm1","type":"vhostuserclient"}"# + "\n")
        XCTAssertEqual(try ControlCoding.decodeRequest(data), request)
    }

    func testResponseRoundTrip() throws {
        let port = PortInfo(name: "vm1", type: .vhostUser, path: "/tmp/vm1.sock", state: "connected",
                            link: "up", features: ["VERSION_1", "MRG_RXBUF"], protocolFeatures: ["MQ"],
                            mtu: 1500, queues: [QueueInfo(index: 0, size: 256, enabled: true, running: true)])
        let responses: [ControlResponse] = [
            .success(),
            .failure("no bridge named br9"),
            .success(ControlResult(bridges: [BridgeInfo(name: "br0", agingSeconds: 300, ports: [port])])),
            .success(ControlResult(fdb: FdbTable(bridge: "br0", entries: [
                FdbEntry(mac: "52:54:00:00:00:01", port: "vm1", vlan: 0, ageSeconds: 3)]))),
            .success(ControlResult(stats: [PortStats(port: "vm1", [.rxPackets: .max, .txDropNoBuffers: 7])])),
        ]
        for response in responses {
            let data = try ControlCoding.encode(response)
            XCTAssertEqual(data.filter { $0 == UInt8(ascii: "\n") }.count, 1)
            XCTAssertEqual(data.last, UInt8(ascii: "\n"))
            XCTAssertEqual(try ControlCoding.decodeResponse(data), response)
        }
    }

    func testNewlineInsideStringStaysEscaped() throws {
        let data = try ControlCoding.encode(ControlResponse.failure("two\nlines"))
        XCTAssertEqual(data.filter { $0 == UInt8(ascii: "\n") }.count, 1)
        XCTAssertEqual(try ControlCoding.decodeResponse(data).error, "two\nlines")
    }

    func testAcceptsCRLFAndMissingTerminator() throws {
        XCTAssertEqual(try ControlCoding.decodeRequest(Data(#"{"command":"show"}"#.utf8)),
                       ControlRequest(command: .show))
        XCTAssertEqual(try ControlCoding.decodeRequest(Data("{\"command\":\"show\"}\r\n".utf8)),
                       ControlRequest(command: .show))
    }

    func testMalformedLinesGiveClearMessages() {
        let cases: [(String, String)] = [
            ("not json", "malformed request: not valid JSON"),
            ("", "malformed request: empty line"),
            (#"{"bridge":"br0"}"#, "malformed request: missing field 'command'"),
            (#"{"command":"frobnicate"}"#, "malformed request: invalid value for 'command'"),
            (#"{"command":"add-br","bridge":7}"#, "malformed request: field 'bridge' should be a string"),
            (#"{"command":"add-port","type":"tun"}"#, "malformed request: invalid value for 'type'"),
        ]
        for (line, expected) in cases {
            XCTAssertThrowsError(try ControlCoding.decodeRequest(Data(line.utf8)), line) { error in
                XCTAssertTrue("\(error)".hasPrefix(expected), "\(line): got \(error)")
            }
        }
    }
}
