import Foundation

/// A value guarded by a lock: the one place Framecast keeps small shared mutable state
/// (counters, waiter tables) that callbacks from C threads and Swift tasks both touch.
///
/// NSLock rather than `Synchronization.Mutex`: ThreadSanitizer on Linux reports false races
/// on Mutex (see PLATFORM.md).
public final class Locked<Value>: @unchecked Sendable {
    // @unchecked Sendable: `value` is only accessed inside `withLock`, under `lock`.
    private let lock = NSLock()
    private var value: Value

    public init(_ value: Value) { self.value = value }

    @discardableResult
    public func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }

    /// A copy of the current value.
    public var current: Value { withLock { $0 } }
}
