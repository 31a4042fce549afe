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
        ]
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
/// Several replicas may run a relay on the same schema: each claims a batch of rows with a
/// lease (`FOR UPDATE SKIP LOCKED`), so they share the work; if a relay dies after publishing
/// and before marking, the row is claimed again when the lease ends and republished, and
/// JetStream drops the copy as a duplicate (within its duplicate window; past it, consumers'
/// processed-event log still makes the second delivery a no-op).
public final class OutboxRelay: Service, Sendable {
    public struct Configuration: Sendable {
        /// Rows claimed per round.
        public var batchSize = 100
        /// How long a claim protects rows from other relays.
        public var lease: Duration = .seconds(30)
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
    let wakeSignal = WakeSignal()

    public init(schema: String, postgres: PostgresPool, jetStream: JetStream,
                configuration: Configuration = .init(), logger: Logger) {
        self.schema = schema
        self.postgres = postgres
        self.jetStream = jetStream
        self.configuration = configuration
        self.logger = logger
    }

    /// Tells the relay new rows were committed, so it publishes without waiting for the next poll.
    public func wake() { wakeSignal.signal() }

    struct Row: Sendable {
        let seq: Int64
        let eventID: String
        let subject: String
        let payload: [UInt8]
    }

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
        let schema = self.schema
        let leaseSeconds = Double(configuration.lease.components.seconds)
        let batch = configuration.batchSize
        let rows: [Row] = try await postgres.withTransaction { connection in
            try connection.query("""
                UPDATE \(schema).outbox SET claimed_until = now() + make_interval(secs => $1), attempts = attempts + 1
                WHERE seq IN (
                    SELECT seq FROM \(schema).outbox
                    WHERE published_at IS NULL AND (claimed_until IS NULL OR claimed_until < now())
                    ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED)
                RETURNING seq, event_id, subject, payload
                """, [.double(leaseSeconds), .int(Int64(batch))]
            ).map { row in
                Row(seq: try row.decode("seq"), eventID: try row.decode("event_id"),
                    subject: try row.decode("subject"), payload: try row.decode("payload"))
            }.sorted { $0.seq < $1.seq }
        }
        guard !rows.isEmpty else { return 0 }

        var done: [Int64] = []
        var failure: (Row, Error)?
        for row in rows {
            do {
                let ack = try await jetStream.publish(row.subject, payload: row.payload, messageID: row.eventID)
                if ack.duplicate {
                    logger.debug("event was already in the stream", metadata: ["event.id": "\(row.eventID)"])
                }
                done.append(row.seq)
            } catch {
                failure = (row, error)
                break  // keep the order: the rest waits for the next round
            }
        }
        let publishedSeqs = done
        let published = done.map(String.init).joined(separator: ",")
        let failed = failure.map { (String($0.0.seq), "\($0.1)") }
        let unclaim = rows.map(\.seq).filter { !done.contains($0) }.map(String.init).joined(separator: ",")
        try await postgres.withTransaction { connection in
            if !publishedSeqs.isEmpty {
                _ = try connection.execute(
                    "UPDATE \(schema).outbox SET published_at = now(), claimed_until = NULL WHERE seq = ANY(string_to_array($1, ',')::bigint[])",
                    [.text(published)])
            }
            if !unclaim.isEmpty {
                _ = try connection.execute(
                    "UPDATE \(schema).outbox SET claimed_until = NULL WHERE seq = ANY(string_to_array($1, ',')::bigint[])",
                    [.text(unclaim)])
            }
            if let failed {
                _ = try connection.execute("UPDATE \(schema).outbox SET last_error = $2 WHERE seq = $1::bigint",
                                           [.text(failed.0), .text(failed.1)])
            }
        }
        Counter(label: "outbox_published_total", dimensions: [("schema", schema)]).increment(by: done.count)
        if let failure {
            logger.warning("publishing an event failed; will retry", metadata: [
                "event.id": "\(failure.0.eventID)", "messaging.destination": "\(failure.0.subject)", "error": "\(failure.1)",
            ])
        }
        return done.count
    }

    /// The number of events committed but not yet published.
    public func backlog() async throws -> Int {
        let schema = self.schema
        return try await postgres.withConnection { connection in
            let rows = try connection.query("SELECT count(*)::bigint AS n FROM \(schema).outbox WHERE published_at IS NULL")
            return Int(try rows[0].decode("n", as: Int64.self))
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
