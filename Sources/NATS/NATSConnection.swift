import Foundation
import Logging
import Threads
internal import CNats

/// A connection to NATS (nats.c 3.4.1 underneath), safe to share between tasks.
///
/// ## Threading rules
/// * nats.c runs its own threads: a reader and a flusher per connection, one delivery thread
///   per subscription (message callbacks), one thread for connection events. Our C callbacks
///   only copy the message out of C memory and hand it to Swift (an `AsyncStream` or a waiting
///   continuation); they never block and never call back into user code.
/// * Calls that can block (connect, flush, JetStream stream/consumer management, pull fetch)
///   run on ``Threads/BlockingPool`` threads, never on the cooperative pool. Pull fetches run on
///   a dedicated thread per ``PullConsumer``, so a long fetch never starves other work.
/// * Calls that do not block (publish with `SendAsap`, subscribe, unsubscribe) run inline.
///   `close()` joins nats.c's reader and flusher threads, which exit as soon as the socket is
///   closed (milliseconds).
/// * Requests never use nats.c's blocking `natsConnection_Request`: one wildcard subscription
///   `<inbox prefix>.<nuid>.*` per connection receives every reply, and a table maps each reply
///   subject to the continuation waiting for it (see ``request(_:payload:headers:timeout:)``).
/// * C callback contexts are passed with `Unmanaged.passRetained` and released in the
///   subscription's on-complete callback (or the connection's closed callback): the points
///   where nats.c guarantees that no callback will run again.
///
/// ## Lifecycle
/// `connect` → use → `drain()` (graceful) or `close()`. The client reconnects on its own after
/// a lost connection (server list, back-off with jitter, forever by default); subscriptions are
/// re-established by nats.c, and publishes made while reconnecting are buffered.
public final class NATSConnection: Sendable {
    let handle: ConnectionHandle
    let logger: Logger
    let inbox: ReplyInbox
    let events: ConnectionEvents
    /// ``NATSConfiguration/inboxPrefix``: the first tokens of every reply subject this connection uses.
    public let inboxPrefix: String
    private let state = Locked(State())

    /// Threads for nats.c calls that block (connect, flush, JetStream management). Sized so
    /// that one connection waiting out a timeout does not hold up another's connect.
    static let blockingPool = BlockingPool(name: "nats-blocking", threadCount: 16)

    private struct State {
        var phase: Phase = .open
        var scopes: [UInt64: SubscriptionHandle] = [:]
        var nextScope: UInt64 = 0
    }

    private enum Phase { case open, draining, closed }

    private init(handle: ConnectionHandle, logger: Logger, inbox: ReplyInbox, events: ConnectionEvents, inboxPrefix: String) {
        self.handle = handle
        self.logger = logger
        self.inbox = inbox
        self.events = events
        self.inboxPrefix = inboxPrefix
    }

    deinit {
        if state.withLock({ $0.phase != .closed }) {
            logger.debug("NATS connection released without close(); closing it")
            natsConnection_Close(handle.pointer)
        }
    }

    // MARK: Connect

    /// Connects to one of `configuration.servers`, or throws ``NATSError/Code/connectFailed``
    /// (no server reachable within `connectTimeout` per server) or `authorizationFailed`.
    /// Disconnects, reconnects and asynchronous errors are logged on `logger`.
    public static func connect(_ configuration: NATSConfiguration, logger: Logger) async throws -> NATSConnection {
        guard !configuration.servers.isEmpty else {
            throw NATSError(.invalidArgument, "connect: no server URL given")
        }
        try Validate.subject(configuration.inboxPrefix, wildcards: false, "connect: inbox prefix")
        var logger = logger
        logger[metadataKey: "nats.connection"] = "\(configuration.name)"
        let events = ConnectionEvents(logger: logger)
        let handle = try await blockingPool.run { try openConnection(configuration, events) }
        let inbox: ReplyInbox
        do {
            inbox = try ReplyInbox(connection: handle, inboxPrefix: configuration.inboxPrefix, logger: logger)
        } catch {
            natsConnection_Close(handle.pointer)
            throw error
        }
        let connection = NATSConnection(handle: handle, logger: logger, inbox: inbox, events: events,
                                        inboxPrefix: configuration.inboxPrefix)
        logger.info("NATS connected", metadata: ["nats.url": "\(connectedURL(handle.pointer) ?? "?")"])
        return connection
    }

    private static func openConnection(_ c: NATSConfiguration, _ events: ConnectionEvents) throws -> ConnectionHandle {
        let servers = c.servers.map(redactURL).joined(separator: ",")
        let what = "connect to \(servers)"
        var optsOut: OpaquePointer?
        try NATSError.check(natsOptions_Create(&optsOut), "\(what): create options")
        guard let opts = optsOut else { throw NATSError(.other, "\(what): no options") }
        defer { natsOptions_Destroy(opts) }
        let strings = CStrings()
        try NATSError.check(natsOptions_SetServers(opts, strings.makeArray(c.servers), Int32(c.servers.count)),
                            "\(what): set servers")
        try NATSError.check(natsOptions_SetName(opts, c.name), "\(what): set name")
        if c.user != nil || c.password != nil {
            try NATSError.check(natsOptions_SetUserInfo(opts, c.user, c.password), "\(what): set user info")
        }
        if let token = c.token {
            try NATSError.check(natsOptions_SetToken(opts, token), "\(what): set token")
        }
        // nats.c's own inboxes (JetStream API requests, pull-consumer fetches) use it too.
        if c.inboxPrefix != NATSConfiguration.defaultInboxPrefix {
            try NATSError.check(natsOptions_SetCustomInboxPrefix(opts, c.inboxPrefix), "\(what): set inbox prefix")
        }
        try NATSError.check(natsOptions_SetTimeout(opts, max(1, c.connectTimeout.natsMilliseconds)), "\(what): set timeout")
        try NATSError.check(natsOptions_SetAllowReconnect(opts, true), "\(what): allow reconnect")
        try NATSError.check(natsOptions_SetMaxReconnect(opts, Int32(clamping: c.maxReconnects)), "\(what): set max reconnects")
        try NATSError.check(natsOptions_SetReconnectWait(opts, max(1, c.reconnectWait.natsMilliseconds)), "\(what): set reconnect wait")
        let jitter = max(0, c.reconnectJitter.natsMilliseconds)
        try NATSError.check(natsOptions_SetReconnectJitter(opts, jitter, jitter), "\(what): set reconnect jitter")
        try NATSError.check(natsOptions_SetReconnectBufSize(opts, Int32(clamping: c.reconnectBufferSize)), "\(what): set reconnect buffer")
        try NATSError.check(natsOptions_SetPingInterval(opts, max(1, c.pingInterval.natsMilliseconds)), "\(what): set ping interval")
        // Measured: without SendAsap each publish waits for the flusher thread (~1 ms per hop).
        try NATSError.check(natsOptions_SetSendAsap(opts, true), "\(what): set send-asap")

        // Released by the closed callback (the last connection callback nats.c makes), or
        // below when the connect fails (nats.c makes no callbacks for a failed first connect).
        let context = Unmanaged.passRetained(events).toOpaque()
        var status = natsOptions_SetDisconnectedCB(opts, { nc, closure in
            guard let closure else { return }
            Unmanaged<ConnectionEvents>.fromOpaque(closure).takeUnretainedValue().disconnected(nc)
        }, context)
        if status == NATS_OK {
            status = natsOptions_SetReconnectedCB(opts, { nc, closure in
                guard let closure else { return }
                Unmanaged<ConnectionEvents>.fromOpaque(closure).takeUnretainedValue().reconnected(nc)
            }, context)
        }
        if status == NATS_OK {
            status = natsOptions_SetErrorHandler(opts, { nc, sub, err, closure in
                guard let closure else { return }
                Unmanaged<ConnectionEvents>.fromOpaque(closure).takeUnretainedValue().asyncError(sub, err)
            }, context)
        }
        if status == NATS_OK {
            status = natsOptions_SetClosedCB(opts, { _, closure in
                guard let closure else { return }
                Unmanaged<ConnectionEvents>.fromOpaque(closure).takeRetainedValue().closed()
            }, context)
        }
        var nc: OpaquePointer?
        if status == NATS_OK {
            status = natsConnection_Connect(&nc, opts)
        }
        guard status == NATS_OK, let nc else {
            Unmanaged<ConnectionEvents>.fromOpaque(context).release()
            let error = NATSError.from(status, what)
            switch error.code {
            case .authorizationFailed, .invalidArgument: throw error
            default: throw NATSError(.connectFailed, error.message, status: error.status)
            }
        }
        return ConnectionHandle(nc)
    }

    // MARK: State

    /// Whether the connection is connected to a server right now (false while reconnecting,
    /// draining or after close).
    public var isConnected: Bool {
        natsConnection_Status(handle.pointer) == NATS_CONN_STATUS_CONNECTED
    }

    /// Whether `close()` or `drain()` has closed this connection (or reconnecting gave up).
    public var isClosed: Bool {
        state.withLock { $0.phase == .closed } || natsConnection_IsClosed(handle.pointer)
    }

    /// How many times this connection has been lost or re-established so far: every disconnect
    /// and every reconnect adds one (a deliberate ``close()`` adds nothing). Core NATS delivers
    /// nothing published while a client is disconnected, so a subscriber that keeps state derived
    /// from its messages (a cache it invalidates on message) compares this value with the one it
    /// saw last: when it changed, messages may have been missed. Read from any thread; cheap.
    public var connectionChanges: UInt64 { events.changes.withLock { $0 } }

    /// The URL of the server the connection is connected to now, if any.
    public var connectedURL: String? { Self.connectedURL(handle.pointer) }

    static func connectedURL(_ nc: OpaquePointer) -> String? {
        var buffer = [CChar](repeating: 0, count: 512)
        guard natsConnection_GetConnectedUrl(nc, &buffer, buffer.count) == NATS_OK else { return nil }
        let url = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return url.isEmpty ? nil : redactURL(url)
    }

    // MARK: Publish

    /// Publishes a message. Does not wait for the server: call ``flush(timeout:)`` when you
    /// must know it arrived. While reconnecting, messages are buffered (up to
    /// `reconnectBufferSize`). Subjects must not contain wildcards, whitespace or empty tokens.
    public func publish(_ subject: String, payload: [UInt8], headers: NATSHeaders = NATSHeaders(), reply: String? = nil) throws {
        let what = "publish to '\(subject)'"
        try Validate.subject(subject, wildcards: false, what)
        if let reply { try Validate.subject(reply, wildcards: false, "\(what) (reply subject)") }
        guard payload.count <= Int32.max else { throw NATSError(.maxPayload, "\(what): payload of \(payload.count) bytes") }
        let nc = handle.pointer
        if headers.isEmpty {
            let status = payload.withUnsafeBytes { bytes -> natsStatus in
                if let reply {
                    natsConnection_PublishRequest(nc, subject, reply, bytes.baseAddress, Int32(bytes.count))
                } else {
                    natsConnection_Publish(nc, subject, bytes.baseAddress, Int32(bytes.count))
                }
            }
            try NATSError.check(status, what)
        } else {
            try Validate.headers(headers, what)
            try withCMessage(subject: subject, reply: reply, payload: payload, headers: headers, what) { msg in
                try NATSError.check(natsConnection_PublishMsg(nc, msg), what)
            }
        }
    }

    /// Publishes a response to `message.reply`; throws `invalidArgument` when it has none.
    public func respond(to message: NATSMessage, payload: [UInt8], headers: NATSHeaders = NATSHeaders()) throws {
        guard let reply = message.reply else {
            throw NATSError(.invalidArgument, "respond to a message on '\(message.subject)': it has no reply subject")
        }
        try publish(reply, payload: payload, headers: headers)
    }

    /// Waits until the server has processed everything published so far (a PING/PONG round
    /// trip), or throws `timeout` / `notConnected` / `connectionClosed`.
    public func flush(timeout: Duration = .seconds(5)) async throws {
        let handle = self.handle
        let ms = max(1, timeout.natsMilliseconds)
        try await Self.blockingPool.run {
            try NATSError.check(natsConnection_FlushTimeout(handle.pointer, ms), "flush")
        }
    }

    // MARK: Subscribe

    /// Subscribes to `subject` (wildcards allowed) for the duration of `body`.
    ///
    /// The subscription lives only inside `body`: when `body` returns or throws, the client
    /// unsubscribes: the UNSUB is sent at once, so messages this connection publishes afterwards
    /// (and, after a ``flush(timeout:)``, those of any other connection) reach no one. With `queue`, subscribers of the same
    /// queue group share the messages (each message goes to one of them).
    ///
    /// Buffering: up to `bufferSize` received messages wait for `body` to take them. When the
    /// buffer is full, **newly arriving messages are dropped** (the buffered, older ones are kept
    /// in order), as NATS does for slow consumers; ``NATSSubscription/droppedMessages`` counts
    /// them and a warning is logged. The subscription survives reconnects (nats.c resubscribes).
    ///
    /// During ``drain(timeout:)`` the sequence ends after the messages already received have been
    /// handed out, so a `for await` loop in `body` finishes its in-flight work and returns.
    public func subscribe<T: Sendable>(
        _ subject: String, queue: String? = nil, bufferSize: Int = 1024,
        _ body: (NATSSubscription) async throws -> T
    ) async throws -> T {
        let what = queue.map { "subscribe to '\(subject)' in queue group '\($0)'" } ?? "subscribe to '\(subject)'"
        try Validate.subject(subject, wildcards: true, what)
        if let queue { try Validate.queue(queue, what) }
        guard bufferSize > 0 else { throw NATSError(.invalidArgument, "\(what): bufferSize must be positive, got \(bufferSize)") }

        let (stream, continuation) = AsyncStream<NATSMessage>.makeStream(bufferingPolicy: .bufferingOldest(bufferSize))
        var subLogger = logger
        subLogger[metadataKey: "nats.subject"] = "\(subject)"
        let context = SubscriptionContext(continuation: continuation, logger: subLogger)
        let handle = self.handle
        let (scope, sub) = try state.withLock { s -> (UInt64, SubscriptionHandle) in
            guard s.phase == .open else {
                throw NATSError(.connectionClosed, "\(what): the connection is \(s.phase == .draining ? "draining" : "closed")")
            }
            let sub = try SubscriptionHandle.subscribe(handle, subject: subject, queue: queue, context: context, what)
            let id = s.nextScope
            s.nextScope += 1
            s.scopes[id] = sub
            return (id, sub)
        }
        let subscription = NATSSubscription(subject: subject, stream: stream, context: context)
        let finish = {
            self.state.withLock { _ = $0.scopes.removeValue(forKey: scope) }
            // Sends UNSUB now; the stream finishes in the on-complete callback.
            _ = natsSubscription_Unsubscribe(sub.pointer)
        }
        do {
            let result = try await body(subscription)
            finish()
            return result
        } catch {
            finish()
            throw error
        }
    }

    /// A new subject under ``inboxPrefix`` that nobody else subscribes to, for replies this
    /// connection collects itself (e.g. every answer to a discovery request).
    public func newInbox() throws -> String { try makeInbox(prefix: inboxPrefix) }

    // MARK: Request

    /// Sends a request and waits for the first reply.
    ///
    /// Throws `noResponders` as soon as the server reports that nobody subscribes to `subject`,
    /// `timeout` when no reply came within `timeout`, `connectionClosed` when the connection
    /// closes first, and `CancellationError` when the task is cancelled. Never blocks a thread.
    public func request(_ subject: String, payload: [UInt8], headers: NATSHeaders = NATSHeaders(), timeout: Duration) async throws -> NATSMessage {
        let (token, replySubject) = try inbox.reserve()
        defer { inbox.remove(token) }
        try publish(subject, payload: payload, headers: headers, reply: replySubject)
        let inbox = self.inbox
        do {
            return try await withThrowingTaskGroup(of: NATSMessage.self) { group in
                group.addTask { try await inbox.wait(token) }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    throw NATSError(.timeout, "request on '\(subject)': no reply within \(timeout)")
                }
                defer { group.cancelAll() }
                return try await group.next()!
            }
        } catch let error as NATSError where error.code == .noResponders {
            throw NATSError(.noResponders, "request on '\(subject)': no responders", status: error.status)
        }
    }

    // MARK: Drain and close

    /// Graceful shutdown: stops every subscription (the server sends no more), lets each
    /// `subscribe` body finish the messages it already received (and publish its replies),
    /// waits until all those bodies have returned, flushes, then closes the connection.
    ///
    /// New `subscribe` calls fail once draining started; publishing and requests still work
    /// until the close. If bodies are still running after `timeout`, the connection is closed
    /// anyway and `timeout` is thrown. Calling it on a draining or closed connection returns.
    public func drain(timeout: Duration = .seconds(10)) async throws {
        let deadline = ContinuousClock.now + timeout
        let count = state.withLock { s -> Int? in
            guard s.phase == .open else { return nil }
            s.phase = .draining
            for sub in s.scopes.values {
                let status = natsSubscription_Drain(sub.pointer)
                if status != NATS_OK { _ = natsSubscription_Unsubscribe(sub.pointer) }
            }
            return s.scopes.count
        }
        guard let count else { return }
        logger.info("NATS draining", metadata: ["nats.subscriptions": "\(count)"])
        while state.withLock({ !$0.scopes.isEmpty }) && ContinuousClock.now < deadline && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(5))
        }
        let remaining = state.withLock { $0.scopes.count }
        var flushError: Error?
        if remaining == 0 {
            do {
                try await flush(timeout: max(.milliseconds(100), deadline - ContinuousClock.now))
            } catch {
                flushError = error
            }
        }
        close()
        if remaining > 0 {
            throw NATSError(.timeout, "drain: \(remaining) subscription handler(s) still running after \(timeout); closed the connection anyway")
        }
        if let flushError { throw flushError }
    }

    /// Closes the connection now: subscriptions end, waiting requests fail with
    /// `connectionClosed`, buffered publishes may be lost (use ``drain(timeout:)`` to avoid that).
    public func close() {
        let wasOpen = state.withLock { s -> Bool in
            let was = s.phase != .closed
            s.phase = .closed
            return was
        }
        guard wasOpen else { return }
        natsConnection_Close(handle.pointer)
        inbox.failAll(NATSError(.connectionClosed, "the connection was closed"))
    }
}

/// Hides `user:password@` in URLs before they reach logs or errors.
func redactURL(_ url: String) -> String {
    guard let schemeEnd = url.range(of: "://"), let at = url[schemeEnd.upperBound...].lastIndex(of: "@") else { return url }
    return String(url[..<schemeEnd.upperBound]) + "***@" + String(url[url.index(after: at)...])
}

/// Owns a `natsConnection*`; destroys it exactly once.
final class ConnectionHandle: @unchecked Sendable {
    // @unchecked Sendable: nats.c connection functions are thread-safe (each takes the
    // connection's own lock); `pointer` never changes and is destroyed only in deinit, when
    // nothing else holds this object.
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
    deinit { natsConnection_Destroy(pointer) }
}

/// The context of the connection-event callbacks: logs them and counts disconnects and
/// reconnects (``NATSConnection/connectionChanges``).
final class ConnectionEvents: Sendable {
    let logger: Logger
    let changes = Locked<UInt64>(0)
    init(logger: Logger) { self.logger = logger }

    func disconnected(_ nc: OpaquePointer?) {
        var metadata: Logger.Metadata = [:]
        // nats.c also reports a disconnect when the connection is closed on purpose.
        if let nc, natsConnection_IsClosed(nc) { return }
        changes.withLock { $0 &+= 1 }
        if let nc {
            var text: UnsafePointer<CChar>?
            if natsConnection_GetLastError(nc, &text) != NATS_OK, let text {
                metadata["nats.error"] = "\(String(cString: text))"
            }
        }
        logger.warning("NATS disconnected; reconnecting", metadata: metadata)
    }

    func reconnected(_ nc: OpaquePointer?) {
        changes.withLock { $0 &+= 1 }
        let url = nc.flatMap { NATSConnection.connectedURL($0) } ?? "?"
        logger.info("NATS reconnected", metadata: ["nats.url": "\(url)"])
    }

    func asyncError(_ sub: OpaquePointer?, _ status: natsStatus) {
        var metadata: Logger.Metadata = ["nats.status": "\(String(cString: natsStatus_GetText(status)))"]
        if let sub, let subject = natsSubscription_GetSubject(sub) {
            metadata["nats.subject"] = "\(String(cString: subject))"
        }
        logger.warning("NATS asynchronous error", metadata: metadata)
    }

    func closed() {
        logger.info("NATS connection closed")
    }
}
