import FramecastTesting
import Foundation
import Logging
import Postgres
import Testing

@Suite struct MigrationTests {
    let logger = Logger(label: "postgres-tests")

    static let migrations = [
        // Unqualified names land in the schema (search_path); no IF NOT EXISTS: a second run would fail.
        Migration(version: 1, name: "create_items", sql: """
            CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
            CREATE INDEX items_name ON items (name);
            """),
        Migration(version: 2, name: "seed_items", sql: "INSERT INTO items VALUES (1, 'first'); INSERT INTO items VALUES (2, 'second')"),
    ]

    func appliedVersions(_ pool: PostgresPool, schema: String) async throws -> [Int] {
        try await pool.query("SELECT version FROM \(schema).schema_migrations ORDER BY version").map { try $0.decode("version") }
    }

    @Test func appliesOnceThenIsANoOp() async throws {
        try await withPool { pool in
            #expect(try await Migrations.apply(schema: "app", Self.migrations, on: pool, logger: logger) == [1, 2])
            #expect(try await Migrations.apply(schema: "app", Self.migrations, on: pool, logger: logger) == [])
            #expect(try await appliedVersions(pool, schema: "app") == [1, 2])
            let names = try await pool.query("SELECT name, applied_at FROM app.schema_migrations ORDER BY version")
            #expect(try names.map { try $0.decode("name", as: String.self) } == ["create_items", "seed_items"])
            #expect(try names.allSatisfy { try $0.decode("applied_at", as: Date.self) <= Date().addingTimeInterval(60) })
            #expect(try await pool.query("SELECT count(*) AS n FROM app.items")[0].decode("n", as: Int.self) == 2)

            // A later release adds a migration: only it runs. Order in the list does not matter.
            let more = [Migration(version: 3, name: "add_note", sql: "ALTER TABLE items ADD COLUMN note text")] + Self.migrations.reversed()
            #expect(try await Migrations.apply(schema: "app", more, on: pool, logger: logger) == [3])
            // Another schema in the same database is independent.
            #expect(try await Migrations.apply(schema: "other", Self.migrations, on: pool, logger: logger) == [1, 2])
        }
    }

    @Test func concurrentPoolsApplyEachMigrationExactlyOnce() async throws {
        let connInfo = try await TestServers.makeDatabase(prefix: "pg")
        let slow = [
            Migration(version: 1, name: "slow_create", sql: "SELECT pg_sleep(0.2); CREATE TABLE items (id int PRIMARY KEY)"),
            Migration(version: 2, name: "insert", sql: "INSERT INTO items VALUES (1)"),
            Migration(version: 3, name: "insert_more", sql: "INSERT INTO items VALUES (2)"),
        ]
        let logger = self.logger
        let pools = (0..<3).map { _ in
            PostgresPool(configuration: PostgresConfiguration(connInfo: connInfo, maxConnections: 1), logger: logger)
        }
        let results = try await withThrowingTaskGroup(of: [Int].self) { group in
            for pool in pools {
                group.addTask { try await Migrations.apply(schema: "shared", slow, on: pool, logger: logger) }
            }
            var all: [[Int]] = []
            for try await applied in group { all.append(applied) }
            return all
        }
        // Each version applied by exactly one pool; none failed (a second CREATE TABLE or insert would have).
        #expect(results.flatMap { $0 }.sorted() == [1, 2, 3])
        #expect(try await appliedVersions(pools[0], schema: "shared") == [1, 2, 3])
        #expect(try await pools[1].query("SELECT count(*) AS n FROM shared.items")[0].decode("n", as: Int.self) == 2)
        for pool in pools { await pool.close() }
    }

    @Test func aFailingMigrationRollsBackAndStaysUnapplied() async throws {
        try await withPool { pool in
            let broken = Self.migrations + [
                Migration(version: 3, name: "half_done", sql: "CREATE TABLE extra (id int); SELECT 1/0"),
                Migration(version: 4, name: "after", sql: "CREATE TABLE after_broken (id int)"),
            ]
            let error = await expectPostgresError { _ = try await Migrations.apply(schema: "app", broken, on: pool, logger: logger) }
            #expect(error?.code == .migration)
            #expect(error?.sqlState == "22012")
            #expect(error?.message.contains("migration 3 (half_done)") == true)
            #expect(try await appliedVersions(pool, schema: "app") == [1, 2])
            let tables = try await pool.query(
                "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'app' AND table_name IN ('extra', 'after_broken')")
            #expect(try tables[0].decode("n", as: Int.self) == 0)

            // Fixed, it applies on the next start.
            let fixed = Self.migrations + [
                Migration(version: 3, name: "half_done", sql: "CREATE TABLE extra (id int)"),
                broken[3],
            ]
            #expect(try await Migrations.apply(schema: "app", fixed, on: pool, logger: logger) == [3, 4])
        }
    }

    @Test func invalidSchemasAndMigrationListsAreRefused() async throws {
        try await withPool { pool in
            for schema in ["", "Upper", "has-dash", "semi;colon", "1digit", "a b", "quote\"d", String(repeating: "a", count: 64)] {
                let error = await expectPostgresError { _ = try await Migrations.apply(schema: schema, Self.migrations, on: pool, logger: logger) }
                #expect(error?.code == .invalidArgument, "\(schema)")
            }
            let duplicate = await expectPostgresError {
                _ = try await Migrations.apply(schema: "app", Self.migrations + [Self.migrations[0]], on: pool, logger: logger)
            }
            #expect(duplicate?.code == .migration)
            let zero = await expectPostgresError {
                _ = try await Migrations.apply(schema: "app", [Migration(version: 0, name: "zero", sql: "SELECT 1")], on: pool, logger: logger)
            }
            #expect(zero?.code == .migration)
            // Nothing was created by the refused calls.
            let leftovers = try await pool.query("SELECT 1 FROM pg_namespace WHERE nspname = 'app'")
            #expect(leftovers.isEmpty)
        }
    }
}
