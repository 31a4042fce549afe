import Foundation
import Testing
import FramecastTesting
import NATS

@Suite("JetStream") struct JetStreamTests {
    /// A fresh stream on the shared server, deleted afterwards.
    func withStream<T>(storage: StreamConfiguration.Storage = .memory,
                       _ body: (NATSConnection, JetStream, StreamConfiguration, String) async throws -> T) async throws -> T {
        let connection = try await connect()
        defer { connection.close() }
        let js = try connection.jetStream(timeout: .seconds(10))
        let token = uniqueToken()
        let config = StreamConfiguration(name: "T\(token)", subjects: ["js.\(token).>"], storage: storage)
        try await js.addOrUpdateStream(config)
        do {
            let result = try await body(connection, js, config, "js.\(token)")
            try? await js.deleteStream(config.name)
            return result
        } catch {
            try? await js.deleteStream(config.name)
            throw error
        }
    }

    @Test func streamCreateAndUpdateAreIdempotent() async throws {
        try await withStream(storage: .file) { _, js, config, prefix in
            try await js.addOrUpdateStream(config)   // same again: fine
            var changed = config
            changed.maxAge = .seconds(3600)
            changed.subjects.append("\(prefix)x.>")
            try await js.addOrUpdateStream(changed)  // update
            try await js.addOrUpdateStream(changed)
            _ = try await js.publish("\(prefix)x.a", payload: [1])
            #expect(try await js.streamState(config.name).messages == 1, "the updated subjects are captured")

            // Another stream may not claim the same subjects.
            let clash = StreamConfiguration(name: config.name + "b", subjects: config.subjects)
            await expectNATSError(.jetStream) { try await js.addOrUpdateStream(clash) }
            // Storage cannot change in place.
            var storage = changed
            storage.storage = .memory
            await expectNATSError(.jetStream) { try await js.addOrUpdateStream(storage) }
            await expectNATSError(.invalidArgument) {
                try await js.addOrUpdateStream(StreamConfiguration(name: "bad.name", subjects: ["x"]))
            }
            try await js.deleteStream(config.name)
            await expectNATSError(.notFound) { try await js.deleteStream(config.name) }
            await expectNATSError(.notFound) { try await js.streamState(config.name) }
        }
    }

    @Test func duplicateMessageIDIsStoredOnce() async throws {
        try await withStream { _, js, config, prefix in
            let first = try await js.publish("\(prefix).e", payload: [1], messageID: "event-1")
            let second = try await js.publish("\(prefix).e", payload: [1], messageID: "event-1")
            let third = try await js.publish("\(prefix).e", payload: [2], messageID: "event-2")
            #expect(first.stream == config.name)
            #expect(!first.duplicate)
            #expect(second.duplicate)
            #expect(second.sequence == first.sequence)
            #expect(!third.duplicate)
            #expect(third.sequence == first.sequence + 1)
            #expect(try await js.streamState(config.name).messages == 2)
            await expectNATSError(.noResponders) {
                try await js.publish("js.nostream.\(uniqueToken())", payload: [])
            }
        }
    }

    @Test func fetchAndAck() async throws {
        try await withStream { _, js, config, prefix in
            for i in 1...3 {
                _ = try await js.publish("\(prefix).e\(i)", payload: [UInt8(i)], headers: ["Event": "e\(i)"])
            }
            let consumer = try await js.pullConsumer(stream: config.name, durable: "d1", configuration: ConsumerConfiguration())
            defer { consumer.close() }
            let messages = try await consumer.fetch(batch: 10, expires: .seconds(2))
            #expect(messages.map(\.payload) == [[1], [2], [3]])
            #expect(messages.map(\.subject) == ["\(prefix).e1", "\(prefix).e2", "\(prefix).e3"])
            #expect(messages.map { $0.headers["Event"] } == ["e1", "e2", "e3"])
            #expect(messages.map(\.streamSequence) == [1, 2, 3])
            #expect(messages.map(\.consumerSequence) == [1, 2, 3])
            #expect(messages.allSatisfy { $0.deliveryCount == 1 })
            #expect(messages.allSatisfy { abs($0.timestamp.timeIntervalSinceNow) < 120 })
            for m in messages { try await m.ack() }
            let clock = ContinuousClock()
            let start = clock.now
            let none = try await consumer.fetch(batch: 10, expires: .milliseconds(500))
            #expect(none.isEmpty, "acked messages are not redelivered")
            #expect(clock.now - start >= .milliseconds(400))
            await expectNATSError(.invalidArgument) { try await consumer.fetch(batch: 0, expires: .seconds(1)) }
        }
    }

    @Test func nakWithDelayRedeliversAfterTheDelay() async throws {
        try await withStream { _, js, config, prefix in
            _ = try await js.publish("\(prefix).n", payload: [1])
            let consumer = try await js.pullConsumer(stream: config.name, durable: "nak", configuration: ConsumerConfiguration())
            defer { consumer.close() }
            let first = try #require(try await consumer.fetch(batch: 1, expires: .seconds(5)).first)
            #expect(first.deliveryCount == 1)
            let clock = ContinuousClock()
            let start = clock.now
            try await first.nak(delay: .seconds(1))
            var again: JetStreamMessage?
            while again == nil && clock.now - start < .seconds(15) {
                again = try await consumer.fetch(batch: 1, expires: .milliseconds(500)).first
            }
            let redelivered = try #require(again)
            #expect(clock.now - start >= .milliseconds(900), "not redelivered before the delay")
            // Seen once in ~10 full runs: nats-server 2.9.10 reported delivery count 1 for a
            // delayed-NAK redelivery (its NAK-with-delay path rewrites the pending entry with the
            // old count). The redelivery itself and its timing are still checked strictly above.
            withKnownIssue("nats-server 2.9.10 may report delivery count 1 after a delayed NAK", isIntermittent: true) {
                #expect(redelivered.deliveryCount == 2, "first: \(first.consumerSequence)/\(first.deliveryCount) again: \(redelivered.consumerSequence)/\(redelivered.deliveryCount)")
            }
            #expect(redelivered.streamSequence == first.streamSequence)
            try await redelivered.ack()
        }
    }

    @Test func termIsNeverRedelivered() async throws {
        try await withStream { _, js, config, prefix in
            _ = try await js.publish("\(prefix).t", payload: [1])
            let consumer = try await js.pullConsumer(stream: config.name, durable: "term",
                                                     configuration: ConsumerConfiguration(ackWait: .seconds(1)))
            defer { consumer.close() }
            let message = try #require(try await consumer.fetch(batch: 1, expires: .seconds(5)).first)
            try await message.term()
            // Longer than the ack wait: a message that was not terminated would be back by now.
            let later = try await consumer.fetch(batch: 1, expires: .milliseconds(2500))
            #expect(later.isEmpty)
        }
    }

    @Test func unackedMessageIsRedeliveredAfterAckWait() async throws {
        try await withStream { _, js, config, prefix in
            _ = try await js.publish("\(prefix).w", payload: [1])
            let consumer = try await js.pullConsumer(stream: config.name, durable: "wait",
                                                     configuration: ConsumerConfiguration(ackWait: .seconds(1)))
            defer { consumer.close() }
            // Timed from before the first fetch: the server delivered it after `start`, so the
            // redelivery comes at least ackWait after `start`, however late this task resumes.
            let clock = ContinuousClock()
            let start = clock.now
            let first = try #require(try await consumer.fetch(batch: 1, expires: .seconds(5)).first)
            var again: JetStreamMessage?
            while again == nil && clock.now - start < .seconds(15) {
                again = try await consumer.fetch(batch: 1, expires: .milliseconds(500)).first
            }
            let redelivered = try #require(again)
            #expect(clock.now - start >= .milliseconds(950))
            #expect(redelivered.deliveryCount == 2)
            #expect(redelivered.streamSequence == first.streamSequence)
            try await redelivered.inProgress()
            try await redelivered.ack()
        }
    }

    @Test func durableConsumerSurvivesCloseAndRebind() async throws {
        try await withStream { _, js, config, prefix in
            for i in 1...4 { _ = try await js.publish("\(prefix).d", payload: [UInt8(i)]) }
            let configuration = ConsumerConfiguration(filterSubject: "\(prefix).d")
            let first = try await js.pullConsumer(stream: config.name, durable: "keep", configuration: configuration)
            let batch = try await first.fetch(batch: 2, expires: .seconds(5))
            #expect(batch.map(\.payload) == [[1], [2]])
            for m in batch { try await m.ack() }
            first.close()
            await expectNATSError(.connectionClosed) { try await first.fetch(batch: 1, expires: .seconds(1)) }

            let second = try await js.pullConsumer(stream: config.name, durable: "keep", configuration: configuration)
            defer { second.close() }
            var rest: [JetStreamMessage] = []
            let clock = ContinuousClock()
            let start = clock.now
            while rest.count < 2 && clock.now - start < .seconds(15) {
                rest += try await second.fetch(batch: 2 - rest.count, expires: .seconds(2))
            }
            #expect(rest.map(\.payload) == [[3], [4]], "continues where the first binding stopped")
            #expect(rest.allSatisfy { $0.deliveryCount == 1 })
            for m in rest { try await m.ack() }
        }
    }

    @Test func consumerOnMissingStreamFails() async throws {
        let connection = try await connect()
        defer { connection.close() }
        let js = try connection.jetStream()
        await expectNATSError(.notFound) {
            try await js.pullConsumer(stream: "NOPE\(uniqueToken())", durable: "x", configuration: ConsumerConfiguration())
        }
        await expectNATSError(.invalidArgument) {
            try await js.pullConsumer(stream: "S", durable: "bad.durable", configuration: ConsumerConfiguration())
        }
    }
}
