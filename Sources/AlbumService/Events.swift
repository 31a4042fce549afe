import Foundation
import Logging
import Postgres
import ServiceKit
import Wire

extension AlbumService {
    /// `file.uploaded.with_ai`: the photo goes to `metadata.album_id` when the uploader may add
    /// photos there (owner or contributor). The gateway refuses an upload naming an album the
    /// uploader may not add to (403/404, nothing stored), so here that only happens when the
    /// membership changed since: it is logged and the photo is added nowhere (never to someone
    /// else's album); no album_id: the uploader's
    /// default album, created on first need. A file already deleted (its tombstone, read under
    /// the file's lock) is added nowhere: the event came late or again.
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
            if try Self.fileIsDeleted(locking: fileID, schema, c) {
                logger.info("the file was deleted before its upload event arrived; not added to any album",
                            metadata: ["file.id": "\(fileID)"])
                return false
            }
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
    /// In the event's transaction the photo is marked ready, the versions frames may fetch are
    /// kept (`photos.versions`, merged with those already known: media may announce the photo
    /// again after rendering more), and one `album_pushes` row per album holding it is written
    /// with the album's next sequence number and signed capability URLs (an existing row is
    /// kept: a redelivered event queues nothing new); the publisher then publishes each row
    /// once and marks it published. For a deleted file (tombstone) nothing is recorded or queued.
    func cacheReady(_ event: MediaCacheReady, _ delivery: EventDelivery) async throws {
        guard let fileID = UUID(uuidString: event.fileID)?.uuidString.lowercased() else {
            delivery.logger.error("media.cache_ready with an invalid file id; skipped")
            return
        }
        let (schema, configuration, logger) = (self.schema, self.configuration, delivery.logger)
        let announced = StoredVersion.frameVersions(event.versions)
        let queued: Bool? = try await delivery.transaction { c in
            if try Self.fileIsDeleted(locking: fileID, schema, c) {
                logger.info("media.cache_ready for a deleted file; nothing to announce", metadata: ["file.id": "\(fileID)"])
                return false
            }
            // Read under the file's lock: every writer of this photo's versions holds it.
            let known = try c.query("SELECT versions FROM \(schema).photos WHERE file_id = $1::uuid", [.text(fileID)])
                .first.map { StoredVersion.decode(try $0.decode("versions")) } ?? []
            let versions = StoredVersion.encode(StoredVersion.merge(known, announced))
            // The photo may not be known yet (album has not handled file.uploaded.with_ai):
            // remember it is ready; adding it to an album later queues its notification then.
            _ = try c.execute("""
                INSERT INTO \(schema).photos (file_id, cache_ready, versions) VALUES ($1::uuid, true, $2)
                ON CONFLICT (file_id) DO UPDATE SET cache_ready = true, versions = EXCLUDED.versions
                """, [.text(fileID), .text(versions)])
            try Self.queueAddedPushes(file: fileID, albums: nil, configuration, schema, c)
            return true
        }
        if queued == true { publisher.wake() }
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

    /// `file.deleted`: the file's tombstone is recorded (so nothing that arrives later adds it
    /// again), and the photo leaves every album: `album.photo_removed` per album, and MQTT
    /// `photo_removed` queued where frames were told of it (``deleteAlbumPhoto``).
    func fileDeleted(_ event: FileDeleted, _ delivery: EventDelivery) async throws {
        guard let fileID = UUID(uuidString: event.fileID)?.uuidString.lowercased() else {
            delivery.logger.error("file.deleted with an invalid file id; skipped")
            return
        }
        let schema = self.schema
        try await delivery.transaction { c in
            _ = try Self.fileIsDeleted(locking: fileID, schema, c)
            _ = try c.execute("INSERT INTO \(schema).deleted_files (file_id) VALUES ($1::uuid) ON CONFLICT DO NOTHING",
                              [.text(fileID)])
            try Self.pruneTombstones(schema, c)
            // In album order: each removal announced takes the album's row lock (its seq), and
            // every transaction that takes several takes them in that order (no deadlock).
            let albums = try c.query("SELECT album_id::text AS id FROM \(schema).album_photos WHERE file_id = $1::uuid ORDER BY album_id",
                                     [.text(fileID)]).map { try $0.decode("id", as: String.self) }
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

    // MARK: Tombstones

    /// How long a deleted file's tombstone is kept: far longer than any event for the file can
    /// be late.
    static let tombstoneRetention = "30 days"

    /// Takes the file's lock for the rest of the transaction on `c` (everything album writes
    /// about one file — its upload, cache_ready, AddAlbumPhoto, its delete — is serialised by
    /// it) and tells whether the file was deleted (has a tombstone): then nothing may be
    /// created for it. Read after the lock, a delete has either committed (and is seen) or
    /// waits for this transaction (and then removes what it wrote).
    static func fileIsDeleted(locking file: String, _ schema: String, _ c: PostgresConnection) throws -> Bool {
        try c.advisoryTransactionLock("album-file:" + file)
        return try !c.query("SELECT 1 FROM \(schema).deleted_files WHERE file_id = $1::uuid", [.text(file)]).isEmpty
    }

    /// Deletes up to 100 tombstones older than ``tombstoneRetention`` (in `file.deleted`'s
    /// transaction, so pruning keeps pace with deleting; rows another replica is pruning are
    /// skipped, never waited for).
    static func pruneTombstones(_ schema: String, _ c: PostgresConnection) throws {
        _ = try c.execute("""
            DELETE FROM \(schema).deleted_files WHERE file_id IN (
                SELECT file_id FROM \(schema).deleted_files
                WHERE deleted_at < clock_timestamp() - interval '\(tombstoneRetention)'
                ORDER BY deleted_at LIMIT 100 FOR UPDATE SKIP LOCKED)
            """)
    }
}
