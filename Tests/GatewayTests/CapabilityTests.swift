import BlobStore
import Foundation
import FramecastTesting
@testable import Gateway
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NATS
import Secrets
import Testing

/// Capability URLs, signed and checked without servers (issue 13, item 1).
@Suite struct CapabilitySigningTests {
    static let file = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b"
    static let blob = String(repeating: "ab", count: 32)
    let keys = CapabilityKeys.random()
    let now = Date()

    /// The five segments after `/c/`.
    static func segments(_ path: CapabilityPath) -> [String] {
        path.path.dropFirst(CapabilityPath.prefix.count).split(separator: "/", omittingEmptySubsequences: false).map(String.init)
    }

    static func verify(_ parts: [String], keys: CapabilityKeys, now: Date = Date()) -> CapabilityPath.Verdict {
        guard parts.count == 5 else { return .malformed }
        return CapabilityPath.verify(keyID: parts[0], expires: parts[1], signature: parts[2], fileID: parts[3], name: parts[4],
                                     keys: keys, now: now)
    }

    static func isForbidden(_ verdict: CapabilityPath.Verdict) -> Bool {
        if case .forbidden = verdict { return true }
        return false
    }

    func signed(format: String = "jpeg", expiresIn seconds: Int64 = 3600, keys: CapabilityKeys? = nil) -> CapabilityPath {
        CapabilityPath.sign(fileID: Self.file, blobKey: Self.blob, format: format,
                            expires: Int64(now.timeIntervalSince1970) + seconds, keys: keys ?? self.keys)
    }

    @Test func aSignedPathVerifies() {
        let path = signed()
        #expect(path.path.hasPrefix("/c/\(keys.current.id)/"))
        #expect(path.path.hasSuffix("/\(Self.file)/\(Self.blob).jpg"))
        #expect(Self.verify(Self.segments(path), keys: keys, now: now) == .valid(path))
        let webp = signed(format: "webp")
        #expect(webp.path.hasSuffix(".webp") && webp.contentType == "image/webp")
        #expect(Self.verify(Self.segments(webp), keys: keys, now: now) == .valid(webp))
    }

    @Test func tamperingWithAnySegmentIsRefused() {
        let parts = Self.segments(signed())
        func with(_ index: Int, _ value: String) -> [String] {
            var copy = parts
            copy[index] = value
            return copy
        }
        let otherFile = "00000000-1111-4222-8333-444444444444"
        let otherBlob = String(repeating: "cd", count: 32)
        let flipped: String = (parts[2].first == "A" ? "B" : "A") + String(parts[2].dropFirst())
        // Well-formed but not what was signed: 403.
        for (label, changed) in [
            ("key id", with(0, "0badc0de")),
            ("expiry", with(1, String((Int64(parts[1]) ?? 0) + 1))),
            ("signature", with(2, flipped)),
            ("file id", with(3, otherFile)),
            ("blob key", with(4, "\(otherBlob).jpg")),
            ("extension", with(4, "\(Self.blob).webp")),
        ] {
            #expect(Self.isForbidden(Self.verify(changed, keys: keys, now: now)), "\(label)")
        }
        // Not a capability path at all: 404.
        for (label, changed) in [
            ("expiry not a number", with(1, "soon")),
            ("signature cut short", with(2, String(parts[2].dropLast()))),
            ("file id not a UUID", with(3, "not-a-uuid")),
            ("file id in upper case", with(3, Self.file.uppercased())),
            ("blob key not hex", with(4, "\(String(repeating: "z", count: 64)).jpg")),
            ("another extension", with(4, "\(Self.blob).png")),
            ("no extension", with(4, Self.blob)),
        ] {
            #expect(Self.verify(changed, keys: keys, now: now) == .malformed, "\(label)")
        }
    }

    @Test func expiredAndUnknownKeysAreRefused() {
        #expect(Self.verify(Self.segments(signed(expiresIn: -1)), keys: keys, now: now) == .forbidden("expired"))
        let stranger = signed(keys: CapabilityKeys.random())
        #expect(Self.verify(Self.segments(stranger), keys: keys, now: now) == .forbidden("unknown key id"))
    }

    /// A new key signs; the old one still verifies the URLs it signed until it is dropped.
    @Test func anOlderKeyStillVerifies() {
        let old = keys
        let byOld = signed(keys: old)
        let rotated = CapabilityKeys(current: CapabilityKeys.random().current, older: [old.current])
        #expect(Self.verify(Self.segments(byOld), keys: rotated, now: now) == .valid(byOld))
        let byNew = signed(keys: rotated)
        #expect(byNew.keyID == rotated.current.id && byNew.keyID != old.current.id)
        #expect(Self.verify(Self.segments(byNew), keys: rotated, now: now) == .valid(byNew))
        // Dropped: its URLs are refused.
        let dropped = CapabilityKeys(current: rotated.current)
        #expect(Self.verify(Self.segments(byOld), keys: dropped, now: now) == .forbidden("unknown key id"))
    }

    @Test func keyFiles() throws {
        let directory = try TestServers.scratchDirectory("capability-key-files")
        func file(_ name: String, _ text: String) throws -> String {
            let url = directory.appendingPathComponent(name)
            try Data(text.utf8).write(to: url)
            return url.path
        }
        #expect(throws: CapabilityError.self) { try CapabilityKeys.load(path: directory.appendingPathComponent("missing").path) }
        #expect(throws: CapabilityError.self) { try CapabilityKeys.load(path: try file("empty", "")) }
        #expect(throws: CapabilityError.self) { try CapabilityKeys.load(path: try file("comments", "# only a comment\n\n   \n")) }
        #expect(throws: CapabilityError.self) { try CapabilityKeys.load(path: try file("short", "short-key\n")) }

        let first = "first-key-0123456789", second = "second-key-0123456789"
        let loaded = try CapabilityKeys.load(path: try file("two", "# rotated on Monday\n  \(first)  \n\n\(second)\n"))
        #expect(loaded.current.id == CapabilityKeys.Key(secret: Array(first.utf8)).id, "the first key signs, trimmed")
        // A URL signed by the second key alone verifies with the file's ring.
        let bySecond = signed(keys: CapabilityKeys(current: CapabilityKeys.Key(secret: Array(second.utf8))))
        #expect(Self.verify(Self.segments(bySecond), keys: loaded, now: now) == .valid(bySecond))
        // The test helper's file loads the same way.
        let helper = try CapabilityKeyFile.make()
        #expect(try CapabilityKeys.load(path: helper.path).current.id == helper.keys.current.id)
    }

    @Test func expiryIsRoundedUpToAWholeDay() {
        let expires = CapabilityPath.expiry(now: now, lifetime: .seconds(7 * 86_400))
        #expect(expires % 86_400 == 0)
        let seconds = expires - Int64(now.timeIntervalSince1970)
        #expect(seconds >= 7 * 86_400 && seconds < 8 * 86_400)
        #expect(Gateway.capabilityHorizon(lifetime: .seconds(7 * 86_400)) >= .seconds(seconds))
    }
}

/// The pieces of the capability route without servers: the hot cache's eviction and reads, and
/// the revocation state.
@Suite struct CapabilityEdgeUnitTests {
    static func key(_ letter: Character) -> String { String(repeating: letter, count: 64) }

    @Test func theHotCacheIsBoundedAndKeepsWhatIsUsed() {
        var state = BlobCache.State()
        let hundred = ByteBuffer(bytes: [UInt8](repeating: 7, count: 100))
        var evicted = 0
        for letter: Character in ["a", "b", "c"] { evicted += state.insert(Self.key(letter), hundred, capacity: 350) }
        #expect(evicted == 0 && state.bytes == 300 && state.slots.count == 3)
        let used = state.lookup(Self.key("a"))
        #expect(used == hundred, "a is used again")
        // d does not fit: the hand passes a (used: spared once) and evicts b.
        evicted = state.insert(Self.key("d"), hundred, capacity: 350)
        #expect(evicted == 1)
        var held: [Character: Bool] = [:]
        for letter: Character in ["a", "b", "c", "d"] { held[letter] = state.lookup(Self.key(letter)) != nil }
        #expect(held == ["a": true, "b": false, "c": true, "d": true])
        #expect(state.bytes == 300)
        // Larger than the whole cache: not kept, nothing evicted.
        evicted = state.insert(Self.key("e"), ByteBuffer(bytes: [UInt8](repeating: 1, count: 400)), capacity: 350)
        let large = state.lookup(Self.key("e"))
        #expect(evicted == 0 && large == nil && state.bytes == 300)
        // One blob that needs the room of several.
        evicted = state.insert(Self.key("f"), ByteBuffer(bytes: [UInt8](repeating: 2, count: 250)), capacity: 350)
        let f = state.lookup(Self.key("f"))
        #expect(evicted >= 2 && state.bytes <= 350 && f != nil)
        #expect(state.index.count == state.slots.count)
        for (key, i) in state.index { #expect(state.slots[i].key == key) }
    }

    @Test func blobsAreReadWholeOrStreamedOrMissing() throws {
        let directory = try TestServers.scratchDirectory("blob-cache")
        let small = directory.appendingPathComponent("small"), large = directory.appendingPathComponent("large")
        try Data([UInt8](repeating: 3, count: 1000)).write(to: small)
        try Data([UInt8](repeating: 4, count: 5000)).write(to: large)
        guard case .bytes(let bytes) = try BlobCache.read(small.path, limit: 4096) else {
            Issue.record("a small blob is read whole")
            return
        }
        #expect(bytes.readableBytes == 1000 && bytes.getBytes(at: bytes.readerIndex, length: 1) == [3])
        guard case .file(let size) = try BlobCache.read(large.path, limit: 4096) else {
            Issue.record("a blob over the entry limit is streamed")
            return
        }
        #expect(size == 5000)
        guard case .missing = try BlobCache.read(directory.appendingPathComponent("nothing").path, limit: 4096) else {
            Issue.record("a missing blob is missing")
            return
        }
    }

    @Test func revocationState() {
        var state = RevokedFiles()
        let t0 = ContinuousClock.now
        let grace = Duration.seconds(4)
        /// Observes the connection state `changes` at `t0 + offset`: "<catch-up due> <check of b>".
        func observe(_ changes: UInt64, at offset: Duration) -> String {
            let due = state.observe(connectionChanges: changes, now: t0 + offset, grace: grace)
            return "\(due) \(state.check("b"))"
        }
        #expect(state.check("a") == .catchingUp, "nothing is served before the first catch-up")
        var seen = observe(5, at: .zero)
        #expect(seen == "true catchingUp")
        state.revoke("a", at: 1000)
        #expect(state.check("a") == .revoked, "a known delete is 404 even before")

        state.caughtUp(connectionChanges: 5, epoch: state.lossEpoch)
        #expect(state.check("b") == .allowed && state.check("a") == .revoked)
        seen = observe(5, at: .zero)
        #expect(seen == "false allowed")

        // Messages lost: served for the grace while catching up, then 503.
        state.lost()
        seen = observe(5, at: .zero)
        #expect(seen == "true allowed")
        seen = observe(5, at: .seconds(3))
        #expect(seen == "true allowed")
        seen = observe(5, at: .seconds(4))
        #expect(seen == "true catchingUp")
        #expect(state.check("a") == .revoked)

        // A catch-up that started before another loss does not cover it.
        let epoch = state.lossEpoch
        state.lost()
        state.caughtUp(connectionChanges: 5, epoch: epoch)
        #expect(!state.isCovered(5) && state.check("b") == .catchingUp)
        state.caughtUp(connectionChanges: 5, epoch: state.lossEpoch)
        #expect(state.isCovered(5) && state.check("b") == .allowed)

        // A reconnect: the same, from the moment it is seen.
        seen = observe(7, at: .seconds(60))
        #expect(seen == "true allowed")
        seen = observe(7, at: .seconds(65))
        #expect(seen == "true catchingUp")
        state.caughtUp(connectionChanges: 7, epoch: state.lossEpoch)
        seen = observe(7, at: .seconds(66))
        #expect(seen == "false allowed")

        // Old deletes are forgotten; a later delete of the same file keeps the later time.
        state.revoke("c", at: 5000)
        state.revoke("c", at: 3000)
        let forgotten = state.prune(before: 4000)
        #expect(forgotten == 1)
        #expect(state.check("a") == .allowed && state.check("c") == .revoked)
    }
}

/// The capability route against the real gateway, storage, album and media services (issue 13:
/// served without `Authorization`, byte-identical, 304, 206; tampered, expired, unknown key id
/// → 403; a deleted photo's URLs → 404 within 5 s on every replica, and on one started later).
@Suite struct CapabilityRouteTests {
    /// A photo uploaded into a new album, once its thumbnail and hd are rendered: its id and the
    /// versions of its metadata document.
    static func renderedPhoto(_ client: any TestClientProtocol, token: String, name: String = "Kite")
        async throws -> (file: String, versions: [[String: Any]]) {
        let (_, album) = try await client.json("/api/v1/albums", .post, token: token, body: ["name": "Family"])
        let albumID = try #require(album["album_id"] as? String)
        let (uploadResponse, uploaded) = try await client.upload(try Photos.bytes(try Photos.plasma(name)), token: token,
                                                                 metadata: "{\"album_id\": \"\(albumID)\"}")
        #expect(uploadResponse.status == .created)
        let file = try #require(uploaded["file_id"] as? String)
        var versions: [[String: Any]] = []
        let rendered = try await eventually(timeout: .seconds(90)) {
            let (response, body) = try await client.json("/api/v1/photos/\(file)", token: token)
            versions = body["versions"] as? [[String: Any]] ?? []
            return response.status == .ok && Set(versions.compactMap { $0["size"] as? String }) == ["thumbnail", "hd"]
        }
        #expect(rendered, "thumbnail and hd were rendered")
        return (file, versions)
    }

    /// The path of an absolute capability URL the gateway handed out.
    static func path(_ url: String, _ h: GatewayHarness) throws -> String {
        try #require(url.hasPrefix(h.configuration.publicURL + CapabilityPath.prefix) ? String(url.dropFirst(h.configuration.publicURL.count)) : nil,
                     "a capability URL: \(url)")
    }

    static func waitUntilServing(_ gateways: Gateway...) async throws {
        #expect(try await eventually(timeout: .seconds(30)) { gateways.allSatisfy { $0.capabilityRevocations.isServing } },
                "the capability route never caught up with deletes")
    }

    @Test func versionsAreServedByTheirURLsLikeStaticFiles() async throws {
        let h = try await GatewayHarness.make()
        let broker = try ServerProcess(.mosquitto)
        try await h.run(album: broker) { client in
            try await Self.waitUntilServing(h.gateway)
            let (_, alice) = try await client.signUp()
            let (file, versions) = try await Self.renderedPhoto(client, token: alice)
            for version in versions {
                let size = try #require(version["size"] as? String)
                let path = try Self.path(try #require(version["url"] as? String), h)
                let byToken = try await client.execute(uri: "/api/v1/files/download/\(file)?size=\(size)", method: .get,
                                                       headers: [.authorization: "Bearer \(alice)"])
                #expect(byToken.status == .ok)

                // No Authorization header: the URL is its own authorisation.
                let full = try await client.execute(uri: path, method: .get)
                #expect(full.status == .ok, "\(size)")
                #expect(full.bytes == byToken.bytes, "byte-identical to the token download")
                #expect(full.headers[.contentType] == "image/jpeg")
                let blobKey = String(path.split(separator: "/").last?.prefix(64) ?? "")
                #expect(full.headers[.eTag] == "\"\(blobKey)\"")
                #expect(full.headers[.eTag] == byToken.headers[.eTag], "the same ETag as the token route (the bytes' SHA-256)")
                #expect(full.headers[.acceptRanges] == "bytes")
                #expect(full.headers[.contentLength] == String(full.bytes.count))
                let cacheControl = try #require(full.headers[.cacheControl])
                #expect(cacheControl.hasPrefix("public, max-age=") && cacheControl.hasSuffix(", immutable"), "\(cacheControl)")
                let maxAge = Int(cacheControl.dropFirst("public, max-age=".count).prefix { $0.isNumber }) ?? 0
                #expect(maxAge > 7 * 86_400 - 120 && maxAge <= 8 * 86_400, "until the URL expires: \(maxAge)")
                // Again: from the hot cache, the same.
                let again = try await client.execute(uri: path, method: .get)
                #expect(again.status == .ok && again.bytes == full.bytes)

                let etag = try #require(full.headers[.eTag])
                let notModified = try await client.execute(uri: path, method: .get, headers: [.ifNoneMatch: etag])
                #expect(notModified.status == .notModified)
                #expect(notModified.bytes.isEmpty && notModified.headers[.eTag] == etag)
                #expect(try await client.execute(uri: path, method: .get, headers: [.ifNoneMatch: "\"other\""]).status == .ok)

                let part = try await client.execute(uri: path, method: .get, headers: [.range: "bytes=10-99"])
                #expect(part.status == .partialContent)
                #expect(part.bytes == Array(full.bytes[10...99]))
                #expect(part.headers[.contentRange] == "bytes 10-99/\(full.bytes.count)")
                let tail = try await client.execute(uri: path, method: .get, headers: [.range: "bytes=-7"])
                #expect(tail.status == .partialContent && tail.bytes == Array(full.bytes.suffix(7)))
                let outside = try await client.execute(uri: path, method: .get, headers: [.range: "bytes=\(full.bytes.count)-"])
                #expect(outside.status == .rangeNotSatisfiable)
                #expect(outside.headers[.contentRange] == "bytes */\(full.bytes.count)")
            }

            // Tampered, expired, or signed with a key this gateway does not know: 403.
            let url = try #require(versions.first?["url"] as? String)
            let parts = try Self.path(url, h).dropFirst(CapabilityPath.prefix.count).split(separator: "/").map(String.init)
            try #require(parts.count == 5)
            let blobKey = String(parts[4].prefix(64))
            let keys = h.configuration.capabilityKeys
            let flipped: String = (parts[2].first == "A" ? "B" : "A") + String(parts[2].dropFirst())
            let expires = CapabilityPath.expiry(lifetime: .seconds(3600))
            let refused = [
                ("tampered signature", "/c/\(parts[0])/\(parts[1])/\(flipped)/\(parts[3])/\(parts[4])"),
                ("tampered expiry", "/c/\(parts[0])/\((Int64(parts[1]) ?? 0) + 86_400)/\(parts[2])/\(parts[3])/\(parts[4])"),
                ("expired", CapabilityPath.sign(fileID: file, blobKey: blobKey, format: "jpeg",
                                                expires: Int64(Date().timeIntervalSince1970) - 60, keys: keys).path),
                ("unknown key id", CapabilityPath.sign(fileID: file, blobKey: blobKey, format: "jpeg", expires: expires,
                                                       keys: CapabilityKeys.random()).path),
                ("longer than links live", CapabilityPath.sign(fileID: file, blobKey: blobKey, format: "jpeg",
                                                               expires: expires + 30 * 86_400, keys: keys).path),
            ]
            for (label, path) in refused {
                let response = try await client.execute(uri: path, method: .get)
                #expect(response.status == .forbidden, "\(label)")
                #expect(response.errorCode == "forbidden", "\(label)")
            }
            // Not a capability path: 404. A valid URL of a blob that does not exist: 404.
            for path in ["/c/\(parts[0])/\(parts[1])/\(parts[2])/\(parts[3])/\(blobKey).png", "/c/\(parts[0])/\(parts[1])/\(parts[2])",
                         CapabilityPath.sign(fileID: file, blobKey: String(repeating: "0", count: 64), format: "jpeg",
                                             expires: expires, keys: keys).path] {
                let response = try await client.execute(uri: path, method: .get)
                #expect(response.status == .notFound, "\(path)")
            }

            // Counted in the route's metrics, as every route is.
            let metrics = String(decoding: try await client.execute(uri: "/metrics", method: .get).bytes, as: UTF8.self)
            #expect(metrics.contains(CapabilityRoute.metricsRoute))
        }
        broker.stop()
        await h.close()
    }

    @Test func aDeletedPhotosURLsAnswer404OnEveryReplicaWithinFiveSeconds() async throws {
        let h = try await GatewayHarness.make()
        let (b, natsB) = try await TokenCacheTests.replica(of: h)
        let broker = try ServerProcess(.mosquitto)
        try await h.run(album: broker) { a in
            try await b.application().test(.live) { bClient in
                try await Self.waitUntilServing(h.gateway, b)
                let (_, alice) = try await a.signUp()
                let (file, versions) = try await Self.renderedPhoto(a, token: alice, name: "ColorfulCups")
                let paths = try versions.map { try Self.path(try #require($0["url"] as? String), h) }
                #expect(!paths.isEmpty)
                for path in paths {
                    #expect(try await a.execute(uri: path, method: .get).status == .ok)
                    #expect(try await bClient.execute(uri: path, method: .get).status == .ok, "B has it cached now")
                }

                #expect(try await a.json("/api/v1/storage/files/\(file)", .delete, token: alice).0.status == .noContent)
                let deleted = ContinuousClock.now
                for path in paths {
                    #expect(try await a.execute(uri: path, method: .get).status == .notFound, "at once on the replica that deleted")
                }
                let gone = try await eventually(timeout: .seconds(5)) {
                    for path in paths {
                        if try await bClient.execute(uri: path, method: .get).status != .notFound { return false }
                    }
                    return true
                }
                #expect(gone, "404 on the other replica")
                #expect(ContinuousClock.now - deleted < .seconds(5), "within 5 s")

                // A replica started after the delete learns of it from storage before it serves.
                let (c, natsC) = try await TokenCacheTests.replica(of: h)
                try await c.application().test(.live) { cClient in
                    var seen: Set<Int> = []
                    let caughtUp = try await eventually(timeout: .seconds(30)) {
                        let status = try await cClient.execute(uri: paths[0], method: .get).status
                        seen.insert(status.code)
                        return status == .notFound
                    }
                    #expect(caughtUp)
                    #expect(seen.isSubset(of: [404, 503]), "a late replica never serves a deleted photo: \(seen.sorted())")
                    for path in paths { #expect(try await cClient.execute(uri: path, method: .get).status == .notFound) }
                }
                natsC.close()
            }
        }
        natsB.close()
        broker.stop()
        await h.close()
    }

    /// Until its first catch-up with storage a replica cannot know which photos were deleted:
    /// 503 with Retry-After; once storage answers, it serves.
    @Test func beforeItCaughtUpTheRouteAnswers503() async throws {
        let h = try await GatewayHarness.make()
        let keys = h.configuration.capabilityKeys
        let path = CapabilityPath.sign(fileID: UUID().uuidString.lowercased(), blobKey: String(repeating: "5", count: 64),
                                       format: "jpeg", expires: CapabilityPath.expiry(lifetime: .seconds(3600)), keys: keys).path
        try await h.run(storage: false) { client in
            try await Task.sleep(for: .milliseconds(300))
            let response = try await client.execute(uri: path, method: .get)
            #expect(response.status == .serviceUnavailable)
            #expect(response.headers[.retryAfter] == "1")
            #expect(response.errorCode == "unavailable")
            #expect(!h.gateway.capabilityRevocations.isServing)
            let tampered = path.replacingOccurrences(of: "/c/\(keys.current.id)/", with: "/c/0badc0de/")
            #expect(try await client.execute(uri: tampered, method: .get).status == .forbidden, "the signature is checked first")
        }
        try await h.run { client in
            // Caught up: the URL is served (404 here: no such blob).
            let served = try await eventually(timeout: .seconds(30)) {
                try await client.execute(uri: path, method: .get).status == .notFound
            }
            #expect(served)
        }
        await h.close()
    }
}
