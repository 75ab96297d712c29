// --tunnel-tso: a bulk TCP stream through a VXLAN tunnel between two engines in this process,
// over real UDP sockets on loopback (127.0.0.1 <-> 127.0.0.2). Guest A (offloads negotiated)
// sends TSO segments of `--segment` payload bytes cut at `--mss`; A's tunnel port sends them to
// B's, whose guest (no offloads) receives the MSS-sized frames. Reports inner frames and
// payload per second and, run under `strace -c -f`, the system calls per frame.
// `--no-gso`: the segments are cut in userspace, one datagram each (the path before UDP GSO:
// the send sockets are marked as refusing GSO); `--no-gro`: B's socket without UDP_GRO.
// `--rx-tso`: B's guest negotiates GUEST_TSO4 (and mergeable buffers) and its MAC is learned,
// so B merges the received frames into TSO frames (TunnelCoalesce.swift); frames are then
// counted at B's tunnel port (rxPackets), not as guest buffers.
import CShims
import Foundation
import GuestSimulator
import Logging
import Datapath
import MallocCounter
import Virtio

/// A tunnel port's state, as `VxlanTunnel` (module Switch) builds it, on `local`:port to `remote`.
func benchTunnel(local: String, remote: String, port: UInt16, gro: Bool) -> UnsafeMutablePointer<VxlanState> {
    var l = TunnelAddress.zero, r = TunnelAddress.zero
    precondition(vs_resolve(local, &l) == 0 && vs_resolve(remote, &r) == 0)
    let rx = vs_udp_open_addr(&l, port, 8 << 20)
    precondition(rx >= 0, "bind \(local):\(port): \(errno)")
    if gro { precondition(vs_udp_enable_gro(rx) == 0, "UDP_GRO: \(errno)") }
    let socket = UnsafeMutablePointer<TunnelSocketState>.allocate(capacity: 1)
    socket.initialize(to: TunnelSocketState(fd: rx))
    let header = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    header.initialize(to: VxlanState.header(vni: 42))
    let remotes = UnsafeMutablePointer<TunnelAddress>.allocate(capacity: VxlanState.remoteCapacity)
    remotes.initialize(repeating: .zero, count: VxlanState.remoteCapacity)
    remotes[0] = r
    let maxFrame = UnsafeMutablePointer<Int>.allocate(capacity: VxlanState.remoteCapacity)
    maxFrame.initialize(repeating: 65536 - 50, count: VxlanState.remoteCapacity)   // loopback's MTU
    let sends = UnsafeMutablePointer<Int32>.allocate(capacity: VxlanState.sendSockets)
    for i in 0..<VxlanState.sendSockets {
        var any = l
        sends[i] = vs_udp_open_addr(&any, 0, 0)
        precondition(sends[i] >= 0)
    }
    let learned = UnsafeMutablePointer<VxlanState.LearnedRemote>.allocate(capacity: VxlanState.tableSize)
    learned.initialize(repeating: VxlanState.LearnedRemote(), count: VxlanState.tableSize)
    let state = UnsafeMutablePointer<VxlanState>.allocate(capacity: 1)
    state.initialize(to: VxlanState(header: header, vniWord: (UInt32(42) << 8).bigEndian, dstPort: port, remoteCount: 1,
                                    remotes: remotes, maxFrame: maxFrame, sendFds: sends,
                                    sendCount: VxlanState.sendSockets, learned: learned, socket: socket))
    return state
}

func runTunnelTso(rounds: Int, segments: Int, segmentBytes: Int, mss: Int, gso: Bool, gro: Bool, rxTso: Bool = false) {
    let port = UInt16(20000 + Int(getpid() % 20000))
    let a = ForwardingEngine(logger: Logger(label: "a"))
    let b = ForwardingEngine(logger: Logger(label: "b"))
    let ba = a.addBridge(agingSeconds: 300)!, bb = b.addBridge(agingSeconds: 300)!
    let sender = SimulatedGuest(memorySize: 32 << 20, queueSize: 64, bufferSize: 66 << 10,
                                features: SimulatedGuest.defaultFeatures | VirtioFeature.netOffloads)
    let receiver = SimulatedGuest(memorySize: 16 << 20, queueSize: 1024, bufferSize: 2048,
                                  features: rxTso ? SimulatedGuest.defaultFeatures | VirtioFeature.netOffloads
                                                  : SimulatedGuest.defaultFeatures)
    var receiverPort = 0
    for (e, br, g) in [(a, ba, sender), (b, bb, receiver)] {
        let p = e.addPort(bridge: br)!
        if g === receiver { receiverPort = p }
        let memory = try! g.makeMemory()
        e.startQueue(port: p, g.vringConfiguration(queue: 0, memory: memory))
        e.startQueue(port: p, g.vringConfiguration(queue: 1, memory: memory))
    }
    let ta = benchTunnel(local: "127.0.0.1", remote: "127.0.0.2", port: port, gro: gro)
    let tb = benchTunnel(local: "127.0.0.2", remote: "127.0.0.1", port: port, gro: gro)
    if !gso { ta.pointee.gsoRefused = UInt32.max }    // every segment cut here, as before UDP GSO
    let pa = a.addTunnelPort(bridge: ba, tunnel: ta)!
    let pb = b.addTunnelPort(bridge: bb, tunnel: tb)!
    receiver.postReceiveBuffers(1024)

    // A TCP segment 10.0.0.1:12345 -> 10.0.0.2:80 with a partial checksum, as a TSO guest sends it.
    func be16(_ v: Int) -> [UInt8] { [UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
    let data = (0..<segmentBytes).map { UInt8(truncatingIfNeeded: $0 &* 7) }
    var ip: [UInt8] = [0x45, 0] + be16(40 + segmentBytes) + [0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]
    var s: UInt32 = 0
    for i in stride(from: 0, to: 20, by: 2) { s &+= UInt32(ip[i]) << 8 | UInt32(ip[i + 1]) }
    while s >> 16 != 0 { s = (s & 0xffff) + (s >> 16) }
    ip[10] = UInt8(~s >> 8 & 0xff); ip[11] = UInt8(~s & 0xff)
    var p: UInt32 = 0x0a00 + 1 + 0x0a00 + 2 + 6 + UInt32(20 + segmentBytes)   // addresses, protocol, TCP length
    while p >> 16 != 0 { p = (p & 0xffff) + (p >> 16) }
    let tcp: [UInt8] = [0x30, 0x39, 0x00, 0x50, 0, 0, 0x03, 0xe8, 0, 0, 0, 7, 0x50, 0x10, 0xff, 0xff] + be16(Int(p)) + [0, 0]
    let frame = TestFrame.mac(2) + TestFrame.mac(1) + [0x08, 0x00] + ip + tcp + data
    let header: [UInt8] = [1, 1] + [54, 0] + [UInt8(mss & 0xff), UInt8(mss >> 8)] + [34, 0] + [16, 0]
    let pieces = (segmentBytes + mss - 1) / mss
    // Without --rx-tso, teach B's bridge nothing: the destination MAC floods to B's only guest
    // port. With it, B learns the guest's MAC (merging needs a known destination).
    if rxTso {
        receiver.transmit(TestFrame.make(dst: TestFrame.mac(9), src: TestFrame.mac(2), payload: 50),
                          header: [UInt8](repeating: 0, count: 12))
        b.pollOnce()
        _ = receiver.reclaimUsed(queue: 1)
        usleep(10_000)
        a.pollOnce()    // A floods it to its guest, which has no RX buffers: dropped there
    }

    var delivered = 0
    var allocations: UInt64 = 0
    let t0 = vs_monotonic_ns()
    for _ in 0..<rounds {
        for _ in 0..<segments { sender.transmit(frame, header: header) }
        mc_start()
        a.pollOnce()
        allocations &+= mc_stop()
        _ = sender.reclaimUsed(queue: 1)
        var want = segments * pieces
        var idle = 0
        while want > 0 && idle < 1000 {
            let before = rxTso ? Int(b.counters(port: pb).rxPackets) : 0
            mc_start()
            b.pollOnce()
            allocations &+= mc_stop()
            let buffers = receiver.reclaimUsed(queue: 0)
            let got = rxTso ? Int(b.counters(port: pb).rxPackets) - before : buffers
            if got == 0 && buffers == 0 { idle += 1 } else { idle = 0 }
            want -= got
            delivered += got
            receiver.postReceiveBuffers(buffers)
        }
    }
    let seconds = Double(vs_monotonic_ns() - t0) / 1e9
    let ca = a.counters(port: pa), cb = b.counters(port: pb)
    print(String(format: "tunnel-tso: %d segments of %d B (mss %d, %d frames each), gso %@, gro %@, rx tso %@", rounds * segments,
                 segmentBytes, mss, pieces, gso ? "on" : "off", gro ? "on" : "off", rxTso ? "on" : "off"))
    print(String(format: "delivered %d of %d frames in %.3f s: %.3f Mframes/s, %.2f Gbit/s of TCP payload", delivered,
                 rounds * segments * pieces, seconds, Double(delivered) / seconds / 1e6,
                 Double(delivered) * Double(segmentBytes) / Double(pieces) * 8 / seconds / 1e9))
    print("A tunnel: txPackets \(ca.txPackets) txGsoDatagrams \(ca.txGsoDatagrams) txGsoRefused \(ca.txGsoRefused) txDropNoBuffers \(ca.txDropNoBuffers)")
    print("B tunnel: rxPackets \(cb.rxPackets) rxGroDatagrams \(cb.rxGroDatagrams) rxCoalescedFrames \(cb.rxCoalescedFrames)"
          + (rxTso ? "; B's guest got \(b.counters(port: receiverPort).txPackets) frames" : ""))
    print(String(format: "heap allocations inside the engines: %llu (%.6f per frame)", allocations,
                 Double(allocations) / Double(max(delivered, 1))))
}
