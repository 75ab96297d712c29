import SwitchModel
import XCTest
@testable import Datapath

/// The data plane adds to a counter at `8 * PortCounter.rawValue` bytes into the port's
/// `PortCounters`: the struct's named fields must sit exactly there, in the enum's order.
final class CounterBlockTests: XCTestCase {
    func testNamedFieldsSitWhereTheEnumSays() {
        let fields: [(PortCounter, PartialKeyPath<PortCounters>)] = [
            (.rxPackets, \.rxPackets), (.rxBytes, \.rxBytes), (.txPackets, \.txPackets), (.txBytes, \.txBytes),
            (.rxDropBadDescriptor, \.rxDropBadDescriptor), (.rxDropRunt, \.rxDropRunt),
            (.txDropNoBuffers, \.txDropNoBuffers), (.txDropBadDescriptor, \.txDropBadDescriptor),
            (.rxDropVlan, \.rxDropVlan), (.txDropTooBig, \.txDropTooBig), (.txDropBadOffload, \.txDropBadOffload),
            (.rxDropVni, \.rxDropVni), (.rxDropUnknownRemote, \.rxDropUnknownRemote),
            (.rxDropShortHeader, \.rxDropShortHeader), (.rxDropNoVniFlag, \.rxDropNoVniFlag), (.rxDropTooLong, \.rxDropTooLong),
            (.rxDropBadVersion, \.rxDropBadVersion), (.rxDropBadOptions, \.rxDropBadOptions),
            (.rxDropCriticalOption, \.rxDropCriticalOption), (.rxDropNotEthernet, \.rxDropNotEthernet),
            (.rxDropBadOffload, \.rxDropBadOffload),
            (.txGsoDatagrams, \.txGsoDatagrams), (.txGsoRefused, \.txGsoRefused), (.rxGroDatagrams, \.rxGroDatagrams),
            (.rxCoalescedFrames, \.rxCoalescedFrames),
        ]
        XCTAssertEqual(fields.count, PortCounter.allCases.count, "a counter without a named field")
        XCTAssertEqual(MemoryLayout<PortCounters>.size, 8 * PortCounter.allCases.count)
        for (c, path) in fields { XCTAssertEqual(MemoryLayout<PortCounters>.offset(of: path), 8 * c.rawValue, "\(c)") }
    }

    func testAddAndLoadGoThroughTheSameOffsets() {
        let block = UnsafeMutablePointer<PortCounters>.allocate(capacity: 1)
        defer { block.deallocate() }
        block.initialize(to: PortCounters())
        for c in PortCounter.allCases { block.add(c, UInt64(c.rawValue + 1)) }
        let loaded = PortCounters.load(block)
        for c in PortCounter.allCases { XCTAssertEqual(loaded[c], UInt64(c.rawValue + 1), "\(c)") }
        XCTAssertEqual(loaded.txDropNoBuffers, 7)
    }
}
