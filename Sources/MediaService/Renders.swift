import BlobStore
import Foundation
import Imaging
import Logging
import Metrics
import Postgres
import ServiceKit
import ServiceLifecycle
import Threads
import Wire

// Versions rendered after the upload: for a screen that appears later (background, from the
// `render_jobs` queue) and on request (GetVersion of a valid size not rendered yet).
//
// * One render per version: in this process a version being rendered is awaited by every
//   other request for it (`inflight`); across replicas the `render_jobs` row with a lease is
//   the claim, and whoever finds it leased waits for the version row to appear.
// * One decode per photo: every missing version of a photo claimed together is rendered from
//   one decode on Imaging's bounded pool; the background queue runs at most
//   `MediaConfiguration.backgroundRenders` photos at once, newest photo first.
// * A commit stores the version rows and `media.version_created` (one per new version) and
//   deletes their jobs, in one transaction.

extension MediaService {
    /// Sides a `frame:{W}x{H}` version may have (on request, for new screens and at upload).
    static let frameSides = 16...8192
    /// How long a claim on a version lasts before another replica may render it.
    static let renderLease = 60
    /// Background attempts of a version before it is given up (`media.version_failed`).
    static let maxRenderAttempts = 3

    // MARK: Sizes

    /// The version a `size` (and `format`) names, validated: `thumbnail` and `hd` (JPEG), or
    /// `frame:{W}x{H}` with both sides in ``frameSides`` (JPEG, or WebP when asked). Anything
    /// else is invalid. (`original` is not rendered and is handled before.)
    static func requestedVersion(size: String, format: String) throws -> Wanted {
        let format = format.lowercased()
        switch size {
        case "thumbnail", "hd":
            guard format.isEmpty || format == "jpeg" else { throw ServiceError.invalid("\(size) is rendered as jpeg only") }
            return size == "hd" ? Wanted(size: "hd", spec: .fit(1920, 1080)) : Wanted(size: "thumbnail", spec: .fit(300, 300))
        default:
            guard let match = size.wholeMatch(of: /frame:([0-9]{1,5})x([0-9]{1,5})/),
                  let width = Int(match.1), let height = Int(match.2) else {
                throw ServiceError.invalid("size must be original, thumbnail, hd or frame:{W}x{H}")
            }
            guard frameSides.contains(width), frameSides.contains(height) else {
                throw ServiceError.invalid("a frame size must be \(frameSides.lowerBound)…\(frameSides.upperBound) pixels on each side")
            }
            guard ["", "jpeg", "webp"].contains(format) else { throw ServiceError.invalid("format must be jpeg or webp") }
            return frameVersion(width: width, height: height, format: format)
        }
    }

    /// `frame:{W}x{H}` filling the screen (attention crop), JPEG or cheap WebP.
    static func frameVersion(width: Int, height: Int, format: String) -> Wanted {
        Wanted(size: "frame:\(width)x\(height)",
               spec: .cover(width, height, format == "webp" ? .webp(quality: 80, effort: 2) : .jpeg()))
    }

    static func inflightKey(_ fileID: String, _ wanted: Wanted) -> String {
        "\(fileID)|\(wanted.size)|\(wanted.spec.encoding.format.rawValue)"
    }

    // MARK: Single flight

    /// The versions `wanted` of `fileID`, each rendered at most once: a version this process
    /// is rendering already is awaited; the others are rendered together from one decode.
    /// `claimed`: the caller holds their `render_jobs` leases (the background queue);
    /// otherwise they are claimed first, or awaited when another replica holds them.
    func renderShared(_ fileID: String, _ wanted: [Wanted], claimed: Bool) async throws -> [PhotoVersion] {
        let keys = wanted.map { Self.inflightKey(fileID, $0) }
        // Unstructured tasks, so a version's render outlives a cancelled requester while others
        // wait for it; each is awaited by its requesters and removes itself when done.
        let tasks: [Task<PhotoVersion?, any Error>] = inflight.withLock { map in
            var mine: [Wanted] = []
            for (index, item) in wanted.enumerated() where map[keys[index]] == nil { mine.append(item) }
            if !mine.isEmpty {
                let batch = Task { try await self.renderMissing(fileID, mine, claimed: claimed) }
                for item in mine {
                    let key = Self.inflightKey(fileID, item)
                    map[key] = Task {
                        defer { _ = self.inflight.withLock { $0.removeValue(forKey: key) } }
                        let versions = try await batch.value
                        return versions.first { $0.size == item.size && $0.format == item.spec.encoding.format.rawValue }
                    }
                }
            }
            return keys.compactMap { map[$0] }
        }
        var versions: [PhotoVersion] = []
        for task in tasks {
            if let version = try await task.value { versions.append(version) }
        }
        return versions
    }

    /// Renders the versions of `fileID` that do not exist yet, from one decode, and commits
    /// them; returns every wanted version that exists afterwards. Throws not_found when the
    /// photo is unknown or was deleted meanwhile, `ImagingError` when it cannot be rendered.
    func renderMissing(_ fileID: String, _ wanted: [Wanted], claimed: Bool) async throws -> [PhotoVersion] {
        let (schema, postgres) = (self.schema, runtime.postgres)
        guard let row = try await postgres.query("""
            SELECT user_id, original_blob_key, (extract(epoch FROM created_at) * 1000)::bigint AS created_ms
            FROM \(schema).photo_metadata m WHERE file_id = $1
                AND NOT EXISTS (SELECT 1 FROM \(schema).deleted_files d WHERE d.file_id = m.file_id)
            """, [.text(fileID)]).first else { throw ServiceError.notFound("no such photo") }
        let owner: String = try row.decode("user_id")
        let priority: Int64 = try row.decode("created_ms")
        guard let originalKey = BlobKey(try row.decode("original_blob_key", as: String.self)) else {
            throw ImagingError(.corrupt, "the original's blob key is invalid")
        }

        // Claim what is missing and render it; what another replica claimed is awaited (and
        // claimed in turn if its lease runs out first).
        let deadline = ContinuousClock.now + .seconds(Self.renderLease + 5)
        var pending = try await absent(fileID, wanted)
        if claimed && pending.count < wanted.count {
            // Rendered meanwhile (on request, or at upload): those jobs are done.
            try await dropJobs(fileID, wanted.filter { item in !pending.contains { $0.size == item.size && $0.spec == item.spec } },
                               failure: nil)
        }
        while !pending.isEmpty {
            var mine = claimed ? pending : try await claim(fileID, pending, priority: priority)
            if !claimed && !mine.isEmpty {
                // Committed by another replica between our look and our claim (its commit
                // removed its claim): look again now the claim is ours, release what exists.
                let missing = try await absent(fileID, mine)
                if missing.count < mine.count {
                    try await dropJobs(fileID, mine.filter { item in !missing.contains { $0.size == item.size && $0.spec == item.spec } },
                                       failure: nil)
                }
                mine = missing
            }
            if !mine.isEmpty { try await render(fileID, mine, owner: owner, original: originalKey) }
            if claimed { break }
            pending = try await absent(fileID, pending)
            if pending.isEmpty { break }
            guard ContinuousClock.now < deadline else { throw ServiceError.unavailable("the version is still being rendered") }
            // Deleted while another replica rendered it: it will never appear.
            if try await isDeleted(fileID) { throw ServiceError.notFound("no such photo") }
            try await Task.sleep(for: .milliseconds(100))
        }
        let names = Set(wanted.map { "\($0.size)|\($0.spec.encoding.format.rawValue)" })
        return try await storedVersions(fileID).filter { names.contains("\($0.size)|\($0.format)") }
    }

    /// The wanted versions without a row.
    func absent(_ fileID: String, _ wanted: [Wanted]) async throws -> [Wanted] {
        let stored = Set(try await storedVersions(fileID).map { "\($0.size)|\($0.format)" })
        return wanted.filter { !stored.contains("\($0.size)|\($0.spec.encoding.format.rawValue)") }
    }

    /// Claims the versions' `render_jobs` rows (new, or with an expired lease: another
    /// replica's claim otherwise) and returns the claimed ones.
    func claim(_ fileID: String, _ wanted: [Wanted], priority: Int64) async throws -> [Wanted] {
        let (schema, lease) = (self.schema, Self.renderLease)
        let claimed: [Bool] = try await runtime.postgres.withTransaction { c in
            try wanted.map { item in
                try !c.query("""
                    INSERT INTO \(schema).render_jobs (file_id, size, format, width, height, priority, attempts, lease_until)
                    VALUES ($1, $2, $3, $4, $5, $6, 1, clock_timestamp() + make_interval(secs => $7))
                    ON CONFLICT (file_id, size, format) DO UPDATE
                        SET lease_until = EXCLUDED.lease_until, attempts = \(schema).render_jobs.attempts + 1
                        WHERE \(schema).render_jobs.lease_until IS NULL OR \(schema).render_jobs.lease_until < clock_timestamp()
                    RETURNING 1
                    """, [.text(fileID), .text(item.size), .text(item.spec.encoding.format.rawValue),
                          .int(Int64(item.spec.width)), .int(Int64(item.spec.height)), .int(priority), .int(Int64(lease))]).isEmpty
            }
        }
        return zip(wanted, claimed).filter(\.1).map(\.0)
    }

    /// Decodes the original once, renders `wanted`, stores the blobs, commits the rows, their
    /// `media.version_created` and the removal of their jobs.
    func render(_ fileID: String, _ wanted: [Wanted], owner: String, original: BlobKey) async throws {
        let start = ContinuousClock.now
        renderCount.withLock { $0 += 1 }
        let rendered = try await Self.render(file: blobs.path(for: original), versions: wanted, imaging: imaging)
        let elapsed = ContinuousClock.now - start
        let now = EventTime.now()
        let versions = try await store(rendered, wanted, fileID: fileID, at: now)
        let (schema, references) = (self.schema, self.references)
        let outcome: (created: Int, unused: [BlobKey])?
        do {
            outcome = try await runtime.postgres.withTransaction { c in
                try Self.lockFile(fileID, c)
                // Deleted while rendering (tombstone), or never known: store nothing, drop the
                // file's queued jobs (the blobs are removed below).
                guard try !Self.hasTombstone(fileID, schema, c),
                      try !c.query("SELECT 1 FROM \(schema).photo_metadata WHERE file_id = $1", [.text(fileID)]).isEmpty else {
                    _ = try c.execute("DELETE FROM \(schema).render_jobs WHERE file_id = $1", [.text(fileID)])
                    return nil
                }
                var created = 0
                var added: [(key: BlobKey, ref: String)] = [], unused: [BlobKey] = []
                for version in versions {
                    let inserted = try c.execute("""
                        INSERT INTO \(schema).photo_versions (file_id, size, width, height, bytes, format, content_type, blob_key)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (file_id, size, format) DO NOTHING
                        """, [.text(fileID), .text(version.size), .int(Int64(version.width)), .int(Int64(version.height)),
                              .int(version.byteSize), .text(version.format), .text(version.contentType), .text(version.blobKey)])
                    _ = try c.execute("DELETE FROM \(schema).render_jobs WHERE file_id = $1 AND size = $2 AND format = $3",
                                      [.text(fileID), .text(version.size), .text(version.format)])
                    guard inserted == 1, let key = BlobKey(version.blobKey) else {
                        // Stored by someone else meanwhile: this render's blob may be nobody's.
                        if let key = BlobKey(version.blobKey) { unused.append(key) }
                        continue
                    }
                    added.append((key, Self.versionReference(fileID: fileID, size: version.size, format: version.format)))
                    created += 1
                    try Outbox.enqueue(MediaVersionCreated(eventID: Self.newID(), occurredAt: now, userID: owner, version: version),
                                       schema: schema, on: c)
                }
                // Each new version's reference to its blob, under the blobs' locks.
                try references.add(added, owner: .media, on: c)
                // The last of the photo's queued versions its media.cache_ready waited for.
                _ = try Self.announceIfDue(fileID, schema, c)
                return (created, unused)
            }
        } catch let error as BlobStoreError where error.code == .notFound {
            // A blob was removed between its write and this commit (its last other reference
            // went meanwhile): nothing was stored; the next try writes it again.
            throw ServiceError.unavailable("a rendered version was removed before it was stored; try again")
        }
        guard let outcome else {
            _ = await removeUnreferenced(versions.compactMap { BlobKey($0.blobKey) }, logger)
            throw ServiceError.notFound("no such photo")
        }
        let created = outcome.created
        if !outcome.unused.isEmpty { _ = await removeUnreferenced(outcome.unused, logger) }
        relay.wake()
        Metrics.Timer(label: "media_render_seconds").recordNanoseconds(Int64(elapsed.components.seconds) * 1_000_000_000
                                                                       + elapsed.components.attoseconds / 1_000_000_000)
        Counter(label: "media_renders_total", dimensions: [("outcome", "rendered_later")]).increment()
        logger.info("versions rendered after upload", metadata: [
            "file.id": "\(fileID)", "versions": "\(versions.map(\.size).joined(separator: ","))",
            "versions.created": "\(created)", "render.ms": "\(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)",
        ])
    }

    // MARK: Background queue

    /// One photo's claimed jobs.
    struct ClaimedJobs: Sendable {
        var fileID: String
        var wanted: [Wanted]
        var attempts: Int
    }

    /// Claims every due job of the due photo that is newest (lease set), or nil when none is due.
    func claimNextJobs() async throws -> ClaimedJobs? {
        let (schema, lease) = (self.schema, Self.renderLease)
        let rows = try await runtime.postgres.withTransaction { c in
            try c.query("""
                WITH top AS (
                    SELECT file_id FROM \(schema).render_jobs
                    WHERE lease_until IS NULL OR lease_until < clock_timestamp()
                    ORDER BY priority DESC, file_id LIMIT 1 FOR UPDATE SKIP LOCKED)
                UPDATE \(schema).render_jobs j
                SET lease_until = clock_timestamp() + make_interval(secs => $1), attempts = j.attempts + 1
                FROM top WHERE j.file_id = top.file_id AND (j.lease_until IS NULL OR j.lease_until < clock_timestamp())
                RETURNING j.file_id, j.size, j.format, j.width, j.height, j.attempts
                """, [.int(Int64(lease))])
        }
        guard let first = rows.first else { return nil }
        var jobs = ClaimedJobs(fileID: try first.decode("file_id"), wanted: [], attempts: 0)
        for row in rows {
            let (width, height): (Int32, Int32) = (try row.decode("width"), try row.decode("height"))
            let size: String = try row.decode("size"), format: String = try row.decode("format")
            jobs.wanted.append(size.hasPrefix("frame:")
                ? Self.frameVersion(width: Int(width), height: Int(height), format: format)
                : try Self.requestedVersion(size: size, format: format))
            jobs.attempts = max(jobs.attempts, Int(try row.decode("attempts", as: Int32.self)))
        }
        return jobs
    }

    /// Renders one photo's claimed jobs. A photo that cannot be rendered, or whose jobs failed
    /// ``maxRenderAttempts`` times, gets `media.version_failed` per version and its jobs go.
    func runJobs(_ jobs: ClaimedJobs) async {
        let fileID = jobs.fileID
        do {
            _ = try await renderShared(fileID, jobs.wanted, claimed: true)
        } catch let error as ServiceError where error.status == .notFound {
            // The photo is gone (or never reached media): nothing to render.
            try? await dropJobs(fileID, jobs.wanted, failure: nil)
        } catch let error as ImagingError where error.code != .unavailable && error.code != .io {
            try? await dropJobs(fileID, jobs.wanted, failure: "\(error.code): \(error.message)")
        } catch {
            logger.warning("rendering a queued version failed; will retry", metadata: [
                "file.id": "\(fileID)", "error": "\(error)", "attempts": "\(jobs.attempts)"])
            if jobs.attempts >= Self.maxRenderAttempts {
                try? await dropJobs(fileID, jobs.wanted, failure: "gave up after \(jobs.attempts) attempts")
            }
        }
    }

    /// Deletes the jobs; with a failure, announces `media.version_failed` for each in the same transaction.
    func dropJobs(_ fileID: String, _ wanted: [Wanted], failure: String?) async throws {
        let schema = self.schema
        if let failure {
            logger.warning("a queued version cannot be rendered", metadata: ["file.id": "\(fileID)", "error": "\(failure)"])
            Counter(label: "media_renders_total", dimensions: [("outcome", "failed")]).increment()
        }
        try await runtime.postgres.withTransaction { c in
            try Self.lockFile(fileID, c)
            let owner: String = try c.query("SELECT user_id FROM \(schema).photo_metadata WHERE file_id = $1", [.text(fileID)])
                .first?.decode("user_id") ?? ""
            for item in wanted {
                let format = item.spec.encoding.format.rawValue
                _ = try c.execute("DELETE FROM \(schema).render_jobs WHERE file_id = $1 AND size = $2 AND format = $3",
                                  [.text(fileID), .text(item.size), .text(format)])
                if let failure {
                    try Outbox.enqueue(MediaVersionFailed(eventID: Self.newID(), occurredAt: EventTime.now(), userID: owner,
                                                          fileID: fileID, size: item.size, format: format, error: failure),
                                       schema: schema, on: c)
                }
            }
            // A version that will not be rendered does not hold the photo's announcement back.
            if failure != nil { _ = try Self.announceIfDue(fileID, schema, c) }
        }
        relay.wake()
    }

    // MARK: device.albums_changed

    /// `device.albums_changed`: remembers the frame's owner, screen and albums (what it may
    /// read: ``mayView(_:_:grace:)``; an older event — lower revision, or for events without one
    /// an earlier time — or one about a deleted frame changes nothing) and queues
    /// `frame:{W}x{H}` for the listed photos media has that lack it, newest photo first. A
    /// resized frame's old screen versions that no other frame needs go. A redelivery queues
    /// nothing new.
    func albumsChanged(_ event: DeviceAlbumsChanged, _ delivery: EventDelivery) async throws {
        guard let frame = Self.uuid(event.frameID) else {
            delivery.logger.error("device.albums_changed with an invalid frame id; skipped")
            return
        }
        let (width, height) = (Int(event.width), Int(event.height))
        let format = event.format.lowercased() == "webp" ? "webp" : "jpeg"
        var files: [String] = []
        var seen = Set<String>()
        for text in event.fileIDs.prefix(10_000) {
            if let id = Self.uuid(text), seen.insert(id).inserted { files.append(id) }
        }
        let albums = event.albumIDs.prefix(100).compactMap(Self.uuid)
        let renderable = Self.frameSides.contains(width) && Self.frameSides.contains(height)
        let wanted = Self.frameVersion(width: max(1, width), height: max(1, height), format: format)
        let (schema, fileList, references) = (self.schema, files.joined(separator: ","), self.references)
        let outcome: (queued: Int, dropped: Int, unreferenced: [BlobKey])? = try await delivery.transaction { c in
            let before = try c.query("SELECT width, height, format FROM \(schema).frame_screens WHERE frame_id = $1 AND NOT deleted FOR UPDATE",
                                     [.text(frame)]).first
            let applied = try c.query("""
                INSERT INTO \(schema).frame_screens (frame_id, owner_id, width, height, format, album_ids, changed_at, revision)
                VALUES ($1, $2, $3, $4, $5, string_to_array($6, ','), $7, $8)
                ON CONFLICT (frame_id) DO UPDATE SET owner_id = EXCLUDED.owner_id, width = EXCLUDED.width,
                    height = EXCLUDED.height, format = EXCLUDED.format, album_ids = EXCLUDED.album_ids, changed_at = EXCLUDED.changed_at,
                    revision = EXCLUDED.revision
                    WHERE NOT \(schema).frame_screens.deleted AND CASE WHEN EXCLUDED.revision > 0
                        THEN \(schema).frame_screens.revision <= EXCLUDED.revision
                        ELSE \(schema).frame_screens.revision = 0 AND \(schema).frame_screens.changed_at <= EXCLUDED.changed_at END
                RETURNING 1
                """, [.text(frame), .text(event.userID), .int(Int64(width)), .int(Int64(height)), .text(format),
                      .text(albums.joined(separator: ",")), .int(event.occurredAt), .int(event.revision)])
            guard !applied.isEmpty else { return (0, 0, []) }
            // A resized (or reformatted) frame leaves its old screen: drop what nobody else needs.
            var dropped: [PostgresRow] = []
            if let before {
                let (oldWidth, oldHeight, oldFormat): (Int32, Int32, String) =
                    (try before.decode("width"), try before.decode("height"), try before.decode("format"))
                if (Int(oldWidth), Int(oldHeight), oldFormat) != (width, height, format) {
                    dropped = try Self.dropUnneededScreen(width: oldWidth, height: oldHeight, leaving: frame, schema, c)
                }
            }
            let unreferenced = try Self.releaseVersions(dropped, references, c)
            guard renderable, !fileList.isEmpty else { return (0, dropped.count, unreferenced) }
            return (try c.execute("""
                INSERT INTO \(schema).render_jobs (file_id, size, format, width, height, priority)
                SELECT m.file_id, $2, $3, $4, $5, (extract(epoch FROM m.created_at) * 1000)::bigint
                FROM \(schema).photo_metadata m
                WHERE m.file_id = ANY(string_to_array($1, ','))
                    AND NOT EXISTS (SELECT 1 FROM \(schema).photo_versions v
                                    WHERE v.file_id = m.file_id AND v.size = $2 AND v.format = $3)
                ON CONFLICT (file_id, size, format) DO NOTHING
                """, [.text(fileList), .text(wanted.size), .text(format), .int(Int64(width)), .int(Int64(height))]),
                    dropped.count, unreferenced)
        }
        let removed = await removeUnreferenced(outcome?.unreferenced ?? [], delivery.logger)
        delivery.logger.info("frame screen recorded", metadata: [
            "frame.id": "\(frame)", "screen": "\(width)x\(height)", "format": "\(format)",
            "renders.queued": "\(outcome?.queued ?? 0)", "versions.dropped": "\(outcome?.dropped ?? 0)", "blobs.removed": "\(removed)"])
        if let queued = outcome?.queued, queued > 0 { renderWake.signal() }
    }

    // MARK: device.cache_reported

    /// `device.cache_reported`: the frame has these photos; `photo_cache` records the version it
    /// has (its screen's `frame:` version when one exists, else `hd`). Reports about a deleted
    /// frame or unknown photos change nothing; a redelivery changes nothing.
    func cacheReported(_ event: DeviceCacheReported, _ delivery: EventDelivery) async throws {
        guard let frame = Self.uuid(event.frameID) else {
            delivery.logger.error("device.cache_reported with an invalid frame id; skipped")
            return
        }
        let files = Array(Set(event.fileIDs.prefix(10_000).compactMap(Self.uuid))).sorted()
        guard !files.isEmpty else { return }
        let schema = self.schema
        let recorded: Int? = try await delivery.transaction { c in
            let screen = try c.query("SELECT width, height, format, deleted FROM \(schema).frame_screens WHERE frame_id = $1",
                                     [.text(frame)]).first
            if try screen?.decode("deleted", as: Bool.self) == true { return 0 }
            var size = "", format = "jpeg"
            if let screen {
                size = "frame:\(try screen.decode("width", as: Int32.self))x\(try screen.decode("height", as: Int32.self))"
                format = try screen.decode("format")
            }
            return try c.execute("""
                INSERT INTO \(schema).photo_cache (frame_id, file_id, size, format)
                SELECT $1, m.file_id, coalesce(v.size, 'hd'), coalesce(v.format, 'jpeg')
                FROM \(schema).photo_metadata m
                LEFT JOIN \(schema).photo_versions v ON v.file_id = m.file_id AND v.size = $3 AND v.format = $4
                WHERE m.file_id = ANY(string_to_array($2, ','))
                ON CONFLICT (frame_id, file_id) DO UPDATE SET size = EXCLUDED.size, format = EXCLUDED.format
                """, [.text(frame), .text(files.joined(separator: ",")), .text(size), .text(format)])
        }
        delivery.logger.debug("frame cache recorded", metadata: ["frame.id": "\(frame)", "photos": "\(recorded ?? 0)"])
    }

    // MARK: device.deleted

    /// The frame's part of `device.deleted` (in the handler's transaction): its cache rows go,
    /// it stays as a tombstone in `frame_screens`, and the `frame:` versions of its screen(s)
    /// that no remaining frame's screen needs and no other frame reported cached are deleted
    /// (with their queued jobs). Returns the deleted version rows (``versionColumns``): release
    /// them with ``releaseVersions(_:_:_:)`` in the same transaction.
    static func forgetFrame(_ frame: String, event: DeviceDeleted, _ schema: String, _ c: PostgresConnection) throws -> [PostgresRow] {
        _ = try c.execute("DELETE FROM \(schema).photo_cache WHERE frame_id = $1", [.text(frame)])
        var screens = Set<String>()
        if (1...VersionSpec.maxSide).contains(Int(event.width)), (1...VersionSpec.maxSide).contains(Int(event.height)) {
            screens.insert("\(event.width)x\(event.height)")
        }
        if let row = try c.query("SELECT width, height FROM \(schema).frame_screens WHERE frame_id = $1", [.text(frame)]).first {
            screens.insert("\(try row.decode("width", as: Int32.self))x\(try row.decode("height", as: Int32.self))")
        }
        _ = try c.execute("""
            INSERT INTO \(schema).frame_screens (frame_id, owner_id, width, height, format, changed_at, deleted)
            VALUES ($1, $2, $3, $4, 'jpeg', $5, true)
            ON CONFLICT (frame_id) DO UPDATE SET deleted = true, album_ids = '{}'
            """, [.text(frame), .text(event.userID), .int(Int64(event.width)), .int(Int64(event.height)), .int(event.occurredAt)])
        var rows: [PostgresRow] = []
        for screen in screens.sorted() {
            let parts = screen.split(separator: "x").compactMap { Int32($0) }
            guard parts.count == 2 else { continue }
            rows += try dropUnneededScreen(width: parts[0], height: parts[1], leaving: frame, schema, c)
        }
        return rows
    }

    /// Deletes the `frame:{W}x{H}` versions (and queued jobs) that no frame still showing needs:
    /// no remaining frame has that screen in that format, and no frame but `leaving` reported
    /// one cached. Returns the deleted version rows (``versionColumns``): release them with
    /// ``releaseVersions(_:_:_:)`` in the same transaction, and remove the blobs that leaves
    /// unreferenced after the commit with ``removeUnreferenced(_:_:)``.
    static func dropUnneededScreen(width: Int32, height: Int32, leaving frame: String, _ schema: String,
                                   _ c: PostgresConnection) throws -> [PostgresRow] {
        let needed = """
            EXISTS (SELECT 1 FROM \(schema).frame_screens s WHERE NOT s.deleted AND s.width = $2 AND s.height = $3
                    AND s.format = x.format)
            """
        let parameters: [PostgresValue] = [.text("frame:\(width)x\(height)"), .int(Int64(width)), .int(Int64(height))]
        let rows = try c.query("""
            DELETE FROM \(schema).photo_versions x WHERE x.size = $1 AND NOT \(needed)
                AND NOT EXISTS (SELECT 1 FROM \(schema).photo_cache pc WHERE pc.file_id = x.file_id AND pc.size = x.size
                                AND pc.format = x.format AND pc.frame_id <> $4)
            RETURNING x.file_id, x.size, x.format, x.blob_key
            """, parameters + [.text(frame)])
        _ = try c.execute("DELETE FROM \(schema).render_jobs x WHERE x.size = $1 AND NOT \(needed)", parameters)
        return rows
    }
}

/// The background render queue of the media service: claims the newest due photo's jobs from
/// `render_jobs` and renders them, at most `concurrency` photos at once (each a job on
/// Imaging's bounded pool, so uploads keep their share of it). Polls, and wakes at once when
/// this process queues work. On graceful shutdown it claims nothing more and lets the renders
/// in progress finish; a job left claimed by a crash is claimed again when its lease expires.
final class RenderQueue: Service, Sendable {
    let media: MediaService
    let concurrency: Int
    let pollInterval: Duration
    let running = Locked(0)

    init(media: MediaService, concurrency: Int, pollInterval: Duration) {
        self.media = media
        self.concurrency = max(1, concurrency)
        self.pollInterval = pollInterval
    }

    func run() async throws {
        let wake = media.renderWake
        await withDiscardingTaskGroup { group in
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                if running.current < concurrency {
                    let jobs: MediaService.ClaimedJobs?
                    do {
                        jobs = try await media.claimNextJobs()
                    } catch {
                        media.logger.warning("claiming queued renders failed", metadata: ["error": "\(error)"])
                        jobs = nil
                    }
                    if let jobs {
                        running.withLock { $0 += 1 }
                        group.addTask {
                            await self.media.runJobs(jobs)
                            self.running.withLock { $0 -= 1 }
                            wake.signal()
                        }
                        continue
                    }
                }
                await cancelWhenGracefulShutdown { await wake.wait(upTo: self.pollInterval) }
            }
        }
    }
}
