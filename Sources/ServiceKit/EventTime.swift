import Foundation

/// Event times on the wire: unix milliseconds (`occurred_at`, `created_at`…).
public enum EventTime {
    public static func now() -> Int64 { millis(Date()) }
    public static func millis(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }
}
