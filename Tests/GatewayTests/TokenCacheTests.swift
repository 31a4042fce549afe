import Foundation
import FramecastTesting
@testable import Gateway
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NATS
import ServiceKit
import Testing

/// The token cache in front of PostgreSQL (issue 13, item 3): a token is looked up once per
/// TTL, and a revocation (logout, frame deleted, frame credentials rotated) answers 401 at once
/// on the gateway that made it and, over NATS, on every other replica. Queries are counted by
/// the gateway's own counter of the lookups it sent to PostgreSQL (``Accounts/tokenQueries``).
@Suite struct TokenCacheTests {
    /// Waits until the gateway's cache serves lookups (its revocations subscription has seen
    /// its own probe come back).
    static func waitUntilTrusted(_ gateways: Gateway...) async throws {
        #expect(try await eventually(timeout: .seconds(15)) { gateways.allSatisfy { $0.tokenCache.isTrusted } },
                "the token cache was never switched on")
    }

    static func queries(_ gateway: Gateway) -> Int { gateway.accounts.tokenQueries.current }

    /// A second gateway replica: its own NATS connection to the harness's server, the same
    /// database and blob store, the same configuration.
    static func replica(of h: GatewayHarness) async throws -> (Gateway, NATSConnection) {
        let nats = try await NATSConnection.connect(NATSConfiguration(servers: [h.backend.server.url], name: "gateway-b"), logger: quietLogger)
        let runtime = ServiceRuntime(nats: nats, jetStream: try nats.jetStream(), postgres: h.backend.postgres, logger: quietLogger)
        let gateway = try Gateway(configuration: h.gateway.configuration, runtime: runtime, registry: testRegistry,
                                  passwordStrength: .minimumForTests)
        return (gateway, nats)
    }

    @Test func aSecondRequestWithTheSameTokenAsksNoDatabase() async throws {
        let h = try await GatewayHarness.make()
        try await h.run { client in
            try await Self.waitUntilTrusted(h.gateway)
            let (_, token) = try await client.signUp()
            let before = Self.queries(h.gateway)
            #expect(try await client.json("/api/v1/storage/files", token: token).0.status == .ok)
            #expect(Self.queries(h.gateway) == before + 1, "the first request looks the token up")
            for _ in 0..<3 {
                #expect(try await client.json("/api/v1/storage/files", token: token).0.status == .ok)
            }
            #expect(Self.queries(h.gateway) == before + 1, "later requests are served from the cache")

            // Unknown tokens are not cached: each one asks again (and is refused).
            let unknown = "x\(UUID().uuidString)\(UUID().uuidString)"
            for _ in 0..<2 {
                #expect(try await client.json("/api/v1/storage/files", token: unknown).0.status == .unauthorized)
            }
            #expect(Self.queries(h.gateway) == before + 3)

            // Logout: 401 on the very next request, on this gateway.
            #expect(try await client.json("/api/v1/auth/logout", .post, token: token).0.status == .noContent)
            #expect(try await client.json("/api/v1/storage/files", token: token).0.status == .unauthorized)
        }
        await h.close()
    }

    @Test func anEntryExpiresAfterTheTTL() async throws {
        let ttl = Duration.seconds(2)
        let h = try await GatewayHarness.make { $0.tokenCache.ttl = ttl }
        try await h.run { client in
            try await Self.waitUntilTrusted(h.gateway)
            let (_, token) = try await client.signUp()
            // "Served from the cache" holds only for a request that starts within the TTL of the
            // one that filled it: on a loaded machine two requests can be further apart, so each
            // such check is made only when the clock says it applies.
            var started = ContinuousClock.now
            var before = Self.queries(h.gateway)
            #expect(try await client.json("/api/v1/storage/files", token: token).0.status == .ok)
            #expect(Self.queries(h.gateway) == before + 1, "the first request looks the token up")
            #expect(try await client.json("/api/v1/storage/files", token: token).0.status == .ok)
            if ContinuousClock.now - started < ttl {
                #expect(Self.queries(h.gateway) == before + 1, "a request within the TTL is served from the cache")
            }
            try await Task.sleep(for: ttl + .milliseconds(300))
            before = Self.queries(h.gateway)
            started = ContinuousClock.now
            #expect(try await client.json("/api/v1/storage/files", token: token).0.status == .ok)
            #expect(Self.queries(h.gateway) == before + 1, "after the TTL the token is looked up again")
            #expect(try await client.json("/api/v1/storage/files", token: token).0.status == .ok)
            if ContinuousClock.now - started < ttl {
                #expect(Self.queries(h.gateway) == before + 1, "and cached again")
            }
        }
        await h.close()
    }

    @Test func theTTLIsAtMostThirtySeconds() async throws {
        _ = testRegistry   // metrics bootstrapped before the cache makes its counters
        var configuration = TokenCacheConfiguration()
        configuration.ttl = .seconds(3600)
        #expect(TokenCache(configuration: configuration, connectionChanges: { 0 }, logger: quietLogger).ttl == .seconds(30))
        configuration.ttl = .zero
        #expect(!TokenCache(configuration: configuration, connectionChanges: { 0 }, logger: quietLogger).isEnabled)
    }

    /// The cache alone (no servers): bounded size, oldest out first, frame keys, the TTL, fills
    /// that raced an invalidation dropped, nothing served across a NATS connection change.
    @Test func theCacheItself() async throws {
        _ = testRegistry
        var configuration = TokenCacheConfiguration()
        configuration.capacity = 3
        let changes = ConnectionChanges(7)
        let cache = TokenCache(configuration: configuration, connectionChanges: { changes.current }, logger: quietLogger)
        let t0 = ContinuousClock.now
        func isHit(_ hash: String, at offset: Duration = .zero) -> Bool {
            if case .hit = cache.lookup(hash, now: t0 + offset) { return true }
            return false
        }
        func put(_ hash: String, _ principal: Principal, at offset: Duration = .zero) {
            guard case .miss(let ticket?) = cache.lookup(hash, now: t0 + offset) else {
                Issue.record("\(hash): expected a miss that may fill")
                return
            }
            cache.fill(ticket, hash: hash, principal: principal, now: t0 + offset)
        }

        guard case .miss(.none) = cache.lookup("a") else { Issue.record("not trusted yet: nothing to fill"); return }
        #expect(cache.trust(connectionChanges: 7))
        put("a", .user(id: "u"))
        put("b", .frame(id: "f", ownerID: "u"))
        put("c", .frame(id: "f", ownerID: "u"))
        #expect(isHit("a") && isHit("b") && isHit("c"))
        put("d", .user(id: "v"))
        #expect(cache.count == 3)
        #expect(!isHit("a"), "the oldest went first")
        #expect(isHit("d"))

        // One key for all of a frame's tokens.
        cache.invalidate([.frame(id: "f")], source: .local)
        #expect(!isHit("b") && !isHit("c") && isHit("d"))

        // A fill whose lookup started before an invalidation is dropped.
        guard case .miss(let ticket?) = cache.lookup("e", now: t0) else { Issue.record("expected a miss"); return }
        cache.invalidate([.token(hash: "unrelated")], source: .remote)
        cache.fill(ticket, hash: "e", principal: .user(id: "w"), now: t0)
        #expect(!isHit("e"))

        // The TTL (15 s by default) counts from the lookup that filled.
        put("x", .user(id: "x"), at: .seconds(1))
        #expect(isHit("x", at: .seconds(15.9)))
        #expect(!isHit("x", at: .seconds(16)))

        // The NATS connection changed: revocations may have been lost. Nothing is served (or
        // kept) until trusted again, and then the cache starts empty.
        put("y", .user(id: "y"))
        changes.add(2)   // a disconnect and a reconnect
        guard case .miss(.none) = cache.lookup("y") else { Issue.record("served across a connection change"); return }
        #expect(cache.count == 0 && !cache.isTrusted)
        #expect(!cache.trust(connectionChanges: 7), "a probe sent before the change proves nothing")
        #expect(cache.trust(connectionChanges: 9))
        #expect(!isHit("y"))
    }

    /// Logout, credential rotation and frame deletion on one replica: 401 at once there and,
    /// within moments, on the other, although both had the token cached and the TTL (30 s) is
    /// far away.
    @Test func revocationsReachEveryReplica() async throws {
        let h = try await GatewayHarness.make { $0.tokenCache.ttl = .seconds(30) }
        let (b, natsB) = try await Self.replica(of: h)
        let broker = try ServerProcess(.mosquitto)
        defer { broker.stop() }
        try await h.run(album: broker) { a in
            try await b.application().test(.live) { bClient in
                try await Self.waitUntilTrusted(h.gateway, b)
                /// 401 on `client` within 2 s (a NATS hop; the TTL is 30 s).
                func refusedSoon(_ client: any TestClientProtocol, _ uri: String, _ token: String) async throws -> Bool {
                    try await eventually(timeout: .seconds(2)) { try await client.json(uri, token: token).0.status == .unauthorized }
                }

                // Logout on A.
                let (_, alice) = try await a.signUp()
                let (_, bob) = try await a.signUp()
                for client in [a, bClient] {
                    for token in [alice, bob] {
                        #expect(try await client.json("/api/v1/storage/files", token: token).0.status == .ok)
                    }
                }
                let queriesB = Self.queries(b)
                #expect(try await bClient.json("/api/v1/storage/files", token: alice).0.status == .ok)
                #expect(Self.queries(b) == queriesB, "B serves alice from its cache")

                #expect(try await a.json("/api/v1/auth/logout", .post, token: alice).0.status == .noContent)
                #expect(try await a.json("/api/v1/storage/files", token: alice).0.status == .unauthorized, "at once on A")
                #expect(try await refusedSoon(bClient, "/api/v1/storage/files", alice), "on B")
                let bobQueries = Self.queries(b)
                #expect(try await bClient.json("/api/v1/storage/files", token: bob).0.status == .ok)
                #expect(Self.queries(b) == bobQueries, "bob's session is untouched (still cached on B)")

                // A frame: its token cached on both replicas, then its credentials rotated on A.
                let (_, frame) = try await a.json("/api/v1/frames", .post, token: bob, body: ["name": "Hall", "width": 800, "height": 480])
                let frameID = try #require(frame["frame_id"] as? String)
                let oldToken = try #require(frame["frame_token"] as? String)
                let frameURI = "/api/v1/frames/\(frameID)"
                for client in [a, bClient] {
                    #expect(try await client.json(frameURI, token: oldToken).0.status == .ok)
                    #expect(try await client.json(frameURI, token: oldToken).0.status == .ok)
                }
                let (rotated, fresh) = try await a.json("\(frameURI)/credentials", .post, token: bob)
                #expect(rotated.status == .ok)
                let newToken = try #require(fresh["frame_token"] as? String)
                #expect(try await a.json(frameURI, token: oldToken).0.status == .unauthorized, "rotation: at once on A")
                #expect(try await refusedSoon(bClient, frameURI, oldToken), "rotation: on B")

                // The new token cached on both, then the frame deleted on B this time.
                for client in [a, bClient] {
                    #expect(try await client.json(frameURI, token: newToken).0.status == .ok)
                    #expect(try await client.json(frameURI, token: newToken).0.status == .ok)
                }
                let frameQueriesA = Self.queries(h.gateway)
                #expect(try await a.json(frameURI, token: newToken).0.status == .ok)
                #expect(Self.queries(h.gateway) == frameQueriesA, "A serves the frame from its cache")
                #expect(try await bClient.json(frameURI, .delete, token: bob).0.status == .noContent)
                #expect(try await bClient.json(frameURI, token: newToken).0.status == .unauthorized, "deletion: at once on B")
                // (A stale entry would answer 404 from the album service, not 401.)
                #expect(try await refusedSoon(a, frameURI, newToken), "deletion: on A")
            }
        }
        natsB.close()
        await h.close()
    }

    /// A lost NATS connection may have lost revocations: the cache is emptied, and trusted again
    /// only once revocations are seen to arrive.
    @Test func aNATSReconnectEmptiesTheCache() async throws {
        let h = try await GatewayHarness.make { $0.tokenCache.ttl = .seconds(30) }
        try await h.run { client in
            try await Self.waitUntilTrusted(h.gateway)
            let (_, token) = try await client.signUp()
            #expect(try await client.json("/api/v1/storage/files", token: token).0.status == .ok)
            let before = Self.queries(h.gateway)
            #expect(try await client.json("/api/v1/storage/files", token: token).0.status == .ok)
            #expect(Self.queries(h.gateway) == before, "cached")

            h.backend.server.stop()
            #expect(try await eventually { !h.runtime.nats.isConnected })
            // (nats.c reports the disconnect on its own thread, maybe just after the status changed.)
            #expect(try await eventually { !h.gateway.tokenCache.isTrusted }, "not trusted while disconnected")
            try h.backend.server.start()
            #expect(try await eventually(timeout: .seconds(30)) { h.runtime.nats.isConnected })
            try await Self.waitUntilTrusted(h.gateway)
            #expect(h.gateway.tokenCache.count == 0)
            #expect(try await eventually {
                (try? await client.json("/api/v1/storage/files", token: token).0.status) == .ok
            })
            #expect(Self.queries(h.gateway) > before, "looked up again after the reconnect")
        }
        await h.close()
    }
}

/// What ``NATSConnection/connectionChanges`` would say, set by the test.
final class ConnectionChanges: @unchecked Sendable {
    // @unchecked Sendable: `value` is only read and written under `lock`.
    private let lock = NSLock()
    private var value: UInt64

    init(_ value: UInt64) { self.value = value }

    var current: UInt64 {
        lock.lock()
        defer { lock.unlock() }
        return value
    }

    func add(_ n: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        value += n
    }
}
