import Foundation

/// A value guarded by a lock. `NSLock` rather than `Synchronization.Mutex`: ThreadSanitizer
/// on Linux reports false races on `Mutex` (PLATFORM.md).
final class Locked<Value>: @unchecked Sendable {
    // @unchecked Sendable: `value` is read and written only inside `withLock`, under `lock`.
    // Non-Sendable contents (the pool's idle PostgresConnections) are only handed to one pool
    // thread at a time: a connection taken out is not reachable through `value` until it is
    // put back.
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
