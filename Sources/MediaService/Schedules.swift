import BlobStore
import Foundation
import Postgres
import ServiceKit
import Wire

// Rotation schedules: per frame, slots of what to show when (days, active hours, interval,
// a playlist or an album or the frame's own albums). Only the frame's owner reads or writes
// one (media knows frames' owners from device.albums_changed; anyone else: not_found). Every
// change commits, in the same transaction, `media.schedule_changed` with a new revision; album
// merges it into the frame's retained `frames/{id}/config`.

extension MediaService {
    static let noSchedule = ServiceError.notFound("the frame has no schedule")
    /// Most slots in one frame's schedule.
    static let maxScheduleEntries = 24
    static let intervalRange: ClosedRange<Int32> = 5...86_400

    func getSchedule(_ request: GetScheduleRequest) async throws -> ScheduleReply {
        let user = try Input.user(request.userID)
        let frame = try await ownedFrame(request.frameID, user: user)
        let schema = self.schema
        let schedule = try await runtime.postgres.withConnection { c in try Self.schedule(frame, owner: user, schema, c) }
        return ScheduleReply(schedule: schedule)
    }

    /// Replaces the frame's schedule (1…``maxScheduleEntries`` slots).
    func setSchedule(_ request: SetScheduleRequest) async throws -> ScheduleReply {
        let user = try Input.user(request.userID)
        guard (1...Self.maxScheduleEntries).contains(request.entries.count) else {
            throw ServiceError.invalid("a schedule has 1…\(Self.maxScheduleEntries) entries (delete it to have none)")
        }
        let entries = try request.entries.map(Self.validate)
        let frame = try await ownedFrame(request.frameID, user: user)
        for id in Set(entries.map(\.albumID).filter { !$0.isEmpty }) {
            guard try await isMember(user, of: id, grace: true) else { throw ServiceError.notFound("no such album") }
        }
        let schema = self.schema
        let schedule: RotationSchedule = try await runtime.postgres.withTransaction { c in
            try c.advisoryTransactionLock("media-schedule:" + frame)
            for id in Set(entries.map(\.playlistID).filter { !$0.isEmpty }) {
                // Locked, so a concurrent delete of the playlist waits for this schedule (and then refuses).
                guard try !c.query("SELECT 1 FROM \(schema).playlists WHERE playlist_id = $1::uuid AND owner_id = $2 FOR SHARE",
                                   [.text(id), .text(user)]).isEmpty else { throw Self.noPlaylist }
            }
            let revision = try Self.nextRevision(schema, c)
            _ = try c.execute("DELETE FROM \(schema).rotation_schedules WHERE frame_id = $1::uuid", [.text(frame)])
            for (position, entry) in entries.enumerated() {
                _ = try c.execute("""
                    INSERT INTO \(schema).rotation_schedules (frame_id, position, owner_id, playlist_id, album_id, days_of_week,
                        start_time, end_time, interval_seconds, shuffle, revision)
                    VALUES ($1::uuid, $2, $3, nullif($4, '')::uuid, nullif($5, '')::uuid, string_to_array($6, ',')::integer[],
                        $7, $8, $9, $10, $11)
                    """, [.text(frame), .int(Int64(position)), .text(user), .text(entry.playlistID), .text(entry.albumID),
                          .text(entry.daysOfWeek.map(String.init).joined(separator: ",")), .text(entry.startTime),
                          .text(entry.endTime), .int(Int64(entry.intervalSeconds)), .bool(entry.shuffle), .int(revision)])
            }
            let schedule = try Self.schedule(frame, owner: user, schema, c)
            try Outbox.enqueue(MediaScheduleChanged(eventID: Self.newID(), occurredAt: EventTime.now(), userID: user, frameID: frame,
                                                    schedule: schedule, revision: revision), schema: schema, on: c)
            return schedule
        }
        relay.wake()
        logger.info("frame schedule set", metadata: ["frame.id": "\(frame)", "schedule.entries": "\(entries.count)"])
        return ScheduleReply(schedule: schedule)
    }

    func deleteSchedule(_ request: DeleteScheduleRequest) async throws -> Empty {
        let user = try Input.user(request.userID)
        let frame = try await ownedFrame(request.frameID, user: user)
        let schema = self.schema
        try await runtime.postgres.withTransaction { c in
            try c.advisoryTransactionLock("media-schedule:" + frame)
            guard try c.execute("DELETE FROM \(schema).rotation_schedules WHERE frame_id = $1::uuid", [.text(frame)]) > 0 else {
                throw Self.noSchedule
            }
            try Outbox.enqueue(MediaScheduleChanged(eventID: Self.newID(), occurredAt: EventTime.now(), userID: user, frameID: frame,
                                                    schedule: RotationSchedule(frameID: frame, ownerID: user),
                                                    revision: try Self.nextRevision(schema, c)), schema: schema, on: c)
        }
        relay.wake()
        logger.info("frame schedule deleted", metadata: ["frame.id": "\(frame)"])
        return Empty()
    }

    /// `device.deleted`: the frame's schedule goes with it (album already cleared its topics),
    /// and so do its cache rows and the `frame:` versions no other frame needs, with their
    /// blobs when nothing else references them (Renders.swift, ``forgetFrame(_:event:_:_:)``).
    func deviceDeleted(_ event: DeviceDeleted, _ delivery: EventDelivery) async throws {
        guard let frame = Self.uuid(event.frameID) else {
            delivery.logger.error("device.deleted with an invalid frame id; skipped")
            return
        }
        let (schema, references) = (self.schema, self.references)
        let outcome: (versions: Int, unreferenced: [BlobKey])? = try await delivery.transaction { c in
            _ = try c.execute("DELETE FROM \(schema).rotation_schedules WHERE frame_id = $1::uuid", [.text(frame)])
            let rows = try Self.forgetFrame(frame, event: event, schema, c)
            return (rows.count, try Self.releaseVersions(rows, references, c))
        }
        let removed = await removeUnreferenced(outcome?.unreferenced ?? [], delivery.logger)
        delivery.logger.info("frame forgotten", metadata: [
            "frame.id": "\(frame)", "versions.deleted": "\(outcome?.versions ?? 0)", "blobs.removed": "\(removed)"])
    }

    /// The frame's id (lower case) when `user` owns it (media's copy of album's frames);
    /// not_found otherwise.
    func ownedFrame(_ frameID: String, user: String) async throws -> String {
        guard let id = Self.uuid(frameID), try await ownsFrame(id, user: user, grace: true) else {
            throw ServiceError.notFound("no such frame")
        }
        return id
    }

    /// One slot checked and normalised: interval 5 s…24 h; days 0…6, each once, sorted;
    /// start and end both "HH:MM" (00:00…23:59) and different, or both empty (all day); at
    /// most one of playlist_id / album_id, each a UUID.
    static func validate(_ entry: ScheduleEntry) throws -> ScheduleEntry {
        var entry = entry
        guard intervalRange.contains(entry.intervalSeconds) else {
            throw ServiceError.invalid("interval_seconds must be \(intervalRange.lowerBound)…\(intervalRange.upperBound)")
        }
        guard entry.daysOfWeek.allSatisfy({ (0...6).contains($0) }) else { throw ServiceError.invalid("days must be mon…sun") }
        entry.daysOfWeek = Array(Set(entry.daysOfWeek)).sorted()
        let clock = /^([01][0-9]|2[0-3]):[0-5][0-9]$/
        for (value, field) in [(entry.startTime, "start_time"), (entry.endTime, "end_time")] where !value.isEmpty {
            guard value.wholeMatch(of: clock) != nil else { throw ServiceError.invalid("\(field) must be HH:MM, hours 00…23") }
        }
        guard entry.startTime.isEmpty == entry.endTime.isEmpty else {
            throw ServiceError.invalid("start_time and end_time are set together")
        }
        guard entry.startTime.isEmpty || entry.startTime != entry.endTime else {
            throw ServiceError.invalid("start_time and end_time must differ (leave both out for all day)")
        }
        guard entry.playlistID.isEmpty || entry.albumID.isEmpty else {
            throw ServiceError.invalid("an entry plays a playlist or an album, not both")
        }
        if !entry.playlistID.isEmpty {
            guard let id = uuid(entry.playlistID) else { throw ServiceError.invalid("playlist_id is not a valid id") }
            entry.playlistID = id
        }
        if !entry.albumID.isEmpty {
            guard let id = uuid(entry.albumID) else { throw ServiceError.invalid("album_id is not a valid id") }
            entry.albumID = id
        }
        return entry
    }

    static func nextRevision(_ schema: String, _ c: PostgresConnection) throws -> Int64 {
        try c.query("SELECT nextval('\(schema).schedule_revisions') AS revision")[0].decode("revision")
    }

    /// The frame's schedule as stored (no entries when it has none).
    static func schedule(_ frame: String, owner: String, _ schema: String, _ c: PostgresConnection) throws -> RotationSchedule {
        let rows = try c.query("""
            SELECT coalesce(playlist_id::text, '') AS playlist_id, coalesce(album_id::text, '') AS album_id,
                array_to_string(days_of_week, ',') AS days, start_time, end_time, interval_seconds, shuffle,
                (extract(epoch FROM updated_at) * 1000)::bigint AS updated_ms
            FROM \(schema).rotation_schedules WHERE frame_id = $1::uuid AND owner_id = $2 ORDER BY position
            """, [.text(frame), .text(owner)])
        let entries = try rows.map { row in
            ScheduleEntry(
                playlistID: try row.decode("playlist_id"), albumID: try row.decode("album_id"),
                daysOfWeek: try row.decode("days", as: String.self).split(separator: ",").compactMap { Int32($0) },
                startTime: try row.decode("start_time"), endTime: try row.decode("end_time"),
                intervalSeconds: try row.decode("interval_seconds"), shuffle: try row.decode("shuffle"))
        }
        return RotationSchedule(frameID: frame, ownerID: owner, entries: entries,
                                updatedAt: try rows.first?.decode("updated_ms", as: Int64.self) ?? 0)
    }
}
