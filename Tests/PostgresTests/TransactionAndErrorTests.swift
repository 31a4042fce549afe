import Foundation
import Postgres
import Testing

struct BodyFailed: Error {}

@Suite struct TransactionAndErrorTests {
    @Test func transactionCommits() async throws {
        try await withPool { pool in
            try await pool.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
            let inserted = try await pool.withTransaction { c in
                try c.execute("INSERT INTO notes VALUES ($1, $2), ($3, $4)", [1, "one", 2, "two"])
            }
            #expect(inserted == 2)
            #expect(try await pool.query("SELECT count(*) AS n FROM notes")[0].decode("n", as: Int.self) == 2)
        }
    }

    @Test func transactionRollsBackAndRethrowsWhenTheBodyThrows() async throws {
        try await withPool { pool in
            try await pool.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
            do {
                try await pool.withTransaction { c in
                    try c.execute("INSERT INTO notes VALUES ($1, $2)", [1, "gone"])
                    // Visible inside the transaction...
                    #expect(try c.query("SELECT 1 FROM notes WHERE id = 1").count == 1)
                    throw BodyFailed()
                }
                Issue.record("withTransaction did not rethrow")
            } catch is BodyFailed {
                // the caller's own error comes back unchanged
            }
            // ...and absent after the rollback.
            #expect(try await pool.query("SELECT 1 FROM notes WHERE id = 1").isEmpty)
        }
    }

    @Test func uniqueViolationReports23505WithoutLeakingTheValue() async throws {
        try await withPool { pool in
            try await pool.execute("CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL UNIQUE)")
            try await pool.execute("INSERT INTO users (email) VALUES ($1)", ["ada@example.com"])
            let error = await expectPostgresError {
                try await pool.execute("INSERT INTO users (email) VALUES ($1)", ["ada@example.com"])
            }
            #expect(error?.code == .query)
            #expect(error?.sqlState == "23505")
            #expect(error?.isUniqueViolation == true)
            #expect(error?.isForeignKeyViolation == false)
            #expect(error?.constraint == "users_email_key")
            #expect(error?.table == "users")
            #expect(error?.detail?.contains("ada@example.com") == true)
            #expect(error?.description.contains("ada@example.com") == false)
            #expect(error?.description.contains("23505") == true)
            #expect("\(String(describing: error))".contains("ada@example.com") == false)
        }
    }

    @Test func foreignKeyViolationReports23503() async throws {
        try await withPool { pool in
            try await pool.execute("CREATE TABLE albums (id int PRIMARY KEY)")
            try await pool.execute("CREATE TABLE photos (id int PRIMARY KEY, album_id int NOT NULL REFERENCES albums(id))")
            let error = await expectPostgresError {
                try await pool.execute("INSERT INTO photos VALUES ($1, $2)", [1, 404])
            }
            #expect(error?.sqlState == "23503")
            #expect(error?.isForeignKeyViolation == true)
            #expect(error?.constraint == "photos_album_id_fkey")
        }
    }

    @Test func syntaxErrorReports42601AndMultipleStatementsAreRefused() async throws {
        try await withPool { pool in
            let error = await expectPostgresError { _ = try await pool.query("SELEC 1") }
            #expect(error?.sqlState == "42601")
            #expect(error?.isSyntaxError == true)
            #expect(error?.code == .query)
            // Parameterised statements are single statements: no piggy-backed second command.
            let two = await expectPostgresError { _ = try await pool.query("SELECT 1; SELECT 2") }
            #expect(two?.sqlState == "42601")
        }
    }

    @Test func dataErrorsDoNotEchoTheInputInTheDescription() async throws {
        try await withPool { pool in
            let error = await expectPostgresError { _ = try await pool.query("SELECT $1::int", ["secret-token-123"]) }
            #expect(error?.sqlState == "22P02")
            #expect(error?.description.contains("secret-token-123") == false)
            #expect(error?.description.contains("integer") == true)
        }
    }

    @Test func connectionIsUsableAfterAnErrorInsideATransaction() async throws {
        try await withPool(maxConnections: 1) { pool in
            try await pool.execute("CREATE TABLE notes (id int PRIMARY KEY)")
            let error = await expectPostgresError {
                try await pool.withTransaction { c in
                    try c.execute("INSERT INTO notes VALUES ($1)", [1])
                    try c.execute("INSERT INTO notes VALUES ($1)", [1])  // 23505 aborts the transaction
                }
            }
            #expect(error?.sqlState == "23505")
            // The one connection was rolled back and serves the next caller.
            #expect(try await pool.query("SELECT count(*) AS n FROM notes")[0].decode("n", as: Int.self) == 0)
            _ = try await pool.withTransaction { c in try c.execute("INSERT INTO notes VALUES ($1)", [2]) }
            #expect(try await pool.query("SELECT id FROM notes")[0].decode("id", as: Int.self) == 2)
        }
    }

    @Test func commitAfterACaughtErrorThrowsInsteadOfPretending() async throws {
        try await withPool(maxConnections: 1) { pool in
            try await pool.execute("CREATE TABLE notes (id int PRIMARY KEY)")
            let error = await expectPostgresError {
                try await pool.withTransaction { c in
                    try c.execute("INSERT INTO notes VALUES ($1)", [1])
                    _ = try? c.execute("INSERT INTO notes VALUES ($1)", [1])  // error swallowed
                }
            }
            #expect(error?.code == .query)
            #expect(error?.sqlState == "25P02")
            #expect(try await pool.query("SELECT count(*) AS n FROM notes")[0].decode("n", as: Int.self) == 0)
        }
    }

    @Test func transactionsDoNotNest() async throws {
        try await withPool(maxConnections: 1) { pool in
            try await pool.execute("CREATE TABLE notes (id int PRIMARY KEY)")
            let error = await expectPostgresError {
                try await pool.withTransaction { c in
                    try c.execute("INSERT INTO notes VALUES (1)")
                    try c.transaction { inner in try inner.execute("INSERT INTO notes VALUES (2)") }
                }
            }
            #expect(error?.code == .invalidArgument)
            let count = try await pool.query("SELECT count(*) AS n FROM notes")
            #expect(try count[0].decode("n", as: Int.self) == 0)
        }
    }

    @Test func aTransactionLeftOpenIsRolledBackBeforeReuse() async throws {
        try await withPool(maxConnections: 1) { pool in
            try await pool.execute("CREATE TABLE notes (id int PRIMARY KEY)")
            let wasOpen = try await pool.withConnection { c in
                try c.executeScript("BEGIN")
                try c.execute("INSERT INTO notes VALUES (1)")
                try c.execute("SET LOCAL application_name = 'left-open'")
                return c.isInTransaction  // returns without COMMIT
            }
            #expect(wasOpen)
            let (state, inTransaction) = try await pool.withConnection { c in
                (try c.query("SELECT count(*) AS n, current_setting('application_name') AS app FROM notes")[0], c.isInTransaction)
            }
            #expect(!inTransaction)
            #expect(try state.decode("n", as: Int.self) == 0)
            #expect(try state.decode("app", as: String.self) == "framecast")
        }
    }
}
