import Foundation
import FramecastTesting
import NATS
import ServiceKit
import ServiceLifecycle
import Testing
import Wire

@Suite struct RequestServiceTests {
    func echoService(_ fixture: Fixture, name: String = "echo", delay: Duration = .zero) -> RequestService {
        let identity = ServiceIdentity(name: name, description: "test echo")
        return RequestService(identity: identity, endpoints: [
            Endpoint("Upper") { (request: Text, _) in
                if delay > .zero { try await Task.sleep(for: delay) }
                return Text(request.text.uppercased())
            },
            Endpoint("Who") { (_: Text, _) in Text(identity.instanceID) },
            Endpoint("Missing") { (_: Text, _) -> Text in throw ServiceError.notFound("no photo with that id") },
            Endpoint("Crash") { (_: Text, _) -> Text in throw CocoaError(.fileReadCorruptFile) },
        ], nats: fixture.nats, logger: testLogger)
    }

    @Test func answersThroughTheReplyEnvelope() async throws {
        let fixture = try await Fixture.make()
        let service = echoService(fixture)
        try await withServices([service]) {
            let client = ServiceClient(service: "echo", nats: fixture.nats)
            try await waitUntilServing(client)
            let reply = try await client.call("Upper", Text("hello, frame"), as: Text.self)
            #expect(reply.text == "HELLO, FRAME")
        }
        await fixture.close()
    }

    @Test func mapsErrorsToStatuses() async throws {
        let fixture = try await Fixture.make()
        try await withServices([echoService(fixture)]) {
            let client = ServiceClient(service: "echo", nats: fixture.nats)
            try await waitUntilServing(client)

            let notFound = await #expect(throws: ServiceError.self) { _ = try await client.call("Missing", Text("x"), as: Text.self) }
            #expect(notFound?.status == .notFound)
            #expect(notFound?.message == "no photo with that id")

            // An unexpected error becomes `internal` without leaking its details.
            let crash = await #expect(throws: ServiceError.self) { _ = try await client.call("Crash", Text("x"), as: Text.self) }
            #expect(crash?.status == .internal)
            #expect(crash?.message == "internal error")

            // Bytes that are not the request message: `invalid`, and micro-style error headers.
            let raw = try await fixture.nats.request(Subjects.request(service: "echo", method: "Upper"),
                                                     payload: [0xFF, 0xFE, 0x00], timeout: .seconds(5))
            let reply = try Reply(wireBytes: raw.payload)
            #expect(reply.status == .invalid)
            #expect(reply.message.contains("malformed"))
            #expect(raw.headers["Nats-Service-Error-Code"] == "400")
        }
        await fixture.close()
    }

    @Test func noServiceMeansUnavailableQuickly() async throws {
        let fixture = try await Fixture.make()
        // No responders must end the call, not the timeout: a 30 s timeout, a 10 s bound (3.7 s
        // were seen under the full suite's load on 2 cores).
        let client = ServiceClient(service: "nobody", nats: fixture.nats, timeout: .seconds(30))
        let start = ContinuousClock.now
        let error = await #expect(throws: ServiceError.self) { _ = try await client.call("Upper", Text("x"), as: Text.self) }
        #expect(error?.status == .unavailable)
        #expect(ContinuousClock.now - start < .seconds(10), "no responders is detected, not waited out")
        await fixture.close()
    }

    @Test func replicasShareRequestsThroughTheQueueGroup() async throws {
        let fixture = try await Fixture.make()
        let a = echoService(fixture), b = echoService(fixture)
        try await withServices([a, b]) {
            let client = ServiceClient(service: "echo", nats: fixture.nats)
            try await waitUntilServing(client)
            var seen: [String: Int] = [:]
            for _ in 0..<60 {
                seen[try await client.call("Who", Text(""), as: Text.self).text, default: 0] += 1
            }
            #expect(seen.values.reduce(0, +) == 60)
            #expect(Set(seen.keys) == [a.identity.instanceID, b.identity.instanceID], "both replicas served requests")
        }
        await fixture.close()
    }

    @Test func answersMicroServiceDiscovery() async throws {
        let fixture = try await Fixture.make()
        let service = echoService(fixture)
        try await withServices([service]) {
            let client = ServiceClient(service: "echo", nats: fixture.nats)
            try await waitUntilServing(client)
            for _ in 0..<3 { _ = try await client.call("Upper", Text("a"), as: Text.self) }
            _ = try? await client.call("Missing", Text("a"), as: Text.self)

            let ping = try await json(fixture, "$SRV.PING.echo")
            #expect(ping["type"] as? String == "io.nats.micro.v1.ping_response")
            #expect(ping["id"] as? String == service.identity.instanceID)

            let info = try await json(fixture, "$SRV.INFO.echo.\(service.identity.instanceID)")
            let endpoints = info["endpoints"] as? [[String: Any]] ?? []
            #expect(Set(endpoints.compactMap { $0["subject"] as? String })
                    == ["svc.echo.v1.Upper", "svc.echo.v1.Who", "svc.echo.v1.Missing", "svc.echo.v1.Crash"])
            #expect(endpoints.allSatisfy { $0["queue_group"] as? String == "echo" })

            let stats = try await json(fixture, "$SRV.STATS")
            let byName = Dictionary(uniqueKeysWithValues: (stats["endpoints"] as? [[String: Any]] ?? []).map {
                ($0["name"] as? String ?? "", $0)
            })
            #expect(byName["Upper"]?["num_requests"] as? Int == 4, "3 calls and the one that saw the service up")
            #expect(byName["Missing"]?["num_errors"] as? Int == 1)
            #expect((byName["Missing"]?["last_error"] as? String)?.contains("no photo") == true)
        }
        await fixture.close()
    }

    @Test func gracefulShutdownAnswersInFlightRequests() async throws {
        let fixture = try await Fixture.make()
        let service = echoService(fixture, delay: .milliseconds(800))
        let client = ServiceClient(service: "echo", nats: fixture.nats)
        let group = ServiceGroup(configuration: .init(services: [.init(service: service)], logger: testLogger))
        let running = Task { try await group.run() }
        try await waitUntilServing(client)

        // A slow request is in flight when graceful shutdown begins: it is still answered.
        let inFlight = Task { try await client.call("Upper", Text("slow"), as: Text.self).text }
        try await Task.sleep(for: .milliseconds(200))
        await group.triggerGracefulShutdown()
        #expect(try await inFlight.value == "SLOW")
        try await running.value

        // After shutdown nobody serves the subject any more.
        let error = await #expect(throws: ServiceError.self) { _ = try await client.call("Upper", Text("x"), as: Text.self) }
        #expect(error?.status == .unavailable)
        await fixture.close()
    }

    /// Waits until the service's subscriptions are live.
    func waitUntilServing(_ client: ServiceClient) async throws {
        let ok = try await eventually {
            (try? await client.call("Upper", Text("ping"), as: Text.self)) != nil
        }
        #expect(ok, "service started serving")
    }

    func json(_ fixture: Fixture, _ subject: String) async throws -> [String: Any] {
        let reply = try await fixture.nats.request(subject, payload: [], timeout: .seconds(5))
        return try JSONSerialization.jsonObject(with: Data(reply.payload)) as? [String: Any] ?? [:]
    }
}
