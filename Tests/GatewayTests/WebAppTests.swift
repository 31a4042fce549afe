import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
@testable import Gateway

/// The family web app's files (Sources/Gateway/Web) as the gateway serves them. What the app
/// does in a browser is scripts/browser-test's job.
@Suite struct WebAppTests {
    /// The repository, found from this file's path.
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let folder = root.appendingPathComponent("Sources/Gateway/Web")

    @Test func everyFileOfTheFolderIsEmbeddedListedAndDocumented() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.folder.path).filter { !$0.hasPrefix(".") }
        #expect(Set(names) == Set(WebApp.files.keys),
                "Sources/Gateway/Web and WebApp.files differ: \(Set(names).symmetricDifference(WebApp.files.keys).sorted())")
        let package = try String(contentsOf: Self.root.appendingPathComponent("Package.swift"), encoding: .utf8)
        for name in names {
            #expect(package.contains(".embedInCode(\"Web/\(name)\")"), "Package.swift does not embed Web/\(name)")
            #expect(OpenAPI.document.contains(name), "openapi.yaml's /app/{file} does not name \(name)")
            let bytes = try [UInt8](Data(contentsOf: Self.folder.appendingPathComponent(name)))
            #expect(WebApp.files[name]?.body == ByteBuffer(bytes: bytes), "the embedded \(name) is not the file's bytes (rebuild)")
        }
        #expect(WebApp.files[WebApp.page] != nil)
    }

    @Test func servesThePageAndItsFilesWithETagsAndRevalidation() async throws {
        let h = try await GatewayHarness.make()
        try await h.run(storage: false) { client in
            let page = try await client.execute(uri: "/", method: .get)
            #expect(page.status == .ok)
            #expect(page.headers[.contentType] == "text/html; charset=utf-8")
            #expect(page.headers[.cacheControl] == "no-cache")
            #expect(page.headers[.contentSecurityPolicy] == WebApp.contentSecurityPolicy)
            #expect(page.bytes == WebApp.files[WebApp.page].map { Array($0.body.readableBytesView) })
            let etag = try #require(page.headers[.eTag])
            let unchanged = try await client.execute(uri: "/", method: .get, headers: [.ifNoneMatch: etag])
            #expect(unchanged.status == .notModified)
            #expect(unchanged.headers[.eTag] == etag)
            #expect(unchanged.body.readableBytes == 0)
            #expect(try await client.execute(uri: "/", method: .get, headers: [.ifNoneMatch: "\"other\""]).status == .ok)

            for (name, type) in [("app.js", "text/javascript; charset=utf-8"), ("styles.css", "text/css; charset=utf-8"),
                                 ("manifest.webmanifest", "application/manifest+json"), ("icon192.png", "image/png"),
                                 ("icon.svg", "image/svg+xml"), ("index.html", "text/html; charset=utf-8")] {
                let response = try await client.execute(uri: "/app/\(name)", method: .get)
                #expect(response.status == .ok, "\(name)")
                #expect(response.headers[.contentType] == type, "\(name)")
                #expect(response.headers[.eTag] == WebApp.files[name]?.etag, "\(name)")
                #expect(response.headers[.cacheControl] == "no-cache", "\(name)")
            }
            for missing in ["/app/nothing.js", "/app/Package.swift", "/app/..%2FGateway.swift"] {
                let response = try await client.execute(uri: missing, method: .get)
                #expect(response.status == .notFound, "\(missing)")
                #expect(response.errorCode == "not_found", "\(missing)")
            }
        }
        await h.close()
    }

    @Test func servesTheBrowserFrameWithAPolicyNamingTheBrokersWebSocketOrigin() async throws {
        let h = try await GatewayHarness.make { $0.frameWebSocketURL = "ws://127.0.0.1:9001/mqtt" }
        let policy = WebApp.frameContentSecurityPolicy(webSocketURL: "ws://127.0.0.1:9001/mqtt")
        #expect(policy.contains(" ws://127.0.0.1:9001;"))
        try await h.run(storage: false) { client in
            let page = try await client.execute(uri: "/frame", method: .get)
            #expect(page.status == .ok)
            #expect(page.headers[.contentType] == "text/html; charset=utf-8")
            #expect(page.headers[.cacheControl] == "no-cache")
            #expect(page.headers[.contentSecurityPolicy] == policy)
            #expect(page.bytes == WebApp.files[WebApp.framePage].map { Array($0.body.readableBytesView) })
            #expect(String(decoding: page.bytes, as: UTF8.self).contains("id=\"pairing-code\""))
            let etag = try #require(page.headers[.eTag])
            #expect(try await client.execute(uri: "/frame", method: .get, headers: [.ifNoneMatch: etag]).status == .notModified)

            let worker = try await client.execute(uri: "/frame-sw.js", method: .get)
            #expect(worker.status == .ok)
            #expect(worker.headers[.contentType] == "text/javascript; charset=utf-8")
            #expect(worker.headers[.contentSecurityPolicy] == policy, "a worker runs under its own script's policy")
            for name in ["frame.js", "frame-mqtt.js", "frame-core.js", "frame-store.js", "frame.css"] {
                let file = try await client.execute(uri: "/app/\(name)", method: .get)
                #expect(file.status == .ok, "\(name)")
                #expect(file.headers[.contentSecurityPolicy] == policy, "\(name)")
            }
            let manifest = try await client.execute(uri: "/app/frame.webmanifest", method: .get)
            #expect(manifest.headers[.contentType] == "application/manifest+json")
            #expect(try await client.execute(uri: "/app/app.js", method: .get).headers[.contentSecurityPolicy] == WebApp.contentSecurityPolicy)
        }
        await h.close()
    }
}
