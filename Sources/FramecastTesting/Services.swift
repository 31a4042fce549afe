import Foundation
import Logging
import NATS
import Postgres
import ServiceLifecycle
import Wire

/// Runs `services` in a ServiceGroup while `body` runs, then shuts them down gracefully and
/// waits for them to finish.
public func withServices<T: Sendable>(_ services: [any Service], logger: Logger = Logger(label: "test-services"),
                                      _ body: () async throws -> T) async throws -> T {
    let group = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) }, logger: logger))
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        do {
            let result = try await body()
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            return result
        } catch {
            await group.triggerGracefulShutdown()
            try? await tasks.waitForAll()
            throw error
        }
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
public func eventually(timeout: Duration = .seconds(15), _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}

/// A private nats-server with JetStream (so a test owns its `EVENTS` stream), a connection
/// to it, and a fresh PostgreSQL database.
public struct IsolatedBackend: Sendable {
    public let server: ServerProcess
    public let nats: NATSConnection
    public let postgres: PostgresPool
    public let connInfo: String

    public static func make(logger: Logger = quietLogger) async throws -> IsolatedBackend {
        let server = try ServerProcess(.nats)
        let nats = try await NATSConnection.connect(NATSConfiguration(servers: [server.url], name: "tests"), logger: logger)
        let connInfo = try await TestServers.makeDatabase()
        let postgres = PostgresPool(configuration: PostgresConfiguration(connInfo: connInfo), logger: logger)
        return IsolatedBackend(server: server, nats: nats, postgres: postgres, connInfo: connInfo)
    }

    public func close() async {
        await postgres.close()
        nats.close()
        server.stop()
    }
}

/// A logger that shows only critical messages: the failures tests provoke on purpose log errors.
/// FRAMECAST_TEST_LOG_LEVEL (e.g. debug) shows more when a test needs explaining.
public let quietLogger: Logger = {
    var logger = Logger(label: "tests")
    logger.logLevel = ProcessInfo.processInfo.environment["FRAMECAST_TEST_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
    return logger
}()

/// Every event of type `E` now in the `EVENTS` stream, read with a throw-away durable
/// consumer (so it sees events other consumers already acked).
public func eventsInStream<E: WireEvent>(_ type: E.Type, jetStream: JetStream) async throws -> [E] {
    let consumer = try await jetStream.pullConsumer(
        stream: Subjects.streamName, durable: "inspect_\(UUID().uuidString.prefix(8))",
        configuration: ConsumerConfiguration(filterSubject: E.subject))
    defer { consumer.close() }
    var events: [E] = []
    while true {
        let batch = try await consumer.fetch(batch: 100, expires: .milliseconds(300))
        if batch.isEmpty { return events }
        for message in batch {
            events.append(try E(wireBytes: message.payload))
            try await message.ack()
        }
    }
}
