import Foundation
import Testing
import FramecastTesting
import NATS
#if canImport(Glibc)
import Glibc
#endif

/// A nats-server with authentication, started by this test and stopped by its PID.
final class AuthServer: @unchecked Sendable {
    // @unchecked Sendable: all stored properties are immutable after init.
    let port: Int
    private let process = Process()

    init(_ arguments: [String]) throws {
        port = try freeTCPPort()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["nats-server", "-a", "127.0.0.1", "-p", String(port)] + arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline && !tcpPortAcceptsConnections(port) { usleep(20_000) }
    }

    var url: String { "nats://127.0.0.1:\(port)" }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}

@Suite("NATS servers and failures") struct ServerFailureTests {
    @Test func userAndPasswordAuthentication() async throws {
        let server = try AuthServer(["--user", "frame", "--pass", "s3cret"])
        defer { server.stop() }
        let good = try await connect(server.url) { $0.user = "frame"; $0.password = "s3cret" }
        defer { good.close() }
        try good.publish("auth.ok", payload: [1])
        try await good.flush()
        #expect(good.isConnected)
        await expectNATSError(.authorizationFailed) {
            try await connect(server.url) { $0.user = "frame"; $0.password = "wrong" }
        }
        await expectNATSError(.authorizationFailed) { try await connect(server.url) }
    }

    @Test func tokenAuthentication() async throws {
        let server = try AuthServer(["--auth", "t0ken"])
        defer { server.stop() }
        let good = try await connect(server.url) { $0.token = "t0ken" }
        defer { good.close() }
        try await good.flush()
        await expectNATSError(.authorizationFailed) { try await connect(server.url) { $0.token = "nope" } }
    }

    @Test func serverListSkipsADeadServer() async throws {
        let deadPort = try freeTCPPort()
        var configuration = try TestServers.natsConfiguration(name: "list")
        configuration.servers = ["nats://127.0.0.1:\(deadPort)", try TestServers.natsURL()]
        configuration.connectTimeout = .seconds(1)
        let connection = try await NATSConnection.connect(configuration, logger: testLogger)
        defer { connection.close() }
        #expect(connection.isConnected)
        #expect(connection.connectedURL == (try TestServers.natsURL()))
    }

    @Test func cancellingARequestEndsItPromptly() async throws {
        let server = try await connect()
        let client = try await connect()
        defer { server.close(); client.close() }
        let subject = "test.cancel.\(uniqueToken())"
        try await serving(server, subject, handler: { _ in }) {
            let clock = ContinuousClock()
            let start = clock.now
            let task = Task { try await client.request(subject, payload: [], timeout: .seconds(60)) }
            try await Task.sleep(for: .milliseconds(100))
            task.cancel()
            let result = await task.result
            #expect(throws: CancellationError.self) { try result.get() }
            #expect(clock.now - start < .seconds(10))
        }
        // The connection still works after a cancelled request.
        try await serving(server, subject, handler: { try server.respond(to: $0, payload: [1]) }) {
            let reply = try await client.request(subject, payload: [], timeout: .seconds(10))
            #expect(reply.payload == [1])
        }
    }

    @Test func jetStreamConsumerWorksAgainAfterServerRestart() async throws {
        let server = try ServerProcess(.nats, jetStream: true)
        defer { server.stop() }
        let connection = try await connect(server.url) { $0.reconnectWait = .milliseconds(100) }
        defer { connection.close() }
        let js = try connection.jetStream(timeout: .seconds(5))
        let token = uniqueToken()
        try await js.addOrUpdateStream(StreamConfiguration(name: "R\(token)", subjects: ["r.\(token).>"], storage: .file))
        _ = try await js.publish("r.\(token).a", payload: [1], messageID: "m1")
        let consumer = try await js.pullConsumer(stream: "R\(token)", durable: "worker", configuration: ConsumerConfiguration())
        defer { consumer.close() }
        let first = try await consumer.fetch(batch: 1, expires: .seconds(5))
        #expect(first.map(\.payload) == [[1]])
        for m in first { try await m.ack() }

        server.stop()
        try await eventually("the disconnect") { !connection.isConnected }
        try server.start()
        try await eventually("the reconnect", timeout: .seconds(30)) { connection.isConnected }

        // JetStream may need a moment to recover its streams after a restart: retry.
        let clock = ContinuousClock()
        let start = clock.now
        var ack: PublishAck?
        while ack == nil && clock.now - start < .seconds(30) {
            do { ack = try await js.publish("r.\(token).a", payload: [2], messageID: "m2") } catch {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        #expect(ack?.sequence == 2, "the file stream kept its first message across the restart")
        var next: [JetStreamMessage] = []
        while next.isEmpty && clock.now - start < .seconds(45) {
            do { next = try await consumer.fetch(batch: 1, expires: .seconds(1)) } catch {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        #expect(next.map(\.payload) == [[2]], "the durable consumer continues after the restart")
        for m in next { try await m.ack() }
    }
}
