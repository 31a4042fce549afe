import Logging

/// One schema change. `sql` may hold several statements separated by `;` (it runs through
/// the simple-query protocol, without parameters). It runs inside a transaction, so it must
/// not contain BEGIN/COMMIT or statements that cannot run in one (`CREATE INDEX CONCURRENTLY`).
public struct Migration: Sendable {
    public let version: Int
    public let name: String
    public let sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }
}

/// Versioned migrations, per schema (each service owns one schema).
public enum Migrations {
    /// Brings `schema` up to date and returns the versions this call applied (ascending).
    ///
    /// * Creates the schema and `<schema>.schema_migrations(version, name, applied_at)` if missing
    ///   (only then: `CREATE … IF NOT EXISTS` needs the right to create even when the object
    ///   exists, and a service's role may create nothing outside its own schema).
    /// * Every step holds `pg_advisory_xact_lock(key)` with a key derived from the schema name,
    ///   so replicas starting together apply each migration exactly once.
    /// * Applies each missing migration in version order, each in its own transaction,
    ///   with `search_path` set to the schema (then `public`) so unqualified names land there.
    /// * Runs as the schema's owner: when the connected role is not the owner of an existing
    ///   schema but may act as it (a superuser, or a member of the owner), each transaction
    ///   does `SET LOCAL ROLE <owner>`. So `framecast migrate` run by an administrator creates
    ///   tables that belong to the service's role (deploy/postgres/roles.sql), as if the
    ///   service had migrated itself. A role that is neither (a service reading the blob
    ///   store's schema) can check what is applied, and fails on a migration still missing.
    /// * A failing migration is rolled back and left unapplied; this throws a `.migration`
    ///   error naming it (with the server's SQLSTATE) and applies nothing after it.
    ///
    /// `schema` must be a lowercase identifier: `[a-z_][a-z0-9_]*`, at most 63 bytes.
    public static func apply(
        schema: String, _ migrations: [Migration], on pool: PostgresPool, logger: Logger
    ) async throws -> [Int] {
        try validate(schema: schema)
        let sorted = try validated(migrations)
        let key = lockKey(schema: schema)
        let quoted = "\"\(schema)\""
        let table = "\(quoted).schema_migrations"
        var logger = logger
        logger[metadataKey: "postgres.schema"] = "\(schema)"
        let log = logger

        return try await pool.withConnection { connection in
            try connection.transaction { c in
                try c.execute("SELECT pg_advisory_xact_lock($1)", [.int(key)])
                if try c.query("SELECT 1 FROM pg_namespace WHERE nspname = $1", [.text(schema)]).isEmpty {
                    try c.executeScript("CREATE SCHEMA IF NOT EXISTS \(quoted)")
                }
                try Self.actAsOwner(of: schema, on: c)
                let tablePresent = try c.query("""
                    SELECT 1 FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace
                    WHERE n.nspname = $1 AND t.relname = 'schema_migrations'
                    """, [.text(schema)])
                if tablePresent.isEmpty {
                    try c.executeScript("""
                        CREATE TABLE IF NOT EXISTS \(table) (
                            version bigint PRIMARY KEY,
                            name text NOT NULL,
                            applied_at timestamptz NOT NULL DEFAULT now()
                        )
                        """)
                }
            }
            var applied: [Int] = []
            for migration in sorted {
                let didApply = try connection.transaction { c -> Bool in
                    try c.execute("SELECT pg_advisory_xact_lock($1)", [.int(key)])
                    let present = try c.query("SELECT 1 FROM \(table) WHERE version = $1", [.int(Int64(migration.version))])
                    if !present.isEmpty { return false }
                    try Self.actAsOwner(of: schema, on: c)
                    do throws(PostgresError) {
                        try c.executeScript("SET LOCAL search_path TO \(quoted), public")
                        try c.executeScript(migration.sql)
                    } catch {
                        let what = "migration \(migration.version) (\(migration.name)) of schema \(schema)"
                        // 42501 insufficient_privilege: typically a service's role meeting a schema it
                        // only reads (the blob store's), whose migrations its owner applies.
                        let hint = error.sqlState == "42501"
                            ? " (this role may not change the schema: apply its migrations as its owner or an administrator, `framecast migrate`)"
                            : ""
                        throw error.wrapped(.migration, what + hint)
                    }
                    try c.execute(
                        "INSERT INTO \(table) (version, name) VALUES ($1, $2)",
                        [.int(Int64(migration.version)), .text(migration.name)])
                    return true
                }
                if didApply {
                    applied.append(migration.version)
                    log.info(
                        "applied migration",
                        metadata: ["migration.version": "\(migration.version)", "migration.name": "\(migration.name)"])
                }
            }
            return applied
        }
    }

    /// For the rest of the transaction open on `c`, acts as the owner of `schema` (`SET LOCAL
    /// ROLE`, reset at commit or rollback) when the connected role is not that owner but may
    /// act as it; otherwise changes nothing.
    static func actAsOwner(of schema: String, on c: PostgresConnection) throws {
        _ = try c.query("""
            SELECT set_config('role', r.rolname, true) FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
            WHERE n.nspname = $1 AND r.rolname <> current_user AND pg_has_role(current_user, r.oid, 'MEMBER')
            """, [.text(schema)])
    }

    /// Throws `.invalidArgument` unless `schema` is `[a-z_][a-z0-9_]*` and at most 63 bytes.
    public static func validate(schema: String) throws(PostgresError) {
        let bytes = Array(schema.utf8)
        let valid = !bytes.isEmpty && bytes.count <= 63
            && bytes.enumerated().allSatisfy { i, b in
                (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || b == UInt8(ascii: "_")
                    || (i > 0 && b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9"))
            }
        if !valid {
            throw PostgresError(
                code: .invalidArgument,
                message: "invalid schema name: use a lowercase identifier ([a-z_][a-z0-9_]*, at most 63 bytes)")
        }
    }

    /// The migrations in version order; throws `.migration` for duplicate or non-positive versions.
    static func validated(_ migrations: [Migration]) throws(PostgresError) -> [Migration] {
        var seen = Set<Int>()
        for m in migrations {
            guard m.version > 0 else {
                throw PostgresError(code: .migration, message: "migration \(m.name): versions start at 1, got \(m.version)")
            }
            guard seen.insert(m.version).inserted else {
                throw PostgresError(code: .migration, message: "migration version \(m.version) appears twice")
            }
        }
        return migrations.sorted { $0.version < $1.version }
    }

    /// A stable advisory-lock key for `schema` (64-bit FNV-1a of `framecast.migrations.<schema>`).
    static func lockKey(schema: String) -> Int64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "framecast.migrations.\(schema)".utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return Int64(bitPattern: hash)
    }
}
