import AlbumService
import Foundation
@testable import FrameAgent
import FramecastTesting
import Gateway
import Imaging
import Logging
import MediaService
import MQTT
import NATS
import Postgres
import Prometheus
import ServiceKit
import ServiceLifecycle
import StorageService
import Testing
import Wire
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif

/// The whole system for one test: a private nats-server (JetStream) and mosquitto, a fresh
/// PostgreSQL database, a blob folder, and the gateway on a free port. Each service runs
/// in-process or as a `framecast` child process (for the tests that SIGKILL one).
final class System: Sendable {
    enum Role: String, Sendable, CaseIterable { case gateway, storage, album, media }

    let backend: IsolatedBackend
    let broker: ServerProcess
    let runtime: ServiceRuntime
    let blobRoot: URL
    let scratch: URL
    let port: Int
    /// The capability URL keys of the gateway and the album service, in-process or child processes.
    let capabilityKeys: CapabilityKeyFile
    var baseURL: String { "http://127.0.0.1:\(port)" }

    private init(backend: IsolatedBackend, broker: ServerProcess, runtime: ServiceRuntime, blobRoot: URL, scratch: URL, port: Int,
                 capabilityKeys: CapabilityKeyFile) {
        self.backend = backend
        self.broker = broker
        self.runtime = runtime
        self.blobRoot = blobRoot
        self.scratch = scratch
        self.port = port
        self.capabilityKeys = capabilityKeys
    }

    static func make() async throws -> System {
        let backend = try await IsolatedBackend.make()
        let runtime = ServiceRuntime(nats: backend.nats, jetStream: try backend.nats.jetStream(), postgres: backend.postgres, logger: quietLogger)
        try await EventStream.ensure(on: runtime.jetStream)
        let broker = try ServerProcess(.mosquitto)
        let scratch = try TestServers.scratchDirectory("e2e")
        let blobRoot = scratch.appendingPathComponent("blobs")
        try FileManager.default.createDirectory(at: blobRoot, withIntermediateDirectories: true)
        return System(backend: backend, broker: broker, runtime: runtime, blobRoot: blobRoot, scratch: scratch, port: try freeTCPPort(),
                      capabilityKeys: try CapabilityKeyFile.make())
    }

    func close() async {
        broker.stop()
        await backend.close()
    }

    // MARK: Services

    func services(_ roles: [Role]) async throws -> [any Service] {
        var services: [any Service] = []
        for role in roles {
            switch role {
            case .storage:
                services += try await StorageService(runtime: runtime, configuration: StorageConfiguration(blobRoot: blobRoot.path),
                                                     imaging: serviceImaging).services()
            case .album:
                var configuration = AlbumConfiguration(
                    mqtt: MQTTConfiguration(host: broker.host, port: broker.port, clientID: "album-\(UUID().uuidString.prefix(8))",
                                            username: broker.mqttService.user, password: broker.mqttService.password,
                                            reconnectDelay: .milliseconds(100), reconnectDelayMax: .milliseconds(500)),
                    publicGatewayURL: baseURL, frameMQTTHost: broker.host, frameMQTTPort: broker.port)
                configuration.retryInterval = .milliseconds(200)
                configuration.capabilityKeys = capabilityKeys.keys
                services += try await AlbumService(runtime: runtime, configuration: configuration, logger: quietLogger).services()
            case .media:
                services += try await MediaService(runtime: runtime, configuration: MediaConfiguration(
                    blobRoot: blobRoot.path, publicGatewayURL: baseURL), imaging: serviceImaging).services()
            case .gateway:
                var configuration = GatewayConfiguration(blobRoot: blobRoot.path)
                configuration.host = "127.0.0.1"
                configuration.port = port
                configuration.publicURL = baseURL
                configuration.serviceTimeout = .seconds(10)
                configuration.capabilityKeys = capabilityKeys.keys
                let gateway = try Gateway(configuration: configuration, runtime: runtime, registry: PrometheusCollectorRegistry(),
                                          passwordStrength: .minimumForTests)
                try await gateway.migrate()
                services.append(gateway.application())
            }
        }
        return services
    }

    /// Runs `roles` in-process while `body` runs, once each answers.
    func running<T: Sendable>(_ roles: [Role], _ body: () async throws -> T) async throws -> T {
        try await withServices(try await services(roles), logger: quietLogger) {
            try await waitUntilUp(roles)
            return try await body()
        }
    }

    func waitUntilUp(_ roles: [Role], timeout: Duration = .seconds(60)) async throws {
        for role in roles {
            let up: Bool
            if role == .gateway {
                up = try await eventually(timeout: timeout) { (try? await HTTP.request("GET", "\(baseURL)/healthz"))?.status == 200 }
            } else {
                let nats = backend.nats
                up = try await eventually(timeout: timeout) {
                    (try? await nats.request("$SRV.PING.\(role.rawValue)", payload: [], timeout: .seconds(1))) != nil
                }
            }
            guard up else { throw Failure("the \(role.rawValue) service did not come up") }
        }
    }

    /// A `framecast <role>` child process on this system's servers.
    func child(_ role: Role) throws -> ChildProcess {
        try ChildProcess(arguments: [role.rawValue], environment: [
            "FRAMECAST_NATS_URL": backend.server.url, "FRAMECAST_POSTGRES": backend.connInfo,
            "FRAMECAST_MQTT_HOST": broker.host, "FRAMECAST_MQTT_PORT": "\(broker.port)",
            "FRAMECAST_MQTT_USER": broker.mqttService.user, "FRAMECAST_MQTT_PASSWORD": broker.mqttService.password,
            "FRAMECAST_PUBLIC_URL": baseURL, "FRAMECAST_BLOB_DIR": blobRoot.path, "FRAMECAST_LOG_LEVEL": "warning",
            "FRAMECAST_IMAGING_THREADS": "1", "FRAMECAST_CAPABILITY_KEYS": capabilityKeys.path,
        ], log: scratch.appendingPathComponent("\(role.rawValue)-\(UUID().uuidString.prefix(6)).log"))
    }

    // MARK: A user, an album, frames

    struct Account: Sendable {
        let userID: String
        let token: String
    }

    func signUp() async throws -> Account {
        let email = "\(UUID().uuidString.prefix(8).lowercased())@example.com"
        let (status, body) = try await HTTP.json("POST", "\(baseURL)/api/v1/auth/signup",
                                                 body: ["email": email, "password": "correct horse battery", "name": "Grandma"])
        guard status == 201, let user = body["user_id"] as? String, let token = body["token"] as? String else {
            throw Failure("sign-up answered \(status): \(body)")
        }
        return Account(userID: user, token: token)
    }

    func createAlbum(_ account: Account) async throws -> String {
        let (status, body) = try await HTTP.json("POST", "\(baseURL)/api/v1/albums", token: account.token, body: ["name": "Family"])
        guard status == 201, let id = body["album_id"] as? String else { throw Failure("create album answered \(status): \(body)") }
        return id
    }

    /// Registers a frame and makes it show `albums`; returns the registration answer's bytes
    /// (what a user saves as the agent's configuration file) and the frame id.
    func registerFrame(_ account: Account, width: Int, height: Int, albums: [String]) async throws -> (id: String, registration: [UInt8]) {
        let (status, data) = try await HTTP.request("POST", "\(baseURL)/api/v1/frames", token: account.token,
                                                   json: ["name": "Frame \(width)x\(height)", "width": width, "height": height])
        let body = (try? JSONSerialization.jsonObject(with: Data(data))) as? [String: Any] ?? [:]
        guard status == 201, let id = body["frame_id"] as? String else { throw Failure("register frame answered \(status): \(body)") }
        let (put, answer) = try await HTTP.json("PUT", "\(baseURL)/api/v1/frames/\(id)/albums", token: account.token, body: ["album_ids": albums])
        guard put == 200 else { throw Failure("PUT frame albums answered \(put): \(answer)") }
        return (id, data)
    }

    /// Uploads a photo into `album`; returns the file id.
    func upload(_ account: Account, _ bytes: [UInt8], album: String, name: String = "photo.jpg") async throws -> String {
        let (status, data) = try await HTTP.upload("\(baseURL)/api/v1/storage/photos/upload", token: account.token, file: bytes,
                                                   name: name, metadata: "{\"album_id\": \"\(album)\"}")
        let body = (try? JSONSerialization.jsonObject(with: Data(data))) as? [String: Any] ?? [:]
        guard status == 201, let id = body["file_id"] as? String else { throw Failure("upload answered \(status): \(body)") }
        return id
    }

    // MARK: Frame agents

    /// A frame agent configured from the registration answer (as a user would), with a
    /// `png:` display and short timers.
    func agent(registration: [UInt8], name: String = "frame", cacheBytes: Int64? = nil) throws -> (FrameAgent, URL) {
        let folder = scratch.appendingPathComponent("agent-\(name)")
        let png = folder.appendingPathComponent("screen.png")
        var settings = [
            "FRAMECAST_GATEWAY_URL": baseURL, "FRAMECAST_FRAME_DISPLAY": "png:\(png.path)",
            "FRAMECAST_FRAME_CACHE_DIR": folder.appendingPathComponent("cache").path, "FRAMECAST_FRAME_HEARTBEAT_SECONDS": "1",
        ]
        if let cacheBytes { settings["FRAMECAST_FRAME_CACHE_BYTES"] = "\(cacheBytes)" }
        var configuration = try FrameAgentConfiguration.load(file: registration, settings: settings)
        configuration.retryDelay = .milliseconds(100)
        configuration.retryDelayMax = .seconds(1)
        configuration.keepAlive = .seconds(5)
        configuration.defaultInterval = .seconds(3600)
        return (try FrameAgent(configuration: configuration, logger: agentLogger, imaging: serviceImaging), png)
    }

    // MARK: Looking at the results

    func albumPhotoRows(album: String, file: String) async throws -> Int {
        try await runtime.postgres.query(
            "SELECT count(*)::bigint AS n FROM album.album_photos WHERE album_id = $1::uuid AND file_id = $2::uuid",
            [.text(album), .text(file)]).first!.decode("n", as: Int64.self).asInt
    }

    func lastDisplayed(frame: String, album: String) async throws -> String? {
        try await runtime.postgres.query(
            "SELECT last_displayed_file_id FROM album.album_sync_status WHERE frame_id = $1::uuid AND album_id = $2::uuid",
            [.text(frame), .text(album)]).first?.decode("last_displayed_file_id", as: String.self)
    }

    /// (size, rows) of the file's versions in the media schema.
    func versionRows(file: String) async throws -> [String: Int] {
        var result: [String: Int] = [:]
        for row in try await runtime.postgres.query(
            "SELECT size, count(*)::bigint AS n FROM media.photo_versions WHERE file_id = $1 GROUP BY size", [.text(file)]) {
            result[try row.decode("size", as: String.self)] = try row.decode("n", as: Int64.self).asInt
        }
        return result
    }
}

extension Int64 { var asInt: Int { Int(self) } }

struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// libvips for the in-process services, the agents and the pixel comparisons.
let serviceImaging = Imaging(threads: 2, logger: quietLogger)

/// The agents log at warning and above (set FRAMECAST_TEST_AGENT_LOG=debug to see more).
let agentLogger: Logger = {
    var logger = Logger(label: "frame-agent")
    logger.logLevel = ProcessInfo.processInfo.environment["FRAMECAST_TEST_AGENT_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
    return logger
}()

// MARK: Child processes

/// The built `framecast` executable run as a child process, stopped (SIGKILL or SIGTERM) by
/// its PID. Its output goes to a log file in the test's folder.
final class ChildProcess: @unchecked Sendable {
    // @unchecked Sendable: `process` is created in init and only read afterwards; Process
    // itself is thread-safe for terminate/isRunning/waitUntilExit.
    let process = Process()
    let log: URL

    /// The folder holding `framecast`: FRAMECAST_TEST_BIN_DIR (scripts/test sets it from
    /// `swift build --show-bin-path`), else the folder of the running test bundle.
    static func binary() throws -> URL {
        var candidates: [URL] = []
        if let dir = ProcessInfo.processInfo.environment["FRAMECAST_TEST_BIN_DIR"] { candidates.append(URL(fileURLWithPath: dir)) }
        candidates.append(URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent())
        candidates.append(Bundle.main.bundleURL.deletingLastPathComponent())
        for dir in candidates {
            let url = dir.appendingPathComponent("framecast")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        throw Failure("the framecast executable was not found (build it with `swift build --build-tests`; scripts/test sets FRAMECAST_TEST_BIN_DIR)")
    }

    init(arguments: [String], environment: [String: String], log: URL) throws {
        self.log = log
        process.executableURL = try Self.binary()
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }

    /// SIGKILL: no graceful shutdown, nothing flushed.
    func kill() {
        if process.isRunning { Glibc.kill(pid, SIGKILL) }
        process.waitUntilExit()
    }

    /// SIGTERM and wait (graceful shutdown).
    func stop() {
        if process.isRunning { Glibc.kill(pid, SIGTERM) }
        process.waitUntilExit()
    }

    var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    deinit { if process.isRunning { Glibc.kill(pid, SIGKILL) } }
}

// MARK: MQTT observer

/// An MQTT client that records every message on `filters` with its arrival time, while `body` runs.
final class Observer: Sendable {
    struct Seen: Sendable {
        let message: MQTTMessage
        let at: ContinuousClock.Instant
    }
    private let seen = LockedBox<[Seen]>([])
    var messages: [Seen] { seen.value }

    func record(_ message: MQTTMessage) { seen.mutate { $0.append(Seen(message: message, at: .now)) } }

    /// Status reports of `status` for `file` from frame `frame`.
    func reports(_ status: String, file: String? = nil, frame: String) -> [Seen] {
        messages.filter {
            guard $0.message.topic == FrameTopics.status(frame: frame),
                  let s = try? FrameTopics.decode(FrameStatusMessage.self, from: $0.message.payload) else { return false }
            return s.status == status && (file == nil || s.fileID == file || (s.fileIDs ?? []).contains(file!))
        }
    }

    func on(_ topic: String) -> [Seen] { messages.filter { $0.message.topic == topic } }

    static func watching<T: Sendable>(_ system: System, _ filters: [String], _ body: (Observer) async throws -> T) async throws -> T {
        let client = try MQTTClient(configuration: MQTTConfiguration(host: system.broker.host, port: system.broker.port,
                                                                     clientID: "observer-\(UUID().uuidString.prefix(8))",
                                                                     username: system.broker.mqttTester.user, password: system.broker.mqttTester.password),
                                    logger: quietLogger)
        try await client.connect()
        let observer = Observer()
        do {
            let result = try await client.withMessages { messages in
                _ = try await client.subscribe(filters.map { ($0, .atLeastOnce) })
                return try await withThrowingTaskGroup(of: T?.self) { group in
                    group.addTask {
                        for await message in messages { observer.record(message) }
                        return nil
                    }
                    let result = try await body(observer)
                    group.cancelAll()
                    return result
                }
            }
            await client.disconnect()
            return result
        } catch {
            await client.disconnect()
            throw error
        }
    }
}

/// A value behind a lock (tests only).
final class LockedBox<Value: Sendable>: @unchecked Sendable {
    // @unchecked Sendable: `stored` is only touched under `lock`.
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { stored = value }
    var value: Value { lock.withLock { stored } }
    func mutate(_ body: (inout Value) -> Void) { lock.withLock { body(&stored) } }
}

// MARK: HTTP (URLSession, as a phone would)

enum HTTP {
    static func request(_ method: String, _ url: String, token: String? = nil, json: Any? = nil,
                        headers: [String: String] = [:], body: Data? = nil) async throws -> (status: Int, body: [UInt8]) {
        var request = URLRequest(url: URL(string: url)!, timeoutInterval: 60)
        request.httpMethod = method
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
        if let json {
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.httpBody = try JSONSerialization.data(withJSONObject: json)
        } else if let body {
            request.httpBody = body
        }
        return try await withCheckedThrowingContinuation { continuation in
            URLSession.shared.dataTask(with: request) { data, response, error in
                if let error { continuation.resume(throwing: error); return }
                let status = (response as? HTTPURLResponse)?.statusCode ?? 0
                continuation.resume(returning: (status, [UInt8](data ?? Data())))
            }.resume()
        }
    }

    static func json(_ method: String, _ url: String, token: String? = nil, body: Any? = nil) async throws -> (Int, [String: Any]) {
        let (status, data) = try await request(method, url, token: token, json: body)
        return (status, (try? JSONSerialization.jsonObject(with: Data(data))) as? [String: Any] ?? [:])
    }

    static func upload(_ url: String, token: String, file: [UInt8], name: String, metadata: String) async throws -> (Int, [UInt8]) {
        let boundary = "e2e-\(UUID().uuidString)"
        var body = Data()
        body.append(Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\(name)\"\r\nContent-Type: image/jpeg\r\n\r\n".utf8))
        body.append(Data(file))
        body.append(Data("\r\n--\(boundary)\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n\(metadata)\r\n--\(boundary)--\r\n".utf8))
        return try await request("POST", url, token: token, headers: ["Content-Type": "multipart/form-data; boundary=\(boundary)"], body: body)
    }
}
