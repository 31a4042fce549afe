import Foundation
import Postgres
import ServiceKit
import Wire

// Media's own copy of album's state, so that it answers GetPhotoMetadata and GetVersion,
// renders the versions frames need and checks playlists and schedules without ever asking
// album (DESIGN.md: events carry the state their consumers need):
//
// * `albums`, `album_members`: each album's owner and members with their roles
//   (album.members_changed, the full list with a revision; album.deleted leaves a tombstone);
// * `album_photos`: which albums hold each photo (album.photo_added / album.photo_removed, each
//   with a revision from one sequence; a removal stays as a row with present = false);
// * `frame_screens`: each frame's owner, screen and the albums it shows now
//   (device.albums_changed with a revision, device.deleted leaves a tombstone; Renders.swift).
//
// Each handler applies its event in the transaction that records it processed, and only when
// it is newer than what is stored (events of one album, photo or frame come through separate
// consumers, so in any order): a redelivered, repeated or late event changes nothing. Album
// republishes the whole state once for data older than this copy (AlbumService's
// Republisher).
//
// The placement rule (which album an upload goes to) is album's alone: media learns where a
// photo went from album.photo_added, and renders for the screens of the frames showing it.

extension MediaService {
    // MARK: album.members_changed, album.deleted

    /// `album.members_changed`: the album's owner and members replace the stored ones when the
    /// revision is not below the one applied; a deleted album stays deleted.
    func membersChanged(_ event: AlbumMembersChanged, _ delivery: EventDelivery) async throws {
        guard let album = Self.uuid(event.albumID) else {
            delivery.logger.error("album.members_changed with an invalid album id; skipped")
            return
        }
        var members: [(user: String, role: String)] = []
        for member in event.members {
            guard !member.userID.isEmpty, let role = Self.roleName(member.role),
                  !members.contains(where: { $0.user == member.userID }) else { continue }
            members.append((member.userID, role))
        }
        let (schema, rows) = (self.schema, members)
        let applied: Bool? = try await delivery.transaction { c in
            guard try !c.query("""
                INSERT INTO \(schema).albums (album_id, owner_id, revision) VALUES ($1, $2, $3)
                ON CONFLICT (album_id) DO UPDATE SET owner_id = EXCLUDED.owner_id, revision = EXCLUDED.revision
                    WHERE NOT \(schema).albums.deleted AND \(schema).albums.revision <= EXCLUDED.revision
                RETURNING 1
                """, [.text(album), .text(event.ownerID), .int(event.revision)]).isEmpty else { return false }
            _ = try c.execute("DELETE FROM \(schema).album_members WHERE album_id = $1", [.text(album)])
            for member in rows {
                _ = try c.execute("INSERT INTO \(schema).album_members (album_id, user_id, role) VALUES ($1, $2, $3)",
                                  [.text(album), .text(member.user), .text(member.role)])
            }
            return true
        }
        delivery.logger.debug("album members recorded", metadata: [
            "album.id": "\(album)", "members": "\(members.count)", "applied": "\(applied == true)"])
    }

    /// `album.deleted`: the album is forgotten for good (a tombstone row keeps late events out):
    /// its members and photos go, so nobody sees a photo through it any more.
    func albumDeleted(_ event: AlbumDeleted, _ delivery: EventDelivery) async throws {
        guard let album = Self.uuid(event.albumID) else {
            delivery.logger.error("album.deleted with an invalid album id; skipped")
            return
        }
        let schema = self.schema
        try await delivery.transaction { c in
            _ = try c.execute("""
                INSERT INTO \(schema).albums (album_id, deleted) VALUES ($1, true)
                ON CONFLICT (album_id) DO UPDATE SET deleted = true
                """, [.text(album)])
            _ = try c.execute("DELETE FROM \(schema).album_members WHERE album_id = $1", [.text(album)])
            _ = try c.execute("DELETE FROM \(schema).album_photos WHERE album_id = $1", [.text(album)])
        }
        delivery.logger.info("album forgotten", metadata: ["album.id": "\(album)"])
    }

    // MARK: album.photo_added, album.photo_removed

    /// `album.photo_added`: the photo is in the album (unless a newer removal was applied, the
    /// album was deleted or the file was). A photo media has rendered gets the `frame:` versions
    /// of the screens showing that album that it lacks, queued; if its `media.cache_ready` was
    /// waiting for an album, it is sent now (or when those versions are rendered). A photo not
    /// rendered yet is rendered with those screens by its upload event.
    func photoAdded(_ event: AlbumPhotoAdded, _ delivery: EventDelivery) async throws {
        guard let photo = event.photo, let album = Self.uuid(photo.albumID), let file = Self.uuid(photo.fileID) else {
            delivery.logger.error("album.photo_added without a valid album or file id; skipped")
            return
        }
        let schema = self.schema
        let outcome: (applied: Bool, queued: Int, announced: Bool)? = try await delivery.transaction { c in
            // Serialised with the upload's commit, which reads the photo's albums under this lock.
            try Self.lockFile(file, c)
            if try Self.hasTombstone(file, schema, c) { return (false, 0, false) }
            if try !c.query("SELECT 1 FROM \(schema).albums WHERE album_id = $1 AND deleted", [.text(album)]).isEmpty {
                return (false, 0, false)
            }
            guard try Self.setAlbumPhoto(album: album, file: file, present: true, revision: event.revision,
                                         addedAt: photo.addedAt, schema, c) else { return (false, 0, false) }
            let queued = try Self.queueFrameVersions(file: file, albums: [album], schema, c)
            return (true, queued, try Self.announceIfDue(file, schema, c))
        }
        if let outcome, outcome.queued > 0 {
            delivery.logger.info("frame versions queued for a photo added to an album", metadata: [
                "file.id": "\(file)", "album.id": "\(album)", "renders.queued": "\(outcome.queued)"])
            renderWake.signal()
        }
        if outcome?.announced == true { relay.wake() }
    }

    /// `album.photo_removed`: the photo is no longer in the album (unless a newer add was
    /// applied): members and frames of that album no longer see it through it.
    func photoRemoved(_ event: AlbumPhotoRemoved, _ delivery: EventDelivery) async throws {
        guard let album = Self.uuid(event.albumID), let file = Self.uuid(event.fileID) else {
            delivery.logger.error("album.photo_removed without a valid album or file id; skipped")
            return
        }
        let schema = self.schema
        try await delivery.transaction { c in
            _ = try Self.setAlbumPhoto(album: album, file: file, present: false, revision: event.revision, addedAt: 0, schema, c)
        }
    }

    /// Records whether `file` is in `album` when `revision` is not below the one stored for the
    /// pair (a removal is kept as a row, so an older add arriving after it changes nothing).
    /// Returns whether it was applied.
    static func setAlbumPhoto(album: String, file: String, present: Bool, revision: Int64, addedAt: Int64,
                              _ schema: String, _ c: PostgresConnection) throws -> Bool {
        try !c.query("""
            INSERT INTO \(schema).album_photos (album_id, file_id, present, revision, added_at) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (album_id, file_id) DO UPDATE SET present = EXCLUDED.present, revision = EXCLUDED.revision,
                added_at = CASE WHEN EXCLUDED.present THEN EXCLUDED.added_at ELSE \(schema).album_photos.added_at END
                WHERE \(schema).album_photos.revision <= EXCLUDED.revision
            RETURNING 1
            """, [.text(album), .text(file), .bool(present), .int(revision), .int(addedAt)]).isEmpty
    }

    // MARK: Placement and screens

    /// The albums holding `file` now (as media knows them), sorted.
    static func albumsHolding(_ file: String, _ schema: String, _ c: PostgresConnection) throws -> [String] {
        try c.query("""
            SELECT ap.album_id FROM \(schema).album_photos ap
            WHERE ap.file_id = $1 AND ap.present
                AND NOT EXISTS (SELECT 1 FROM \(schema).albums a WHERE a.album_id = ap.album_id AND a.deleted)
            ORDER BY ap.album_id
            """, [.text(uuid(file) ?? file)]).map { try $0.decode("album_id", as: String.self) }
    }

    /// The albums holding `file`; when none is known yet, waits up to
    /// ``MediaConfiguration/placementWait`` for album's `album.photo_added` to be applied
    /// (by this replica or another: the table is polled). Empty when none came, or when the
    /// file was deleted meanwhile (album places a deleted file nowhere; the commit finds the
    /// tombstone).
    func awaitPlacement(_ file: String) async throws -> [String] {
        let (schema, postgres) = (self.schema, runtime.postgres)
        func look() async throws -> (albums: [String], deleted: Bool) {
            try await postgres.withConnection { c in
                (albums: try Self.albumsHolding(file, schema, c), deleted: try Self.hasTombstone(file, schema, c))
            }
        }
        let deadline = ContinuousClock.now + configuration.placementWait
        var seen = try await look()
        while seen.albums.isEmpty && !seen.deleted && ContinuousClock.now < deadline && !Task.isCancelled {
            try await Task.sleep(for: .milliseconds(25))
            seen = try await look()
        }
        return seen.albums
    }

    /// The screens of the frames (not deleted) showing any of `albums`, by frame id.
    func screens(showing albums: [String]) async throws -> [FrameScreen] {
        guard !albums.isEmpty else { return [] }
        let rows = try await runtime.postgres.query("""
            SELECT frame_id, width, height, format FROM \(schema).frame_screens
            WHERE NOT deleted AND album_ids && string_to_array($1, ',') ORDER BY frame_id
            """, [.text(albums.joined(separator: ","))])
        return try rows.map { row in
            FrameScreen(frameID: try row.decode("frame_id"), width: try row.decode("width"), height: try row.decode("height"),
                        format: try row.decode("format"))
        }
    }

    /// Queues (render_jobs) the `frame:{W}x{H}` versions `file` lacks for the screens of the
    /// frames showing any of `albums`; nothing for a photo media has not rendered yet (its
    /// upload renders them). Returns how many were queued.
    static func queueFrameVersions(file: String, albums: [String], _ schema: String, _ c: PostgresConnection) throws -> Int {
        guard !albums.isEmpty else { return 0 }
        return try c.execute("""
            INSERT INTO \(schema).render_jobs (file_id, size, format, width, height, priority)
            SELECT DISTINCT m.file_id, 'frame:' || s.width || 'x' || s.height, s.format, s.width, s.height,
                (extract(epoch FROM m.created_at) * 1000)::bigint
            FROM \(schema).photo_metadata m
            JOIN \(schema).frame_screens s ON NOT s.deleted AND s.album_ids && string_to_array($2, ',')
                AND s.width BETWEEN $3 AND $4 AND s.height BETWEEN $3 AND $4
            WHERE m.file_id = $1 AND NOT EXISTS (
                SELECT 1 FROM \(schema).photo_versions v
                WHERE v.file_id = m.file_id AND v.size = 'frame:' || s.width || 'x' || s.height AND v.format = s.format)
            ON CONFLICT (file_id, size, format) DO NOTHING
            """, [.text(file), .text(albums.joined(separator: ",")), .int(Int64(frameSides.lowerBound)),
                  .int(Int64(frameSides.upperBound))])
    }

    // MARK: media.cache_ready

    /// Sends the photo's `media.cache_ready` when it is due (`cache_ready_due`) and may go now:
    /// an album holding it is known and none of its versions is queued. In the caller's
    /// transaction (hold the file's lock, or be the commit of its versions). Returns whether it
    /// was sent.
    static func announceIfDue(_ file: String, _ schema: String, _ c: PostgresConnection) throws -> Bool {
        // Locked: of two transactions getting here at once, the second finds it sent.
        guard let row = try c.query("SELECT user_id FROM \(schema).photo_metadata WHERE file_id = $1 AND cache_ready_due FOR UPDATE",
                                    [.text(file)]).first else { return false }
        let albums = try albumsHolding(file, schema, c)
        guard !albums.isEmpty,
              try c.query("SELECT 1 FROM \(schema).render_jobs WHERE file_id = $1 LIMIT 1", [.text(file)]).isEmpty else { return false }
        let frames = try c.query("""
            SELECT s.frame_id FROM \(schema).frame_screens s
            WHERE NOT s.deleted AND s.album_ids && string_to_array($2, ',') AND EXISTS (
                SELECT 1 FROM \(schema).photo_versions v
                WHERE v.file_id = $1 AND v.size = 'frame:' || s.width || 'x' || s.height AND v.format = s.format)
            ORDER BY s.frame_id
            """, [.text(file), .text(albums.joined(separator: ","))]).map { try $0.decode("frame_id", as: String.self) }
        try Outbox.enqueue(MediaCacheReady(eventID: newID(), occurredAt: EventTime.now(), userID: try row.decode("user_id"),
                                           fileID: file, versions: try storedVersions(file, schema, c), frameIDs: frames,
                                           albumIDs: albums), schema: schema, on: c)
        _ = try c.execute("UPDATE \(schema).photo_metadata SET cache_ready_due = false WHERE file_id = $1", [.text(file)])
        return true
    }

    // MARK: Access

    /// Whether `principal` may see `file`: a user who is a member of an album holding it (its
    /// owner is checked by the caller, from the photo's metadata), a frame that shows such an
    /// album now. From media's copy of album's state; `grace`: a denial is confirmed by
    /// checking again for up to ``MediaConfiguration/accessGrace``.
    func mayView(_ file: String, _ principal: Principal, grace: Bool) async throws -> Bool {
        let (schema, postgres) = (self.schema, runtime.postgres)
        let fileID = Self.uuid(file) ?? file
        let check: @Sendable () async throws -> Bool
        switch principal.kind {
        case .frame:
            guard let frame = Self.uuid(principal.id) else { return false }
            check = {
                try await !postgres.query("""
                    SELECT 1 FROM \(schema).frame_screens s
                    JOIN \(schema).album_photos ap ON ap.album_id = ANY(s.album_ids) AND ap.present
                    WHERE s.frame_id = $1 AND NOT s.deleted AND ap.file_id = $2 LIMIT 1
                    """, [.text(frame), .text(fileID)]).isEmpty
            }
        case .user:
            guard !principal.id.isEmpty else { return false }
            let user = principal.id
            check = {
                try await !postgres.query("""
                    SELECT 1 FROM \(schema).photo_metadata WHERE file_id = $1 AND user_id = $2
                    UNION ALL
                    SELECT 1 FROM \(schema).album_photos ap JOIN \(schema).album_members m ON m.album_id = ap.album_id
                    WHERE ap.file_id = $3 AND ap.present AND m.user_id = $2
                    LIMIT 1
                    """, [.text(file), .text(user), .text(fileID)]).isEmpty
            }
        default:
            return false
        }
        return try await confirmed(check, grace: grace)
    }

    /// Whether the user is a member of the album (any role; not for an album unknown or
    /// deleted); `grace` as for ``mayView(_:_:grace:)``.
    func isMember(_ user: String, of album: String, grace: Bool) async throws -> Bool {
        guard let id = Self.uuid(album), !user.isEmpty else { return false }
        let (schema, postgres) = (self.schema, runtime.postgres)
        return try await confirmed({
            try await !postgres.query("SELECT 1 FROM \(schema).album_members WHERE album_id = $1 AND user_id = $2",
                                      [.text(id), .text(user)]).isEmpty
        }, grace: grace)
    }

    /// Whether `user` owns the frame (not deleted), from device.albums_changed;
    /// `grace` as for ``mayView(_:_:grace:)`` (a frame registered an instant ago).
    func ownsFrame(_ frame: String, user: String, grace: Bool) async throws -> Bool {
        let (schema, postgres) = (self.schema, runtime.postgres)
        return try await confirmed({
            try await !postgres.query("SELECT 1 FROM \(schema).frame_screens WHERE frame_id = $1 AND owner_id = $2 AND NOT deleted",
                                      [.text(frame), .text(user)]).isEmpty
        }, grace: grace)
    }

    /// `check()`, and when it says no and `grace` is set, again every 100 ms until it says yes
    /// or ``MediaConfiguration/accessGrace`` is over: media's copy follows album's events a
    /// few milliseconds behind, so a grant album has just committed is honoured.
    func confirmed(_ check: @Sendable () async throws -> Bool, grace: Bool) async throws -> Bool {
        if try await check() { return true }
        guard grace else { return false }
        let deadline = ContinuousClock.now + configuration.accessGrace
        while ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            if try await check() { return true }
        }
        return false
    }

    /// The stored name of a role; nil for none.
    static func roleName(_ role: Role) -> String? {
        switch role {
        case .owner: "owner"
        case .contributor: "contributor"
        case .viewer: "viewer"
        default: nil
        }
    }
}
