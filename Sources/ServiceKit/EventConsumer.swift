import Foundation
import Logging
import Metrics
import NATS
import Postgres
import ServiceLifecycle
import Threads
import Wire

/// The JetStream stream every event goes to (DESIGN.md "Wire contract").
public enum EventStream {
    /// Creates or updates the `EVENTS` stream (`file.>`, `album.>`, `media.>`, `device.>`).
    public static func ensure(on jetStream: JetStream, replicas: Int = 1) async throws {
        try await jetStream.addOrUpdateStream(StreamConfiguration(
            name: Subjects.streamName, subjects: Subjects.streamSubjects, replicas: replicas))
    }
}

/// One event subject a service consumes, with its handler.
public struct EventHandler: Sendable {
    public let subject: String
    let handle: @Sendable ([UInt8], EventDelivery) async throws -> Void

    /// Handles events of type `E` published on `E.subject`.
    public init<E: WireEvent>(_ type: E.Type, _ handler: @escaping @Sendable (E, EventDelivery) async throws -> Void) {
        self.subject = E.subject
        self.handle = { bytes, delivery in
            let event: E
            do {
                event = try E(wireBytes: bytes)
            } catch {
                throw PoisonEvent(reason: "malformed \(E.self): \(error)")
            }
            try await handler(event, delivery)
        }
    }
}

/// An event that can never be handled (undecodable, no id): terminated, not redelivered.
struct PoisonEvent: Error, CustomStringConvertible {
    let reason: String
    var description: String { reason }
}

/// One delivery of an event to a handler. The handler makes its state change with
/// ``transaction(_:)``, which also records the event id as processed in the same
/// transaction, so a redelivered event changes nothing.
public final class EventDelivery: Sendable {
    public let eventID: String
    public let subject: String
    /// 1 on the first delivery.
    public let deliveryCount: Int
    public let logger: Logger
    let consumer: String
    let schema: String
    let postgres: PostgresPool
    let recorded = Locked(false)

    init(eventID: String, subject: String, deliveryCount: Int, logger: Logger, consumer: String, schema: String,
         postgres: PostgresPool) {
        self.eventID = eventID
        self.subject = subject
        self.deliveryCount = deliveryCount
        self.logger = logger
        self.consumer = consumer
        self.schema = schema
        self.postgres = postgres
    }

    /// Runs `body` in a transaction that also marks this event processed. Returns nil, without
    /// running `body`, when the event was already processed (a redelivery).
    @discardableResult
    public func transaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> T) async throws -> T? {
        let (schema, consumer, eventID, subject) = (self.schema, self.consumer, self.eventID, self.subject)
        let result: T? = try await postgres.withTransaction { connection in
            let inserted = try connection.execute(
                "INSERT INTO \(schema).processed_events (consumer, event_id, subject) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                [.text(consumer), .text(eventID), .text(subject)])
            guard inserted == 1 else { return nil }
            return try body(connection)
        }
        recorded.withLock { $0 = true }
        return result
    }

    func alreadyProcessed() async throws -> Bool {
        let (schema, consumer, eventID) = (self.schema, self.consumer, self.eventID)
        return try await postgres.withConnection { connection in
            try !connection.query("SELECT 1 FROM \(schema).processed_events WHERE consumer = $1 AND event_id = $2",
                                  [.text(consumer), .text(eventID)]).isEmpty
        }
    }
}

/// Consumes events from the `EVENTS` stream with one durable pull consumer per
/// (service, subject), shared by every replica of the service.
///
/// For each message: skip it if this consumer already processed its id; otherwise run the
/// handler (which commits through ``EventDelivery/transaction(_:)``), then ack. A failed
/// handler is nak'ed with a growing delay; after `maxDeliveries` the event is terminated and
/// logged. On graceful shutdown no new batch is fetched, in-flight handlers finish and are
/// acked, and fetched messages not yet started are nak'ed so another replica gets them at once.
public final class EventConsumerService: Service, Sendable {
    public struct Configuration: Sendable {
        public var batchSize = 8
        public var fetchWait: Duration = .seconds(1)
        public var ackWait: Duration = .seconds(30)
        public var maxDeliveries = 10
        /// Delay before redelivery after the n-th failure: base × 2^(n-1), capped.
        public var retryBase: Duration = .milliseconds(500)
        public var retryCap: Duration = .seconds(60)
        public init() {}
    }

    public let service: String
    let schema: String
    let handlers: [EventHandler]
    let jetStream: JetStream
    let postgres: PostgresPool
    let configuration: Configuration
    let logger: Logger

    public init(service: String, schema: String, handlers: [EventHandler], jetStream: JetStream, postgres: PostgresPool,
                configuration: Configuration = .init(), logger: Logger) {
        self.service = service
        self.schema = schema
        self.handlers = handlers
        self.jetStream = jetStream
        self.postgres = postgres
        self.configuration = configuration
        self.logger = logger
    }

    /// The durable consumer name for a subject: `<service>_<subject with . as _>`.
    public static func durableName(service: String, subject: String) -> String {
        "\(service)_\(subject.replacingOccurrences(of: ".", with: "_"))"
    }

    public func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            for handler in handlers {
                group.addTask { try await self.consume(handler) }
            }
        }
    }

    private func consume(_ handler: EventHandler) async throws {
        let durable = Self.durableName(service: service, subject: handler.subject)
        let consumer = try await jetStream.pullConsumer(
            stream: Subjects.streamName, durable: durable,
            configuration: ConsumerConfiguration(filterSubject: handler.subject, ackWait: configuration.ackWait))
        defer { consumer.close() }
        logger.info("consuming events", metadata: ["messaging.destination": "\(handler.subject)", "messaging.consumer": "\(durable)"])
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let batch: [JetStreamMessage]
            do {
                batch = try await consumer.fetch(batch: configuration.batchSize, expires: configuration.fetchWait)
            } catch {
                logger.warning("fetching events failed", metadata: ["messaging.consumer": "\(durable)", "error": "\(error)"])
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) }
                continue
            }
            for (index, message) in batch.enumerated() {
                if Task.isShuttingDownGracefully || Task.isCancelled {
                    for unstarted in batch[index...] { try? await unstarted.nak(delay: nil) }
                    break
                }
                await process(message, handler, consumer: durable)
            }
        }
        logger.info("stopped consuming events", metadata: ["messaging.consumer": "\(durable)"])
    }

    func process(_ message: JetStreamMessage, _ handler: EventHandler, consumer: String) async {
        let deliveries = message.deliveryCount
        var logger = self.logger
        logger[metadataKey: "messaging.destination"] = "\(message.subject)"
        logger[metadataKey: "messaging.consumer"] = "\(consumer)"
        guard let eventID = message.headers["Nats-Msg-Id"], !eventID.isEmpty else {
            logger.error("event without Nats-Msg-Id dropped")
            try? await message.term()
            count(handler, "dropped")
            return
        }
        logger[metadataKey: "event.id"] = "\(eventID)"
        let delivery = EventDelivery(eventID: eventID, subject: message.subject, deliveryCount: deliveries,
                                     logger: logger, consumer: consumer, schema: schema, postgres: postgres)
        do {
            if try await delivery.alreadyProcessed() {
                logger.debug("event already processed; acknowledging again")
                try await message.ack()
                count(handler, "duplicate")
                return
            }
            // Long handlers tell JetStream they are still working, so it does not redeliver.
            try await withThrowingTaskGroup(of: Void.self) { group in
                let ackWait = configuration.ackWait
                group.addTask {
                    while true {
                        try await Task.sleep(for: ackWait / 3)
                        try? await message.inProgress()
                    }
                }
                defer { group.cancelAll() }
                try await handler.handle(message.payload, delivery)
                group.cancelAll()
            }
            if !delivery.recorded.current {
                _ = try await delivery.transaction { _ in }
            }
            try await message.ack()
            count(handler, "ok")
        } catch let poison as PoisonEvent {
            logger.error("event cannot be handled; terminated", metadata: ["error": "\(poison)"])
            try? await message.term()
            count(handler, "poison")
        } catch {
            if deliveries >= configuration.maxDeliveries {
                logger.error("event failed \(deliveries) times; giving up", metadata: ["error": "\(error)"])
                try? await message.term()
                count(handler, "failed")
            } else {
                let delay = retryDelay(after: deliveries)
                logger.warning("event handler failed; will retry", metadata: [
                    "error": "\(error)", "retry.delay": "\(delay)", "delivery.count": "\(deliveries)"])
                try? await message.nak(delay: delay)
                count(handler, "retry")
            }
        }
    }

    func retryDelay(after deliveries: Int) -> Duration {
        let exponent = min(max(deliveries - 1, 0), 16)
        let delay = configuration.retryBase * (1 << exponent)
        return min(delay, configuration.retryCap)
    }

    private func count(_ handler: EventHandler, _ outcome: String) {
        Counter(label: "messaging_process_total",
                dimensions: [("service", service), ("subject", handler.subject), ("outcome", outcome)]).increment()
    }
}
