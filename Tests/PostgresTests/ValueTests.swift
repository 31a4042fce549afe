import Foundation
import Postgres
import Testing

@Suite struct ValueTests {
    static let createTable = """
        CREATE TABLE everything (
            id int PRIMARY KEY, s text, i bigint, i4 int, b boolean, d double precision,
            by bytea, ts timestamptz, u uuid, j json, jb jsonb
        )
        """

    @Test func everySupportedTypeRoundTripsIncludingNull() async throws {
        let text = "Grüße, 世界 👨‍👩‍👧 e\u{301} \"quoted\" \\ back\\slash\nnew line"
        let bytes: [UInt8] = [0, 1, 0, 255, 0, 39, 92, 0]
        let when = Date(timeIntervalSinceReferenceDate: 754_321_098.123_456)  // microsecond precision
        let id = UUID()
        try await withPool { pool in
            try await pool.execute(Self.createTable)
            let inserted = try await pool.execute(
                "INSERT INTO everything VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                [1, .text(text), .int(Int64.min), PostgresValue(Int32.max), true, 3.141592653589793,
                 .bytea(bytes), .timestamptz(when), .uuid(id), .json(#"{"a": [1, 2]}"#), .jsonb(#"{"b": null}"#)])
            #expect(inserted == 1)
            try await pool.execute(
                "INSERT INTO everything VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                [2, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil])

            let rows = try await pool.query("SELECT * FROM everything ORDER BY id")
            #expect(rows.count == 2)
            let row = rows[0]
            #expect(try row.decode("id", as: Int.self) == 1)
            #expect(try row.decode("s", as: String.self) == text)
            #expect(try row.decode("i", as: Int64.self) == Int64.min)
            #expect(try row.decode("i4", as: Int32.self) == Int32.max)
            #expect(try row.decode("b", as: Bool.self) == true)
            #expect(try row.decode("d", as: Double.self) == 3.141592653589793)
            #expect(try row.decode("by", as: [UInt8].self) == bytes)
            #expect(try row.decode("ts", as: Date.self) == when)
            #expect(try row.decode("u", as: UUID.self) == id)
            #expect(try row.decode("j", as: String.self) == #"{"a": [1, 2]}"#)
            #expect(try row.decode("jb", as: String.self) == #"{"b": null}"#)
            #expect(try row.decode(1, as: String.self) == text)
            #expect(row["s"]?.text == text)
            #expect(row["missing"] == nil)

            let nulls = rows[1]
            #expect(try nulls.decode("s", as: String?.self) == nil)
            #expect(try nulls.decode("i", as: Int64?.self) == nil)
            #expect(try nulls.decode("i4", as: Int32?.self) == nil)
            #expect(try nulls.decode("b", as: Bool?.self) == nil)
            #expect(try nulls.decode("d", as: Double?.self) == nil)
            #expect(try nulls.decode("by", as: [UInt8]?.self) == nil)
            #expect(try nulls.decode("ts", as: Date?.self) == nil)
            #expect(try nulls.decode("u", as: UUID?.self) == nil)
            #expect(nulls["s"]?.isNull == true)
            // Optionals of non-NULL values decode too.
            #expect(try row.decode("u", as: UUID?.self) == id)
        }
    }

    @Test func edgeValuesRoundTripExactly() async throws {
        try await withPool { pool in
            let doubles: [Double] = [0, -0.0, 1e-310, .greatestFiniteMagnitude, -1.5, 0.1, .infinity, -.infinity]
            for d in doubles {
                let back = try await pool.query("SELECT $1::float8 AS v", [.double(d)])[0].decode("v", as: Double.self)
                #expect(back == d && back.sign == d.sign, "\(d)")
            }
            let nan = try await pool.query("SELECT $1::float8 AS v", [.double(.nan)])[0].decode("v", as: Double.self)
            #expect(nan.isNaN)

            for i in [Int64.min, -1, 0, Int64.max] {
                #expect(try await pool.query("SELECT $1 AS v", [.int(i)])[0].decode("v", as: Int64.self) == i)
            }
            let all = (0...255).map(UInt8.init) + [0, 0]
            #expect(try await pool.query("SELECT $1 AS v", [.bytea(all)])[0].decode("v", as: [UInt8].self) == all)
            #expect(try await pool.query("SELECT $1 AS v", [.bytea([])])[0].decode("v", as: [UInt8].self) == [])
            #expect(try await pool.query("SELECT length($1) AS n", [.bytea([0, 0, 0])])[0].decode("n", as: Int.self) == 3)
            #expect(try await pool.query("SELECT $1::text AS v", [""])[0].decode("v", as: String.self) == "")
        }
    }

    @Test func timestampsKeepMicrosecondsAndMeanTheSameInstantOnTheServer() async throws {
        try await withPool { pool in
            let dates = [
                Date(timeIntervalSinceReferenceDate: 0.000_001),
                Date(timeIntervalSinceReferenceDate: 762_612_345.678_901),
                Date(timeIntervalSinceReferenceDate: -1_426_704_299.999_999),  // 1955, before 1970
                Date(timeIntervalSinceReferenceDate: -63_113_904_000),  // 0001-01-01
            ]
            for date in dates {
                let back = try await pool.query("SELECT $1 AS v", [.timestamptz(date)])[0].decode("v", as: Date.self)
                #expect(back == date, "\(date.timeIntervalSinceReferenceDate) came back as \(back.timeIntervalSinceReferenceDate)")
            }
            // The server reads the instant we meant, whatever the session's zone.
            let instant = Date(timeIntervalSince1970: 1_709_210_096.789_012)  // 2024-02-29 12:34:56.789012 UTC
            let same = try await pool.query(
                "SELECT $1 = '2024-02-29 14:34:56.789012+02'::timestamptz AS same", [.timestamptz(instant)])
            #expect(try same[0].decode("same", as: Bool.self))
            // Finer than a microsecond rounds to the nearest microsecond.
            let fine = Date(timeIntervalSince1970: 1_709_210_096.789_012_6)
            let rounded = try await pool.query("SELECT $1 AS v", [.timestamptz(fine)])[0].decode("v", as: Date.self)
            #expect(abs(rounded.timeIntervalSince1970 - 1_709_210_096.789_013) < 0.000_000_5)
            // A `timestamp` (no zone) column decodes as UTC; other offsets are honoured.
            let plain = try await pool.query("SELECT '2001-01-01 00:00:01.5'::timestamp AS v")[0].decode("v", as: Date.self)
            #expect(plain == Date(timeIntervalSinceReferenceDate: 1.5))
        }
    }

    @Test func decodingNullIntoNonOptionalNamesTheColumn() async throws {
        try await withPool { pool in
            let row = try await pool.query("SELECT NULL::text AS nickname, 1 AS one")[0]
            let error = await expectPostgresError { _ = try row.decode("nickname", as: String.self) }
            #expect(error?.code == .decoding)
            #expect(error?.message.contains("nickname") == true)
            let byIndex = await expectPostgresError { _ = try row.decode(0, as: Int.self) }
            #expect(byIndex?.code == .decoding)
            #expect(byIndex?.message.contains("nickname") == true)
        }
    }

    @Test func decodingTheWrongTypeThrows() async throws {
        try await withPool { pool in
            let row = try await pool.query(
                "SELECT 'secret-value'::text AS t, 42 AS n, true AS flag, '\\x00'::bytea AS raw, 1099511627776::bigint AS big, 'not-a-uuid' AS u")[0]
            for (column, attempt) in [
                ("t", { _ = try row.decode("t", as: Int.self) }),
                ("n", { _ = try row.decode("n", as: Bool.self) }),
                ("flag", { _ = try row.decode("flag", as: Double.self) }),
                ("raw", { _ = try row.decode("raw", as: Date.self) }),
                ("big", { _ = try row.decode("big", as: Int32.self) }),
                ("u", { _ = try row.decode("u", as: UUID.self) }),
                ("n", { _ = try row.decode("n", as: [UInt8].self) }),
            ] as [(String, () throws -> Void)] {
                let error = await expectPostgresError { try attempt() }
                #expect(error?.code == .decoding, "\(column)")
                #expect(error?.message.contains("\"\(column)\"") == true, "\(error?.message ?? "")")
                #expect(error?.description.contains("secret-value") == false)
            }
            let missing = await expectPostgresError { _ = try row.decode("nope", as: String.self) }
            #expect(missing?.code == .decoding)
            let outOfRange = await expectPostgresError { _ = try row.decode(99, as: String.self) }
            #expect(outOfRange?.code == .decoding)
            // A whole numeric decodes as an integer (sum(bigint) is numeric); a fraction does not.
            let sums = try await pool.query("SELECT sum(x) AS total, 1.5::numeric AS half FROM (VALUES (9007199254740993::bigint), (1)) v(x)")[0]
            #expect(try sums.decode("total", as: Int64.self) == 9_007_199_254_740_994)
            #expect(try sums.decode("half", as: Double.self) == 1.5)
            let fraction = await expectPostgresError { _ = try sums.decode("half", as: Int.self) }
            #expect(fraction?.code == .decoding)
            // Any column decodes as String (its text form).
            #expect(try row.decode("n", as: String.self) == "42")
        }
    }

    @Test func parametersAreNeverInterpolated() async throws {
        let nasty = ["'; DROP TABLE victims; --", "x'); DROP TABLE victims; --", "$1", "\\'", "' OR '1'='1"]
        try await withPool { pool in
            try await pool.execute("CREATE TABLE victims (id serial PRIMARY KEY, name text NOT NULL)")
            for value in nasty {
                try await pool.execute("INSERT INTO victims (name) VALUES ($1)", [.text(value)])
            }
            let names = try await pool.query("SELECT name FROM victims ORDER BY id").map { try $0.decode("name", as: String.self) }
            #expect(names == nasty)
            let match = try await pool.query("SELECT count(*) AS n FROM victims WHERE name = $1", ["' OR '1'='1"])
            #expect(try match[0].decode("n", as: Int.self) == 1)
            let none = try await pool.query("SELECT count(*) AS n FROM victims WHERE name = $1", ["nobody' OR '1'='1"])
            #expect(try none[0].decode("n", as: Int.self) == 0)
        }
    }

    @Test func literalsAndEncodablesBuildParameters() async throws {
        let maybe: String? = nil
        let count = 7
        let id = UUID()
        let values: [PostgresValue] = ["a", 3, 2.5, false, nil, PostgresValue(maybe), PostgresValue(count), id.postgresValue]
        #expect(values == [.text("a"), .int(3), .double(2.5), .bool(false), .null, .null, .int(7), .uuid(id)])
        try await withPool { pool in
            let row = try await pool.query(
                "SELECT $1::text AS a, $2::int AS b, $3::float8 AS c, $4::bool AS d, $5::text AS e, $6::text AS e2, $7::int AS f, $8::uuid AS g",
                values)[0]
            #expect(try row.decode("a", as: String.self) == "a")
            #expect(try row.decode("b", as: Int.self) == 3)
            #expect(try row.decode("c", as: Double.self) == 2.5)
            #expect(try row.decode("d", as: Bool.self) == false)
            #expect(try row.decode("e", as: String?.self) == nil)
            #expect(try row.decode("e2", as: String?.self) == nil)
            #expect(try row.decode("f", as: Int.self) == 7)
            #expect(try row.decode("g", as: UUID.self) == id)
            // A text parameter takes the type its context needs (here uuid).
            try await pool.execute("CREATE TABLE things (id uuid PRIMARY KEY)")
            try await pool.execute("INSERT INTO things VALUES ($1)", [.text(id.uuidString)])
            #expect(try await pool.query("SELECT id FROM things WHERE id = $1", [.uuid(id)]).count == 1)
        }
    }

    @Test func textWithNulIsRejectedBeforeSending() async throws {
        try await withPool { pool in
            let error = await expectPostgresError { _ = try await pool.query("SELECT $1::text", [.text("a\u{0}b")]) }
            #expect(error?.code == .encoding)
            #expect(error?.message.contains("$1") == true)
            // The pool is fine afterwards.
            let one = try await pool.query("SELECT 1 AS one")
            #expect(try one[0].decode("one", as: Int.self) == 1)
        }
    }

    @Test func noticesGoToTheLoggerAtDebug() async throws {
        let (logger, store) = CapturingLogHandler.logger()
        try await withPool(logger: logger) { pool in
            try await pool.execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql %', 42; END $$")
        }
        let notices = store.all.filter { $0.metadata["postgres.notice"] != nil }
        #expect(notices.count == 1)
        #expect(notices.first?.level == .debug)
        #expect(notices.first?.metadata["postgres.notice"]?.description.contains("hello from plpgsql 42") == true)
    }
}
