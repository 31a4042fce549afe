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

let testLogger = quietLogger

/// A private nats-server (JetStream) and a fresh database, so tests own the EVENTS stream.
struct Fixture {
    let backend: IsolatedBackend
    var nats: NATSConnection { backend.nats }
    var postgres: PostgresPool { backend.postgres }
    let schema = "svc"

    static func make() async throws -> Fixture {
        let fixture = Fixture(backend: try await IsolatedBackend.make())
        _ = try await Migrations.apply(schema: fixture.schema, Outbox.migrations(schema: fixture.schema) + [
            Migration(version: 100, name: "notes", sql: "CREATE TABLE svc.notes (id bigserial PRIMARY KEY, event_id text, text text)"),
        ], on: fixture.postgres, logger: testLogger)
        return fixture
    }

    func close() async { await backend.close() }
}

/// Runs `services` while `body` runs, then shuts them down gracefully.
func withServices<T: Sendable>(_ services: [any Service], _ body: () async throws -> T) async throws -> T {
    try await FramecastTesting.withServices(services, logger: testLogger, body)
}
