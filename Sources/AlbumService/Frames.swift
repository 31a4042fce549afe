import Foundation
import Logging
import MQTT
import Postgres
import ServiceKit
import Wire

extension AlbumService {
    static let noFrame = ServiceError.notFound("no such frame")

    // MARK: Register, list, get, update, delete

    func registerFrame(_ request: RegisterFrameRequest) async throws -> RegisterFrameReply {
        let user = try Self.user(request.userID)
        let name = try Self.text(request.name, "name", max: 200, required: true)
        try Self.screen(request.width, request.height)
        let id = Self.newID()
        // The frame's own broker identity (dynamic security): the password is returned once; the
        // broker keeps only its salted hash and the database nothing.
        let username = BrokerAdmin.username(frame: id)
        let password = Self.randomSecret()
        let schema = self.schema
        let orientation = request.orientation == .unspecified
            ? (request.height > request.width ? ScreenOrientation.portrait : .landscape) : request.orientation
        // The row commits first, then the broker identity is created (a reconciliation that
        // lists the broker's clients never sees a client without its row). A broker that does
        // not take it leaves no frame behind: the row is removed again and the answer is 503.
        let frame: Frame = try await runtime.postgres.withTransaction { c in
            _ = try c.execute("""
                INSERT INTO \(schema).frames (frame_id, owner_id, name, width, height, orientation, mqtt_username, config)
                VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8)
                """, [.text(id), .text(user), .text(name), .int(Int64(request.width)), .int(Int64(request.height)),
                      .int(Int64(orientation.wireValue)), .text(username), .bytea(Self.defaultFrameConfig.wireBytes())])
            guard let frame = try Self.frame(id, owner: user, schema, c) else { throw ServiceError.internal("the new frame was not read back") }
            return frame
        }
        do {
            try await admin.createFrame(id, password: password, albums: [])
        } catch {
            _ = try? await runtime.postgres.execute("DELETE FROM \(schema).frames WHERE frame_id = $1::uuid", [.text(id)])
            logger.warning("frame registration refused: its broker identity could not be created", metadata: [
                "frame.id": "\(id)", "error": "\(error)"])
            throw error
        }
        // Media learns of the new screen only once the frame exists for good.
        try await runtime.postgres.withTransaction { c in try Self.enqueueAlbumsChanged(frame: id, schema, c) }
        relay.wake()
        let broker = try configuration.frameBroker(for: id)
        logger.info("frame registered", metadata: ["frame.id": "\(id)", "mqtt.broker": "\(broker)"])
        return RegisterFrameReply(frame: frame, mqtt: MqttCredentials(
            host: broker.host, port: Int32(broker.port), username: username, password: password))
    }

    /// A new MQTT password for the owner's frame; the broker drops the frame's connection, so
    /// the old password stops working at once. (The gateway replaces the frame token.)
    func rotateFrameCredentials(_ request: RotateFrameCredentialsRequest) async throws -> RegisterFrameReply {
        let user = try Self.user(request.userID)
        guard let id = try Self.id(request.frameID, "frame_id") else { throw Self.noFrame }
        let schema = self.schema
        let (frame, albums): (Frame, [String]) = try await runtime.postgres.withConnection { c in
            guard let frame = try Self.frame(id, owner: user, schema, c) else { throw Self.noFrame }
            let albums = try c.query("SELECT album_id::text AS id FROM \(schema).frame_albums WHERE frame_id = $1::uuid ORDER BY album_id",
                                     [.text(id)]).map { try $0.decode("id", as: String.self) }
            return (frame, albums)
        }
        let password = Self.randomSecret()
        try await admin.setPassword(id, password: password, albums: albums)
        let broker = try configuration.frameBroker(for: id)
        logger.info("frame credentials rotated", metadata: ["frame.id": "\(id)"])
        return RegisterFrameReply(frame: frame, mqtt: MqttCredentials(
            host: broker.host, port: Int32(broker.port), username: BrokerAdmin.username(frame: id), password: password))
    }

    static let defaultFrameConfig = FrameConfig(intervalSeconds: 30, preferredFormat: "jpeg")

    func listFrames(_ request: ListFramesRequest) async throws -> ListFramesReply {
        let user = try Self.user(request.userID)
        let schema = self.schema
        let frames: [Frame] = try await runtime.postgres.withConnection { c in
            try c.query("SELECT frame_id::text AS id FROM \(schema).frames WHERE owner_id = $1 ORDER BY created_at, frame_id",
                        [.text(user)]).compactMap { try Self.frame(try $0.decode("id"), owner: user, schema, c) }
        }
        return ListFramesReply(frames: frames)
    }

    func getFrame(_ request: GetFrameRequest) async throws -> FrameReply {
        guard let id = try Self.id(request.frameID, "frame_id") else { throw Self.noFrame }
        var owner: String?
        if let principal = request.principal, principal.kind == .frame {
            guard principal.id.lowercased() == id else { throw Self.noFrame }
        } else {
            owner = try Self.user(request.principal?.kind == .user ? request.principal!.id : request.userID)
        }
        let (schema, asker) = (self.schema, owner)
        guard let frame = try await runtime.postgres.withConnection({ c in try Self.frame(id, owner: asker, schema, c) }) else {
            throw Self.noFrame
        }
        return FrameReply(frame: frame)
    }

    func updateFrame(_ request: UpdateFrameRequest) async throws -> FrameReply {
        let user = try Self.user(request.userID)
        guard let id = try Self.id(request.frameID, "frame_id") else { throw Self.noFrame }
        let name = try request.name.map { try Self.text($0, "name", max: 200, required: true) }
        // One side alone changes that side (the other is kept by the UPDATE's coalesce); each
        // given side is checked, a missing one stands in as the smallest valid.
        if request.width != nil || request.height != nil {
            try Self.screen(request.width ?? 16, request.height ?? 16)
        }
        let (schema, resized) = (self.schema, request.width != nil || request.height != nil)
        let frame: Frame = try await runtime.postgres.withTransaction { c in
            let n = try c.execute("""
                UPDATE \(schema).frames SET name = coalesce($3, name), width = coalesce($4, width), height = coalesce($5, height),
                    orientation = CASE WHEN $6 = 0 THEN orientation ELSE $6 END, updated_at = clock_timestamp()
                WHERE frame_id = $1::uuid AND owner_id = $2
                """, [.text(id), .text(user), name.map(PostgresValue.text) ?? .null,
                      request.width.map { .int(Int64($0)) } ?? .null, request.height.map { .int(Int64($0)) } ?? .null,
                      .int(Int64(request.orientation.wireValue))])
            guard n == 1, let frame = try Self.frame(id, owner: user, schema, c) else { throw Self.noFrame }
            if resized { try Self.enqueueAlbumsChanged(frame: id, schema, c) }
            return frame
        }
        if resized { relay.wake() }
        return FrameReply(frame: frame)
    }

    func deleteFrame(_ request: DeleteFrameRequest) async throws -> Empty {
        let user = try Self.user(request.userID)
        guard let id = try Self.id(request.frameID, "frame_id") else { throw Self.noFrame }
        let schema = self.schema
        try await runtime.postgres.withTransaction { c in
            let rows = try c.query("DELETE FROM \(schema).frames WHERE frame_id = $1::uuid AND owner_id = $2 RETURNING width, height",
                                   [.text(id), .text(user)])
            guard let row = rows.first else { throw Self.noFrame }
            try Outbox.enqueue(DeviceDeleted(eventID: Self.newID(), occurredAt: EventTime.now(), userID: user, frameID: id,
                                             width: try row.decode("width"), height: try row.decode("height")),
                               schema: schema, on: c)
        }
        relay.wake()
        // Its broker identity goes: the broker drops its connection and refuses its password.
        await admin.deleteFrame(id)
        // Clear the retained messages so a frame re-using the id (or a stray subscriber) sees nothing.
        for topic in FrameTopics.retained(frame: id) {
            do {
                try await publisher.publishNow(topic, [], qos: .atLeastOnce, retain: true)
            } catch {
                logger.warning("clearing a deleted frame's retained topic failed", metadata: [
                    "frame.id": "\(id)", "mqtt.topic": "\(topic)", "error": "\(error)"])
            }
        }
        logger.info("frame deleted", metadata: ["frame.id": "\(id)"])
        return Empty()
    }

    // MARK: Albums, sync, commands, config

    func setFrameAlbums(_ request: SetFrameAlbumsRequest) async throws -> FrameReply {
        let user = try Self.user(request.userID)
        guard let id = try Self.id(request.frameID, "frame_id") else { throw Self.noFrame }
        guard request.albumIDs.count <= 100 else { throw ServiceError.invalid("at most 100 albums per frame") }
        var wanted: [String] = []
        for text in request.albumIDs {
            guard let album = try Self.id(text, "album_ids") else { throw Self.noAlbum }
            if !wanted.contains(album) { wanted.append(album) }
        }
        let albums = wanted
        let schema = self.schema
        try await runtime.postgres.withTransaction { c in
            guard try !c.query("SELECT 1 FROM \(schema).frames WHERE frame_id = $1::uuid AND owner_id = $2 FOR UPDATE",
                               [.text(id), .text(user)]).isEmpty else { throw Self.noFrame }
            // Only albums the frame's owner can see.
            for album in albums where try Self.role(user, album, schema, c) == nil { throw Self.noAlbum }
            let list = albums.joined(separator: ",")
            _ = try c.execute("""
                DELETE FROM \(schema).frame_albums WHERE frame_id = $1::uuid
                    AND NOT (album_id::text = ANY(string_to_array($2, ',')))
                """, [.text(id), .text(list)])
            for album in albums {
                _ = try c.execute("INSERT INTO \(schema).frame_albums (frame_id, album_id) VALUES ($1::uuid, $2::uuid) ON CONFLICT DO NOTHING",
                                  [.text(id), .text(album)])
                _ = try c.execute("""
                    INSERT INTO \(schema).album_sync_status (frame_id, album_id) VALUES ($1::uuid, $2::uuid) ON CONFLICT DO NOTHING
                    """, [.text(id), .text(album)])
            }
            try Self.refreshSyncStatus(frame: id, schema, c)
            _ = try c.execute("UPDATE \(schema).frames SET updated_at = clock_timestamp() WHERE frame_id = $1::uuid", [.text(id)])
            try Self.enqueueAlbumsChanged(frame: id, schema, c)
        }
        relay.wake()
        do {
            _ = try await publisher.publishSync(frame: id)
        } catch {
            // Committed; the publisher retries the sync until the broker takes it.
            logger.warning("publishing a frame's sync failed; will retry", metadata: ["frame.id": "\(id)", "error": "\(error)"])
            _ = try? await runtime.postgres.execute("UPDATE \(schema).frames SET sync_seq = sync_seq + 1 WHERE frame_id = $1::uuid",
                                                    [.text(id)])
            publisher.wake()
        }
        guard let frame = try await runtime.postgres.withConnection({ c in try Self.frame(id, owner: user, schema, c) }) else {
            throw Self.noFrame
        }
        return FrameReply(frame: frame)
    }

    func syncFrame(_ request: SyncFrameRequest) async throws -> SyncFrameReply {
        let user = try Self.user(request.userID)
        guard let id = try Self.id(request.frameID, "frame_id") else { throw Self.noFrame }
        try await requireFrame(id, owner: user)
        do {
            let (seq, count) = try await publisher.publishSync(frame: id)
            return SyncFrameReply(sequence: seq, photoCount: Int32(count))
        } catch let error as ServiceError {
            throw error
        } catch {
            throw ServiceError.unavailable("the MQTT broker did not take the sync: \(error)")
        }
    }

    func sendFrameCommand(_ request: SendFrameCommandRequest) async throws -> SendFrameCommandReply {
        let user = try Self.user(request.userID)
        guard let id = try Self.id(request.frameID, "frame_id") else { throw Self.noFrame }
        guard FrameCommandMessage.known.contains(request.command) else {
            throw ServiceError.invalid("unknown command; use one of \(FrameCommandMessage.known.sorted().joined(separator: ", "))")
        }
        guard request.args.count <= 16,
              request.args.allSatisfy({ $0.key.utf8.count <= 64 && $0.value.utf8.count <= 1024 }) else {
            throw ServiceError.invalid("at most 16 args, keys up to 64 and values up to 1024 bytes")
        }
        if request.command == "set_interval" {
            guard let seconds = request.args["seconds"].flatMap(Int.init), (1...86_400).contains(seconds) else {
                throw ServiceError.invalid("set_interval needs args.seconds in 1…86400")
            }
        }
        try await requireFrame(id, owner: user)
        let message = FrameCommandMessage(id: Self.newID(), command: request.command, args: request.args, issuedAt: EventTime.now())
        try await publisher.publishNow(FrameTopics.command(frame: id), FrameTopics.encode(message), qos: .exactlyOnce, retain: false)
        return SendFrameCommandReply(commandID: message.id)
    }

    func setFrameConfig(_ request: SetFrameConfigRequest) async throws -> FrameReply {
        let user = try Self.user(request.userID)
        guard let id = try Self.id(request.frameID, "frame_id") else { throw Self.noFrame }
        let config = request.config ?? Self.defaultFrameConfig
        try Self.validate(config)
        let schema = self.schema
        let frame: Frame = try await runtime.postgres.withTransaction { c in
            let n = try c.execute("""
                UPDATE \(schema).frames SET config = $3, config_seq = config_seq + 1, updated_at = clock_timestamp()
                WHERE frame_id = $1::uuid AND owner_id = $2
                """, [.text(id), .text(user), .bytea(config.wireBytes())])
            guard n == 1, let frame = try Self.frame(id, owner: user, schema, c) else { throw Self.noFrame }
            // The preferred format may have changed: media renders the frame's versions in it.
            try Self.enqueueAlbumsChanged(frame: id, schema, c)
            return frame
        }
        relay.wake()
        try await publisher.publishConfig(frame: id)
        return FrameReply(frame: frame)
    }

    /// The retained `frames/{id}/config`: the frame's settings and, when it has one, its
    /// rotation schedule.
    static func configMessage(_ c: FrameConfig, schedule: RotationSchedule?) -> FrameConfigMessage {
        let slots = schedule.flatMap { $0.entries.isEmpty ? nil : $0.entries.map(scheduleSlot) }
        return FrameConfigMessage(intervalSeconds: c.intervalSeconds, shuffle: c.shuffle, sleepStart: c.sleepStart, sleepEnd: c.sleepEnd,
                                  timeZone: c.timeZone, transition: c.transition,
                                  preferredFormat: c.preferredFormat.isEmpty ? "jpeg" : c.preferredFormat, brightness: c.brightness,
                                  schedule: slots)
    }

    static func scheduleSlot(_ e: ScheduleEntry) -> ScheduleSlotMessage {
        ScheduleSlotMessage(days: e.daysOfWeek.compactMap(ScheduleEntry.dayName), startTime: e.startTime.isEmpty ? nil : e.startTime,
                            endTime: e.endTime.isEmpty ? nil : e.endTime, intervalSeconds: e.intervalSeconds, shuffle: e.shuffle,
                            playlistID: e.playlistID.isEmpty ? nil : e.playlistID, albumID: e.albumID.isEmpty ? nil : e.albumID)
    }

    static func validate(_ config: FrameConfig) throws {
        guard (1...86_400).contains(config.intervalSeconds) else { throw ServiceError.invalid("interval_seconds must be 1…86400") }
        guard (0...100).contains(config.brightness) else { throw ServiceError.invalid("brightness must be 0…100") }
        guard ["", "jpeg", "webp"].contains(config.preferredFormat) else { throw ServiceError.invalid("preferred_format must be jpeg or webp") }
        let clock = /^([01][0-9]|2[0-3]):[0-5][0-9]$/
        for (value, field) in [(config.sleepStart, "sleep_start"), (config.sleepEnd, "sleep_end")] where !value.isEmpty {
            guard value.wholeMatch(of: clock) != nil else { throw ServiceError.invalid("\(field) must be HH:MM") }
        }
        guard config.sleepStart.isEmpty == config.sleepEnd.isEmpty else {
            throw ServiceError.invalid("sleep_start and sleep_end are set together")
        }
        _ = try text(config.timeZone, "time_zone", max: 64)
        // Frames resolve it with TimeZone(identifier:): a name it does not know would silently
        // become another zone there. Empty: the frame's local time.
        guard config.timeZone.isEmpty || TimeZone(identifier: config.timeZone) != nil else {
            throw ServiceError.invalid("time_zone must be an IANA time zone name such as Europe/Paris (or empty for the frame's local time)")
        }
        _ = try text(config.transition, "transition", max: 32)
    }

    func requireFrame(_ id: String, owner: String) async throws {
        let schema = self.schema
        let rows = try await runtime.postgres.query("SELECT 1 FROM \(schema).frames WHERE frame_id = $1::uuid AND owner_id = $2",
                                                    [.text(id), .text(owner)])
        if rows.isEmpty { throw Self.noFrame }
    }

    /// Most photos one `device.albums_changed` lists (newest first; media renders older ones
    /// when a frame asks for them).
    static let maxAnnouncedPhotos = 10_000

    /// Enqueues `device.albums_changed` in the caller's transaction: the frame's owner, screen,
    /// preferred format, albums and their photos newest first, so media knows which albums the
    /// frame may read and renders its `frame:{W}x{H}` version of each photo that lacks it.
    /// Called on registration, album changes (the frame's, a member leaving, an album deleted),
    /// resize and config changes. The frame's row is locked first (its revision grows), so the
    /// event with the higher revision lists the later state.
    static func enqueueAlbumsChanged(frame: String, _ schema: String, _ c: PostgresConnection) throws {
        guard let row = try c.query("""
            UPDATE \(schema).frames SET albums_revision = albums_revision + 1 WHERE frame_id = $1::uuid
            RETURNING owner_id, width, height, config, albums_revision
            """, [.text(frame)]).first else { return }
        let config: [UInt8] = try row.decode("config")
        let format = (config.isEmpty ? nil : try? FrameConfig(wireBytes: config))?.preferredFormat ?? ""
        let albums = try c.query("SELECT album_id::text AS id FROM \(schema).frame_albums WHERE frame_id = $1::uuid ORDER BY album_id",
                                 [.text(frame)]).map { try $0.decode("id", as: String.self) }
        let files = try c.query("""
            SELECT ap.file_id::text AS id FROM \(schema).frame_albums fa JOIN \(schema).album_photos ap ON ap.album_id = fa.album_id
            WHERE fa.frame_id = $1::uuid GROUP BY ap.file_id ORDER BY max(ap.added_at) DESC, ap.file_id LIMIT \(maxAnnouncedPhotos)
            """, [.text(frame)]).map { try $0.decode("id", as: String.self) }
        try Outbox.enqueue(DeviceAlbumsChanged(
            eventID: newID(), occurredAt: EventTime.now(), userID: try row.decode("owner_id"), frameID: frame,
            width: try row.decode("width"), height: try row.decode("height"), format: format.isEmpty ? "jpeg" : format,
            albumIDs: albums, fileIDs: files, revision: try row.decode("albums_revision")), schema: schema, on: c)
    }

    static func screen(_ width: Int32, _ height: Int32) throws {
        guard (16...16_384).contains(width), (16...16_384).contains(height) else {
            throw ServiceError.invalid("width and height must be 16…16384 pixels")
        }
    }

    static func randomSecret() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<4).map { _ in String(format: "%016llx", generator.next() as UInt64) }.joined()
    }

    // MARK: Rows

    /// A frame with its albums and sync status; `owner` nil: any owner (a frame asking about itself).
    static func frame(_ id: String, owner: String?, _ schema: String, _ c: PostgresConnection) throws -> Frame? {
        guard let row = try c.query("""
            SELECT frame_id::text AS frame_id, owner_id, name, width, height, orientation, config, online, sync_seq,
                (extract(epoch FROM last_heartbeat_at) * 1000)::bigint AS heartbeat_ms,
                (extract(epoch FROM last_synced_at) * 1000)::bigint AS synced_ms,
                (extract(epoch FROM created_at) * 1000)::bigint AS created_ms,
                (extract(epoch FROM updated_at) * 1000)::bigint AS updated_ms
            FROM \(schema).frames WHERE frame_id = $1::uuid AND ($2 = '' OR owner_id = $2)
            """, [.text(id), .text(owner ?? "")]).first else { return nil }
        let seq: Int64 = try row.decode("sync_seq")
        let synced: Int64? = try row.decode("synced_ms")
        let status = try c.query("""
            SELECT s.album_id::text AS album_id, s.last_displayed_file_id,
                (extract(epoch FROM s.last_displayed_at) * 1000)::bigint AS displayed_ms,
                (SELECT count(*) FROM \(schema).album_photos ap JOIN \(schema).photos p ON p.file_id = ap.file_id
                 WHERE ap.album_id = s.album_id)::integer AS total,
                (SELECT count(*) FROM \(schema).album_photos ap JOIN \(schema).frame_photos fp
                    ON fp.file_id = ap.file_id AND fp.frame_id = s.frame_id
                 WHERE ap.album_id = s.album_id AND fp.displayed_at IS NOT NULL)::integer AS displayed
            FROM \(schema).album_sync_status s WHERE s.frame_id = $1::uuid ORDER BY s.album_id
            """, [.text(id)]).map { s in
            AlbumSyncStatus(albumID: try s.decode("album_id"), totalPhotos: try s.decode("total"),
                            displayedPhotos: try s.decode("displayed"), lastDisplayedFileID: try s.decode("last_displayed_file_id"),
                            lastDisplayedAt: try s.decode("displayed_ms", as: Int64?.self) ?? 0,
                            syncSequence: seq, lastSyncedAt: synced ?? 0)
        }
        let config: [UInt8] = try row.decode("config")
        return Frame(
            frameID: try row.decode("frame_id"), ownerID: try row.decode("owner_id"), name: try row.decode("name"),
            width: try row.decode("width"), height: try row.decode("height"),
            orientation: ScreenOrientation(wireValue: try row.decode("orientation")),
            albumIDs: status.map(\.albumID), config: config.isEmpty ? defaultFrameConfig : try FrameConfig(wireBytes: config),
            online: try row.decode("online"), lastHeartbeatAt: try row.decode("heartbeat_ms", as: Int64?.self) ?? 0,
            syncStatus: status, createdAt: try row.decode("created_ms"), updatedAt: try row.decode("updated_ms"))
    }

    /// Recomputes the frame's per-album counts from what it reported (pending = in the album
    /// and not cached yet, delivered = cached, displayed = displayed at least once).
    static func refreshSyncStatus(frame: String, _ schema: String, _ c: PostgresConnection) throws {
        _ = try c.execute("""
            UPDATE \(schema).album_sync_status s SET
                delivered = x.delivered, displayed = x.displayed, pending = x.total - x.delivered
            FROM (
                SELECT fa.album_id,
                    count(ap.file_id) AS total,
                    count(fp.cached_at) AS delivered,
                    count(fp.displayed_at) AS displayed
                FROM \(schema).frame_albums fa
                LEFT JOIN \(schema).album_photos ap ON ap.album_id = fa.album_id
                LEFT JOIN \(schema).frame_photos fp ON fp.frame_id = fa.frame_id AND fp.file_id = ap.file_id
                WHERE fa.frame_id = $1::uuid GROUP BY fa.album_id
            ) x
            WHERE s.frame_id = $1::uuid AND s.album_id = x.album_id
            """, [.text(frame)])
    }
}
