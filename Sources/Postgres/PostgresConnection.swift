// Postgres: a safe Swift wrapper over libpq 15.
//
// Threading rules (libpq's and this wrapper's):
// * A `PGconn` is single-threaded and every call on it blocks (network round trips). So a
//   `PostgresConnection` is not Sendable: it is only ever used inside a `PostgresPool`
//   closure, on the pool thread that runs that closure, and must not escape it.
// * All libpq calls run on the pool's own threads (`Threads.BlockingPool`, one thread per
//   connection, named `postgres-N`), never on Swift's cooperative pool: the async caller of
//   `withConnection` suspends while its synchronous closure runs there.
// * libpq itself is thread-safe across connections (`PQisthreadsafe`), so different pool
//   threads use different connections at the same time.
// * The notice processor is called by libpq on the thread that runs the connection's
//   current call; it only logs.
internal import CLibPQ
import Foundation
import Logging

/// One libpq connection. Use it only inside the closure a ``PostgresPool`` hands it to.
///
/// Every statement is sent with its parameters separately (`PQexecParams`): write `$1`,
/// `$2`... in the SQL and pass ``PostgresValue``s; values are never put into the SQL text.
/// Results come back in text format and are decoded with ``PostgresRow/decode(_:as:)-(String,_)``.
///
/// Each connection is set up with `client_encoding=UTF8`, `DateStyle=ISO`, `TimeZone=UTC` and
/// `bytea_output=hex`; the decoders rely on those. Connections are reused by later callers, so
/// do not change session settings: use `SET LOCAL` inside a transaction instead. Results are
/// read into memory whole (no cursors/streaming): page large queries with LIMIT.
/// Work that was submitted is not cancellable: the closure runs to completion.
public final class PostgresConnection {
    private var handle: OpaquePointer?
    let logger: Logger
    /// Statements prepared on this connection: name → SQL.
    private var prepared: [String: String] = [:]
    /// Set when the connection is in a state it cannot be trusted in; the pool drops it.
    private(set) var isBroken = false
    /// Given to libpq as the notice processor's context; outlives `handle` (freed first).
    private let noticeSink: NoticeSink

    init(configuration: PostgresConfiguration, logger: Logger) throws(PostgresError) {
        self.logger = logger
        self.noticeSink = NoticeSink(logger: logger)
        let timeout = configuration.connectTimeout.components
        let timeoutSeconds = max(1, timeout.seconds + (timeout.attoseconds > 0 ? 1 : 0))
        // Earlier keywords are overridden by what the conninfo string (dbname, expanded) says;
        // later ones override it: the configured user, and client_encoding because the
        // decoders need UTF-8.
        var keywords = ["connect_timeout", "application_name", "dbname"]
        var values = [String(timeoutSeconds), configuration.applicationName, configuration.connInfo]
        if let user = configuration.user {
            keywords.append("user")
            values.append(user)
        }
        keywords.append("client_encoding")
        values.append("UTF8")
        let conn = withCStringArray(keywords) { k in
            withCStringArray(values) { v in PQconnectdbParams(k, v, 1) }
        }
        guard let conn else {
            throw PostgresError(code: .connectionFailed, message: "connecting to PostgreSQL failed: libpq could not allocate a connection")
        }
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = Self.trimmed(PQerrorMessage(conn))
            PQfinish(conn)
            throw PostgresError(code: .connectionFailed, message: "connecting to PostgreSQL failed: \(message)")
        }
        self.handle = conn
        PQsetNoticeProcessor(conn, postgresNoticeProcessor, Unmanaged.passUnretained(noticeSink).toOpaque())
        do throws(PostgresError) {
            try executeScript("SET DateStyle = 'ISO, MDY'; SET TimeZone = 'UTC'; SET bytea_output = 'hex'")
        } catch {
            close()
            throw error.wrapped(.connectionFailed, "setting up the session failed")
        }
        logger.debug("postgres connection opened", metadata: ["postgres.backend_pid": "\(PQbackendPID(conn))"])
    }

    deinit { close() }

    /// Closes the libpq connection (once); later calls throw `.connectionClosed`.
    func close() {
        if let handle {
            PQfinish(handle)
            self.handle = nil
        }
    }

    /// Whether the connection can be given to the next caller.
    var isUsable: Bool {
        guard let handle, !isBroken else { return false }
        return PQstatus(handle) == CONNECTION_OK
    }

    /// Whether a transaction block is open (BEGIN without COMMIT/ROLLBACK yet), failed or not.
    public var isInTransaction: Bool {
        guard let handle else { return false }
        let status = PQtransactionStatus(handle)
        return status == PQTRANS_INTRANS || status == PQTRANS_INERROR
    }

    /// The server process id serving this connection (`pg_backend_pid()`).
    public var backendPID: Int32 { handle.map { PQbackendPID($0) } ?? 0 }

    // MARK: Statements

    /// Runs one statement and returns its rows (none for statements that return none).
    public func query(_ sql: String, _ parameters: [PostgresValue] = []) throws -> [PostgresRow] {
        try runParams(sql, parameters, what: "query").rows
    }

    /// Runs one statement and returns the number of rows it affected (0 when it reports none).
    @discardableResult
    public func execute(_ sql: String, _ parameters: [PostgresValue] = []) throws -> Int {
        try runParams(sql, parameters, what: "statement").affected
    }

    /// Runs SQL that may hold several statements separated by `;` (simple-query protocol,
    /// no parameters): for migrations and setup scripts. Stops at the first failing statement.
    /// Inside a transaction all of it is part of that transaction.
    public func executeScript(_ sql: String) throws(PostgresError) {
        try checkSQL(sql)
        let h = try liveHandle()
        let result = sql.withCString { PQexec(h, $0) }
        _ = try consume(result, what: "script")
    }

    /// Takes a transaction-scoped advisory lock on `name` (hashed to 64 bits by the server):
    /// every transaction locking the same name runs one at a time; released at commit/rollback.
    public func advisoryTransactionLock(_ name: String) throws {
        _ = try query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", [.text(name)])
    }

    /// Prepares `sql` under `name` on this connection. Idempotent: preparing the same name
    /// with the same SQL again does nothing; the same name with other SQL throws
    /// `.invalidArgument`. Parameter types are inferred by the server.
    public func prepare(_ name: String, _ sql: String) throws {
        guard !name.isEmpty, !name.utf8.contains(0) else {
            throw PostgresError(code: .invalidArgument, message: "a prepared statement needs a non-empty name without NUL")
        }
        if let existing = prepared[name] {
            if existing == sql { return }
            throw PostgresError(
                code: .invalidArgument,
                message: "statement \"\(name)\" is already prepared on this connection with different SQL")
        }
        try checkSQL(sql)
        let h = try liveHandle()
        let result = name.withCString { n in sql.withCString { s in PQprepare(h, n, s, 0, nil) } }
        _ = try consume(result, what: "prepare \"\(name)\"")
        prepared[name] = sql
    }

    /// Runs the statement prepared under `name` (see ``prepare(_:_:)``) and returns its rows.
    public func queryPrepared(_ name: String, _ parameters: [PostgresValue]) throws -> [PostgresRow] {
        try runPrepared(name, parameters).rows
    }

    /// Runs the statement prepared under `name` and returns the number of rows it affected.
    @discardableResult
    public func executePrepared(_ name: String, _ parameters: [PostgresValue]) throws -> Int {
        try runPrepared(name, parameters).affected
    }

    /// Runs `body` between BEGIN and COMMIT; ROLLBACK and rethrow when it throws.
    ///
    /// When a statement inside failed but `body` caught that error, the server has already
    /// aborted the transaction: COMMIT then rolls back, and this throws a `.query` error
    /// saying so (sqlState 25P02) rather than pretend the work was committed.
    /// Transactions do not nest: calling this inside an open transaction throws `.invalidArgument`
    /// (use `SAVEPOINT` statements for that).
    public func transaction<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        if isInTransaction {
            throw PostgresError(code: .invalidArgument, message: "a transaction is already open on this connection; transactions do not nest")
        }
        try executeScript("BEGIN")
        let value: T
        do {
            value = try body(self)
        } catch {
            rollbackAfterError()
            throw error
        }
        let h = try liveHandle()
        let result = PQexec(h, "COMMIT")
        defer { PQclear(result) }
        try check(result, what: "COMMIT")
        if let status = PQcmdStatus(result), String(cString: status) == "ROLLBACK" {
            throw PostgresError(
                code: .query,
                message: "COMMIT rolled the transaction back: a statement in it failed and its error was caught",
                sqlState: "25P02")
        }
        return value
    }

    /// Sends all statements in libpq pipeline mode (one round trip) and returns each one's rows.
    ///
    /// The statements run in order, within one implicit transaction when no transaction is
    /// open (inside ``transaction(_:)`` they are part of it): if one fails, those before it are
    /// rolled back, those after it are skipped, and the error names the failing statement
    /// (``PostgresError/statementIndex``, 0-based).
    public func pipeline(_ statements: [(sql: String, parameters: [PostgresValue])]) throws -> [[PostgresRow]] {
        if statements.isEmpty { return [] }
        // Encode everything first: a bad parameter throws before anything is sent.
        var encoded: [[EncodedParameter]] = []
        encoded.reserveCapacity(statements.count)
        for (i, statement) in statements.enumerated() {
            do throws(PostgresError) {
                try checkSQL(statement.sql)
                encoded.append(try Self.encode(statement.parameters))
            } catch {
                throw error.wrapped(error.code, "pipeline statement \(i) of \(statements.count)", statementIndex: i)
            }
        }
        let h = try liveHandle()
        guard PQenterPipelineMode(h) == 1 else {
            throw connectionError(h, what: "entering pipeline mode")
        }
        var sent = true
        for (i, statement) in statements.enumerated() {
            let ok = statement.sql.withCString { sql in
                withParameters(encoded[i]) { n, types, values, lengths, formats in
                    PQsendQueryParams(h, sql, n, types, values, lengths, formats, 0)
                }
            }
            if ok != 1 {
                sent = false
                break
            }
        }
        guard sent, PQpipelineSync(h) == 1 else {
            let error = connectionError(h, what: "sending a pipeline")
            isBroken = true  // results of what was sent are pending: do not reuse
            throw error
        }

        var results: [[PostgresRow]] = []
        results.reserveCapacity(statements.count)
        var firstError: PostgresError?
        for i in 0..<statements.count {
            guard let result = PQgetResult(h) else {
                isBroken = true
                throw connectionError(h, what: "reading pipeline result \(i)")
            }
            var rows: [PostgresRow] = []
            let status = PQresultStatus(result)
            if status == PGRES_PIPELINE_ABORTED {
                // Skipped because an earlier statement failed; that error is reported.
            } else if status == PGRES_FATAL_ERROR || status == PGRES_BAD_RESPONSE || status == PGRES_NONFATAL_ERROR {
                if firstError == nil {
                    firstError = serverError(result, what: "pipeline statement \(i) of \(statements.count)", statementIndex: i)
                }
            } else if status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK || status == PGRES_EMPTY_QUERY {
                rows = Self.rows(of: result)
            } else {
                isBroken = true
                PQclear(result)
                throw PostgresError(code: .unsupported, message: "pipeline statement \(i) returned \(Self.statusName(status)), which is not supported")
            }
            PQclear(result)
            // Each statement's results end with NULL.
            while let extra = PQgetResult(h) { PQclear(extra) }
            results.append(rows)
        }
        guard let sync = PQgetResult(h) else {
            isBroken = true
            throw connectionError(h, what: "reading the pipeline's sync")
        }
        let syncStatus = PQresultStatus(sync)
        PQclear(sync)
        guard syncStatus == PGRES_PIPELINE_SYNC, PQexitPipelineMode(h) == 1 else {
            isBroken = true
            throw connectionError(h, what: "ending pipeline mode")
        }
        if let firstError {
            if PQstatus(h) != CONNECTION_OK { isBroken = true }
            throw firstError
        }
        return results
    }

    // MARK: Pool support

    /// Makes the connection fit for the next caller: rolls back a transaction the caller left
    /// open; marks it broken if that fails or libpq is mid-command.
    func resetAfterUse() {
        guard let handle, isUsable else { return }
        switch PQtransactionStatus(handle) {
        case PQTRANS_IDLE:
            return
        case PQTRANS_INTRANS, PQTRANS_INERROR:
            logger.debug("postgres connection returned inside a transaction; rolling it back")
            rollbackAfterError()
        default:
            isBroken = true
        }
    }

    // MARK: Internals

    private func rollbackAfterError() {
        guard let handle, PQstatus(handle) == CONNECTION_OK else {
            isBroken = true
            return
        }
        let result = PQexec(handle, "ROLLBACK")
        if PQresultStatus(result) != PGRES_COMMAND_OK {
            logger.debug("postgres ROLLBACK failed; dropping the connection")
            isBroken = true
        }
        PQclear(result)
    }

    private func liveHandle() throws(PostgresError) -> OpaquePointer {
        guard let handle else {
            throw PostgresError(code: .connectionClosed, message: "the connection is closed")
        }
        return handle
    }

    private func checkSQL(_ sql: String) throws(PostgresError) {
        if sql.utf8.contains(0) {
            throw PostgresError(code: .invalidArgument, message: "SQL text contains a NUL character")
        }
    }

    private func runParams(_ sql: String, _ parameters: [PostgresValue], what: String) throws -> (rows: [PostgresRow], affected: Int) {
        try checkSQL(sql)
        let encoded = try Self.encode(parameters)
        let h = try liveHandle()
        let result = sql.withCString { s in
            withParameters(encoded) { n, types, values, lengths, formats in
                PQexecParams(h, s, n, types, values, lengths, formats, 0)
            }
        }
        return try consume(result, what: what)
    }

    private func runPrepared(_ name: String, _ parameters: [PostgresValue]) throws -> (rows: [PostgresRow], affected: Int) {
        guard prepared[name] != nil else {
            throw PostgresError(
                code: .invalidArgument,
                message: "statement \"\(name)\" is not prepared on this connection: call prepare(_:_:) first")
        }
        let encoded = try Self.encode(parameters)
        let h = try liveHandle()
        let result = name.withCString { n in
            withParameters(encoded) { count, _, values, lengths, formats in
                PQexecPrepared(h, n, count, values, lengths, formats, 0)
            }
        }
        return try consume(result, what: "prepared statement \"\(name)\"")
    }

    static func encode(_ parameters: [PostgresValue]) throws(PostgresError) -> [EncodedParameter] {
        guard parameters.count <= 65_535 else {
            throw PostgresError(code: .encoding, message: "\(parameters.count) parameters; PostgreSQL accepts at most 65535")
        }
        var out: [EncodedParameter] = []
        out.reserveCapacity(parameters.count)
        for (i, p) in parameters.enumerated() { out.append(try p.encoded(index: i + 1)) }
        return out
    }

    /// Checks `result`, converts it to rows and affected count, and frees it.
    private func consume(_ result: OpaquePointer?, what: String) throws(PostgresError) -> (rows: [PostgresRow], affected: Int) {
        defer { if let result { PQclear(result) } }
        let checked = try check(result, what: what)
        let affected = PQcmdTuples(checked).flatMap { Int(String(cString: $0)) } ?? 0
        return (Self.rows(of: checked), affected)
    }

    /// The one place that maps a libpq result status to success or a ``PostgresError``.
    /// Returns the result when it holds rows or a command status.
    @discardableResult
    private func check(_ result: OpaquePointer?, what: String) throws(PostgresError) -> OpaquePointer {
        guard let h = handle else {
            throw PostgresError(code: .connectionClosed, message: "\(what) failed: the connection is closed")
        }
        guard let result else {
            if PQstatus(h) != CONNECTION_OK { isBroken = true }
            throw connectionError(h, what: what)
        }
        let status = PQresultStatus(result)
        if status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK || status == PGRES_EMPTY_QUERY || status == PGRES_SINGLE_TUPLE {
            return result
        }
        if status == PGRES_FATAL_ERROR || status == PGRES_BAD_RESPONSE || status == PGRES_NONFATAL_ERROR {
            let error = serverError(result, what: what)
            if PQstatus(h) != CONNECTION_OK { isBroken = true }
            throw error
        }
        // COPY and anything else leave the connection mid-protocol: drop it.
        isBroken = true
        throw PostgresError(code: .unsupported, message: "\(what) returned \(Self.statusName(status)), which this wrapper does not support")
    }

    /// A server error from a result's diagnostic fields (the DETAIL goes to `detail` only).
    private func serverError(_ result: OpaquePointer, what: String, statementIndex: Int? = nil) -> PostgresError {
        func field(_ code: Character) -> String? {
            PQresultErrorField(result, Int32(code.asciiValue!)).map { String(cString: $0) }
        }
        let sqlState = field("C")
        var message = field("M") ?? Self.trimmed(PQresultErrorMessage(result))
        if message.isEmpty { message = "unknown error" }
        if sqlState?.hasPrefix("22") == true { message = redactingQuotedValues(message) }
        let broken = handle.map { PQstatus($0) != CONNECTION_OK } ?? true
        return PostgresError(
            code: broken ? .connectionClosed : .query,
            message: "\(what) failed: \(message)",
            sqlState: sqlState, detail: field("D"), constraint: field("n"), table: field("t"), column: field("c"),
            statementIndex: statementIndex)
    }

    private func connectionError(_ h: OpaquePointer, what: String) -> PostgresError {
        let bad = PQstatus(h) != CONNECTION_OK
        if bad { isBroken = true }
        var message = Self.trimmed(PQerrorMessage(h))
        if message.isEmpty { message = "no result from libpq" }
        return PostgresError(code: bad ? .connectionClosed : .query, message: "\(what) failed: \(message)")
    }

    static func rows(of result: OpaquePointer) -> [PostgresRow] {
        let fieldCount = Int(PQnfields(result))
        let rowCount = Int(PQntuples(result))
        if rowCount == 0 { return [] }
        var names: [String] = []
        var types: [PostgresDataType] = []
        for c in 0..<fieldCount {
            names.append(PQfname(result, Int32(c)).map { String(cString: $0) } ?? "?column?")
            types.append(PostgresDataType(oid: PQftype(result, Int32(c))))
        }
        let columns = PostgresColumns(names: names, types: types)
        var rows: [PostgresRow] = []
        rows.reserveCapacity(rowCount)
        for r in 0..<rowCount {
            var values: [String?] = []
            values.reserveCapacity(fieldCount)
            for c in 0..<fieldCount {
                if PQgetisnull(result, Int32(r), Int32(c)) == 1 {
                    values.append(nil)
                } else {
                    let length = Int(PQgetlength(result, Int32(r), Int32(c)))
                    let text = PQgetvalue(result, Int32(r), Int32(c)).map { pointer in
                        pointer.withMemoryRebound(to: UInt8.self, capacity: length) {
                            String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self)
                        }
                    }
                    values.append(text ?? "")
                }
            }
            rows.append(PostgresRow(columns: columns, values: values))
        }
        return rows
    }

    static func statusName(_ status: ExecStatusType) -> String {
        PQresStatus(status).map { String(cString: $0) } ?? "status \(status.rawValue)"
    }

    static func trimmed(_ message: UnsafePointer<CChar>?) -> String {
        guard let message else { return "" }
        return String(cString: message).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

@available(*, unavailable, message: "a PostgresConnection is used only on the pool thread that handed it out")
extension PostgresConnection: Sendable {}

// MARK: - C plumbing

/// The logger NOTICEs go to; its address is the notice processor's context.
private final class NoticeSink {
    let logger: Logger
    init(logger: Logger) { self.logger = logger }
}

/// libpq's notice processor: routes NOTICE/WARNING messages to the logger at debug level
/// (instead of libpq's default, stderr). Runs on the thread of the connection's current call.
private let postgresNoticeProcessor: PQnoticeProcessor = { context, message in
    guard let context, let message else { return }
    let sink = Unmanaged<NoticeSink>.fromOpaque(context).takeUnretainedValue()
    let text = String(cString: message).trimmingCharacters(in: .whitespacesAndNewlines)
    sink.logger.debug("postgres notice", metadata: ["postgres.notice": "\(text)"])
}

/// Calls `body` with a NULL-terminated array of C strings that live for the call.
private func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    let pointers: [UnsafePointer<CChar>?] = copies.map { $0.map { UnsafePointer($0) } } + [nil]
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

/// Lays out encoded parameters the way `PQexecParams` wants them, for the duration of `body`:
/// count, type OIDs, value pointers (NULL for SQL NULL), lengths, formats (0 text, 1 binary).
private func withParameters<R>(
    _ parameters: [EncodedParameter],
    _ body: (Int32, UnsafePointer<Oid>?, UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<Int32>?, UnsafePointer<Int32>?) -> R
) -> R {
    if parameters.isEmpty { return body(0, nil, nil, nil, nil) }
    var buffers: [UnsafeMutablePointer<CChar>?] = []
    buffers.reserveCapacity(parameters.count)
    defer { buffers.forEach { $0?.deallocate() } }
    for p in parameters {
        guard let bytes = p.bytes else {
            buffers.append(nil)
            continue
        }
        // Text values must be NUL-terminated; binary ones get the extra byte too (harmless).
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count + 1)
        bytes.withUnsafeBytes { raw in
            if let base = raw.baseAddress { UnsafeMutableRawPointer(buffer).copyMemory(from: base, byteCount: raw.count) }
        }
        buffer[bytes.count] = 0
        buffers.append(buffer)
    }
    let types = parameters.map { Oid($0.type) }
    let lengths = parameters.map { Int32($0.bytes?.count ?? 0) }
    let formats = parameters.map { Int32($0.binary ? 1 : 0) }
    let values: [UnsafePointer<CChar>?] = buffers.map { $0.map { UnsafePointer($0) } }
    return types.withUnsafeBufferPointer { t in
        values.withUnsafeBufferPointer { v in
            lengths.withUnsafeBufferPointer { l in
                formats.withUnsafeBufferPointer { f in
                    body(Int32(parameters.count), t.baseAddress, v.baseAddress, l.baseAddress, f.baseAddress)
                }
            }
        }
    }
}
