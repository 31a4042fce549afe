import AlbumService
import Foundation
import FramecastTesting
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import MQTT
import Testing
@testable import Gateway

/// Pairing a browser frame by code, over the real gateway, album service (NATS, PostgreSQL,
/// mosquitto) and live HTTP: the page asks for a code, the owner types it, the page picks its
/// credentials up once; wrong codes are throttled; a frame patches its own screen size.
@Suite struct PairingRouteTests {
    static let webSocketURL = "ws://127.0.0.1:9001"
    /// `XXX-XXX` in the unambiguous alphabet.
    static func isShownCode(_ code: String) -> Bool {
        let parts = code.split(separator: "-", omittingEmptySubsequences: false)
        return parts.count == 2 && parts.allSatisfy { $0.count == 3 && $0.allSatisfy { Pairings.alphabet.contains($0) } }
    }

    /// The page's side: a pairing for a `width` × `height` screen.
    static func requestPairing(_ client: any TestClientProtocol, width: Int = 1280, height: Int = 800) async throws
        -> (id: String, code: String, secret: String) {
        let (response, body) = try await client.json("/api/v1/frames/pairings", .post, body: ["width": width, "height": height])
        #expect(response.status == .created, "\(body)")
        let code = try #require(body["code"] as? String)
        #expect(isShownCode(code), "\(code)")
        #expect(body["poll_seconds"] as? Int == 2)
        let iso = ISO8601DateFormatter()
        iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let expires = try #require((body["expires_at"] as? String).flatMap { iso.date(from: $0) })
        #expect(expires.timeIntervalSinceNow > 540 && expires.timeIntervalSinceNow <= 601, "10 minutes: \(expires)")
        return (try #require(body["pairing_id"] as? String), code, try #require(body["secret"] as? String))
    }

    static func poll(_ client: any TestClientProtocol, _ id: String, secret: String?) async throws -> (TestResponse, [String: Any]) {
        var headers: HTTPFields = [:]
        if let secret { headers[.pairingSecret] = secret }
        return try await client.json("/api/v1/frames/pairings/\(id)", headers: headers)
    }

    @Test func aCodeWorksOnceAndTheCredentialsAreHandedOverOnce() async throws {
        let h = try await GatewayHarness.make { $0.frameWebSocketURL = Self.webSocketURL }
        let broker = try ServerProcess(.mosquitto)
        defer { broker.stop() }
        try await h.run(album: broker) { client in
            let (_, alice) = try await client.signUp()
            let (_, album) = try await client.json("/api/v1/albums", .post, token: alice, body: ["name": "Family"])
            let albumID = try #require(album["album_id"] as? String)
            let pairing = try await Self.requestPairing(client)

            // Pending; only with the page's secret, and only for a pairing that exists.
            let (pending, state) = try await Self.poll(client, pairing.id, secret: pairing.secret)
            #expect(pending.status == .ok)
            #expect(state["status"] as? String == "pending")
            #expect(state["frame_token"] == nil)
            #expect(try await Self.poll(client, pairing.id, secret: "not-the-secret-of-this-pairing").0.status == .notFound)
            #expect(try await Self.poll(client, pairing.id, secret: nil).0.status == .badRequest)
            #expect(try await Self.poll(client, UUID().uuidString.lowercased(), secret: pairing.secret).0.status == .notFound)
            #expect(try await Self.poll(client, "not-a-pairing", secret: pairing.secret).0.status == .notFound)

            // A wrong code is 404; the right one, typed any way, pairs a frame with the page's screen.
            let wrong = pairing.code == "ZZZ-ZZZ" ? "YYY-YYY" : "ZZZ-ZZZ"
            #expect(try await client.json("/api/v1/frames/pair", .post, token: alice,
                                          body: ["code": wrong, "name": "Tablet"]).0.status == .notFound)
            #expect(try await client.json("/api/v1/frames/pair", .post, body: ["code": pairing.code, "name": "Tablet"]).0.status
                    == .unauthorized)
            let typed = " " + pairing.code.lowercased().replacingOccurrences(of: "-", with: " ") + " "
            let (paired, frame) = try await client.json("/api/v1/frames/pair", .post, token: alice,
                                                        body: ["code": typed, "name": "Tablet", "album_ids": [albumID]])
            #expect(paired.status == .created, "\(frame)")
            let frameID = try #require(frame["frame_id"] as? String)
            #expect(frame["name"] as? String == "Tablet")
            #expect(frame["width"] as? Int == 1280 && frame["height"] as? Int == 800)
            #expect(frame["orientation"] as? String == "landscape")
            #expect(frame["album_ids"] as? [String] == [albumID])
            #expect(try await client.json("/api/v1/frames/pair", .post, token: alice,
                                          body: ["code": pairing.code, "name": "Again"]).0.status == .notFound, "a code works once")

            // The page picks its credentials up, once; they work for HTTP and MQTT.
            let (collected, answer) = try await Self.poll(client, pairing.id, secret: pairing.secret)
            #expect(collected.status == .ok)
            #expect(answer["status"] as? String == "paired")
            #expect(answer["frame_id"] as? String == frameID)
            let token = try #require(answer["frame_token"] as? String)
            let mqtt = try #require(answer["mqtt"] as? [String: Any])
            #expect(mqtt["ws_url"] as? String == Self.webSocketURL)
            #expect(mqtt["username"] as? String == "frame-\(frameID)")
            #expect(mqtt["port"] as? Int == broker.port)
            #expect(((answer["frame"] as? [String: Any])?["frame_id"] as? String) == frameID)
            #expect(try await Self.poll(client, pairing.id, secret: pairing.secret).0.status == .notFound, "handed over once")
            #expect(try await client.json("/api/v1/frames/\(frameID)", token: token).0.status == .ok)
            #expect(try await FrameCredentialRouteTests.connects(broker, mqtt))

            // The frame re-registers its screen (rotated to portrait); it may not rename itself,
            // nor touch another frame.
            let (resized, turned) = try await client.json("/api/v1/frames/\(frameID)", .patch, token: token,
                                                          body: ["width": 800, "height": 1280, "orientation": "portrait"])
            #expect(resized.status == .ok, "\(turned)")
            #expect(turned["width"] as? Int == 800 && turned["height"] as? Int == 1280)
            #expect(turned["orientation"] as? String == "portrait")
            let renamed = try await client.json("/api/v1/frames/\(frameID)", .patch, token: token, body: ["name": "Mine now"])
            #expect(renamed.0.status == .forbidden)
            let (_, other) = try await client.json("/api/v1/frames", .post, token: alice, body: ["name": "Hall", "width": 800, "height": 480])
            let otherID = try #require(other["frame_id"] as? String)
            #expect(try await client.json("/api/v1/frames/\(otherID)", .patch, token: token,
                                          body: ["width": 640, "height": 480]).0.status == .notFound)
            #expect(try await client.json("/api/v1/frames/\(otherID)", .patch, token: alice,
                                          body: ["name": "Hallway"]).0.status == .ok, "its owner still renames")

            // Deleted, the frame's token stops working (the page then pairs again).
            #expect(try await client.json("/api/v1/frames/\(frameID)", .delete, token: alice).0.status == .noContent)
            #expect(try await client.json("/api/v1/frames/\(frameID)", token: token).0.status == .unauthorized)
            #expect(try await !FrameCredentialRouteTests.connects(broker, mqtt))
        }
        await h.close()
    }

    @Test func aFrameDeletedBeforeThePagePickedItUpEndsThePairing() async throws {
        let h = try await GatewayHarness.make { $0.frameWebSocketURL = Self.webSocketURL }
        let broker = try ServerProcess(.mosquitto)
        defer { broker.stop() }
        try await h.run(album: broker) { client in
            let (_, alice) = try await client.signUp()
            let pairing = try await Self.requestPairing(client, width: 600, height: 1024)
            let (paired, frame) = try await client.json("/api/v1/frames/pair", .post, token: alice,
                                                        body: ["code": pairing.code, "name": "Old phone"])
            #expect(paired.status == .created)
            #expect(frame["orientation"] as? String == "portrait")
            let frameID = try #require(frame["frame_id"] as? String)
            #expect(try await client.json("/api/v1/frames/\(frameID)", .delete, token: alice).0.status == .noContent)
            #expect(try await Self.poll(client, pairing.id, secret: pairing.secret).0.status == .notFound)
            #expect(try await Self.poll(client, pairing.id, secret: pairing.secret).0.status == .notFound)
        }
        await h.close()
    }

    @Test func wrongCodesAreThrottledPerAccountAndCodeRequestsPerAddress() async throws {
        let h = try await GatewayHarness.make {
            $0.frameWebSocketURL = Self.webSocketURL
            $0.throttle.pairFailuresPerAccount = .init(burst: 2, refill: .seconds(60))
            $0.throttle.pairFailuresPerAddress = .init(burst: 1000, refill: .seconds(1))
            $0.throttle.pairingsPerAddress = .init(burst: 3, refill: .seconds(60))
        }
        try await h.run(storage: false) { client in
            let (_, alice) = try await client.signUp()
            let (_, bob) = try await client.signUp()
            let pairing = try await Self.requestPairing(client)
            let wrong = pairing.code == "ZZZ-ZZZ" ? "YYY-YYY" : "ZZZ-ZZZ"
            func pair(_ code: String, _ token: String) async throws -> TestResponse {
                try await client.json("/api/v1/frames/pair", .post, token: token, body: ["code": code, "name": "Tablet"]).0
            }
            // Two wrong codes (one not even of a code's form), then the account must wait, even
            // with the right code.
            #expect(try await pair(wrong, alice).status == .notFound)
            #expect(try await pair("0O1IL", alice).status == .notFound)
            let limited = try await pair(pairing.code, alice)
            #expect(limited.status == .tooManyRequests)
            #expect(limited.headers[.retryAfter].flatMap(Int.init) != nil)
            // Bad input is refused before the throttle.
            #expect(try await client.json("/api/v1/frames/pair", .post, token: bob,
                                          body: ["code": pairing.code, "name": "Bad\u{7}name"]).0.status == .badRequest)
            #expect(try await client.json("/api/v1/frames/pair", .post, token: bob, body: ["name": "No code"]).0.status == .badRequest)

            // The page's screen must be a real one; an address asks for a few codes only.
            #expect(try await client.json("/api/v1/frames/pairings", .post, body: ["width": 8, "height": 800]).0.status == .badRequest)
            #expect(try await client.json("/api/v1/frames/pairings", .post, body: ["width": 1280]).0.status == .badRequest)
            var statuses: [HTTPResponse.Status] = []
            for _ in 0..<3 { statuses.append(try await client.json("/api/v1/frames/pairings", .post, body: ["width": 800, "height": 600]).0.status) }
            #expect(statuses.last == .tooManyRequests, "\(statuses)")
        }
        await h.close()
    }

    @Test func withoutAWebSocketURLBrowserFramesCannotPair() async throws {
        let h = try await GatewayHarness.make()
        try await h.run(storage: false) { client in
            let (response, _) = try await client.json("/api/v1/frames/pairings", .post, body: ["width": 1280, "height": 800])
            #expect(response.status == .serviceUnavailable)
            #expect(response.errorCode == "unavailable")
        }
        await h.close()
    }

    // MARK: Pure parts

    @Test func codesUseTheUnambiguousAlphabetAndAreReadAsTyped() {
        for _ in 0..<200 {
            let code = Pairings.newCode()
            #expect(code.count == 6)
            #expect(code.allSatisfy { Pairings.alphabet.contains($0) })
            #expect(!code.contains { "01ILO".contains($0) })
            #expect(Pairings.normalize(Pairings.display(code)) == code)
        }
        #expect(Pairings.alphabet.count == 31)
        #expect(Pairings.display("K7Q4MP") == "K7Q-4MP")
        #expect(Pairings.normalize("k7q-4mp") == "K7Q4MP")
        #expect(Pairings.normalize(" K7Q 4MP ") == "K7Q4MP")
        #expect(Pairings.normalize("K7Q-4M") == nil)
        #expect(Pairings.normalize("K7Q-4MO") == nil, "O is not in the alphabet")
        #expect(Pairings.normalize("K7Q-4M0") == nil, "nor 0")
        #expect(Pairings.secretHash("short") == nil)
        #expect(Pairings.codeHash("K7Q4MP") != Pairings.codeHash("K7Q4MQ"))
    }

    @Test func theFramePagesPolicyAllowsTheBrokersWebSocketOriginOnly() {
        #expect(GatewayConfiguration.webSocketOrigin("ws://127.0.0.1:9001") == "ws://127.0.0.1:9001")
        #expect(GatewayConfiguration.webSocketOrigin("wss://MQTT.example.com/mqtt") == "wss://mqtt.example.com")
        #expect(GatewayConfiguration.webSocketOrigin("ws://[::1]:9001/") == "ws://[::1]:9001")
        for bad in ["http://127.0.0.1:9001", "ws://", "ws://user:pw@host:1", "ws://host:1/?x=1", "ws://host;script-src *", "mqtt://host:1883"] {
            #expect(GatewayConfiguration.webSocketOrigin(bad) == nil, "\(bad)")
        }
        let policy = WebApp.frameContentSecurityPolicy(webSocketURL: "ws://127.0.0.1:9001/mqtt")
        #expect(policy.contains("connect-src 'self' ws://127.0.0.1:9001;"))
        #expect(policy.contains("script-src 'self';") && policy.contains("img-src 'self' blob:;"))
        #expect(!policy.contains("unsafe"))
        #expect(WebApp.frameContentSecurityPolicy(webSocketURL: nil).contains("connect-src 'self';"))
    }
}
