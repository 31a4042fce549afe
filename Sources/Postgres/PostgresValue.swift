import Foundation

/// A statement parameter. Parameters are always sent separately from the SQL text
/// (`$1`, `$2`... placeholders, libpq's `PQexecParams`); nothing is ever interpolated.
///
/// The design in one place:
/// * `PostgresValue` is the one parameter type: `[PostgresValue]` everywhere.
/// * Literals make it short: `["a", 3, 2.5, true, nil]` is `[.text("a"), .int(3), .double(2.5), .bool(true), .null]`.
/// * Variables of any ``PostgresEncodable`` type (String, Int, Int32, Int64, Bool, Double,
///   `[UInt8]`, Date, UUID, and Optionals of these) convert with `PostgresValue(x)` or
///   `x.postgresValue`; an Optional that is `nil` becomes `.null`.
///
/// How each case travels (type OID, format):
/// * `.text` — OID 0 (unknown), text: the server infers the type from the context, so a
///   string works for `text`, `uuid`, enum, `citext`... columns alike. Where there is no
///   context (`SELECT $1`) it is `text`; in a polymorphic position write `$1::text`.
///   PostgreSQL text cannot hold NUL characters: such a string throws an `.encoding` error.
/// * `.int` — `int8`; `.bool` — `bool`; `.double` — `float8` (NaN and ±infinity included);
///   `.uuid` — `uuid`; `.json` / `.jsonb` — `json` / `jsonb`; all in text format.
/// * `.bytea` — `bytea` in binary format (any bytes, zero bytes included).
/// * `.timestamptz` — `timestamptz`, text format with microsecond precision in UTC
///   (a `Date` is rounded to the nearest microsecond, PostgreSQL's resolution).
public enum PostgresValue: Sendable, Hashable {
    case null
    case text(String)
    case int(Int64)
    case bool(Bool)
    case double(Double)
    case bytea([UInt8])
    case timestamptz(Date)
    case uuid(UUID)
    case json(String)
    case jsonb(String)

    /// The value of any ``PostgresEncodable`` (`nil` Optionals become `.null`).
    public init(_ value: some PostgresEncodable) {
        self = value.postgresValue
    }
}

extension PostgresValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .text(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(nilLiteral: ()) { self = .null }
}

/// A Swift type that can be sent as a statement parameter.
public protocol PostgresEncodable: Sendable {
    var postgresValue: PostgresValue { get }
}

extension PostgresValue: PostgresEncodable {
    public var postgresValue: PostgresValue { self }
}
extension String: PostgresEncodable {
    public var postgresValue: PostgresValue { .text(self) }
}
extension Substring: PostgresEncodable {
    public var postgresValue: PostgresValue { .text(String(self)) }
}
extension Int: PostgresEncodable {
    public var postgresValue: PostgresValue { .int(Int64(self)) }
}
extension Int16: PostgresEncodable {
    public var postgresValue: PostgresValue { .int(Int64(self)) }
}
extension Int32: PostgresEncodable {
    public var postgresValue: PostgresValue { .int(Int64(self)) }
}
extension Int64: PostgresEncodable {
    public var postgresValue: PostgresValue { .int(self) }
}
extension Bool: PostgresEncodable {
    public var postgresValue: PostgresValue { .bool(self) }
}
extension Double: PostgresEncodable {
    public var postgresValue: PostgresValue { .double(self) }
}
extension Array: PostgresEncodable where Element == UInt8 {
    public var postgresValue: PostgresValue { .bytea(self) }
}
extension Date: PostgresEncodable {
    public var postgresValue: PostgresValue { .timestamptz(self) }
}
extension UUID: PostgresEncodable {
    public var postgresValue: PostgresValue { .uuid(self) }
}
extension Optional: PostgresEncodable where Wrapped: PostgresEncodable {
    public var postgresValue: PostgresValue { self?.postgresValue ?? .null }
}

// MARK: - Wire encoding

/// PostgreSQL type OIDs this wrapper uses (from `pg_type`).
public struct PostgresDataType: Hashable, Sendable, CustomStringConvertible {
    public let oid: UInt32
    public init(oid: UInt32) { self.oid = oid }

    public static let unknown = PostgresDataType(oid: 0)
    public static let bool = PostgresDataType(oid: 16)
    public static let bytea = PostgresDataType(oid: 17)
    public static let name = PostgresDataType(oid: 19)
    public static let int8 = PostgresDataType(oid: 20)
    public static let int2 = PostgresDataType(oid: 21)
    public static let int4 = PostgresDataType(oid: 23)
    public static let text = PostgresDataType(oid: 25)
    public static let oidType = PostgresDataType(oid: 26)
    public static let json = PostgresDataType(oid: 114)
    public static let float4 = PostgresDataType(oid: 700)
    public static let float8 = PostgresDataType(oid: 701)
    public static let unknownLiteral = PostgresDataType(oid: 705)
    public static let bpchar = PostgresDataType(oid: 1042)
    public static let varchar = PostgresDataType(oid: 1043)
    public static let date = PostgresDataType(oid: 1082)
    public static let timestamp = PostgresDataType(oid: 1114)
    public static let timestamptz = PostgresDataType(oid: 1184)
    public static let numeric = PostgresDataType(oid: 1700)
    public static let uuid = PostgresDataType(oid: 2950)
    public static let jsonb = PostgresDataType(oid: 3802)

    public var description: String {
        switch self {
        case .bool: "bool"
        case .bytea: "bytea"
        case .name: "name"
        case .int8: "int8"
        case .int2: "int2"
        case .int4: "int4"
        case .text: "text"
        case .oidType: "oid"
        case .json: "json"
        case .float4: "float4"
        case .float8: "float8"
        case .unknownLiteral: "unknown"
        case .bpchar: "bpchar"
        case .varchar: "varchar"
        case .date: "date"
        case .timestamp: "timestamp"
        case .timestamptz: "timestamptz"
        case .numeric: "numeric"
        case .uuid: "uuid"
        case .jsonb: "jsonb"
        default: "oid \(oid)"
        }
    }

    /// Types whose text form is the string itself.
    var isTextual: Bool {
        self == .text || self == .varchar || self == .bpchar || self == .name || self == .unknownLiteral
    }
}

/// One parameter ready for libpq: type OID, bytes, and format (0 text, 1 binary).
struct EncodedParameter {
    var type: UInt32
    var bytes: [UInt8]?  // nil = SQL NULL; text values without the terminating NUL
    var binary: Bool
}

extension PostgresValue {
    /// Encodes for the wire; `index` is the 1-based `$n` used in error messages.
    func encoded(index: Int) throws(PostgresError) -> EncodedParameter {
        switch self {
        case .null:
            return EncodedParameter(type: 0, bytes: nil, binary: false)
        case .text(let s):
            return EncodedParameter(type: 0, bytes: try Self.textBytes(s, index: index), binary: false)
        case .int(let v):
            return EncodedParameter(type: PostgresDataType.int8.oid, bytes: Array(String(v).utf8), binary: false)
        case .bool(let v):
            return EncodedParameter(type: PostgresDataType.bool.oid, bytes: v ? [UInt8(ascii: "t")] : [UInt8(ascii: "f")], binary: false)
        case .double(let v):
            let text: String
            if v.isNaN { text = "NaN" } else if v == .infinity { text = "Infinity" } else if v == -.infinity { text = "-Infinity" } else { text = "\(v)" }
            return EncodedParameter(type: PostgresDataType.float8.oid, bytes: Array(text.utf8), binary: false)
        case .bytea(let bytes):
            return EncodedParameter(type: PostgresDataType.bytea.oid, bytes: bytes, binary: true)
        case .timestamptz(let date):
            return EncodedParameter(type: PostgresDataType.timestamptz.oid, bytes: Array(TimestampText.format(date).utf8), binary: false)
        case .uuid(let uuid):
            return EncodedParameter(type: PostgresDataType.uuid.oid, bytes: Array(uuid.uuidString.lowercased().utf8), binary: false)
        case .json(let s):
            return EncodedParameter(type: PostgresDataType.json.oid, bytes: try Self.textBytes(s, index: index), binary: false)
        case .jsonb(let s):
            return EncodedParameter(type: PostgresDataType.jsonb.oid, bytes: try Self.textBytes(s, index: index), binary: false)
        }
    }

    private static func textBytes(_ s: String, index: Int) throws(PostgresError) -> [UInt8] {
        let bytes = Array(s.utf8)
        if bytes.contains(0) {
            throw PostgresError(
                code: .encoding,
                message: "parameter $\(index) contains a NUL character, which PostgreSQL text cannot store (use bytea)")
        }
        return bytes
    }
}

/// Text form of `timestamptz` values (`DateStyle=ISO`), with microsecond precision.
enum TimestampText {
    /// Microseconds between 1970-01-01 and 2001-01-01 (Foundation's reference date).
    static let referenceOffsetMicros: Int64 = 978_307_200 * 1_000_000

    /// Microseconds since 1970, rounded to the nearest microsecond.
    static func micros(_ date: Date) -> Int64 {
        // Rounded relative to the reference date, where a Date's Double keeps the most precision.
        Int64((date.timeIntervalSinceReferenceDate * 1_000_000).rounded()) + referenceOffsetMicros
    }

    static func date(micros: Int64) -> Date {
        Date(timeIntervalSinceReferenceDate: Double(micros - referenceOffsetMicros) / 1_000_000)
    }

    /// `2024-05-06 07:08:09.123456+00` (years before 1 AD get PostgreSQL's ` BC` suffix).
    static func format(_ date: Date) -> String {
        let total = micros(date)
        var seconds = total / 1_000_000
        var fraction = total % 1_000_000
        if fraction < 0 {
            fraction += 1_000_000
            seconds -= 1
        }
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        var year = Int(parts.tm_year) + 1900
        var era = ""
        if year <= 0 {
            year = 1 - year
            era = " BC"
        }
        func pad(_ v: Int, _ width: Int) -> String {
            let s = String(v)
            return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
        }
        return "\(pad(year, 4))-\(pad(Int(parts.tm_mon) + 1, 2))-\(pad(Int(parts.tm_mday), 2)) "
            + "\(pad(Int(parts.tm_hour), 2)):\(pad(Int(parts.tm_min), 2)):\(pad(Int(parts.tm_sec), 2))"
            + ".\(pad(Int(fraction), 6))+00\(era)"
    }

    /// Parses PostgreSQL's ISO output: `YYYY-MM-DD HH:MM:SS[.ffffff][±HH[:MM[:SS]]][ BC]`.
    /// Without an offset (a `timestamp` column) the time is taken as UTC.
    static func parse(_ text: String) -> Date? {
        var bytes = Array(text.utf8)
        var bc = false
        if bytes.count > 3, bytes.suffix(3) == Array(" BC".utf8) {
            bc = true
            bytes.removeLast(3)
        }
        var i = 0
        func number(_ minDigits: Int, _ maxDigits: Int) -> Int? {
            var value = 0
            var n = 0
            while i < bytes.count, n < maxDigits, bytes[i] >= 48, bytes[i] <= 57 {
                value = value * 10 + Int(bytes[i] - 48)
                i += 1
                n += 1
            }
            return n >= minDigits ? value : nil
        }
        func expect(_ c: Character) -> Bool {
            guard i < bytes.count, bytes[i] == c.asciiValue! else { return false }
            i += 1
            return true
        }
        guard var year = number(4, 9), expect("-"), let month = number(2, 2), expect("-"), let day = number(2, 2),
            expect(" "), let hour = number(2, 2), expect(":"), let minute = number(2, 2), expect(":"),
            let second = number(2, 2)
        else { return nil }
        var fraction = 0
        if expect(".") {
            let start = i
            guard let f = number(1, 6) else { return nil }
            fraction = f
            for _ in 0..<(6 - (i - start)) { fraction *= 10 }
        }
        var offsetSeconds = 0
        if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") {
            let sign = bytes[i] == UInt8(ascii: "-") ? -1 : 1
            i += 1
            guard let h = number(2, 2) else { return nil }
            var m = 0
            var s = 0
            if expect(":") {
                guard let mm = number(2, 2) else { return nil }
                m = mm
                if expect(":") {
                    guard let ss = number(2, 2) else { return nil }
                    s = ss
                }
            }
            offsetSeconds = sign * (h * 3600 + m * 60 + s)
        }
        guard i == bytes.count, (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61
        else { return nil }
        if bc { year = 1 - year }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        let seconds = Int64(timegm(&parts)) - Int64(offsetSeconds)
        return date(micros: seconds * 1_000_000 + Int64(fraction))
    }
}
