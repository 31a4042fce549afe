import Foundation
import Logging
import Metrics
import MQTT
import Postgres
import Secrets
import ServiceKit
import ServiceLifecycle
import Threads
import Wire

/// The album service's MQTT side, a `Service` owning one `MQTTClient`:
/// * connects (retrying until the broker answers or shutdown begins);
/// * follows `frames/+/status` and `frames/+/heartbeat` (online/offline, last heartbeat,
///   cached/displayed reports into `frame_photos` and `album_sync_status`, and newly cached
///   photos of the frame's albums to media as `device.cache_reported`); a malformed
///   payload is logged and dropped;
/// * answers a frame's `sync_request` (on its status topic, never recorded as its status) with
///   a fresh sync, at most one per frame per ``AlbumConfiguration/syncRequestInterval`` (a
///   request inside the window is served when it ends; ``SyncRequestSchedule``);
/// * publishes pending `album_pushes` rows, a ``LeasedQueue`` (QoS 1, waiting for PUBACK, then
///   marks them published, so each goes out once; rows left pending by a failure or a restart
///   are retried, a failed one after a back-off): one publish per photo per album, whatever
///   the number of frames; the row carries the album's sequence number, and no frame is
///   resynced after it;
/// * publishes due frame syncs (`frames.sync_seq > sync_published_seq`), due retained configs
///   (`frames.config_seq > config_published_seq`) and, for frames that are offline while their
///   albums changed (an album's `seq` above the one in their last sync), a refreshed retained
///   sync, at most once per frame per ``AlbumConfiguration/syncRefreshInterval``, so a frame
///   coming back finds a recent one;
/// * on graceful shutdown stops its loops and disconnects cleanly.
///
/// Request handlers publish through ``publishNow(_:_:qos:retain:)``, ``publishSync(frame:)`` and
/// ``publishConfig(frame:)``.
final class FramePublisher: Service, Sendable {
    let client: MQTTClient
    let configuration: AlbumConfiguration
    let postgres: PostgresPool
    let schema: String
    let logger: Logger
    let wakeSignal = WakeSignal()
    let syncLocks = KeyedLock()
    /// The album service's outbox relay (cache reports become `device.cache_reported`).
    let relay: OutboxRelay
    /// Frames' topic rights: updated before a frame's sync is published.
    let admin: BrokerAdmin
    /// The pending `album_pushes` rows (``pushQueue(schema:backOff:postgres:)``).
    let pushes: LeasedQueue
    /// Frames that asked for their sync, and when each may be served.
    let syncRequests: Locked<SyncRequestSchedule>
    /// Wakes ``syncRequestLoop()`` when a request arrives.
    let syncRequestWake = WakeSignal()

    init(configuration: AlbumConfiguration, postgres: PostgresPool, schema: String, relay: OutboxRelay, admin: BrokerAdmin,
         logger: Logger) throws {
        self.admin = admin
        self.client = try MQTTClient(configuration: configuration.mqtt, logger: logger)
        self.relay = relay
        self.configuration = configuration
        self.postgres = postgres
        self.schema = schema
        self.logger = logger
        self.pushes = FramePublisher.pushQueue(schema: schema, backOff: configuration.pushBackOff, postgres: postgres)
        self.syncRequests = Locked(SyncRequestSchedule(interval: configuration.syncRequestInterval))
    }

    /// Tells the push loop that rows are waiting.
    func wake() { wakeSignal.signal() }

    func run() async throws {
        guard await connectUntilUp() else { return }
        logger.info("MQTT publisher connected", metadata: ["mqtt.broker": "\(configuration.mqtt.host):\(configuration.mqtt.port)"])
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.telemetryLoop() }
            group.addTask { await self.pushLoop() }
            group.addTask { await self.syncRequestLoop() }
            try? await gracefulShutdown()
            group.cancelAll()
        }
        await client.disconnect()
        logger.info("MQTT publisher stopped")
    }

    private func connectUntilUp() async -> Bool {
        var attempt = 0
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                try await client.connect()
                return true
            } catch {
                attempt += 1
                logger.warning("connecting to the MQTT broker failed; retrying", metadata: ["error": "\(error)", "attempt": "\(attempt)"])
                let delay = Duration.milliseconds(min(5000, 250 * attempt))
                _ = try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
            }
        }
        return false
    }

    // MARK: Publishing

    /// Publishes now and waits for the broker's ack. Throws `ServiceError.unavailable` when
    /// the broker is not reachable or does not ack in time.
    func publishNow(_ topic: String, _ payload: [UInt8], qos: MQTTQoS, retain: Bool) async throws {
        guard client.isConnected else { throw ServiceError.unavailable("the MQTT broker is not connected") }
        do {
            try await client.publish(topic, payload: payload, qos: qos, retain: retain)
        } catch let error as MQTTError {
            throw ServiceError.unavailable("the MQTT broker did not take the message (\(error.code))")
        }
    }

    /// Publishes the frame's full sync with a new sequence number; returns it and the number of
    /// photos. The frame keeps a higher sequence than any published so far, so a failed publish
    /// leaves the sync due and the push loop retries it.
    @discardableResult
    func publishSync(frame: String) async throws -> (Int64, Int) {
        // One sync per frame at a time in this process, so the retained message the broker
        // keeps is the newest (across replicas see the check after publishing).
        await syncLocks.lock(frame)
        do {
            let result = try await publishSyncLocked(frame: frame)
            await syncLocks.unlock(frame)
            return result
        } catch {
            await syncLocks.unlock(frame)
            throw error
        }
    }

    private func publishSyncLocked(frame: String) async throws -> (Int64, Int) {
        let (schema, configuration) = (self.schema, self.configuration)
        let message: FrameSyncMessage = try await postgres.withTransaction { c in
            guard let row = try c.query("""
                UPDATE \(schema).frames SET sync_seq = sync_seq + 1 WHERE frame_id = $1::uuid RETURNING sync_seq, width, height
                """, [.text(frame)]).first else { throw AlbumService.noFrame }
            let seq: Int64 = try row.decode("sync_seq")
            let width: Int = try row.decode("width"), height: Int = try row.decode("height")
            let screen = "frame:\(width)x\(height)"
            // Each album's number is read before its photos: the list then holds every change up
            // to that number (one committed in between is in the list too, and its notification,
            // numbered above, changes nothing on the frame).
            var albums: [String] = []
            var albumSeqs: [String: Int64] = [:]
            for album in try c.query("""
                SELECT fa.album_id::text AS id, a.seq FROM \(schema).frame_albums fa JOIN \(schema).albums a ON a.album_id = fa.album_id
                WHERE fa.frame_id = $1::uuid ORDER BY fa.album_id
                """, [.text(frame)]) {
                let id: String = try album.decode("id")
                albums.append(id)
                albumSeqs[id] = try album.decode("seq", as: Int64.self)
            }
            // Signed fresh; only the versions made for this frame's screen (a sync lists every
            // photo of its albums, so it carries what this frame fetches and nothing more).
            let expires = CapabilityPath.expiry(lifetime: configuration.capabilityLifetime)
            let photos = try c.query("""
                SELECT ap.album_id::text AS album_id, ap.file_id::text AS file_id, p.file_name, p.content_type, p.taken_at, p.ai_labels,
                    p.versions
                FROM \(schema).frame_albums fa
                JOIN \(schema).album_photos ap ON ap.album_id = fa.album_id
                JOIN \(schema).photos p ON p.file_id = ap.file_id AND p.cache_ready
                WHERE fa.frame_id = $1::uuid ORDER BY ap.album_id, ap.added_at DESC, ap.file_id DESC
                """, [.text(frame)]).map { row in
                let file: String = try row.decode("file_id")
                let own = StoredVersion.decode(try row.decode("versions")).filter { $0.size == screen }
                return PhotoAddedMessage(fileID: file, albumID: try row.decode("album_id"), fileName: try row.decode("file_name"),
                                         contentType: try row.decode("content_type"), labels: AlbumService.labels(try row.decode("ai_labels")),
                                         takenAt: try row.decode("taken_at"), mediaServiceURL: configuration.mediaURL(file),
                                         versions: StoredVersion.links(own, fileID: file, expires: expires, configuration))
            }
            return FrameSyncMessage(frameID: frame, seq: seq, albumIDs: albums, photos: photos, generatedAt: EventTime.now(),
                                    albumSeqs: albumSeqs)
        }
        // The frame may subscribe to exactly the albums this sync lists, before it hears of them.
        try await admin.ensureAlbums(frame, albums: message.albumIDs)
        try await publishNow(FrameTopics.sync(frame: frame), FrameTopics.encode(message), qos: .exactlyOnce, retain: true)
        let albumList = message.albumIDs.joined(separator: ",")
        let seqList = message.albumIDs.map { String(message.albumSeqs?[$0] ?? 0) }.joined(separator: ",")
        try await postgres.withTransaction { c in
            // If another replica published a newer sync before ours landed, the broker may now
            // retain ours (older): make the sync due again so the newest goes out last.
            _ = try c.execute("""
                UPDATE \(schema).frames SET sync_published_seq = greatest(sync_published_seq, $2), last_synced_at = clock_timestamp(),
                    sync_seq = CASE WHEN sync_published_seq > $2 THEN sync_seq + 1 ELSE sync_seq END
                WHERE frame_id = $1::uuid
                """, [.text(frame), .int(message.seq)])
            // What the frame now knows of each album: it is stale again once an album's seq
            // passes this (``refreshStaleSyncs()``).
            _ = try c.execute("""
                UPDATE \(schema).frame_albums fa SET synced_seq = greatest(fa.synced_seq, v.seq)
                FROM unnest(string_to_array($2, ','), string_to_array($3, ',')::bigint[]) AS v(album_id, seq)
                WHERE fa.frame_id = $1::uuid AND fa.album_id = v.album_id::uuid
                """, [.text(frame), .text(albumList), .text(seqList)])
        }
        Counter(label: "album_frame_syncs_total").increment()
        return (message.seq, message.photos.count)
    }

    /// Publishes the frame's retained config (settings merged with its rotation schedule) as
    /// stored now, and marks it published up to the sequence read. A failed publish leaves it
    /// due (`config_seq > config_published_seq`) and the push loop retries it.
    /// `onlyIfDue`: skip it when the newest config was published meanwhile (the retry loop and
    /// a request handler may both get to the same frame; the frame should hear it once).
    func publishConfig(frame: String, onlyIfDue: Bool = false) async throws {
        // One config per frame at a time in this process, so the broker retains the newest.
        let key = "config:" + frame
        await syncLocks.lock(key)
        do {
            try await publishConfigLocked(frame: frame, onlyIfDue: onlyIfDue)
            await syncLocks.unlock(key)
        } catch {
            await syncLocks.unlock(key)
            throw error
        }
    }

    private func publishConfigLocked(frame: String, onlyIfDue: Bool) async throws {
        let schema = self.schema
        let due: (Int64, FrameConfigMessage)? = try await postgres.withConnection { c in
            guard let row = try c.query("""
                SELECT config, schedule, config_seq, config_published_seq FROM \(schema).frames WHERE frame_id = $1::uuid
                """, [.text(frame)]).first else { throw AlbumService.noFrame }
            if onlyIfDue, try row.decode("config_published_seq", as: Int64.self) >= row.decode("config_seq", as: Int64.self) {
                return nil
            }
            let config: [UInt8] = try row.decode("config"), schedule: [UInt8] = try row.decode("schedule")
            return (try row.decode("config_seq", as: Int64.self), AlbumService.configMessage(
                config.isEmpty ? AlbumService.defaultFrameConfig : try FrameConfig(wireBytes: config),
                schedule: schedule.isEmpty ? nil : try RotationSchedule(wireBytes: schedule)))
        }
        guard let (seq, message) = due else { return }
        try await publishNow(FrameTopics.config(frame: frame), FrameTopics.encode(message), qos: .atLeastOnce, retain: true)
        _ = try await postgres.execute("""
            UPDATE \(schema).frames SET config_published_seq = greatest(config_published_seq, $2) WHERE frame_id = $1::uuid
            """, [.text(frame), .int(seq)])
        Counter(label: "album_frame_configs_total").increment()
    }

    /// Publishes the config of every frame whose last config change was not published.
    func publishDueConfigs() async throws {
        guard client.isConnected else { return }
        let schema = self.schema
        let frames = try await postgres.query(
            "SELECT frame_id::text AS id FROM \(schema).frames WHERE config_seq > config_published_seq ORDER BY frame_id LIMIT 100"
        ).map { try $0.decode("id", as: String.self) }
        for frame in frames {
            do {
                try await publishConfig(frame: frame, onlyIfDue: true)
            } catch {
                logger.warning("publishing a frame's config failed; will retry", metadata: ["frame.id": "\(frame)", "error": "\(error)"])
            }
        }
    }

    private func pushLoop() async {
        // Stale frames are looked for at most this often (each pass reads every frame's albums;
        // a wake per published photo must not make it run per photo).
        let staleCheckEvery = min(configuration.retryInterval, configuration.syncRefreshInterval)
        var lastStaleCheck: ContinuousClock.Instant?
        while !Task.isCancelled {
            do {
                while try await publishPendingPushes() > 0 {}
                try await publishDueSyncs()
                try await publishDueConfigs()
                let now = ContinuousClock.now
                if lastStaleCheck.map({ now - $0 >= staleCheckEvery }) ?? true {
                    lastStaleCheck = now
                    try await refreshStaleSyncs()
                }
            } catch {
                logger.warning("publishing pending frame notifications failed; will retry", metadata: ["error": "\(error)"])
            }
            await wakeSignal.wait(upTo: configuration.retryInterval)
        }
    }

    /// `album_pushes` as a ``LeasedQueue``: pending rows, oldest first; done = published.
    static func pushQueue(schema: String, backOff: LeasedQueue.BackOff, postgres: PostgresPool) -> LeasedQueue {
        var queue = LeasedQueue.Configuration(schema: schema, table: "album_pushes", key: ["album_id", "file_id", "kind"],
                                              order: "created_at")
        queue.pending = "state = 'pending'"
        queue.completion = .update("state = 'published', published_at = clock_timestamp()")
        queue.lease = .seconds(30)
        queue.backOff = backOff
        return LeasedQueue(queue, postgres: postgres)
    }

    /// Claims a batch of pending pushes (``pushes``, a leased queue, so replicas share them),
    /// publishes each with QoS 1 and marks the acknowledged ones published. Returns the number
    /// published. One publish per photo per album: the frames showing the album are not
    /// resynced (a frame that misses one sees a gap in the album's `seq` and asks for its sync;
    /// an offline frame's retained sync is refreshed by ``refreshStaleSyncs()``).
    ///
    /// The batch is published one row at a time, and a slow broker could make that outlast the
    /// batch's lease; another replica would then claim and publish the same rows. So right
    /// before each publish the row's lease is renewed, on condition that it is still the one
    /// this call took (the queue's fencing token); a row whose lease is no longer ours is
    /// skipped, and a row is marked published only under the renewed lease. A failed publish
    /// gives the row back with a back-off (``AlbumConfiguration/pushBackOff``). What is left is
    /// the one window no database can close: a replica that dies after the broker took the
    /// message and before the row is marked leaves the row to be published again when its
    /// lease ends (frames ignore a `seq` they already had).
    func publishPendingPushes() async throws -> Int {
        guard client.isConnected else { return 0 }
        let claims = try await pushes.claim(limit: 50, returning: "album_id::text AS album_id, file_id::text AS file_id, kind, payload")
        guard !claims.isEmpty else { return 0 }
        var published = 0
        for claimed in claims {
            let push: (album: String, file: String, kind: String, payload: [UInt8])
            do {
                push = (try claimed.row.decode("album_id"), try claimed.row.decode("file_id"), try claimed.row.decode("kind"),
                        try claimed.row.decode("payload"))
            } catch {
                logger.error("a photo notification cannot be read; will retry", metadata: ["error": "\(error)"])
                _ = try? await pushes.failed(claimed, error: "\(error)")
                continue
            }
            let (album, file, kind) = (push.album, push.file, push.kind)
            let topic = kind == "added" ? FrameTopics.photoAdded(album: album) : FrameTopics.photoRemoved(album: album)
            // Still ours? Renew the lease for the time this publish may take.
            guard let renewed = try await pushes.renew(claimed) else {
                logger.debug("a claimed photo notification is no longer ours; skipped", metadata: ["mqtt.topic": "\(topic)", "file.id": "\(file)"])
                Counter(label: "album_photo_notifications_skipped_total").increment()
                continue
            }
            do {
                try await client.publish(topic, payload: push.payload, qos: .atLeastOnce, retain: false)
            } catch {
                let retryAt = try? await pushes.failed(renewed, error: "\(error)")
                logger.warning("publishing a photo notification failed; will retry", metadata: [
                    "mqtt.topic": "\(topic)", "file.id": "\(file)", "error": "\(error)", "attempts": "\(renewed.attempts)",
                    "retry.at": "\(retryAt?.description ?? "-")"])
                continue
            }
            let marked = try await pushes.done(renewed)
            if !marked {
                // The broker has it; the row was replaced or claimed again meanwhile (frames
                // ignore a notification they already had).
                logger.debug("a published photo notification was no longer ours to mark", metadata: [
                    "mqtt.topic": "\(topic)", "file.id": "\(file)"])
            }
            published += 1
            Counter(label: "album_photo_notifications_total", dimensions: [("kind", kind)]).increment()
            logger.debug("photo notification published", metadata: ["mqtt.topic": "\(topic)", "file.id": "\(file)"])
        }
        return published
    }

    /// Publishes the sync of every frame whose last sync was not published.
    func publishDueSyncs() async throws {
        guard client.isConnected else { return }
        let schema = self.schema
        let frames = try await postgres.query(
            "SELECT frame_id::text AS id FROM \(schema).frames WHERE sync_seq > sync_published_seq ORDER BY frame_id LIMIT 100"
        ).map { try $0.decode("id", as: String.self) }
        for frame in frames {
            do {
                try await publishSync(frame: frame)
            } catch {
                logger.warning("publishing a frame's sync failed; will retry", metadata: ["frame.id": "\(frame)", "error": "\(error)"])
            }
        }
    }

    /// Refreshes the retained sync of frames that are offline and stale (an album's `seq` above
    /// the one their last published sync carried), each at most once per
    /// ``AlbumConfiguration/syncRefreshInterval`` (measured from its last sync of any kind), so a
    /// frame coming back finds a recent sync however many photos came meanwhile. Online frames
    /// are left alone: they follow the notifications and ask when they miss one. Replicas may
    /// both refresh a frame now and then; the sequence check keeps the newest retained.
    func refreshStaleSyncs() async throws {
        guard client.isConnected else { return }
        let schema = self.schema
        let interval = Double(configuration.syncRefreshInterval.components.seconds)
            + Double(configuration.syncRefreshInterval.components.attoseconds) / 1e18
        let frames = try await postgres.query("""
            SELECT f.frame_id::text AS id FROM \(schema).frames f
            WHERE NOT f.online
                AND (f.last_synced_at IS NULL OR f.last_synced_at <= clock_timestamp() - make_interval(secs => $1))
                AND EXISTS (SELECT 1 FROM \(schema).frame_albums fa JOIN \(schema).albums a ON a.album_id = fa.album_id
                            WHERE fa.frame_id = f.frame_id AND a.seq > fa.synced_seq)
            ORDER BY f.last_synced_at NULLS FIRST, f.frame_id LIMIT 100
            """, [.double(interval)]).map { try $0.decode("id", as: String.self) }
        for frame in frames {
            if Task.isCancelled { return }
            do {
                try await publishSync(frame: frame)
                Counter(label: "album_frame_sync_refreshes_total").increment()
            } catch {
                logger.warning("refreshing an offline frame's sync failed; will retry", metadata: [
                    "frame.id": "\(frame)", "error": "\(error)"])
            }
        }
    }

    // MARK: Sync requests

    /// The most syncs asked for by frames that are built and published at once.
    static let syncRequestConcurrency = 8

    /// Records a frame's `sync_request`; ``syncRequestLoop()`` serves it when its window allows.
    func requestSync(frame: String) {
        let now = ContinuousClock.now
        let at = syncRequests.withLock { $0.request(frame, now: now) }
        syncRequestWake.signal()
        let delay = at - now
        logger.debug("a frame asked for its sync", metadata: [
            "frame.id": "\(frame)", "sync.delay_ms": "\(delay.components.seconds * 1000 + delay.components.attoseconds / 1_000_000_000_000_000)"])
    }

    /// Serves the frames' sync requests as they fall due, a few at a time.
    private func syncRequestLoop() async {
        while !Task.isCancelled {
            let now = ContinuousClock.now
            let (frames, next) = syncRequests.withLock { $0.take(now: now, limit: Self.syncRequestConcurrency) }
            guard !frames.isEmpty else {
                await syncRequestWake.wait(upTo: next.map { max(.milliseconds(1), $0 - now) } ?? .seconds(60))
                continue
            }
            await withTaskGroup(of: Void.self) { group in
                for frame in frames {
                    group.addTask { await self.serveSyncRequest(frame) }
                }
            }
        }
    }

    private func serveSyncRequest(_ frame: String) async {
        do {
            let (seq, photos) = try await publishSync(frame: frame)
            Counter(label: "album_sync_requests_served_total").increment()
            logger.debug("sync sent on request", metadata: ["frame.id": "\(frame)", "sync.seq": "\(seq)", "sync.photos": "\(photos)"])
        } catch let error as ServiceError where error.status == .notFound {
            logger.debug("a sync was asked for by an unknown frame; ignored", metadata: ["frame.id": "\(frame)"])
        } catch {
            logger.warning("answering a frame's sync request failed; will retry", metadata: ["frame.id": "\(frame)", "error": "\(error)"])
            if client.isConnected {
                // Asked again, so it is served when the frame's window ends.
                requestSync(frame: frame)
            } else {
                // The broker is away: the frame asks again when it reconnects, and a sync whose
                // number was taken stays due for the push loop.
                wake()
            }
        }
    }

    // MARK: Telemetry

    /// Unread telemetry messages kept before new ones are dropped. When a broker restarts, every
    /// frame reconnects at once and announces `online` (retained, plus its heartbeat): 5,000
    /// frames arriving together overflowed the default 4,096 while each status took a database
    /// write, and 812 frames stayed recorded offline until their next heartbeat. Messages are
    /// a few hundred bytes, so this bound costs at most ~20 MB in such a burst.
    static let telemetryBuffer = 65_536

    private func telemetryLoop() async {
        await client.withMessages(bufferSize: Self.telemetryBuffer) { messages in
            do {
                try await client.subscribe([(FrameTopics.allStatus, .atLeastOnce), (FrameTopics.allHeartbeats, .atMostOnce)])
            } catch {
                logger.error("subscribing to frame telemetry failed", metadata: ["error": "\(error)"])
                return
            }
            for await message in messages {
                if Task.isCancelled { break }
                await handleTelemetry(message)
            }
        }
    }

    /// Applies one message from a frame. Never throws: bad input is logged and dropped.
    func handleTelemetry(_ message: MQTTMessage) async {
        if message.payload.isEmpty { return }  // a cleared retained message
        var logger = self.logger
        logger[metadataKey: "mqtt.topic"] = "\(message.topic.prefix(200))"
        do {
            if let id = FrameTopics.frameID(in: message.topic, leaf: "status") {
                guard let frame = UUID(uuidString: id)?.uuidString.lowercased() else { throw Malformed("not a frame id") }
                let status = try FrameTopics.decode(FrameStatusMessage.self, from: message.payload)
                try await applyStatus(status, frame: frame, retained: message.retain, logger: logger)
            } else if let id = FrameTopics.frameID(in: message.topic, leaf: "heartbeat") {
                guard let frame = UUID(uuidString: id)?.uuidString.lowercased() else { throw Malformed("not a frame id") }
                let heartbeat = try FrameTopics.decode(FrameHeartbeatMessage.self, from: message.payload)
                try await applyHeartbeat(heartbeat, frame: frame, retained: message.retain)
            }
        } catch let error as DecodingError {
            logger.warning("malformed frame telemetry dropped", metadata: ["error": "\(Self.describe(error))"])
            Counter(label: "album_frame_telemetry_dropped_total").increment()
        } catch let error as Malformed {
            logger.warning("malformed frame telemetry dropped", metadata: ["error": "\(error.reason)"])
            Counter(label: "album_frame_telemetry_dropped_total").increment()
        } catch {
            logger.warning("recording frame telemetry failed", metadata: ["error": "\(error)"])
        }
    }

    struct Malformed: Error {
        let reason: String
        init(_ reason: String) { self.reason = reason }
    }

    static func describe(_ error: DecodingError) -> String {
        switch error {
        case .dataCorrupted(let c), .keyNotFound(_, let c), .typeMismatch(_, let c), .valueNotFound(_, let c):
            return c.debugDescription
        @unknown default:
            return "undecodable"
        }
    }

    private func applyHeartbeat(_ heartbeat: FrameHeartbeatMessage, frame: String, retained: Bool) async throws {
        let schema = self.schema
        if retained {
            // A heartbeat kept by the broker says nothing about now (we may be starting up).
            return
        }
        _ = try await postgres.execute("""
            UPDATE \(schema).frames SET online = true, last_heartbeat_at = clock_timestamp(), last_seen_at = clock_timestamp()
            WHERE frame_id = $1::uuid
            """, [.text(frame)])
    }

    private func applyStatus(_ status: FrameStatusMessage, frame: String, retained: Bool, logger: Logger) async throws {
        let schema = self.schema
        switch status.status {
        case FrameStatusMessage.syncRequest:
            // Not a state of the frame: nothing is recorded (an online frame stays online). One
            // kept by the broker says nothing about now.
            guard !retained else { return }
            requestSync(frame: frame)
        case "online", "offline":
            _ = try await postgres.execute(
                "UPDATE \(schema).frames SET online = $2, last_seen_at = clock_timestamp() WHERE frame_id = $1::uuid",
                [.text(frame), .bool(status.status == "online")])
        case "cached", "displayed":
            let ids = (status.fileIDs ?? []) + (status.fileID.map { [$0] } ?? [])
            guard !ids.isEmpty, ids.count <= 10_000 else { throw Malformed("\(status.status) without file ids or with too many") }
            let files = try ids.map { id -> String in
                guard let file = UUID(uuidString: id)?.uuidString.lowercased() else { throw Malformed("not a file id") }
                return file
            }
            let displayed = status.status == "displayed"
            let forwarded: Bool = try await postgres.withTransaction { c in
                guard let owner: String = try c.query(
                    "UPDATE \(schema).frames SET online = true, last_seen_at = clock_timestamp() WHERE frame_id = $1::uuid RETURNING owner_id",
                    [.text(frame)]).first?.decode("owner_id") else { return false }
                // Photos of the frame's albums it had not reported cached before go to media
                // (photo_cache, cached_for_frames); a repeated report sends nothing.
                let fresh = try c.query("""
                    SELECT DISTINCT f AS id FROM unnest(string_to_array($2, ',')) AS f
                    WHERE EXISTS (SELECT 1 FROM \(schema).frame_albums fa JOIN \(schema).album_photos ap ON ap.album_id = fa.album_id
                                  WHERE fa.frame_id = $1::uuid AND ap.file_id = f::uuid)
                        AND NOT EXISTS (SELECT 1 FROM \(schema).frame_photos fp
                                        WHERE fp.frame_id = $1::uuid AND fp.file_id = f::uuid AND fp.cached_at IS NOT NULL)
                    ORDER BY 1
                    """, [.text(frame), .text(files.joined(separator: ","))]).map { try $0.decode("id", as: String.self) }
                if !fresh.isEmpty {
                    try Outbox.enqueue(DeviceCacheReported(eventID: AlbumService.newID(), occurredAt: EventTime.now(), userID: owner,
                                                           frameID: frame, fileIDs: fresh), schema: schema, on: c)
                }
                _ = try c.execute("""
                    INSERT INTO \(schema).frame_photos (frame_id, file_id, cached_at, displayed_at)
                    SELECT $1::uuid, f::uuid, clock_timestamp(), CASE WHEN $3 THEN clock_timestamp() END
                    FROM unnest(string_to_array($2, ',')) AS f
                    ON CONFLICT (frame_id, file_id) DO UPDATE SET cached_at = coalesce(\(schema).frame_photos.cached_at, EXCLUDED.cached_at),
                        displayed_at = coalesce(EXCLUDED.displayed_at, \(schema).frame_photos.displayed_at)
                    """, [.text(frame), .text(files.joined(separator: ",")), .bool(displayed)])
                if displayed, let last = files.last {
                    _ = try c.execute("""
                        UPDATE \(schema).album_sync_status s SET last_displayed_file_id = $2, last_displayed_at = clock_timestamp()
                        WHERE s.frame_id = $1::uuid AND EXISTS (
                            SELECT 1 FROM \(schema).album_photos ap WHERE ap.album_id = s.album_id AND ap.file_id = $2::uuid)
                        """, [.text(frame), .text(last)])
                }
                _ = try c.execute("UPDATE \(schema).album_sync_status SET last_ack_at = clock_timestamp() WHERE frame_id = $1::uuid",
                                  [.text(frame)])
                try AlbumService.refreshSyncStatus(frame: frame, schema, c)
                return !fresh.isEmpty
            }
            if forwarded { relay.wake() }
        case "error":
            logger.info("a frame reported an error", metadata: ["frame.id": "\(frame)", "frame.error": "\((status.message ?? "").prefix(500))"])
        default:
            throw Malformed("unknown status")
        }
    }
}

/// A mutual exclusion per key (a frame id) for tasks, handed over in FIFO order.
actor KeyedLock {
    private var held: Set<String> = []
    private var waiters: [String: [CheckedContinuation<Void, Never>]] = [:]

    func lock(_ key: String) async {
        guard held.contains(key) else {
            held.insert(key)
            return
        }
        await withCheckedContinuation { waiters[key, default: []].append($0) }
        // Ownership was handed over by unlock(): `key` stays held.
    }

    func unlock(_ key: String) {
        if var queue = waiters[key], !queue.isEmpty {
            let next = queue.removeFirst()
            waiters[key] = queue.isEmpty ? nil : queue
            next.resume()
        } else {
            held.remove(key)
        }
    }
}
