import ArgumentParser
import Foundation
import Logging
import MQTT
import NIOCore
import NIOHTTP1
import NIOPosix
import Threads

#if canImport(Glibc)
import Glibc
#endif

// How the fan-out benchmark is put together
//
// * The parent (`fanout`) signs up a user, makes an album, registers N frames and subscribes
//   them to the album through the gateway's REST API, exactly as an app would.
// * The frames are MQTT connections with their own client id (the frame id) and a persistent
//   session, driven by MQTTClientSwarm (one thread, poll(2)). libmosquitto 2.0.11 costs three
//   file descriptors per client and this sandbox caps a process at 20,000 (hard limit), so the
//   frames live in child processes (`fanout-shard`) of at most 5,000 frames each; timestamps
//   are CLOCK_MONOTONIC nanoseconds, comparable across processes on one machine.
// * A probe client (subscribed to the album's topics before any frame) and a publisher live in
//   the parent. The real path's publish instant is not visible from outside the album service,
//   so it is estimated as the probe's receipt minus the probe's median offset measured in the
//   floor rounds (where the publish instant is known); the report prints that offset.
// * Rounds alternate: one photo uploaded through the gateway (multipart, metadata album_id),
//   then the raw broker floor: the very payload the frames got, published by the publisher
//   with QoS 1 straight to the same topic and the same N subscribers.
// * With --fetch, each frame, on its notification, waits a random 0…jitter ms and fetches its
//   own `frame:{W}x{H}` version: straight from the notification's capability URL (`versions`,
//   no Authorization) when it lists the frame's screen, as the frame agent does; otherwise (or
//   with --metadata-first) it GETs the photo metadata with its frame token, then the version's
//   URL listed there, and checks the byte count. The shard's HTTP pool holds `connections`
//   keep-alive connections.
// * Once connected, each frame announces itself `online` (retained, `frames/{id}/status`), as the
//   frame agent does: the album service refreshes in the background only offline frames' syncs.
// * MQTT messages per photo: a counter client in the parent, with the benchmark's own broker
//   identity (it may read every topic), subscribes to `albums/{album}/#` and `frames/+/sync`
//   (QoS 0) and counts what the broker carries there, retained copies sent on subscribing
//   excluded. The windows are contiguous: one opens when the previous one closes (the first
//   after the frames' registration syncs went quiet) and closes once every frame was notified
//   and no counted message came for --settle seconds (at most 120 s), so syncs published after
//   a notification count with the photo that caused them, and a late one shows in the next round.

func monoNow() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func msBetween(_ a: UInt64, _ b: UInt64) -> Double { (Double(b) - Double(a)) / 1e6 }

struct FrameInfo: Codable, Sendable {
    var id: String
    var token: String
    /// The frame's own broker identity (client id = user name).
    var mqttUsername: String
    var mqttPassword: String
    var size: String
}

struct ShardConfig: Codable, Sendable {
    var shard: Int
    var mqttHost: String
    var mqttPort: Int
    var album: String
    var gatewayHost: String
    var gatewayPort: Int
    var frames: [FrameInfo]
    var jitterMS: Int
    var connections: Int
    var readyTimeoutSeconds: Int
    /// Fetch from the notification's capability URL when it lists the frame's screen.
    var notificationURLs: Bool
}

struct ShardRoundResult: Codable, Sendable {
    var round: Int
    var arrivals: [UInt64?]
    var holds: [UInt64?]
    var errors: Int
    var errorSamples: [String]
    var requests: Int
    var firstRequest: UInt64?
    var lastResponse: UInt64?
    var disconnects: Int
    /// Versions fetched straight from the notification's URL (no metadata request).
    var direct: Int
}

/// A frame to fetch its version: its index in the shard and the photo_added it got.
struct FetchJob: Sendable {
    var index: Int
    var payload: [UInt8]
}

// MARK: fanout-shard (child process)

/// Per-round state of a shard, shared by the swarm thread and the fetch tasks.
final class ShardState: @unchecked Sendable {
    // @unchecked Sendable: every var is accessed with `lock` held.
    private let lock = NSLock()
    private var round = -1
    private var fetch = false
    private var arrivals: [UInt64?]
    private var holds: [UInt64?]
    private var errors = 0
    private var errorSamples: [String] = []
    private var requests = 0
    private var firstRequest: UInt64?
    private var lastResponse: UInt64?
    private var direct = 0
    private var continuation: AsyncStream<FetchJob>.Continuation?

    init(count: Int) {
        arrivals = Array(repeating: nil, count: count)
        holds = Array(repeating: nil, count: count)
    }

    func begin(round: Int, fetch: Bool, jobs: AsyncStream<FetchJob>.Continuation) {
        lock.withLock {
            self.round = round
            self.fetch = fetch
            for i in arrivals.indices { arrivals[i] = nil; holds[i] = nil }
            errors = 0; errorSamples = []; requests = 0; firstRequest = nil; lastResponse = nil; direct = 0
            continuation?.finish()
            continuation = jobs
        }
    }

    /// Swarm thread: the first photo_added of the round for frame `i` (the fetch task reads it).
    func arrived(_ i: Int, at time: UInt64, payload: [UInt8]) {
        lock.withLock {
            guard round >= 0, arrivals[i] == nil else { return }
            arrivals[i] = time
            if fetch { continuation?.yield(FetchJob(index: i, payload: payload)) }
        }
    }

    /// No more fetch jobs this round (the fetch task ends when those queued are done).
    func endJobs() { lock.withLock { continuation?.finish(); continuation = nil } }

    func requestStarted() { lock.withLock { requests += 1; if firstRequest == nil { firstRequest = monoNow() } } }
    func responded() { lock.withLock { lastResponse = monoNow() } }
    func held(_ i: Int) { lock.withLock { holds[i] = monoNow() } }
    func fetchedDirectly() { lock.withLock { direct += 1 } }
    func failed(_ i: Int, _ message: String) {
        lock.withLock {
            errors += 1
            if errorSamples.count < 5 { errorSamples.append(message) }
        }
    }

    var counts: (round: Int, arrived: Int, held: Int, errors: Int) {
        lock.withLock { (round, arrivals.filter { $0 != nil }.count, holds.filter { $0 != nil }.count, errors) }
    }

    func result(disconnects: Int) -> ShardRoundResult {
        lock.withLock {
            ShardRoundResult(round: round, arrivals: arrivals, holds: holds, errors: errors, errorSamples: errorSamples,
                             requests: requests, firstRequest: firstRequest, lastResponse: lastResponse, disconnects: disconnects,
                             direct: direct)
        }
    }
}

/// Lines to the parent on stdout, one writer at a time.
let stdoutLock = NSLock()
func sendLine(_ line: String) {
    stdoutLock.withLock { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }
}

struct FanoutShard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout-shard", abstract: "Internal: up to 5,000 simulated frames, driven by the fanout parent over stdin/stdout.",
        shouldDisplay: false)

    @Option var config: String

    func run() async throws {
        let c = try JSONDecoder().decode(ShardConfig.self, from: Data(contentsOf: URL(fileURLWithPath: config)))
        var logger = Logger(label: "fanout-shard")
        logger.logLevel = .warning
        let state = ShardState(count: c.frames.count)
        let topic = "albums/\(c.album)/photo_added"
        let frames = c.frames
        let album = c.album
        let swarm = try MQTTClientSwarm(configuration: .init(
            host: c.mqttHost, port: c.mqttPort, count: frames.count,
            clientID: { frames[$0].mqttUsername }, cleanSession: false,
            credentials: { (frames[$0].mqttUsername, frames[$0].mqttPassword) },
            // What a frame's broker role allows: its album, and its own topics one by one.
            subscriptions: { [("albums/\(album)/#", .atLeastOnce), ("frames/\(frames[$0].id)/sync", .atLeastOnce),
                              ("frames/\(frames[$0].id)/command", .atLeastOnce), ("frames/\(frames[$0].id)/config", .atLeastOnce)] },
            maxPendingConnects: 64), logger: logger
        ) { delivery in
            guard delivery.message.topic == topic else { return }
            state.arrived(delivery.client, at: monoNow(), payload: delivery.message.payload)
        }
        try await swarm.start()
        try await swarm.waitUntilReady(timeout: .seconds(c.readyTimeoutSeconds))
        // As the frame agent on every connect: `online` (Wire's FrameStatusMessage), retained, QoS 1
        // (handed to the swarm thread; not awaited).
        let online = Array(#"{"v":1,"status":"online"}"#.utf8)
        for i in frames.indices {
            try swarm.publish(client: i, topic: "frames/\(frames[i].id)/status", payload: online, qos: .atLeastOnce, retain: true)
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let pool = HTTPPool(host: c.gatewayHost, port: c.gatewayPort, connections: c.connections, group: group)
        sendLine("ready")

        // Commands from the parent: "round N 0|1", "collect N", "quit".
        let commands = AsyncStream<String> { continuation in
            let thread = Thread {
                while let line = readLine() { continuation.yield(line) }
                continuation.finish()
            }
            thread.start()
        }
        var fetchTask: Task<Void, Never>?
        let reporter = Task {
            var last = [-1, -1, -1, -1]
            while !Task.isCancelled {
                let counts = state.counts
                let now = [counts.round, counts.arrived, counts.held, counts.errors]
                if now != last { sendLine("progress \(now[0]) \(now[1]) \(now[2]) \(now[3])"); last = now }
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
        for await line in commands {
            let parts = line.split(separator: " ")
            guard let verb = parts.first else { continue }
            if verb == "quit" { break }
            if verb == "round", parts.count == 3, let round = Int(parts[1]) {
                state.endJobs()
                await fetchTask?.value
                let (jobs, continuation) = AsyncStream<FetchJob>.makeStream()
                state.begin(round: round, fetch: parts[2] == "1", jobs: continuation)
                let jitter = c.jitterMS
                let direct = c.notificationURLs
                fetchTask = Task {
                    await withTaskGroup(of: Void.self) { group in
                        for await job in jobs {
                            group.addTask {
                                await fetchVersion(frame: frames[job.index], job: job, jitterMS: jitter, direct: direct, pool: pool, state: state)
                            }
                        }
                    }
                }
                sendLine("begun \(round)")
            } else if verb == "collect", parts.count == 2 {
                let result = state.result(disconnects: swarm.status.disconnects)
                let data = try JSONEncoder().encode(result)
                sendLine("result " + String(decoding: data, as: UTF8.self))
            }
        }
        reporter.cancel()
        fetchTask?.cancel()
        await swarm.shutdown()
        await pool.close()
        try? await group.shutdownGracefully()
    }
}

struct MetadataDocument: Decodable {
    struct Version: Decodable { let size: String; let bytes: Int64; let url: String }
    let versions: [Version]
}

/// One frame holding its version: with `direct`, straight from the notification's capability URL
/// when `versions` lists the frame's screen (no Authorization, as the frame agent); otherwise the
/// metadata document, then the bytes of the version it lists for the frame's screen.
func fetchVersion(frame: FrameInfo, job: FetchJob, jitterMS: Int, direct: Bool, pool: HTTPPool, state: ShardState) async {
    let index = job.index
    let notification = (try? JSONSerialization.jsonObject(with: Data(job.payload))) as? [String: Any]
    let fileID = notification?["file_id"] as? String ?? ""
    if jitterMS > 0 { try? await Task.sleep(for: .milliseconds(Int.random(in: 0...jitterMS))) }
    let auth = [("Authorization", "Bearer \(frame.token)")]
    do {
        if direct, let link = versionLink(in: notification, size: frame.size), let url = URLComponents(string: link) {
            let path = url.percentEncodedPath + (url.percentEncodedQuery.map { "?" + $0 } ?? "")
            state.requestStarted()
            let bytes = try await pool.send(HTTPRequest(path: path))
            state.responded()
            guard bytes.status == 200 else { state.failed(index, "capability URL HTTP \(bytes.status)"); return }
            // No byte count in the notification: a complete, non-empty body (the aggregator
            // checked it against Content-Length).
            guard bytes.body.readableBytes > 0 else { state.failed(index, "capability URL: empty body"); return }
            state.fetchedDirectly()
            state.held(index)
            return
        }
        state.requestStarted()
        let meta = try await pool.send(HTTPRequest(path: "/api/v1/photos/\(fileID)", headers: auth))
        state.responded()
        guard meta.status == 200 else { state.failed(index, "metadata HTTP \(meta.status)"); return }
        let document = try meta.json(MetadataDocument.self)
        guard let version = document.versions.first(where: { $0.size == frame.size }),
              let url = URLComponents(string: version.url) else {
            state.failed(index, "no \(frame.size) version in the metadata"); return
        }
        let path = url.percentEncodedPath + (url.percentEncodedQuery.map { "?" + $0 } ?? "")
        state.requestStarted()
        let bytes = try await pool.send(HTTPRequest(path: path, headers: auth))
        state.responded()
        guard bytes.status == 200 else { state.failed(index, "download HTTP \(bytes.status)"); return }
        guard bytes.body.readableBytes == Int(version.bytes) else {
            state.failed(index, "download has \(bytes.body.readableBytes) bytes, metadata says \(version.bytes)"); return
        }
        state.held(index)
    } catch {
        state.failed(index, "\(error)")
    }
}

/// The URL of `size` in a photo_added's `versions` (the JPEG when there are several formats).
func versionLink(in notification: [String: Any]?, size: String) -> String? {
    let versions = (notification?["versions"] as? [[String: Any]] ?? []).filter { ($0["size"] as? String) == size }
    let chosen = versions.first { ($0["format"] as? String) == "jpeg" } ?? versions.first
    return chosen?["url"] as? String
}

// MARK: fanout (the parent)

struct Session: Decodable { let token: String }
struct AlbumCreated: Decodable { let album_id: String }
struct FrameRegistered: Decodable {
    struct MQTT: Decodable { let username: String; let password: String }
    let frame_id: String
    let frame_token: String
    let mqtt: MQTT
}
struct Uploaded: Decodable { let file_id: String }
struct FrameOnline: Decodable { let online: Bool }

/// A running shard: its process, its latest counts and its pending result.
final class ShardHandle: @unchecked Sendable {
    // @unchecked Sendable: `process` and `input` are set in init and only used to write
    // commands; every var is accessed with `lock` held.
    let process: Process
    let input: FileHandle
    private let lock = NSLock()
    private var ready = false
    private var counts = (arrived: 0, held: 0, errors: 0)
    private var begun = -1
    private var results: [Int: ShardRoundResult] = [:]
    private var exited = false

    init(executable: String, config: String, stderrPath: String) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["fanout-shard", "--config", config]
        let inPipe = Pipe(), outPipe = Pipe()
        process.standardInput = inPipe
        process.standardOutput = outPipe
        guard FileManager.default.createFile(atPath: stderrPath, contents: nil) else {
            throw ChildError(description: "cannot create the shard log \(stderrPath)")
        }
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        input = inPipe.fileHandleForWriting
        let output = outPipe.fileHandleForReading
        try process.run()
        let thread = Thread { [self] in
            var buffer = Data()
            while true {
                let chunk = output.availableData
                if chunk.isEmpty { break }
                buffer.append(chunk)
                while let newline = buffer.firstIndex(of: 10) {
                    let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
                    buffer.removeSubrange(buffer.startIndex...newline)
                    handle(line)
                }
            }
            lock.withLock { exited = true }
        }
        thread.start()
    }

    private func handle(_ line: String) {
        if line == "ready" { lock.withLock { ready = true }; return }
        if line.hasPrefix("progress ") {
            // Counts of the round in progress only: a line about the previous round is stale.
            let n = line.split(separator: " ").dropFirst().compactMap { Int($0) }
            if n.count == 4 { lock.withLock { if n[0] == begun { counts = (n[1], n[2], n[3]) } } }
        } else if line.hasPrefix("begun "), let r = Int(line.dropFirst(6)) {
            lock.withLock { begun = r; counts = (0, 0, 0) }
        } else if line.hasPrefix("result "),
                  let result = try? JSONDecoder().decode(ShardRoundResult.self, from: Data(line.dropFirst(7).utf8)) {
            lock.withLock { results[result.round] = result }
        }
    }

    func send(_ command: String) { input.write(Data((command + "\n").utf8)) }
    var isReady: Bool { lock.withLock { ready } }
    var hasExited: Bool { lock.withLock { exited } }
    var current: (arrived: Int, held: Int, errors: Int) { lock.withLock { counts } }
    func hasBegun(_ round: Int) -> Bool { lock.withLock { begun == round } }
    func result(_ round: Int) -> ShardRoundResult? { lock.withLock { results[round] } }
}

/// Probe receipts in the parent.
final class ProbeState: @unchecked Sendable {
    // @unchecked Sendable: every var is accessed with `lock` held.
    private let lock = NSLock()
    private var round = -1
    private var times: [Int: UInt64] = [:]
    private var payloads: [Int: [UInt8]] = [:]

    func begin(_ r: Int) { lock.withLock { round = r } }
    func received(_ payload: [UInt8]) {
        let now = monoNow()
        lock.withLock {
            guard round >= 0, times[round] == nil else { return }
            times[round] = now
            payloads[round] = payload
        }
    }
    func time(_ r: Int) -> UInt64? { lock.withLock { times[r] } }
    func payload(_ r: Int) -> [UInt8]? { lock.withLock { payloads[r] } }
}

/// What the broker carried on the album's topics and on every frame's sync topic, as the
/// counter client received it (swarm thread), until the next `take()`.
final class MessageCounter: @unchecked Sendable {
    // @unchecked Sendable: every var is accessed with `lock` held.
    private let lock = NSLock()
    private let albumPrefix: String
    private var album = 0
    private var syncs = 0
    private var last: UInt64 = 0

    init(album: String) { albumPrefix = "albums/\(album)/" }

    /// Swarm thread. Retained copies (sent because the counter subscribed) are not traffic.
    func record(_ message: MQTTMessage) {
        guard !message.retain else { return }
        let now = monoNow()
        lock.withLock {
            if message.topic.hasPrefix(albumPrefix) {
                album += 1
            } else if message.topic.hasPrefix("frames/") && message.topic.hasSuffix("/sync") {
                syncs += 1
            } else {
                return
            }
            last = now
        }
    }

    /// The counts since the previous call; starts the next window.
    func take() -> (album: Int, syncs: Int) {
        lock.withLock {
            defer { album = 0; syncs = 0 }
            return (album, syncs)
        }
    }

    /// Waits until no counted message came for `quiet`, at most `limit`; false when the limit
    /// ended the wait (messages still coming).
    func waitForQuiet(_ quiet: Duration, atMost limit: Duration) async throws -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            let since = msBetween(lock.withLock { last }, monoNow())
            if since >= quiet.ms { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }
}

/// The MQTT messages of one round's window: on `albums/{album}/#` (photo_added…) and on
/// `frames/+/sync` (any frame's sync).
struct MQTTMessageCounts: Codable, Sendable {
    var album: Int
    var frameSyncs: Int
    var total: Int
    /// The window closed after --settle quiet seconds (false: after 120 s, messages still coming).
    var settled: Bool
    var windowMS: Double
}

struct FetchFigures: Codable, Sendable {
    var holding: Int
    var errors: Int
    var errorSamples: [String]
    var acceptedToAllHoldMS: Double?
    var notifiedToHoldMS: Summary?
    var requests: Int
    var requestsPerSecond: Double?
    /// Frames that fetched straight from the notification's capability URL (no metadata request).
    var direct: Int
}

struct RoundFigures: Codable, Sendable {
    var round: Int
    var kind: String
    var notified: Int
    var missing: Int
    /// Publish → each frame's notification, ms.
    var latencyMS: Summary?
    /// Probe receipt − publish (floor rounds only: the publish instant is known there).
    var probeOffsetMS: Double?
    var acceptedToPublishMS: Double?
    var acceptedToLastNotifiedMS: Double?
    var uploadRequestMS: Double?
    var fetch: FetchFigures?
    var disconnects: Int
    /// MQTT messages the broker carried in this round's window (see MessageCounter).
    var mqtt: MQTTMessageCounts?
}

struct FanoutSize: Codable, Sendable {
    var frames: Int
    var shards: Int
    var setupSeconds: Double
    var setupRequests: Int
    var setupErrors: Int
    var connectSeconds: Double
    var rounds: [RoundFigures]
    var probeOffsetMedianMS: Double?
    var uploadLatencyMS: Summary?
    var floorLatencyMS: Summary?
    var lastFrameP99Ratio: Double?
    var errors: Int
    /// MQTT messages per photo (album topics + frame syncs), over the upload rounds' windows.
    var mqttMessagesPerPhoto: Summary?
    /// Of which `frames/+/sync`.
    var mqttSyncsPerPhoto: Summary?
    /// When this size finished and the load average then (sizes of one report may come from
    /// separate runs, see --append).
    var finishedAt: String?
    var loadAverageAtEnd: String?
}

struct FanoutReport: Codable, Sendable {
    var machine: MachineInfo
    var fetch: Bool
    var jitterMS: Int
    var connectionsPerShard: Int
    var photos: [String]
    var sizes: [FanoutSize]
    /// Frames fetched from the notification's capability URL when it listed their screen.
    var notificationURLs: Bool
    /// Quiet seconds that close a round's MQTT counting window.
    var settleSeconds: Int
}

struct Fanout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout",
        abstract: "One photo to N simulated frames over MQTT through the real system, against the raw broker floor.")

    @Option(help: "Frame counts, comma-separated.") var frames = "1000,5000,10000"
    @Flag(help: "Each frame fetches its version from the gateway (upload+fetch rounds).") var fetch = false
    @Flag(help: "Frames fetch the metadata document first even when the notification lists their screen's URL.")
    var metadataFirst = false
    @Option(help: "Each frame waits a random 0…jitter ms before fetching.") var jitter = 0
    @Option(help: "Upload rounds (each followed by a floor round) per frame count.") var rounds = 3
    @Option(help: "Keep-alive HTTP connections per shard for the fetches.") var connections = 128
    @Option(help: "Concurrent REST requests while registering frames.") var setupConcurrency = 32
    @Option(help: "The gateway (default $FRAMECAST_BENCH_GATEWAY or http://127.0.0.1:8080).") var gateway: String?
    @Option(help: "MQTT broker host.") var mqttHost = "127.0.0.1"
    @Option(help: "MQTT broker port (default $FRAMECAST_BENCH_MQTT_PORT or 1883).") var mqttPort: Int?
    @Option(help: "Seconds to wait for each round.") var timeout = 120
    @Option(help: "Seconds without an MQTT message on the counted topics that close a round's window (1 with --smoke).")
    var settle = 3
    @Option(help: "Where the report goes (default results, or .work/smoke with --smoke).") var results: String?
    @Flag(help: "CI smoke mode: results to .work/smoke, one round.") var smoke = false
    @Flag(help: """
        Keep the sizes of the report already in the results folder (a size measured again replaces \
        its old figures): so each size can run on fresh servers, the broker's dynamic-security state \
        (rewritten whole on every change) holding only that size's frames.
        """) var append = false

    func run() async throws {
        var machine = MachineInfo.capture()
        let env = ProcessInfo.processInfo.environment
        let gatewayURL = gateway ?? env["FRAMECAST_BENCH_GATEWAY"] ?? "http://127.0.0.1:8080"
        guard let url = URLComponents(string: gatewayURL), let host = url.host else { throw ValidationError("bad gateway URL \(gatewayURL)") }
        let port = url.port ?? 80
        let brokerPort = mqttPort ?? env["FRAMECAST_BENCH_MQTT_PORT"].flatMap(Int.init) ?? 1883
        let counts = frames.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !counts.isEmpty, counts.allSatisfy({ $0 > 0 }) else { throw ValidationError("--frames needs positive counts") }
        let resultsDir = results ?? (smoke ? ".work/smoke" : "results")
        try FileManager.default.createDirectory(atPath: resultsDir, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: ".work/fanout", withIntermediateDirectories: true)
        let roundCount = smoke ? 1 : rounds
        let settleSeconds = smoke ? 1 : settle
        guard settleSeconds > 0 else { throw ValidationError("--settle must be positive") }
        let me = CommandLine.arguments[0].hasPrefix("/") ? CommandLine.arguments[0]
            : FileManager.default.currentDirectoryPath + "/" + CommandLine.arguments[0]
        let photos = uploadPhotos(count: roundCount * (fetch ? 2 : 1))
        guard photos.count == roundCount * (fetch ? 2 : 1) else { throw ValidationError("need \(roundCount * (fetch ? 2 : 1)) JPEGs in /usr/share/backgrounds/mate/nature (run benchmarks/setup)") }

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let api = HTTPPool(host: host, port: port, connections: setupConcurrency, group: group)
        var sizes: [FanoutSize] = []
        for n in counts {
            var size = try await runSize(n, api: api, host: host, port: port, brokerPort: brokerPort, photos: photos,
                                         rounds: roundCount, settle: settleSeconds, me: me)
            size.finishedAt = ISO8601DateFormatter().string(from: Date())
            size.loadAverageAtEnd = loadAverage()
            sizes.append(size)
        }
        if append, let data = FileManager.default.contents(atPath: "\(resultsDir)/fanout.json"),
           let earlier = try? JSONDecoder().decode(FanoutReport.self, from: data) {
            let kept = earlier.sizes.filter { old in !sizes.contains { $0.frames == old.frames } }
            if !kept.isEmpty { note("kept from the earlier report: \(kept.map { "\($0.frames) frames" }.joined(separator: ", "))") }
            sizes = (kept + sizes).sorted { $0.frames < $1.frames }
        }
        await api.close()
        try await group.shutdownGracefully()
        machine.loadAverageAtEnd = loadAverage()
        let report = FanoutReport(machine: machine, fetch: fetch, jitterMS: jitter, connectionsPerShard: connections,
                                  photos: photos, sizes: sizes, notificationURLs: !metadataFirst, settleSeconds: settleSeconds)
        try writeJSON(report, to: "\(resultsDir)/fanout.json")
        let markdown = renderFanoutMarkdown(report)
        try markdown.write(toFile: "\(resultsDir)/fanout.md", atomically: true, encoding: .utf8)
        try fanoutChart(report).write(toFile: "\(resultsDir)/fanout.svg", atomically: true, encoding: .utf8)
        print(markdown)
        // This run's sizes only (--append keeps earlier ones in the report, not in the verdict).
        let errors = sizes.filter { size in counts.contains(size.frames) }.reduce(0) { $0 + $1.errors }
        if errors > 0 { throw ChildError(description: "\(errors) error(s) during the fan-out") }
        note("report: \(resultsDir)/fanout.md")
    }

    func uploadPhotos(count: Int) -> [String] {
        let dir = "/usr/share/backgrounds/mate/nature"
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".jpg") }.sorted()
        return names.prefix(count).map { "\(dir)/\($0)" }
    }

    func runSize(_ n: Int, api: HTTPPool, host: String, port: Int, brokerPort: Int, photos: [String], rounds: Int,
                 settle: Int, me: String) async throws -> FanoutSize {
        let run = UUID().uuidString.prefix(8).lowercased()
        note("fan-out to \(n) frames (run \(run))")
        // 1. A user, an album, N frames subscribed to it: all through the REST API.
        let setupStart = ContinuousClock.now
        let signup = try await api.send(jsonRequest(.POST, "/api/v1/auth/signup", token: nil,
            ["email": "bench-\(run)@example.com", "password": "benchmark password \(run)", "name": "Bench \(run)"]))
        guard signup.status == 201 else { throw ChildError(description: "signup: HTTP \(signup.status) \(String(decoding: signup.bytes, as: UTF8.self))") }
        let token = try signup.json(Session.self).token
        let albumReply = try await api.send(jsonRequest(.POST, "/api/v1/albums", token: token, ["name": "Fan-out \(n)"]))
        guard albumReply.status == 201 else { throw ChildError(description: "album: HTTP \(albumReply.status)") }
        let album = try albumReply.json(AlbumCreated.self).album_id
        let screens = [(1024, 600), (1280, 800)]
        let progress = ProgressLine("register \(n) frames", total: n)
        let setupErrors = Locked(0)
        let registered: [FrameInfo?] = try await concurrentMap(Array(0..<n), width: setupConcurrency) { i -> FrameInfo? in
            let (w, h) = screens[i % screens.count]
            do {
                // Registered showing the album: one request, and the broker's dynamic-security
                // state (rewritten whole on every change) written twice per frame, not five times.
                let reply = try await api.send(jsonRequest(.POST, "/api/v1/frames", token: token,
                    ["name": "frame \(i)", "width": w, "height": h, "orientation": "landscape", "album_ids": [album]]))
                guard reply.status == 201 else { throw ChildError(description: "register: HTTP \(reply.status)") }
                let frame = try reply.json(FrameRegistered.self)
                progress.advance()
                return FrameInfo(id: frame.frame_id, token: frame.frame_token, mqttUsername: frame.mqtt.username,
                                 mqttPassword: frame.mqtt.password, size: "frame:\(w)x\(h)")
            } catch {
                setupErrors.withLock { $0 += 1 }
                note("frame \(i): \(error)")
                progress.advance("error")
                return nil
            }
        }
        let frameList = registered.compactMap { $0 }
        let setupSeconds = (ContinuousClock.now - setupStart).ms / 1000

        // 2. Probe (first subscriber) and publisher in this process; the frames in shards.
        let connectStart = ContinuousClock.now
        let probe = ProbeState()
        let counter = MessageCounter(album: album)
        var logger = Logger(label: "framecast-bench")
        logger.logLevel = .warning
        let topic = "albums/\(album)/photo_added"
        let probeSwarm = try MQTTClientSwarm(configuration: .init(
            host: mqttHost, port: brokerPort, count: 3,
            clientID: { ["bench-probe-\(run)", "bench-publisher-\(run)", "bench-counter-\(run)"][$0] },
            username: ProcessInfo.processInfo.environment["FRAMECAST_BENCH_MQTT_USER"],
            password: ProcessInfo.processInfo.environment["FRAMECAST_BENCH_MQTT_PASSWORD"],
            subscriptions: { i -> [(String, MQTTQoS)] in
                // 0: the probe; 1: the floor's publisher; 2: the message counter.
                if i == 0 { return [("albums/\(album)/#", .atLeastOnce)] }
                if i == 2 { return [("albums/\(album)/#", .atMostOnce), ("frames/+/sync", .atMostOnce)] }
                return []
            }), logger: logger
        ) { delivery in
            if delivery.client == 0 && delivery.message.topic == topic { probe.received(delivery.message.payload) }
            if delivery.client == 2 { counter.record(delivery.message) }
        }
        try await probeSwarm.start()
        try await probeSwarm.waitUntilReady(timeout: .seconds(30))
        let shardSize = 5000
        let shardCount = (frameList.count + shardSize - 1) / shardSize
        var shards: [ShardHandle] = []
        for s in 0..<shardCount {
            let slice = Array(frameList[(s * shardSize)..<min(frameList.count, (s + 1) * shardSize)])
            let config = ShardConfig(shard: s, mqttHost: mqttHost, mqttPort: brokerPort, album: album, gatewayHost: host,
                                     gatewayPort: port, frames: slice, jitterMS: jitter, connections: connections,
                                     readyTimeoutSeconds: 600, notificationURLs: !metadataFirst)
            let path = ".work/fanout/shard-\(run)-\(s).json"
            try writeJSON(config, to: path)
            shards.append(try ShardHandle(executable: me, config: path, stderrPath: ".work/fanout/shard-\(run)-\(s).err"))
        }
        let connectProgress = ProgressLine("connect \(frameList.count) frames (\(shardCount) shard process(es))", total: shardCount)
        var readyCount = 0
        while readyCount < shardCount {
            try await Task.sleep(for: .milliseconds(100))
            if shards.contains(where: { $0.hasExited && !$0.isReady }) {
                throw ChildError(description: "a shard exited before it was ready; see .work/fanout/shard-\(run)-*.err")
            }
            let now = shards.filter(\.isReady).count
            while readyCount < now { readyCount += 1; connectProgress.advance() }
            if (ContinuousClock.now - connectStart) > .seconds(600) { throw ChildError(description: "frames not connected after 600 s") }
        }
        let connectSeconds = (ContinuousClock.now - connectStart).ms / 1000
        // The album service refreshes only offline frames' syncs in the background: wait (≤ 120 s)
        // until it has recorded online the last frame of each shard (a shard announces its frames
        // in order, once they are all connected).
        var pending = (0..<shardCount).map { frameList[min(frameList.count, ($0 + 1) * shardSize) - 1].id }
        let onlineDeadline = ContinuousClock.now + .seconds(120)
        while !pending.isEmpty && ContinuousClock.now < onlineDeadline {
            var still: [String] = []
            for id in pending {
                let reply = try await api.send(HTTPRequest(path: "/api/v1/frames/\(id)", headers: [("Authorization", "Bearer \(token)")]))
                if reply.status != 200 || !((try? reply.json(FrameOnline.self))?.online ?? false) { still.append(id) }
            }
            pending = still
            if !pending.isEmpty { try await Task.sleep(for: .milliseconds(200)) }
        }
        if !pending.isEmpty { note("the album service has not recorded every frame online after 120 s; syncs to offline frames may be counted") }
        // The first counting window opens once the frames' registration syncs have gone quiet.
        let setupQuiet = try await counter.waitForQuiet(.seconds(settle), atMost: .seconds(120))
        if !setupQuiet { note("MQTT syncs still flowing 120 s after the frames connected; counting starts anyway") }
        _ = counter.take()
        var windowOpened = monoNow()

        // 3. Rounds: upload, then the floor with the same payload.
        var figures: [RoundFigures] = []
        var roundNumber = 0
        // Notification latency is compared on rounds without fetches (the floor has none either:
        // thousands of fetches on the same two cores would delay the receivers' own clocks).
        var uploads = 0
        for r in 0..<rounds {
            for kind in fetch ? ["upload", "floor", "upload+fetch"] : ["upload", "floor"] {
                let round = roundNumber
                roundNumber += 1
                let fetching = kind == "upload+fetch"
                for shard in shards { shard.send("round \(round) \(fetching ? 1 : 0)") }
                while !shards.allSatisfy({ $0.hasBegun(round) }) { try await Task.sleep(for: .milliseconds(5)) }
                probe.begin(round)
                var accepted: UInt64?, published: UInt64?, uploadMS: Double?
                if kind != "floor" {
                    let photo = photos[uploads]
                    uploads += 1
                    let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: photo)))
                    let multipart = multipartBody(file: bytes, fileName: (photo as NSString).lastPathComponent,
                                                  contentType: "image/jpeg", metadata: "{\"album_id\": \"\(album)\"}")
                    let sent = monoNow()
                    let reply = try await api.send(HTTPRequest(method: .POST, path: "/api/v1/storage/photos/upload",
                        headers: [("Authorization", "Bearer \(token)"), ("Content-Type", multipart.contentType)], body: multipart.body))
                    accepted = monoNow()
                    uploadMS = msBetween(sent, accepted!)
                    guard reply.status == 201 else { throw ChildError(description: "upload: HTTP \(reply.status) \(String(decoding: reply.bytes, as: UTF8.self))") }
                    _ = try reply.json(Uploaded.self)
                } else {
                    guard let payload = probe.payload(round - 1) else { throw ChildError(description: "no payload captured in the upload round") }
                    published = monoNow()
                    try probeSwarm.publish(client: 1, topic: topic, payload: payload, qos: .atLeastOnce)
                }
                let roundProgress = ProgressLine("\(n) frames, round \(r + 1)/\(rounds) \(kind)", total: frameList.count)
                var shown = 0
                let deadline = ContinuousClock.now + .seconds(timeout)
                while ContinuousClock.now < deadline {
                    let totals = shards.map(\.current)
                    let arrived = totals.reduce(0) { $0 + $1.arrived }
                    let finished = fetching ? totals.reduce(0) { $0 + $1.held + $1.errors } : arrived
                    while shown < finished { shown += 1; roundProgress.advance() }
                    if arrived == frameList.count && finished == frameList.count && probe.time(round) != nil { break }
                    try await Task.sleep(for: .milliseconds(10))
                }
                for shard in shards { shard.send("collect \(round)") }
                var collected: [ShardRoundResult] = []
                let collectDeadline = ContinuousClock.now + .seconds(60)
                while collected.count < shards.count && ContinuousClock.now < collectDeadline {
                    collected = shards.compactMap { $0.result(round) }
                    try await Task.sleep(for: .milliseconds(10))
                }
                guard collected.count == shards.count else { throw ChildError(description: "a shard did not report round \(round)") }
                var figure = roundFigures(round: round, kind: kind, collected: collected, probe: probe.time(round),
                                          accepted: accepted, published: published, uploadMS: uploadMS, fetching: fetching)
                // The round's MQTT window closes once the counted topics are quiet.
                let settled = try await counter.waitForQuiet(.seconds(settle), atMost: .seconds(120))
                let counted = counter.take()
                let windowClosed = monoNow()
                figure.mqtt = MQTTMessageCounts(album: counted.album, frameSyncs: counted.syncs, total: counted.album + counted.syncs,
                                                settled: settled, windowMS: msBetween(windowOpened, windowClosed))
                windowOpened = windowClosed
                figures.append(figure)
                // Let QoS 1 handshakes settle between rounds.
                try await Task.sleep(for: .milliseconds(500))
            }
        }
        for shard in shards { shard.send("quit") }
        for shard in shards {
            let deadline = ContinuousClock.now + .seconds(30)
            while shard.process.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
            if shard.process.isRunning { shard.process.terminate() }
        }
        await probeSwarm.shutdown()
        return summarise(n: n, shards: shardCount, setupSeconds: setupSeconds, setupRequests: n + 2,
                         setupErrors: setupErrors.withLock { $0 }, connectSeconds: connectSeconds, rounds: figures)
    }

    func roundFigures(round: Int, kind: String, collected: [ShardRoundResult], probe: UInt64?, accepted: UInt64?,
                      published: UInt64?, uploadMS: Double?, fetching: Bool) -> RoundFigures {
        let arrivals = collected.flatMap(\.arrivals)
        let got = arrivals.compactMap { $0 }
        var figures = RoundFigures(round: round, kind: kind, notified: got.count, missing: arrivals.count - got.count,
                                   disconnects: collected.reduce(0) { $0 + $1.disconnects })
        if let published {
            figures.latencyMS = Summary(got.map { msBetween(published, $0) })
            figures.probeOffsetMS = probe.map { msBetween(published, $0) }
        }
        if let accepted {
            // Relative to the probe for now; made absolute once the floor's probe offset is known.
            figures.latencyMS = probe.flatMap { p in Summary(got.map { msBetween(p, $0) }) }
            figures.acceptedToPublishMS = probe.map { msBetween(accepted, $0) }
            figures.acceptedToLastNotifiedMS = got.max().map { msBetween(accepted, $0) }
            figures.uploadRequestMS = uploadMS
            if fetching {
                let holds = collected.flatMap(\.holds)
                let held = holds.compactMap { $0 }
                var notifyToHold: [Double] = []
                for (a, h) in zip(arrivals, holds) { if let a, let h { notifyToHold.append(msBetween(a, h)) } }
                let requests = collected.reduce(0) { $0 + $1.requests }
                let first = collected.compactMap(\.firstRequest).min(), last = collected.compactMap(\.lastResponse).max()
                figures.fetch = FetchFigures(
                    holding: held.count, errors: collected.reduce(0) { $0 + $1.errors } + (holds.count - held.count - collected.reduce(0) { $0 + $1.errors }),
                    errorSamples: Array(collected.flatMap(\.errorSamples).prefix(5)),
                    acceptedToAllHoldMS: held.count == holds.count ? held.max().map { msBetween(accepted, $0) } : nil,
                    notifiedToHoldMS: Summary(notifyToHold), requests: requests,
                    requestsPerSecond: first.flatMap { f in last.map { l in Double(requests) / (msBetween(f, l) / 1000) } },
                    direct: collected.reduce(0) { $0 + $1.direct })
            }
        }
        return figures
    }

    func summarise(n: Int, shards: Int, setupSeconds: Double, setupRequests: Int, setupErrors: Int, connectSeconds: Double,
                   rounds: [RoundFigures]) -> FanoutSize {
        var rounds = rounds
        let offsets = rounds.compactMap(\.probeOffsetMS)
        let offset = Summary(offsets)?.p50
        var uploadLatencies: [Double] = [], floorLatencies: [Double] = []
        for i in rounds.indices where rounds[i].kind != "floor" {
            // Publish ≈ probe receipt − the probe's median offset in the floor rounds.
            // Every order statistic moves by the same offset (a Summary of the five figures
            // would instead report the round's p95 as its p50 and its max as p95 and p99).
            if var shifted = rounds[i].latencyMS, let offset {
                shifted.min += offset
                shifted.p50 += offset
                shifted.p95 += offset
                shifted.p99 += offset
                shifted.max += offset
                shifted.mean += offset
                rounds[i].latencyMS = shifted
                rounds[i].acceptedToPublishMS = rounds[i].acceptedToPublishMS.map { $0 - offset }
            }
        }
        // Pooled distributions need the raw values: rebuild them from each round's summary is
        // not possible, so the pooled figures are over rounds' order statistics (see report).
        for round in rounds {
            guard let l = round.latencyMS else { continue }
            if round.kind == "upload" { uploadLatencies.append(l.p99) } else if round.kind == "floor" { floorLatencies.append(l.p99) }
        }
        let uploadP99 = Summary(uploadLatencies), floorP99 = Summary(floorLatencies)
        let errors = setupErrors + rounds.reduce(0) { $0 + $1.missing + ($1.fetch?.errors ?? 0) }
        // One photo per upload round (with or without fetches); floor rounds carry the
        // benchmark's own publish, not the album service's.
        let photoWindows = rounds.filter { $0.kind != "floor" }.compactMap(\.mqtt)
        return FanoutSize(frames: n, shards: shards, setupSeconds: setupSeconds, setupRequests: setupRequests, setupErrors: setupErrors,
                          connectSeconds: connectSeconds, rounds: rounds, probeOffsetMedianMS: offset,
                          uploadLatencyMS: uploadP99, floorLatencyMS: floorP99,
                          lastFrameP99Ratio: uploadP99.flatMap { u in floorP99.map { u.p50 / $0.p50 } }, errors: errors,
                          mqttMessagesPerPhoto: Summary(photoWindows.map { Double($0.total) }),
                          mqttSyncsPerPhoto: Summary(photoWindows.map { Double($0.frameSyncs) }))
    }
}

func jsonRequest(_ method: HTTPMethod, _ path: String, token: String?, _ body: [String: Any]) -> HTTPRequest {
    var headers = [("Content-Type", "application/json")]
    if let token { headers.append(("Authorization", "Bearer \(token)")) }
    let data = (try? JSONSerialization.data(withJSONObject: body)) ?? Data()
    return HTTPRequest(method: method, path: path, headers: headers, body: [UInt8](data))
}

// MARK: Report

func renderFanoutMarkdown(_ r: FanoutReport) -> String {
    var md = "# Fan-out: one photo to N frames\n\n" + r.machine.markdown + "\n\n"
    md += "Frames: real MQTT connections (MQTTClientSwarm, client id = frame id, persistent session, QoS 1 subscriptions to `albums/{album}/#` and `frames/{id}/#`), registered and subscribed through the REST API; at most 5,000 per shard process (libmosquitto needs 3 descriptors per client, the sandbox allows 20,000 per process). "
    md += "Each upload round uploads one real photo through the gateway (multipart, `metadata={\"album_id\": …}`); each floor round publishes the very payload the frames got in the upload round before it, QoS 1, straight to the same topic and subscribers; with --fetch an upload+fetch round follows, in which every frame fetches (its notification latency there is perturbed by the fetch load on the same 2 cores, so the floor comparison uses the upload rounds). "
    md += "Publish instant of the real path = probe receipt − the probe's median offset in the floor rounds (the probe subscribed before any frame). "
    md += "Percentiles are nearest-rank over the frames of one round. Fetch: \(r.fetch ? "yes" : "no"), jitter 0…\(r.jitterMS) ms, \(r.connectionsPerShard) keep-alive HTTP connections per shard"
    md += r.notificationURLs
        ? "; a frame fetches straight from the notification's capability URL when `versions` lists its screen (no Authorization, as the frame agent), else the metadata document first.\n\n"
        : "; every frame fetches the metadata document first (--metadata-first), then the version's URL listed there.\n\n"
    md += "Each frame announces itself `online` (retained) once connected, as the frame agent does. "
    md += "MQTT messages: the benchmark's own broker identity counts what the broker carried on `albums/{album}/#` and `frames/+/sync` (retained copies sent on subscribing excluded) in contiguous windows, one per round, each closed once every frame was notified and nothing was counted for \(r.settleSeconds) s; "
    md += "\"album / sync\" splits the count between the album's topics and any frame's sync. A floor round's count includes the benchmark's own publish. The broker queues at most 10,000 messages per client (`max_queued_messages`), so a burst beyond that could be undercounted.\n\n"
    for size in r.sizes {
        md += "## \(size.frames) frames\n\n"
        if let at = size.finishedAt, let load = size.loadAverageAtEnd { md += "Finished \(at), load average then: \(load).\n\n" }
        md += "Setup: \(size.setupRequests) REST requests in \(fmt(size.setupSeconds, 1)) s (\(size.setupErrors) errors); \(size.shards) shard process(es) connected and subscribed in \(fmt(size.connectSeconds, 1)) s. Probe offset (median over floor rounds): \(fmt(size.probeOffsetMedianMS, 2)) ms.\n\n"
        if let m = size.mqttMessagesPerPhoto {
            md += "MQTT messages per photo (upload rounds; album topics + `frames/+/sync`): median \(fmt(m.p50, 0)), max \(fmt(m.max, 0)); of which syncs: median \(fmt(size.mqttSyncsPerPhoto?.p50, 0)), max \(fmt(size.mqttSyncsPerPhoto?.max, 0)).\n\n"
        }
        md += "| round | kind | notified | missing | p50 ms | p95 ms | p99 ms | max ms | upload accepted → publish ms | upload accepted → last frame notified ms | MQTT messages (album / sync) |\n"
        md += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        for round in size.rounds {
            let l = round.latencyMS
            let mqtt = round.mqtt.map { "\($0.total) (\($0.album) / \($0.frameSyncs))\($0.settled ? "" : ", still flowing at 120 s")" } ?? "–"
            md += "| \(round.round) | \(round.kind) | \(round.notified) | \(round.missing) | \(fmt(l?.p50, 2)) | \(fmt(l?.p95, 2)) | \(fmt(l?.p99, 2)) | \(fmt(l?.max, 2)) | \(fmt(round.acceptedToPublishMS, 1)) | \(fmt(round.acceptedToLastNotifiedMS, 1)) | \(mqtt) |\n"
        }
        let fetched = size.rounds.compactMap { round in round.fetch.map { (round.round, $0) } }
        if !fetched.isEmpty {
            md += "\n| round | frames holding their version | of which from the notification's URL | errors | upload accepted → every frame holds its bytes ms | notified → holds p50 / p95 / p99 / max ms | gateway requests | gateway req/s |\n"
            md += "|---|---:|---:|---:|---:|---|---:|---:|\n"
            for (round, f) in fetched {
                let s = f.notifiedToHoldMS
                md += "| \(round) | \(f.holding) | \(f.direct) | \(f.errors) | \(fmt(f.acceptedToAllHoldMS, 1)) | \(fmt(s?.p50, 1)) / \(fmt(s?.p95, 1)) / \(fmt(s?.p99, 1)) / \(fmt(s?.max, 1)) | \(f.requests) | \(fmt(f.requestsPerSecond, 0)) |\n"
                if !f.errorSamples.isEmpty { md += "\nErrors (first): \(f.errorSamples.joined(separator: "; "))\n\n" }
            }
        }
        md += "\n"
    }
    md += "## Targets\n\n| target | measured | met? |\n|---|---|---|\n"
    for size in r.sizes {
        if let ratio = size.lastFrameP99Ratio, let u = size.uploadLatencyMS, let f = size.floorLatencyMS {
            md += "| \(size.frames) frames: last-frame p99 ≤ 1.1× the raw floor (median over rounds of each round's p99; upload rounds without fetches) | \(fmt(u.p50, 2)) ms vs floor \(fmt(f.p50, 2)) ms = \(fmt(ratio, 2))× | \(ratio <= 1.1 ? "yes" : "**no**") |\n"
        }
        let holds = size.rounds.compactMap { $0.fetch?.acceptedToAllHoldMS }
        // Issue 13's targets: 1,000 frames ≤ 1.5 s, 10,000 frames ≤ 6 s.
        let holdTargetsMS = [1000: 1500.0, 10000: 6000.0]
        if let target = holdTargetsMS[size.frames], r.fetch {
            let all = size.rounds.filter { $0.fetch != nil }
            let worst = holds.max()
            let complete = holds.count == all.count
            md += "| upload accepted → \(size.frames) frames holding their version ≤ \(fmt(target / 1000, 1)) s (worst round) | \(complete ? fmt(worst, 1) + " ms" : "not every frame got its version") | \(complete && (worst ?? .infinity) <= target ? "yes" : "**no**") |\n"
        }
        if let m = size.mqttMessagesPerPhoto {
            md += "| \(size.frames) frames: MQTT messages per photo (album topics + frame syncs) = 1 (worst upload round) | max \(fmt(m.max, 0)), median \(fmt(m.p50, 0)) | \(m.min == 1 && m.max == 1 ? "yes" : "**no**") |\n"
        }
        md += "| \(size.frames) frames: zero errors (setup, missing notifications, fetch errors) | \(size.errors) | \(size.errors == 0 ? "yes" : "**no**") |\n"
    }
    return md
}

func fanoutChart(_ r: FanoutReport) -> String {
    let categories = r.sizes.map { "\($0.frames) frames" }
    return BarChart(
        title: "Publish → frame notified, p99 per round (median over rounds): Framecast vs raw broker floor", unit: "ms",
        categories: categories,
        series: [(name: "Framecast (upload → album service publish → frames)", values: r.sizes.map { $0.uploadLatencyMS?.p50 }),
                 (name: "raw broker floor (same payload published directly)", values: r.sizes.map { $0.floorLatencyMS?.p50 })],
        reference: nil).svg()
}
