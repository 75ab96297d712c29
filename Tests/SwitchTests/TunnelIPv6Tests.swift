import CShims
import GuestSimulator
import Logging
import VhostUser
import XCTest
import SwitchModel
@testable import Switch
@testable import Datapath
#if canImport(Glibc)
import Glibc
#endif

/// IPv6 underlays (issue 19): addresses, families, the sockaddr plumbing of the UDP shims,
/// and the 70 bytes of overhead.
extension VxlanTests {
    func testTunnelAddressesParseFormatAndMask() throws {
        let v4 = try VxlanTunnel.resolve("192.0.2.1", what: "remote")
        XCTAssertTrue(v4.isIPv4)
        XCTAssertEqual(v4.bytes, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1], "IPv4-mapped")
        XCTAssertEqual(v4, TunnelAddress(ipv4: Self.addr("192.0.2.1")))
        XCTAssertEqual(VxlanTunnel.format(v4), "192.0.2.1")
        let v6 = try VxlanTunnel.resolve("2001:db8::2", what: "remote")
        XCTAssertFalse(v6.isIPv4)
        XCTAssertEqual(v6.bytes, [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [2])
        XCTAssertEqual(VxlanTunnel.format(v6), "2001:db8::2")
        XCTAssertEqual(VxlanTunnel.format(try VxlanTunnel.resolve("ff05::100", what: "group")), "ff05::100")
        XCTAssertEqual(VxlanTunnel.format(.zero), "::")
        XCTAssertEqual(VxlanTunnel.format(TunnelAddress(ipv4: 0)), "0.0.0.0")
        XCTAssertTrue(VxlanTunnel.isMulticast(try VxlanTunnel.resolve("ff05::100", what: "group")))
        XCTAssertTrue(VxlanTunnel.isMulticast(try VxlanTunnel.resolve("239.1.1.1", what: "group")))
        XCTAssertFalse(VxlanTunnel.isUnicast(.zero))
        XCTAssertTrue(VxlanTunnel.isUnicast(v6))
        XCTAssertEqual(TunnelAddress.mask(bits: 0), .zero)
        XCTAssertEqual(TunnelAddress.mask(bits: 128).bitCount, 128)
        XCTAssertEqual(TunnelAddress.mask(bits: 68).bytes.prefix(9), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf0])
        XCTAssertThrowsError(try VxlanTunnel.resolve("fe80::1%eth0", what: "remote")) {
            XCTAssertTrue("\($0)".contains("scoped addresses"), "\($0)")
        }
        XCTAssertThrowsError(try VxlanTunnel.resolve("2001:db8::g", what: "remote")) {
            XCTAssertTrue("\($0)".contains("cannot resolve remote"), "\($0)")
        }
    }

    /// Both families through the shims: a 16-byte address becomes a sockaddr_in or a
    /// sockaddr_in6, and comes back the same from recvmmsg.
    func testSockaddrPlumbingForBothFamilies() throws {
        for text in ["127.0.0.1", "::1"] {
            var a = try VxlanTunnel.resolve(text, what: "local")
            let rx = vs_udp_open_addr(&a, 0, 0)
            if rx < 0 && text == "::1" { throw XCTSkip("no IPv6 loopback here") }
            XCTAssertGreaterThanOrEqual(rx, 0, text)
            defer { close(rx) }
            let port = UInt16(vs_udp_local_port(rx))
            XCTAssertGreaterThan(port, 0)
            let tx = vs_udp_open_addr(&a, 0, 0)
            defer { close(tx) }
            let txPort = vs_udp_local_port(tx)
            var payload: [UInt8] = [1, 2, 3, 4, 5]
            var sent = 0
            payload.withUnsafeMutableBytes { b in
                var iov = iovec(iov_base: b.baseAddress, iov_len: b.count)
                sent = vs_udp_sendv(tx, &iov, 1, &a, port)
            }
            XCTAssertEqual(sent, 5, text)
            usleep(10_000)
            let buffers = UnsafeMutableRawPointer.allocate(byteCount: 2 * 2048, alignment: 64)
            defer { buffers.deallocate() }
            var lengths = [Int32](repeating: 0, count: 2)
            var from = [TunnelAddress](repeating: .zero, count: 2)
            XCTAssertEqual(vs_udp_recv_batch(rx, buffers, 2048, 2, &lengths, &from), 1, text)
            XCTAssertEqual(lengths[0], 5)
            XCTAssertEqual(from[0], a, "the source comes back as the same 16 bytes (\(text))")
            XCTAssertGreaterThan(vs_udp_path_mtu(&a, &a, port), 1500, "loopback route MTU (\(text))")
            _ = txPort
        }
        var v6any = TunnelAddress.zero
        var v4any = TunnelAddress(ipv4: 0)
        let s6 = vs_udp_open_addr(&v6any, 0, 0)
        guard s6 >= 0 else { throw XCTSkip("no IPv6 here") }
        defer { close(s6) }
        // IPV6_V6ONLY: an IPv4 socket can take the same UDP port.
        let s4 = vs_udp_open_addr(&v4any, UInt16(vs_udp_local_port(s6)), 0)
        XCTAssertGreaterThanOrEqual(s4, 0, "IPv4 and IPv6 sockets share a UDP port number")
        if s4 >= 0 { close(s4) }
    }

    /// Mixed or wrong families and IPv6-specific mistakes are refused with the reason; an
    /// IPv6 port's `show` reports 70 bytes of overhead (IPv4: 50) and its guest MTU.
    func testIPv6OptionsAreCheckedAndOverheadIs70() throws {
        let controller = SwitchController(engine: engine, loop: EventLoop(), runDirectory: "/tmp",
                                          logger: Logger(label: "test"))
        try controller.addBridge("br0")
        func spec(_ remotes: [String], local: String? = nil, group: String? = nil, prefix: String? = nil) -> PortSpec {
            var s = PortSpec(kind: .vxlan, remotes: remotes, vni: 42, local: local, dstPort: port)
            s.group = group
            if let prefix { s.learning = true; s.remotePrefix = prefix }
            return s
        }
        func refuse(_ s: PortSpec, _ expected: String, line: UInt = #line) {
            XCTAssertThrowsError(try controller.addPort(bridge: "br0", name: "vx6", spec: s), line: line) {
                XCTAssertTrue("\($0)".contains(expected), "\($0)", line: line)
            }
            XCTAssertEqual(controller.snapshot().first?.ports.count, 0, line: line)
        }
        refuse(spec(["2001:db8::2"], local: "127.0.0.1"), "remote 2001:db8::2 is IPv6 but --local 127.0.0.1 is IPv4")
        refuse(spec(["2001:db8::2", "192.0.2.2"]), "remote 192.0.2.2 is IPv4 but remote 2001:db8::2 is IPv6")
        refuse(spec(["2001:db8::2"], prefix: "192.0.2.0/24"), "all be IPv4 or all IPv6")
        refuse(spec(["2001:db8::2"], prefix: "2001:db8::1/64"), "host bits set (did you mean 2001:db8::/64?)")
        refuse(spec(["2001:db8::2"], prefix: "2001:db8::/129"), "invalid --remote-prefix")
        refuse(spec(["ff05::100"]), "not a unicast address (for a multicast group use --group)")
        refuse(spec(["fe80::2"]), "link-local IPv6 addresses are not supported")
        refuse(spec(["::"]), "not a unicast address")
        refuse(spec([], group: "2001:db8::100"), "not a multicast address")
        refuse(spec([], local: "127.0.0.1", group: "ff05::100"), "group ff05::100 is IPv6 but --local 127.0.0.1 is IPv4")
        refuse(spec(["2001:db8::2"], local: "2001:db8::77"), "not an address of this host")

        var a = TunnelAddress.zero
        let probe = vs_udp_open_addr(&a, 0, 0)
        guard probe >= 0 else { throw XCTSkip("no IPv6 here") }
        close(probe)
        // An IPv4 port and an IPv6 port on one UDP port: separate sockets (IPV6_V6ONLY).
        try controller.addPort(bridge: "br0", name: "vx4", spec: spec(["192.0.2.2"]))
        try controller.addPort(bridge: "br0", name: "vx6", spec: spec(["2001:db8::2"], local: "::1"))
        let ports = try XCTUnwrap(controller.snapshot().first?.ports)
        let p4 = try XCTUnwrap(ports.first { $0.name == "vx4" }), p6 = try XCTUnwrap(ports.first { $0.name == "vx6" })
        XCTAssertEqual(p4.options?["overhead"], "50")
        XCTAssertEqual(p6.options?["overhead"], "70")
        XCTAssertEqual(p6.options?["remote_ip"], "2001:db8::2")
        XCTAssertEqual(p6.options?["local"], "::1")
        if p6.options?["underlay_mtu"] == "?" { XCTAssertEqual(p6.mtu, 1430, "unknown route MTU: 1500 - 70") }
        if p4.options?["underlay_mtu"] == "?" { XCTAssertEqual(p4.mtu, 1450, "unknown route MTU: 1500 - 50") }
        XCTAssertEqual(VxlanTunnel.largestInnerFrame(underlayMtu: 1500, ipv6: true) - 14, 1430)
        XCTAssertEqual(VxlanTunnel.largestInnerFrame(underlayMtu: 1500) - 14, 1450)
        try controller.deletePort(bridge: "br0", port: "vx4")
        try controller.deletePort(bridge: "br0", port: "vx6")
    }

    /// An IPv6 tunnel on ::1 moving frames both ways: a VTEP of `--remote-prefix ::1/128` is
    /// learned from its datagram (the source comes back from recvmmsg as a sockaddr_in6), its
    /// frame reaches the guest, and the guest's unicast answer leaves by sendmmsg to it.
    func testIPv6TunnelLearnsAndSends() throws {
        var any6 = TunnelAddress.zero
        let probe = vs_udp_open_addr(&any6, 0, 0)
        guard probe >= 0 else { throw XCTSkip("no IPv6 here") }
        close(probe)
        let guest = SimulatedGuest()
        _ = try attachGuest(guest)
        guest.postReceiveBuffers(8)
        var spec = PortSpec(kind: .vxlan, remotes: ["2001:db8::2"], vni: 42, local: "::1", dstPort: port)
        spec.learning = true
        spec.remotePrefix = "::1/128"
        let t = try VxlanTunnel(spec: spec)
        tunnels.append(t)
        let slot = try XCTUnwrap(engine.addTunnelPort(bridge: bridge, tunnel: t.state))
        XCTAssertEqual(t.learningPrefix, "::1/128")
        XCTAssertEqual(t.overhead, 70)
        // The far VTEP: a socket on [::1]:ephemeral sending to the tunnel's [::1]:port.
        var loop6 = try VxlanTunnel.resolve("::1", what: "remote")
        let peer = vs_udp_open_addr(&loop6, 0, 0)
        XCTAssertGreaterThanOrEqual(peer, 0)
        fds.append(peer)
        var datagram = Self.header(vni: 42) + TestFrame.make(dst: TestFrame.mac(1), src: TestFrame.mac(6), payload: 100)
        datagram.withUnsafeMutableBytes { b in
            var iov = iovec(iov_base: b.baseAddress, iov_len: b.count)
            XCTAssertEqual(vs_udp_sendv(peer, &iov, 1, &loop6, UInt16(port)), b.count)
        }
        usleep(10_000)
        engine.pollOnce()
        XCTAssertEqual(guest.receivedFrames(), [Array(datagram.dropFirst(8))])
        XCTAssertEqual(t.state.pointee.remoteCount, 2, "::1 learned")
        XCTAssertEqual(t.state.pointee.remotes[1], loop6)
        XCTAssertEqual(engine.counters(port: slot).rxPackets, 1)
        // The answer goes by unicast to the learned VTEP, [::1]:port: the tunnel's own
        // receive socket, read here before the engine polls it.
        let answer = TestFrame.make(dst: TestFrame.mac(6), src: TestFrame.mac(1), payload: 300)
        guest.transmit(answer)
        engine.pollOnce()     // the batch is flushed at the end, after the local ports were polled
        var buffer = [UInt8](repeating: 0, count: 2048)
        var from = sockaddr_in6()
        var len = socklen_t(MemoryLayout<sockaddr_in6>.size)
        var n = -1
        for _ in 0..<50 where n < 0 {
            n = withUnsafeMutablePointer(to: &from) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(t.receiveFd, &buffer, buffer.count, Int32(MSG_DONTWAIT), $0, &len) }
            }
            if n < 0 { usleep(2_000) }
        }
        XCTAssertEqual(n, 8 + answer.count)
        XCTAssertEqual(Array(buffer[0..<8]), Self.header(vni: 42))
        XCTAssertEqual(Array(buffer[8..<n]), answer)
        XCTAssertEqual(Int32(from.sin6_family), AF_INET6)
        XCTAssertTrue(t.sourcePorts.contains(Int(UInt16(bigEndian: from.sin6_port))), "from one of the port's send sockets")
        XCTAssertEqual(engine.counters(port: slot).txPackets, 1)
    }
}
