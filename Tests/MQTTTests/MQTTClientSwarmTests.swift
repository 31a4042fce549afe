import Foundation
import FramecastTesting
import Testing
@testable import MQTT

/// Collects swarm deliveries (the handler runs on the swarm thread).
final class DeliveryLog: @unchecked Sendable {
    // @unchecked Sendable: `receivers` is only touched with `lock` held.
    private let lock = NSLock()
    private var receivers: [[UInt8]: Set<Int>] = [:]

    func record(_ delivery: MQTTSwarmDelivery) {
        lock.withLock { _ = receivers[delivery.message.payload, default: []].insert(delivery.client) }
    }

    func receivers(of payload: [UInt8]) -> Set<Int> { lock.withLock { receivers[payload] ?? [] } }

    /// Polls until `count` clients got `payload` (the waiting is bounded, never an assertion).
    func wait(for payload: [UInt8], count: Int, within timeout: Duration = .seconds(60)) async throws -> Set<Int> {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let got = receivers(of: payload)
            if got.count >= count { return got }
            try await Task.sleep(for: .milliseconds(20))
        }
        return receivers(of: payload)
    }
}

func taskCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? -1
}

@Suite("MQTTClientSwarm: many connections on one thread")
struct MQTTClientSwarmTests {
    @Test("300 clients on one loop thread all receive one QoS 1 message; a dropped client reconnects")
    func swarmFanOut() async throws {
        let broker = try sharedBroker()
        let topic = uniqueTopic("fanout")
        let prefix = uniqueClientID("swarm")
        let log = DeliveryLog()
        // MQTT_SWARM_TEST_COUNT scales the test up by hand (e.g. 3000); 300 by default.
        let count = ProcessInfo.processInfo.environment["MQTT_SWARM_TEST_COUNT"].flatMap(Int.init) ?? 300
        let swarm = try MQTTClientSwarm(configuration: MQTTSwarmConfiguration(
            host: broker.host, port: broker.port, count: count, clientID: { "\(prefix)-\($0)" },
            username: broker.identity.user, password: broker.identity.password,
            subscriptions: { _ in [(topic, .atLeastOnce)] }, reconnectDelay: .milliseconds(200), maxPendingConnects: 64
        ), logger: testLogger) { log.record($0) }

        let publisher = try await connectedClient(broker)
        let threadsBefore = taskCount()
        try await swarm.start()
        try await swarm.waitUntilReady(timeout: .seconds(120))
        let threadsAfter = taskCount()
        #expect(swarm.status.connected == count)
        // One swarm thread, never one per client (that would add `count` threads on its own). The
        // bound leaves room for the threads other tests running in parallel in this process
        // start meanwhile (125 seen in a cold CI run).
        #expect(threadsAfter - threadsBefore < count, "threads grew from \(threadsBefore) to \(threadsAfter)")

        let first: [UInt8] = Array("photo-1".utf8)
        let start = ContinuousClock.now
        try await publisher.publish(topic, payload: first, qos: .atLeastOnce)
        let got = try await log.wait(for: first, count: count)
        #expect(got == Set(0..<count))
        #expect(ContinuousClock.now - start < .seconds(60))

        // Drop one connection without DISCONNECT: the swarm reconnects and resubscribes it.
        try swarm.dropConnectionForTesting(client: 7)
        let deadline = ContinuousClock.now + .seconds(30)
        while swarm.status.disconnects == 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(swarm.status.disconnects >= 1)
        try await swarm.waitUntilReady(timeout: .seconds(60))
        let second: [UInt8] = Array("photo-2".utf8)
        try await publisher.publish(topic, payload: second, qos: .atLeastOnce)
        let gotSecond = try await log.wait(for: second, count: count)
        #expect(gotSecond.contains(7))
        #expect(gotSecond.count == count)

        // Clients publish too (frames report status).
        try await publisher.withMessages { messages in
            let statusTopic = uniqueTopic("status")
            try await publisher.subscribe([(statusTopic, .atLeastOnce)])
            try swarm.publish(client: 3, topic: statusTopic, payload: [3], qos: .atLeastOnce)
            #expect(try await next(1, of: messages)[0].payload == [3])
        }
        #expect(throws: MQTTError.self) { try swarm.publish(client: 3, topic: "bad/#", payload: []) }

        await swarm.shutdown()
        #expect(swarm.status.connected == 0)
        #expect(throws: MQTTError.self) { try swarm.publish(client: 0, topic: topic, payload: []) }
        await swarm.shutdown()  // idempotent
        await publisher.disconnect()
    }

    @Test("a swarm pointed at a port with no broker keeps retrying and shuts down cleanly")
    func swarmWithoutBroker() async throws {
        let port = try freeTCPPort()
        let swarm = try MQTTClientSwarm(configuration: MQTTSwarmConfiguration(
            host: "127.0.0.1", port: port, count: 5, clientID: { "nobroker-\($0)" }, reconnectDelay: .milliseconds(100)
        ), logger: testLogger) { _ in }
        try await swarm.start()
        let error = await #expect(throws: MQTTError.self) { try await swarm.waitUntilReady(timeout: .milliseconds(500)) }
        #expect(error?.code == .timeout)
        #expect(swarm.status.connected == 0)
        #expect(swarm.status.disconnects > 0)
        await swarm.shutdown()
    }
}
