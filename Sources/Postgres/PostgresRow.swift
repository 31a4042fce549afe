import Foundation

/// The columns of a result: names and types, shared by all its rows.
public struct PostgresColumns: Sendable {
    public let names: [String]
    public let types: [PostgresDataType]
    private let indexByName: [String: Int]

    init(names: [String], types: [PostgresDataType]) {
        self.names = names
        self.types = types
        var index: [String: Int] = [:]
        for (i, name) in names.enumerated() where index[name] == nil { index[name] = i }
        self.indexByName = index
    }

    /// The index of the first column called `name`.
    public func index(of name: String) -> Int? { indexByName[name] }
    public var count: Int { names.count }
}

/// One row of a result. Values arrive in PostgreSQL's text format and are decoded on demand.
///
/// ```swift
/// let id: UUID = try row.decode("id")
/// let note = try row.decode("note", as: String?.self)   // NULL → nil
/// let raw = row["note"]?.text                           // the text form, nil for NULL
/// ```
public struct PostgresRow: Sendable {
    public let columns: PostgresColumns
    /// The text form of each column, `nil` for SQL NULL.
    let values: [String?]

    init(columns: PostgresColumns, values: [String?]) {
        self.columns = columns
        self.values = values
    }

    /// The cell of the column called `column`, or `nil` when the row has no such column.
    public subscript(_ column: String) -> PostgresCell? {
        columns.index(of: column).map { self[$0] }
    }

    /// The cell at `index` (0-based; traps when out of range, like an Array).
    public subscript(_ index: Int) -> PostgresCell {
        PostgresCell(text: values[index], type: columns.types[index], columnName: columns.names[index], columnIndex: index)
    }

    /// Decodes the column called `column`. `Optional` types decode NULL as `nil`; a NULL into a
    /// non-optional type, a missing column, or a value of the wrong type throws a `.decoding`
    /// error naming the column.
    public func decode<T: PostgresDecodable>(_ column: String, as type: T.Type = T.self) throws -> T {
        guard let index = columns.index(of: column) else {
            throw PostgresError(
                code: .decoding,
                message: "no column \"\(column)\" in the result (columns: \(columns.names.joined(separator: ", ")))")
        }
        return try T.decode(from: self[index])
    }

    /// Decodes the column at `index` (0-based), with the same rules as decoding by name.
    public func decode<T: PostgresDecodable>(_ index: Int, as type: T.Type = T.self) throws -> T {
        guard values.indices.contains(index) else {
            throw PostgresError(code: .decoding, message: "no column at index \(index) (the result has \(values.count))")
        }
        return try T.decode(from: self[index])
    }
}

/// One value of a row, with its column's name and type, before decoding.
public struct PostgresCell: Sendable {
    /// The value in PostgreSQL's text format, `nil` for SQL NULL.
    public let text: String?
    public let type: PostgresDataType
    public let columnName: String
    public let columnIndex: Int

    public var isNull: Bool { text == nil }

    public func decode<T: PostgresDecodable>(_ type: T.Type = T.self) throws -> T {
        try T.decode(from: self)
    }

    /// The non-NULL text, or a `.decoding` error saying the column is NULL.
    public func nonNullText(as swiftType: Any.Type) throws -> String {
        guard let text else {
            throw PostgresError(
                code: .decoding,
                message: "column \"\(columnName)\" is NULL; decode it as \(swiftType)? to accept NULL")
        }
        return text
    }

    /// A `.decoding` error naming the column, its type and the Swift type (never the value).
    public func mismatch(_ swiftType: Any.Type, _ reason: String? = nil) -> PostgresError {
        PostgresError(
            code: .decoding,
            message: "cannot decode column \"\(columnName)\" of type \(type) as \(swiftType)"
                + (reason.map { ": \($0)" } ?? ""))
    }

    func requireType(_ swiftType: Any.Type, _ allowed: [PostgresDataType]) throws {
        if !allowed.contains(type) { throw mismatch(swiftType) }
    }
}

/// A Swift type a column value decodes into.
///
/// Conforming: `String` (any column: its text form), `Int`, `Int32`, `Int64` (int2/int4/int8,
/// and numeric holding a whole number),
/// `Bool` (bool), `Double` (float4/float8/numeric/integers), `[UInt8]` (bytea),
/// `Date` (timestamptz, and timestamp taken as UTC), `UUID` (uuid, or text holding one),
/// and `Optional` of any of them (NULL → `nil`). json/jsonb decode as `String`.
public protocol PostgresDecodable: Sendable {
    static func decode(from cell: PostgresCell) throws -> Self
}

extension Optional: PostgresDecodable where Wrapped: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws -> Wrapped? {
        cell.isNull ? nil : try Wrapped.decode(from: cell)
    }
}

extension String: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws -> String {
        try cell.nonNullText(as: String.self)
    }
}

private let integerTypes: [PostgresDataType] = [.int2, .int4, .int8, .oidType]

extension Int64: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws -> Int64 {
        let text = try cell.nonNullText(as: Int64.self)
        // numeric too, when the value is whole: `sum(bigint)` is numeric.
        try cell.requireType(Int64.self, integerTypes + [.numeric])
        guard let v = Int64(text) else { throw cell.mismatch(Int64.self, "not an integer") }
        return v
    }
}

extension Int: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws -> Int {
        guard let v = Int(exactly: try Int64.decode(from: cell)) else { throw cell.mismatch(Int.self, "out of range") }
        return v
    }
}

extension Int32: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws -> Int32 {
        guard let v = Int32(exactly: try Int64.decode(from: cell)) else { throw cell.mismatch(Int32.self, "out of range") }
        return v
    }
}

extension Bool: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws -> Bool {
        let text = try cell.nonNullText(as: Bool.self)
        try cell.requireType(Bool.self, [.bool])
        switch text {
        case "t": return true
        case "f": return false
        default: throw cell.mismatch(Bool.self, "not t or f")
        }
    }
}

extension Double: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws -> Double {
        let text = try cell.nonNullText(as: Double.self)
        try cell.requireType(Double.self, [.float4, .float8, .numeric] + integerTypes)
        switch text {
        case "NaN": return .nan
        case "Infinity": return .infinity
        case "-Infinity": return -.infinity
        default:
            guard let v = Double(text) else { throw cell.mismatch(Double.self, "not a number") }
            return v
        }
    }
}

extension Array: PostgresDecodable where Element == UInt8 {
    public static func decode(from cell: PostgresCell) throws -> [UInt8] {
        let text = try cell.nonNullText(as: [UInt8].self)
        try cell.requireType([UInt8].self, [.bytea])
        // bytea_output = hex (set on every connection): "\x" then two hex digits per byte.
        let utf8 = Array(text.utf8)
        guard utf8.count >= 2, utf8[0] == UInt8(ascii: "\\"), utf8[1] == UInt8(ascii: "x"), utf8.count % 2 == 0 else {
            throw cell.mismatch([UInt8].self, "not in hex format")
        }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: c - 48
            case 97...102: c - 87
            case 65...70: c - 55
            default: nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity((utf8.count - 2) / 2)
        var i = 2
        while i < utf8.count {
            guard let hi = nibble(utf8[i]), let lo = nibble(utf8[i + 1]) else {
                throw cell.mismatch([UInt8].self, "not in hex format")
            }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}

extension Date: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws -> Date {
        let text = try cell.nonNullText(as: Date.self)
        try cell.requireType(Date.self, [.timestamptz, .timestamp])
        guard let date = TimestampText.parse(text) else {
            throw cell.mismatch(Date.self, "not a finite ISO timestamp")
        }
        return date
    }
}

extension UUID: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws -> UUID {
        let text = try cell.nonNullText(as: UUID.self)
        guard cell.type == .uuid || cell.type.isTextual else { throw cell.mismatch(UUID.self) }
        guard let uuid = UUID(uuidString: text) else { throw cell.mismatch(UUID.self, "not a UUID") }
        return uuid
    }
}
