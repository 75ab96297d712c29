// A hostile kernel on a TAP port with offloads: the fuzzer's bytes are frames read from the
// TAP's descriptor (a 12-byte virtio-net header, then the frame), forwarded by the real
// engine to a guest with offloads (whole, over mergeable buffers), a guest without (the
// checksum finished, TSO cut in software) and a second TAP with offloads. Nothing the kernel
// sends may trap or read past its frame (AddressSanitizer); a header that does not describe
// its frame is dropped and counted, never forwarded.
import GuestSimulator
import Logging
import Datapath
import CShims
import SwitchModel
import Virtio
#if canImport(Glibc)
import Glibc
#endif

let offloads = SimulatedGuest.defaultFeatures | VirtioFeature.netOffloads
let taker = SimulatedGuest(memorySize: 1 << 20, queueSize: 64, bufferSize: 1024, features: offloads)
let plain = SimulatedGuest(memorySize: 1 << 20, queueSize: 64, bufferSize: 2048)
// Globals are initialized lazily (-parse-as-library): each pair is made where it is first used.
func seqpacketPair() -> [Int32] {
    var pair: [Int32] = [-1, -1]
    precondition(vs_socketpair_seqpacket(&pair) == 0)
    return pair
}
let kernel = seqpacketPair(), other = seqpacketPair()
let (engine, tap): (ForwardingEngine, Int) = {
    let engine = ForwardingEngine(logger: Logger(label: "fuzz"))
    let bridge = engine.addBridge(agingSeconds: 300)!
    for g in [taker, plain] {
        let port = engine.addPort(bridge: bridge)!
        let memory = try! g.makeMemory()
        engine.startQueue(port: port, g.vringConfiguration(queue: 0, memory: memory))
        engine.startQueue(port: port, g.vringConfiguration(queue: 1, memory: memory))
        g.postReceiveBuffers(64)
    }
    let tap = engine.addLocalPort(bridge: bridge, kind: SlotKind.tap.rawValue, fd: kernel[0])!
    engine.enableTapOffloads(port: tap)
    let second = engine.addLocalPort(bridge: bridge, kind: SlotKind.tap.rawValue, fd: other[0])!
    engine.enableTapOffloads(port: second)
    return (engine, tap)
}()
let drain = UnsafeMutableRawPointer.allocate(byteCount: 70000, alignment: 16)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    // Layout: mode, then frames as [length (2 bytes, little-endian), bytes], up to 4. The mode
    // steers a frame towards the deep paths: bit 0 an IPv4/TCP skeleton, bit 1 IPv6/TCP,
    // bit 2 NEEDS_CSUM at the TCP checksum, bit 3 a TSO gso_type; the rest stays the fuzzer's.
    guard size > 0 else { return 0 }
    let before = engine.counters(port: tap)
    let mode = data[0]
    var i = 1
    var frames = 0
    while i + 2 <= size && frames < 4 {
        let n = min(Int(data[i]) | Int(data[i + 1]) << 8, size - i - 2)
        i += 2
        var bytes = Array(UnsafeBufferPointer(start: data + i, count: n))
        i += n
        guard n > 0 else { continue }   // tun never gives an empty read
        let v6 = mode & 2 != 0
        if mode & 3 != 0 && bytes.count >= 12 + 54 {
            bytes[12 + 12] = v6 ? 0x86 : 0x08; bytes[12 + 13] = v6 ? 0xdd : 0x00
            if v6 { bytes[12 + 14] = 0x60 | bytes[12 + 14] & 0x0f; bytes[12 + 20] = 6 }
            else { bytes[12 + 14] = 0x40 | bytes[12 + 14] & 0x0f; bytes[12 + 23] = 6 }
        }
        if mode & 4 != 0 && bytes.count >= 10 {
            bytes[0] |= 1
            let start: UInt16 = v6 ? 54 : 34
            bytes[6] = UInt8(start & 0xff); bytes[7] = UInt8(start >> 8); bytes[8] = 16; bytes[9] = 0
        }
        if mode & 8 != 0 && bytes.count >= 10 { bytes[1] = v6 ? 4 : 1 }
        guard write(kernel[1], bytes, bytes.count) == bytes.count else { fatalError("the test's own write failed: \(errno)") }
        frames += 1
    }
    engine.pollOnce()
    let after = engine.counters(port: tap)
    let accounted = after.rxPackets + after.rxDropBadOffload + after.rxDropRunt
        - (before.rxPackets + before.rxDropBadOffload + before.rxDropRunt)
    guard accounted == UInt64(frames) else { fatalError("\(frames) frames written, \(accounted) accounted for") }
    while read(other[1], drain, 70000) > 0 {}   // the second TAP's copies
    for g in [taker, plain] {
        let n = g.reclaimUsed(queue: 0)
        if n > 0 { g.postReceiveBuffers(n) }
    }
    return 0
}
