import CShims
import Foundation
import GuestSimulator
import Logging
import Virtio
import XCTest
@testable import VhostUser

/// A hostile frontend on a real socket against the real endpoint and device (issue 6,
/// promise 2). Every malformed message is answered with a failure (REPLY_ACK) or the
/// connection is closed; the port then takes a new connection, no ring was started from
/// bad input, and every fd and mapping the frontend sent is gone afterwards.
final class MalformedMessageTests: XCTestCase {
    var loop: EventLoop!
    var thread: Thread!
    var dir: String!
    var path: String!
    var endpoint: VhostUserEndpoint!
    let backend = RecordingBackend()
    let guest = SimulatedGuest(memorySize: 1 << 20, queueSize: 256, bufferSize: 64)
    var fdsBefore = 0
    var mapsBefore = 0

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "vsw-mm-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        loop = EventLoop()
        thread = Thread { [loop] in loop!.run() }
        thread.start()
        path = dir + "/p.sock"
        let (loop, backend, path) = (loop!, backend, path!)
        endpoint = loop.sync {
            VhostUserEndpoint(path: path, role: .server, backend: backend, loop: loop, logger: Logger(label: "t"))
        }
        let ep = endpoint!
        try loop.sync { Result { try ep.start() } }.get()
        fdsBefore = Self.openFds()
        mapsBefore = Self.guestMappings()
    }

    override func tearDown() {
        let ep = endpoint!
        loop.sync { ep.close() }
        loop.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    static func openFds() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1 }
    /// Read to EOF: a proc file has no size, and a one-read helper can stop short of the end.
    static func guestMappings() -> Int { MemorySlotTests.mappings() }

    // MARK: a scripted frontend

    final class Frontend {
        let fd: Int32
        init(path: String) {
            fd = vs_unix_connect(path)
            var tv = timeval(tv_sec: 4, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }
        deinit { close(fd) }

        /// Sends raw bytes with `fds`; our copies of `fds` are closed (the switch owns its own).
        func sendRaw(_ bytes: [UInt8], fds: [Int32] = []) {
            _ = VhostUserConnection.send(fd, bytes, fds: fds)
            for f in fds { close(f) }
        }

        func send(_ request: UInt32, flags: UInt32 = 1 | VhostUserHeader.needReplyFlag, size: UInt32? = nil,
                  _ payload: [UInt8] = [], fds: [Int32] = []) {
            let h = VhostUserHeader(request: request, flags: flags, size: size ?? UInt32(payload.count))
            sendRaw(h.encoded + payload, fds: fds)
        }

        func send(_ r: VhostUserRequest, _ payload: [UInt8] = [], fds: [Int32] = []) {
            send(r.rawValue, payload, fds: fds)
        }

        /// The next reply's payload; nil when the switch closed the connection.
        func reply() -> [UInt8]? {
            guard let h = read(12), h.count == 12 else { return nil }
            let size = Int(h[8]) | Int(h[9]) << 8
            return size == 0 ? [] : read(size)
        }

        private func read(_ n: Int) -> [UInt8]? {
            var buf = [UInt8](repeating: 0, count: n)
            var have = 0
            while have < n {
                let r = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + have, n - have, 0) }
                if r <= 0 { return nil }
                have += r
            }
            return buf
        }

        /// True when the switch closed its end (EOF, or ECONNRESET when it left our bytes
        /// unread), not just stayed silent until the receive timeout.
        func closedBySwitch() -> Bool {
            var b: UInt8 = 0
            let r = recv(fd, &b, 1, 0)
            return r == 0 || (r < 0 && errno == ECONNRESET)
        }

        /// SET_FEATURES + SET_PROTOCOL_FEATURES with REPLY_ACK (not acked: REPLY_ACK is not
        /// on yet), then a request with an answer to know they were taken.
        func negotiate(_ extraProtocolFeatures: UInt64 = 0) -> Bool {
            send(.setFeatures, encodeU64(VirtioFeature.version1 | VirtioFeature.vhostUserProtocolFeatures))
            send(.setProtocolFeatures, encodeU64(VhostUserProtocolFeature.replyAck | VhostUserProtocolFeature.multiqueue
                                                 | extraProtocolFeatures))
            send(.getQueueNum)
            return reply() == encodeU64(8)
        }
    }

    func connect() -> Frontend {
        let f = Frontend(path: path)
        XCTAssertGreaterThanOrEqual(f.fd, 0)
        return f
    }

    func waitFor(_ what: String, _ cond: () -> Bool, file: StaticString = #filePath, line: UInt = #line) {
        let deadline = Date().addingTimeInterval(5)
        var ok = cond()
        while !ok && Date() < deadline {
            usleep(10_000)
            ok = cond()
        }
        XCTAssertTrue(ok, what, file: file, line: line)
    }

    enum Outcome { case nack, closed }

    /// Connects, negotiates REPLY_ACK, lets `attack` send its messages, checks the outcome,
    /// then that the port is usable again and nothing leaked.
    func expect(_ outcome: Outcome, _ what: String, memorySlots: Bool = false, file: StaticString = #filePath,
                line: UInt = #line, attack: (Frontend) -> Void) {
        do {
            let f = connect()
            let extra = memorySlots ? VhostUserProtocolFeature.configureMemSlots : 0
            XCTAssertTrue(f.negotiate(extra), "\(what): negotiation", file: file, line: line)
            attack(f)
            switch outcome {
            case .nack:
                let r = f.reply()
                XCTAssertNotNil(r, "\(what): connection closed, expected a failure reply", file: file, line: line)
                if let r { XCTAssertNotEqual(r, encodeU64(0), "\(what): accepted", file: file, line: line) }
                // The session goes on after a refused request.
                f.send(.getQueueNum)
                XCTAssertEqual(f.reply(), encodeU64(8), "\(what): session unusable after the refusal", file: file, line: line)
            case .closed:
                XCTAssertTrue(f.closedBySwitch(), "\(what): connection not closed", file: file, line: line)
            }
        }
        let ep = endpoint!
        waitFor("\(what): back to listening", { loop.sync { ep.state == .listening } }, file: file, line: line)
        XCTAssertTrue(loop.sync { self.backend.started.isEmpty }, "\(what): a ring started", file: file, line: line)
        // A new frontend is served.
        do {
            let f = connect()
            f.send(.getFeatures)
            XCTAssertEqual(f.reply(), encodeU64(VhostUserDevice.offeredFeatures), "\(what): reconnect", file: file, line: line)
        }
        waitFor("\(what): listening again", { loop.sync { ep.state == .listening } }, file: file, line: line)
        waitFor("\(what): fds leaked (\(Self.openFds()) open, \(fdsBefore) before)",
                { Self.openFds() == fdsBefore }, file: file, line: line)
        XCTAssertEqual(Self.guestMappings(), mapsBefore, "\(what): guest memory still mapped", file: file, line: line)
    }

    func u64(_ v: UInt64) -> [UInt8] { encodeU64(v) }
    func state(_ i: UInt32, _ n: UInt32) -> [UInt8] { VringState(index: i, num: n).encoded }
    func memfd(_ size: Int) -> Int32 {
        let fd = vs_memfd_create("m")
        ftruncate(fd, off_t(size))
        return fd
    }
    func table(_ regions: [MemoryRegionDescription]) -> [UInt8] { MemoryTable(regions: regions).encoded }
    func region(gpa: UInt64 = 0, size: UInt64 = 1 << 20, uva: UInt64 = 0x7000_0000, offset: UInt64 = 0)
        -> MemoryRegionDescription {
        MemoryRegionDescription(guestPhysicalAddress: gpa, size: size, userAddress: uva, mmapOffset: offset)
    }

    // MARK: framing: the connection is closed

    func testTruncatedHeader() {
        expect(.closed, "6 of 12 header bytes, then EOF") { f in
            f.sendRaw(Array(VhostUserHeader(request: 1, flags: 1, size: 0).encoded.prefix(6)))
            shutdown(f.fd, Int32(SHUT_WR))
        }
    }

    func testTruncatedHeaderThenSilence() {
        // A frontend that stops mid-header is cut off after the stall timeout.
        let ep = endpoint!
        loop.sync { ep.stallTimeout = 1 }
        expect(.closed, "6 of 12 header bytes, then nothing") { f in
            f.sendRaw(Array(VhostUserHeader(request: 1, flags: 1, size: 0).encoded.prefix(6)))
        }
    }

    func testSizeLargerThanWhatWasSent() {
        expect(.closed, "size 40, 8 bytes sent") { f in
            f.send(VhostUserRequest.setVringAddr.rawValue, size: 40, u64(0))
            shutdown(f.fd, Int32(SHUT_WR))
        }
    }

    func testSizeAboveTheLimit() {
        expect(.closed, "size 0x1001") { f in f.send(VhostUserRequest.setFeatures.rawValue, size: 0x1001) }
        expect(.closed, "size 0xffffffff") { f in f.send(VhostUserRequest.setFeatures.rawValue, size: .max) }
    }

    func testBadVersionAndFlags() {
        expect(.closed, "version 2") { f in f.send(VhostUserRequest.getFeatures.rawValue, flags: 2) }
        expect(.closed, "reply flag from the frontend") { f in
            f.send(VhostUserRequest.getFeatures.rawValue, flags: 1 | VhostUserHeader.replyFlag)
        }
        expect(.closed, "unknown flag bits") { f in f.send(VhostUserRequest.getFeatures.rawValue, flags: 1 | 1 << 20) }
    }

    func testMoreFdsThanAnyMessageCarries() {
        expect(.closed, "12 fds") { f in
            let fds = (0..<12).map { _ in memfd(4096) }
            let bytes = VhostUserHeader(request: VhostUserRequest.setMemTable.rawValue, flags: 1 | VhostUserHeader.needReplyFlag,
                                        size: 40).encoded + table([region()])
            XCTAssertEqual(Self.sendmsg(f.fd, bytes, fds: fds), bytes.count)
            for fd in fds { close(fd) }
        }
    }

    /// sendmsg with any number of fds (the switch's own send refuses more than 8).
    static func sendmsg(_ sock: Int32, _ bytes: [UInt8], fds: [Int32]) -> Int {
        // struct cmsghdr { size_t len; int level; int type; } then the fds, 8-byte aligned.
        let dataLen = 4 * fds.count
        var control = [UInt8](repeating: 0, count: 16 + (dataLen + 7) / 8 * 8)
        control.withUnsafeMutableBytes { c in
            c.storeBytes(of: 16 + dataLen, toByteOffset: 0, as: Int.self)
            c.storeBytes(of: SOL_SOCKET, toByteOffset: 8, as: Int32.self)
            c.storeBytes(of: Int32(SCM_RIGHTS), toByteOffset: 12, as: Int32.self)
            for (k, fd) in fds.enumerated() { c.storeBytes(of: fd, toByteOffset: 16 + 4 * k, as: Int32.self) }
        }
        var data = bytes
        return data.withUnsafeMutableBytes { d in
            control.withUnsafeMutableBytes { c in
                var iov = iovec(iov_base: d.baseAddress, iov_len: d.count)
                return withUnsafeMutablePointer(to: &iov) { iovp in
                    var msg = msghdr()
                    msg.msg_iov = iovp
                    msg.msg_iovlen = 1
                    msg.msg_control = c.baseAddress
                    msg.msg_controllen = c.count
                    return Glibc.sendmsg(sock, &msg, 0)
                }
            }
        }
    }

    func testRequestThatNeedsAReplyWeCannotGiveClosesWithoutReplyAck() {
        // Without REPLY_ACK a frontend waiting for GET_VRING_BASE's answer would hang: cut it off.
        let f = connect()
        f.send(VhostUserRequest.getVringBase.rawValue, flags: 1, state(16, 0))
        XCTAssertTrue(f.closedBySwitch())
    }

    // MARK: payloads: refused, session continues

    func testPayloadSizeWrongForTheRequest() {
        expect(.nack, "SET_FEATURES with 16 bytes") { f in f.send(.setFeatures, u64(1) + u64(2)) }
        expect(.nack, "SET_FEATURES with 4 bytes") { f in f.send(.setFeatures, [1, 2, 3, 4]) }
        expect(.nack, "SET_VRING_NUM with 12 bytes") { f in f.send(.setVringNum, state(0, 256) + [0, 0, 0, 0]) }
        expect(.nack, "SET_VRING_ADDR with 32 bytes") { f in f.send(.setVringAddr, [UInt8](repeating: 0, count: 32)) }
        expect(.nack, "SET_MEM_TABLE with 100 bytes") { f in
            f.send(.setMemTable, Array((table([region()]) + [UInt8](repeating: 0, count: 100)).prefix(100)), fds: [memfd(1 << 20)])
        }
        expect(.nack, "SET_VRING_KICK with reserved bits") { f in f.send(.setVringKick, u64(1 << 40), fds: [vs_eventfd(0)]) }
    }

    func testUnknownRequests() {
        expect(.nack, "request 99") { f in f.send(99, u64(0)) }
        expect(.nack, "request 0xffffffff") { f in f.send(0xffff_ffff) }
        expect(.nack, "SEND_RARP (RARP not negotiated)") { f in f.send(.sendRarp, [UInt8](repeating: 0, count: 8)) }
        expect(.nack, "SET_LOG_FD (LOG_SHMFD not negotiated) with an fd") { f in f.send(.setLogFd, fds: [memfd(4096)]) }
    }

    func testFdCountsThatDoNotMatch() {
        expect(.nack, "SET_FEATURES with an fd") { f in
            f.send(.setFeatures, u64(VirtioFeature.version1), fds: [vs_eventfd(0)])
        }
        expect(.nack, "SET_MEM_TABLE, 1 region, 0 fds") { f in f.send(.setMemTable, table([region()])) }
        expect(.nack, "SET_MEM_TABLE, 1 region, 2 fds") { f in
            f.send(.setMemTable, table([region()]), fds: [memfd(1 << 20), memfd(1 << 20)])
        }
        expect(.nack, "SET_VRING_KICK, no fd, no 'invalid fd' flag") { f in f.send(.setVringKick, u64(0)) }
        expect(.nack, "SET_VRING_CALL with the 'invalid fd' flag and an fd") { f in
            f.send(.setVringCall, u64(VringFileDescriptor.invalidFdFlag), fds: [vs_eventfd(0)])
        }
        expect(.nack, "SET_VRING_ERR with 3 fds") { f in
            f.send(.setVringErr, u64(0), fds: [vs_eventfd(0), vs_eventfd(0), vs_eventfd(0)])
        }
    }

    func testMemoryRegionLargerThanItsFd() {
        // Mapping past the end of the file would raise SIGBUS on first touch: refused.
        expect(.nack, "1 MiB region on a 4 KiB memfd") { f in f.send(.setMemTable, table([region()]), fds: [memfd(4096)]) }
        expect(.nack, "mmap offset past the end") { f in
            f.send(.setMemTable, table([region(size: 4096, offset: 1 << 20)]), fds: [memfd(1 << 20)])
        }
        expect(.nack, "offset + size overflows") { f in
            f.send(.setMemTable, table([region(size: 4096, offset: UInt64.max - 100)]), fds: [memfd(4096)])
        }
        expect(.nack, "region of size 0") { f in f.send(.setMemTable, table([region(size: 0)]), fds: [memfd(4096)]) }
        expect(.nack, "overlapping regions") { f in
            f.send(.setMemTable, table([region(), region(gpa: 4096, uva: 0x9000_0000)]),
                   fds: [memfd(1 << 20), memfd(1 << 20)])
        }
    }

    func testMemoryThatIsNotAFile() {
        // An eventfd, a pipe and /dev/zero are not guest memory (a device could fault).
        expect(.nack, "an eventfd as memory") { f in f.send(.setMemTable, table([region(size: 4096)]), fds: [vs_eventfd(0)]) }
        expect(.nack, "a pipe as memory") { f in
            var p: [Int32] = [0, 0]
            pipe(&p)
            close(p[1])
            f.send(.setMemTable, table([region(size: 4096)]), fds: [p[0]])
        }
        expect(.nack, "/dev/zero as memory") { f in
            f.send(.setMemTable, table([region(size: 1 << 30)]), fds: [open("/dev/zero", O_RDWR)])
        }
    }

    /// ADD_MEM_REG / REM_MEM_REG (CONFIGURE_MEM_SLOTS) over the socket: each refusal is a
    /// failure reply, the session goes on, and the regions added before it are unmapped when
    /// the frontend leaves.
    func testRegionsOneByOne() {
        func single(_ r: MemoryRegionDescription) -> [UInt8] { SingleMemoryRegion(region: r).encoded }
        func mib(_ k: Int) -> MemoryRegionDescription { region(gpa: UInt64(k) << 20, uva: 0x7000_0000 + (UInt64(k) << 20)) }
        expect(.nack, "ADD_MEM_REG without CONFIGURE_MEM_SLOTS") { f in f.send(.addMemReg, single(region()), fds: [memfd(1 << 20)]) }
        expect(.nack, "ADD_MEM_REG with a 4 KiB fd for 1 MiB", memorySlots: true) { f in
            f.send(.addMemReg, single(region()), fds: [memfd(4096)])
        }
        expect(.nack, "ADD_MEM_REG without an fd", memorySlots: true) { f in f.send(.addMemReg, single(region())) }
        expect(.nack, "ADD_MEM_REG overlapping an added region", memorySlots: true) { f in
            f.send(.addMemReg, single(region()), fds: [memfd(1 << 20)])
            XCTAssertEqual(f.reply(), u64(0))
            f.send(.addMemReg, single(region(gpa: 4096, uva: 0x9000_0000)), fds: [memfd(1 << 20)])
        }
        expect(.nack, "REM_MEM_REG of a region that does not exist", memorySlots: true) { f in
            f.send(.addMemReg, single(mib(1)), fds: [memfd(1 << 20)])
            XCTAssertEqual(f.reply(), u64(0))
            f.send(.remMemReg, single(mib(2)))
        }
        expect(.nack, "ADD_MEM_REG past the limit", memorySlots: true) { f in
            for k in 0..<VhostUserDevice.maxMemorySlots {
                f.send(.addMemReg, single(mib(k)), fds: [memfd(1 << 20)])
                XCTAssertEqual(f.reply(), u64(0), "region \(k)")
            }
            XCTAssertEqual(Self.guestMappings(), mapsBefore + VhostUserDevice.maxMemorySlots)
            f.send(.addMemReg, single(mib(100)), fds: [memfd(1 << 20)])
        }
    }

    func testTooManyOrNoRegions() {
        let nine = (0..<9).map { region(gpa: UInt64($0) << 20, uva: 0x7000_0000 + (UInt64($0) << 20)) }
        expect(.nack, "9 regions") { f in f.send(.setMemTable, table(nine), fds: (0..<8).map { _ in memfd(1 << 20) }) }
        expect(.nack, "0 regions") { f in f.send(.setMemTable, [0, 0, 0, 0, 0, 0, 0, 0]) }
    }

    func testBadQueueSizes() {
        for n: UInt32 in [0, 3, 255, 32769, 65536, .max] {
            expect(.nack, "SET_VRING_NUM \(n)") { f in f.send(.setVringNum, state(0, n)) }
        }
        let f = connect()
        XCTAssertTrue(f.negotiate())
        f.send(.setVringNum, state(0, 32768))
        XCTAssertEqual(f.reply(), u64(0), "32768 is the largest valid size")
    }

    func testQueueIndexOutOfRange() {
        expect(.nack, "SET_VRING_NUM index 16") { f in f.send(.setVringNum, state(16, 256)) }
        expect(.nack, "SET_VRING_BASE index 0xffffffff") { f in f.send(.setVringBase, state(.max, 0)) }
        expect(.nack, "SET_VRING_ENABLE index 200") { f in f.send(.setVringEnable, state(200, 1)) }
        expect(.nack, "SET_VRING_KICK index 200 with an fd") { f in f.send(.setVringKick, u64(200), fds: [vs_eventfd(0)]) }
        expect(.nack, "SET_VRING_CALL index 16 with an fd") { f in f.send(.setVringCall, u64(16), fds: [vs_eventfd(0)]) }
        var addr = [UInt8]()
        addr.appendLE(UInt32(99))
        addr += [UInt8](repeating: 0, count: 36)
        expect(.nack, "SET_VRING_ADDR index 99") { f in f.send(.setVringAddr, addr) }
        expect(.nack, "SET_VRING_BASE num above 0xffff") { f in f.send(.setVringBase, state(0, 0x10000)) }
        expect(.nack, "NET_SET_MTU 0") { f in f.send(.netSetMtu, u64(0)) }
    }

    /// A complete, valid ring set-up for queue 0 except for `address`.
    func setUpRing(_ f: Frontend, address: VringAddressBytes) {
        let (r, fd) = guest.memoryTable()
        f.send(.setMemTable, table([r]), fds: [fd])
        f.send(.setVringNum, state(0, 256))
        f.send(.setVringBase, state(0, 0))
        f.send(.setVringAddr, address.bytes)
        f.send(.setVringKick, u64(0), fds: [vs_eventfd(0)])
        for k in 0..<5 { XCTAssertEqual(f.reply(), u64(0), "set-up step \(k)") }
        f.send(.setVringEnable, state(0, 1))   // the ring would start here
    }

    struct VringAddressBytes {
        var desc: UInt64, used: UInt64, avail: UInt64
        var bytes: [UInt8] {
            var b = [UInt8]()
            b.appendLE(UInt32(0)); b.appendLE(UInt32(0))
            b.appendLE(desc); b.appendLE(used); b.appendLE(avail); b.appendLE(UInt64(0))
            return b
        }
    }

    func goodAddress() -> VringAddressBytes {
        let r = guest.rings[0]
        func user(_ gpa: UInt64) -> UInt64 { gpa - SimulatedGuest.guestBase + SimulatedGuest.userBase }
        return VringAddressBytes(desc: user(r.desc), used: user(r.used), avail: user(r.avail))
    }

    func testRingAddressesOutsideMemory() {
        let end = SimulatedGuest.userBase + UInt64(guest.size)
        var a = goodAddress()
        a.desc = 0x1000
        expect(.nack, "descriptor table outside memory") { f in setUpRing(f, address: a) }
        a = goodAddress()
        a.used = end - 16
        expect(.nack, "used ring running past the end") { f in setUpRing(f, address: a) }
        a = goodAddress()
        a.avail = UInt64.max - 1
        expect(.nack, "avail ring at the top of the address space") { f in setUpRing(f, address: a) }
        a = goodAddress()
        a.desc += 8
        expect(.nack, "misaligned descriptor table") { f in setUpRing(f, address: a) }
    }

    func testGoodRingStartsSoTheChecksAboveMeanSomething() {
        let f = connect()
        XCTAssertTrue(f.negotiate())
        setUpRing(f, address: goodAddress())
        XCTAssertEqual(f.reply(), u64(0))
        XCTAssertEqual(loop.sync { Array(self.backend.started.keys) }, [0])
    }

    // MARK: messages in the wrong state

    func testRingMessagesBeforeTheMemoryTable() {
        // Accepted (QEMU may order them so), but nothing may start without memory.
        let f = connect()
        XCTAssertTrue(f.negotiate())
        f.send(.setVringNum, state(0, 256))
        f.send(.setVringAddr, goodAddress().bytes)
        f.send(.setVringKick, u64(0), fds: [vs_eventfd(0)])
        f.send(.setVringEnable, state(0, 1))
        f.send(.getVringBase, state(0, 0))
        for _ in 0..<4 { XCTAssertEqual(f.reply(), u64(0)) }
        XCTAssertEqual(f.reply()?.count, 8, "GET_VRING_BASE answered")
        XCTAssertTrue(loop.sync { self.backend.started.isEmpty })
    }

    func testChangingARunningRing() {
        let f = connect()
        XCTAssertTrue(f.negotiate())
        setUpRing(f, address: goodAddress())
        XCTAssertEqual(f.reply(), u64(0))
        f.send(.setVringNum, state(0, 128))
        XCTAssertNotEqual(f.reply(), u64(0), "SET_VRING_NUM on a running ring")
        f.send(.setVringBase, state(0, 5))
        XCTAssertNotEqual(f.reply(), u64(0), "SET_VRING_BASE on a running ring")
        XCTAssertEqual(loop.sync { Array(self.backend.started.keys) }, [0], "still running")
    }

    func testDisconnectMidSetupReleasesEverything() {
        // A frontend that dies after sending memory and eventfds: all of it is released.
        do {
            let f = connect()
            XCTAssertTrue(f.negotiate())
            setUpRing(f, address: goodAddress())
            XCTAssertEqual(f.reply(), u64(0))
            f.send(.setVringCall, u64(0), fds: [vs_eventfd(0)])
            XCTAssertEqual(f.reply(), u64(0))
        }
        let ep = endpoint!
        waitFor("listening") { loop.sync { ep.state == .listening } }
        waitFor("fds released") { Self.openFds() == fdsBefore }
        XCTAssertEqual(Self.guestMappings(), mapsBefore)
        XCTAssertEqual(loop.sync { self.backend.stopped }, [0])
    }
}
