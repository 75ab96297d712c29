import SwitchModel
import XCTest
@testable import Control
@testable import VSwitchCLI

/// `PortCounter` is the one list of counters: the JSON field names, their order and the
/// CLI's labels come from it. The wire format is pinned here byte for byte (it is what
/// scripts and older CLIs read).
final class CounterVocabularyTests: XCTestCase {
    func testPortStatsWireFormatIsUnchanged() throws {
        var c = PortCounters()
        for (k, counter) in PortCounter.allCases.enumerated() { c[counter] = UInt64(k + 1) }
        let vhost = try ControlCoding.encode(ControlResponse.success(ControlResult(stats: [
            PortStats(port: "vm1", counters: c, tunnel: false)])))
        // ControlCoding sorts keys.
        XCTAssertEqual(String(decoding: vhost, as: UTF8.self),
                       #"{"ok":true,"result":{"stats":[{"port":"vm1","rxBytes":2,"rxDropBadDescriptor":5,"rxDropBadOffload":21,"rxDropRunt":6,"#
                       + #""rxDropVlan":9,"rxPackets":1,"txBytes":4,"txDropBadDescriptor":8,"txDropBadOffload":11,"#
                       + #""txDropNoBuffers":7,"txDropTooBig":10,"txPackets":3}]}}"# + "\n")
        let tunnel = try ControlCoding.encode(ControlResponse.success(ControlResult(stats: [
            PortStats(port: "vx0", counters: c, tunnel: true)])))
        let t = String(decoding: tunnel, as: UTF8.self)
        XCTAssertTrue(t.contains(#""rxDropBadOptions":18,"rxDropBadVersion":17,"rxDropCriticalOption":19,"rxDropNoVniFlag":15,"#
                                 + #""rxDropNotEthernet":20,"rxDropRunt":6,"rxDropShortHeader":14,"rxDropTooLong":16,"#
                                 + #""rxDropUnknownRemote":13,"rxDropVlan":9,"rxDropVni":12,"rxGroDatagrams":24,"rxPackets":1"#), t)
        XCTAssertTrue(t.contains(#""txDropTooBig":10,"txGsoDatagrams":22,"txGsoRefused":23,"txPackets":3"#), t)
    }

    /// A reply from a daemon older than a counter decodes, the counter absent; the CLI shows 0.
    func testOlderRepliesDecode() throws {
        let line = #"{"ok":true,"result":{"stats":[{"port":"vm1","rxPackets":5,"rxBytes":1,"txPackets":0,"txBytes":0,"#
            + #""rxDropBadDescriptor":0,"rxDropRunt":0,"txDropNoBuffers":0,"txDropBadDescriptor":0}]}}"#
        let r = try JSONDecoder().decode(ControlResponse.self, from: Data(line.utf8))
        let s = try XCTUnwrap(r.result?.stats?.first)
        XCTAssertEqual(s[.rxPackets], 5)
        XCTAssertNil(s[.rxDropVlan])
        XCTAssertTrue(TextRendering.stats([s]).contains("rx dropped, VLAN not allowed:"))
    }

    func testEveryCounterHasOneLabelAndName() {
        XCTAssertEqual(Set(PortCounter.allCases.map(\.label)).count, PortCounter.allCases.count)
        XCTAssertEqual(PortCounter.rxDropUnknownRemote.name, "rxDropUnknownRemote")
        let text = TextRendering.stats([PortStats(port: "vx0", counters: PortCounters(), tunnel: true)])
        for c in PortCounter.allCases { XCTAssertTrue(text.contains(c.label + ":"), c.label) }
    }
}
