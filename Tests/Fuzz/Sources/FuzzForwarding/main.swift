// A hostile guest: the fuzzer's bytes become guest A's TX descriptor table, avail ring
// and buffer contents; the engine forwards to guest B. Nothing the guest writes may crash
// the switch (every crash here becomes a named test in Tests/SwitchTests).
import GuestSimulator
import Logging
import Datapath
import CShims
import Virtio

let a = SimulatedGuest(memorySize: 1 << 20, queueSize: 16, bufferSize: 256)
let b = SimulatedGuest(memorySize: 1 << 20, queueSize: 16, bufferSize: 256)
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
    // Layout of the input: 16 descriptors (256 bytes) | mode | count + up to 16 ring entries
    // | [mode 1: a raw avail index] | [mode 2: 8 hostile RX descriptors for B + ring entries]
    // | the rest goes into guest A's first TX buffers. Addresses are steered into guest
    // memory half of the time so chains get deep.
    var i = 0
    func next() -> UInt8 {
        defer { i += 1 }
        return i < size ? data[i] : 0
    }
    func next16() -> UInt16 { UInt16(next()) | UInt16(next()) << 8 }
    func next32() -> UInt32 { UInt32(next16()) | UInt32(next16()) << 16 }
    let base = a.bufferAddress(queue: 1, descriptor: 0)
    for d in 0..<16 {
        let raw = UInt64(next32())
        let addr = raw & 1 == 0 ? base + raw % 8192 : raw << 20
        let len = next32() % 4096
        a.writeDescriptor(queue: 1, UInt16(d), addr: addr, len: len, flags: next16() & 7, next: next16() % 20)
    }
    let mode = next()
    let count = Int(next() % 17)
    for _ in 0..<count { a.makeAvailable(queue: 1, head: UInt16(next() % 18)) }
    if mode & 1 != 0 {
        // A corrupt avail index: the ring must be stopped and the port marked broken.
        let raw = next16()
        vs_store_release_u16(a.host(a.rings[1].avail) + 2, raw)
        a.availIdx[1] = raw
    }
    if mode & 2 != 0 {
        // B offers hostile receive buffers instead of good ones.
        let rxBase = b.bufferAddress(queue: 0, descriptor: 0)
        for d in 0..<8 {
            let raw = UInt64(next32())
            let addr = raw & 1 == 0 ? rxBase + raw % 8192 : raw << 20
            b.writeDescriptor(queue: 0, UInt16(d), addr: addr, len: next32() % 4096, flags: next16() & 7,
                              next: next16() % 20)
        }
        for _ in 0..<Int(next() % 9) { b.makeAvailable(queue: 0, head: UInt16(next() % 18)) }
    } else {
        b.postReceiveBuffers(4)
    }
    let payload = a.host(base)
    var k = 0
    while i < size && k < 8192 {
        payload.storeBytes(of: next(), toByteOffset: k, as: UInt8.self)
        k += 1
    }
    engine.pollOnce()
    _ = a.reclaimUsed(queue: 1)
    _ = b.reclaimUsed(queue: 0)
    // Restart A's TX and B's RX queues in a clean state if a corrupt ring stopped them.
    let memory = try! a.makeMemory()
    engine.stopQueue(port: ports[0], queue: 1)
    engine.startQueue(port: ports[0], a.vringConfiguration(queue: 1, memory: memory))
    if mode & 2 != 0 {
        let memoryB = try! b.makeMemory()
        engine.stopQueue(port: ports[1], queue: 0)
        engine.startQueue(port: ports[1], b.vringConfiguration(queue: 0, memory: memoryB))
    }
    return 0
}
