import Foundation
import Logging
import Testing
import FramecastTesting
import NATS

let testLogger: Logger = {
    var logger = Logger(label: "NATSTests")
    logger.logLevel = .info
    return logger
}()

struct TestTimeout: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(what)" }
}

/// A unique subject/stream token so tests can run in parallel on the shared server.
func uniqueToken() -> String { UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased() }

/// Connects to `url` (a test's private server), or to the shared server as the test suite's
/// own identity.
func connect(_ url: String? = nil, configure: (inout NATSConfiguration) -> Void = { _ in }) async throws -> NATSConnection {
    var configuration = try url.map { NATSConfiguration(servers: [$0], name: "nats-tests") }
        ?? TestServers.natsConfiguration(name: "nats-tests")
    configure(&configuration)
    return try await NATSConnection.connect(configuration, logger: testLogger)
}

/// The next message of `subscription`, or throws after `timeout`.
func next(_ subscription: NATSSubscription, timeout: Duration = .seconds(10)) async throws -> NATSMessage? {
    try await withThrowingTaskGroup(of: NATSMessage?.self) { group in
        group.addTask {
            var iterator = subscription.makeAsyncIterator()
            return await iterator.next()
        }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw TestTimeout(what: "a message on \(subscription.subject)")
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// Polls `condition` until it holds or `timeout` passes.
func eventually(_ what: String, timeout: Duration = .seconds(15), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    if try await condition() { return }
    throw TestTimeout(what: what)
}

/// Serves `subject` with `handler` (on a child task) while `body` runs.
func serving<T: Sendable>(_ connection: NATSConnection, _ subject: String, queue: String? = nil,
                          handler: @escaping @Sendable (NATSMessage) async throws -> Void,
                          _ body: () async throws -> T) async throws -> T {
    try await connection.subscribe(subject, queue: queue) { subscription in
        try await connection.flush()
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await message in subscription { try? await handler(message) }
            }
            defer { group.cancelAll() }
            return try await body()
        }
    }
}

/// A thread-safe box for test bookkeeping.
final class Box<Value: Sendable>: @unchecked Sendable {
    // @unchecked Sendable: `value` is only touched while holding `lock`.
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    var get: Value { lock.withLock { value } }
    func update<R>(_ body: (inout Value) -> R) -> R { lock.withLock { body(&value) } }
}

func expectNATSError<T>(_ code: NATSError.Code, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation,
                        _ body: () async throws -> T) async {
    do {
        _ = try await body()
        Issue.record("expected NATSError.\(code), got success. \(comment?.description ?? "")", sourceLocation: sourceLocation)
    } catch let error as NATSError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected NATSError.\(code), got \(error)", sourceLocation: sourceLocation)
    }
}
