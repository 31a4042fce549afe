import BlobStore
import Foundation
import FramecastTesting
import Logging
import MQTT
import Postgres
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The replicated cluster that `scripts/cluster --test` starts (3 NATS nodes, a mosquitto root
/// and 2 leaves, PostgreSQL, 2 processes of each framecast role), driven from outside like
/// phones and frames would: frames on both leaves follow one album; 50 photos are uploaded
/// through the gateways while one NATS node (the EVENTS stream leader) and one replica of
/// each role are SIGKILLed and, later, restarted. Then every frame must have received every
/// photo_added exactly once, PostgreSQL must hold every file, album photo and version, and
/// the metrics must show that both replicas of each role did work.
///
/// Without the cluster (plain `swift test`) the test is skipped: `scripts/test` runs it
/// through `scripts/cluster --test`.
@Suite struct ClusterTests {
    static let environment = ClusterEnvironment.load()

    static let uploads = 50
    static let killAfter = 15
    static let restartAfter = 30
    static let roles = ["gateway", "storage", "album", "media"]

    /// The work each role's metrics count, per process.
    static let work: [(role: String, what: String, count: @Sendable ([MetricSample]) -> Int)] = [
        ("gateway", "uploads answered (hb_requests, upload route, 200/201)", { samples in
            samples.sum("hb_requests") { $0["http_route"]?.contains("upload") == true && ["200", "201"].contains($0["http_response_status_code"] ?? "") }
        }),
        ("storage", "uploads registered (storage_uploads_total{outcome=registered})", { samples in
            samples.sum("storage_uploads_total") { $0["outcome"] == "registered" }
        }),
        ("album", "photo_added published (album_photo_notifications_total{kind=added})", { samples in
            samples.sum("album_photo_notifications_total") { $0["kind"] == "added" }
        }),
        ("media", "photos rendered (media_renders_total{outcome=rendered})", { samples in
            samples.sum("media_renders_total") { $0["outcome"] == "rendered" }
        }),
    ]

    struct Frame: Sendable {
        let id: String
        let host: String
        let port: Int
        /// The frame's own broker identity, from its registration.
        let username: String
        let password: String
        var leaf: String { "\(host):\(port)" }
    }

    /// What the frames received: photo_added count per (frame, file), first arrival times.
    actor Inbox {
        var counts: [String: [String: Int]] = [:]
        var firstSeen: [String: [String: ContinuousClock.Instant]] = [:]
        var messages = 0
        var subscribed = 0
        var errors: [String] = []

        func record(frame: String, file: String) {
            messages += 1
            counts[frame, default: [:]][file, default: 0] += 1
            if firstSeen[frame]?[file] == nil { firstSeen[frame, default: [:]][file] = .now }
        }

        func didSubscribe() { subscribed += 1 }
        func failed(_ error: String) { errors.append(error) }

        func complete(frames: [String], files: Set<String>) -> Bool {
            frames.allSatisfy { frame in files.isSubset(of: Set((counts[frame] ?? [:]).keys)) }
        }
    }

    static func log(_ line: String) { print("cluster: \(line)") }

    @Test(.enabled(if: environment != nil, "needs the cluster of `scripts/cluster --test` (scripts/test runs it)"),
          .timeLimit(.minutes(10)))
    func everyFrameGetsEveryPhotoOnceWhileProcessesDie() async throws {
        let env = try #require(Self.environment)
        let started = ContinuousClock.now
        let http = HTTP()
        let gateways = try env.list("GATEWAYS")
        let leaves = try env.list("FRAME_MQTT")
        let processes = Self.roles.flatMap { role in ["\(role)-1", "\(role)-2"] }
        let logger = Logger(label: "cluster-test")

        for process in processes {
            let endpoint = try env.endpoint(process)
            #expect(try await eventually(timeout: .seconds(120)) { await http.isReady(endpoint) }, "\(process) is not ready")
        }

        let photos = try await Self.makePhotos(count: Self.uploads, in: "\(env.runDirectory)/photos")

        // A user, an album, and frames spread by the album service over both leaf brokers.
        let account = try await http.json("POST", "\(gateways[0])/api/v1/auth/signup", [
            "email": "cluster-\(UUID().uuidString.prefix(8).lowercased())@example.com",
            "password": "a long secret for the cluster test", "name": "Cluster",
        ])
        let token = try #require(account["token"] as? String)
        let user = try #require(account["user_id"] as? String)
        let albumID = try #require(try await http.json("POST", "\(gateways[1])/api/v1/albums", token: token, ["name": "Family"])["album_id"] as? String)

        var frames: [Frame] = []
        var perLeaf: [String: Int] = [:]
        while leaves.map({ perLeaf[$0, default: 0] }).min()! < 2 && frames.count < 24 {
            let (width, height) = frames.count % 2 == 0 ? (1024, 600) : (800, 480)
            let reply = try await http.json("POST", "\(gateways[frames.count % 2])/api/v1/frames", token: token,
                                            ["name": "Frame \(frames.count + 1)", "width": width, "height": height])
            let mqtt = try #require(reply["mqtt"] as? [String: Any])
            let frame = Frame(id: try #require(reply["frame_id"] as? String), host: try #require(mqtt["host"] as? String),
                              port: try #require(mqtt["port"] as? Int), username: try #require(mqtt["username"] as? String),
                              password: try #require(mqtt["password"] as? String))
            #expect(leaves.contains(frame.leaf), "frame given \(frame.leaf), not a leaf broker")
            perLeaf[frame.leaf, default: 0] += 1
            frames.append(frame)
        }
        #expect(leaves.allSatisfy { perLeaf[$0, default: 0] >= 2 }, "frames per leaf: \(perLeaf)")
        for (index, frame) in frames.enumerated() {
            _ = try await http.json("PUT", "\(gateways[index % 2])/api/v1/frames/\(frame.id)/albums", token: token, ["album_ids": [albumID]])
        }
        Self.log("\(frames.count) frames registered, per leaf broker: \(leaves.map { "\($0)=\(perLeaf[$0, default: 0])" }.joined(separator: " "))")

        // The frames: MQTT clients with persistent sessions on the leaf they were given.
        let inbox = Inbox()
        let clients = try frames.map { frame in
            try MQTTClient(configuration: MQTTConfiguration(host: frame.host, port: frame.port, clientID: "frame-\(frame.id)",
                                                            cleanSession: false, username: frame.username, password: frame.password,
                                                            keepAlive: .seconds(10)), logger: logger)
        }
        for client in clients { try await client.connect() }

        // The frames listen in their own tasks while this one uploads and kills.
        let listeners = clients.enumerated().map { index, client in
            let frame = frames[index]
            return Task { await Self.listen(client, frame: frame, albumID: albumID, inbox: inbox) }
        }
        let run: UploadRun
        let deliveredAt: ContinuousClock.Instant
        do {
            #expect(try await eventually(timeout: .seconds(30)) { await inbox.subscribed == frames.count })
            run = try await Self.uploadWhileKilling(env: env, http: http, photos: photos, albumID: albumID, token: token,
                                                    gateways: gateways, started: started)
            // Every frame must get every photo; then a quiet spell shows any late duplicate.
            let files = Set(run.fileOrder)
            let frameIDs = frames.map(\.id)
            let complete = try await eventually(timeout: .seconds(240)) { await inbox.complete(frames: frameIDs, files: files) }
            deliveredAt = .now
            #expect(complete, "not every frame received every photo within 240 s of the last upload")
            try await Task.sleep(for: .seconds(5))
        } catch {
            for client in clients { await client.disconnect() }
            throw error
        }
        for client in clients { await client.disconnect() }
        for listener in listeners { await listener.value }
        let (uploaded, fileOrder, killed, beforeKill, uploadsDone) = (run.uploaded, run.fileOrder, run.killed, run.beforeKill, run.uploadsDone)

        // Restarted processes came back.
        for process in killed where !process.hasPrefix("nats") {
            let endpoint = try env.endpoint(process)
            #expect(try await eventually(timeout: .seconds(60)) { await http.isReady(endpoint) }, "\(process) did not come back")
        }

        // Exactly once, per frame and photo.
        let counts = await inbox.counts
        let firstSeen = await inbox.firstSeen
        let messages = await inbox.messages
        for error in await inbox.errors { Issue.record("\(error)") }
        var missing = 0, duplicates = 0
        var latencies: [Double] = []
        for frame in frames {
            for file in fileOrder {
                let n = counts[frame.id]?[file] ?? 0
                if n == 0 { missing += 1 }
                if n > 1 { duplicates += n - 1 }
                if let seen = firstSeen[frame.id]?[file], let answered = uploaded[file] { latencies.append(Self.seconds(seen - answered)) }
            }
        }
        let unknown = counts.values.flatMap(\.keys).filter { uploaded[$0] == nil }.count
        Self.log("frames: \(frames.count); photo_added messages received: \(messages) (expected \(frames.count * Self.uploads)); missing: \(missing); duplicates: \(duplicates); unknown files: \(unknown)")
        Self.log(String(format: "upload answered → photo_added at a frame: median %.2f s, p95 %.2f s, max %.2f s (%d deliveries, kills included)",
                        percentile(latencies, 0.5), percentile(latencies, 0.95), latencies.max() ?? .nan, latencies.count))
        Self.log("last photo_added \(Self.seconds(deliveredAt - uploadsDone)) s after the last upload was answered")
        #expect(missing == 0)
        #expect(duplicates == 0)
        #expect(unknown == 0)
        #expect(messages == frames.count * Self.uploads)

        // Nothing lost in PostgreSQL, every byte in the blob store.
        try await Self.checkDatabase(env, user: user, albumID: albumID, files: Set(fileOrder), screens: 2)

        // Both replicas of every role did work.
        var final: [String: [MetricSample]] = [:]
        for process in processes { final[process] = MetricSample.parse(try await http.text("\(try env.endpoint(process))/metrics")) }
        for (role, what, count) in Self.work {
            let one = count(final["\(role)-1"]!)
            let twoBefore = beforeKill["\(role)-2"].map(count) ?? 0
            let twoAfter = count(final["\(role)-2"]!)
            Self.log("\(role): \(what): \(role)-1 \(one); \(role)-2 \(twoBefore) before SIGKILL + \(twoAfter) after restart")
            #expect(one > 0, "\(role)-1 did no work")
            #expect(twoBefore + twoAfter > 0, "\(role)-2 did no work")
            // No photo rendered, registered or announced twice by the replicas together (the
            // killed replica's count is read just before the kill, so the sum may fall short
            // by what it did in those milliseconds, never exceed).
            #expect(one + twoBefore + twoAfter <= Self.uploads, "\(role): \(one + twoBefore + twoAfter) > \(Self.uploads)")
        }
        for role in ["album", "media"] {
            let events = { (samples: [MetricSample]) in samples.sum("messaging_process_total") { $0["service"] == role && $0["outcome"] == "ok" } }
            let redelivered = { (samples: [MetricSample]) in
                samples.sum("messaging_process_total") { $0["service"] == role && ($0["outcome"] == "duplicate" || $0["outcome"] == "retry") }
            }
            Self.log("\(role): events handled (messaging_process_total{outcome=ok}): \(role)-1 \(events(final["\(role)-1"]!)); \(role)-2 \(beforeKill["\(role)-2"].map(events) ?? 0) before SIGKILL + \(events(final["\(role)-2"]!)) after restart; redeliveries and retries (outcome=duplicate|retry): \(redelivered(final["\(role)-1"]!) + redelivered(final["\(role)-2"]!))")
        }
        let discarded = processes.filter { $0.hasPrefix("media") }.map { final[$0]!.sum("media_renders_total") { $0["outcome"] == "duplicate" } }.reduce(0, +)
        Self.log("media: renders discarded because another replica had committed the photo's versions first (media_renders_total{outcome=duplicate}, after restart): \(discarded)")
        if let (messages, bytes) = await Self.eventsStreamState(env, http) {
            Self.log("EVENTS stream: \(messages) messages, \(bytes) bytes after \(Self.uploads) uploads and \(frames.count) frame registrations (3 replicas each)")
        }
        Self.log("killed: \(killed.joined(separator: ", ")); test duration \(Self.seconds(ContinuousClock.now - started)) s")
    }

    // MARK: Steps

    /// A frame: records every photo_added it receives until its client disconnects.
    static func listen(_ client: MQTTClient, frame: Frame, albumID: String, inbox: Inbox) async {
        await client.withMessages { messages in
            do {
                let granted = try await client.subscribe([("albums/\(albumID)/photo_added", .atLeastOnce)])
                if granted.first != .some(.atLeastOnce) { await inbox.failed("frame \(frame.id): granted \(granted)") }
            } catch {
                await inbox.failed("frame \(frame.id): subscribe failed: \(error)")
            }
            await inbox.didSubscribe()
            for await message in messages where message.topic.hasSuffix("/photo_added") {
                let object = try? JSONSerialization.jsonObject(with: Data(message.payload)) as? [String: Any]
                if let file = object?["file_id"] as? String { await inbox.record(frame: frame.id, file: file) }
            }
        }
    }

    struct UploadRun: Sendable {
        var uploaded: [String: ContinuousClock.Instant] = [:]  // file id → when its upload was answered
        var fileOrder: [String] = []
        var beforeKill: [String: [MetricSample]] = [:]
        var killed: [String] = []
        var uploadsDone = ContinuousClock.now
    }

    /// Uploads the photos one after the other; after `killAfter` of them SIGKILLs the node
    /// leading the EVENTS stream and replica 2 of every role (kept down by their hold files),
    /// after `restartAfter` lets their supervisors start them again.
    static func uploadWhileKilling(env: ClusterEnvironment, http: HTTP, photos: [[UInt8]], albumID: String, token: String,
                                   gateways: [String], started: ContinuousClock.Instant) async throws -> UploadRun {
        var run = UploadRun()
        var attemptsTotal = 0
        var answeredBy: [String: Int] = [:]
        for index in 0..<photos.count {
            if index == killAfter {
                // SIGKILL: no graceful shutdown, in-flight work is cut wherever it is.
                let node = await eventsStreamLeader(env, http) ?? "nats-2"
                for process in [node] + roles.map({ "\($0)-2" }) {
                    if !process.hasPrefix("nats") {
                        run.beforeKill[process] = MetricSample.parse(try await http.text("\(try env.endpoint(process))/metrics"))
                    }
                    let pid = try env.pid(process)
                    _ = FileManager.default.createFile(atPath: env.holdFile(process), contents: nil)
                    #expect(kill(pid, SIGKILL) == 0, "kill \(process)")
                    run.killed.append(process)
                    log("after upload \(index): SIGKILL \(process) (pid \(pid)) at +\(seconds(ContinuousClock.now - started)) s")
                }
            }
            if index == restartAfter {
                for process in run.killed {
                    try FileManager.default.removeItem(atPath: env.holdFile(process))
                    log("after upload \(index): restart \(process) at +\(seconds(ContinuousClock.now - started)) s")
                }
                // The rest of the uploads go to a full cluster again: wait until the restarted
                // replicas say they are ready.
                let restarted = ContinuousClock.now
                for process in run.killed where !process.hasPrefix("nats") {
                    let endpoint = try env.endpoint(process)
                    #expect(try await eventually(timeout: .seconds(120)) { await http.isReady(endpoint) }, "\(process) did not come back")
                }
                log("restarted replicas ready \(seconds(ContinuousClock.now - restarted)) s after their restart")
            }
            let (fileID, attempts, gateway) = try await upload(photos[index], index: index, albumID: albumID, token: token,
                                                               gateways: gateways, http: http)
            attemptsTotal += attempts
            answeredBy[gateway, default: 0] += 1
            if run.uploaded[fileID] == nil { run.fileOrder.append(fileID) }
            run.uploaded[fileID] = .now
        }
        run.uploadsDone = .now
        log("\(photos.count) uploads answered \(seconds(run.uploadsDone - started)) s after the test started, \(attemptsTotal) HTTP attempts; answered by \(answeredBy.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))")
        #expect(run.fileOrder.count == photos.count, "distinct file ids: \(run.fileOrder.count)")
        return run
    }

    /// Uploads one photo, round robin over the gateways; on a refused connection, a timeout or
    /// a 5xx it tries again (the other gateway first), as a phone behind a load balancer
    /// would. The same bytes again are recognised by storage (200, the same file id).
    static func upload(_ photo: [UInt8], index: Int, albumID: String, token: String, gateways: [String],
                       http: HTTP) async throws -> (fileID: String, attempts: Int, gateway: String) {
        var lastError = ""
        for attempt in 0..<60 {
            let gateway = gateways[(index + attempt) % gateways.count]
            let (contentType, body) = uploadBody(photo: photo, fileName: "photo-\(index).jpg", metadata: "{\"album_id\": \"\(albumID)\"}")
            do {
                let (status, data) = try await http.send("POST", "\(gateway)/api/v1/storage/photos/upload", token: token, body: body, contentType: contentType)
                if status == 200 || status == 201,
                   let object = try JSONSerialization.jsonObject(with: data) as? [String: Any], let id = object["file_id"] as? String {
                    if attempt > 0 { log("upload \(index): answered \(status) by \(gateway) after \(attempt + 1) attempts (\(lastError))") }
                    return (id, attempt + 1, gateway)
                }
                guard status >= 500 else {
                    throw HTTP.Failed(what: "upload \(index)", status: status, body: String(decoding: data, as: UTF8.self))
                }
                lastError = "HTTP \(status)"
            } catch let error as HTTP.Failed {
                throw error
            } catch {
                lastError = "\(type(of: error))"
            }
            try await Task.sleep(for: .milliseconds(500))
        }
        throw HTTP.Failed(what: "upload \(index): gave up after 60 attempts", status: 0, body: lastError)
    }

    /// The first EVENTS stream entry that `match` accepts, from the /jsz monitoring documents
    /// of the nodes that answer, in node order (a node is asked only when the ones before it
    /// had no such entry).
    static func eventsStreamDetails(_ env: ClusterEnvironment, _ http: HTTP,
                                    first match: ([String: Any]) -> Bool) async -> [String: Any]? {
        guard let monitors = try? env.list("NATS_MONITOR") else { return nil }
        for monitor in monitors {
            guard let text = try? await http.text("\(monitor)/jsz?accounts=true&streams=true"),
                  let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                  let accounts = object["account_details"] as? [[String: Any]] else { continue }
            for account in accounts {
                for stream in account["stream_detail"] as? [[String: Any]] ?? []
                where stream["name"] as? String == "EVENTS" && match(stream) {
                    return stream
                }
            }
        }
        return nil
    }

    static func leader(of stream: [String: Any]) -> String? {
        guard let leader = (stream["cluster"] as? [String: Any])?["leader"] as? String, leader.hasPrefix("nats-") else { return nil }
        return leader
    }

    static func messagesAndBytes(of stream: [String: Any]) -> (Int, Int)? {
        guard let state = stream["state"] as? [String: Any],
              let messages = state["messages"] as? Int, let bytes = state["bytes"] as? Int else { return nil }
        return (messages, bytes)
    }

    /// The node leading the EVENTS stream (from a node's /jsz monitoring), nil if unknown.
    static func eventsStreamLeader(_ env: ClusterEnvironment, _ http: HTTP) async -> String? {
        await eventsStreamDetails(env, http) { leader(of: $0) != nil }.flatMap(leader(of:))
    }

    /// Messages and bytes in the EVENTS stream (from a node's /jsz monitoring).
    static func eventsStreamState(_ env: ClusterEnvironment, _ http: HTTP) async -> (Int, Int)? {
        await eventsStreamDetails(env, http) { messagesAndBytes(of: $0) != nil }.flatMap(messagesAndBytes(of:))
    }

    /// 50 distinct JPEG photos (1024×640 crops of the Debian wallpapers at different offsets).
    static func makePhotos(count: Int, in directory: String) async throws -> [[UInt8]] {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let sources = try Photos.plasmaNames.map(Photos.plasma)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<2 {
                group.addTask {
                    for index in stride(from: worker, to: count, by: 2) {
                        let step = index / sources.count
                        let path = "\(directory)/photo-\(index).jpg"
                        let result = try await Command.runOffPool("vips", [
                            "crop", sources[index % sources.count], "\(path)[Q=85]", "\(40 * step)", "\(25 * step)", "1024", "640"])
                        guard result.status == 0 else { throw HTTP.Failed(what: "vips crop \(path)", status: Int(result.status), body: result.output) }
                    }
                }
            }
            try await group.waitForAll()
        }
        return try (0..<count).map { try Photos.bytes("\(directory)/photo-\($0).jpg") }
    }

    /// Every upload is a file in storage with its bytes in the blob store, a photo of the album,
    /// a published photo_added, and rendered versions (thumbnail, hd, one per screen size) whose
    /// bytes exist; no service has an event left unpublished in its outbox.
    static func checkDatabase(_ env: ClusterEnvironment, user: String, albumID: String, files: Set<String>, screens: Int) async throws {
        let postgres = PostgresPool(configuration: PostgresConfiguration(connInfo: try env.value("POSTGRES")), logger: Logger(label: "cluster-test"))
        let blobs = BlobStore(path: try env.value("BLOB_DIR"))
        do {
            let stored = try await postgres.query("SELECT file_id::text AS id, blob_key FROM storage.files WHERE user_id = $1", [.text(user)])
            let storedIDs = Set(try stored.map { try $0.decode("id", as: String.self) })
            let missingBlobs = try stored.filter { row in BlobKey(try row.decode("blob_key", as: String.self)).map { !blobs.exists($0) } ?? true }.count
            let albumPhotos = Set(try await postgres.query("SELECT file_id::text AS id FROM album.album_photos WHERE album_id = $1::uuid", [.text(albumID)])
                .map { try $0.decode("id", as: String.self) })
            let pushes = try await postgres.query("""
                SELECT count(*) FILTER (WHERE state = 'published')::bigint AS published, count(*)::bigint AS total
                FROM album.album_pushes WHERE album_id = $1::uuid AND kind = 'added'
                """, [.text(albumID)])[0]
            let versions = try await postgres.query("SELECT file_id, size, blob_key FROM media.photo_versions WHERE file_id = ANY(string_to_array($1, ','))",
                                                    [.text(files.sorted().joined(separator: ","))])
            var sizesPerFile: [String: Set<String>] = [:]
            var missingVersionBlobs = 0
            for row in versions {
                sizesPerFile[try row.decode("file_id", as: String.self), default: []].insert(try row.decode("size", as: String.self))
                if BlobKey(try row.decode("blob_key", as: String.self)).map({ !blobs.exists($0) }) ?? true { missingVersionBlobs += 1 }
            }
            let fullyRendered = files.filter { (sizesPerFile[$0]?.count ?? 0) == 2 + screens }.count
            // What a frame downloads, for bandwidth estimates (deploy/SCALING.md).
            let sizes = try await postgres.query("""
                SELECT size, count(*)::bigint AS n, avg(bytes)::bigint AS mean, max(bytes) AS largest
                FROM media.photo_versions WHERE file_id = ANY(string_to_array($1, ',')) GROUP BY size ORDER BY size
                """, [.text(files.sorted().joined(separator: ","))])
            for row in sizes {
                log("version \(try row.decode("size", as: String.self)): \(try row.decode("n", as: Int64.self)) rendered, mean \(try row.decode("mean", as: Int64.self)) bytes, largest \(try row.decode("largest", as: Int64.self)) bytes")
            }
            // Events committed with the last photos (version_created, cache reports) may still be
            // on their way through a relay, and a relay SIGKILLed holding a claim leaves its rows
            // until the claim's 30 s lease ends: the outbox must drain, not be empty at this instant.
            func outboxBacklog() async throws -> Int {
                var backlog = 0
                for schema in ["storage", "album", "media"] {
                    backlog += Int(try await postgres.query("SELECT count(*)::bigint AS n FROM \(schema).outbox WHERE published_at IS NULL")[0].decode("n", as: Int64.self))
                }
                return backlog
            }
            var backlog = try await outboxBacklog()
            let drainStart = ContinuousClock.now
            while backlog > 0 && ContinuousClock.now < drainStart + .seconds(45) {
                try await Task.sleep(for: .milliseconds(250))
                backlog = try await outboxBacklog()
            }
            log("outbox drained \(String(format: "%.1f", Double((ContinuousClock.now - drainStart).components.seconds))) s after the check began")
            let published = Int(try pushes.decode("published", as: Int64.self)), total = Int(try pushes.decode("total", as: Int64.self))
            log("PostgreSQL: storage.files \(storedIDs.count) (blobs missing: \(missingBlobs)); album.album_photos \(albumPhotos.count); photo_added pushes published \(published)/\(total); media.photo_versions \(versions.count) rows, \(fullyRendered) photos with all \(2 + screens) versions (version blobs missing: \(missingVersionBlobs)); unpublished outbox events: \(backlog)")
            #expect(storedIDs == files)
            #expect(missingBlobs == 0)
            #expect(albumPhotos == files)
            #expect(published == files.count && total == files.count)
            #expect(fullyRendered == files.count)
            #expect(versions.count == files.count * (2 + screens), "a version row twice or missing")
            #expect(missingVersionBlobs == 0)
            #expect(backlog == 0)
        } catch {
            await postgres.close()
            throw error
        }
        await postgres.close()
    }

    static func seconds(_ duration: Duration) -> Double {
        let (s, atto) = duration.components
        return (Double(s) + Double(atto) / 1e18).rounded(toPlaces: 2)
    }
}

extension Double {
    func rounded(toPlaces places: Int) -> Double {
        let factor = pow(10, Double(places))
        return (self * factor).rounded() / factor
    }
}
