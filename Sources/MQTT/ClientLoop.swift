internal import CMosquitto
import Foundation

/// The network thread of one ``MQTTClient``: poll(2) on the client's socket and a wake-up
/// pipe, `mosquitto_loop_read/write/misc`, and reconnects after a drop.
///
/// Why not `mosquitto_loop_start`: libmosquitto's own loop uses select(), which fails (and the
/// thread silently ends) once a descriptor number reaches FD_SETSIZE (1024) — easily reached in
/// a process that also runs an ``MQTTClientSwarm`` (3 descriptors per swarm client).
final class ClientLoop: @unchecked Sendable {
    // @unchecked Sendable: `mosq` is immutable and the handle is in libmosquitto's threaded
    // mode (it locks internally); `stopRequested`, `running` and `exitWaiters` are guarded by
    // `lock`; the pipe fds are immutable until `deinit`.
    let mosq: OpaquePointer
    let core: ClientCore
    let configuration: MQTTConfiguration
    private let lock = NSCondition()
    private var stopRequested = false
    private var running = false
    private var exitWaiters: [CheckedContinuation<Void, Never>] = []
    private let wakeRead: Int32
    private let wakeWrite: Int32

    init(mosq: OpaquePointer, core: ClientCore, configuration: MQTTConfiguration) throws {
        self.mosq = mosq
        self.core = core
        self.configuration = configuration
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else {
            throw MQTTError(.library, "pipe() for the network thread failed: \(String(cString: strerror(errno)))", context: configuration.context)
        }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        wakeRead = fds[0]
        wakeWrite = fds[1]
    }

    deinit {
        close(wakeRead)
        close(wakeWrite)
    }

    /// Wakes the thread so it writes what libmosquitto queued (threaded mode never writes inline).
    func wake() {
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    func start() {
        lock.withLock {
            stopRequested = false
            running = true
        }
        let thread = Thread { [self] in run() }
        thread.name = "mqtt-\(configuration.clientID.prefix(10))"
        thread.stackSize = 1 << 20
        thread.start()
    }

    var isRunning: Bool { lock.withLock { running } }

    /// Asks the thread to end (after flushing a queued DISCONNECT, at most 2 s) and waits.
    func stop() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = lock.withLock { () -> Bool in
                guard running else { return true }
                stopRequested = true
                exitWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() } else { wake() }
        }
    }

    /// Blocking variant for deinit.
    func stopAndWait() {
        let wasRunning = lock.withLock { () -> Bool in
            stopRequested = true
            return running
        }
        guard wasRunning else { return }
        wake()
        lock.withLock {
            while running { lock.wait() }
        }
    }

    private func run() {
        var attempts = 0
        var stopSince: ContinuousClock.Instant?
        var lastMisc = ContinuousClock.now
        while true {
            if lock.withLock({ stopRequested }) {
                let now = ContinuousClock.now
                let since = stopSince ?? now
                stopSince = since
                // Leave once DISCONNECT is written (socket closed) or after 2 s.
                if mosquitto_socket(mosq) < 0 || !mosquitto_want_write(mosq) || now - since > .seconds(2) { break }
            }
            let fd = mosquitto_socket(mosq)
            if fd < 0 {
                if stopSince != nil { break }
                // Disconnected: wait (interruptibly) and reconnect.
                attempts += 1
                let delay = min(configuration.reconnectDelay * attempts, configuration.reconnectDelayMax)
                waitForWake(timeout: delay)
                if lock.withLock({ stopRequested }) { break }
                let rc = mosquitto_reconnect_async(mosq)
                if rc != mosqSuccess {
                    core.onReconnectFailed(MQTTError.status(rc, "reconnect to \(configuration.host):\(configuration.port)", context: configuration.context))
                }
                continue
            }
            var fds = [
                pollfd(fd: fd, events: Int16(POLLIN) | (mosquitto_want_write(mosq) ? Int16(POLLOUT) : 0), revents: 0),
                pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0),
            ]
            let n = poll(&fds, 2, 1000)
            if n > 0 {
                if fds[1].revents != 0 { drainWake() }
                let revents = Int32(fds[0].revents)
                if revents & Int32(POLLIN | POLLERR | POLLHUP) != 0 {
                    _ = mosquitto_loop_read(mosq, 1)
                }
                if revents & Int32(POLLOUT) != 0, mosquitto_socket(mosq) == fd {
                    _ = mosquitto_loop_write(mosq, 1)
                }
            }
            if core.isConnected { attempts = 0 }
            let now = ContinuousClock.now
            if now - lastMisc >= .milliseconds(500), mosquitto_socket(mosq) >= 0 {
                lastMisc = now
                _ = mosquitto_loop_misc(mosq)
            }
        }
        let waiters = lock.withLock {
            running = false
            lock.broadcast()
            defer { exitWaiters = [] }
            return exitWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    private func waitForWake(timeout: Duration) {
        var fds = [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
        let ms = Int32(clamping: timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        if poll(&fds, 1, max(ms, 1)) > 0 { drainWake() }
    }

    private func drainWake() {
        var buffer = [UInt8](repeating: 0, count: 64)
        while read(wakeRead, &buffer, buffer.count) > 0 {}
    }
}
