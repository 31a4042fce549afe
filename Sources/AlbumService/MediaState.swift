import Foundation
import Logging
import Postgres
import ServiceKit
import ServiceLifecycle
import Wire

// What album tells the other services about its state, so that none of them has to ask it at
// run time (event-carried state transfer, DESIGN.md "Wire contract"): media keeps its own copy
// of each album's members (album.members_changed, album.deleted), of which albums hold each
// photo (album.photo_added / album.photo_removed) and of each frame's owner, screen and albums
// (device.albums_changed, device.deleted), and answers access checks and renders from it.
//
// Every such event carries a revision so a consumer applies only newer state: the events of
// one album, photo or frame arrive on separate durable consumers (one per subject), so their
// order is not guaranteed.
//
// `Republisher` publishes the whole state once (the `republish` table says which parts are
// still due), for consumers whose copy must include what existed before they kept one.

extension AlbumService {
    /// Enqueues `album.members_changed` with the album's members now, in the caller's
    /// transaction, after its member change. The album row is locked first (its revision
    /// grows), so concurrent changes of one album are serialised and the event with the higher
    /// revision lists the later state. Nothing for an album that is gone.
    static func enqueueMembersChanged(album: String, by user: String, _ schema: String, _ c: PostgresConnection) throws {
        guard let row = try c.query("""
            UPDATE \(schema).albums SET members_revision = members_revision + 1 WHERE album_id = $1::uuid
            RETURNING owner_id, members_revision
            """, [.text(album)]).first else { return }
        // A statement after the lock: it sees every change committed before ours.
        let members = try c.query("""
            SELECT user_id, role FROM \(schema).album_members WHERE album_id = $1::uuid
            ORDER BY role <> 'owner', added_at, user_id
            """, [.text(album)]).map { member in
            AlbumMemberRole(userID: try member.decode("user_id"), role: wireRole(try member.decode("role")))
        }
        try Outbox.enqueue(AlbumMembersChanged(
            eventID: newID(), occurredAt: EventTime.now(), userID: user, albumID: album, ownerID: try row.decode("owner_id"),
            members: members, revision: try row.decode("members_revision")), schema: schema, on: c)
    }

    /// The next revision of an (album, photo) pair's membership, taken after the row was
    /// inserted or deleted in the caller's transaction: a later change of the same pair waits
    /// for that row's lock, so it takes a higher one.
    static func photoRevision(_ schema: String, _ c: PostgresConnection) throws -> Int64 {
        guard let row = try c.query("SELECT nextval('\(schema).photo_revisions') AS revision").first else {
            throw ServiceError.internal("the photo revision sequence answered nothing")
        }
        return try row.decode("revision")
    }

    // MARK: Republishing the state

    /// What one republish batch covers (rows per transaction).
    static let republishSizes = (members: 100, photos: 500, frames: 20)

    /// Runs one batch of `step` ("members", "photos" or "frames") in one transaction: the
    /// step's row is locked (another replica doing the same waits, then continues after the
    /// batch committed here), the events of up to a batch of rows after its cursor are enqueued
    /// and the cursor moves past them; the step's row goes when nothing is left. Returns how
    /// many events were enqueued, nil when the step is not due.
    static func republishBatch(_ step: String, _ schema: String, _ c: PostgresConnection) throws -> Int? {
        guard let due = try c.query("SELECT after_key FROM \(schema).republish WHERE step = $1 FOR UPDATE", [.text(step)]).first else {
            return nil
        }
        let after: String = try due.decode("after_key")
        var last: String?
        var count = 0
        switch step {
        case "members":
            let albums = try c.query("""
                SELECT album_id::text AS id FROM \(schema).albums WHERE album_id::text > $1 ORDER BY album_id::text LIMIT $2
                """, [.text(after), .int(Int64(republishSizes.members))]).map { try $0.decode("id", as: String.self) }
            for album in albums { try enqueueMembersChanged(album: album, by: "", schema, c) }
            (last, count) = (albums.last, albums.count)
            if albums.count < republishSizes.members { last = nil }
        case "photos":
            // Locked (FOR SHARE), so a removal of one of these waits for this batch and then
            // takes a higher revision than the one republished here.
            let rows = try c.query("""
                SELECT \(photoColumns), ap.album_id::text || '/' || ap.file_id::text AS key
                FROM \(schema).album_photos ap JOIN \(schema).photos p ON p.file_id = ap.file_id
                WHERE ap.album_id::text || '/' || ap.file_id::text > $1
                ORDER BY key LIMIT $2 FOR SHARE OF ap
                """, [.text(after), .int(Int64(republishSizes.photos))])
            for row in rows {
                let photo = try albumPhoto(row)
                try Outbox.enqueue(AlbumPhotoAdded(eventID: newID(), occurredAt: EventTime.now(), userID: photo.addedBy, photo: photo,
                                                   revision: try photoRevision(schema, c)), schema: schema, on: c)
            }
            last = try rows.last?.decode("key", as: String.self)
            count = rows.count
            if rows.count < republishSizes.photos { last = nil }
        case "frames":
            let frames = try c.query("""
                SELECT frame_id::text AS id FROM \(schema).frames WHERE frame_id::text > $1 ORDER BY frame_id::text LIMIT $2
                """, [.text(after), .int(Int64(republishSizes.frames))]).map { try $0.decode("id", as: String.self) }
            for frame in frames { try enqueueAlbumsChanged(frame: frame, schema, c) }
            (last, count) = (frames.last, frames.count)
            if frames.count < republishSizes.frames { last = nil }
        default:
            _ = try c.execute("DELETE FROM \(schema).republish WHERE step = $1", [.text(step)])
            return 0
        }
        if let last {
            _ = try c.execute("UPDATE \(schema).republish SET after_key = $2 WHERE step = $1", [.text(step), .text(last)])
        } else {
            _ = try c.execute("DELETE FROM \(schema).republish WHERE step = $1", [.text(step)])
        }
        return count
    }
}

/// Publishes album's state once for the consumers that keep a copy of it (media): for every
/// album `album.members_changed`, for every album photo `album.photo_added`, for every frame
/// `device.albums_changed` — each with a new revision, so it never undoes a newer change.
///
/// What is due is in the `republish` table (one row per step, with a cursor): the migration
/// that introduced media's copy queued the steps for a database that already held data (a new
/// one has nothing to republish). An operator may queue them again at any time:
/// `INSERT INTO album.republish (step) VALUES ('members'), ('photos'), ('frames') ON CONFLICT DO NOTHING`
/// (consumers apply state idempotently, so republishing is always safe).
///
/// Runs at start, in the background, in batches of one transaction each (events and cursor
/// commit together, so a crash repeats at most nothing). Every replica runs it: the step's row
/// is locked per batch, so replicas take turns batch by batch and no row is republished twice;
/// the step's row goes when its last batch commits. A failed batch is retried with back-off.
final class Republisher: Service, Sendable {
    let postgres: PostgresPool
    let schema: String
    let relay: OutboxRelay
    let logger: Logger

    init(postgres: PostgresPool, schema: String, relay: OutboxRelay, logger: Logger) {
        self.postgres = postgres
        self.schema = schema
        self.relay = relay
        self.logger = logger
    }

    func run() async throws {
        let schema = self.schema
        var failures = 0
        steps: for step in ["members", "photos", "frames"] {
            var total = 0
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                do {
                    let done: Int? = try await postgres.withTransaction { c in try AlbumService.republishBatch(step, schema, c) }
                    failures = 0
                    guard let done else {
                        if total > 0 { logger.info("album state republished", metadata: ["republish.step": "\(step)", "events": "\(total)"]) }
                        continue steps
                    }
                    total += done
                    relay.wake()
                } catch {
                    failures += 1
                    logger.warning("republishing album state failed; will retry", metadata: [
                        "republish.step": "\(step)", "error": "\(error)", "attempt": "\(failures)"])
                    let delay = Duration.milliseconds(min(30_000, 500 * (1 << min(failures, 6))))
                    try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
                }
            }
            break
        }
        // Nothing more to do; stay up (a returning service would stop the group).
        try? await gracefulShutdown()
    }
}
