import Foundation
import Logging
import Metrics
import NATS
import Postgres
import ServiceLifecycle
import Threads
import Wire

/// The transactional outbox: an event is written to `<schema>.outbox` in the same transaction
/// as the state change it announces, and ``OutboxRelay`` publishes it to JetStream afterwards.
/// So an event is never lost between a commit and its publish, and never published for a
/// change that rolled back.
public enum Outbox {
    /// Tables every service schema holds for events: the outbox and the processed-event log.
    /// Versions 1–99 of each schema belong to ServiceKit; services number theirs from 100.
    public static func migrations(schema: String) -> [Migration] {
        [
            Migration(version: 1, name: "servicekit_outbox", sql: """
                CREATE TABLE \(schema).outbox (
                    seq           bigserial PRIMARY KEY,
                    event_id      text NOT NULL UNIQUE,
                    subject       text NOT NULL,
                    payload       bytea NOT NULL,
                    created_at    timestamptz NOT NULL DEFAULT now(),
                    claimed_until timestamptz,
                    attempts      integer NOT NULL DEFAULT 0,
                    last_error    text,
                    published_at  timestamptz
                );
                CREATE INDEX outbox_unpublished ON \(schema).outbox (seq) WHERE published_at IS NULL;
                CREATE TABLE \(schema).processed_events (
                    consumer     text NOT NULL,
                    event_id     text NOT NULL,
                    subject      text NOT NULL,
                    processed_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (consumer, event_id)
                );
                """),
            // The relay's rows are a LeasedQueue: an event whose publish failed backs off.
            Migration(version: 2, name: "servicekit_outbox_back_off", sql: """
                ALTER TABLE \(schema).outbox ADD COLUMN not_before timestamptz;
                """),
        ]
    }

    /// The outbox as a ``LeasedQueue``: unpublished rows in `seq` order; done = published
    /// (the row stays until ``OutboxRelay/Configuration/retention`` has passed).
    public static func queue(schema: String, lease: Duration, backOff: LeasedQueue.BackOff,
                             postgres: PostgresPool) -> LeasedQueue {
        var configuration = LeasedQueue.Configuration(schema: schema, table: "outbox", key: ["seq"], order: "seq")
        configuration.pending = "published_at IS NULL"
        configuration.completion = .update("published_at = clock_timestamp()")
        configuration.lease = lease
        configuration.backOff = backOff
        return LeasedQueue(configuration, postgres: postgres)
    }

    /// Writes `payload` as event `eventID` on `subject` into the outbox, inside the caller's
    /// transaction. Enqueuing the same event id twice is a no-op (returns false).
    @discardableResult
    public static func enqueue(subject: String, eventID: String, payload: [UInt8], schema: String,
                               on connection: PostgresConnection) throws -> Bool {
        try connection.execute(
            "INSERT INTO \(schema).outbox (event_id, subject, payload) VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING",
            [.text(eventID), .text(subject), .bytea(payload)]) == 1
    }

    /// Writes a wire event into the outbox inside the caller's transaction.
    @discardableResult
    public static func enqueue<E: WireEvent>(_ event: E, schema: String, on connection: PostgresConnection) throws -> Bool {
        try enqueue(subject: E.subject, eventID: event.eventID, payload: event.wireBytes(), schema: schema, on: connection)
    }
}

/// Publishes outbox rows to JetStream in order, with `Nats-Msg-Id` = event id, and marks a
/// row published only after JetStream acknowledged it.
///
/// Several replicas may run a relay on the same schema: the outbox is a ``LeasedQueue``, so
/// each claims a batch of rows with a lease and they share the work; if a relay dies after
/// publishing and before marking, the row is claimed again when the lease ends and
/// republished, and JetStream drops the copy as a duplicate (within its duplicate window; past
/// it, consumers' processed-event log still makes the second delivery a no-op). A batch is
/// published in `seq` order and stops at the first failure: that row backs off
/// (``Configuration/backOff``) and the rest of the batch is given back for the next round.
/// Order holds within a batch, not across batches (relays run side by side, and a row backing
/// off is overtaken by later ones): consumers must not rely on it.
public final class OutboxRelay: Service, Sendable {
    public struct Configuration: Sendable {
        /// Rows claimed per round.
        public var batchSize = 100
        /// How long a claim protects rows from other relays.
        public var lease: Duration = .seconds(30)
        /// How long an event whose publish failed waits before it is tried again, after its
        /// `n`th attempt: `min(cap, base · 2^n)`.
        public var backOff = LeasedQueue.BackOff(base: .milliseconds(100), cap: .seconds(10))
        /// How often the outbox is polled when nothing woke the relay.
        public var pollInterval: Duration = .milliseconds(200)
        /// Published rows older than this are deleted.
        public var retention: Duration = .seconds(7 * 24 * 3600)
        public init() {}
    }

    let schema: String
    let postgres: PostgresPool
    let jetStream: JetStream
    let configuration: Configuration
    let logger: Logger
    let queue: LeasedQueue
    let wakeSignal = WakeSignal()

    public init(schema: String, postgres: PostgresPool, jetStream: JetStream,
                configuration: Configuration = .init(), logger: Logger) {
        self.schema = schema
        self.postgres = postgres
        self.jetStream = jetStream
        self.configuration = configuration
        self.logger = logger
        self.queue = Outbox.queue(schema: schema, lease: configuration.lease, backOff: configuration.backOff, postgres: postgres)
    }

    /// Tells the relay new rows were committed, so it publishes without waiting for the next poll.
    public func wake() { wakeSignal.signal() }

    public func run() async throws {
        logger.info("outbox relay started", metadata: ["db.schema": "\(schema)"])
        var lastPurge = ContinuousClock.now
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let published: Int
            do {
                published = try await relayOnce()
            } catch {
                logger.warning("outbox relay round failed", metadata: ["db.schema": "\(schema)", "error": "\(error)"])
                published = 0
            }
            if ContinuousClock.now - lastPurge > .seconds(600) {
                lastPurge = .now
                try? await purge()
            }
            if published == 0 {
                // Sleep until woken, the poll interval passes, or shutdown begins.
                let interval = configuration.pollInterval
                let signal = wakeSignal
                _ = try? await cancelWhenGracefulShutdown { await signal.wait(upTo: interval) }
            }
        }
        logger.info("outbox relay stopped", metadata: ["db.schema": "\(schema)"])
    }

    /// Claims one batch, publishes it in order, marks what JetStream acknowledged.
    /// Returns the number of rows published.
    @discardableResult
    public func relayOnce() async throws -> Int {
        let claims = try await queue.claim(limit: configuration.batchSize, returning: "event_id, subject, payload")
        guard !claims.isEmpty else { return 0 }

        var published: [LeasedQueue.Claimed] = []
        var failure: (claimed: LeasedQueue.Claimed, eventID: String, subject: String, error: String)?
        for claimed in claims {
            do {
                let eventID: String = try claimed.row.decode("event_id"), subject: String = try claimed.row.decode("subject")
                let ack = try await jetStream.publish(subject, payload: try claimed.row.decode("payload"), messageID: eventID)
                if ack.duplicate {
                    logger.debug("event was already in the stream", metadata: ["event.id": "\(eventID)"])
                }
                published.append(claimed)
            } catch {
                failure = (claimed, (try? claimed.row.decode("event_id", as: String.self)) ?? "",
                           (try? claimed.row.decode("subject", as: String.self)) ?? "", "\(error)")
                break  // keep the order: the rest waits for the next round
            }
        }
        let (queue, done) = (self.queue, published)
        let untried = Array(claims.dropFirst(done.count + (failure == nil ? 0 : 1)))
        let failed = failure.map { ($0.claimed, $0.error) }
        let (marked, retryAt) = try await postgres.withTransaction { connection -> (Int, Date?) in
            let marked = try queue.done(done, on: connection).filter { $0 }.count
            let retryAt = try failed.flatMap { try queue.failed($0.0, error: $0.1, on: connection) }
            try queue.release(untried, on: connection)
            return (marked, retryAt)
        }
        if marked < done.count {
            // Our lease ran out and another relay claimed the rows: it publishes them again
            // and JetStream drops the copies.
            logger.debug("published events were claimed by another relay before they were marked",
                         metadata: ["db.schema": "\(schema)", "events": "\(done.count - marked)"])
        }
        Counter(label: "outbox_published_total", dimensions: [("schema", schema)]).increment(by: done.count)
        if let failure {
            logger.warning("publishing an event failed; will retry", metadata: [
                "event.id": "\(failure.eventID)", "messaging.destination": "\(failure.subject)", "error": "\(failure.error)",
                "attempts": "\(failure.claimed.attempts)", "retry.at": "\(retryAt?.description ?? "-")",
            ])
        }
        return done.count
    }

    /// The number of events committed but not yet published.
    public func backlog() async throws -> Int {
        let schema = self.schema
        return try await postgres.withConnection { connection in
            let rows = try connection.query("SELECT count(*)::bigint AS n FROM \(schema).outbox WHERE published_at IS NULL")
            return Int(try rows.first?.decode("n", as: Int64.self) ?? 0)
        }
    }

    private func purge() async throws {
        let schema = self.schema
        let seconds = Double(configuration.retention.components.seconds)
        _ = try await postgres.withConnection { connection in
            try connection.execute(
                "DELETE FROM \(schema).outbox WHERE published_at < now() - make_interval(secs => $1)", [.double(seconds)])
        }
    }
}
