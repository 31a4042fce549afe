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

func sharedBroker() throws -> (host: String, port: Int) { try TestServers.mqtt() }

func makeClient(
    host: String, port: Int, id: String = uniqueClientID(), cleanSession: Bool = true,
    will: MQTTWill? = nil, connectTimeout: Duration = .seconds(10), keepAlive: Duration = .seconds(30)
) throws -> MQTTClient {
    try MQTTClient(configuration: MQTTConfiguration(
        host: host, port: port, clientID: id, cleanSession: cleanSession, keepAlive: keepAlive, will: will,
        reconnectDelay: .milliseconds(500), reconnectDelayMax: .seconds(2), connectTimeout: connectTimeout,
        operationTimeout: .seconds(20)
    ), logger: testLogger)
}

func connectedClient(_ broker: (host: String, port: Int), id: String = uniqueClientID(), cleanSession: Bool = true, will: MQTTWill? = nil) async throws -> MQTTClient {
    let client = try makeClient(host: broker.host, port: broker.port, id: id, cleanSession: cleanSession, will: will)
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
