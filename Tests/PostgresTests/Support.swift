import FramecastTesting
import Foundation
import Logging
import Postgres
import Testing

/// A pool on a fresh database of the test PostgreSQL server; closed when `body` ends.
@discardableResult
func withPool<T>(
    maxConnections: Int = 2, logger: Logger = Logger(label: "postgres-tests"),
    _ body: (PostgresPool) async throws -> T
) async throws -> T {
    let connInfo = try await TestServers.makeDatabase(prefix: "pg")
    let pool = PostgresPool(configuration: PostgresConfiguration(connInfo: connInfo, maxConnections: maxConnections), logger: logger)
    do {
        let result = try await body(pool)
        await pool.close()
        return result
    } catch {
        await pool.close()
        throw error
    }
}

/// Runs `body`, expecting a ``PostgresError``, and returns it (a failed expectation otherwise).
func expectPostgresError(
    sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void
) async -> PostgresError? {
    do {
        try await body()
        Issue.record("expected a PostgresError, but nothing was thrown", sourceLocation: sourceLocation)
        return nil
    } catch let error as PostgresError {
        return error
    } catch {
        Issue.record("expected a PostgresError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// A log handler that keeps every message, to check what the library logs.
struct CapturingLogHandler: LogHandler {
    final class Store: @unchecked Sendable {
        // @unchecked Sendable: `entries` is only touched under `lock`.
        private let lock = NSLock()
        private var entries: [(Logger.Level, String, Logger.Metadata)] = []
        func append(_ entry: (Logger.Level, String, Logger.Metadata)) { lock.withLock { entries.append(entry) } }
        var all: [(level: Logger.Level, message: String, metadata: Logger.Metadata)] {
            lock.withLock { entries.map { (level: $0.0, message: $0.1, metadata: $0.2) } }
        }
    }

    let store: Store
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        store.append((event.level, event.message.description, metadata.merging(event.metadata ?? [:]) { $1 }))
    }

    static func logger() -> (Logger, Store) {
        let store = Store()
        return (Logger(label: "postgres-tests") { _ in CapturingLogHandler(store: store) }, store)
    }
}
