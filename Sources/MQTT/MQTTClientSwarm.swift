internal import CMosquitto
import Foundation
import Logging

// MARK: Threading rules (MQTTClientSwarm)
//
// * The swarm owns N libmosquitto handles in non-threaded mode and ONE thread ("mqtt-swarm")
//   that does all their I/O: poll(2) over every `mosquitto_socket()` (POLLIN always, POLLOUT
//   when `mosquitto_want_write`), then `mosquitto_loop_read` / `mosquitto_loop_write` for the
//   ready ones and `mosquitto_loop_misc` (keepalive pings) for all, once a second.
// * Every libmosquitto call on a swarm handle happens on that thread, so none of them needs a
//   lock; other threads talk to it only through `SwarmShared` (a queue of commands under a lock
//   plus a wake-up pipe) and read counters from it.
// * Callbacks run on the swarm thread, inside loop_read/write. The message handler given to
//   `init` runs there too: it must be quick and must not block (count, timestamp, hand off).
// * Handles are created in `init`, connected by the thread (non-blocking connect, at most
//   `maxPendingConnects` at a time), reconnected after a drop with a growing delay, and
//   destroyed by the thread when it exits (`shutdown()`), each callback context released once
//   after its handle is destroyed.
// * File descriptors: libmosquitto 2.0.11 opens a socket pair per handle, so each client costs
//   three descriptors. `init` raises RLIMIT_NOFILE when it can and throws when it cannot.
// * poll(2) rebuilds its array each turn: O(N) per wake-up, fine for ~10,000 clients on
//   loopback; an epoll set would be the next step beyond that.

/// Configuration of a ``MQTTClientSwarm``: N similar clients.
public struct MQTTSwarmConfiguration: Sendable {
    public var host: String
    public var port: Int
    public var count: Int
    /// The client id of client `i` (unique per broker).
    public var clientID: @Sendable (Int) -> String
    public var cleanSession: Bool
    /// The same credentials for every client…
    public var username: String?
    public var password: String?
    /// …or client `i`'s own (each frame has its own broker identity); wins over username/password.
    public var credentials: (@Sendable (Int) -> (username: String, password: String))?
    public var keepAlive: Duration
    /// The subscriptions of client `i`, (re)sent whenever it connects without a stored session.
    public var subscriptions: @Sendable (Int) -> [(String, MQTTQoS)]
    public var reconnectDelay: Duration
    public var reconnectDelayMax: Duration
    /// Connections in progress at once (TCP + CONNACK), so the broker's accept queue is not flooded.
    public var maxPendingConnects: Int
    public var protocolVersion: MQTTProtocolVersion

    public init(
        host: String, port: Int, count: Int,
        clientID: @escaping @Sendable (Int) -> String,
        cleanSession: Bool = true, username: String? = nil, password: String? = nil,
        credentials: (@Sendable (Int) -> (username: String, password: String))? = nil,
        keepAlive: Duration = .seconds(60),
        subscriptions: @escaping @Sendable (Int) -> [(String, MQTTQoS)] = { _ in [] },
        reconnectDelay: Duration = .milliseconds(500), reconnectDelayMax: Duration = .seconds(10),
        maxPendingConnects: Int = 128, protocolVersion: MQTTProtocolVersion = .v311
    ) {
        self.host = host
        self.port = port
        self.count = count
        self.clientID = clientID
        self.cleanSession = cleanSession
        self.username = username
        self.password = password
        self.credentials = credentials
        self.keepAlive = keepAlive
        self.subscriptions = subscriptions
        self.reconnectDelay = reconnectDelay
        self.reconnectDelayMax = reconnectDelayMax
        self.maxPendingConnects = maxPendingConnects
        self.protocolVersion = protocolVersion
    }
}

/// A message received by one client of the swarm, stamped when the swarm thread read it.
public struct MQTTSwarmDelivery: Sendable {
    /// The index of the receiving client (0..<count).
    public let client: Int
    public let message: MQTTMessage
    public let receivedAt: ContinuousClock.Instant
}

/// A snapshot of the swarm's counters.
public struct MQTTSwarmStatus: Sendable, Equatable {
    /// Clients connected right now.
    public var connected = 0
    /// Clients connected whose subscriptions the broker has acknowledged.
    public var ready = 0
    /// Connections lost (or refused) since start.
    public var disconnects = 0
    /// Messages delivered to the handler since start.
    public var messages = 0
}

/// Many MQTT connections driven by one thread (for frame simulators and fan-out benchmarks).
///
/// ```swift
/// let swarm = try MQTTClientSwarm(configuration: .init(host: h, port: p, count: 10_000,
///     clientID: { "frame-\($0)" }, subscriptions: { _ in [("albums/a1/#", .atLeastOnce)] }),
///     logger: logger) { delivery in latencies.record(delivery) }
/// try await swarm.start()
/// try await swarm.waitUntilReady(timeout: .seconds(120))
/// …
/// await swarm.shutdown()
/// ```
public final class MQTTClientSwarm: Sendable {
    public let configuration: MQTTSwarmConfiguration
    let shared: SwarmShared
    let logger: Logger
    /// The swarm thread's state; handed to that thread by `start()` (at most once, guarded by
    /// `shared.markStarted()`), never touched by this object afterwards.
    private let loop: SwarmLoop

    /// Creates the handles (no connection yet). `onMessage` runs on the swarm thread.
    public init(configuration: MQTTSwarmConfiguration, logger: Logger,
                onMessage: @escaping @Sendable (MQTTSwarmDelivery) -> Void) throws {
        try MosquittoLibrary.initialize()
        let c = configuration
        let context: [String: String] = ["mqtt.broker": "\(c.host):\(c.port)", "mqtt.swarm_size": "\(c.count)"]
        guard c.count > 0, (1...65535).contains(c.port), c.maxPendingConnects > 0 else {
            throw MQTTError(.invalidArgument, "a swarm needs count > 0, a valid port and maxPendingConnects > 0", context: context)
        }
        try Self.ensureDescriptors(for: c.count, context: context)
        self.configuration = c
        self.logger = logger
        self.shared = SwarmShared()
        self.loop = try SwarmLoop(configuration: c, shared: shared, logger: logger, onMessage: onMessage, context: context)
    }

    private static func ensureDescriptors(for count: Int, context: [String: String]) throws {
        let needed = rlim_t(count * 3 + 256)
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur >= needed { return }
        var raised = limit
        raised.rlim_cur = needed
        if raised.rlim_max < needed { raised.rlim_max = needed }
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) != 0 {
            raised.rlim_max = limit.rlim_max
            raised.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised)
            throw MQTTError(.invalidArgument,
                            "\(count) clients need about \(needed) file descriptors (3 per client: libmosquitto opens a socket pair per handle); the limit is \(limit.rlim_max)",
                            context: context)
        }
    }

    /// Starts the swarm thread, which connects every client and subscribes them.
    public func start() async throws {
        guard shared.markStarted() else { throw MQTTError(.invalidArgument, "the swarm was already started") }
        let loop = self.loop
        let thread = Thread { loop.run() }
        thread.name = "mqtt-swarm"
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Waits until every client is connected and its subscriptions are acknowledged.
    /// Throws ``MQTTError/Code/timeout`` with the counts reached.
    public func waitUntilReady(timeout: Duration) async throws {
        let count = configuration.count
        let deadline = ContinuousClock.now + timeout
        while true {
            let status = shared.status
            if status.ready == count { return }
            if ContinuousClock.now >= deadline {
                throw MQTTError(.timeout, "swarm not ready after \(timeout): \(status.connected) connected, \(status.ready) ready of \(count)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// The current counters.
    public var status: MQTTSwarmStatus { shared.status }

    /// Publishes from client `client` (fire and forget: handed to the swarm thread, which writes
    /// it; QoS 1/2 handshakes then run in the background). Throws for a bad topic or index.
    public func publish(client: Int, topic: String, payload: [UInt8], qos: MQTTQoS = .atMostOnce, retain: Bool = false) throws {
        try MQTTTopic.validate(topic)
        guard (0..<configuration.count).contains(client) else {
            throw MQTTError(.invalidArgument, "client index \(client) is outside 0..<\(configuration.count)")
        }
        try shared.send(.publish(client: client, MQTTMessage(topic: topic, payload: payload, qos: qos, retain: retain)))
    }

    /// Test hook: closes one client's TCP connection without DISCONNECT (it then reconnects).
    func dropConnectionForTesting(client: Int) throws {
        try shared.send(.drop(client: client))
    }

    /// Sends DISCONNECT from every connected client (no wills), waits (at most 10 s) for the
    /// writes, stops the thread and frees every handle. Idempotent.
    public func shutdown() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            shared.requestShutdown(continuation)
        }
    }

    /// Without `shutdown()`, the swarm thread is asked to disconnect and free everything on its
    /// own (nothing waits for it); a swarm never started frees its handles in SwarmLoop.deinit.
    deinit {
        shared.requestShutdown(nil)
    }
}

enum SwarmCommand: Sendable {
    case publish(client: Int, MQTTMessage)
    case drop(client: Int)
}

/// What other threads share with the swarm thread.
final class SwarmShared: @unchecked Sendable {
    // @unchecked Sendable: every `var` is accessed with `lock` held; the pipe fds are set in
    // init and closed by the swarm thread only after `stopped` is set.
    private let lock = NSLock()
    private var commands: [SwarmCommand] = []
    private var started = false
    private var stopped = false
    private var shutdownRequested = false
    private var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
    private var counters = MQTTSwarmStatus()
    let wakeRead: Int32
    let wakeWrite: Int32

    init() {
        var fds: [Int32] = [-1, -1]
        _ = pipe(&fds)
        wakeRead = fds[0]
        wakeWrite = fds[1]
        for fd in fds where fd >= 0 {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
    }

    func markStarted() -> Bool {
        lock.withLock {
            if started { return false }
            started = true
            return true
        }
    }

    var status: MQTTSwarmStatus { lock.withLock { counters } }
    func update(_ body: (inout MQTTSwarmStatus) -> Void) { lock.withLock { body(&counters) } }

    func send(_ command: SwarmCommand) throws {
        try lock.withLock {
            guard started, !stopped, !shutdownRequested else { throw MQTTError(.notConnected, "the swarm is not running") }
            commands.append(command)
            wake()
        }
    }

    func takeCommands() -> (commands: [SwarmCommand], shutdown: Bool) {
        lock.withLock {
            defer { commands = [] }
            return (commands, shutdownRequested)
        }
    }

    func requestShutdown(_ continuation: CheckedContinuation<Void, Never>?) {
        lock.withLock {
            if stopped || !started {
                if !started { started = true; stopped = true; closePipe() }
                continuation?.resume()
                return
            }
            shutdownRequested = true
            if let continuation { shutdownWaiters.append(continuation) }
            wake()
        }
    }

    private func closePipe() {
        close(wakeRead)
        close(wakeWrite)
    }

    /// Called by the swarm thread as its last act.
    func finished() {
        let waiters = lock.withLock {
            stopped = true
            defer { shutdownWaiters = [] }
            return shutdownWaiters
        }
        closePipe()
        for waiter in waiters { waiter.resume() }
    }

    /// With the lock held.
    private func wake() {
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

}

/// One client of the swarm: the callback context of its handle. Swarm thread only.
final class SwarmSlot {
    enum State { case idle, connecting, connected, waitingRetry }

    let index: Int
    unowned let loop: SwarmLoop
    var mosq: OpaquePointer?
    var state = State.idle
    var retryAt = ContinuousClock.now
    var attempts = 0
    var pendingSubscribes: Set<Int32> = []
    var ready = false

    init(index: Int, loop: SwarmLoop) {
        self.index = index
        self.loop = loop
    }

    static func from(_ obj: UnsafeMutableRawPointer?) -> SwarmSlot {
        Unmanaged<SwarmSlot>.fromOpaque(obj!).takeUnretainedValue()
    }
}

/// The swarm thread's state.
final class SwarmLoop: @unchecked Sendable {
    // @unchecked Sendable: created in MQTTClientSwarm.init, then used only by the swarm
    // thread (`run`), which starts after init returned; nothing else touches it.
    let configuration: MQTTSwarmConfiguration
    let shared: SwarmShared
    let logger: Logger
    let onMessage: @Sendable (MQTTSwarmDelivery) -> Void
    let context: [String: String]
    var slots: [SwarmSlot] = []
    var contexts: [Unmanaged<SwarmSlot>] = []
    var pendingConnects = 0
    var shuttingDown = false

    init(configuration: MQTTSwarmConfiguration, shared: SwarmShared, logger: Logger,
         onMessage: @escaping @Sendable (MQTTSwarmDelivery) -> Void, context: [String: String]) throws {
        self.configuration = configuration
        self.shared = shared
        self.logger = logger
        self.onMessage = onMessage
        self.context = context
        do {
            for i in 0..<configuration.count { try makeSlot(i) }
        } catch {
            destroyAll()
            throw error
        }
    }

    private func makeSlot(_ i: Int) throws {
        let c = configuration
        let slot = SwarmSlot(index: i, loop: self)
        let unmanaged = Unmanaged.passRetained(slot)
        let id = c.clientID(i)
        guard let mosq = mosquitto_new(id, c.cleanSession, unmanaged.toOpaque()) else {
            let saved = errno
            unmanaged.release()
            throw MQTTError(.library, "mosquitto_new for swarm client \(i) failed: \(String(cString: strerror(saved)))", context: context)
        }
        slot.mosq = mosq
        slots.append(slot)
        contexts.append(unmanaged)
        _ = mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, c.protocolVersion.cValue)
        _ = mosquitto_int_option(mosq, MOSQ_OPT_TCP_NODELAY, 1)
        let own = c.credentials?(i)
        if own != nil || c.username != nil || c.password != nil {
            let rc = mosquitto_username_pw_set(mosq, own?.username ?? c.username, own?.password ?? c.password)
            if rc != mosqSuccess { throw MQTTError.status(rc, "setting swarm credentials", context: context) }
        }
        mosquitto_connect_with_flags_callback_set(mosq) { _, obj, rc, flags in
            let slot = SwarmSlot.from(obj)
            slot.loop.onConnect(slot, rc: rc, sessionPresent: flags & 1 != 0)
        }
        mosquitto_disconnect_callback_set(mosq) { _, obj, rc in
            let slot = SwarmSlot.from(obj)
            slot.loop.onDisconnect(slot, rc: rc)
        }
        mosquitto_subscribe_callback_set(mosq) { _, obj, mid, _, _ in
            let slot = SwarmSlot.from(obj)
            slot.loop.onSubscribed(slot, mid: mid)
        }
        mosquitto_message_callback_set(mosq) { _, obj, message in
            let now = ContinuousClock.now
            guard let m = message?.pointee, let topic = m.topic else { return }
            let slot = SwarmSlot.from(obj)
            let payload = m.payloadlen > 0 && m.payload != nil
                ? [UInt8](UnsafeRawBufferPointer(start: m.payload, count: Int(m.payloadlen))) : []
            let msg = MQTTMessage(topic: String(cString: topic), payload: payload,
                                  qos: MQTTQoS(rawValue: Int(m.qos)) ?? .atMostOnce, retain: m.retain)
            slot.loop.shared.update { $0.messages += 1 }
            slot.loop.onMessage(MQTTSwarmDelivery(client: slot.index, message: msg, receivedAt: now))
        }
    }

    // MARK: Callbacks (swarm thread, inside loop_read/write/misc)

    func onConnect(_ slot: SwarmSlot, rc: Int32, sessionPresent: Bool) {
        guard rc == 0 else {
            logger.debug("swarm client refused", metadata: ["mqtt.swarm_client": "\(slot.index)", "mqtt.reason": "\(rc)"])
            return  // libmosquitto closes the connection; onDisconnect schedules the retry
        }
        if slot.state == .connecting { pendingConnects -= 1 }
        slot.state = .connected
        slot.attempts = 0
        shared.update { $0.connected += 1 }
        slot.pendingSubscribes = []
        if !sessionPresent || !slot.ready {
            for (filter, qos) in configuration.subscriptions(slot.index) {
                var mid: Int32 = 0
                let rc = mosquitto_subscribe(slot.mosq, &mid, filter, Int32(qos.rawValue))
                if rc == mosqSuccess {
                    slot.pendingSubscribes.insert(mid)
                } else {
                    logger.warning("swarm subscribe failed", metadata: ["mqtt.swarm_client": "\(slot.index)", "mqtt.error": "\(MQTTError.status(rc, "subscribe"))"])
                }
            }
        }
        if slot.pendingSubscribes.isEmpty { markReady(slot) }
    }

    func onSubscribed(_ slot: SwarmSlot, mid: Int32) {
        if slot.pendingSubscribes.remove(mid) != nil, slot.pendingSubscribes.isEmpty { markReady(slot) }
    }

    private func markReady(_ slot: SwarmSlot) {
        if !slot.ready {
            slot.ready = true
            shared.update { $0.ready += 1 }
        }
    }

    func onDisconnect(_ slot: SwarmSlot, rc: Int32) {
        switch slot.state {
        case .connecting: pendingConnects -= 1
        case .connected:
            shared.update {
                $0.connected -= 1
                if slot.ready { $0.ready -= 1 }
            }
            slot.ready = false
        case .idle, .waitingRetry: break
        }
        if !shuttingDown { shared.update { $0.disconnects += 1 } }
        scheduleRetry(slot)
    }

    private func scheduleRetry(_ slot: SwarmSlot) {
        slot.state = shuttingDown ? .idle : .waitingRetry
        slot.attempts += 1
        let base = configuration.reconnectDelay * slot.attempts
        // Spread reconnects so thousands of clients do not hit the broker in the same instant.
        let jitter = Duration.milliseconds(Int.random(in: 0...250))
        slot.retryAt = ContinuousClock.now + min(base, configuration.reconnectDelayMax) + jitter
    }

    // MARK: The loop

    func run() {
        let c = configuration
        var fds: [pollfd] = []
        var owners: [Int] = []
        var lastMisc = ContinuousClock.now
        var shutdownDeadline: ContinuousClock.Instant?
        var nextToConnect = 0
        fds.reserveCapacity(slots.count + 1)
        owners.reserveCapacity(slots.count + 1)

        while true {
            let (commands, shutdown) = shared.takeCommands()
            for command in commands { execute(command) }
            if shutdown && !shuttingDown {
                shuttingDown = true
                shutdownDeadline = .now + .seconds(10)
                for slot in slots { _ = mosquitto_disconnect(slot.mosq) }
            }
            let now = ContinuousClock.now
            if let deadline = shutdownDeadline {
                let open = slots.contains { mosquitto_socket($0.mosq) >= 0 }
                if !open || now >= deadline { break }
            } else {
                // First connections in index order, then reconnects that are due.
                while nextToConnect < slots.count && pendingConnects < c.maxPendingConnects {
                    connect(slots[nextToConnect])
                    nextToConnect += 1
                }
                if pendingConnects < c.maxPendingConnects {
                    for slot in slots where slot.state == .waitingRetry && slot.retryAt <= now {
                        connect(slot)
                        if pendingConnects >= c.maxPendingConnects { break }
                    }
                }
            }

            fds.removeAll(keepingCapacity: true)
            owners.removeAll(keepingCapacity: true)
            fds.append(pollfd(fd: shared.wakeRead, events: Int16(POLLIN), revents: 0))
            owners.append(-1)
            for slot in slots {
                let fd = mosquitto_socket(slot.mosq)
                if fd < 0 { continue }
                var events = Int16(POLLIN)
                if mosquitto_want_write(slot.mosq) { events |= Int16(POLLOUT) }
                fds.append(pollfd(fd: fd, events: events, revents: 0))
                owners.append(slot.index)
            }
            let ready = poll(&fds, nfds_t(fds.count), 100)
            if ready < 0 && errno != EINTR {
                logger.error("swarm poll failed", metadata: ["mqtt.error": "\(String(cString: strerror(errno)))"])
            }
            if ready > 0 {
                if fds[0].revents != 0 {
                    var buffer = [UInt8](repeating: 0, count: 256)
                    while read(shared.wakeRead, &buffer, buffer.count) > 0 {}
                }
                for i in 1..<fds.count where fds[i].revents != 0 {
                    let slot = slots[owners[i]]
                    let revents = Int32(fds[i].revents)
                    if revents & Int32(POLLIN | POLLERR | POLLHUP) != 0 {
                        _ = mosquitto_loop_read(slot.mosq, 1)
                    }
                    if revents & Int32(POLLOUT) != 0, mosquitto_socket(slot.mosq) == fds[i].fd {
                        _ = mosquitto_loop_write(slot.mosq, 1)
                    }
                }
            }
            let after = ContinuousClock.now
            if after - lastMisc >= .seconds(1) {
                lastMisc = after
                for slot in slots where mosquitto_socket(slot.mosq) >= 0 { _ = mosquitto_loop_misc(slot.mosq) }
            }
        }
        destroyAll()
        shared.update { $0.connected = 0; $0.ready = 0 }
        shared.finished()
    }

    private func connect(_ slot: SwarmSlot) {
        let c = configuration
        let rc = mosquitto_connect_async(slot.mosq, c.host, Int32(c.port), Int32(max(5, wholeSeconds(c.keepAlive))))
        if rc == mosqSuccess {
            slot.state = .connecting
            pendingConnects += 1
        } else {
            if slot.attempts == 0 {
                logger.debug("swarm connect failed", metadata: ["mqtt.swarm_client": "\(slot.index)", "mqtt.error": "\(MQTTError.status(rc, "connect", context: context))"])
            }
            shared.update { $0.disconnects += 1 }
            scheduleRetry(slot)
        }
    }

    private func execute(_ command: SwarmCommand) {
        switch command {
        case .publish(let client, let message):
            let slot = slots[client]
            let rc = message.payload.withUnsafeBytes {
                mosquitto_publish(slot.mosq, nil, message.topic, Int32($0.count), $0.baseAddress, Int32(message.qos.rawValue), message.retain)
            }
            if rc != mosqSuccess {
                logger.debug("swarm publish failed", metadata: ["mqtt.swarm_client": "\(client)", "mqtt.error": "\(MQTTError.status(rc, "publish"))"])
            }
        case .drop(let client):
            let fd = mosquitto_socket(slots[client].mosq)
            if fd >= 0 { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    deinit { destroyAll() }

    private func destroyAll() {
        for slot in slots {
            if let mosq = slot.mosq { mosquitto_destroy(mosq) }
            slot.mosq = nil
        }
        for context in contexts { context.release() }
        contexts = []
        slots = []
    }
}
