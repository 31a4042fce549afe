import Logging
import Threads
internal import CNats

/// The messages of one ``NATSConnection/subscribe(_:queue:bufferSize:_:)`` scope.
///
/// Iterate it from one task at a time (`for await message in subscription`). The sequence
/// ends when the subscription ends (scope left, drain finished, connection closed).
public struct NATSSubscription: AsyncSequence, Sendable {
    public typealias Element = NATSMessage

    /// The subject (possibly with wildcards) this subscription listens on.
    public let subject: String
    let stream: AsyncStream<NATSMessage>
    let context: SubscriptionContext

    /// Messages dropped so far because the buffer was full (`bufferSize` waiting messages).
    public var droppedMessages: Int { context.dropped.withLock { $0 } }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncStream<NATSMessage>.Iterator
        public mutating func next() async -> NATSMessage? { await base.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: stream.makeAsyncIterator()) }
}

/// What a subscription's C callbacks need: where to put messages. Retained for nats.c from
/// subscribe until the on-complete callback.
final class SubscriptionContext: Sendable {
    let continuation: AsyncStream<NATSMessage>.Continuation
    let logger: Logger
    let dropped = Locked(0)

    init(continuation: AsyncStream<NATSMessage>.Continuation, logger: Logger) {
        self.continuation = continuation
        self.logger = logger
    }

    func deliver(_ message: NATSMessage) {
        if case .dropped = continuation.yield(message) {
            let count = dropped.withLock { n -> Int in n += 1; return n }
            if count == 1 || count % 1000 == 0 {
                logger.warning("NATS subscription buffer full: dropping new messages (slow consumer)",
                               metadata: ["nats.dropped": "\(count)"])
            }
        }
    }
}

/// Owns a `natsSubscription*`; destroys it exactly once.
final class SubscriptionHandle: @unchecked Sendable {
    // @unchecked Sendable: nats.c subscription functions are thread-safe (each takes the
    // subscription's lock); `pointer` never changes and is destroyed only in deinit. The
    // connection handle is kept so the connection outlives its subscriptions.
    let pointer: OpaquePointer
    let connection: ConnectionHandle

    init(_ pointer: OpaquePointer, connection: ConnectionHandle) {
        self.pointer = pointer
        self.connection = connection
    }

    deinit { natsSubscription_Destroy(pointer) }

    /// An asynchronous subscription whose messages go to `context`.
    static func subscribe(_ connection: ConnectionHandle, subject: String, queue: String?,
                          context: SubscriptionContext, _ what: String) throws -> SubscriptionHandle {
        let closure = Unmanaged.passRetained(context).toOpaque()
        var sub: OpaquePointer?
        let status: natsStatus
        if let queue {
            status = natsConnection_QueueSubscribe(&sub, connection.pointer, subject, queue, subscriptionMessage, closure)
        } else {
            status = natsConnection_Subscribe(&sub, connection.pointer, subject, subscriptionMessage, closure)
        }
        guard status == NATS_OK, let sub else {
            // No subscription exists, so no callback can run: release now.
            Unmanaged<SubscriptionContext>.fromOpaque(closure).release()
            context.continuation.finish()
            throw NATSError.from(status, what)
        }
        let handle = SubscriptionHandle(sub, connection: connection)
        let completion = natsSubscription_SetOnCompleteCB(sub, subscriptionComplete, closure)
        guard completion == NATS_OK else {
            // The subscription closed before the completion callback was attached (the
            // connection closed concurrently): nats.c cannot tell us when its handler ran for the
            // last time, so the context is deliberately leaked rather than freed too early.
            let error = NATSError.from(completion, "\(what): set completion callback")
            _ = natsSubscription_Unsubscribe(sub)
            context.continuation.finish()
            throw error
        }
        return handle
    }
}

/// Message callback of subscriptions: copy out, free the C message, hand it to Swift.
private let subscriptionMessage: natsMsgHandler = { _, _, msg, closure in
    guard let msg else { return }
    defer { natsMsg_Destroy(msg) }
    guard let closure else { return }
    let context = Unmanaged<SubscriptionContext>.fromOpaque(closure).takeUnretainedValue()
    context.deliver(makeMessage(msg))
}

/// nats.c's guarantee that the message callback will not run again: end the stream, release.
private let subscriptionComplete: natsOnCompleteCB = { closure in
    guard let closure else { return }
    Unmanaged<SubscriptionContext>.fromOpaque(closure).takeRetainedValue().continuation.finish()
}
