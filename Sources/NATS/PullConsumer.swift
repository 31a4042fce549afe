import Foundation
import Logging
import Threads
internal import CNats

/// A binding to a durable JetStream pull consumer.
///
/// `fetch` runs nats.c's blocking fetch on this consumer's own thread (one `BlockingPool`
/// thread per consumer), so concurrent fetches on one consumer run one after the other and a
/// long fetch never holds a cooperative thread. A fetch that started cannot be interrupted: it
/// returns when `batch` messages arrived or `expires` passed.
public final class PullConsumer: Sendable {
    public let jetStream: JetStream
    public let stream: String
    public let durable: String
    let subscription: SubscriptionHandle
    private let thread: BlockingPool
    private let closed = Locked(false)

    init(jetStream: JetStream, stream: String, durable: String, subscription: SubscriptionHandle) {
        self.jetStream = jetStream
        self.stream = stream
        self.durable = durable
        self.subscription = subscription
        self.thread = BlockingPool(name: "nats-fetch-\(durable.prefix(16))", threadCount: 1)
    }

    deinit { close() }

    /// Up to `batch` messages; fewer (possibly none: `[]`) when `expires` passes first.
    /// Each message must be acked, nak'ed or terminated; otherwise it is redelivered after the
    /// consumer's ack wait.
    public func fetch(batch: Int, expires: Duration) async throws -> [JetStreamMessage] {
        let what = "fetch from consumer '\(durable)' on stream '\(stream)'"
        guard batch > 0 else { throw NATSError(.invalidArgument, "\(what): batch must be positive, got \(batch)") }
        guard expires > .zero else { throw NATSError(.invalidArgument, "\(what): expires must be positive") }
        if closed.withLock({ $0 }) { throw NATSError(.connectionClosed, "\(what): the consumer is closed") }
        let sub = subscription
        let ms = max(1, expires.natsMilliseconds)
        let fetched: [FetchedMessage]
        do {
            fetched = try await thread.run { () -> [FetchedMessage] in
                var list = natsMsgList()
                var error = jsErrCode(0)
                let status = natsSubscription_Fetch(&list, sub.pointer, Int32(clamping: batch), ms, &error)
                if status == NATS_TIMEOUT { return [] }
                try NATSError.check(status, what, jsErrorCode: error)
                defer { natsMsgList_Destroy(&list) }
                var result: [FetchedMessage] = []
                result.reserveCapacity(Int(list.Count))
                for i in 0..<Int(list.Count) {
                    guard let msg = list.Msgs[i] else { continue }
                    result.append(FetchedMessage(msg))
                }
                return result
            }
        } catch is BlockingPool.ShutDown {
            throw NATSError(.connectionClosed, "\(what): the consumer is closed")
        }
        return fetched.map { JetStreamMessage($0, jetStream: jetStream) }
    }

    /// Stops fetching (a fetch in progress ends early) and unsubscribes, but KEEPS the durable
    /// consumer and its position on the server: binding again continues where this one stopped.
    public func close() {
        let first = closed.withLock { c -> Bool in
            defer { c = true }
            return !c
        }
        guard first else { return }
        _ = natsSubscription_Unsubscribe(subscription.pointer)
        thread.shutdown()
    }
}

/// What a fetched C message holds, copied out before the message is freed.
struct FetchedMessage: Sendable {
    let message: NATSMessage
    let ackSubject: String?
    let streamSequence: UInt64
    let consumerSequence: UInt64
    let deliveryCount: UInt64
    let pending: UInt64
    let timestampNanoseconds: Int64

    init(_ msg: OpaquePointer) {
        message = makeMessage(msg)
        ackSubject = message.reply
        var meta: UnsafeMutablePointer<jsMsgMetaData>?
        if natsMsg_GetMetaData(&meta, msg) == NATS_OK, let meta {
            streamSequence = meta.pointee.Sequence.Stream
            consumerSequence = meta.pointee.Sequence.Consumer
            deliveryCount = meta.pointee.NumDelivered
            pending = meta.pointee.NumPending
            timestampNanoseconds = meta.pointee.Timestamp
            jsMsgMetaData_Destroy(meta)
        } else {
            streamSequence = 0
            consumerSequence = 0
            deliveryCount = 0
            pending = 0
            timestampNanoseconds = 0
        }
    }
}

/// A message fetched from a pull consumer, with its delivery metadata and acknowledgements.
///
/// Every acknowledgement is sent as a request on the message's ack subject and waits for the
/// server's confirmation (the protocol of nats.c's `natsMsg_AckSync`), without blocking a thread.
public struct JetStreamMessage: Sendable {
    public let subject: String
    public let payload: [UInt8]
    public let headers: NATSHeaders
    /// 1 on first delivery, 2 on the first redelivery…
    public let deliveryCount: Int
    public let streamSequence: UInt64
    public let consumerSequence: UInt64
    /// Messages left in the consumer after this one, when it was delivered.
    public let pending: UInt64
    /// When the stream stored the message.
    public let timestamp: Date
    let ackSubject: String?
    let jetStream: JetStream

    init(_ fetched: FetchedMessage, jetStream: JetStream) {
        subject = fetched.message.subject
        payload = fetched.message.payload
        headers = fetched.message.headers
        deliveryCount = Int(fetched.deliveryCount)
        streamSequence = fetched.streamSequence
        consumerSequence = fetched.consumerSequence
        pending = fetched.pending
        timestamp = Date(timeIntervalSince1970: Double(fetched.timestampNanoseconds) / 1e9)
        ackSubject = fetched.ackSubject
        self.jetStream = jetStream
    }

    /// The message is done: it is never delivered again. Returns once the server recorded it.
    public func ack() async throws { try await acknowledge("+ACK", "ack") }

    /// Redeliver the message (after `delay`, or at once).
    public func nak(delay: Duration? = nil) async throws {
        if let delay {
            try await acknowledge("-NAK {\"delay\": \(max(0, delay.natsNanoseconds))}", "nak")
        } else {
            try await acknowledge("-NAK", "nak")
        }
    }

    /// Never deliver the message again, without processing it (poison message).
    public func term() async throws { try await acknowledge("+TERM", "term") }

    /// Still working on it: restarts the ack wait timer.
    public func inProgress() async throws { try await acknowledge("+WPI", "in-progress") }

    private func acknowledge(_ body: String, _ what: String) async throws {
        let description = "\(what) of stream sequence \(streamSequence) on '\(subject)'"
        guard let ackSubject else { throw NATSError(.invalidArgument, "\(description): the message has no ack subject") }
        do {
            _ = try await jetStream.connection.request(ackSubject, payload: Array(body.utf8), timeout: jetStream.timeout)
        } catch let error as NATSError where error.code == .noResponders {
            throw NATSError(.notFound, "\(description): the consumer no longer exists")
        } catch let error as NATSError where error.code == .timeout {
            throw NATSError(.timeout, "\(description): no confirmation within \(jetStream.timeout)")
        }
    }
}
