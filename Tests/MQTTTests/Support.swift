import Foundation
import FramecastTesting
import Logging
@testable import MQTT

let testLogger: Logger = {
    var logger = Logger(label: "mqtt-tests")
    logger.logLevel = .warning
    return logger
}()

/// A topic no other test (or test run) uses.
func uniqueTopic(_ name: String = "t") -> String { "test/\(UUID().uuidString)/\(name)" }

func uniqueClientID(_ name: String = "c") -> String { "\(name)-\(UUID().uuidString.prefix(12))" }

/// A broker and the identity the tests connect with (brokers accept no anonymous client).
struct TestBroker {
    let host: String
    let port: Int
    let identity: MQTTIdentity

    init(host: String, port: Int, identity: MQTTIdentity) {
        self.host = host
        self.port = port
        self.identity = identity
    }

    /// A private broker, as the test suite's observer.
    init(_ server: ServerProcess) {
        self.init(host: server.host, port: server.port, identity: server.mqttTester)
    }
}

func sharedBroker() throws -> TestBroker {
    let (host, port) = try TestServers.mqtt()
    return TestBroker(host: host, port: port, identity: try TestServers.mqttTester())
}

func makeClient(
    host: String, port: Int, identity: MQTTIdentity? = nil, id: String = uniqueClientID(), cleanSession: Bool = true,
    will: MQTTWill? = nil, connectTimeout: Duration = .seconds(10), keepAlive: Duration = .seconds(30)
) throws -> MQTTClient {
    try MQTTClient(configuration: MQTTConfiguration(
        host: host, port: port, clientID: id, cleanSession: cleanSession, username: identity?.user, password: identity?.password,
        keepAlive: keepAlive, will: will,
        reconnectDelay: .milliseconds(500), reconnectDelayMax: .seconds(2), connectTimeout: connectTimeout,
        operationTimeout: .seconds(20)
    ), logger: testLogger)
}

func connectedClient(_ broker: TestBroker, id: String = uniqueClientID(), cleanSession: Bool = true, will: MQTTWill? = nil) async throws -> MQTTClient {
    let client = try makeClient(host: broker.host, port: broker.port, identity: broker.identity, id: id, cleanSession: cleanSession, will: will)
    try await client.connect()
    return client
}

/// The next `count` messages, or a timeout error (generous: the machine is shared and loaded).
func next(_ count: Int, of messages: MQTTMessages, within timeout: Duration = .seconds(30)) async throws -> [MQTTMessage] {
    try await withDeadline(timeout, "waiting for \(count) message(s)") {
        var result: [MQTTMessage] = []
        for await message in messages {
            result.append(message)
            if result.count == count { break }
        }
        return result
    }
}

/// Waits until `condition` holds for the next event of `events`.
func waitFor(_ events: AsyncStream<MQTTConnectionEvent>, within timeout: Duration = .seconds(30),
             _ condition: @escaping @Sendable (MQTTConnectionEvent) -> Bool) async throws {
    try await withDeadline(timeout, "waiting for a connection event") {
        for await event in events where condition(event) { return }
        throw MQTTError(.closed, "connection events ended")
    }
}

func isConnectedEvent(_ e: MQTTConnectionEvent) -> Bool { if case .connected = e { true } else { false } }
func isDisconnectedEvent(_ e: MQTTConnectionEvent) -> Bool { if case .disconnected = e { true } else { false } }

func randomBytes(_ count: Int) -> [UInt8] {
    var g = SystemRandomNumberGenerator()
    return (0..<count).map { _ in UInt8.random(in: 0...255, using: &g) }
}
