internal import CMosquitto
import Foundation
import Logging
import Threads

// MARK: Threading rules (MQTTClient)
//
// * Each `MQTTClient` owns one libmosquitto handle (`struct mosquitto *`, in libmosquitto's
//   threaded mode so it locks internally), created in `init` and destroyed exactly once in
//   `deinit`, after its network thread has ended.
// * `connect()` calls `mosquitto_connect_async` (which may resolve DNS, i.e. block) on the
//   shared `MQTTClient.blockingPool`, then starts one network thread per client (`ClientLoop`):
//   poll(2) on the socket and a wake-up pipe, `mosquitto_loop_read/write/misc`, and
//   `mosquitto_reconnect_async` after a drop (delay `reconnectDelay`, growing linearly to
//   `reconnectDelayMax`). We do not use `mosquitto_loop_start`: its select() loop dies silently
//   once descriptor numbers reach 1024 (see ClientLoop).
// * Every callback runs on that thread. Callbacks never run user code: they resume
//   continuations and yield into AsyncStreams under `ClientCore.lock`. Their context is the
//   `ClientCore`, passed as the `obj` pointer with `Unmanaged.passRetained` and released once in
//   `deinit`, after `mosquitto_destroy` (after which libmosquitto never calls back).
// * publish/subscribe/unsubscribe call libmosquitto from the calling task: in threaded mode
//   these only queue a packet (no I/O), then wake the network thread to write it. The ack can be
//   handled before `mosquitto_publish` has returned the message id, so the waiter is registered
//   under `ClientCore.lock`, held across the libmosquitto call; the callback takes the same lock.
// * `disconnect()` queues DISCONNECT, lets the thread write it, and waits for the thread to end.
// * For thousands of connections in one process use ``MQTTClientSwarm`` (one thread for all).

/// One MQTT connection (libmosquitto), safe to share between tasks.
///
/// ```swift
/// let client = try MQTTClient(configuration: .init(host: "127.0.0.1", port: 1883, clientID: "album-1"), logger: logger)
/// try await client.connect()
/// try await client.publish("albums/a1/photo_added", payload: bytes, qos: .atLeastOnce)
/// try await client.withMessages { messages in
///     _ = try await client.subscribe([("frames/f1/#", .atLeastOnce)])
///     for await message in messages { … }
/// }
/// await client.disconnect()
/// ```
///
/// After a successful `connect()` the client reconnects by itself when the connection drops
/// (see ``connectionEvents``); subscriptions are re-sent when the broker did not keep the
/// session. Call ``disconnect()`` before dropping the last reference.
public final class MQTTClient: Sendable {
    /// Threads for the few blocking libmosquitto calls (DNS in connect, joining the network
    /// thread). Shared by every client of the process, so sized for one slow call (a broker
    /// that stopped answering) not to hold up another client's connect.
    static let blockingPool = BlockingPool(name: "mqtt-blocking", threadCount: 16)

    public let configuration: MQTTConfiguration
    let logger: Logger
    let core: ClientCore
    /// The libmosquitto handle. nonisolated(unsafe): the pointer never changes after init;
    /// libmosquitto locks internally for the calls made from several threads (threaded mode),
    /// and connect_async/reconnect run only while no other connect() or network thread does
    /// (serialised by `ClientCore.phase` and `ClientLoop`).
    nonisolated(unsafe) let mosq: OpaquePointer
    private let context: Unmanaged<ClientCore>
    let loop: ClientLoop

    public init(configuration: MQTTConfiguration, logger: Logger) throws {
        try MosquittoLibrary.initialize()
        try configuration.validate()
        var logger = logger
        logger[metadataKey: "mqtt.client_id"] = .string(configuration.clientID)
        let core = ClientCore(configuration: configuration, logger: logger)
        let context = Unmanaged.passRetained(core)
        guard let mosq = mosquitto_new(configuration.clientID.isEmpty ? nil : configuration.clientID,
                                       configuration.cleanSession, context.toOpaque()) else {
            let saved = errno
            context.release()
            throw MQTTError(.library, "mosquitto_new failed: \(String(cString: strerror(saved)))", context: configuration.context)
        }
        self.configuration = configuration
        self.logger = logger
        self.core = core
        self.context = context
        self.mosq = mosq
        do {
            self.loop = try ClientLoop(mosq: mosq, core: core, configuration: configuration)
        } catch {
            mosquitto_destroy(mosq)
            context.release()
            throw error
        }
        do {
            try setUp()
        } catch {
            mosquitto_destroy(mosq)
            context.release()
            throw error
        }
    }

    private func setUp() throws {
        let c = configuration
        func check(_ rc: Int32, _ what: String) throws {
            if rc != mosqSuccess { throw MQTTError.status(rc, what, context: c.context) }
        }
        try check(mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, c.protocolVersion.cValue), "setting the protocol version")
        try check(mosquitto_int_option(mosq, MOSQ_OPT_TCP_NODELAY, 1), "setting TCP_NODELAY")
        if c.username != nil || c.password != nil {
            try check(mosquitto_username_pw_set(mosq, c.username, c.password), "setting username and password")
        }
        if let will = c.will {
            let rc = will.payload.withUnsafeBytes {
                mosquitto_will_set(mosq, will.topic, Int32($0.count), $0.baseAddress, Int32(will.qos.rawValue), will.retain)
            }
            try check(rc, "setting the last will")
        }
        try check(mosquitto_threaded_set(mosq, true), "enabling libmosquitto's thread safety")

        mosquitto_connect_with_flags_callback_set(mosq) { mosq, obj, rc, flags in
            ClientCore.from(obj).onConnect(mosq, rc: rc, sessionPresent: flags & 1 != 0)
        }
        mosquitto_disconnect_callback_set(mosq) { _, obj, rc in
            ClientCore.from(obj).onDisconnect(rc: rc, savedErrno: errno)
        }
        mosquitto_publish_callback_set(mosq) { _, obj, mid in
            ClientCore.from(obj).complete(mid: mid, .done)
        }
        mosquitto_subscribe_callback_set(mosq) { _, obj, mid, count, granted in
            // No array (never for a SUBACK libmosquitto parsed): no grant, which reads as refused.
            let values = granted.map { codes in (0..<Int(max(count, 0))).map { codes[$0] } } ?? []
            ClientCore.from(obj).complete(mid: mid, .granted(values))
        }
        mosquitto_unsubscribe_callback_set(mosq) { _, obj, mid in
            ClientCore.from(obj).complete(mid: mid, .done)
        }
        mosquitto_message_callback_set(mosq) { _, obj, message in
            guard let m = message?.pointee, let topicPointer = m.topic else { return }
            let topic = String(cString: topicPointer)
            let payload = m.payloadlen > 0 && m.payload != nil
                ? [UInt8](UnsafeRawBufferPointer(start: m.payload, count: Int(m.payloadlen))) : []
            ClientCore.from(obj).deliver(MQTTMessage(topic: topic, payload: payload, qos: MQTTQoS(rawValue: Int(m.qos)) ?? .atMostOnce, retain: m.retain))
        }
    }

    deinit {
        if loop.isRunning {
            logger.warning("MQTTClient dropped without disconnect(); stopping its network thread")
            mosquitto_disconnect(mosq)
            loop.stopAndWait()
        }
        core.finishAll()
        mosquitto_destroy(mosq)
        context.release()
    }

    // MARK: Connection

    /// Whether the client is connected right now (CONNACK accepted, connection not lost since).
    public var isConnected: Bool { core.isConnected }

    /// Connection changes from now on, in order (a new sequence per access; it ends on
    /// `disconnect()`; at most 64 unread events are kept, the oldest are dropped first).
    public var connectionEvents: AsyncStream<MQTTConnectionEvent> { core.makeEventStream() }

    /// Connects and waits for the broker's CONNACK.
    ///
    /// Throws ``MQTTError/Code/unreachable`` when nothing answers, ``MQTTError/Code/connectionRefused``
    /// when the broker refuses, ``MQTTError/Code/timeout`` after `connectTimeout`. On failure
    /// nothing keeps running and `connect()` may be called again. After success, dropped
    /// connections are re-established automatically until ``disconnect()``.
    public func connect() async throws {
        try core.beginConnect()
        let c = configuration
        do {
            let rc = try await Self.blockingPool.run { [self] () -> (Int32, Int32) in
                let rc = mosquitto_connect_async(mosq, c.host, Int32(c.port), Int32(wholeSeconds(c.keepAlive)))
                return (rc, errno)
            }
            guard rc.0 == mosqSuccess else { throw MQTTError.status(rc.0, "connect to \(c.host):\(c.port)", savedErrno: rc.1, context: c.context) }
            loop.start()
            try await withDeadline(c.connectTimeout, "waiting for CONNACK from \(c.host):\(c.port)", context: c.context) { [core] in
                try await core.waitForConnack()
            }
            logger.debug("connected", metadata: ["mqtt.broker": "\(c.host):\(c.port)"])
        } catch {
            await stopLoop()
            core.connectFailed()
            throw error
        }
    }

    /// Sends DISCONNECT (so the broker does not publish the will), stops the network thread,
    /// fails waiting operations with ``MQTTError/Code/closed`` and ends message sequences.
    /// Does nothing if not connected. `connect()` may be called again afterwards.
    public func disconnect() async {
        guard core.beginDisconnect() else { return }
        await stopLoop()
        core.finishDisconnect()
    }

    private func stopLoop() async {
        guard loop.isRunning else { return }
        mosquitto_disconnect(mosq)
        await loop.stop()
    }

    // MARK: Publish / subscribe

    /// Publishes and waits: QoS 0 until the packet is written, QoS 1 for PUBACK, QoS 2 for PUBCOMP.
    ///
    /// Throws ``MQTTError/Code/invalidTopic`` for a bad topic, ``MQTTError/Code/notConnected``
    /// when not connected (nothing is queued then), ``MQTTError/Code/connectionLost`` if the
    /// connection drops before the ack (QoS 1/2: libmosquitto resends after the reconnect, so the
    /// message may still arrive), ``MQTTError/Code/timeout`` after `operationTimeout`.
    public func publish(_ topic: String, payload: [UInt8], qos: MQTTQoS, retain: Bool = false) async throws {
        try MQTTTopic.validate(topic)
        guard payload.count <= 268_435_455 - topic.utf8.count - 4 else {
            throw MQTTError(.payloadTooLarge, "payload of \(payload.count) bytes exceeds MQTT's packet limit", context: configuration.context)
        }
        let c = configuration
        _ = try await core.request(timeout: c.operationTimeout, "publish") { [self] in
            var mid: Int32 = 0
            let rc = payload.withUnsafeBytes {
                mosquitto_publish(mosq, &mid, topic, Int32($0.count), $0.baseAddress, Int32(qos.rawValue), retain)
            }
            guard rc == mosqSuccess else { throw MQTTError.status(rc, "publish", context: c.context.merging(["mqtt.topic": topic]) { a, _ in a }) }
            loop.wake()
            return mid
        }
    }

    /// Subscribes to each filter and waits for the SUBACKs. Returns the QoS the broker granted
    /// per filter (nil: refused). The subscriptions are re-sent after a reconnect when the broker
    /// did not keep the session.
    @discardableResult
    public func subscribe(_ filters: [(String, MQTTQoS)]) async throws -> [MQTTQoS?] {
        for (filter, _) in filters { try MQTTTopic.validateFilter(filter) }
        var granted: [MQTTQoS?] = []
        let c = configuration
        for (filter, qos) in filters {
            let ack = try await core.request(timeout: c.operationTimeout, "subscribe") { [self] in
                var mid: Int32 = 0
                let rc = mosquitto_subscribe(mosq, &mid, filter, Int32(qos.rawValue))
                guard rc == mosqSuccess else { throw MQTTError.status(rc, "subscribe", context: c.context.merging(["mqtt.filter": filter]) { a, _ in a }) }
                loop.wake()
                return mid
            }
            let value: MQTTQoS? = if case .granted(let codes) = ack, let first = codes.first { MQTTQoS(rawValue: Int(first)) } else { nil }
            granted.append(value)
            if let value { core.remember(filter, qos: value) }
        }
        return granted
    }

    /// Unsubscribes from the filters and waits for the UNSUBACKs.
    public func unsubscribe(_ filters: [String]) async throws {
        for filter in filters { try MQTTTopic.validateFilter(filter) }
        let c = configuration
        for filter in filters {
            core.forget(filter)
            _ = try await core.request(timeout: c.operationTimeout, "unsubscribe") { [self] in
                var mid: Int32 = 0
                let rc = mosquitto_unsubscribe(mosq, &mid, filter)
                guard rc == mosqSuccess else { throw MQTTError.status(rc, "unsubscribe", context: c.context) }
                loop.wake()
                return mid
            }
        }
    }

    /// Runs `body` with the messages that arrive while it runs (on every subscription of this
    /// client). Open it before subscribing so retained messages are not missed. At most
    /// `bufferSize` unread messages are kept; later ones are dropped and counted in
    /// ``droppedMessages`` (the network thread is never blocked by a slow reader).
    /// The sequence ends when `body` returns or the client is disconnected.
    public func withMessages<T>(
        bufferSize: Int = 4096,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (MQTTMessages) async throws -> T
    ) async rethrows -> T {
        let (stream, continuation) = AsyncStream<MQTTMessage>.makeStream(bufferingPolicy: .bufferingOldest(max(1, bufferSize)))
        let id = core.addMessageSink(continuation)
        defer { core.removeMessageSink(id) }
        return try await body(MQTTMessages(stream: stream))
    }

    /// Messages dropped because a `withMessages` reader was `bufferSize` behind.
    public var droppedMessages: Int { core.droppedCount }

    /// Test hook: closes the TCP connection under libmosquitto without DISCONNECT, as a network
    /// failure would (the broker then publishes the will; the client reconnects).
    func abortConnectionForTesting() {
        let fd = mosquitto_socket(mosq)
        if fd >= 0 { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }
}

/// The messages of one ``MQTTClient/withMessages(bufferSize:isolation:_:)`` scope.
public struct MQTTMessages: AsyncSequence, Sendable {
    public typealias Element = MQTTMessage
    let stream: AsyncStream<MQTTMessage>

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncStream<MQTTMessage>.AsyncIterator
        public mutating func next() async -> MQTTMessage? { await base.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: stream.makeAsyncIterator()) }
}
