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
    /// * Creates the schema and `<schema>.schema_migrations(version, name, applied_at)` if missing.
    /// * Every step holds `pg_advisory_xact_lock(key)` with a key derived from the schema name,
    ///   so replicas starting together apply each migration exactly once.
    /// * Applies each missing migration in version order, each in its own transaction,
    ///   with `search_path` set to the schema (then `public`) so unqualified names land there.
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
                try c.executeScript("""
                    CREATE SCHEMA IF NOT EXISTS \(quoted);
                    CREATE TABLE IF NOT EXISTS \(table) (
                        version bigint PRIMARY KEY,
                        name text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now()
                    )
                    """)
            }
            var applied: [Int] = []
            for migration in sorted {
                let didApply = try connection.transaction { c -> Bool in
                    try c.execute("SELECT pg_advisory_xact_lock($1)", [.int(key)])
                    let present = try c.query("SELECT 1 FROM \(table) WHERE version = $1", [.int(Int64(migration.version))])
                    if !present.isEmpty { return false }
                    do throws(PostgresError) {
                        try c.executeScript("SET LOCAL search_path TO \(quoted), public")
                        try c.executeScript(migration.sql)
                    } catch {
                        throw error.wrapped(.migration, "migration \(migration.version) (\(migration.name)) of schema \(schema)")
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
