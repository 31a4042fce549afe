import Foundation
import Postgres
import Testing

@Suite struct PipelineAndPreparedTests {
    @Test func preparedStatementsRunWithDifferentParameters() async throws {
        try await withPool(maxConnections: 1) { pool in
            try await pool.execute("CREATE TABLE blobs (id int PRIMARY KEY, data bytea, at timestamptz)")
            let at = Date(timeIntervalSinceReferenceDate: 780_000_000.25)
            try await pool.withConnection { c in
                try c.prepare("put_blob", "INSERT INTO blobs VALUES ($1, $2, $3)")
                try c.prepare("put_blob", "INSERT INTO blobs VALUES ($1, $2, $3)")  // idempotent
                try c.prepare("get_blob", "SELECT data, at FROM blobs WHERE id = $1")
                for i in 1...3 {
                    #expect(try c.executePrepared("put_blob", [.int(Int64(i)), .bytea([0, UInt8(i), 0]), .timestamptz(at)]) == 1)
                }
                let row = try #require(try c.queryPrepared("get_blob", [2]).first)
                #expect(try row.decode("data", as: [UInt8].self) == [0, 2, 0])
                #expect(try row.decode("at", as: Date.self) == at)
                #expect(try c.queryPrepared("get_blob", [99]).isEmpty)
            }
            // The statement stays prepared on the pool's (only) connection.
            let again = try await pool.withConnection { c in
                try c.prepare("get_blob", "SELECT data, at FROM blobs WHERE id = $1")
                return try c.queryPrepared("get_blob", [3]).count
            }
            #expect(again == 1)
        }
    }

    @Test func preparedStatementMisuseThrows() async throws {
        try await withPool(maxConnections: 1) { pool in
            let errors = try await pool.withConnection { c -> [PostgresError?] in
                func capture(_ body: () throws -> Void) -> PostgresError? {
                    do { try body(); return nil } catch { return error as? PostgresError }
                }
                try c.prepare("one", "SELECT 1 AS v")
                return [
                    capture { try c.prepare("one", "SELECT 2 AS v") },
                    capture { _ = try c.queryPrepared("never_prepared", []) },
                    capture { try c.prepare("broken", "SELEC oops") },
                    capture { _ = try c.queryPrepared("broken", []) },
                    capture { try c.prepare("", "SELECT 1") },
                ]
            }
            #expect(errors[0]?.code == .invalidArgument)
            #expect(errors[1]?.code == .invalidArgument)
            #expect(errors[2]?.sqlState == "42601")
            #expect(errors[3]?.code == .invalidArgument)  // a failed prepare registers nothing
            #expect(errors[4]?.code == .invalidArgument)
        }
    }

    @Test func pipelineOf500InsertsInOneCall() async throws {
        try await withPool { pool in
            try await pool.execute("CREATE TABLE events (id int PRIMARY KEY, payload text NOT NULL)")
            var statements: [(sql: String, parameters: [PostgresValue])] = (1...500).map { i in
                ("INSERT INTO events VALUES ($1, $2)", [.int(Int64(i)), .text("event \(i)")])
            }
            statements.append(("SELECT count(*) AS n, max(id) AS top FROM events", []))
            let batch = statements
            let results = try await pool.withConnection { c in try c.pipeline(batch) }
            #expect(results.count == 501)
            #expect(results[0].isEmpty)
            #expect(try results[500][0].decode("n", as: Int.self) == 500)
            #expect(try results[500][0].decode("top", as: Int.self) == 500)
            let stored = try await pool.query("SELECT count(*) AS n FROM events")
            #expect(try stored[0].decode("n", as: Int.self) == 500)
        }
    }

    @Test func pipelineFailureSaysWhichStatementAndTakesNoEffect() async throws {
        try await withPool(maxConnections: 1) { pool in
            try await pool.execute("CREATE TABLE events (id int PRIMARY KEY)")
            let statements: [(sql: String, parameters: [PostgresValue])] = [
                ("INSERT INTO events VALUES ($1)", [1]),
                ("INSERT INTO events VALUES ($1)", [2]),
                ("INSERT INTO events VALUES ($1)", [1]),  // duplicate key
                ("INSERT INTO events VALUES ($1)", [3]),
            ]
            let error = await expectPostgresError { _ = try await pool.withConnection { c in try c.pipeline(statements) } }
            #expect(error?.statementIndex == 2)
            #expect(error?.sqlState == "23505")
            #expect(error?.message.contains("statement 2") == true)
            #expect(error?.description.contains("statement: 2") == true)
            // One implicit transaction: nothing from the pipeline remains.
            #expect(try await pool.query("SELECT count(*) AS n FROM events")[0].decode("n", as: Int.self) == 0)

            // The same connection is usable and pipelines again.
            let ok = try await pool.withConnection { c in
                try c.pipeline([("INSERT INTO events VALUES ($1)", [7]), ("SELECT id FROM events", [])])
            }
            #expect(try ok[1].map { try $0.decode("id", as: Int.self) } == [7])

            // A parameter that cannot be encoded fails before anything is sent, naming its statement.
            let encoding = await expectPostgresError {
                _ = try await pool.withConnection { c in
                    try c.pipeline([("INSERT INTO events VALUES ($1)", [8]), ("SELECT $1::text", [.text("a\u{0}")])])
                }
            }
            #expect(encoding?.code == .encoding)
            #expect(encoding?.statementIndex == 1)
            #expect(try await pool.query("SELECT 1 FROM events WHERE id = 8").isEmpty)
        }
    }

    @Test func pipelineInsideATransactionIsPartOfIt() async throws {
        try await withPool { pool in
            try await pool.execute("CREATE TABLE events (id int PRIMARY KEY)")
            do {
                try await pool.withTransaction { c in
                    _ = try c.pipeline([("INSERT INTO events VALUES ($1)", [1]), ("INSERT INTO events VALUES ($1)", [2])])
                    throw BodyFailed()
                }
            } catch is BodyFailed {}
            #expect(try await pool.query("SELECT count(*) AS n FROM events")[0].decode("n", as: Int.self) == 0)
        }
    }
}
