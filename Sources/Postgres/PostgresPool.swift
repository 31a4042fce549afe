import Foundation
import Logging
import Threads

/// How a ``PostgresPool`` connects.
public struct PostgresConfiguration: Sendable {
    /// A libpq conninfo string or URI, e.g. `host=127.0.0.1 port=5432 user=postgres dbname=framecast`.
    /// Settings in it (`connect_timeout`, `application_name`) win over the fields below.
    public var connInfo: String
    /// Connections, and threads running callers' closures, at most. Default 4.
    public var maxConnections: Int
    /// How long establishing one connection may take (libpq `connect_timeout`, whole
    /// seconds, rounded up; libpq waits at least 2 s). Default 5 s.
    public var connectTimeout: Duration
    /// `application_name` shown in `pg_stat_activity`. Default `framecast`.
    public var applicationName: String
    /// The role to log in as, instead of the conninfo's `user` (which this wins over; libpq
    /// finds its password in `PGPASSFILE` as usual). Default nil: the conninfo's.
    /// `framecast all` gives each service its own role this way, on one server and database.
    public var user: String?

    public init(connInfo: String, maxConnections: Int = 4, user: String? = nil) {
        self.connInfo = connInfo
        self.maxConnections = maxConnections
        self.connectTimeout = .seconds(5)
        self.applicationName = "framecast"
        self.user = user
    }
}

/// A fixed pool of libpq connections, each used by one thread at a time.
///
/// Callers hand a synchronous closure to ``withConnection(_:)``; it runs on one of the
/// pool's `maxConnections` threads (named `postgres-N`) with a connection of its own, while
/// the async caller suspends. More callers than threads wait in a FIFO queue.
///
/// * Connections are opened lazily, on a thread's first use; a failed connect throws
///   `.connectionFailed` to that caller and is retried by the next.
/// * A connection that broke (`.connectionClosed` errors, server restart) is dropped after the
///   closure returns and replaced on the next use. Nothing is retried automatically: the
///   caller decides whether its work may run twice.
/// * A transaction the closure left open is rolled back before the connection is reused.
/// * ``close()`` stops accepting work, waits for in-flight closures, and closes every
///   connection; later calls throw `.poolClosed`.
public final class PostgresPool: Sendable {
    public let configuration: PostgresConfiguration
    let logger: Logger
    private let threads: BlockingPool
    /// Idle connections hold non-Sendable `PostgresConnection`s: each is handed to one pool
    /// thread at a time, and a connection taken out is not reachable through `state` until it
    /// is put back.
    private let state: Locked<State>

    private struct State {
        /// One slot per thread: `nil` until that slot's connection is opened (or after it broke).
        var idle: [PostgresConnection?]
        var closed = false
        var inFlight = 0
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
        var closeTask: Task<Void, Never>?
    }

    /// Creates the pool and its threads; connects lazily.
    public init(configuration: PostgresConfiguration, logger: Logger) {
        precondition(configuration.maxConnections > 0, "a PostgresPool needs at least one connection")
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "postgres.application"] = "\(configuration.applicationName)"
        self.logger = logger
        self.threads = BlockingPool(name: "postgres", threadCount: configuration.maxConnections)
        self.state = Locked(State(idle: Array(repeating: nil, count: configuration.maxConnections)))
    }

    deinit {
        let wasClosed = state.withLock { $0.closed }
        if !wasClosed {
            logger.debug("PostgresPool released without close(); closing its connections now")
            threads.shutdown()
            // The idle connections are closed (PQfinish) when `state` is released.
        }
    }

    /// Runs `body` on a pool thread with one connection and returns its result.
    /// The connection must not escape `body`.
    public func withConnection<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> T) async throws -> T {
        try enter()
        defer { leave() }
        do {
            return try await threads.run { [self] in try self.runOnThread(body) }
        } catch is BlockingPool.ShutDown {
            throw PostgresError(code: .poolClosed, message: "the PostgreSQL pool is closed")
        }
    }

    /// Runs `body` in a transaction: BEGIN; body; COMMIT — ROLLBACK when it throws (the error
    /// is rethrown). See ``PostgresConnection/transaction(_:)``.
    public func withTransaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> T) async throws -> T {
        try await withConnection { connection in try connection.transaction(body) }
    }

    /// Runs one statement on some connection and returns its rows.
    public func query(_ sql: String, _ parameters: [PostgresValue] = []) async throws -> [PostgresRow] {
        try await withConnection { try $0.query(sql, parameters) }
    }

    /// Runs one statement on some connection and returns the number of rows it affected.
    @discardableResult
    public func execute(_ sql: String, _ parameters: [PostgresValue] = []) async throws -> Int {
        try await withConnection { try $0.execute(sql, parameters) }
    }

    /// Stops accepting work, waits for in-flight closures, closes all connections and the
    /// pool's threads. Idempotent; every caller returns once the pool is fully closed.
    public func close() async {
        let task = state.withLock { s -> Task<Void, Never> in
            if let task = s.closeTask { return task }
            s.closed = true
            let task = Task { await self.shutDown() }
            s.closeTask = task
            return task
        }
        await task.value
    }

    // MARK: Internals

    private func enter() throws(PostgresError) {
        let accepted = state.withLock { s -> Bool in
            if s.closed { return false }
            s.inFlight += 1
            return true
        }
        if !accepted { throw PostgresError(code: .poolClosed, message: "the PostgreSQL pool is closed") }
    }

    private func leave() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.inFlight -= 1
            guard s.closed, s.inFlight == 0 else { return [] }
            defer { s.drainWaiters = [] }
            return s.drainWaiters
        }
        waiters.forEach { $0.resume() }
    }

    private func shutDown() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let drained = state.withLock { s -> Bool in
                if s.inFlight == 0 { return true }
                s.drainWaiters.append(continuation)
                return false
            }
            if drained { continuation.resume() }
        }
        // Nothing runs any more: close the connections on a pool thread (PQfinish talks to the server).
        _ = try? await threads.run { [self] in self.closeIdleConnections() }
        threads.shutdown()
        logger.debug("postgres pool closed")
    }

    private func closeIdleConnections() {
        let connections = state.withLock { s -> [PostgresConnection?] in
            defer { s.idle = [] }
            return s.idle
        }
        for connection in connections { connection?.close() }
    }

    /// On a pool thread: take a connection slot, connect if needed, run `body`, give it back.
    private func runOnThread<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        // There are as many slots as threads, and a thread holds at most one: never empty while
        // the pool is open (closing empties it). Empty: this one call fails, not the process.
        let (taken, closed) = state.withLock { s in (s.idle.popLast(), s.closed) }
        guard let slot = taken else {
            throw PostgresError(code: closed ? .poolClosed : .connectionFailed,
                                message: closed ? "the pool is closed" : "no free connection slot on a pool thread")
        }
        let connection: PostgresConnection
        if let slot {
            connection = slot
        } else {
            do {
                connection = try PostgresConnection(configuration: configuration, logger: logger)
            } catch {
                logger.debug("postgres connect failed", metadata: ["error": "\(error)"])
                state.withLock { $0.idle.append(nil) }
                throw error
            }
        }
        defer {
            connection.resetAfterUse()
            if connection.isUsable {
                state.withLock { $0.idle.append(connection) }
            } else {
                logger.debug("dropping a broken postgres connection; the next use reconnects")
                connection.close()
                state.withLock { $0.idle.append(nil) }
            }
        }
        return try body(connection)
    }
}
