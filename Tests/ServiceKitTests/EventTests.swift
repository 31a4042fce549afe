import Foundation
import FramecastTesting
import NATS
import Postgres
import ServiceKit
import ServiceLifecycle
import Testing
import Threads
import Wire

/// The outbox relay and event consumers against a real nats-server (JetStream) and PostgreSQL.
@Suite struct EventTests {
    func eventsInStream(_ fixture: Fixture) async throws -> [TestEvent] {
        try await FramecastTesting.eventsInStream(TestEvent.self, jetStream: fixture.nats.jetStream())
    }

    func enqueue(_ fixture: Fixture, _ event: TestEvent, rollback: Bool = false) async throws {
        struct Rollback: Error {}
        do {
            try await fixture.postgres.withTransaction { connection in
                _ = try connection.execute("INSERT INTO svc.notes (event_id, text) VALUES ($1, 'state change')", [.text(event.eventID)])
                try Outbox.enqueue(event, schema: "svc", on: connection)
                if rollback { throw Rollback() }
            }
        } catch is Rollback {}
    }

    func relay(_ fixture: Fixture) throws -> OutboxRelay {
        var configuration = OutboxRelay.Configuration()
        configuration.pollInterval = .milliseconds(50)
        return OutboxRelay(schema: "svc", postgres: fixture.postgres, jetStream: try fixture.nats.jetStream(),
                           configuration: configuration, logger: testLogger)
    }

    @Test func committedEventsArePublishedAndRolledBackOnesAreNot() async throws {
        let fixture = try await Fixture.make()
        try await EventStream.ensure(on: fixture.nats.jetStream())
        let kept = TestEvent(text: "kept"), dropped = TestEvent(text: "rolled back")
        try await enqueue(fixture, kept)
        try await enqueue(fixture, dropped, rollback: true)

        let relay = try relay(fixture)
        #expect(try await relay.relayOnce() == 1)
        #expect(try await relay.backlog() == 0)
        #expect(try await eventsInStream(fixture) == [kept])
        let published = try await fixture.postgres.query("SELECT published_at IS NOT NULL AS done FROM svc.outbox")
        #expect(try published.map { try $0.decode("done", as: Bool.self) } == [true])
        await fixture.close()
    }

    @Test func eventCommittedWhileTheRelayIsDownArrivesOnceItRuns() async throws {
        let fixture = try await Fixture.make()
        try await EventStream.ensure(on: fixture.nats.jetStream())
        // The relay is not running (killed) when the transaction commits.
        let event = TestEvent(text: "committed while relay down")
        try await enqueue(fixture, event)
        #expect(try await eventsInStream(fixture).isEmpty)

        // Restarted: the relay finds the row and publishes it, once.
        try await withServices([try relay(fixture)]) {
            let drained = try await eventually { try await relay(fixture).backlog() == 0 }
            #expect(drained)
        }
        #expect(try await eventsInStream(fixture) == [event])
        await fixture.close()
    }

    @Test func relayDyingAfterPublishBeforeMarkingCausesNoDuplicate() async throws {
        let fixture = try await Fixture.make()
        let jetStream = try fixture.nats.jetStream()
        try await EventStream.ensure(on: jetStream)
        let event = TestEvent(text: "published, not marked")
        try await enqueue(fixture, event)
        // What a relay killed right after JetStream's ack would have left: the event is in the
        // stream, the row is still unpublished.
        _ = try await jetStream.publish(TestEvent.subject, payload: event.wireBytes(), messageID: event.eventID)

        let relay = try relay(fixture)
        #expect(try await relay.relayOnce() == 1)
        #expect(try await relay.backlog() == 0)
        #expect(try await eventsInStream(fixture) == [event], "JetStream dropped the republish as a duplicate")
        await fixture.close()
    }

    @Test func twoRelaysShareTheOutboxWithoutDuplicates() async throws {
        let fixture = try await Fixture.make()
        try await EventStream.ensure(on: fixture.nats.jetStream())
        let events = (0..<120).map { TestEvent(text: "event \($0)") }
        for event in events { try await enqueue(fixture, event) }
        try await withServices([try relay(fixture), try relay(fixture)]) {
            let drained = try await eventually { try await relay(fixture).backlog() == 0 }
            #expect(drained)
        }
        let seen = try await eventsInStream(fixture)
        #expect(seen.count == events.count)
        #expect(Set(seen.map(\.eventID)) == Set(events.map(\.eventID)))
        await fixture.close()
    }

    // MARK: consumers

    func consumer(_ fixture: Fixture, _ handler: EventHandler) throws -> EventConsumerService {
        var configuration = EventConsumerService.Configuration()
        configuration.retryBase = .milliseconds(100)
        configuration.fetchWait = .milliseconds(300)
        configuration.maxDeliveries = 4
        return EventConsumerService(service: "notes", schema: "svc", handlers: [handler],
                                    jetStream: try fixture.nats.jetStream(), postgres: fixture.postgres,
                                    configuration: configuration, logger: testLogger)
    }

    /// A handler that records each event as a note in its transaction and counts the calls.
    func recordingHandler(calls: Locked<[String: Int]>, failFirst: Bool = false,
                          delay: Duration = .zero) -> EventHandler {
        EventHandler(TestEvent.self) { event, delivery in
            let attempt = calls.withLock { calls -> Int in
                calls[event.eventID, default: 0] += 1
                return calls[event.eventID]!
            }
            if failFirst && attempt == 1 { throw CocoaError(.fileWriteUnknown) }
            if delay > .zero { try await Task.sleep(for: delay) }
            try await delivery.transaction { connection in
                _ = try connection.execute("INSERT INTO svc.notes (event_id, text) VALUES ($1, $2)",
                                           [.text(event.eventID), .text(event.text)])
            }
        }
    }

    func notes(_ fixture: Fixture, _ eventID: String) async throws -> Int {
        let rows = try await fixture.postgres.query("SELECT count(*)::bigint AS n FROM svc.notes WHERE event_id = $1", [.text(eventID)])
        return Int(try rows[0].decode("n", as: Int64.self))
    }

    @Test func theSameEventDeliveredTwiceIsHandledOnce() async throws {
        let fixture = try await Fixture.make()
        let jetStream = try fixture.nats.jetStream()
        // A short duplicate window lets the test put the same event into the stream twice.
        try await jetStream.addOrUpdateStream(StreamConfiguration(
            name: Subjects.streamName, subjects: Subjects.streamSubjects, duplicateWindow: .milliseconds(200)))
        let event = TestEvent(text: "twice")
        let calls = Locked([String: Int]())
        try await withServices([try consumer(fixture, recordingHandler(calls: calls))]) {
            _ = try await jetStream.publish(TestEvent.subject, payload: event.wireBytes(), messageID: event.eventID)
            #expect(try await eventually { try await notes(fixture, event.eventID) == 1 })
            try await Task.sleep(for: .milliseconds(400))
            let second = try await jetStream.publish(TestEvent.subject, payload: event.wireBytes(), messageID: event.eventID)
            #expect(!second.duplicate, "the stream really holds a second copy")
            try await Task.sleep(for: .seconds(1))
        }
        #expect(try await notes(fixture, event.eventID) == 1)
        #expect(calls.current[event.eventID] == 1, "the second delivery was recognised before the handler ran")
        await fixture.close()
    }

    @Test func aFailedHandlerIsRetriedAndCommitsOnce() async throws {
        let fixture = try await Fixture.make()
        let jetStream = try fixture.nats.jetStream()
        try await EventStream.ensure(on: jetStream)
        let event = TestEvent(text: "fails once")
        let calls = Locked([String: Int]())
        try await withServices([try consumer(fixture, recordingHandler(calls: calls, failFirst: true))]) {
            _ = try await jetStream.publish(TestEvent.subject, payload: event.wireBytes(), messageID: event.eventID)
            #expect(try await eventually { try await notes(fixture, event.eventID) == 1 })
        }
        #expect(calls.current[event.eventID] == 2)
        #expect(try await notes(fixture, event.eventID) == 1)
        await fixture.close()
    }

    @Test func anUndecodableEventIsTerminatedNotRetried() async throws {
        let fixture = try await Fixture.make()
        let jetStream = try fixture.nats.jetStream()
        try await EventStream.ensure(on: jetStream)
        let calls = Locked([String: Int]())
        let good = TestEvent(text: "after the poison")
        try await withServices([try consumer(fixture, recordingHandler(calls: calls))]) {
            _ = try await jetStream.publish(TestEvent.subject, payload: Array("no separator".utf8), messageID: UUID().uuidString)
            _ = try await jetStream.publish(TestEvent.subject, payload: good.wireBytes(), messageID: good.eventID)
            #expect(try await eventually { try await notes(fixture, good.eventID) == 1 }, "a poison event does not block the next")
        }
        #expect(calls.current.count == 1)
        await fixture.close()
    }

    @Test func gracefulShutdownFinishesAndAcksTheEventInFlight() async throws {
        let fixture = try await Fixture.make()
        let jetStream = try fixture.nats.jetStream()
        try await EventStream.ensure(on: jetStream)
        let event = TestEvent(text: "slow")
        let calls = Locked([String: Int]())
        let service = try consumer(fixture, recordingHandler(calls: calls, delay: .milliseconds(800)))
        let group = ServiceGroup(configuration: .init(services: [.init(service: service)], logger: testLogger))
        let running = Task { try await group.run() }
        _ = try await jetStream.publish(TestEvent.subject, payload: event.wireBytes(), messageID: event.eventID)
        #expect(try await eventually { calls.current[event.eventID] == 1 })
        await group.triggerGracefulShutdown()
        try await running.value
        #expect(try await notes(fixture, event.eventID) == 1, "the in-flight handler finished")

        // A new consumer instance is not given the event again: it was acked.
        let calls2 = Locked([String: Int]())
        try await withServices([try consumer(fixture, recordingHandler(calls: calls2))]) {
            try await Task.sleep(for: .seconds(1))
        }
        #expect(calls2.current.isEmpty)
        await fixture.close()
    }
}
