import Foundation
import FramecastTesting
import Logging
import NATS
import Postgres
import ServiceKit
import ServiceLifecycle
import Wire

/// A request/reply message defined by the tests: UTF-8 text on the wire.
struct Text: WireMessage {
    var text: String
    init(_ text: String) { self.text = text }
    init(wireBytes: some Collection<UInt8>) throws {
        guard let s = String(validating: Array(wireBytes), as: UTF8.self), !s.hasPrefix("\u{FFFD}") else {
            throw TestWireError()
        }
        text = s
    }
    func wireBytes() -> [UInt8] { Array(text.utf8) }
}

struct TestWireError: Error {}

/// An event defined by the tests: `<id>|<text>` on the wire, published on `device.test`.
struct TestEvent: WireEvent {
    static let subject = "device.test"
    var eventID: String
    var occurredAt: Int64 = 0
    var userID = ""
    var text: String
    init(eventID: String = UUID().uuidString, text: String) {
        self.eventID = eventID
        self.text = text
    }
    init(wireBytes: some Collection<UInt8>) throws {
        let parts = String(decoding: Array(wireBytes), as: UTF8.self).split(separator: "|", maxSplits: 1)
        guard parts.count == 2 else { throw TestWireError() }
        eventID = String(parts[0])
        text = String(parts[1])
    }
    func wireBytes() -> [UInt8] { Array("\(eventID)|\(text)".utf8) }
}

let testLogger: Logger = {
    var logger = Logger(label: "servicekit-tests")
    logger.logLevel = .critical  // the failures tests provoke on purpose log errors
    return logger
}()

/// A private nats-server (JetStream) and a fresh database, so tests own the EVENTS stream.
struct Fixture {
    let server: ServerProcess
    let nats: NATSConnection
    let postgres: PostgresPool
    let schema = "svc"

    static func make() async throws -> Fixture {
        let server = try ServerProcess(.nats)
        let nats = try await NATSConnection.connect(NATSConfiguration(servers: [server.url], name: "servicekit-tests"),
                                                    logger: testLogger)
        let postgres = PostgresPool(configuration: PostgresConfiguration(connInfo: try TestServers.makeDatabase(prefix: "sk")),
                                    logger: testLogger)
        let fixture = Fixture(server: server, nats: nats, postgres: postgres)
        _ = try await Migrations.apply(schema: fixture.schema, Outbox.migrations(schema: fixture.schema) + [
            Migration(version: 100, name: "notes", sql: "CREATE TABLE svc.notes (id bigserial PRIMARY KEY, event_id text, text text)"),
        ], on: postgres, logger: testLogger)
        return fixture
    }

    func close() async {
        await postgres.close()
        nats.close()
        server.stop()
    }
}

/// Runs `services` in a ServiceGroup while `body` runs, then shuts them down gracefully.
func withServices<T: Sendable>(_ services: [any Service], _ body: () async throws -> T) async throws -> T {
    let group = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) }, logger: testLogger))
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

/// Polls `condition` until it holds or `timeout` passes.
func eventually(timeout: Duration = .seconds(15), _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}
