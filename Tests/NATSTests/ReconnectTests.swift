import Foundation
import Testing
import FramecastTesting
import NATS

@Suite("NATS reconnect") struct ReconnectTests {
    @Test func subscriptionSurvivesServerRestart() async throws {
        let server = try ServerProcess(.nats, jetStream: false)
        defer { server.stop() }
        let connection = try await connect(server.url) { $0.reconnectWait = .milliseconds(100) }
        defer { connection.close() }
        let subject = "test.restart.\(uniqueToken())"
        try await connection.subscribe(subject) { subscription in
            try await connection.flush()
            try connection.publish(subject, payload: [1])
            #expect(try await next(subscription)?.payload == [1])
            #expect(connection.connectionChanges == 0)

            server.stop()
            try await eventually("the client to notice the disconnect") { !connection.isConnected }
            try server.start()
            try await eventually("the client to reconnect", timeout: .seconds(30)) { connection.isConnected }
            try await connection.flush()   // the resubscription has reached the new server
            // Messages published meanwhile were missed: subscribers that cache learn it here.
            // (The reconnected callback runs on nats.c's event thread, maybe just after the status changed.)
            try await eventually("a disconnect and a reconnect counted") { connection.connectionChanges >= 2 }

            let publisher = try await connect(server.url)
            defer { publisher.close() }
            try publisher.publish(subject, payload: [2])
            try await publisher.flush()
            #expect(try await next(subscription)?.payload == [2], "the existing subscription receives again")
            try connection.publish(subject, payload: [3])
            #expect(try await next(subscription)?.payload == [3])
        }
    }
}
