/// An error from the Postgres wrapper: a failed connection, a server error, a value that
/// cannot be decoded, a closed pool, a failed migration.
///
/// `description` never contains parameter values or row data: it shows the error code,
/// what failed, the SQLSTATE, the constraint/table/column names the server reported and the
/// server's primary message (with quoted values removed for data-exception errors, class
/// 22, whose messages echo the offending input). The server's DETAIL — which for a unique
/// violation reads `Key (email)=(someone@example.com) already exists.` — is kept in
/// ``detail`` and printed nowhere.
public struct PostgresError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure this is. Extensible: compare with the static members.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// The connection could not be established (server unreachable, authentication...).
        public static let connectionFailed = Code("connectionFailed")
        /// The connection broke while in use; the pool reconnects on its next use.
        public static let connectionClosed = Code("connectionClosed")
        /// The server rejected a statement; ``PostgresError/sqlState`` says why.
        public static let query = Code("query")
        /// A column value could not be decoded into the requested Swift type.
        public static let decoding = Code("decoding")
        /// A parameter could not be sent (a NUL character in text, too many parameters...).
        public static let encoding = Code("encoding")
        /// The pool was closed; no more work is accepted.
        public static let poolClosed = Code("poolClosed")
        /// A migration failed or the migration list is invalid.
        public static let migration = Code("migration")
        /// A caller passed an invalid argument (schema name, statement name...).
        public static let invalidArgument = Code("invalidArgument")
        /// The server or libpq answered something this wrapper does not handle (e.g. COPY).
        public static let unsupported = Code("unsupported")
    }

    public let code: Code
    /// What failed, safe to log (no parameter values).
    public let message: String
    /// The SQLSTATE the server reported, e.g. `23505`; `nil` for client-side errors.
    public let sqlState: String?
    /// The server's DETAIL field. May contain user data (key values): not in `description`.
    public let detail: String?
    /// The constraint, table and column the server named, when it did.
    public let constraint: String?
    public let table: String?
    public let column: String?
    /// In a ``PostgresConnection/pipeline(_:)``: the 0-based index of the statement that failed.
    public let statementIndex: Int?

    public init(
        code: Code, message: String, sqlState: String? = nil, detail: String? = nil,
        constraint: String? = nil, table: String? = nil, column: String? = nil, statementIndex: Int? = nil
    ) {
        self.code = code
        self.message = message
        self.sqlState = sqlState
        self.detail = detail
        self.constraint = constraint
        self.table = table
        self.column = column
        self.statementIndex = statementIndex
    }

    /// 23505: a unique or primary-key constraint rejected a duplicate.
    public var isUniqueViolation: Bool { sqlState == "23505" }
    /// 23503: a foreign key points at a row that does not exist (or is still referenced).
    public var isForeignKeyViolation: Bool { sqlState == "23503" }
    /// 23502: NULL into a NOT NULL column.
    public var isNotNullViolation: Bool { sqlState == "23502" }
    /// 23514: a CHECK constraint failed.
    public var isCheckViolation: Bool { sqlState == "23514" }
    /// 40001 or 40P01: a serialization failure or deadlock; retrying the transaction may succeed.
    public var isRetryableTransactionFailure: Bool { sqlState == "40001" || sqlState == "40P01" }
    /// 42601: the SQL does not parse.
    public var isSyntaxError: Bool { sqlState == "42601" }

    public var description: String {
        var context: [String] = []
        if let sqlState { context.append("sqlState: \(sqlState)") }
        if let statementIndex { context.append("statement: \(statementIndex)") }
        if let constraint { context.append("constraint: \(constraint)") }
        if let table { context.append("table: \(table)") }
        if let column { context.append("column: \(column)") }
        let suffix = context.isEmpty ? "" : " [\(context.joined(separator: ", "))]"
        return "PostgresError.\(code.name): \(message)\(suffix)"
    }

    /// A copy with another code, `prefix` before the message, and optionally a statement index.
    func wrapped(_ code: Code, _ prefix: String, statementIndex: Int? = nil) -> PostgresError {
        PostgresError(
            code: code, message: "\(prefix): \(message)", sqlState: sqlState, detail: detail,
            constraint: constraint, table: table, column: column,
            statementIndex: statementIndex ?? self.statementIndex)
    }
}

/// Replaces the double-quoted parts of a server message with `"…"`
/// (`invalid input syntax for type integer: "abc"` → `... integer: "…"`), for messages
/// that echo user input.
func redactingQuotedValues(_ message: String) -> String {
    var out = ""
    var inQuote = false
    for ch in message {
        if ch == "\"" {
            if inQuote { out += "…\"" } else { out.append(ch) }
            inQuote.toggle()
        } else if !inQuote {
            out.append(ch)
        }
    }
    if inQuote { out += "…" }
    return out
}
