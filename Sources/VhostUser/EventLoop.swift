import Syscalls
import CShims
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A single-threaded epoll loop for the control plane: vhost-user sockets, reconnect
/// timers and work handed over from other threads (the control socket). Everything that
/// owns control-plane state runs on this one thread, so that state needs no locks.
public final class EventLoop: @unchecked Sendable {
    public typealias Handler = (UInt32) -> Void

    private let epollFd: Int32
    private let wakeFd: Int32
    private var handlers: [Int32: Handler] = [:]
    private var timers: [(deadline: UInt64, id: Int, body: () -> Void)] = []
    private var nextTimerId = 0
    private let lock = NSLock()
    private var tasks: [() -> Void] = []
    private var stopping = false
    private var thread: pthread_t?

    public init() {
        epollFd = vs_epoll_create()
        wakeFd = vs_eventfd(0)
        precondition(epollFd >= 0 && wakeFd >= 0, "epoll/eventfd: \(errno)")
        _ = vs_epoll_ctl(epollFd, vs_epoll_op_add(), wakeFd, vs_epollin(), UInt64(wakeFd))
    }

    deinit {
        close(epollFd)
        close(wakeFd)
    }

    public var inLoopThread: Bool {
        lock.lock()   // written by run() on the loop thread, read from any thread
        let loopThread = thread
        lock.unlock()
        guard let loopThread else { return false }
        return pthread_equal(loopThread, pthread_self()) != 0
    }

    /// Watch `fd` for readability (and errors/hang-up); `handler` runs on the loop thread.
    public func register(_ fd: Int32, handler: @escaping Handler) {
        handlers[fd] = handler
        _ = vs_epoll_ctl(epollFd, vs_epoll_op_add(), fd, vs_epollin(), UInt64(UInt32(bitPattern: fd)))
    }

    /// Also watch a registered `fd` for writability (while a reply waits to be sent), or stop.
    public func watchWritable(_ fd: Int32, _ on: Bool) {
        guard handlers[fd] != nil else { return }
        let events = on ? vs_epollin() | vs_epollout() : vs_epollin()
        _ = vs_epoll_ctl(epollFd, vs_epoll_op_mod(), fd, events, UInt64(UInt32(bitPattern: fd)))
    }

    public func unregister(_ fd: Int32) {
        handlers[fd] = nil
        _ = vs_epoll_ctl(epollFd, vs_epoll_op_del(), fd, 0, 0)
    }

    /// Run `body` once after `seconds` on the loop thread. Returns an id for `cancelTimer`.
    @discardableResult
    public func schedule(after seconds: Double, _ body: @escaping () -> Void) -> Int {
        nextTimerId += 1
        timers.append((vs_monotonic_ns() + UInt64(seconds * 1e9), nextTimerId, body))
        return nextTimerId
    }

    public func cancelTimer(_ id: Int) { timers.removeAll { $0.id == id } }

    /// Queue `body` to run on the loop thread (callable from any thread).
    public func execute(_ body: @escaping () -> Void) {
        lock.lock()
        tasks.append(body)
        lock.unlock()
        _ = vs_eventfd_signal(wakeFd)
    }

    /// Run `body` on the loop thread and wait for its result. Called before `run()` it
    /// waits until the loop starts.
    public func sync<T>(_ body: @escaping () -> T) -> T {
        if inLoopThread { return body() }
        let done = DispatchSemaphore(value: 0)
        var result: T?
        execute {
            result = body()
            done.signal()
        }
        done.wait()
        return result!
    }

    public func stop() { execute { self.stopping = true } }

    /// Runs the loop on the calling thread until `stop()`.
    public func run() {
        let altStack = vs_memguard_altstack()   // the SIGBUS guard's handler may run on this thread
        defer { vs_memguard_altstack_release(altStack) }
        lock.lock()
        thread = pthread_self()
        lock.unlock()
        var tokens = [UInt64](repeating: 0, count: 32)
        var events = [UInt32](repeating: 0, count: 32)
        while !stopping {
            let (n, _) = Syscall.retrying { vs_epoll_wait(epollFd, &tokens, &events, 32, nextTimeoutMs()) }
            if n < 0 { break }
            for k in 0..<Int(max(n, 0)) {
                let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: tokens[k]))
                if fd == wakeFd {
                    _ = vs_eventfd_drain(wakeFd)
                    runTasks()
                } else if let h = handlers[fd] {
                    h(events[k])
                }
            }
            runDueTimers()
        }
        runTasks()
    }

    private func runTasks() {
        lock.lock()
        let pending = tasks
        tasks.removeAll()
        lock.unlock()
        for t in pending { t() }
    }

    private func nextTimeoutMs() -> Int32 {
        guard let first = timers.map(\.deadline).min() else { return -1 }
        let now = vs_monotonic_ns()
        return first <= now ? 0 : Int32(min((first - now) / 1_000_000 + 1, 60_000))
    }

    private func runDueTimers() {
        let now = vs_monotonic_ns()
        let due = timers.filter { $0.deadline <= now }
        guard !due.isEmpty else { return }
        timers.removeAll { $0.deadline <= now }
        for t in due { t.body() }
    }
}
