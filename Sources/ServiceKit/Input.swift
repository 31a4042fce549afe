import Foundation

/// Checks of request fields that every service applies the same way; each throws
/// ``ServiceError/invalid(_:)`` with a message naming the field.
public enum Input {
    /// A user id from a request: required, at most 200 bytes, no NUL.
    public static func user(_ id: String) throws -> String {
        guard !id.isEmpty else { throw ServiceError.invalid("user_id is required") }
        guard id.utf8.count <= 200, !id.utf8.contains(0) else { throw ServiceError.invalid("user_id is not valid") }
        return id
    }

    /// Trimmed text of at most `max` UTF-8 bytes without control characters (newline and tab
    /// allowed); `required`: not empty after trimming.
    public static func text(_ value: String, _ field: String, max: Int, required: Bool = false) throws -> String {
        let trimmed = value.trimmingCharacters(in: .whitespacesAndNewlines)
        if required && trimmed.isEmpty { throw ServiceError.invalid("\(field) is required") }
        guard trimmed.utf8.count <= max else { throw ServiceError.invalid("\(field) is longer than \(max) bytes") }
        guard !trimmed.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\n" && $0 != "\t" }) else {
            throw ServiceError.invalid("\(field) contains control characters")
        }
        return trimmed
    }

    /// The offset a page token stands for ("" is the first page).
    public static func offset(_ token: String) throws -> Int {
        if token.isEmpty { return 0 }
        guard token.count <= 9, let value = Int(token), value >= 0 else { throw ServiceError.invalid("invalid page_token") }
        return value
    }
}
