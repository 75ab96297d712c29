import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
@testable import CaptureWriter

final class MacTableTests: XCTestCase {
    func testLearnLookupMoveAndAge() {
        var t = MacTable(capacity: 64, agingSeconds: 300)
        defer { t.deallocate() }
        let k = MacTable.key(mac: 0x0100_0054_5252, vlan: 0)
        XCTAssertEqual(t.lookup(k, now: 10), -1)
        t.learn(k, port: 3, now: 10)
        XCTAssertEqual(t.lookup(k, now: 10), 3)
        t.learn(k, port: 5, now: 20)                     // the guest moved
        XCTAssertEqual(t.lookup(k, now: 20), 5)
        XCTAssertEqual(t.lookup(k, now: 320), 5)         // exactly 300 s: still valid
        XCTAssertEqual(t.lookup(k, now: 321), -1)        // aged out
        XCTAssertEqual(t.entries(now: 321).count, 0)
    }

    func testVlansAreSeparate() {
        var t = MacTable(capacity: 64)
        defer { t.deallocate() }
        t.learn(MacTable.key(mac: 7, vlan: 10), port: 1, now: 0)
        XCTAssertEqual(t.lookup(MacTable.key(mac: 7, vlan: 20), now: 0), -1)
        XCTAssertEqual(t.lookup(MacTable.key(mac: 7, vlan: 10), now: 0), 1)
    }

    func testFullTableRefusesInsteadOfLoopingAndRecoversAfterAging() {
        var t = MacTable(capacity: 16, agingSeconds: 10)
        defer { t.deallocate() }
        for m in 0..<12 { XCTAssertTrue(t.learn(UInt64(m) << 8, port: 1, now: 0)) }
        XCTAssertFalse(t.learn(0xffff00, port: 1, now: 0), "three quarters full")
        XCTAssertEqual(t.lookup(0xabcdef00, now: 0), -1, "lookups of unknown keys terminate")
        XCTAssertTrue(t.learn(0xffff00, port: 2, now: 100), "expired entries are purged to make room")
        XCTAssertEqual(t.count, 1)
    }

    func testRemovePortKeepsOthers() {
        var t = MacTable(capacity: 64)
        defer { t.deallocate() }
        for m in 0..<20 { t.learn(UInt64(m) << 8, port: Int32(m % 2), now: 0) }
        t.remove(port: 0, now: 0)
        XCTAssertEqual(t.entries(now: 0).count, 10)
        for m in stride(from: 1, to: 20, by: 2) { XCTAssertEqual(t.lookup(UInt64(m) << 8, now: 0), 1) }
    }

    func testLearnAndAgeCounts() {
        var t = MacTable(capacity: 16, agingSeconds: 10)
        defer { t.deallocate() }
        let k = MacTable.key(mac: 0x0100_0054_5252, vlan: 0)
        t.learn(k, port: 1, now: 0)
        t.learn(k, port: 1, now: 0)
        t.learn(k, port: 1, now: 5)                      // refresh: not a learn
        XCTAssertEqual(t.learned, 1)
        t.learn(k, port: 2, now: 6)                      // moved
        XCTAssertEqual(t.learned, 2)
        XCTAssertEqual(t.aged, 0)
        t.learn(k, port: 2, now: 30)                     // came back after aging out
        XCTAssertEqual(t.learned, 3)
        XCTAssertEqual(t.aged, 1)
        for m in 1...11 { t.learn(UInt64(m) << 8, port: 1, now: 30) }
        XCTAssertEqual(t.learned, 14)
        XCTAssertTrue(t.learn(0xffff00, port: 3, now: 100), "full: the 12 expired entries are purged")
        XCTAssertEqual(t.aged, 13)
        XCTAssertEqual(t.learned, 15)
        t.learn(0xeeee00, port: 4, now: 100)
        t.remove(port: 4, now: 100)                      // removal is not aging
        t.removeAll()
        XCTAssertEqual(t.aged, 13)
        XCTAssertEqual(t.learned, 16)
    }

    func testFormat() {
        XCTAssertEqual(MacTable.format(mac: 0x0100_0054_5252), "52:52:54:00:00:01")
    }
}
