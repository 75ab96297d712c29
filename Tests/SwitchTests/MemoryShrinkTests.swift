import CShims
import GuestSimulator
import Virtio
import XCTest
import SwitchModel
@testable import Datapath

/// A guest whose memory file shrinks under the running forwarding thread (issue 21, part 1):
/// the thread's next access to it faults, the guard swaps in zeros, and the good pair keeps
/// forwarding; the switch's memory object names the broken region, so the control plane can
/// drop that guest's connection. 20 guests in a row, each truncated while the pair forwards.
final class MemoryShrinkTests: XCTestCase {
    func testShrunkGuestMemoryCostsOnlyThatGuest() throws {
        XCTAssertGreaterThanOrEqual(vs_memguard_install(), 0)
        let h = EngineHarness()
        let pair = GoodPair()
        try pair.attach(to: h)
        XCTAssertTrue(pair.exchange(h))
        for round in 0..<20 {
            let bad = SimulatedGuest()
            try h.attach(bad)
            bad.postReceiveBuffers(16)
            bad.transmit(TestFrame.make(dst: TestFrame.broadcast, src: TestFrame.mac(0xee)))
            h.kick(bad)
            XCTAssertTrue(pair.exchange(h), "round \(round): before the shrink")
            bad.truncateMemory()
            // The bad guest's rings are polled on the next pass; the pair's broadcasts would
            // reach its RX ring too. Kicking its eventfd touches no guest memory here.
            h.kick(bad)
            pair.a.transmit(TestFrame.make(dst: TestFrame.broadcast, src: GoodPair.macA))
            h.kick(pair.a)
            XCTAssertTrue(h.wait { h.memory(bad).faultedRegion != nil }, "round \(round): the fault was not seen")
            XCTAssertEqual(h.memory(bad).faultedRegion, 0)
            _ = pair.b.receivedFrames()
            pair.b.postReceiveBuffers(1)
            for _ in 0..<3 { XCTAssertTrue(pair.exchange(h), "round \(round): the good pair lost frames after the shrink") }
            h.detach(bad)
        }
    }
}
