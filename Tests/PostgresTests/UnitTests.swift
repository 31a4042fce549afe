import Foundation
import Testing

@testable import Postgres

/// Pure functions, no server.
@Suite struct UnitTests {
    @Test func timestampTextParsesOffsetsFractionsAndEras() throws {
        let utc = try #require(TimestampText.parse("2024-02-29 12:34:56.789012+00"))
        #expect(TimestampText.micros(utc) == 1_709_210_096_789_012)
        let india = try #require(TimestampText.parse("2024-02-29 18:04:56.789012+05:30"))
        #expect(india == utc)
        let lmt = try #require(TimestampText.parse("1890-01-01 00:00:00-00:09:21"))
        #expect(TimestampText.micros(lmt) == (-2_524_521_600 + 561) * 1_000_000)
        let short = try #require(TimestampText.parse("2024-02-29 12:34:56.5+00"))
        #expect(TimestampText.micros(short) == 1_709_210_096_500_000)
        let bc = try #require(TimestampText.parse("0001-12-31 00:00:00+00 BC"))
        #expect(TimestampText.format(bc) == "0001-12-31 00:00:00.000000+00 BC")
        for bad in ["", "infinity", "-infinity", "2024-13-01 00:00:00+00", "2024-01-01T00:00:00Z", "2024-01-01 00:00:00+00 junk"] {
            #expect(TimestampText.parse(bad) == nil, "\(bad)")
        }
    }

    @Test func timestampTextFormatsWhatItParses() throws {
        for micros: Int64 in [0, 1, -1, 1_709_210_096_789_012, -2_524_521_600_000_001, 4_102_444_800_000_001] {
            let date = TimestampText.date(micros: micros)
            let text = TimestampText.format(date)
            #expect(TimestampText.parse(text).map(TimestampText.micros) == micros, "\(text)")
        }
        #expect(TimestampText.format(TimestampText.date(micros: -1)) == "1969-12-31 23:59:59.999999+00")
    }

    @Test func redactionRemovesQuotedValues() {
        #expect(redactingQuotedValues("invalid input syntax for type integer: \"abc\"") == "invalid input syntax for type integer: \"…\"")
        #expect(redactingQuotedValues("a \"b\" c \"d") == "a \"…\" c \"…")
        #expect(redactingQuotedValues("no quotes") == "no quotes")
    }

    @Test func errorDescriptionShowsContextButNotDetail() {
        let error = PostgresError(
            code: .query, message: "statement failed: duplicate key value violates unique constraint \"users_email_key\"",
            sqlState: "23505", detail: "Key (email)=(ada@example.com) already exists.", constraint: "users_email_key",
            table: "users")
        #expect(error.isUniqueViolation)
        #expect(error.description.contains("23505"))
        #expect(error.description.contains("users_email_key"))
        #expect(!error.description.contains("ada@example.com"))
        #expect(PostgresError(code: .query, message: "x", sqlState: "40P01").isRetryableTransactionFailure)
        #expect(PostgresError.Code.poolClosed != PostgresError.Code.connectionClosed)
    }

    @Test func migrationLockKeysAreStableAndPerSchema() throws {
        #expect(Migrations.lockKey(schema: "storage") == Migrations.lockKey(schema: "storage"))
        #expect(Migrations.lockKey(schema: "storage") != Migrations.lockKey(schema: "album"))
        try Migrations.validate(schema: "media_v2")
        try Migrations.validate(schema: "_x")
        #expect(throws: PostgresError.self) { try Migrations.validate(schema: "Media") }
    }

    @Test func parametersEncodeWithTheirTypes() throws {
        #expect(try PostgresValue.double(.infinity).encoded(index: 1).bytes == Array("Infinity".utf8))
        #expect(try PostgresValue.double(-.infinity).encoded(index: 1).bytes == Array("-Infinity".utf8))
        #expect(try PostgresValue.double(.nan).encoded(index: 1).bytes == Array("NaN".utf8))
        #expect(try PostgresValue.bytea([0, 1]).encoded(index: 1).binary)
        #expect(try PostgresValue.null.encoded(index: 1).bytes == nil)
        #expect(try PostgresValue.text("x").encoded(index: 1).type == 0)
        #expect(throws: PostgresError.self) { try PostgresValue.jsonb("{\"a\u{0}\": 1}").encoded(index: 3) }
    }
}
