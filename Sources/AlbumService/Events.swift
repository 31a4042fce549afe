import Foundation
import Logging
import Postgres
import ServiceKit
import Wire

extension AlbumService {
    /// `file.uploaded.with_ai`: the photo goes to `metadata.album_id` when the uploader may add
    /// photos there (owner or contributor); an album_id they may not add to is logged and the
    /// photo is added nowhere (never to someone else's album); no album_id: the uploader's
    /// default album, created on first need.
    func fileUploaded(_ event: FileUploadedWithAI, _ delivery: EventDelivery) async throws {
        guard let file = event.file, let fileID = UUID(uuidString: file.fileID)?.uuidString.lowercased(), !file.userID.isEmpty else {
            delivery.logger.error("file.uploaded.with_ai without a file, a file id or an owner; skipped")
            return
        }
        let uploader = file.userID
        let wanted = file.metadata["album_id"].map { $0.trimmingCharacters(in: .whitespaces) }.flatMap { $0.isEmpty ? nil : $0 }
        let (schema, configuration, logger) = (self.schema, self.configuration, delivery.logger)
        let defaultName = configuration.defaultAlbumName
        let added: Bool? = try await delivery.transaction { c in
            try Self.upsertPhoto(file, schema, c)
            var album: String
            if let wanted {
                guard TopicID.isValid(wanted), let id = UUID(uuidString: wanted)?.uuidString.lowercased(),
                      let role = try Self.role(uploader, id, schema, c), role == "owner" || role == "contributor" else {
                    logger.warning("upload names an album the uploader may not add to; not added to any album", metadata: [
                        "file.id": "\(fileID)", "album.id": "\(wanted.prefix(64))"])
                    return false
                }
                album = id
            } else if let id: String = try c.query(
                "SELECT album_id::text AS id FROM \(schema).albums WHERE owner_id = $1 AND is_default", [.text(uploader)]
            ).first?.decode("id") {
                album = id
            } else {
                album = try Self.insertAlbum(owner: uploader, name: defaultName, description: "", isDefault: true, schema, c)
            }
            return try Self.insertAlbumPhoto(album: album, file: fileID, by: uploader, configuration, schema, c)
        }
        if added == true {
            relay.wake()
            publisher.wake()
        }
    }

    /// `media.cache_ready`: every version the photo's frames need exists, so frames may be told.
    /// In the event's transaction the photo is marked ready and one `album_pushes` row per album
    /// holding it is written (an existing row is kept: a redelivered event queues nothing new);
    /// the publisher then publishes each row once and marks it published.
    func cacheReady(_ event: MediaCacheReady, _ delivery: EventDelivery) async throws {
        guard let fileID = UUID(uuidString: event.fileID)?.uuidString.lowercased() else {
            delivery.logger.error("media.cache_ready with an invalid file id; skipped")
            return
        }
        let (schema, configuration) = (self.schema, self.configuration)
        try await delivery.transaction { c in
            // The photo may not be known yet (album has not handled file.uploaded.with_ai):
            // remember it is ready; adding it to an album later queues its notification then.
            _ = try c.execute("""
                INSERT INTO \(schema).photos (file_id, cache_ready) VALUES ($1::uuid, true)
                ON CONFLICT (file_id) DO UPDATE SET cache_ready = true
                """, [.text(fileID)])
            try Self.queueAddedPushes(file: fileID, albums: nil, configuration, schema, c)
        }
        publisher.wake()
    }

    /// `media.schedule_changed`: the frame's rotation schedule goes into its retained config.
    /// Applied only when the event's revision is above the one applied (so a late or repeated
    /// event changes nothing), then published; a failed publish stays due and is retried.
    func scheduleChanged(_ event: MediaScheduleChanged, _ delivery: EventDelivery) async throws {
        guard let frame = UUID(uuidString: event.frameID)?.uuidString.lowercased(), event.revision > 0 else {
            delivery.logger.error("media.schedule_changed with an invalid frame id or revision; skipped")
            return
        }
        let entries = event.schedule?.entries ?? []
        let schedule = entries.isEmpty ? [] : RotationSchedule(frameID: frame, ownerID: event.userID, entries: entries,
                                                               updatedAt: event.schedule?.updatedAt ?? 0).wireBytes()
        let schema = self.schema
        let applied: Bool? = try await delivery.transaction { c in
            try c.execute("""
                UPDATE \(schema).frames SET schedule = $3, schedule_revision = $4, config_seq = config_seq + 1
                WHERE frame_id = $1::uuid AND owner_id = $2 AND schedule_revision < $4
                """, [.text(frame), .text(event.userID), .bytea(schedule), .int(event.revision)]) == 1
        }
        guard applied == true else {
            delivery.logger.debug("schedule not newer than the one applied, or frame gone; nothing to do",
                                  metadata: ["frame.id": "\(frame)"])
            return
        }
        do {
            try await publisher.publishConfig(frame: frame)
        } catch {
            delivery.logger.warning("publishing a frame's config failed; will retry", metadata: ["frame.id": "\(frame)", "error": "\(error)"])
            publisher.wake()
        }
    }

    /// `file.deleted`: the photo leaves every album (`album.photo_removed`, MQTT photo_removed).
    func fileDeleted(_ event: FileDeleted, _ delivery: EventDelivery) async throws {
        guard let fileID = UUID(uuidString: event.fileID)?.uuidString.lowercased() else {
            delivery.logger.error("file.deleted with an invalid file id; skipped")
            return
        }
        let schema = self.schema
        try await delivery.transaction { c in
            let albums = try c.query("SELECT album_id::text AS id FROM \(schema).album_photos WHERE file_id = $1::uuid", [.text(fileID)])
                .map { try $0.decode("id", as: String.self) }
            for album in albums {
                _ = try Self.deleteAlbumPhoto(album: album, file: fileID, by: event.userID, reason: "file_deleted", schema, c)
                _ = try c.execute("UPDATE \(schema).albums SET cover_file_id = '' WHERE album_id = $1::uuid AND cover_file_id = $2",
                                  [.text(album), .text(fileID)])
            }
            _ = try c.execute("DELETE FROM \(schema).frame_photos WHERE file_id = $1::uuid", [.text(fileID)])
            _ = try c.execute("DELETE FROM \(schema).photos WHERE file_id = $1::uuid", [.text(fileID)])
        }
        relay.wake()
        publisher.wake()
    }
}
