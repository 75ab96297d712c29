import SwitchModel
import XCTest
@testable import Control
@testable import VSwitchCLI

/// The VXLAN drop counters: shown (text and JSON) for tunnel ports, absent for the others.
final class TunnelStatsRenderingTests: XCTestCase {
    func testTunnelCountersOnlyForTunnelPorts() throws {
        let text = TextRendering.stats([
            PortStats(port: "vx0", [.rxPackets: 5, .txDropTooBig: 4, .rxDropVni: 2, .rxDropUnknownRemote: 3]),
            PortStats(port: "vm1"),
        ])
        let blocks = text.components(separatedBy: "\n\n")
        XCTAssertEqual(blocks.count, 2)
        for expected in ["rx dropped, other VNI:", "rx dropped, unknown remote:"] {
            XCTAssertTrue(blocks[0].contains(expected), "missing \(expected) in:\n\(text)")
            XCTAssertFalse(blocks[1].contains(expected), "\(expected) shown for a vhost port:\n\(text)")
        }
        let decoded = try JSONDecoder().decode(PortStats.self, from: JSONEncoder().encode(
            PortStats(port: "vx0", [.txDropTooBig: 1, .rxDropVni: 7])))
        XCTAssertEqual(decoded[.rxDropVni], 7)
        XCTAssertEqual(decoded[.txDropTooBig], 1)
        XCTAssertNil(try JSONDecoder().decode(PortStats.self, from: JSONEncoder().encode(PortStats(port: "vm1")))[.rxDropVni])
    }
}
