import Foundation
import FramecastTesting
import Logging
@testable import AlbumService
@testable import MQTT
import NATS
import Postgres
import ServiceKit
import Testing
import Wire

/// The album service against a private nats-server (JetStream), a private mosquitto and a
/// fresh PostgreSQL database, called over NATS as the gateway calls it; frames are real MQTT
/// clients; storage and media are played by publishing their events into the EVENTS stream.
struct AlbumHarness {
    static let gateway = "http://gateway.test:8080"

    let backend: IsolatedBackend
    let broker: ServerProcess
    let runtime: ServiceRuntime
    let client: ServiceClient

    static func make() async throws -> AlbumHarness {
        let backend = try await IsolatedBackend.make()
        let runtime = ServiceRuntime(nats: backend.nats, jetStream: try backend.nats.jetStream(),
                                     postgres: backend.postgres, logger: quietLogger)
        try await EventStream.ensure(on: runtime.jetStream)
        let broker = try ServerProcess(.mosquitto)
        return AlbumHarness(backend: backend, broker: broker, runtime: runtime,
                            client: ServiceClient(service: "album", nats: backend.nats, timeout: .seconds(20)))
    }

    func makeService() throws -> AlbumService {
        var configuration = AlbumConfiguration(
            mqtt: MQTTConfiguration(host: broker.host, port: broker.port, clientID: "album-\(UUID().uuidString.prefix(8))",
                                    username: broker.mqttService.user, password: broker.mqttService.password,
                                    reconnectDelay: .milliseconds(100), reconnectDelayMax: .milliseconds(500)),
            publicGatewayURL: Self.gateway, frameMQTTHost: broker.host, frameMQTTPort: broker.port)
        configuration.retryInterval = .milliseconds(200)
        // An offline frame's retained sync catches up within half a second (10 s by default).
        configuration.syncRefreshInterval = .milliseconds(500)
        return try AlbumService(runtime: runtime, configuration: configuration, logger: quietLogger)
    }

    /// Runs a fresh album service while `body` runs, once it answers and its MQTT client is up.
    func running<T: Sendable>(_ service: AlbumService? = nil, waitForMQTT: Bool = true,
                              _ body: (AlbumService) async throws -> T) async throws -> T {
        let service = try service ?? makeService()
        let nats = backend.nats
        let publisher = service.publisher
        return try await withServices(try await service.services(), logger: quietLogger) {
            let up = try await eventually { (try? await nats.request("$SRV.PING.album", payload: [], timeout: .seconds(1))) != nil }
            let connected = try await eventually { !waitForMQTT || publisher.client.isConnected }
            guard up && connected else { throw NotReady() }
            return try await body(service)
        }
    }

    func close() async {
        broker.stop()
        await backend.close()
    }

    // MARK: Playing storage and media

    @discardableResult
    func upload(user: String, albumID: String? = nil, name: String = "IMG_0001.jpg", labels: [String] = ["leaf", "autumn"],
                takenAt: Int64? = 1_600_000_000_000) async throws -> String {
        let fileID = UUID().uuidString.lowercased()
        try await publish(uploadEvent(user: user, fileID: fileID, albumID: albumID, name: name, labels: labels, takenAt: takenAt))
        return fileID
    }

    /// Storage's `file.uploaded.with_ai` for a new file `fileID` (not published).
    func uploadEvent(user: String, fileID: String, albumID: String? = nil, name: String = "IMG_0001.jpg",
                     labels: [String] = ["leaf", "autumn"], takenAt: Int64? = 1_600_000_000_000) -> FileUploadedWithAI {
        var metadata: [String: String] = [:]
        if let albumID { metadata["album_id"] = albumID }
        let file = FileRecord(fileID: fileID, userID: user, blobKey: String(repeating: "a", count: 64), sha256: String(repeating: "a", count: 64),
                              size: 1234, fileName: name, contentType: "image/jpeg", declaredContentType: "image/jpeg",
                              metadata: metadata, analysis: PhotoAnalysis(format: "jpeg", width: 2560, height: 1600, orientation: 1, takenAt: takenAt),
                              aiMetadata: AIMetadata(labels: labels, analyser: "test"), createdAt: 1, storagePath: "")
        return FileUploadedWithAI(eventID: UUID().uuidString.lowercased(), occurredAt: 1, userID: user, file: file)
    }

    func cacheReady(_ fileID: String, eventID: String = UUID().uuidString.lowercased(), versions: [PhotoVersion] = []) async throws {
        try await publish(MediaCacheReady(eventID: eventID, occurredAt: 2, fileID: fileID, versions: versions))
    }

    /// What media renders for a photo: thumbnail, hd, the original and a `frame:` version per
    /// screen (JPEG), each with its own random blob key.
    static func versions(_ fileID: String, screens: [(Int32, Int32)]) -> [PhotoVersion] {
        func version(_ size: String, _ width: Int32, _ height: Int32, format: String = "jpeg") -> PhotoVersion {
            let key = (UUID().uuidString + UUID().uuidString).replacingOccurrences(of: "-", with: "").lowercased()
            return PhotoVersion(fileID: fileID, size: size, width: width, height: height, format: format,
                                contentType: "image/\(format)", blobKey: key, byteSize: 1000, sha256: key, createdAt: 1)
        }
        return [version("thumbnail", 300, 188), version("hd", 1728, 1080), version("original", 2560, 1600, format: "png")]
            + screens.map { version("frame:\($0.0)x\($0.1)", $0.0, $0.1) }
    }

    func publish<E: WireEvent>(_ event: E) async throws {
        _ = try await runtime.jetStream.publish(E.subject, payload: event.wireBytes(), messageID: event.eventID)
    }

    /// Whether the album consumer has committed the event with this id.
    func processed(_ eventID: String) async throws -> Bool {
        try await !runtime.postgres.query("SELECT 1 FROM album.processed_events WHERE event_id = $1", [.text(eventID)]).isEmpty
    }

    // MARK: Calls

    func createAlbum(_ user: String, _ name: String = "Family") async throws -> Album {
        try await client.call(AlbumAPI.createAlbum, CreateAlbumRequest(userID: user, name: name)).album!
    }

    func registerFrame(_ user: String, name: String = "Kitchen") async throws -> RegisterFrameReply {
        try await client.call(AlbumAPI.registerFrame, RegisterFrameRequest(userID: user, name: name, width: 1280, height: 800))
    }

    func photos(_ user: String, _ album: String) async throws -> [AlbumPhoto] {
        try await client.call(AlbumAPI.listAlbumPhotos, ListAlbumPhotosRequest(userID: user, albumID: album)).photos
    }

    /// The status of a call that is expected to fail.
    func status<Req, Res>(_ method: WireMethod<Req, Res>, _ request: Req) async throws -> WireStatus {
        let reply = try await backend.nats.request(method.subject, payload: request.wireBytes(), timeout: .seconds(20))
        return try Reply(wireBytes: reply.payload).status
    }

    // MARK: Frames over MQTT

    func frameClient(_ frameID: String, will: Bool = false) throws -> MQTTClient {
        var configuration = MQTTConfiguration(host: broker.host, port: broker.port, clientID: "frame-\(frameID.prefix(8))-\(UUID().uuidString.prefix(6))",
                                              username: broker.mqttTester.user, password: broker.mqttTester.password, keepAlive: .seconds(5), reconnectDelay: .seconds(30), reconnectDelayMax: .seconds(30))
        if will {
            configuration.will = MQTTWill(topic: FrameTopics.status(frame: frameID),
                                          payload: FrameTopics.encode(FrameStatusMessage(status: "offline")), qos: .atLeastOnce, retain: true)
        }
        return try MQTTClient(configuration: configuration, logger: quietLogger)
    }

    /// Subscribes `client` to `filters` and collects messages until `done` holds (or times out),
    /// while `action` runs after the subscription is in place.
    func collect(_ client: MQTTClient, _ filters: [String], timeout: Duration = .seconds(20),
                 after action: () async throws -> Void = {},
                 until done: @escaping @Sendable ([MQTTMessage]) -> Bool) async throws -> [MQTTMessage] {
        try await client.withMessages { messages in
            _ = try await client.subscribe(filters.map { ($0, .exactlyOnce) })
            try await action()
            return try await withThrowingTaskGroup(of: [MQTTMessage].self) { group in
                group.addTask {
                    var seen: [MQTTMessage] = []
                    for await message in messages {
                        seen.append(message)
                        if done(seen) { break }
                    }
                    return seen
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return []
                }
                let first = try await group.next()!
                group.cancelAll()
                return first
            }
        }
    }

    /// A barrier: publishes a marker on `topic` and waits for it, so everything the broker
    /// delivered on `client`'s subscriptions before it has been seen. Returns those messages.
    func drain(_ client: MQTTClient, _ filters: [String], marker topic: String,
               after action: () async throws -> Void = {}) async throws -> [MQTTMessage] {
        let token = UUID().uuidString
        let seen = try await collect(client, filters + [topic], after: {
            try await action()
            try await client.publish(topic, payload: Array(token.utf8), qos: .atLeastOnce)
        }, until: { $0.contains { $0.topic == topic && $0.payload == Array(token.utf8) } })
        #expect(seen.contains { $0.topic == topic }, "the marker came back")
        return seen.filter { $0.topic != topic }
    }
}

struct NotReady: Error {}

extension MQTTMessage {
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try FrameTopics.decode(type, from: payload) }
}

/// Every album test runs one at a time: each starts its own nats-server, mosquitto and
/// service with their threads, and the package's other tests (thread-count checks among them)
/// run in parallel on a 2-core machine.
@Suite(.serialized) struct AlbumServiceSuite {}
