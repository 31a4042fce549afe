import BlobStore
import Foundation
import FramecastTesting
@testable import Gateway
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Imaging
import ServiceKit
import Testing
import Wire

@Suite struct AccountTests {
    @Test func signUpLoginLogout() async throws {
        let h = try await GatewayHarness.make()
        try await h.run { client in
            let email = "Ada.Lovelace+\(UUID().uuidString.prefix(6))@Example.COM "
            let (signup, session) = try await client.json("/api/v1/auth/signup", .post,
                                                          body: ["email": email, "password": "correct horse battery", "name": "Ada"])
            #expect(signup.status == .created)
            let token = try #require(session["token"] as? String)
            #expect(token.count == 43, "256 random bits, base64url")

            // The same address in another spelling is the same account.
            let (dup, dupBody) = try await client.json("/api/v1/auth/signup", .post,
                                                       body: ["email": email.lowercased().trimmingCharacters(in: .whitespaces),
                                                              "password": "another password", "name": "Ada"])
            #expect(dup.status == .conflict)
            #expect(dup.errorCode == "conflict")
            #expect((dupBody["error"] as? [String: Any])?["message"] != nil)

            let (wrong, wrongBody) = try await client.json("/api/v1/auth/login", .post, body: ["email": email, "password": "wrong password!"])
            let (unknown, unknownBody) = try await client.json("/api/v1/auth/login", .post,
                                                               body: ["email": "nobody@example.com", "password": "wrong password!"])
            #expect(wrong.status == .unauthorized && unknown.status == .unauthorized)
            #expect(NSDictionary(dictionary: wrongBody) == NSDictionary(dictionary: unknownBody), "no hint which part was wrong")

            let (login, loginBody) = try await client.json("/api/v1/auth/login", .post, body: ["email": email, "password": "correct horse battery"])
            #expect(login.status == .ok)
            let second = try #require(loginBody["token"] as? String)
            #expect(try await client.json("/api/v1/storage/files", token: second).0.status == .ok)

            #expect(try await client.json("/api/v1/auth/logout", .post, token: second).0.status == .noContent)
            let (revoked, _) = try await client.json("/api/v1/storage/files", token: second)
            #expect(revoked.status == .unauthorized)
            #expect(try await client.json("/api/v1/storage/files", token: token).0.status == .ok, "other sessions stay valid")

            // The database holds neither the password nor the token.
            let rows = try await h.backend.postgres.query("SELECT password_hash FROM gateway.users")
            #expect(try rows.allSatisfy { try $0.decode("password_hash", as: String.self).hasPrefix("$argon2id$") })
            #expect(try await h.backend.postgres.query("SELECT 1 FROM gateway.tokens WHERE token_hash = $1", [.text(token)]).isEmpty)
        }
        await h.close()
    }

    @Test func badSignUpsAndMissingTokens() async throws {
        let h = try await GatewayHarness.make()
        try await h.run { client in
            for body: [String: Any] in [
                ["email": "not-an-email", "password": "long enough pw", "name": "X"],
                ["email": "a@example.com", "password": "short", "name": "X"],
                ["email": "a@example.com", "password": "long enough pw", "name": ""],
                ["email": "a@example.com", "name": "X"],
            ] {
                let (response, _) = try await client.json("/api/v1/auth/signup", .post, body: body)
                #expect(response.status == .badRequest, "\(body)")
                #expect(response.errorCode == "bad_request")
            }
            let garbage = try await client.execute(uri: "/api/v1/auth/signup", method: .post,
                                                   headers: [.contentType: "application/json"], body: ByteBuffer(string: "{nope"))
            #expect(garbage.status == .badRequest)

            for headers: HTTPFields in [[:], [.authorization: "Bearer nonsense-token-that-does-not-exist"], [.authorization: "Basic abc"]] {
                let response = try await client.execute(uri: "/api/v1/storage/files", method: .get, headers: headers)
                #expect(response.status == .unauthorized)
                #expect(response.errorCode == "unauthorized")
            }
        }
        await h.close()
    }
}

@Suite struct UploadTests {
    @Test func realPhotosInJPEGPNGAndHEIC() async throws {
        let h = try await GatewayHarness.make()
        let jpeg = try Photos.bytes(try Photos.plasma("FallenLeaf"))
        let png = try await testImaging.convert(try Photos.bytes(try Photos.plasma("Kite")), to: .png)
        let heic = try await testImaging.convert(try Photos.bytes(try Photos.plasma("BytheWater")), to: .heif(quality: 50))
        try await h.run { client in
            let (_, token) = try await client.signUp()
            let (response, file) = try await client.upload(jpeg, token: token, name: "FallenLeaf.jpg", metadata: #"{"place": "family"}"#)
            #expect(response.status == .created)
            #expect(file["content_type"] as? String == "image/jpeg")
            #expect(file["width"] as? Int == 2560 && file["height"] as? Int == 1600)
            #expect(file["taken_at"] as? String == "2015-10-29T15:44:44.000Z")
            #expect((file["camera"] as? [String: Any])?["model"] as? String == "Canon EOS 70D")
            #expect((file["metadata"] as? [String: String]) == ["place": "family"])
            #expect(file["size"] as? Int == jpeg.count)
            #expect(file["duplicate"] as? Bool == false)

            let (pngResponse, pngFile) = try await client.upload(png, token: token, name: "kite.png")
            #expect(pngResponse.status == .created)
            #expect(pngFile["content_type"] as? String == "image/png")
            #expect(pngFile["width"] as? Int == 2560 && pngFile["height"] as? Int == 1600)

            let (heicResponse, heicFile) = try await client.upload(heic, token: token, name: "water.heic")
            #expect(heicResponse.status == .created)
            #expect(heicFile["content_type"] as? String == "image/heic")
            #expect(heicFile["width"] as? Int == 2560 && heicFile["height"] as? Int == 1600)

            let (list, listBody) = try await client.json("/api/v1/storage/files", token: token)
            #expect(list.status == .ok)
            #expect((listBody["files"] as? [[String: Any]])?.compactMap { $0["file_name"] as? String } == ["water.heic", "kite.png", "FallenLeaf.jpg"])
        }
        await h.close()
    }

    @Test func theSamePhotoTwiceIsOneFileAndOneEvent() async throws {
        let h = try await GatewayHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("Kite"))
        try await h.run { client in
            let (_, token) = try await client.signUp()
            let (first, a) = try await client.upload(photo, token: token)
            let (second, b) = try await client.upload(photo, token: token, name: "again.jpg")
            #expect(first.status == .created)
            #expect(second.status == .ok)
            #expect(b["duplicate"] as? Bool == true)
            #expect(a["file_id"] as? String == b["file_id"] as? String)
            let (_, listBody) = try await client.json("/api/v1/storage/files", token: token)
            #expect((listBody["files"] as? [Any])?.count == 1)

            // Exactly one file.uploaded.with_ai on the stream, decoded with the wire types.
            _ = try await eventually { try await eventsInStream(FileUploadedWithAI.self, jetStream: h.runtime.jetStream).count >= 1 }
            try await Task.sleep(for: .milliseconds(500))
            let events = try await eventsInStream(FileUploadedWithAI.self, jetStream: h.runtime.jetStream)
            #expect(events.count == 1)
            #expect(events.first?.file?.fileID == a["file_id"] as? String)
        }
        await h.close()
    }

    @Test func refusedUploadsGetTheRightStatusAndLeaveNoBlob() async throws {
        let h = try await GatewayHarness.make(maxUploadBytes: 3 * 1024 * 1024)
        let photo = try Photos.bytes(try Photos.plasma("BytheWater"))
        let big = try Photos.bytes(try Photos.mateNature().max { $0.count < $1.count } ?? "")
        try await h.run { client in
            let (_, token) = try await client.signUp()
            // 415: not an image (by its bytes), a truncated JPEG, a decompression bomb.
            for (label, bytes) in [("text named .jpg", Array("hello, I am not a photo".utf8)),
                                   ("truncated JPEG", Array(photo.prefix(photo.count / 2))),
                                   ("30000x30000 PNG bomb", PNGWriter.bomb(width: 30000, height: 30000))] {
                let (response, _) = try await client.upload(bytes, token: token)
                #expect(response.status == .unsupportedMediaType, "\(label)")
                #expect(response.errorCode == "unsupported_media_type", "\(label)")
            }
            // 413: larger than the limit, refused while streaming.
            var large = photo
            while large.count <= 3 * 1024 * 1024 { large += photo }
            let (tooLarge, _) = try await client.upload(large, token: token)
            #expect(tooLarge.status == .contentTooLarge)
            #expect(tooLarge.errorCode == "too_large")
            _ = big

            // 400: not multipart, no file part, bad metadata, a body cut before its end.
            let plain = try await client.execute(uri: "/api/v1/storage/photos/upload", method: .post,
                                                 headers: [.authorization: "Bearer \(token)", .contentType: "image/jpeg"],
                                                 body: ByteBuffer(bytes: photo))
            #expect(plain.status == .badRequest)
            let (noFileType, noFileBody) = multipart([Part(name: "metadata", bytes: Array("{}".utf8))])
            let noFile = try await client.execute(uri: "/api/v1/storage/photos/upload", method: .post,
                                                  headers: [.authorization: "Bearer \(token)", .contentType: noFileType], body: noFileBody)
            #expect(noFile.status == .badRequest)
            let (badMetadata, _) = try await client.upload(photo, token: token, metadata: "{not json")
            #expect(badMetadata.status == .badRequest)
            let (cutType, cutBody) = multipart([Part(name: "file", fileName: "a.jpg", bytes: photo)], close: false)
            let cut = try await client.execute(uri: "/api/v1/storage/photos/upload", method: .post,
                                               headers: [.authorization: "Bearer \(token)", .contentType: cutType], body: cutBody)
            #expect(cut.status == .badRequest)
            let (noToken, _) = try await client.upload(photo, token: nil)
            #expect(noToken.status == .unauthorized)

            #expect(h.blobFiles().isEmpty, "no blob and no temp file left: \(h.blobFiles())")
            // The service is still healthy: a good upload works.
            let (ok, _) = try await client.upload(photo, token: token)
            #expect(ok.status == .created)
            #expect(try await client.execute(uri: "/readyz", method: .get).status == .ok)
        }
        await h.close()
    }
}

@Suite struct FileAccessTests {
    @Test func downloadsAreByteIdenticalWithRangeAndConditionalGET() async throws {
        let h = try await GatewayHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("ColorfulCups"))
        try await h.run { client in
            let (_, token) = try await client.signUp()
            let (_, file) = try await client.upload(photo, token: token, name: "cups.jpg")
            let id = try #require(file["file_id"] as? String)
            let auth: HTTPFields = [.authorization: "Bearer \(token)"]
            let uri = "/api/v1/files/download/\(id)"

            let full = try await client.execute(uri: uri, method: .get, headers: auth)
            #expect(full.status == .ok)
            #expect(full.bytes == photo)
            #expect(full.headers[.contentType] == "image/jpeg")
            let etag = try #require(full.headers[.eTag])
            #expect(full.headers[.cacheControl]?.contains("immutable") == true)

            var ranged = auth
            ranged[.range] = "bytes=100-199"
            let part = try await client.execute(uri: uri, method: .get, headers: ranged)
            #expect(part.status == .partialContent)
            #expect(part.bytes == Array(photo[100...199]))
            #expect(part.headers[.contentRange] == "bytes 100-199/\(photo.count)")
            ranged[.range] = "bytes=-10"
            #expect(try await client.execute(uri: uri, method: .get, headers: ranged).bytes == Array(photo.suffix(10)))
            ranged[.range] = "bytes=\(photo.count)-"
            let outside = try await client.execute(uri: uri, method: .get, headers: ranged)
            #expect(outside.status == .rangeNotSatisfiable)
            #expect(outside.headers[.contentRange] == "bytes */\(photo.count)")

            var conditional = auth
            conditional[.ifNoneMatch] = etag
            let notModified = try await client.execute(uri: uri, method: .get, headers: conditional)
            #expect(notModified.status == .notModified)
            #expect(notModified.bytes.isEmpty)
            conditional[.ifNoneMatch] = "\"something-else\""
            #expect(try await client.execute(uri: uri, method: .get, headers: conditional).status == .ok)
        }
        await h.close()
    }

    @Test func anotherUsersFileIsExactlyLikeAMissingOne() async throws {
        let h = try await GatewayHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("Kite"))
        try await h.run { client in
            let (_, alice) = try await client.signUp()
            let (_, bob) = try await client.signUp()
            let (_, file) = try await client.upload(photo, token: alice)
            let id = try #require(file["file_id"] as? String)
            let missing = UUID().uuidString.lowercased()

            let (bobList, bobBody) = try await client.json("/api/v1/storage/files", token: bob)
            #expect(bobList.status == .ok && (bobBody["files"] as? [Any])?.isEmpty == true)
            for (uri, method) in [("/api/v1/storage/files/ID", HTTPRequest.Method.get), ("/api/v1/files/download/ID", .get),
                                  ("/api/v1/storage/files/ID", .delete)] {
                let theirs = try await client.json(uri.replacingOccurrences(of: "ID", with: id), method, token: bob)
                let nothing = try await client.json(uri.replacingOccurrences(of: "ID", with: missing), method, token: bob)
                #expect(theirs.0.status == .notFound && nothing.0.status == .notFound, "\(method) \(uri)")
                #expect(NSDictionary(dictionary: theirs.1) == NSDictionary(dictionary: nothing.1), "same body: \(method) \(uri)")
            }
            // Alice still has it, then deletes it: gone, blob too.
            #expect(try await client.json("/api/v1/storage/files/\(id)", token: alice).0.status == .ok)
            #expect(try await client.json("/api/v1/storage/files/\(id)", .delete, token: alice).0.status == .noContent)
            #expect(try await client.json("/api/v1/storage/files/\(id)", token: alice).0.status == .notFound)
            #expect(h.blobFiles().isEmpty)
        }
        await h.close()
    }

    @Test func storageDownMeans503QuicklyAndNoOrphanBlob() async throws {
        let h = try await GatewayHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("FallenLeaf"))
        // The gateway runs alone: storage is not started.
        try await h.run(storage: false) { client in
            let (_, token) = try await client.signUp()
            let start = ContinuousClock.now
            let (response, _) = try await client.upload(photo, token: token)
            #expect(response.status == .serviceUnavailable)
            #expect(response.errorCode == "unavailable")
            // Well below the harness's 20 s service timeout: no responders answers, not the timeout.
            #expect(ContinuousClock.now - start < .seconds(10), "answered quickly, not after a hang")
            #expect(h.blobFiles().isEmpty, "no orphan blob: \(h.blobFiles())")
        }
        // Storage started again: uploads work.
        try await h.run { client in
            let (_, token) = try await client.signUp()
            #expect(try await client.upload(photo, token: token).0.status == .created)
        }
        await h.close()
    }
}

@Suite struct OperationsTests {
    @Test func everyRouteIsInTheOpenAPIDocument() async throws {
        try OpenAPI.check()
        let h = try await GatewayHarness.make()
        _ = h.gateway.router()
        let table = h.gateway.routeTable
        #expect(table.count >= 12)
        // The document's operations ("get /api/v1/albums"), read line by line as openapi.yaml is
        // laid out: paths at two spaces, their methods at four, an operation's keys at six, its
        // responses' status codes at eight.
        struct DocumentedOperation {
            var isPublic = false
            var hasBody = false
            var statuses: Set<String> = []
        }
        var operations: [String: DocumentedOperation] = [:]
        var currentPath: String?
        var current: String?
        var inResponses = false
        for line in OpenAPI.document.split(separator: "\n").map(String.init) {
            if line.hasPrefix("  /"), line.hasSuffix(":") {
                currentPath = String(line.dropFirst(2).dropLast())
                current = nil
            } else if line.hasPrefix("    "), !line.hasPrefix("     ") {
                current = nil
                if let path = currentPath, let method = ["get", "post", "put", "patch", "delete"].first(where: { line == "    \($0):" }) {
                    current = "\(method) \(path)"
                    operations["\(method) \(path)"] = DocumentedOperation()
                }
            } else if let operation = current, line.hasPrefix("      "), !line.hasPrefix("       ") {
                inResponses = line == "      responses:"
                if line == "      security: []" { operations[operation]?.isPublic = true }
                if line == "      requestBody:" { operations[operation]?.hasBody = true }
            } else if let operation = current, inResponses, line.hasPrefix("        '"), !line.hasPrefix("         ") {
                operations[operation]?.statuses.insert(String(line.dropFirst(9).prefix(3)))
            }
        }
        let routes = Set(table.map { "\($0.method) \($0.path)" })
        #expect(Set(operations.keys).subtracting(routes).isEmpty,
                "documented in openapi.yaml but not a route: \(Set(operations.keys).subtracting(routes).sorted())")
        for route in table {
            let key = "\(route.method) \(route.path)"
            guard let operation = operations[key] else {
                Issue.record("\(key) is missing from openapi.yaml")
                continue
            }
            // Bearer is the document's default; the public routes say `security: []`.
            #expect(operation.isPublic == !route.authenticated,
                    "\(key): security must be \(route.authenticated ? "bearer (the default)" : "[] (the route is public)")")
            if route.authenticated {
                #expect(operation.statuses.contains("401"), "\(key) does not declare its 401")
            }
            if route.path.contains("{") {
                #expect(operation.statuses.contains("404"), "\(key) does not declare its 404")
            }
            if operation.hasBody {
                #expect(operation.statuses.isSuperset(of: ["400", "408", "413"]), "\(key) does not declare its 400, 408 and 413")
            }
        }
        try await h.run(storage: false) { client in
            let response = try await client.execute(uri: "/openapi.yaml", method: .get)
            #expect(response.status == .ok)
            #expect(response.headers[.contentType] == "application/yaml")
            #expect(response.bytes == OpenAPI.bytes, "the file, byte for byte")
            #expect(String(decoding: response.bytes, as: UTF8.self).hasPrefix("openapi: 3"))
        }
        await h.close()
    }

    @Test func healthReadinessMetricsAndRequestIDs() async throws {
        let h = try await GatewayHarness.make()
        try await h.run(storage: false) { client in
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
            let ready = try await client.execute(uri: "/readyz", method: .get)
            #expect(ready.status == .ok)
            #expect((ready.jsonObject["checks"] as? [String: String]) == ["nats": "ok", "postgres": "ok"])

            let echoed = try await client.execute(uri: "/healthz", method: .get, headers: [.init("X-Request-Id")!: "abc-123"])
            #expect(echoed.headers[.init("X-Request-Id")!] == "abc-123")
            let generated = try await client.execute(uri: "/api/v1/storage/files", method: .get)
            #expect(generated.headers[.init("X-Request-Id")!]?.count == 36, "a new id, also on errors")

            _ = try await client.execute(uri: "/api/v1/storage/files", method: .get)
            let metrics = String(decoding: try await client.execute(uri: "/metrics", method: .get).bytes, as: UTF8.self)
            #expect(metrics.contains("http_server_request_duration"))
            #expect(metrics.contains("/api/v1/storage/files"))
            #expect(metrics.contains("401"))
        }
        await h.close()
    }

    @Test func readinessFailsWhenPostgresIsUnreachable() async throws {
        let h = try await GatewayHarness.make()
        await h.backend.postgres.close()
        try await h.run(storage: false) { client in
            let response = try await client.execute(uri: "/readyz", method: .get)
            #expect(response.status == .serviceUnavailable)
            #expect((response.jsonObject["checks"] as? [String: String])?["postgres"] == "unreachable")
        }
        await h.close()
    }
}

@Suite struct ProtocolUnitTests {
    @Test func multipartParsesAnyChunking() throws {
        let payload = (0..<5000).map { UInt8($0 % 251) }
        let (type, body) = multipart([Part(name: "metadata", bytes: Array(#"{"album_id":"a"}"#.utf8)),
                                      Part(name: "file", fileName: "x.jpg", contentType: "image/jpeg", bytes: payload)])
        let boundary = try #require(MultipartParser.boundary(fromContentType: type))
        let bytes = Array(body.readableBytesView)
        for size in [1, 7, 64, 4096, bytes.count] {
            var parser = try MultipartParser(boundary: boundary)
            var events: [MultipartParser.Event] = []
            var offset = 0
            while offset < bytes.count {
                let end = min(bytes.count, offset + size)
                events += try parser.feed(bytes[offset..<end])
                offset = end
            }
            try parser.finish()
            var parts: [String: [UInt8]] = [:]
            var current = ""
            for event in events {
                switch event {
                case .partStart(let headers): current = headers.name; parts[current] = []
                case .data(let data): parts[current]! += data
                case .partEnd: break
                }
            }
            #expect(parts["file"] == payload, "chunk size \(size)")
            #expect(parts["metadata"] == Array(#"{"album_id":"a"}"#.utf8))
        }
        // Random splits.
        for _ in 0..<50 {
            var parser = try MultipartParser(boundary: boundary)
            var collected: [UInt8] = []
            var offset = 0
            while offset < bytes.count {
                let end = min(bytes.count, offset + Int.random(in: 1...300))
                for case .data(let d) in try parser.feed(bytes[offset..<end]) { collected += d }
                offset = end
            }
            try parser.finish()
            #expect(collected.suffix(payload.count) == ArraySlice(payload))
        }
    }

    @Test func multipartRejectsMalformedBodies() throws {
        #expect(MultipartParser.boundary(fromContentType: "application/json") == nil)
        #expect(MultipartParser.boundary(fromContentType: "multipart/form-data") == nil)
        #expect(MultipartParser.boundary(fromContentType: "multipart/form-data; boundary=\"q r\"") == "q r")
        #expect(throws: MultipartParser.Failure.self) { try MultipartParser(boundary: String(repeating: "x", count: 71)) }
        var parser = try MultipartParser(boundary: "b")
        _ = try parser.feed(Array("--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc".utf8))
        #expect(throws: MultipartParser.Failure.self) { try parser.finish() }
        var noName = try MultipartParser(boundary: "b")
        #expect(throws: MultipartParser.Failure.self) {
            _ = try noName.feed(Array("--b\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--b--".utf8))
        }
    }

    @Test func sniffsImagesFromTheirBytes() {
        #expect(ImageSniffer.contentType(of: [0xFF, 0xD8, 0xFF, 0xE0]) == "image/jpeg")
        #expect(ImageSniffer.contentType(of: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) == "image/png")
        #expect(ImageSniffer.contentType(of: Array("RIFF\0\0\0\0WEBPVP8 ".utf8)) == "image/webp")
        #expect(ImageSniffer.contentType(of: [0, 0, 0, 0x18] + Array("ftypheic".utf8)) == "image/heic")
        #expect(ImageSniffer.contentType(of: [0, 0, 0, 0x18] + Array("ftypavif".utf8)) == "image/avif")
        #expect(ImageSniffer.contentType(of: [0, 0, 0, 0x18] + Array("ftypmp42".utf8)) == nil, "a video is not a photo")
        #expect(ImageSniffer.contentType(of: Array("GIF89a".utf8)) == "image/gif")
        #expect(ImageSniffer.contentType(of: [0x49, 0x49, 0x2A, 0x00]) == "image/tiff")
        #expect(ImageSniffer.contentType(of: Array("<svg xmlns=".utf8)) == nil)
        #expect(ImageSniffer.contentType(of: []) == nil)
    }

    @Test func rangesAndETags() {
        #expect(HTTPConditions.byteRange("bytes=0-9", size: 100) == .satisfiable(0...9))
        #expect(HTTPConditions.byteRange("bytes=90-", size: 100) == .satisfiable(90...99))
        #expect(HTTPConditions.byteRange("bytes=-5", size: 100) == .satisfiable(95...99))
        #expect(HTTPConditions.byteRange("bytes=-500", size: 100) == .satisfiable(0...99))
        #expect(HTTPConditions.byteRange("bytes=50-1000", size: 100) == .satisfiable(50...99))
        #expect(HTTPConditions.byteRange("bytes=100-", size: 100) == .unsatisfiable)
        #expect(HTTPConditions.byteRange("bytes=5-1", size: 100) == .ignored)
        #expect(HTTPConditions.byteRange("bytes=0-1,5-6", size: 100) == .ignored)
        #expect(HTTPConditions.byteRange("items=0-1", size: 100) == .ignored)
        #expect(HTTPConditions.matches(ifNoneMatch: "\"a\", W/\"b\"", etag: "\"b\""))
        #expect(HTTPConditions.matches(ifNoneMatch: "*", etag: "\"b\""))
        #expect(!HTTPConditions.matches(ifNoneMatch: "\"a\"", etag: "\"b\""))
    }
}
