import Datapath
import ArgumentParser
import CShims
import Control
import Foundation
import Logging
import VSwitchMetrics
import Switch
import VhostUser
#if canImport(Glibc)
import Glibc
#endif

/// The switch daemon: a control loop thread (vhost-user sockets, reconnect timers), one
/// forwarding thread (rings) or one per `--forwarding-cpus` CPU, and a control-socket server
/// for `vswitch`.
struct VSwitchd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vswitchd",
        abstract: "Userspace virtual switch for VMs (vhost-user ports, MAC learning).")

    @Option(name: .long, help: "Control socket path (default: $VSWITCH_SOCK or /run/vswitch/vswitchd.sock).")
    var control: String?

    @Option(name: .long, help: "Directory for relative vhost-user socket paths.")
    var runDir: String = "/run/vswitch"

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(name: .long, help: "Pin the forwarding thread to this CPU.")
    var forwardingCpu: Int?

    @Option(name: .long, help: ArgumentHelp("One forwarding thread per CPU of the list, pinned to it (e.g. 0,1 or 2-5); each bridge and its ports run on one of them (default: one thread).", valueName: "cpus"))
    var forwardingCpus: String?

    @Option(name: .long, help: "Microseconds the forwarding thread keeps polling after the last frame before it sleeps (0-10000).")
    var spinUs: Int = 50

    @Option(name: .long, help: "Frames taken from one guest TX queue per visit (1-256).")
    var batch: Int = 32

    @Option(name: .long, help: "Configuration file: loaded at start, rewritten after every change (default: <run-dir>/vswitchd.json).")
    var config: String?

    @Flag(name: .long, help: "Never write the configuration file (and do not read the default one; --config PATH is still read).")
    var noPersist = false

    @Option(name: .long, help: "Give this group access to the control socket (mode 0660 instead of 0600).")
    var controlGroup: String?

    @Option(name: .long, help: "Group of every vhost-user socket the switch creates (mode 0660), and of the run directory when vswitchd creates it (setgid), e.g. kvm for libvirt's QEMU.")
    var socketGroup: String?

    @Option(name: .long, help: ArgumentHelp("Serve Prometheus metrics at http://ADDRESS:PORT/metrics, e.g. 127.0.0.1:9101 (off by default).", valueName: "address:port"))
    var metrics: String?

    func validate() throws {
        if let metrics {
            do { _ = try MetricsAddress(parsing: metrics) } catch { throw ValidationError(error.description) }
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("unknown log level '\(logLevel)'")
        }
        guard (0...10_000).contains(spinUs) else { throw ValidationError("--spin-us must be in 0...10000") }
        guard (1...256).contains(batch) else { throw ValidationError("--batch must be in 1...256") }
        _ = try forwardingCPUs()
    }

    /// One entry per forwarding thread: its CPU, nil for the default unpinned thread.
    func forwardingCPUs() throws -> [Int?] {
        if let forwardingCpus {
            guard forwardingCpu == nil else { throw ValidationError("--forwarding-cpu and --forwarding-cpus are mutually exclusive") }
            do { return try ForwardingCPUList.parse(forwardingCpus) } catch { throw ValidationError(error.description) }
        }
        if let forwardingCpu {
            do { return try ForwardingCPUList.parse(String(forwardingCpu)) } catch {
                throw ValidationError("--forwarding-cpu \(forwardingCpu): no such CPU, or vswitchd may not run on it")
            }
        }
        return [nil]
    }

    func run() throws {
        let started = Date()
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "vswitchd")
        signal(SIGPIPE, SIG_IGN)
        // Before any guest memory is mapped: a frontend that truncates the file behind its
        // memory must cost its own connection, not the daemon (memguard.c).
        let memoryGuard = vs_memguard_install()
        var socketGid: gid_t?
        if let socketGroup {
            guard let g = getgrnam(socketGroup) else {
                logger.critical("--socket-group: no group named \(socketGroup)")
                throw ExitCode(1)
            }
            socketGid = g.pointee.gr_gid
        }
        do {
            try RunDirectory.create(runDir, group: socketGid)
        } catch {
            logger.critical("\(error)")
            throw ExitCode(1)
        }

        let threads = ForwardingThreads(cpus: try forwardingCPUs(), logger: logger) { e in
            e.spinNanoseconds = UInt64(spinUs) * 1000
            e.batchSize = batch
        }
        threads.start()
        let loop = EventLoop()
        let controller = SwitchController(threads: threads, loop: loop, runDirectory: runDir, logger: logger)
        controller.socketGroup = socketGroup
        let handler = RequestHandler(controller: controller)
        if memoryGuard >= 0 {
            loop.register(memoryGuard) { _ in
                var n: UInt64 = 0
                _ = read(memoryGuard, &n, 8)
                controller.checkMemoryFaults()
            }
        } else {
            logger.warning("cannot install the SIGBUS guard: a frontend that shrinks its memory file would kill vswitchd")
        }
        let configPath = config ?? runDir + "/vswitchd.json"
        let persistence: ConfigPersistence
        do {
            persistence = try ConfigPersistence.open(path: configPath, reads: !noPersist || config != nil, writes: !noPersist)
        } catch {
            logger.critical("\(error)")
            threads.stop()
            throw ExitCode(1)
        }
        var group: (id: gid_t, name: String)?
        if let controlGroup {
            guard let g = getgrnam(controlGroup) else {
                logger.critical("--control-group: no group named \(controlGroup)")
                threads.stop()
                throw ExitCode(1)
            }
            group = (g.pointee.gr_gid, controlGroup)
        }
        let socketPath = ControlDefaults.resolveSocketPath(option: control, environment: ProcessInfo.processInfo.environment)
        if ProcessInfo.processInfo.environment["VSWITCH_TEST_IGNORE_DIRTY_LOG"] == "1" {
            VhostUserDevice.ignoresDirtyLogForTesting = true
            logger.warning("VSWITCH_TEST_IGNORE_DIRTY_LOG=1: live migrations will corrupt guest memory (a test of the migration test)")
        }
        let server: ControlServer
        do {
            server = try ControlServer(
                path: socketPath, permissions: group == nil ? 0o600 : 0o660, group: group?.id,
                access: .daemonDefault(group: group?.id, groupName: group?.name)
            ) { request in loop.sync { persistence.handle(request, handler.handle) } }
        } catch {
            logger.critical("cannot open control socket: \(error)")
            threads.stop()
            throw ExitCode(1)
        }
        // Before the server accepts anyone and before the loop runs: this thread is the loop
        // thread-to-be, and nothing else touches the controller yet.
        do {
            try persistence.restore(handler.handle)
        } catch {
            logger.critical("\(error)")
            server.stop()
            controller.shutdown()
            threads.stop()
            throw ExitCode(1)
        }
        let restored = persistence.config
        logger.info("configuration", metadata: [
            "file": "\(persistence.writes ? configPath : config.map { $0 + " (read only)" } ?? "none")",
            "bridges": "\(restored.bridges.count)", "ports": "\(restored.bridges.map(\.addPorts.count).reduce(0, +))"])
        server.streamer = LiveCapture.streamer(controller: controller, loop: loop)
        server.start()
        var metricsServer: MetricsServer?
        if let metrics {
            do {
                metricsServer = try MetricsEndpoint.start(try MetricsAddress(parsing: metrics), controller: controller,
                                                          loop: loop, started: started)
                logger.info("metrics", metadata: ["url": "http://\(metrics)/metrics"])
            } catch {
                logger.critical("\(error)")
                server.stop()
                controller.shutdown()
                threads.stop()
                throw ExitCode(1)
            }
        }

        // SIGINT/SIGTERM: stop the loop; ports are closed on the loop thread below.
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { loop.stop() }
            source.resume()
            signalSources.append(source)
        }
        logger.info("vswitchd ready", metadata: ["control": "\(socketPath)", "run-dir": "\(runDir)",
                                                "forwarding-threads": "\(threads.count)"])
        loop.run()
        logger.info("shutting down")
        metricsServer?.stop()
        server.stop()
        controller.shutdown()
        threads.stop()
    }
}

nonisolated(unsafe) var signalSources: [DispatchSourceSignal] = []

VSwitchd.main()
