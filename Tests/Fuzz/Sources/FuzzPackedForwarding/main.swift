// A hostile guest on packed virtqueues: the fuzzer's bytes become guest A's TX descriptor
// ring (addresses, lengths, ids and flags, AVAIL/USED and NEXT/INDIRECT included), the
// position and wrap counter the ring restarts at, and the buffer contents; guest B (packed
// too) receives. Nothing the guest writes may crash the switch.
import GuestSimulator
import Logging
import Datapath
import Virtio

let features = SimulatedGuest.defaultFeatures | VirtioFeature.ringPacked | VirtioFeature.ringEventIndex
let a = SimulatedGuest(memorySize: 1 << 20, queueSize: 16, bufferSize: 256, features: features)
let b = SimulatedGuest(memorySize: 1 << 20, queueSize: 16, bufferSize: 256, features: features)
let (engine, ports): (ForwardingEngine, [Int]) = {
    let engine = ForwardingEngine(logger: Logger(label: "fuzz"))
    let bridge = engine.addBridge(agingSeconds: 300)!
    var ports: [Int] = []
    for g in [a, b] {
        let port = engine.addPort(bridge: bridge)!
        let memory = try! g.makeMemory()
        engine.startQueue(port: port, g.vringConfiguration(queue: 0, memory: memory))
        engine.startQueue(port: port, g.vringConfiguration(queue: 1, memory: memory))
        ports.append(port)
    }
    return (engine, ports)
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    // Input: base (2 bytes) | 16 descriptors of addr(4) len(4) id(2) flags(2) | driver event
    // area (4) | the rest into guest A's first TX buffers.
    var i = 0
    func next() -> UInt8 {
        defer { i += 1 }
        return i < size ? data[i] : 0
    }
    func next16() -> UInt16 { UInt16(next()) | UInt16(next()) << 8 }
    func next32() -> UInt32 { UInt32(next16()) | UInt32(next16()) << 16 }
    let start = next16()
    let memory = try! a.makeMemory()
    engine.stopQueue(port: ports[0], queue: 1)
    var config = a.vringConfiguration(queue: 1, memory: memory)
    config.lastAvail = start & 0x800f   // a valid position and either wrap counter
    engine.startQueue(port: ports[0], config)
    let ring = a.host(a.rings[1].desc)
    let base = a.bufferAddress(queue: 1, descriptor: 0)
    for d in 0..<16 {
        let raw = UInt64(next32())
        let addr = raw & 1 == 0 ? base + raw % 8192 : raw << 20
        let desc = ring + 16 * d
        desc.storeBytes(of: addr, as: UInt64.self)
        desc.storeBytes(of: next32() % 4096, toByteOffset: 8, as: UInt32.self)
        desc.storeBytes(of: next16(), toByteOffset: 12, as: UInt16.self)
        desc.storeBytes(of: next16() & 0x8087, toByteOffset: 14, as: UInt16.self)
    }
    a.setDriverEvent(queue: 1, flags: next16() & 3, offWrap: next16())
    let payload = a.host(base)
    var k = 0
    while i < size && k < 8192 {
        payload.storeBytes(of: next(), toByteOffset: k, as: UInt8.self)
        k += 1
    }
    b.postReceiveBuffers(2)
    engine.pollOnce()
    engine.pollOnce()
    _ = b.reclaimUsed(queue: 0)
    return 0
}
