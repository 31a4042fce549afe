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
//   the claim (`render_jobs` is a ServiceKit `LeasedQueue`: ``renderJobsQueue``), and whoever
//   finds it leased waits for the version row to appear.
// * One decode per photo: every missing version of a photo claimed together is rendered from
//   one decode on Imaging's bounded pool; the background queue runs at most
//   `MediaConfiguration.backgroundRenders` photos at once, newest photo first.
// * A commit stores the version rows and `media.version_created` (one per new version) and
//   completes their jobs (fenced: only while the claim is still this worker's), in one
//   transaction. A background render that fails for a reason that may pass gives its jobs
//   back with a back-off (``MediaConfiguration/renderBackOff``), up to ``maxRenderAttempts``.

extension MediaService {
    /// Sides a `frame:{W}x{H}` version may have (on request, for new screens and at upload).
    static let frameSides = 16...8192
    /// How long a claim on a version lasts before another replica may render it.
    static let renderLease = 60
    /// Background attempts of a version before it is given up (`media.version_failed`).
    static let maxRenderAttempts = 3

    /// `render_jobs` as a ``LeasedQueue``: every row is work, newest photo first, a claim
    /// takes every due job of the photo (one decode renders them all), done deletes the row.
    static func renderJobsQueue(schema: String, backOff: LeasedQueue.BackOff, postgres: PostgresPool) -> LeasedQueue {
        var queue = LeasedQueue.Configuration(schema: schema, table: "render_jobs", key: ["file_id", "size", "format"],
                                              order: "priority DESC, file_id")
        queue.group = ["file_id"]
        queue.lease = .seconds(renderLease)
        queue.backOff = backOff
        queue.columns.leasedUntil = "lease_until"
        return LeasedQueue(queue, postgres: postgres)
    }

    /// A version this worker holds the `render_jobs` claim of.
    struct RenderClaim: Sendable {
        let wanted: Wanted
        let claimed: LeasedQueue.Claimed
    }

    /// Whether `a` and `b` name the same version (size and format).
    static func sameVersion(_ a: Wanted, _ b: Wanted) -> Bool {
        a.size == b.size && a.spec.encoding.format == b.spec.encoding.format
    }

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
    /// `held`: the caller holds their `render_jobs` claims (the background queue); otherwise
    /// they are claimed first, or awaited when another replica holds them. A held job whose
    /// version another task of this process rendered is completed here.
    func renderShared(_ fileID: String, _ wanted: [Wanted], held: [RenderClaim]? = nil) async throws -> [PhotoVersion] {
        let keys = wanted.map { Self.inflightKey(fileID, $0) }
        // Unstructured tasks, so a version's render outlives a cancelled requester while others
        // wait for it; each is awaited by its requesters and removes itself when done.
        let (tasks, awaited): ([Task<PhotoVersion?, any Error>], [Wanted]) = inflight.withLock { map in
            var mine: [Wanted] = [], elsewhere: [Wanted] = []
            for (index, item) in wanted.enumerated() {
                if map[keys[index]] == nil { mine.append(item) } else { elsewhere.append(item) }
            }
            if !mine.isEmpty {
                let claims = held.map { held in held.filter { claim in mine.contains { Self.sameVersion($0, claim.wanted) } } }
                let batchWanted = mine
                let batch = Task { [batchWanted, claims] in try await self.renderMissing(fileID, batchWanted, held: claims) }
                for item in mine {
                    let key = Self.inflightKey(fileID, item)
                    map[key] = Task {
                        defer { _ = self.inflight.withLock { $0.removeValue(forKey: key) } }
                        let versions = try await batch.value
                        return versions.first { $0.size == item.size && $0.format == item.spec.encoding.format.rawValue }
                    }
                }
            }
            return (keys.compactMap { map[$0] }, elsewhere)
        }
        var versions: [PhotoVersion] = []
        for task in tasks {
            if let version = try await task.value { versions.append(version) }
        }
        if let held, !awaited.isEmpty {
            let rendered = held.filter { claim in
                awaited.contains { Self.sameVersion($0, claim.wanted) }
                    && versions.contains { $0.size == claim.wanted.size && $0.format == claim.wanted.spec.encoding.format.rawValue }
            }
            try await completeJobs(fileID, rendered.map(\.claimed))
        }
        return versions
    }

    /// Renders the versions of `fileID` that do not exist yet, from one decode, and commits
    /// them; returns every wanted version that exists afterwards. Throws not_found when the
    /// photo is unknown or was deleted meanwhile, `ImagingError` when it cannot be rendered.
    /// `held`: the claims of `wanted` the caller holds (see ``renderShared(_:_:held:)``).
    func renderMissing(_ fileID: String, _ wanted: [Wanted], held: [RenderClaim]?) async throws -> [PhotoVersion] {
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
        if let held, pending.count < wanted.count {
            // Rendered meanwhile (on request, or at upload): those jobs are done.
            try await completeJobs(fileID, held.filter { claim in !pending.contains { Self.sameVersion($0, claim.wanted) } }.map(\.claimed))
        }
        while !pending.isEmpty {
            var mine: [RenderClaim]
            if let held {
                mine = held.filter { claim in pending.contains { Self.sameVersion($0, claim.wanted) } }
            } else {
                mine = try await claim(fileID, pending, priority: priority)
                if !mine.isEmpty {
                    // Committed by another replica between our look and our claim (its commit
                    // completed its claim): look again now the claim is ours, complete what exists.
                    let missing = try await absent(fileID, mine.map(\.wanted))
                    if missing.count < mine.count {
                        try await completeJobs(fileID, mine.filter { claim in !missing.contains { Self.sameVersion($0, claim.wanted) } }
                            .map(\.claimed))
                    }
                    mine = mine.filter { claim in missing.contains { Self.sameVersion($0, claim.wanted) } }
                }
            }
            if !mine.isEmpty {
                do {
                    try await render(fileID, mine, owner: owner, original: originalKey)
                } catch {
                    // Asked for now: give the claims back at once (the background queue, which
                    // handles its own failures, retries them after a back-off).
                    if held == nil { await giveBack(mine.map(\.claimed), error: error) }
                    throw error
                }
            }
            if held != nil { break }
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

    /// Queues the versions' `render_jobs` rows (when not queued yet) and claims those no other
    /// worker holds (a job backing off after a background failure included: this is asked
    /// for now); returns the claimed ones.
    func claim(_ fileID: String, _ wanted: [Wanted], priority: Int64) async throws -> [RenderClaim] {
        let (schema, queue) = (self.schema, renderJobs)
        let claims: [LeasedQueue.Claimed] = try await runtime.postgres.withTransaction { c in
            for item in wanted {
                _ = try c.execute("""
                    INSERT INTO \(schema).render_jobs (file_id, size, format, width, height, priority)
                    VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (file_id, size, format) DO NOTHING
                    """, [.text(fileID), .text(item.size), .text(item.spec.encoding.format.rawValue),
                          .int(Int64(item.spec.width)), .int(Int64(item.spec.height)), .int(priority)])
            }
            return try queue.claim(keys: wanted.map { [.text(fileID), .text($0.size), .text($0.spec.encoding.format.rawValue)] },
                                   evenIfBackingOff: true, returning: "size, format", on: c)
        }
        return try claims.compactMap { claimed in
            let size: String = try claimed.row.decode("size"), format: String = try claimed.row.decode("format")
            return wanted.first { $0.size == size && $0.spec.encoding.format.rawValue == format }
                .map { RenderClaim(wanted: $0, claimed: claimed) }
        }
    }

    /// Completes jobs this worker holds whose versions exist (rendered by someone else) and, in
    /// the same transaction under the file's lock, sends the photo's `media.cache_ready` if it
    /// was waiting for them.
    func completeJobs(_ fileID: String, _ claims: [LeasedQueue.Claimed]) async throws {
        guard !claims.isEmpty else { return }
        let (schema, queue) = (self.schema, renderJobs)
        let announced: Bool = try await runtime.postgres.withTransaction { c in
            try Self.lockFile(fileID, c)
            try queue.done(claims, on: c)
            return try Self.announceIfDue(fileID, schema, c)
        }
        if announced { relay.wake() }
    }

    /// Gives claims back after a failed render, with the queue's back-off; never throws (the
    /// claims run out by themselves if this fails).
    func giveBack(_ claims: [LeasedQueue.Claimed], error: any Error) async {
        let (queue, message) = (renderJobs, "\(error)")
        do {
            _ = try await runtime.postgres.withConnection { c in
                try claims.map { try queue.failed($0, error: message, on: c) }
            }
        } catch {
            logger.warning("giving failed render jobs back failed; their leases will run out", metadata: ["error": "\(error)"])
        }
    }

    /// Decodes the original once, renders the claimed versions, stores the blobs, commits the
    /// rows, their `media.version_created` and the completion of their jobs.
    func render(_ fileID: String, _ claims: [RenderClaim], owner: String, original: BlobKey) async throws {
        let wanted = claims.map(\.wanted)
        let start = ContinuousClock.now
        renderCount.withLock { $0 += 1 }
        let rendered = try await Self.render(file: blobs.path(for: original), versions: wanted, imaging: imaging)
        let elapsed = ContinuousClock.now - start
        let now = EventTime.now()
        let versions = try await store(rendered, wanted, fileID: fileID, at: now)
        let (schema, references, queue) = (self.schema, self.references, renderJobs)
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
                    // The version exists (ours or not): its job is done, if it is still ours.
                    if let claim = claims.first(where: { $0.wanted.size == version.size
                                                         && $0.wanted.spec.encoding.format.rawValue == version.format }) {
                        try queue.done(claim.claimed, on: c)
                    }
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
        var claims: [RenderClaim]
        var wanted: [Wanted] { claims.map(\.wanted) }
        /// The most times one of them was claimed (this claim included).
        var attempts: Int { claims.map(\.claimed.attempts).max() ?? 0 }
    }

    /// Claims every due job of the due photo that is newest (``renderJobs``), or nil when none
    /// is due. A job naming no valid version is dropped.
    func claimNextJobs() async throws -> ClaimedJobs? {
        let claims = try await renderJobs.claim(limit: 1, returning: "file_id, size, format, width, height")
        guard let first = claims.first else { return nil }
        var jobs = ClaimedJobs(fileID: try first.row.decode("file_id"), claims: [])
        for claimed in claims {
            do {
                let (width, height): (Int32, Int32) = (try claimed.row.decode("width"), try claimed.row.decode("height"))
                let size: String = try claimed.row.decode("size"), format: String = try claimed.row.decode("format")
                let wanted = size.hasPrefix("frame:")
                    ? Self.frameVersion(width: Int(width), height: Int(height), format: format)
                    : try Self.requestedVersion(size: size, format: format)
                jobs.claims.append(RenderClaim(wanted: wanted, claimed: claimed))
            } catch {
                logger.error("a queued render names no valid version; dropped", metadata: ["file.id": "\(jobs.fileID)", "error": "\(error)"])
                try await completeJobs(jobs.fileID, [claimed])
            }
        }
        return jobs
    }

    /// Renders one photo's claimed jobs. A photo that cannot be rendered, or whose jobs failed
    /// ``maxRenderAttempts`` times, gets `media.version_failed` per version and its jobs go;
    /// after any other failure the jobs are given back and tried again after a back-off.
    func runJobs(_ jobs: ClaimedJobs) async {
        let fileID = jobs.fileID
        do {
            _ = try await renderShared(fileID, jobs.wanted, held: jobs.claims)
        } catch let error as ServiceError where error.status == .notFound {
            // The photo is gone (or never reached media): nothing to render.
            try? await dropJobs(fileID, jobs.wanted, failure: nil)
        } catch let error as ImagingError where error.code != .unavailable && error.code != .io {
            try? await dropJobs(fileID, jobs.wanted, failure: "\(error.code): \(error.message)")
        } catch {
            if jobs.attempts >= Self.maxRenderAttempts {
                logger.warning("rendering a queued version failed; giving up", metadata: [
                    "file.id": "\(fileID)", "error": "\(error)", "attempts": "\(jobs.attempts)"])
                try? await dropJobs(fileID, jobs.wanted, failure: "gave up after \(jobs.attempts) attempts")
            } else {
                logger.warning("rendering a queued version failed; will retry", metadata: [
                    "file.id": "\(fileID)", "error": "\(error)", "attempts": "\(jobs.attempts)"])
                await giveBack(jobs.claims.map(\.claimed), error: error)
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
