import SwitchModel
import Control
import Foundation
import VSwitchCLI
import XCTest

final class TextRenderingTests: XCTestCase {
    func testFdbMatchesOvsLayout() {
        let table = FdbTable(bridge: "br0", entries: [
            FdbEntry(mac: "52:54:00:00:00:01", port: "vm1", vlan: 0, ageSeconds: 3),
            FdbEntry(mac: "52:54:00:00:00:02", port: "vm-long", vlan: 100, ageSeconds: 250),
        ])
        XCTAssertEqual(TextRendering.fdb(table), """
             port     VLAN  MAC                Age
             vm1         0  52:54:00:00:00:01    3
             vm-long   100  52:54:00:00:00:02  250
            """)
        XCTAssertEqual(TextRendering.fdb(FdbTable(bridge: "br0", entries: [
            FdbEntry(mac: "52:54:00:00:00:01", port: "vm1", vlan: 0, ageSeconds: 3)])), """
             port  VLAN  MAC                Age
             vm1      0  52:54:00:00:00:01    3
            """)
        XCTAssertEqual(TextRendering.fdb(FdbTable(bridge: "br0", entries: [])), " port  VLAN  MAC                Age")
        XCTAssertEqual(TextRendering.fdb(FdbTable(bridge: "br0", entries: [],
                                                  counts: MacTableCounts(learned: 4, aged: 1))), """
             port  VLAN  MAC                Age
             (learned 4, aged out 1)
            """)
    }

    func testShowListsPortDetails() {
        let port = PortInfo(name: "vm1", type: .vhostUserClient, path: "/run/vm1.sock", state: "connected",
                            link: "up", features: ["VERSION_1", "MRG_RXBUF"], protocolFeatures: ["MQ"],
                            mtu: 1500, queues: [QueueInfo(index: 0, size: 256, enabled: true, running: true),
                                                QueueInfo(index: 1, size: 1024, enabled: false, running: false)],
                            memoryRegions: [MemoryRegionInfo(guestPhysicalAddress: 0, size: 0xa0000, backing: "memfd", sealed: true),
                                            MemoryRegionInfo(guestPhysicalAddress: 0x1_0000_0000, size: 128 << 20,
                                                             backing: "file", sealed: false)])
        let idle = PortInfo(name: "vm2", type: .vhostUser, path: "/run/vm2.sock", state: "listening",
                            link: "down", features: [], protocolFeatures: [], mtu: nil, queues: [])
        let text = TextRendering.show([BridgeInfo(name: "br0", agingSeconds: 300, ports: [port, idle],
                                                  macTable: MacTableCounts(learned: 7, aged: 2)),
                                       BridgeInfo(name: "br1", agingSeconds: 60, ports: [])])
        for expected in ["Bridge br0", "aging: 300s", "    mac table: learned 7, aged out 2", "    Port vm1", "type:              vhostuserclient",
                         "path:              /run/vm1.sock", "state:             connected",
                         "link:              up", "mtu:               1500",
                         "features:          VERSION_1 MRG_RXBUF", "protocol features: MQ",
                         "queue  dir         size  enabled  running",
                         "    0  to guest     256  yes      yes",
                         "    1  from guest  1024  no       no",
                         "memory: 2 regions", "guest address     size  backing  sealed",
                         "0x0            640 KiB  memfd    yes", "0x100000000    128 MiB  file     no",
                         "Port vm2", "state:             listening", "mtu:               -",
                         "Bridge br1", "(no ports)"] {
            XCTAssertTrue(text.contains(expected), "missing \(expected.debugDescription) in:\n\(text)")
        }
        XCTAssertEqual(TextRendering.show([]), "no bridges")
    }

    func testStatsBlockPerPort() {
        let text = TextRendering.stats([
            PortStats(port: "vm1", [.rxPackets: 10, .rxBytes: 1200, .txPackets: 8, .txBytes: 960,
                                    .rxDropBadDescriptor: 1, .rxDropRunt: 2, .txDropNoBuffers: 3, .txDropBadDescriptor: 4]),
            PortStats(port: "vm2"),
        ])
        let blocks = text.components(separatedBy: "\n\n")
        XCTAssertEqual(blocks.count, 2)
        XCTAssertTrue(blocks[0].hasPrefix("Port vm1\n"))
        for expected in ["rx packets:", "rx bytes:", "tx packets:", "tx bytes:", "1200",
                         "rx dropped, bad descriptor:", "rx dropped, runt frame:",
                         "tx dropped, no guest buffers:", "tx dropped, bad descriptor:"] {
            XCTAssertTrue(blocks[0].contains(expected), "missing \(expected) in:\n\(text)")
        }
        XCTAssertTrue(blocks[1].hasPrefix("Port vm2\n"))
    }

    func testJSONOutput() throws {
        XCTAssertEqual(TextRendering.json(nil), "{}")
        let result = ControlResult(fdb: FdbTable(bridge: "br0", entries: [
            FdbEntry(mac: "52:54:00:00:00:01", port: "vm1", vlan: 0, ageSeconds: 3)]))
        let json = TextRendering.json(result)
        XCTAssertTrue(json.hasPrefix("{\n  \"fdb\" : {\n    \"bridge\" : \"br0\",\n    \"entries\" : ["), json)
        // Keys sorted within an entry: ageSeconds, mac, port, vlan.
        let keys = ["ageSeconds", "mac", "port", "vlan"].map { json.range(of: "\"\($0)\"")!.lowerBound }
        XCTAssertEqual(keys, keys.sorted())
        XCTAssertEqual(try JSONDecoder().decode(ControlResult.self, from: Data(json.utf8)), result)
    }

    /// `dp-stats` with several forwarding threads: the sums, then one row per thread; with
    /// one thread the block is what it always was (no table).
    func testDatapathStatsPerThread() {
        let t0 = DatapathStats(polls: 10, emptyPolls: 2, sleeps: 1, frames: 100, cpuSeconds: 0.5, busyCycles: 30_000,
                               awakeCycles: 60_000, thread: "vswitch-fwd", cpu: 0, bridges: ["br0", "br2"])
        let t1 = DatapathStats(polls: 5, emptyPolls: 5, sleeps: 3, frames: 0, cpuSeconds: 0.25, thread: "vswitch-fwd1",
                               cpu: 1, bridges: [])
        let sum = DatapathStats(summing: [t0, t1])
        XCTAssertEqual([sum.polls, sum.emptyPolls, sum.sleeps, sum.frames, sum.busyCycles], [15, 7, 4, 100, 30_000])
        XCTAssertEqual(sum.cpuSeconds, 0.75)
        let text = TextRendering.datapath(sum)
        XCTAssertTrue(text.hasPrefix("polls:               15\n"), text)
        let rows = text.split(separator: "\n").suffix(3).map(String.init)
        XCTAssertEqual(rows, [
            "thread        cpu  frames  sleeps   load  cycles/frame  cpu s  bridges",
            "vswitch-fwd     0     100       1  50.0%           300  0.500  br0,br2",
            "vswitch-fwd1    1       0       3   0.0%             0  0.250  -",
        ])
        let one = TextRendering.datapath(DatapathStats(summing: [t0]))
        XCTAssertFalse(one.contains("thread"), one)
        XCTAssertTrue(one.hasSuffix("cpu seconds:         0.500"), one)
    }

    func testShowNamesTheBridgesThread() {
        let text = TextRendering.show([BridgeInfo(name: "br1", agingSeconds: 300, ports: [], thread: "vswitch-fwd1")])
        XCTAssertTrue(text.contains("    forwarding thread: vswitch-fwd1\n"), text)
        XCTAssertFalse(TextRendering.show([BridgeInfo(name: "br1", agingSeconds: 300, ports: [])]).contains("thread"))
    }
}
