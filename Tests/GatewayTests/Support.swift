import BlobStore
import Foundation
import FramecastTesting
import Gateway
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Imaging
import AlbumService
import MediaService
import MQTT
import NATS
import Prometheus
import ServiceKit
import StorageService
import Wire

/// The real gateway and storage service on a private nats-server, a fresh database and a
/// blob directory; requests go over HTTP to the live server.
struct GatewayHarness {
    let backend: IsolatedBackend
    let runtime: ServiceRuntime
    let gateway: Gateway
    /// The gateway's configuration: its capability keys are the album service's too.
    let configuration: GatewayConfiguration
    let storage: StorageService
    let blobRoot: URL

    /// `configure` adjusts the gateway's configuration (short timeouts, small throttles).
    static func make(maxUploadBytes: Int = 50 * 1024 * 1024,
                     configure: (inout GatewayConfiguration) -> Void = { _ in }) async throws -> GatewayHarness {
        let backend = try await IsolatedBackend.make()
        let runtime = ServiceRuntime(nats: backend.nats, jetStream: try backend.nats.jetStream(),
                                     postgres: backend.postgres, logger: quietLogger)
        try await EventStream.ensure(on: runtime.jetStream)
        let blobRoot = try TestServers.scratchDirectory("blobs")
        var configuration = GatewayConfiguration(blobRoot: blobRoot.path)
        configuration.maxUploadBytes = maxUploadBytes
        configuration.serviceTimeout = .seconds(20)
        // The live test client keeps one connection: a test pausing between requests longer
        // than the idle timeout would lose it.
        configuration.readTimeout = .seconds(60)
        configure(&configuration)
        let gateway = try Gateway(configuration: configuration, runtime: runtime, registry: testRegistry,
                                  passwordStrength: .minimumForTests)
        try await gateway.migrate()
        let storage = StorageService(runtime: runtime, configuration: StorageConfiguration(blobRoot: blobRoot.path),
                                     imaging: testImaging)
        return GatewayHarness(backend: backend, runtime: runtime, gateway: gateway, configuration: configuration, storage: storage,
                              blobRoot: blobRoot)
    }

    /// Runs the storage service (and with `album`, the album and media services, album's MQTT on
    /// `broker`) and the live
    /// HTTP server while `body` runs.
    func run(storage running: Bool = true, album broker: ServerProcess? = nil,
             _ body: @escaping @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        var services = running ? try await storage.services() : []
        if let broker {
            var configuration = AlbumConfiguration(
                mqtt: MQTTConfiguration(host: broker.host, port: broker.port, clientID: "album-\(UUID().uuidString.prefix(8))",
                                        username: broker.mqttService.user, password: broker.mqttService.password),
                publicGatewayURL: "http://127.0.0.1:8080", frameMQTTHost: broker.host, frameMQTTPort: broker.port)
            // The URLs album pushes are the gateway's to verify.
            configuration.capabilityKeys = self.configuration.capabilityKeys
            configuration.capabilityLifetime = self.configuration.capabilityLifetime
            services += try await AlbumService(runtime: runtime, configuration: configuration, logger: quietLogger).services()
            services += try await MediaService(runtime: runtime, configuration: MediaConfiguration(
                blobRoot: blobRoot.path, publicGatewayURL: "http://127.0.0.1:8080"), imaging: testImaging).services()
        }
        try await withServices(services, logger: quietLogger) {
            if running {
                _ = try await eventually { (try? await backend.nats.request("$SRV.PING.storage", payload: [], timeout: .seconds(1))) != nil }
            }
            if broker != nil {
                for service in ["album", "media"] {
                    _ = try await eventually { (try? await backend.nats.request("$SRV.PING.\(service)", payload: [], timeout: .seconds(1))) != nil }
                }
            }
            try await gateway.application().test(.live) { client in try await body(client) }
        }
    }

    /// Every blob file in the store (temp files included).
    func blobFiles() -> [String] {
        let enumerator = FileManager.default.enumerator(atPath: blobRoot.path)
        var files: [String] = []
        while let path = enumerator?.nextObject() as? String {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: blobRoot.appendingPathComponent(path).path, isDirectory: &isDirectory),
               !isDirectory.boolValue { files.append(path) }
        }
        return files
    }

    func close() async { await backend.close() }
}

let testImaging = Imaging(threads: 2, logger: quietLogger)
let testRegistry: PrometheusCollectorRegistry = {
    let registry = PrometheusCollectorRegistry()
    MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    return registry
}()

import Metrics

struct Part {
    var name: String
    var fileName: String?
    var contentType: String?
    var bytes: [UInt8]
}

/// A multipart/form-data body and its Content-Type.
func multipart(_ parts: [Part], boundary: String = "framecast-\(UUID().uuidString)", close: Bool = true) -> (String, ByteBuffer) {
    var body: [UInt8] = []
    for part in parts {
        var head = "--\(boundary)\r\nContent-Disposition: form-data; name=\"\(part.name)\""
        if let fileName = part.fileName { head += "; filename=\"\(fileName)\"" }
        head += "\r\n"
        if let type = part.contentType { head += "Content-Type: \(type)\r\n" }
        head += "\r\n"
        body += Array(head.utf8) + part.bytes + Array("\r\n".utf8)
    }
    if close { body += Array("--\(boundary)--\r\n".utf8) }
    return ("multipart/form-data; boundary=\(boundary)", ByteBuffer(bytes: body))
}

extension TestClientProtocol {
    func json(_ uri: String, _ method: HTTPRequest.Method = .get, token: String? = nil, body: [String: Any]? = nil,
              headers extra: HTTPFields = [:]) async throws -> (TestResponse, [String: Any]) {
        var headers = extra
        if let token { headers[.authorization] = "Bearer \(token)" }
        var buffer: ByteBuffer?
        if let body {
            headers[.contentType] = "application/json"
            buffer = ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body))
        }
        let response = try await execute(uri: uri, method: method, headers: headers, body: buffer)
        return (response, response.jsonObject)
    }

    /// Signs up a fresh user; returns (user id, token).
    func signUp(_ email: String = "\(UUID().uuidString.prefix(8).lowercased())@example.com") async throws -> (String, String) {
        let (response, object) = try await json("/api/v1/auth/signup", .post,
                                                body: ["email": email, "password": "correct horse battery", "name": "Test"])
        guard response.status == .created, let user = object["user_id"] as? String, let token = object["token"] as? String else {
            throw SignUpFailed(status: response.status.code, body: "\(object)")
        }
        return (user, token)
    }

    func upload(_ bytes: [UInt8], token: String?, name: String = "photo.jpg", metadata: String? = nil) async throws -> (TestResponse, [String: Any]) {
        var parts = [Part(name: "file", fileName: name, contentType: "image/jpeg", bytes: bytes)]
        if let metadata { parts.append(Part(name: "metadata", bytes: Array(metadata.utf8))) }
        let (type, body) = multipart(parts)
        var headers: HTTPFields = [.contentType: type]
        if let token { headers[.authorization] = "Bearer \(token)" }
        let response = try await execute(uri: "/api/v1/storage/photos/upload", method: .post, headers: headers, body: body)
        return (response, response.jsonObject)
    }
}

extension TestResponse {
    var bytes: [UInt8] { Array(body.readableBytesView) }
    var jsonObject: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] ?? [:]
    }
    var errorCode: String? { (jsonObject["error"] as? [String: Any])?["code"] as? String }
}

struct SignUpFailed: Error {
    let status: Int
    let body: String
}
