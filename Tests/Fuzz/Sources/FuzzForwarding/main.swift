// A hostile guest: the fuzzer's bytes become guest A's TX descriptor table, avail ring
// and buffer contents; the engine forwards to guest B. Nothing the guest writes may crash
// the switch (every crash here becomes a named test in Tests/SwitchTests).
import GuestSimulator
import Logging
import Switch
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
    // Layout of the input: 16 descriptors (256 bytes) | avail idx + 16 ring entries (34 bytes)
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
    let count = Int(next() % 17)
    for _ in 0..<count { a.makeAvailable(queue: 1, head: UInt16(next() % 18)) }
    let payload = a.host(base)
    var k = 0
    while i < size && k < 8192 {
        payload.storeBytes(of: next(), toByteOffset: k, as: UInt8.self)
        k += 1
    }
    b.postReceiveBuffers(4)
    engine.pollOnce()
    _ = a.reclaimUsed(queue: 1)
    _ = b.reclaimUsed(queue: 0)
    // Restart A's TX queue in a clean state if a corrupt ring stopped it.
    let memory = try! a.makeMemory()
    engine.stopQueue(port: ports[0], queue: 1)
    engine.startQueue(port: ports[0], a.vringConfiguration(queue: 1, memory: memory))
    return 0
}
