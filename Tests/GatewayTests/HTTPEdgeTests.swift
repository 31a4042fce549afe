import Foundation
import FramecastTesting
@testable import Gateway
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The HTTP edge against the live gateway: bounded bodies (413), malformed bodies (400), slow
/// clients (408 or disconnected), throttled logins and sign-ups (429 with Retry-After), on-demand
/// renders only for the caller's screens, and what may reach frames (names, time zones).
@Suite struct HTTPEdgeTests {
    // MARK: Bodies

    @Test func oversizedJSONIs413AndMalformedBodiesAre400() async throws {
        let h = try await GatewayHarness.make()
        try await h.run(storage: false) { client in
            let (_, token) = try await client.signUp()
            let big = String(repeating: "x", count: 300 * 1024)
            let bigBody = ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: ["email": "big@example.com",
                                                                                       "password": "long enough pw", "name": big]))
            for (uri, headers) in [("/api/v1/auth/signup", [:]), ("/api/v1/albums", [.authorization: "Bearer \(token)"])] as [(String, HTTPFields)] {
                var headers = headers
                headers[.contentType] = "application/json"
                let response = try await client.execute(uri: uri, method: .post, headers: headers, body: bigBody)
                #expect(response.status == .contentTooLarge, "\(uri)")
                #expect(response.headers[.contentType]?.hasPrefix("application/json") == true)
                #expect(response.errorCode == "too_large")
                #expect(response.errorMessage == "the request body is larger than \(GatewayContext.maxJSONBodyBytes) bytes")
            }
            let port = try #require(client.port)

            // The same size without a Content-Length (chunked): refused while it streams in.
            let connection = try RawConnection(port: port)
            var chunked = Array("POST /api/v1/auth/signup HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
            let payload = Array(#"{"email": "big@example.com", "password": "long enough pw", "name": ""#.utf8) + Array(big.utf8) + Array(#""}"#.utf8)
            for start in stride(from: 0, to: payload.count, by: 16 * 1024) {
                let piece = payload[start..<min(payload.count, start + 16 * 1024)]
                chunked.append(contentsOf: Array("\(String(piece.count, radix: 16))\r\n".utf8))
                chunked.append(contentsOf: piece)
                chunked.append(contentsOf: Array("\r\n".utf8))
            }
            chunked += Array("0\r\n\r\n".utf8)
            try await connection.send(chunked)
            let streamed = try await connection.response(within: .seconds(10))
            #expect(streamed.status == 413, "\(streamed.text.prefix(200))")
            #expect(streamed.text.contains(#""code":"too_large""#))
            connection.close()

            // A chunked body that is not chunked encoding: 400.
            let broken = try RawConnection(port: port)
            try await broken.send(Array(("POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                                         + "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n").utf8))
            let brokenResponse = try await broken.response(within: .seconds(10))
            #expect(brokenResponse.status == 400, "\(brokenResponse.text.prefix(200))")
            broken.close()

            // JSON that does not decode: the field and what is wrong with it, no decoder internals.
            for (body, message) in [
                (#"{"email": 5, "password": "x"}"#, #"invalid JSON body: "email" must be a string"#),
                (#"{"email": "a@example.com"}"#, #"invalid JSON body: missing field "password""#),
                (#"{"email": null, "password": "x"}"#, #"invalid JSON body: "email" must not be null"#),
                (#"["email"]"#, "invalid JSON body: the body must be a JSON object"),
                ("{nope", "invalid JSON body: the body is not valid JSON"),
            ] {
                let response = try await client.execute(uri: "/api/v1/auth/login", method: .post, headers: [.contentType: "application/json"],
                                                        body: ByteBuffer(string: body))
                #expect(response.status == .badRequest, "\(body)")
                #expect(response.errorCode == "bad_request")
                #expect(response.errorMessage == message, "\(body)")
            }
            let typed = try await client.json("/api/v1/albums", .post, token: token, body: ["name": ["not", "text"]])
            #expect(typed.0.errorMessage == #"invalid JSON body: "name" must be a string"#)
            let (nested, _) = try await client.json("/api/v1/frames/x/schedule", .put, token: token,
                                                    body: ["entries": [["interval_seconds": "soon"]]])
            #expect(nested.errorMessage == #"invalid JSON body: "entries.0.interval_seconds" must be a whole number"#)
            for response in [typed.0, nested] {
                for leak in ["Swift", "Int32", "DecodingError", "debugDescription", "CodingKeys", "`"] {
                    #expect(response.errorMessage?.contains(leak) == false, "\(leak) in \(response.errorMessage ?? "")")
                }
            }

            // A NUL anywhere in a string would be cut off on the wire: 400, naming the field.
            let (nul, _) = try await client.json("/api/v1/frames/x/schedule", .put, token: token,
                                                 body: ["entries": [["interval_seconds": 30, "album_id": "abc\u{0}def"]]])
            #expect(nul.status == .badRequest)
            #expect(nul.errorMessage == #""entries.0.album_id" contains a NUL character (U+0000)"#)

            // Still serving on the same connection.
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
        }
        await h.close()
    }

    // MARK: Slow clients

    @Test func slowClientsAreAnsweredOrDisconnectedInBoundedTime() async throws {
        let h = try await GatewayHarness.make { $0.readTimeout = .seconds(1) }
        try await h.run(storage: false) { client in
            // Only raw connections here: the test client's own connection is closed after 1 s idle.
            let port = try #require(client.port)
            let bound = Duration.seconds(5)

            // Half a request head, then nothing.
            let half = try RawConnection(port: port)
            let start = ContinuousClock.now
            try await half.send(Array("POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Ty".utf8))
            let halfResult = try await half.readUntilClosed(within: .seconds(15))
            #expect(halfResult.closed, "the server hung up")
            #expect(ContinuousClock.now - start < bound)
            #expect(halfResult.bytes.isEmpty || halfResult.text.hasPrefix("HTTP/1.1 408"), "\(halfResult.text.prefix(200))")
            half.close()

            // A head sent one byte at a time, never finishing in time: cut off, however steady.
            let trickle = try RawConnection(port: port)
            let head = Array("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: \(String(repeating: "p", count: 64))\r\n\r\n".utf8)
            let trickleStart = ContinuousClock.now
            var sent = 0
            while sent < head.count, ContinuousClock.now - trickleStart < .seconds(15) {
                guard try await trickle.send([head[sent]]) else { break }
                sent += 1
                try await Task.sleep(for: .milliseconds(150))
            }
            #expect(sent < head.count, "the server waited for the whole head (\(head.count) bytes over \(ContinuousClock.now - trickleStart))")
            #expect(ContinuousClock.now - trickleStart < bound)
            trickle.close()

            // A body announced as 1000 bytes, 10 sent: 408 (as JSON) or a closed connection.
            let short = try RawConnection(port: port)
            let shortStart = ContinuousClock.now
            try await short.send(Array(("POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                                        + "Content-Length: 1000\r\n\r\n{\"email\":\"").utf8))
            let shortResult = try await short.readUntilClosed(within: .seconds(15))
            #expect(ContinuousClock.now - shortStart < bound)
            if !shortResult.bytes.isEmpty {
                #expect(shortResult.text.hasPrefix("HTTP/1.1 408"), "\(shortResult.text.prefix(300))")
                #expect(shortResult.text.contains(#""code":"request_timeout""#))
            } else {
                #expect(shortResult.closed)
            }
            short.close()

            // The server is fine: a prompt request is answered.
            let prompt = try RawConnection(port: port)
            try await prompt.send(Array("GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8))
            #expect(try await prompt.response(within: .seconds(10)).status == 200)
            prompt.close()
        }
        await h.close()
    }

    // MARK: Login and sign-up throttling

    @Test func wrongPasswordsAreThrottledPerAccountAndTheRightOneWorksAfterTheWait() async throws {
        let h = try await GatewayHarness.make {
            $0.throttle.loginFailuresPerAccount = .init(burst: 3, refill: .seconds(1))
            $0.throttle.loginFailuresPerAddress = .init(burst: 1000, refill: .seconds(1))
        }
        try await h.run(storage: false) { client in
            let email = "ada-\(UUID().uuidString.prefix(6).lowercased())@example.com"
            _ = try await client.signUp(email)
            func login(_ spelling: String, _ password: String) async throws -> TestResponse {
                try await client.json("/api/v1/auth/login", .post, body: ["email": spelling, "password": password]).0
            }
            // Wrong passwords, under any spelling of the address, until the account is throttled
            // (a slow machine may see a token come back in between: a few more tries then).
            var statuses: [HTTPResponse.Status] = []
            var throttled: TestResponse?
            for attempt in 0..<8 where throttled == nil {
                let response = try await login(attempt.isMultiple(of: 2) ? email : " \(email.uppercased()) ", "wrong password!")
                statuses.append(response.status)
                if response.status == .tooManyRequests { throttled = response }
            }
            #expect(Array(statuses.prefix(3)) == [.unauthorized, .unauthorized, .unauthorized])
            let limited = try #require(throttled, "429 after the burst: \(statuses)")
            #expect(limited.errorCode == "too_many_requests")
            #expect(limited.headers[.contentType]?.hasPrefix("application/json") == true)
            let retryAfter = try #require(limited.headers[.retryAfter].flatMap(Int.init), "Retry-After in seconds")
            #expect(retryAfter == 1, "one token back per second")
            #expect(limited.errorMessage?.contains("try again in \(retryAfter) s") == true)

            // After the wait, the right password works; it forgives the account's failures.
            try await Task.sleep(for: .seconds(retryAfter) + .milliseconds(300))
            let ok = try await login(email, "correct horse battery")
            #expect(ok.status == .ok)
            #expect(ok.jsonObject["token"] is String)
            for _ in 0..<3 { #expect(try await login(email, "wrong password!").status == .unauthorized, "a full burst again") }
        }
        await h.close()
    }

    @Test func anAddressIsThrottledAcrossAccountsAndForSignUps() async throws {
        let h = try await GatewayHarness.make {
            $0.throttle.loginFailuresPerAccount = .init(burst: 100, refill: .seconds(60))
            $0.throttle.loginFailuresPerAddress = .init(burst: 4, refill: .seconds(60))
            $0.throttle.signUpsPerAddress = .init(burst: 3, refill: .seconds(60))
        }
        try await h.run(storage: false) { client in
            let emails = (0..<3).map { "user\($0)-\(UUID().uuidString.prefix(6).lowercased())@example.com" }
            for email in emails { _ = try await client.signUp(email) }
            let (fourth, _) = try await client.json("/api/v1/auth/signup", .post,
                                                    body: ["email": "late@example.com", "password": "correct horse battery", "name": "Late"])
            #expect(fourth.status == .tooManyRequests)
            #expect(fourth.errorCode == "too_many_requests")
            #expect((1...60).contains(fourth.headers[.retryAfter].flatMap(Int.init) ?? 0))
            #expect(try await client.execute(uri: "/api/v1/storage/files", method: .get).status == .unauthorized, "other routes unaffected")

            for email in [emails[0], emails[1], emails[0], emails[1]] {
                #expect(try await client.json("/api/v1/auth/login", .post, body: ["email": email, "password": "wrong password!"]).0.status
                        == .unauthorized)
            }
            // The address is out of attempts: even another account's right password waits.
            let (blocked, body) = try await client.json("/api/v1/auth/login", .post,
                                                        body: ["email": emails[2], "password": "correct horse battery"])
            #expect(blocked.status == .tooManyRequests)
            #expect((1...60).contains(blocked.headers[.retryAfter].flatMap(Int.init) ?? 0))
            #expect(body["token"] == nil)
        }
        await h.close()
    }

    @Test func throttleBucketsRefillEvictAndForgive() {
        func near(_ wait: Duration?, _ expected: Duration) -> Bool {
            guard let wait else { return false }
            return abs((wait - expected) / .seconds(1)) < 0.001
        }
        let start = ContinuousClock.now
        var configuration = ThrottleConfiguration()
        configuration.loginFailuresPerAccount = .init(burst: 2, refill: .seconds(10))
        configuration.loginFailuresPerAddress = .init(burst: 3, refill: .seconds(100))
        configuration.maxTrackedKeys = 20
        var throttle = LoginThrottle(configuration)
        let alice = LoginThrottle.login(email: " Alice@Example.com", address: "10.0.0.1")
        #expect(alice == LoginThrottle.login(email: "alice@example.com", address: "10.0.0.1"), "one account, however spelled")
        #expect(throttle.begin(alice, now: start) == nil)
        #expect(throttle.begin(alice, now: start) == nil)
        #expect(near(throttle.begin(alice, now: start), .seconds(10)), "the account is out (nothing spent)")
        #expect(near(throttle.begin(alice, now: start + .seconds(5)), .seconds(5)))
        #expect(throttle.begin(alice, now: start + .seconds(10)) == nil, "one back after 10 s")
        // The address has spent 3 (1.1 after 10 s, 0.1 now): another account from it waits too.
        let bob = LoginThrottle.login(email: "bob@example.com", address: "10.0.0.1")
        #expect(near(throttle.begin(bob, now: start + .seconds(10)), .seconds(90)))
        // A success forgives the account and gives the address its token back.
        throttle.succeeded(alice, now: start + .seconds(10))
        #expect(throttle.begin(bob, now: start + .seconds(10)) == nil)
        #expect(throttle.begin(alice, now: start + .seconds(10)) != nil, "bob took the address's last token")
        let carol = LoginThrottle.login(email: "carol@example.com", address: nil)
        #expect(throttle.begin(carol, now: start) == nil, "no address: the account alone counts")
        // Bounded: many accounts never grow it past the limit.
        for i in 0..<100 {
            _ = throttle.begin(LoginThrottle.login(email: "u\(i)@example.com", address: nil), now: start + .seconds(11))
        }
        #expect(throttle.trackedKeys <= 20)
        #expect(throttle.beginSignUp(address: nil, now: start) == nil, "sign-ups without an address are not counted")
    }

    // MARK: On-demand renders

    @Test func onDemandRendersOnlyForTheCallersScreens() async throws {
        let h = try await GatewayHarness.make()
        let broker = try ServerProcess(.mosquitto)
        try await h.run(album: broker) { client in
            let bobEmail = "bob-\(UUID().uuidString.prefix(6).lowercased())@example.com"
            let (_, alice) = try await client.signUp()
            let (_, bob) = try await client.signUp(bobEmail)
            let (_, carol) = try await client.signUp()
            let (_, album) = try await client.json("/api/v1/albums", .post, token: alice, body: ["name": "Family"])
            let albumID = try #require(album["album_id"] as? String)
            #expect(try await client.json("/api/v1/albums/\(albumID)/members", .post, token: alice,
                                          body: ["email": bobEmail, "role": "viewer"]).0.status == .created)
            let (_, uploaded) = try await client.upload(try Photos.bytes(try Photos.plasma("Kite")), token: alice,
                                                        metadata: "{\"album_id\": \"\(albumID)\"}")
            let file = try #require(uploaded["file_id"] as? String)
            func sizes() async throws -> Set<String> {
                let (response, body) = try await client.json("/api/v1/photos/\(file)", token: alice)
                guard response.status == .ok else { return [] }
                return Set(((body["versions"] as? [[String: Any]]) ?? []).compactMap { $0["size"] as? String })
            }
            #expect(try await eventually(timeout: .seconds(60)) { try await sizes() == ["thumbnail", "hd"] })
            // Alice's frame, showing no album yet: nothing renders its screen in the background.
            let (_, frame) = try await client.json("/api/v1/frames", .post, token: alice,
                                                   body: ["name": "Kitchen", "width": 1024, "height": 600])
            let frameID = try #require(frame["frame_id"] as? String)
            let frameToken = try #require(frame["frame_token"] as? String)
            func download(_ size: String, _ token: String) async throws -> TestResponse {
                try await client.execute(uri: "/api/v1/files/download/\(file)?size=\(size)", method: .get,
                                         headers: [.authorization: "Bearer \(token)"])
            }
            func versionRows(_ size: String) async throws -> Int {
                try await h.backend.postgres.query("SELECT 1 FROM media.photo_versions WHERE file_id = $1 AND size = $2",
                                                   [.text(file), .text(size)]).count
            }

            // A size that is none of alice's screens: 400 saying why, nothing rendered or stored.
            let blobsBefore = Set(h.blobFiles())
            let arbitrary = try await download("frame:800x480", alice)
            #expect(arbitrary.status == .badRequest)
            #expect(arbitrary.errorCode == "bad_request")
            #expect(arbitrary.errorMessage
                    == "frame:800x480 is not the screen of one of your frames; sizes: thumbnail, hd, original, frame:1024x600")
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await versionRows("frame:800x480") == 0)
            #expect(Set(h.blobFiles()) == blobsBefore, "no blob stored")
            #expect(try await download("frame:abc", alice).errorMessage == "size must be original, thumbnail, hd or frame:{W}x{H}")

            // Her frame's screen is rendered on request, in WebP when asked.
            let wide = try await download("frame:1024x600", alice)
            #expect(wide.status == .ok)
            let header = try await testImaging.probe(wide.bytes)
            #expect((header.width, header.height) == (1024, 600))
            #expect(try await versionRows("frame:1024x600") == 1)
            let webp = try await download("frame:1024x600&format=webp", alice)
            #expect(webp.status == .ok)
            #expect(webp.headers[.contentType] == "image/webp")

            // Bob has no frame: he may read the version made for alice's (it exists), but asks
            // for no new one; carol may see nothing at all.
            let read = try await download("frame:1024x600", bob)
            #expect(read.status == .ok)
            #expect(read.bytes == wide.bytes)
            let bobArbitrary = try await download("frame:640x400", bob)
            #expect(bobArbitrary.status == .badRequest)
            #expect(bobArbitrary.errorMessage?.hasPrefix("frame:640x400 is not the screen of one of your frames") == true)
            #expect(try await versionRows("frame:640x400") == 0)
            #expect(try await download("frame:1024x600", carol).status == .notFound)
            #expect(try await download("hd", bob).status == .ok)

            // A frame: its own screen only.
            #expect(try await client.json("/api/v1/frames/\(frameID)/albums", .put, token: alice,
                                          body: ["album_ids": [albumID]]).0.status == .ok)
            #expect(try await download("frame:1024x600", frameToken).status == .ok)
            #expect(try await download("thumbnail", frameToken).status == .ok)
            let other = try await download("frame:800x480", frameToken)
            #expect(other.status == .badRequest)
            #expect(other.errorMessage?.hasPrefix("frame:800x480 is not this frame's screen; sizes: thumbnail, hd, frame:1024x600") == true)
            #expect(try await versionRows("frame:800x480") == 0)
        }
        broker.stop()
        await h.close()
    }

    // MARK: What reaches frames

    @Test func namesWithControlCharactersAndUnknownTimeZonesAreRefused() async throws {
        let h = try await GatewayHarness.make()
        let broker = try ServerProcess(.mosquitto)
        try await h.run(album: broker) { client in
            let (_, alice) = try await client.signUp()
            for (uri, body, message) in [
                ("/api/v1/albums", ["name": "Fam\u{0}ily"], #""name" contains a NUL character (U+0000)"#),
                ("/api/v1/albums", ["name": "Bell\u{7}"], "name must not contain control characters (found U+0007)"),
                ("/api/v1/albums", ["name": "Two\nlines"], "name must not contain control characters (found U+000A)"),
                ("/api/v1/albums", ["name": "Ok", "description": "red \u{1B}[31m"],
                 "description must not contain control characters other than newlines and tabs (found U+001B)"),
                ("/api/v1/frames", ["name": "Kitchen\u{7}", "width": 1024, "height": 600], "name must not contain control characters (found U+0007)"),
                ("/api/v1/frames", ["name": "Kitchen\u{0}", "width": 1024, "height": 600], #""name" contains a NUL character (U+0000)"#),
                ("/api/v1/playlists", ["name": "Morning\u{7}"], "name must not contain control characters (found U+0007)"),
                ("/api/v1/auth/signup", ["email": "x@example.com", "password": "long enough pw", "name": "X\u{0}"],
                 #""name" contains a NUL character (U+0000)"#),
            ] as [(String, [String: Any], String)] {
                let (response, _) = try await client.json(uri, .post, token: alice, body: body)
                #expect(response.status == .badRequest, "\(uri) \(body)")
                #expect(response.errorMessage == message, "\(uri) \(body)")
            }
            let (_, albums) = try await client.json("/api/v1/albums", token: alice)
            let names = (albums["albums"] as? [[String: Any]])?.compactMap { $0["name"] as? String } ?? []
            #expect(!names.contains { $0.hasPrefix("Fam") || $0.hasPrefix("Bell") || $0.hasPrefix("Two") || $0 == "Ok" },
                    "nothing was created: \(names)")

            // A description may have several lines; a rename is checked like a name.
            let (created, album) = try await client.json("/api/v1/albums", .post, token: alice,
                                                         body: ["name": "Family", "description": "line one\nline two\tend"])
            #expect(created.status == .created)
            #expect(album["description"] as? String == "line one\nline two\tend")
            let albumID = try #require(album["album_id"] as? String)
            let (renamed, _) = try await client.json("/api/v1/albums/\(albumID)", .patch, token: alice, body: ["name": "Fam\u{0}"])
            #expect(renamed.status == .badRequest)
            #expect(try await client.json("/api/v1/albums/\(albumID)", token: alice).1["name"] as? String == "Family")

            // The frame's time zone: an IANA name or nothing.
            let (_, frame) = try await client.json("/api/v1/frames", .post, token: alice, body: ["name": "Kitchen", "width": 1024, "height": 600])
            let frameID = try #require(frame["frame_id"] as? String)
            let config = "/api/v1/frames/\(frameID)/config"
            for zone in ["Mars/Olympus_Mons", "Europe/Nowhere", "not a zone"] {
                let (response, _) = try await client.json(config, .put, token: alice, body: ["interval_seconds": 30, "time_zone": zone])
                #expect(response.status == .badRequest, "\(zone)")
                #expect(response.errorMessage?.hasPrefix("time_zone must be an IANA time zone name") == true, "\(zone)")
            }
            let (cut, _) = try await client.json(config, .put, token: alice, body: ["interval_seconds": 30, "time_zone": "Europe/Berlin\u{0}x"])
            #expect(cut.errorMessage == #""time_zone" contains a NUL character (U+0000)"#, "not silently cut to Europe/Berlin")
            for zone in ["Europe/Berlin", "America/Argentina/Buenos_Aires", ""] {
                let (response, body) = try await client.json(config, .put, token: alice, body: ["interval_seconds": 30, "time_zone": zone])
                #expect(response.status == .ok, "\(zone)")
                #expect((body["config"] as? [String: Any])?["time_zone"] as? String == zone)
            }
        }
        broker.stop()
        await h.close()
    }
}

extension TestResponse {
    var errorMessage: String? { (jsonObject["error"] as? [String: Any])?["message"] as? String }
}

/// A raw TCP connection to the live test server, for requests no HTTP client sends (half a
/// head, a body shorter than announced, a broken chunked encoding). The socket is
/// non-blocking and polled with short sleeps, so no cooperative thread ever blocks on it.
final class RawConnection: Sendable {
    struct Failed: Error {
        let call: String
        let errno: Int32
    }

    let fd: Int32

    /// Connects to `localhost:port` (the address the live test server listens on).
    init(port: Int) throws {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo("localhost", String(port), &hints, &list) == 0 else { throw Failed(call: "getaddrinfo", errno: errno) }
        defer { freeaddrinfo(list) }
        var candidate = list
        while let info = candidate {
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
            if fd >= 0 {
                // Loopback: the connect completes (or is refused) at once.
                if connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 {
                    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                    self.fd = fd
                    return
                }
                Glibc.close(fd)
            }
            candidate = info.pointee.ai_next
        }
        throw Failed(call: "connect", errno: errno)
    }

    /// Writes all of `bytes`; false when the server has closed the connection.
    @discardableResult
    func send(_ bytes: [UInt8]) async throws -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                offset += n
            } else if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR {
                try await Task.sleep(for: .milliseconds(5))
            } else {
                return false
            }
        }
        return true
    }

    struct Received {
        var bytes: [UInt8] = []
        var closed = false
        var text: String { String(decoding: bytes, as: UTF8.self) }
        /// The status code of the first response, 0 when there is none.
        var status: Int {
            guard text.hasPrefix("HTTP/1.1 "), text.count >= 12 else { return 0 }
            return Int(text.dropFirst(9).prefix(3)) ?? 0
        }
    }

    /// What arrives until the server closes the connection or `timeout` passes.
    func readUntilClosed(within timeout: Duration) async throws -> Received {
        try await read(within: timeout) { _ in false }
    }

    /// The first response: its head and, when it announces one, its whole body.
    func response(within timeout: Duration) async throws -> Received {
        try await read(within: timeout) { received in
            let text = received.text
            guard let end = text.range(of: "\r\n\r\n") else { return false }
            let head = text[..<end.lowerBound].lowercased()
            if head.contains("transfer-encoding: chunked") { return text.hasSuffix("\r\n0\r\n\r\n") }
            guard let line = head.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
                  let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) else { return true }
            return received.bytes.count - text[..<end.upperBound].utf8.count >= length
        }
    }

    private func read(within timeout: Duration, until enough: (Received) -> Bool) async throws -> Received {
        let deadline = ContinuousClock.now + timeout
        var received = Received()
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while ContinuousClock.now < deadline {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                received.bytes += buffer[0..<n]
                if enough(received) { return received }
            } else if n == 0 {
                received.closed = true
                return received
            } else if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR {
                try await Task.sleep(for: .milliseconds(10))
            } else {
                received.closed = true  // reset by the server
                return received
            }
        }
        return received
    }

    func close() { Glibc.close(fd) }
}
