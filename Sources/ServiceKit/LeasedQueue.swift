import Foundation
import Metrics
import Postgres

/// A durable work queue in a PostgreSQL table, shared by every replica of a service: workers
/// claim rows with a lease, renew it while they work, and mark each row done or failed.
///
/// One implementation behind ServiceKit's outbox relay, album's MQTT pushes and media's
/// render jobs. The table is the service's own (its columns are the work); the queue needs
/// four more columns, named in ``Columns``:
///
/// | column          | type                       | meaning                                   |
/// |-----------------|----------------------------|-------------------------------------------|
/// | `claimed_until` | `timestamptz` NULL         | the lease: the row is a worker's until then |
/// | `attempts`      | `integer NOT NULL DEFAULT 0` | claims so far                            |
/// | `not_before`    | `timestamptz` NULL         | back-off: not claimed before then         |
/// | `last_error`    | `text` NULL                | what the last failed attempt said         |
///
/// * **Claim** (``claim(limit:returning:on:)``): one statement picks the first due rows in
///   ``Configuration/order`` with `FOR UPDATE SKIP LOCKED` (so claimers never wait for, nor
///   get, each other's rows), sets their lease to now + ``Configuration/lease`` and counts the
///   attempt. A row is due when it is pending (``Configuration/pending``), not leased (or its
///   lease ran out: a worker that died gives its rows back this way) and not backing off.
/// * **Token**: the lease end the claim wrote is the row's fencing token. ``renew(_:on:)``,
///   ``done(_:on:)``, ``failed(_:error:on:)`` and ``release(_:on:)`` change the row only while
///   it still holds that token, so a worker whose lease ran out and whose row another worker
///   claimed since cannot renew, complete or fail that worker's claim. A renewal writes a new
///   token (the returned ``Claimed``); the old one is stale from then on.
/// * **Done**: deletes the row or applies ``Completion/update(_:)``, and clears the lease.
/// * **Failed**: clears the lease, stores the error and backs off:
///   `not_before = now + min(cap, base · 2^attempts)` (``BackOff``).
///
/// The identifiers in ``Configuration`` are checked (an invalid one makes every operation throw
/// `.invalidArgument`); ``Configuration/order``, ``Configuration/pending`` and
/// ``Completion/update(_:)`` are SQL the service writes, never input, and go into the
/// statements as they are.
///
/// Every operation comes in two forms: on a connection the caller holds (inside its
/// transaction, e.g. to complete a job in the transaction that stores its result), and
/// `async` on the queue's pool. Times are the database's (`clock_timestamp()`), never the
/// process's, so replicas with skewed clocks agree on who holds what.
public struct LeasedQueue: Sendable {
    /// Which table, in what order, and how rows are leased, completed and retried.
    public struct Configuration: Sendable {
        /// Schema and table, lowercase identifiers (`[a-z_][a-z0-9_]*`).
        public var schema: String
        public var table: String
        /// The columns that identify a row (its primary key).
        public var key: [String]
        /// The `ORDER BY` of claims, over the table's columns (e.g. `seq`, `priority DESC, file_id`).
        /// Claimed rows come back in this order.
        public var order: String
        /// A condition a row awaiting work meets (e.g. `published_at IS NULL`); `nil`: every row
        /// is work. Rows that stop meeting it can be neither claimed nor changed through the queue.
        public var pending: String?
        /// Claim whole groups: with `["file_id"]`, a claim of one row also claims every other
        /// due row with the same `file_id` (and `limit` counts seed rows, not groups' rows).
        /// `nil`: rows are claimed one by one.
        public var group: [String]?
        /// What ``LeasedQueue/done(_:on:)`` does to a row.
        public var completion: Completion = .delete
        /// How long a claim or a renewal keeps a row from other workers.
        public var lease: Duration = .seconds(30)
        /// How long a failed row waits before it may be claimed again.
        public var backOff = BackOff()
        /// The names of the queue's columns in this table.
        public var columns = Columns()

        public init(schema: String, table: String, key: [String], order: String) {
            self.schema = schema
            self.table = table
            self.key = key
            self.order = order
        }
    }

    /// What marking a row done does.
    public enum Completion: Sendable, Hashable {
        /// Deletes the row.
        case delete
        /// Keeps the row and applies this `SET` list (e.g. `published_at = clock_timestamp()`);
        /// the lease is cleared as well. The row should stop meeting ``Configuration/pending``.
        case update(String)
    }

    /// The names of the queue's own columns (see ``LeasedQueue`` for their types).
    public struct Columns: Sendable, Hashable {
        public var leasedUntil = "claimed_until"
        public var attempts = "attempts"
        public var notBefore = "not_before"
        public var lastError = "last_error"
        public init() {}
    }

    /// Exponential back-off: after a row's `n`th claim failed it waits `min(cap, base · 2^n)`.
    public struct BackOff: Sendable, Hashable {
        public var base: Duration
        public var cap: Duration

        public init(base: Duration = .seconds(1), cap: Duration = .seconds(300)) {
            self.base = base
            self.cap = cap
        }

        /// The wait after a failure of a row claimed `attempts` times: `min(cap, base · 2^attempts)`
        /// (never negative; an absurd attempt count is the cap, not an overflow).
        public func delay(afterAttempts attempts: Int) -> Duration {
            .seconds(seconds(afterAttempts: attempts))
        }

        func seconds(afterAttempts attempts: Int) -> Double {
            let base = max(0, LeasedQueue.seconds(self.base)), cap = max(0, LeasedQueue.seconds(self.cap))
            return min(cap, base * pow(2, Double(min(max(attempts, 0), 64))))
        }
    }

    /// A claim's fencing token: the lease end the database wrote for the row. While the row
    /// still holds it, the row is the claimer's.
    public struct Token: Sendable, Hashable {
        public let leasedUntil: Date
    }

    /// One claimed row.
    public struct Claimed: Sendable {
        /// The row's ``Configuration/key`` values, in that order (as text; the server reads
        /// them as the columns' types).
        public let key: [PostgresValue]
        /// The claim's fencing token.
        public let token: Token
        /// How many times the row was claimed, this claim included.
        public let attempts: Int
        /// The columns the claim asked for (`returning`).
        public let row: PostgresRow
    }

    public let configuration: Configuration
    let postgres: PostgresPool
    let statements: Statements
    /// Set when the configuration names something that is not an identifier: every operation throws it.
    let invalid: PostgresError?

    public init(_ configuration: Configuration, postgres: PostgresPool) {
        self.configuration = configuration
        self.postgres = postgres
        self.invalid = Self.validate(configuration)
        self.statements = Statements(configuration)
    }

    // MARK: Claiming

    /// Claims up to `limit` due rows (with ``Configuration/group``: up to `limit` rows and the
    /// due rows of their groups) in one statement, in ``Configuration/order``. `returning`: the
    /// columns (or expressions, `AS` names) each ``Claimed/row`` holds, over the table's columns.
    public func claim(limit: Int, returning: String = "*", on connection: PostgresConnection) throws -> [Claimed] {
        try checkConfiguration()
        guard limit > 0 else { return [] }
        let rows = try connection.query(statements.claim(returning: returning),
                                        [.double(Self.seconds(configuration.lease)), .int(Int64(limit))])
        return try rows.map(decodeClaimed)
    }

    /// Claims the rows with these keys (each in ``Configuration/key`` order) that are pending and
    /// not leased to another worker; the others are left alone. `evenIfBackingOff`: claim a
    /// row whose back-off has not ended yet (someone wants that work now).
    public func claim(keys: [[PostgresValue]], evenIfBackingOff: Bool = false, returning: String = "*",
                      on connection: PostgresConnection) throws -> [Claimed] {
        try checkConfiguration()
        let keys = try keys.map(checkedKey)
        guard !keys.isEmpty else { return [] }
        let (sql, parameters) = statements.claim(keys: keys, evenIfBackingOff: evenIfBackingOff, returning: returning)
        let rows = try connection.query(sql, [.double(Self.seconds(configuration.lease))] + parameters)
        return try rows.map(decodeClaimed)
    }

    // MARK: Fenced changes

    /// Extends the claim by ``Configuration/lease`` from now. Returns the claim with its new
    /// token, or nil when the row is no longer this claim's (its lease ran out and another
    /// worker claimed it, it was completed, deleted or replaced): then leave it alone.
    public func renew(_ claimed: Claimed, on connection: PostgresConnection) throws -> Claimed? {
        try checkConfiguration()
        let key = try checkedKey(claimed.key)
        let rows = try connection.query(statements.renew,
                                        [.double(Self.seconds(configuration.lease)), .timestamptz(claimed.token.leasedUntil)] + key)
        guard let row = rows.first else {
            lost("renew")
            return nil
        }
        return Claimed(key: claimed.key, token: Token(leasedUntil: try row.decode(Statements.leaseAlias)),
                       attempts: claimed.attempts, row: claimed.row)
    }

    /// Marks the row done (``Configuration/completion``) if it is still this claim's.
    /// Returns false, changing nothing, when it is not.
    @discardableResult
    public func done(_ claimed: Claimed, on connection: PostgresConnection) throws -> Bool {
        try checkConfiguration()
        let changed = try !connection.query(statements.done, [.timestamptz(claimed.token.leasedUntil)] + checkedKey(claimed.key)).isEmpty
        if !changed { lost("done") }
        return changed
    }

    /// ``done(_:on:)`` for several claims in one round trip; whether each was still ours.
    @discardableResult
    public func done(_ claims: [Claimed], on connection: PostgresConnection) throws -> [Bool] {
        try fencedBatch(statements.done, claims, operation: "done", on: connection)
    }

    /// Gives the row back after a failed attempt, if it is still this claim's: the lease is
    /// cleared, `error` stored (without NUL characters, at most 2000 characters) and the row
    /// not claimed again before `now + min(cap, base · 2^attempts)`. Returns when it may be
    /// claimed again, or nil when the row was not ours any more (nothing changed).
    @discardableResult
    public func failed(_ claimed: Claimed, error: String, on connection: PostgresConnection) throws -> Date? {
        try checkConfiguration()
        let delay = configuration.backOff.seconds(afterAttempts: claimed.attempts)
        let rows = try connection.query(statements.failed, [
            .timestamptz(claimed.token.leasedUntil), .text(Self.storable(error)), .double(delay),
        ] + checkedKey(claimed.key))
        guard let row = rows.first else {
            lost("failed")
            return nil
        }
        return try row.decode(Statements.notBeforeAlias, as: Date.self)
    }

    /// Gives the row back untouched (no error, no back-off; the attempt still counts), if it is
    /// still this claim's: for claimed work the worker did not get to.
    @discardableResult
    public func release(_ claimed: Claimed, on connection: PostgresConnection) throws -> Bool {
        try release([claimed], on: connection).first ?? false
    }

    /// ``release(_:on:)`` for several claims in one round trip.
    @discardableResult
    public func release(_ claims: [Claimed], on connection: PostgresConnection) throws -> [Bool] {
        try fencedBatch(statements.release, claims, operation: "release", on: connection)
    }

    // MARK: On the pool

    /// ``claim(limit:returning:on:)`` on a connection of the pool.
    public func claim(limit: Int, returning: String = "*") async throws -> [Claimed] {
        try await postgres.withConnection { c in try self.claim(limit: limit, returning: returning, on: c) }
    }

    /// ``claim(keys:evenIfBackingOff:returning:on:)`` on a connection of the pool.
    public func claim(keys: [[PostgresValue]], evenIfBackingOff: Bool = false, returning: String = "*") async throws -> [Claimed] {
        try await postgres.withConnection { c in
            try self.claim(keys: keys, evenIfBackingOff: evenIfBackingOff, returning: returning, on: c)
        }
    }

    /// ``renew(_:on:)`` on a connection of the pool.
    public func renew(_ claimed: Claimed) async throws -> Claimed? {
        try await postgres.withConnection { c in try self.renew(claimed, on: c) }
    }

    /// ``done(_:on:)`` on a connection of the pool.
    @discardableResult
    public func done(_ claimed: Claimed) async throws -> Bool {
        try await postgres.withConnection { c in try self.done(claimed, on: c) }
    }

    /// ``done(_:on:)-([Claimed],_)`` on a connection of the pool (one transaction).
    @discardableResult
    public func done(_ claims: [Claimed]) async throws -> [Bool] {
        guard !claims.isEmpty else { return [] }
        return try await postgres.withConnection { c in try self.done(claims, on: c) }
    }

    /// ``failed(_:error:on:)`` on a connection of the pool.
    @discardableResult
    public func failed(_ claimed: Claimed, error: String) async throws -> Date? {
        try await postgres.withConnection { c in try self.failed(claimed, error: error, on: c) }
    }

    /// ``release(_:on:)-([Claimed],_)`` on a connection of the pool (one transaction).
    @discardableResult
    public func release(_ claims: [Claimed]) async throws -> [Bool] {
        guard !claims.isEmpty else { return [] }
        return try await postgres.withConnection { c in try self.release(claims, on: c) }
    }

    // MARK: Internals

    /// A fenced statement (`$1` token, then the key) for each claim, pipelined.
    private func fencedBatch(_ sql: String, _ claims: [Claimed], operation: String,
                             on connection: PostgresConnection) throws -> [Bool] {
        try checkConfiguration()
        guard !claims.isEmpty else { return [] }
        let statements = try claims.map { claimed -> (sql: String, parameters: [PostgresValue]) in
            let key = try checkedKey(claimed.key)
            return (sql: sql, parameters: [.timestamptz(claimed.token.leasedUntil)] + key)
        }
        let results = try connection.pipeline(statements).map { !$0.isEmpty }
        for changed in results where !changed { lost(operation) }
        return results
    }

    private func decodeClaimed(_ row: PostgresRow) throws -> Claimed {
        let key = try (0..<configuration.key.count).map { index -> PostgresValue in
            .text(try row.decode(Statements.keyAlias(index), as: String.self))
        }
        return Claimed(key: key, token: Token(leasedUntil: try row.decode(Statements.leaseAlias)),
                       attempts: try row.decode(Statements.attemptsAlias, as: Int.self), row: row)
    }

    private func checkConfiguration() throws {
        if let invalid { throw invalid }
    }

    private func checkedKey(_ key: [PostgresValue]) throws -> [PostgresValue] {
        guard key.count == configuration.key.count else {
            throw PostgresError(code: .invalidArgument,
                                message: "a key of \(configuration.schema).\(configuration.table) has \(configuration.key.count) values, not \(key.count)")
        }
        return key
    }

    private func lost(_ operation: String) {
        Counter(label: "servicekit_queue_lost_claims_total",
                dimensions: [("table", "\(configuration.schema).\(configuration.table)"), ("operation", operation)]).increment()
    }

    static func seconds(_ duration: Duration) -> Double {
        let parts = duration.components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }

    /// Text PostgreSQL can store: no NUL characters, at most 2000 characters.
    static func storable(_ error: String) -> String {
        String(error.replacingOccurrences(of: "\u{0}", with: "").prefix(2000))
    }

    static func validate(_ configuration: Configuration) -> PostgresError? {
        let columns = configuration.columns
        let names = [configuration.schema, configuration.table, columns.leasedUntil, columns.attempts, columns.notBefore,
                     columns.lastError] + configuration.key + (configuration.group ?? [])
        for name in names where !isIdentifier(name) {
            return PostgresError(code: .invalidArgument,
                                 message: "leased queue \(configuration.schema).\(configuration.table): \"\(name)\" is not a lowercase identifier")
        }
        if configuration.key.isEmpty || configuration.group?.isEmpty == true {
            return PostgresError(code: .invalidArgument,
                                 message: "leased queue \(configuration.schema).\(configuration.table) needs key (and group) columns")
        }
        if configuration.order.trimmingCharacters(in: .whitespaces).isEmpty {
            return PostgresError(code: .invalidArgument,
                                 message: "leased queue \(configuration.schema).\(configuration.table) needs an order")
        }
        return nil
    }

    static func isIdentifier(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        return !bytes.isEmpty && bytes.count <= 63 && bytes.enumerated().allSatisfy { index, byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || byte == UInt8(ascii: "_")
                || (index > 0 && byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
        }
    }
}

extension LeasedQueue {
    /// The queue's SQL, built once from the configuration. Parameters: the lease and back-off
    /// as `float8` seconds, the token as `timestamptz`, key values as untyped text (the
    /// server reads them as the key columns' types).
    struct Statements: Sendable {
        static let leaseAlias = "servicekit_queue_leased_until"
        static let attemptsAlias = "servicekit_queue_attempts"
        static let notBeforeAlias = "servicekit_queue_not_before"
        static func keyAlias(_ index: Int) -> String { "servicekit_queue_key_\(index)" }
        static func seedAlias(_ index: Int) -> String { "servicekit_queue_seed_\(index)" }

        let table: String
        let key: [String]
        let group: [String]?
        let order: String
        let lease: String, attempts: String, notBefore: String, lastError: String
        let pending: String
        let renew: String
        let done: String
        let failed: String
        let release: String

        init(_ configuration: Configuration) {
            let table = "\(configuration.schema).\(configuration.table)"
            let key = configuration.key
            let columns = configuration.columns
            let lease = columns.leasedUntil, notBefore = columns.notBefore
            let pending = configuration.pending.map { "(\($0))" } ?? "true"
            self.table = table
            self.key = key
            self.group = configuration.group
            self.order = configuration.order
            self.lease = lease
            self.attempts = columns.attempts
            self.notBefore = notBefore
            self.lastError = columns.lastError
            self.pending = pending
            // Fenced: `$1` is the token, the key follows.
            let fence = Self.keyCondition(key, from: 2) + " AND \(lease) = $1 AND \(pending)"
            // `$1` lease seconds, `$2` token, key from `$3`.
            self.renew = """
                UPDATE \(table) SET \(lease) = clock_timestamp() + make_interval(secs => $1)
                WHERE \(Self.keyCondition(key, from: 3)) AND \(lease) = $2 AND \(pending)
                RETURNING \(lease) AS \(Self.leaseAlias)
                """
            switch configuration.completion {
            case .delete:
                self.done = "DELETE FROM \(table) WHERE \(fence) RETURNING 1"
            case .update(let set):
                self.done = "UPDATE \(table) SET \(set), \(lease) = NULL WHERE \(fence) RETURNING 1"
            }
            // `$1` token, `$2` error, `$3` back-off seconds, key from `$4`.
            self.failed = """
                UPDATE \(table) SET \(lease) = NULL, \(columns.lastError) = $2,
                    \(notBefore) = clock_timestamp() + make_interval(secs => $3)
                WHERE \(Self.keyCondition(key, from: 4)) AND \(lease) = $1 AND \(pending)
                RETURNING \(notBefore) AS \(Self.notBeforeAlias)
                """
            self.release = "UPDATE \(table) SET \(lease) = NULL WHERE \(fence) RETURNING 1"
        }

        /// `k1 = $n AND k2 = $n+1 …`
        static func keyCondition(_ key: [String], from first: Int) -> String {
            key.enumerated().map { "\($0.element) = $\(first + $0.offset)" }.joined(separator: " AND ")
        }

        /// Not leased (or the lease ran out) and, unless `backOff` is false, not backing off.
        func free(backOff: Bool = true) -> String {
            "(\(lease) IS NULL OR \(lease) < clock_timestamp())"
                + (backOff ? " AND (\(notBefore) IS NULL OR \(notBefore) <= clock_timestamp())" : "")
        }

        /// What every claim returns after the caller's columns.
        var claimedColumns: String {
            (key.enumerated().map { "\($0.element)::text AS \(Self.keyAlias($0.offset))" }
                + ["\(lease) AS \(Self.leaseAlias)", "\(attempts) AS \(Self.attemptsAlias)"]).joined(separator: ", ")
        }

        /// `$1` lease seconds, `$2` the number of seed rows. The seeds are locked, skipping rows
        /// other claimers hold; with groups, so are the due rows of their groups, skipping rows
        /// another claimer holds as well (never waiting for one: two claimers that seeded in
        /// the same group at the same instant share it rather than deadlock). Then the locked
        /// rows are updated.
        func claim(returning: String) -> String {
            let seedColumns = (group ?? key).enumerated().map { "queue_seed.\($0.element) AS \(Self.seedAlias($0.offset))" }
            let seedAliases = (group ?? key).indices.map(Self.seedAlias)
            // With groups, a seed is the first due row of its group (in key order), so claimers
            // racing for a group contend for that one row and the loser moves on to another group.
            let firstOfGroup = group.map { group in
                let keys = (key.map { "queue_earlier.\($0)" }.joined(separator: ", "), key.map { "queue_seed.\($0)" }.joined(separator: ", "))
                return """
                     AND NOT EXISTS (
                        SELECT 1 FROM \(table) AS queue_earlier
                        WHERE \(group.map { "queue_earlier.\($0) = queue_seed.\($0)" }.joined(separator: " AND "))
                            AND (\(keys.0)) < (\(keys.1)) AND \(free()) AND \(pending))
                    """
            } ?? ""
            var ctes = """
                WITH seeds AS (
                    SELECT \(seedColumns.joined(separator: ", ")) FROM \(table) AS queue_seed
                    WHERE \(free()) AND \(pending)\(firstOfGroup)
                    ORDER BY \(order) LIMIT $2 FOR UPDATE SKIP LOCKED
                )
                """
            var source = "seeds"
            if let group {
                ctes += """
                    , members AS (
                        SELECT \(key.enumerated().map { "\($0.element) AS \(Self.seedAlias($0.offset))" }.joined(separator: ", "))
                        FROM \(table)
                        WHERE (\(group.joined(separator: ", "))) IN (SELECT \(seedAliases.joined(separator: ", ")) FROM seeds)
                            AND \(free()) AND \(pending)
                        FOR UPDATE SKIP LOCKED
                    )
                    """
                source = "members"
            }
            let join = key.enumerated().map { "queue_row.\($0.element) = queue_locked.\(Self.seedAlias($0.offset))" }
                .joined(separator: " AND ")
            return ctes + """
                , claimed AS (
                    UPDATE \(table) AS queue_row SET \(lease) = clock_timestamp() + make_interval(secs => $1), \(attempts) = \(attempts) + 1
                    FROM \(source) AS queue_locked
                    WHERE \(join) AND \(free()) AND \(pending)
                    RETURNING queue_row.*
                )
                SELECT \(returning), \(claimedColumns) FROM claimed ORDER BY \(order)
                """
        }

        /// `$1` lease seconds, then the keys' values from `$2`.
        func claim(keys: [[PostgresValue]], evenIfBackingOff: Bool, returning: String) -> (String, [PostgresValue]) {
            var parameters: [PostgresValue] = []
            var conditions: [String] = []
            for value in keys {
                conditions.append("(" + Self.keyCondition(key, from: 2 + parameters.count) + ")")
                parameters += value
            }
            let sql = """
                WITH claimed AS (
                    UPDATE \(table) SET \(lease) = clock_timestamp() + make_interval(secs => $1), \(attempts) = \(attempts) + 1
                    WHERE (\(conditions.joined(separator: " OR "))) AND \(free(backOff: !evenIfBackingOff)) AND \(pending)
                    RETURNING *
                )
                SELECT \(returning), \(claimedColumns) FROM claimed ORDER BY \(order)
                """
            return (sql, parameters)
        }
    }
}
