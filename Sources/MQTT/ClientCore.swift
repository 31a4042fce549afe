internal import CMosquitto
import Foundation
import Logging

/// What an acknowledgement carried.
enum Ack: Sendable {
    case done
    case granted([Int32])
}

/// One operation waiting for its acknowledgement.
final class Waiter: @unchecked Sendable {
    // @unchecked Sendable: `continuation`, `cancelled` and `mid` are only touched with the
    // owning ClientCore's lock held.
    var continuation: CheckedContinuation<Ack, Error>?
    var cancelled = false
    var mid: Int32?
}

/// The state an ``MQTTClient`` shares with libmosquitto's network thread; the target of every
/// callback (the `obj` pointer of the handle).
final class ClientCore: @unchecked Sendable {
    // @unchecked Sendable: every `var` below is read and written only with `lock` held;
    // `configuration` and `logger` are immutable.
    enum Phase { case idle, connecting, connected, reconnecting, disconnecting }

    let configuration: MQTTConfiguration
    let logger: Logger
    private let lock = NSLock()
    private var phase = Phase.idle
    private var connectWaiter: CheckedContinuation<Void, Error>?
    private var connectOutcome: Result<Void, MQTTError>?
    private var waiters: [Int32: Waiter] = [:]
    private var subscriptions: [String: MQTTQoS] = [:]
    private var messageSinks: [UInt64: AsyncStream<MQTTMessage>.Continuation] = [:]
    private var eventSinks: [UInt64: AsyncStream<MQTTConnectionEvent>.Continuation] = [:]
    private var nextSinkID: UInt64 = 0
    private var dropped = 0

    init(configuration: MQTTConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    static func from(_ obj: UnsafeMutableRawPointer?) -> ClientCore {
        Unmanaged<ClientCore>.fromOpaque(obj!).takeUnretainedValue()
    }

    var isConnected: Bool { lock.withLock { phase == .connected } }
    var droppedCount: Int { lock.withLock { dropped } }

    // MARK: Connect / disconnect bookkeeping (called by MQTTClient)

    func beginConnect() throws {
        try lock.withLock {
            guard phase == .idle else {
                throw MQTTError(.invalidArgument, "connect() called while the client is \(phase)", context: configuration.context)
            }
            phase = .connecting
            connectOutcome = nil
        }
    }

    /// A reconnect attempt failed before reaching the broker (the loop tries again later).
    func onReconnectFailed(_ error: MQTTError) {
        lock.withLock {
            if phase == .connecting {
                if connectOutcome == nil { connectOutcome = .failure(error) }
                connectWaiter.take()?.resume(throwing: error)
            }
        }
        logger.debug("reconnect attempt failed", metadata: ["mqtt.error": "\(error)"])
    }

    func waitForConnack() async throws {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
                lock.withLock {
                    if let outcome = connectOutcome {
                        continuation.resume(with: outcome)
                    } else if Task.isCancelled {
                        continuation.resume(throwing: CancellationError())
                    } else {
                        connectWaiter = continuation
                    }
                }
            }
        } onCancel: {
            lock.withLock {
                connectWaiter.take()?.resume(throwing: CancellationError())
            }
        }
    }

    func connectFailed() {
        lock.withLock {
            phase = .idle
            connectWaiter.take()?.resume(throwing: MQTTError(.closed, "connect failed", context: configuration.context))
        }
    }

    /// Returns false when there is nothing to disconnect.
    func beginDisconnect() -> Bool {
        lock.withLock {
            guard phase == .connected || phase == .reconnecting else { return false }
            phase = .disconnecting
            return true
        }
    }

    func finishDisconnect() {
        let ended = lock.withLock {
            phase = .idle
            failWaiters(MQTTError(.closed, "the client was disconnected", context: configuration.context))
            for sink in eventSinks.values { sink.yield(.disconnected(reason: nil)) }
            return takeSinks()
        }
        ended()
    }

    /// Called from deinit: nothing may wait any more.
    func finishAll() {
        let ended = lock.withLock {
            connectWaiter.take()?.resume(throwing: MQTTError(.closed, "the client was released", context: configuration.context))
            failWaiters(MQTTError(.closed, "the client was released", context: configuration.context))
            return takeSinks()
        }
        ended()
    }

    /// Removes every sink; the returned closure finishes them and must be called without the
    /// lock held (finishing runs `onTermination`, which takes the lock).
    private func takeSinks() -> () -> Void {
        let messages = Array(messageSinks.values)
        let events = Array(eventSinks.values)
        messageSinks = [:]
        eventSinks = [:]
        return {
            for sink in messages { sink.finish() }
            for sink in events { sink.finish() }
        }
    }

    private func failWaiters(_ error: MQTTError) {
        let all = waiters
        waiters = [:]
        for waiter in all.values { waiter.continuation.take()?.resume(throwing: error) }
    }

    // MARK: Requests that wait for an ack

    /// Issues a request (with the lock held, so its ack cannot be handled before the waiter is
    /// registered) and waits for the ack with that message id.
    func request(timeout: Duration, _ what: String, issue: @escaping @Sendable () throws -> Int32) async throws -> Ack {
        let waiter = Waiter()
        let context = configuration.context
        return try await withDeadline(timeout, "\(what): waiting for the broker's acknowledgement", context: context) { [self] in
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Ack, Error>) in
                    lock.lock()
                    defer { lock.unlock() }
                    if waiter.cancelled {
                        continuation.resume(throwing: CancellationError())
                        return
                    }
                    guard phase == .connected else {
                        continuation.resume(throwing: MQTTError(.notConnected, "\(what): the client is not connected (\(phase))", context: context))
                        return
                    }
                    do {
                        let mid = try issue()
                        waiter.mid = mid
                        waiter.continuation = continuation
                        waiters[mid] = waiter
                    } catch {
                        continuation.resume(throwing: error)
                    }
                }
            } onCancel: {
                lock.withLock {
                    waiter.cancelled = true
                    if let mid = waiter.mid, waiters[mid] === waiter { waiters[mid] = nil }
                    waiter.continuation.take()?.resume(throwing: CancellationError())
                }
            }
        }
    }

    func remember(_ filter: String, qos: MQTTQoS) { lock.withLock { subscriptions[filter] = qos } }
    func forget(_ filter: String) { lock.withLock { subscriptions[filter] = nil } }

    // MARK: Sinks

    func addMessageSink(_ continuation: AsyncStream<MQTTMessage>.Continuation) -> UInt64 {
        lock.withLock {
            nextSinkID += 1
            messageSinks[nextSinkID] = continuation
            return nextSinkID
        }
    }

    func removeMessageSink(_ id: UInt64) {
        lock.withLock { messageSinks.removeValue(forKey: id) }?.finish()
    }

    func makeEventStream() -> AsyncStream<MQTTConnectionEvent> {
        let (stream, continuation) = AsyncStream<MQTTConnectionEvent>.makeStream(bufferingPolicy: .bufferingNewest(64))
        let id = lock.withLock {
            nextSinkID += 1
            eventSinks[nextSinkID] = continuation
            return nextSinkID
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.lock.withLock { self?.eventSinks.removeValue(forKey: id) }
        }
        return stream
    }

    // MARK: Callbacks (libmosquitto's network thread)

    func onConnect(_ mosq: OpaquePointer?, rc: Int32, sessionPresent: Bool) {
        var resubscribe: [(String, MQTTQoS)] = []
        lock.withLock {
            guard rc == 0 else {
                let error = MQTTError.refused(rc, version: configuration.protocolVersion, context: configuration.context)
                if phase == .connecting {
                    connectOutcome = .failure(error)
                    connectWaiter.take()?.resume(throwing: error)
                } else {
                    logger.warning("reconnect refused by the broker", metadata: ["mqtt.reason": "\(error.message)"])
                }
                return
            }
            switch phase {
            case .connecting:
                phase = .connected
                connectOutcome = .success(())
                connectWaiter.take()?.resume()
            case .reconnecting:
                phase = .connected
                if !sessionPresent { resubscribe = subscriptions.map { ($0.key, $0.value) } }
                logger.info("reconnected", metadata: ["mqtt.session_present": "\(sessionPresent)"])
            case .idle, .connected, .disconnecting:
                return
            }
            for sink in eventSinks.values { sink.yield(.connected(sessionPresent: sessionPresent)) }
        }
        // Inside a callback libmosquitto only queues these; the network thread sends them next.
        for (filter, qos) in resubscribe {
            let rc = mosquitto_subscribe(mosq, nil, filter, Int32(qos.rawValue))
            if rc != mosqSuccess {
                logger.warning("resubscribe failed", metadata: ["mqtt.filter": "\(filter)", "mqtt.error": "\(MQTTError.status(rc, "subscribe"))"])
            }
        }
    }

    func onDisconnect(rc: Int32, savedErrno: Int32) {
        lock.withLock {
            switch phase {
            case .connecting:
                let error = rc == mosqSuccess
                    ? MQTTError(.connectionLost, "the connection closed before CONNACK", context: configuration.context)
                    : MQTTError.status(rc, "connect to \(configuration.host):\(configuration.port)", savedErrno: savedErrno, context: configuration.context)
                if connectOutcome == nil { connectOutcome = .failure(error) }
                if case .failure(let first) = connectOutcome { connectWaiter.take()?.resume(throwing: first) }
            case .connected:
                phase = .reconnecting
                let error = rc == mosqSuccess
                    ? MQTTError(.connectionLost, "the broker closed the connection", context: configuration.context)
                    : MQTTError.status(rc, "connection", savedErrno: savedErrno, context: configuration.context)
                logger.info("connection lost; reconnecting", metadata: ["mqtt.error": "\(error)"])
                failWaiters(MQTTError(.connectionLost, "the connection dropped before the acknowledgement: \(error.message)",
                                      context: configuration.context, status: error.status))
                for sink in eventSinks.values { sink.yield(.disconnected(reason: error)) }
            case .reconnecting, .idle, .disconnecting:
                break
            }
        }
    }

    func complete(mid: Int32, _ ack: Ack) {
        let continuation = lock.withLock { waiters.removeValue(forKey: mid)?.continuation.take() }
        continuation?.resume(returning: ack)
    }

    func deliver(_ message: MQTTMessage) {
        lock.withLock {
            for sink in messageSinks.values {
                if case .dropped = sink.yield(message) {
                    dropped += 1
                    if dropped == 1 || dropped % 1000 == 0 {
                        logger.warning("a message reader is behind; messages dropped", metadata: ["mqtt.dropped": "\(dropped)"])
                    }
                }
            }
        }
    }
}
