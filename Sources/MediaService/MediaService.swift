import BlobStore
import Foundation
import Imaging
import Logging
import Metrics
import NATS
import Postgres
import ServiceKit
import ServiceLifecycle
import Threads
import Wire

/// Settings of the media service.
public struct MediaConfiguration: Sendable {
    /// Root of the blob store shared with the gateway and storage (originals are read from
    /// it, versions are written to it).
    public var blobRoot: String
    /// The gateway's public URL: base of the download URLs (`{url}/api/v1/files/download/…`).
    public var publicGatewayURL: String
    /// How long an upload's render waits for media to learn which album holds the photo
    /// (`album.photo_added`, usually a few milliseconds behind the upload event) when it knows
    /// none yet, so the album's frames' versions come from the same decode. Past it (album
    /// stopped, or the photo goes into no album) thumbnail and hd are rendered now and the
    /// frame versions when the album is known. Media never asks album.
    public var placementWait: Duration = .seconds(2)
    /// Access is checked against media's own copy of album's state, which follows album's
    /// events a few milliseconds behind: a denial is confirmed by checking again for up to this
    /// long, so a grant album has just committed (a new member, a frame's new album, a new
    /// frame) is honoured at once. Zero: deny at once.
    public var accessGrace: Duration = .seconds(1)
    /// Largest rendered version stored, in bytes.
    public var maxVersionBytes = 64 << 20
    /// Photos the background queue (versions for new screens) renders at once; each is one job
    /// on Imaging's pool, so uploads and on-demand renders keep the rest of it.
    public var backgroundRenders = 1
    /// How often the background queue looks for work queued by other replicas.
    public var renderPollInterval: Duration = .seconds(2)
    /// How long a queued render that failed for a reason that may pass (I/O, a busy pool)
    /// waits before the background queue tries it again, after its `n`th attempt:
    /// `min(cap, base · 2^n)`.
    public var renderBackOff = LeasedQueue.BackOff(base: .seconds(5), cap: .seconds(300))

    public init(blobRoot: String, publicGatewayURL: String) {
        self.blobRoot = blobRoot
        self.publicGatewayURL = publicGatewayURL
    }
}

/// The media service (`svc.media.v1.*`, NATS name "media", schema "media").
///
/// * It never calls album: it keeps its own copy of album's state from album's events
///   (AlbumState.swift): each album's members (`album.members_changed`, `album.deleted`), the
///   albums holding each photo (`album.photo_added`, `album.photo_removed`) and each frame's
///   owner, screen and albums (`device.albums_changed`, `device.deleted`).
/// * On `file.uploaded.with_ai` it renders `thumbnail` (fit 300×300), `hd` (fit 1920×1080)
///   and one `frame:{W}x{H}` (cover) per distinct screen of the frames showing the albums that
///   hold the photo (waiting up to ``MediaConfiguration/placementWait`` to learn them) from ONE
///   decode on Imaging's bounded pool, stores each as a content-addressed blob and, in one
///   transaction, its rows, `media.version_created` (per version) and — once an album holding
///   the photo is known and its frames' versions exist — `media.cache_ready` (else it is sent
///   by whatever completes that: ``announceIfDue(_:_:_:)``). A damaged or over-limit image
///   gives `media.version_failed` instead (acked, never retried).
/// * `GetPhotoMetadata` / `GetVersion` answer for a principal carried in the
///   ``principalHeader`` header: the file's owner, a member of an album holding it, or a frame
///   showing such an album now (``mayView(_:_:grace:)``); anyone else gets not_found.
/// * On `file.deleted` it records a tombstone (`deleted_files`), deletes the file's rows and
///   the version blobs nobody references. A delete is a delete: whatever arrives for the file
///   afterwards — a late or redelivered `file.uploaded.with_ai`, a queued or on-demand render —
///   finds the tombstone under the file's lock (``lockFile(_:_:)``) and stores nothing (what it
///   rendered is removed through ``BlobReferences``); `GetPhotoMetadata` / `GetVersion` answer
///   not_found for it. Tombstones are pruned after ``tombstoneRetention``.
///   Every stored version holds a reference to its blob in the blob store's table
///   (``BlobReferences``, owner `media`, ``versionReference(fileID:size:format:)``), added and
///   released in the transaction that inserts or deletes the version row; a blob goes only
///   when its last reference (a version's or a storage file's) goes.
/// * On `device.albums_changed` it records the frame's screen and queues `frame:{W}x{H}` for
///   the frame's photos lacking it (`render_jobs`, rendered in the background newest first,
///   Renders.swift); `album.photo_added` queues the same for a rendered photo added to one
///   more album. `GetVersion` (and `RenderOnDemand`) renders a valid size not rendered yet,
///   once however many ask; `device.cache_reported` fills `photo_cache` (`cached_for_frames`);
///   `device.deleted` drops the frame's cache rows and the `frame:` versions nobody else needs.
/// * Playlists (`Create|Get|List|Update|DeletePlaylist`, Playlists.swift) and frames' rotation
///   schedules (`Get|Set|DeleteSchedule`, Schedules.swift): a schedule change commits
///   `media.schedule_changed`, which album turns into the frame's retained config;
///   `device.deleted` also removes the frame's schedule.
public final class MediaService: Sendable {
    public static let name = MediaAPI.service
    public static let schema = MediaSchema.name
    public static var migrations: [Migration] { MediaSchema.migrations }

    /// The request header naming who asks: `user:<id>` or `frame:<id>`.
    public static let principalHeader = Subjects.principalHeader

    /// Headers that make a media request on behalf of `principal`.
    public static func headers(for principal: Principal) -> NATSHeaders {
        var headers = NATSHeaders()
        let kind = principal.kind == .frame ? "frame" : "user"
        headers.add("\(kind):\(principal.id)", for: principalHeader)
        return headers
    }

    /// The URL the gateway serves a version at.
    public static func downloadURL(gateway: String, fileID: String, size: String) -> String {
        var base = gateway
        while base.hasSuffix("/") { base.removeLast() }
        let encoded = size.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed.subtracting(CharacterSet(charactersIn: "&=+?#"))) ?? size
        return "\(base)/api/v1/files/download/\(fileID)?size=\(encoded)"
    }

    let runtime: ServiceRuntime
    let configuration: MediaConfiguration
    let blobs: BlobStore
    let references: BlobReferences
    let imaging: Imaging
    /// Blob writes (fsync, rename): blocking I/O off the cooperative pool. (Removals run in
    /// BlobReferences, on the PostgreSQL pool's threads, under the blob's lock.)
    let blobIO: BlockingPool
    let relay: OutboxRelay
    let logger: Logger
    let schema = MediaSchema.name
    /// How many times a photo was decoded and rendered (tests prove a duplicate is not).
    let renderCount = Locked(0)
    /// Versions being rendered in this process, by ``inflightKey(_:_:)``: later requests await them.
    let inflight = Locked<[String: Task<PhotoVersion?, any Error>]>([:])
    /// Wakes the background render queue when this process queued work.
    let renderWake = WakeSignal()
    /// The `render_jobs` table as a leased queue (``renderJobsQueue(schema:backOff:postgres:)``).
    let renderJobs: LeasedQueue

    public init(runtime: ServiceRuntime, configuration: MediaConfiguration, imaging: Imaging) {
        self.runtime = runtime
        self.configuration = configuration
        let blobs = BlobStore(path: configuration.blobRoot)
        self.blobs = blobs
        self.imaging = imaging
        self.blobIO = BlockingPool(name: "media-blobs", threadCount: 2)
        self.relay = runtime.outboxRelay(schema: MediaSchema.name)
        var logger = runtime.logger
        logger[metadataKey: "service.name"] = "\(Self.name)"
        self.logger = logger
        self.references = BlobReferences(store: blobs, postgres: runtime.postgres, logger: logger)
        self.renderJobs = MediaService.renderJobsQueue(schema: MediaSchema.name, backOff: configuration.renderBackOff,
                                                       postgres: runtime.postgres)
    }

    deinit { blobIO.shutdown() }

    /// Migrates the blob store's `blobs` schema and the `media` schema, and returns the request
    /// server, the outbox relay, the event consumers (`file.uploaded.with_ai`, `file.deleted`,
    /// `device.deleted`, `device.albums_changed`, `device.cache_reported`, `album.photo_added`,
    /// `album.photo_removed`, `album.members_changed`, `album.deleted`) and the background
    /// render queue.
    public func services() async throws -> [any Service] {
        try await BlobReferences.migrate(on: runtime.postgres, logger: logger)
        var services = try await runtime.services(
            identity: ServiceIdentity(name: Self.name, description: "Framecast media: photo versions and metadata, playlists, schedules"),
            schema: schema, migrations: MediaSchema.migrations, endpoints: endpoints, events: events, relay: relay)
        services.append(RenderQueue(media: self, concurrency: configuration.backgroundRenders,
                                    pollInterval: configuration.renderPollInterval))
        return services
    }

    var endpoints: [Endpoint] {
        [
            Endpoint(MediaAPI.getPhotoMetadata) { [self] request, context in try await getPhotoMetadata(request, context) },
            Endpoint(MediaAPI.getVersion) { [self] request, context in try await getVersion(request, context) },
            Endpoint(MediaAPI.renderOnDemand) { [self] request, context in try await getVersion(request, context) },
            Endpoint(MediaAPI.createPlaylist) { [self] request, _ in try await createPlaylist(request) },
            Endpoint(MediaAPI.getPlaylist) { [self] request, _ in try await getPlaylist(request) },
            Endpoint(MediaAPI.listPlaylists) { [self] request, _ in try await listPlaylists(request) },
            Endpoint(MediaAPI.updatePlaylist) { [self] request, _ in try await updatePlaylist(request) },
            Endpoint(MediaAPI.deletePlaylist) { [self] request, _ in try await deletePlaylist(request) },
            Endpoint(MediaAPI.getSchedule) { [self] request, _ in try await getSchedule(request) },
            Endpoint(MediaAPI.setSchedule) { [self] request, _ in try await setSchedule(request) },
            Endpoint(MediaAPI.deleteSchedule) { [self] request, _ in try await deleteSchedule(request) },
        ]
    }

    var events: [EventHandler] {
        [
            EventHandler(FileUploadedWithAI.self) { [self] event, delivery in try await fileUploaded(event, delivery) },
            EventHandler(FileDeleted.self) { [self] event, delivery in try await fileDeleted(event, delivery) },
            EventHandler(DeviceDeleted.self) { [self] event, delivery in try await deviceDeleted(event, delivery) },
            EventHandler(DeviceAlbumsChanged.self) { [self] event, delivery in try await albumsChanged(event, delivery) },
            EventHandler(DeviceCacheReported.self) { [self] event, delivery in try await cacheReported(event, delivery) },
            EventHandler(AlbumPhotoAdded.self) { [self] event, delivery in try await photoAdded(event, delivery) },
            EventHandler(AlbumPhotoRemoved.self) { [self] event, delivery in try await photoRemoved(event, delivery) },
            EventHandler(AlbumMembersChanged.self) { [self] event, delivery in try await membersChanged(event, delivery) },
            EventHandler(AlbumDeleted.self) { [self] event, delivery in try await albumDeleted(event, delivery) },
        ]
    }

    // MARK: Rendering

    /// One version to render: its name and the spec Imaging renders.
    struct Wanted: Sendable {
        var size: String
        var spec: VersionSpec
    }

    /// thumbnail, hd, then one `frame:{W}x{H}` per distinct screen size and format (sizes
    /// outside ``frameSides`` are skipped: such a frame shows hd).
    static func wantedVersions(screens: [FrameScreen]) -> [Wanted] {
        var wanted = [Wanted(size: "thumbnail", spec: .fit(300, 300)), Wanted(size: "hd", spec: .fit(1920, 1080))]
        var seen = Set<String>()
        for screen in screens {
            let (w, h) = (Int(screen.width), Int(screen.height))
            guard frameSides.contains(w), frameSides.contains(h) else { continue }
            let version = frameVersion(width: w, height: h, format: screen.format.lowercased())
            guard seen.insert("\(version.size)/\(version.spec.encoding.format)").inserted else { continue }
            wanted.append(version)
        }
        return wanted
    }

    /// The versions the service renders for frames with these screens: thumbnail, hd, then
    /// one `frame:{W}x{H}` per distinct screen and format (see ``wantedVersions(screens:)``).
    public static func versionSpecs(screens: [FrameScreen]) -> [(size: String, spec: VersionSpec)] {
        wantedVersions(screens: screens).map { ($0.size, $0.spec) }
    }

    /// The versions for `screens` (see ``wantedVersions(screens:)``), rendered from ONE decode of
    /// the file at `path`, in the same order: thumbnail, hd, then one per distinct screen.
    /// The service's own hot path, public so that benchmarks/ measures exactly this code.
    public static func renderVersions(file path: String, screens: [FrameScreen],
                                      imaging: Imaging) async throws -> [(size: String, image: RenderedImage)] {
        let wanted = wantedVersions(screens: screens)
        let rendered = try await render(file: path, versions: wanted, imaging: imaging)
        return zip(wanted, rendered).map { ($0.size, $1) }
    }

    static func render(file path: String, versions wanted: [Wanted], imaging: Imaging) async throws -> [RenderedImage] {
        try await imaging.renderFile(path, versions: wanted.map(\.spec))
    }

    /// Stores each rendered image as a content-addressed blob (a retry reuses the same blobs)
    /// and describes it as the version `wanted[i]` of `fileID`.
    func store(_ rendered: [RenderedImage], _ wanted: [Wanted], fileID: String, at now: Int64) async throws -> [PhotoVersion] {
        let (store, limit) = (blobs, configuration.maxVersionBytes)
        let stored: [(key: BlobKey, size: Int)] = try await blobIO.run {
            try rendered.map { image in
                let writer = try BlobWriter(store: store, limit: limit)
                do {
                    try writer.write(image.bytes)
                    let result = try writer.commit()
                    return (result.key, result.size)
                } catch {
                    writer.abort()
                    throw error
                }
            }
        }
        return zip(rendered, zip(wanted, stored)).map { image, pair in
            let (want, blob) = pair
            return PhotoVersion(
                fileID: fileID, size: want.size, width: Int32(image.width), height: Int32(image.height),
                format: image.format.rawValue, contentType: image.format.contentType, blobKey: blob.key.hex,
                byteSize: Int64(blob.size), sha256: blob.key.hex, createdAt: now)
        }
    }

    func fileUploaded(_ event: FileUploadedWithAI, _ delivery: EventDelivery) async throws {
        let logger = delivery.logger
        guard let file = event.file, !file.fileID.isEmpty else {
            logger.error("file.uploaded.with_ai without a file; ignored")
            return
        }
        let fileID = file.fileID
        let owner = file.userID.isEmpty ? event.userID : file.userID
        // Deleted before this (late or redelivered) event arrived: render nothing. (A delete
        // that lands while rendering is caught again when committing, under the file's lock.)
        if try await isDeleted(fileID) {
            logger.info("the file was deleted; not rendering", metadata: ["file.id": "\(fileID)"])
            Counter(label: "media_renders_total", dimensions: [("outcome", "deleted")]).increment()
            return
        }
        // A redelivery, or the same file announced again: never render twice.
        if try await hasVersions(fileID) {
            logger.info("versions exist; not rendering again", metadata: ["file.id": "\(fileID)"])
            return
        }

        // The albums holding the photo (album places it: album.photo_added) and their frames'
        // screens, from media's own copy; none known after the wait: thumbnail and hd now,
        // the frames' versions once the album is known (photoAdded).
        let albumIDs = try await awaitPlacement(fileID)
        let screens = try await self.screens(showing: albumIDs)
        if albumIDs.isEmpty {
            logger.info("no album known for the photo yet; rendering thumbnail and hd, frame versions once it is",
                        metadata: ["file.id": "\(fileID)"])
        }
        let wanted = Self.wantedVersions(screens: screens)

        guard let originalKey = BlobKey(file.blobKey) else {
            try await failed(wanted, file: fileID, owner: owner, reason: "invalid blob key", delivery)
            return
        }
        let start = ContinuousClock.now
        renderCount.withLock { $0 += 1 }
        let rendered: [RenderedImage]
        do {
            rendered = try await Self.render(file: blobs.path(for: originalKey), versions: wanted, imaging: imaging)
        } catch let error as ImagingError where error.code != .unavailable && error.code != .io {
            try await failed(wanted, file: fileID, owner: owner, reason: "\(error.code): \(error.message)", delivery)
            return
        }
        let renderTime = ContinuousClock.now - start

        let now = EventTime.now()
        let versions = try await store(rendered, wanted, fileID: fileID, at: now)
        let metadataParameters: [PostgresValue] = [
            .text(fileID), .text(owner), .text(file.fileName), .text(file.contentType), .text(file.blobKey),
            .int(file.size), .bytea(file.aiMetadata?.wireBytes() ?? []), .bytea(file.analysis?.wireBytes() ?? []),
        ]
        let (schema, snapshot, references) = (self.schema, versions, self.references)
        let committed: UploadCommit? = try await delivery.transaction { connection in
            try Self.lockFile(fileID, connection)
            // Deleted while rendering: keep nothing (the blobs are removed below).
            if try Self.hasTombstone(fileID, schema, connection) { return .deleted }
            // Another event for the same file committed first: keep its versions.
            guard try connection.query("SELECT 1 FROM \(schema).photo_versions WHERE file_id = $1 LIMIT 1",
                                       [.text(fileID)]).isEmpty else { return .duplicate }
            try connection.execute("""
                INSERT INTO \(schema).photo_metadata (file_id, user_id, file_name, content_type, original_blob_key,
                    original_bytes, ai_metadata, analysis)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                ON CONFLICT (file_id) DO UPDATE SET updated_at = clock_timestamp()
                """, metadataParameters)
            var added: [(key: BlobKey, ref: String)] = []
            for version in snapshot {
                let inserted = try connection.execute("""
                    INSERT INTO \(schema).photo_versions (file_id, size, width, height, bytes, format, content_type, blob_key)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (file_id, size, format) DO NOTHING
                    """, [.text(fileID), .text(version.size), .int(Int64(version.width)), .int(Int64(version.height)),
                          .int(version.byteSize), .text(version.format), .text(version.contentType), .text(version.blobKey)])
                if inserted == 1, let key = BlobKey(version.blobKey) {
                    added.append((key, Self.versionReference(fileID: fileID, size: version.size, format: version.format)))
                }
                try Outbox.enqueue(MediaVersionCreated(eventID: Self.newID(), occurredAt: now, userID: owner, version: version),
                                   schema: schema, on: connection)
            }
            // Each version's reference to its blob, under the blobs' locks. A blob removed since
            // it was written is refused: nothing commits and the redelivered event renders again.
            try references.add(added, owner: .media, on: connection)
            // media.cache_ready now if the albums holding the photo are known (read again under
            // the file's lock: album.photo_added may have landed while rendering) and their
            // frames' versions all exist; else it is due, sent by whatever completes that.
            _ = try Self.queueFrameVersions(file: fileID, albums: Self.albumsHolding(fileID, schema, connection), schema, connection)
            try connection.execute("UPDATE \(schema).photo_metadata SET cache_ready_due = true WHERE file_id = $1", [.text(fileID)])
            _ = try Self.announceIfDue(fileID, schema, connection)
            return .stored
        }
        let outcome = committed ?? .duplicate
        // Frame versions queued at the commit (an album's screens it learned of meanwhile).
        if outcome == .stored { renderWake.signal() }
        if outcome != .stored {
            // This file's versions were stored by an earlier delivery, or the file was deleted
            // meanwhile: what was rendered here and is referenced by nobody goes.
            _ = await removeUnreferenced(versions.compactMap { BlobKey($0.blobKey) }, logger)
        }
        relay.wake()
        let milliseconds = Double(renderTime.components.seconds) * 1000 + Double(renderTime.components.attoseconds) / 1e15
        Metrics.Timer(label: "media_render_seconds").recordNanoseconds(Int64(milliseconds * 1_000_000))
        Counter(label: "media_renders_total", dimensions: [("outcome", outcome.rawValue)]).increment()
        logger.info("versions rendered", metadata: [
            "file.id": "\(fileID)", "versions": "\(versions.map(\.size).joined(separator: ","))",
            "render.ms": "\(Int(milliseconds.rounded()))", "committed": "\(outcome == .stored)", "outcome": "\(outcome.rawValue)",
        ])
    }

    /// Announces that the photo cannot be rendered: one `media.version_failed` per version —
    /// unless it was deleted meanwhile (its original may be gone with it): then nothing.
    func failed(_ wanted: [Wanted], file fileID: String, owner: String, reason: String, _ delivery: EventDelivery) async throws {
        delivery.logger.warning("photo cannot be rendered", metadata: ["file.id": "\(fileID)", "error": "\(reason)"])
        Counter(label: "media_renders_total", dimensions: [("outcome", "failed")]).increment()
        let schema = self.schema
        let now = EventTime.now()
        try await delivery.transaction { connection in
            try Self.lockFile(fileID, connection)
            if try Self.hasTombstone(fileID, schema, connection) { return }
            for item in wanted {
                try Outbox.enqueue(MediaVersionFailed(eventID: Self.newID(), occurredAt: now, userID: owner, fileID: fileID,
                                                      size: item.size, format: item.spec.encoding.format.rawValue, error: reason),
                                   schema: schema, on: connection)
            }
        }
        relay.wake()
    }

    /// What committing an upload's versions did.
    enum UploadCommit: String, Sendable {
        /// Stored, with `media.version_created` and `media.cache_ready`.
        case stored = "rendered"
        /// An earlier delivery stored the file's versions: nothing stored.
        case duplicate
        /// The file was deleted (tombstone): nothing stored.
        case deleted
    }

    func hasVersions(_ fileID: String) async throws -> Bool {
        try await !runtime.postgres.query("SELECT 1 FROM \(schema).photo_versions WHERE file_id = $1 LIMIT 1",
                                          [.text(fileID)]).isEmpty
    }

    // MARK: file.deleted

    /// `file.deleted`: the file's tombstone, then its versions (references released, blobs
    /// nobody else references removed after the commit), metadata, cache reports and queued
    /// renders go — all under the file's lock, so a render committing at the same time either
    /// committed before (and its rows go here) or finds the tombstone (and keeps nothing).
    func fileDeleted(_ event: FileDeleted, _ delivery: EventDelivery) async throws {
        guard !event.fileID.isEmpty else {
            delivery.logger.error("file.deleted without a file id; skipped")
            return
        }
        let (schema, fileID, references) = (self.schema, event.fileID, self.references)
        let outcome: (versions: Int, unreferenced: [BlobKey])? = try await delivery.transaction { connection in
            try Self.lockFile(fileID, connection)
            try connection.execute("INSERT INTO \(schema).deleted_files (file_id) VALUES ($1) ON CONFLICT DO NOTHING",
                                   [.text(fileID)])
            try Self.pruneTombstones(schema, connection)
            let rows = try connection.query(
                "DELETE FROM \(schema).photo_versions WHERE file_id = $1 RETURNING \(Self.versionColumns)", [.text(fileID)])
            try connection.execute("DELETE FROM \(schema).photo_metadata WHERE file_id = $1", [.text(fileID)])
            try connection.execute("DELETE FROM \(schema).photo_cache WHERE file_id = $1", [.text(fileID)])
            try connection.execute("DELETE FROM \(schema).render_jobs WHERE file_id = $1", [.text(fileID)])
            try connection.execute("DELETE FROM \(schema).album_photos WHERE file_id = $1", [.text(Self.uuid(fileID) ?? fileID)])
            return (rows.count, try Self.releaseVersions(rows, references, connection))
        }
        let removed = await removeUnreferenced(outcome?.unreferenced ?? [], delivery.logger)
        delivery.logger.info("photo versions deleted", metadata: [
            "file.id": "\(fileID)", "versions": "\(outcome?.versions ?? 0)", "blobs.removed": "\(removed)"])
    }

    // MARK: Blob references

    /// The reference a stored version holds to its blob (owner `media`): one per
    /// `photo_versions` row (the 103 migration builds the same text).
    static func versionReference(fileID: String, size: String, format: String) -> String {
        "\(fileID)|\(size)|\(format)"
    }

    /// What a `DELETE FROM photo_versions … RETURNING` hands to ``releaseVersions(_:_:_:)``.
    static let versionColumns = "file_id, size, format, blob_key"

    /// Releases the references of deleted `photo_versions` rows (``versionColumns``), in the
    /// transaction that deleted them; returns the blobs no reference is left to, to remove
    /// after the commit with ``removeUnreferenced(_:_:)``.
    static func releaseVersions(_ rows: [PostgresRow], _ references: BlobReferences,
                                _ connection: PostgresConnection) throws -> [BlobKey] {
        var released: [(key: BlobKey, ref: String)] = []
        for row in rows {
            guard let key = BlobKey(try row.decode("blob_key", as: String.self)) else { continue }
            released.append((key, versionReference(fileID: try row.decode("file_id"), size: try row.decode("size"),
                                                   format: try row.decode("format"))))
        }
        return try references.release(released, owner: .media, on: connection)
    }

    /// Removes each blob unless something references it (``BlobReferences/removeIfUnreferenced(_:)``),
    /// after the commit that released it. A failure is logged: the storage service's blob
    /// janitor removes what is left once its grace period is over. Returns how many went.
    func removeUnreferenced(_ keys: [BlobKey], _ logger: Logger) async -> Int {
        var removed = 0
        for key in Set(keys).sorted(by: { $0.hex < $1.hex }) {
            do {
                if try await references.removeIfUnreferenced(key) { removed += 1 }
            } catch {
                logger.warning("removing an unreferenced blob failed; the janitor will", metadata: [
                    "blob.key": "\(key)", "error": "\(error)"])
            }
        }
        return removed
    }

    // MARK: GetPhotoMetadata, GetVersion

    struct StoredPhoto: Sendable {
        var owner: String
        var fileName: String
        var contentType: String
        var originalBlobKey: String
        var originalBytes: Int64
        var aiMetadata: AIMetadata?
        var analysis: PhotoAnalysis?
        var createdAt: Int64
        var updatedAt: Int64
    }

    func getPhotoMetadata(_ request: GetPhotoMetadataRequest, _ context: CallContext) async throws -> PhotoMetadataReply {
        let photo = try await visiblePhoto(request.fileID, context)
        let versions = try await storedVersions(request.fileID)
        let frames = try await runtime.postgres.query(
            "SELECT frame_id FROM \(schema).photo_cache WHERE file_id = $1 ORDER BY frame_id LIMIT 1000", [.text(request.fileID)]
        ).map { try $0.decode("frame_id", as: String.self) }
        return PhotoMetadataReply(metadata: PhotoMetadata(
            fileID: request.fileID, ownerID: photo.owner, fileName: photo.fileName, contentType: photo.contentType,
            versions: versions, aiMetadata: photo.aiMetadata, analysis: photo.analysis, cachedForFrames: frames,
            createdAt: photo.createdAt, updatedAt: photo.updatedAt))
    }

    /// The stored version; a valid size not rendered yet (e.g. `frame:{W}x{H}` of a new
    /// screen) is rendered now, once however many ask (Renders.swift). Sizes are validated
    /// before access is checked: invalid for a size no version can have.
    func getVersion(_ request: GetVersionRequest, _ context: CallContext) async throws -> VersionReply {
        let requested = request.size == "original" ? nil : try Self.requestedVersion(size: request.size, format: request.format)
        let photo = try await visiblePhoto(request.fileID, context)
        if request.size == "original" {
            let analysis = photo.analysis
            return VersionReply(version: PhotoVersion(
                fileID: request.fileID, size: "original", width: analysis?.width ?? 0, height: analysis?.height ?? 0,
                format: analysis?.format ?? "", contentType: photo.contentType, blobKey: photo.originalBlobKey,
                byteSize: photo.originalBytes, sha256: photo.originalBlobKey, createdAt: photo.createdAt))
        }
        let candidates = try await storedVersions(request.fileID).filter { $0.size == request.size }
        let format = request.format.lowercased()
        // No format asked: JPEG when there is one (every device shows it), else what exists.
        let chosen = format.isEmpty
            ? candidates.first { $0.format == "jpeg" } ?? candidates.first
            : candidates.first { $0.format == format }
        if let chosen { return VersionReply(version: chosen) }
        guard let requested else { throw ServiceError.notFound("no such version") }
        do {
            let rendered = try await renderShared(request.fileID, [requested])
            guard let version = rendered.first else { throw ServiceError.notFound("no such version") }
            Counter(label: "media_on_demand_renders_total").increment()
            return VersionReply(version: version)
        } catch let error as ImagingError where error.code != .unavailable && error.code != .io {
            try await dropJobs(request.fileID, [requested], failure: "\(error.code): \(error.message)")
            throw ServiceError.notFound("the photo cannot be rendered")
        }
    }

    /// The photo, when the request's principal may see it; not_found otherwise (so a stranger
    /// cannot tell a hidden photo from a missing one).
    func visiblePhoto(_ fileID: String, _ context: CallContext) async throws -> StoredPhoto {
        guard !fileID.isEmpty, let principal = Self.principal(context.headers) else {
            throw ServiceError.notFound("no such photo")
        }
        let rows = try await runtime.postgres.query("""
            SELECT user_id, file_name, content_type, original_blob_key, original_bytes, ai_metadata, analysis,
                   (extract(epoch FROM created_at) * 1000)::bigint AS created_ms,
                   (extract(epoch FROM updated_at) * 1000)::bigint AS updated_ms
            FROM \(schema).photo_metadata m WHERE file_id = $1
                AND NOT EXISTS (SELECT 1 FROM \(schema).deleted_files d WHERE d.file_id = m.file_id)
            """, [.text(fileID)])
        guard let row = rows.first else { throw ServiceError.notFound("no such photo") }
        let ai: [UInt8] = try row.decode("ai_metadata"), analysis: [UInt8] = try row.decode("analysis")
        let photo = StoredPhoto(
            owner: try row.decode("user_id"), fileName: try row.decode("file_name"),
            contentType: try row.decode("content_type"), originalBlobKey: try row.decode("original_blob_key"),
            originalBytes: try row.decode("original_bytes"),
            aiMetadata: ai.isEmpty ? nil : try AIMetadata(wireBytes: ai),
            analysis: analysis.isEmpty ? nil : try PhotoAnalysis(wireBytes: analysis),
            createdAt: try row.decode("created_ms"), updatedAt: try row.decode("updated_ms"))
        if principal.kind == .user && principal.id == photo.owner { return photo }
        guard try await mayView(fileID, principal, grace: true) else {
            context.logger.info("photo access refused", metadata: ["file.id": "\(fileID)"])
            throw ServiceError.notFound("no such photo")
        }
        return photo
    }

    func storedVersions(_ fileID: String) async throws -> [PhotoVersion] {
        let schema = self.schema
        return try await runtime.postgres.withConnection { c in try Self.storedVersions(fileID, schema, c) }
    }

    /// The file's stored versions, smallest first.
    static func storedVersions(_ fileID: String, _ schema: String, _ c: PostgresConnection) throws -> [PhotoVersion] {
        let rows = try c.query("""
            SELECT size, width, height, bytes, format, content_type, blob_key,
                   (extract(epoch FROM created_at) * 1000)::bigint AS created_ms
            FROM \(schema).photo_versions WHERE file_id = $1 ORDER BY bytes, size, format
            """, [.text(fileID)])
        return try rows.map { row in
            let key: String = try row.decode("blob_key")
            return PhotoVersion(
                fileID: fileID, size: try row.decode("size"), width: try row.decode("width"), height: try row.decode("height"),
                format: try row.decode("format"), contentType: try row.decode("content_type"), blobKey: key,
                byteSize: try row.decode("bytes"), sha256: key, createdAt: try row.decode("created_ms"))
        }
    }

    /// `user:<id>` or `frame:<id>` from ``principalHeader``; nil when absent or malformed.
    static func principal(_ headers: NATSHeaders) -> Principal? {
        guard let value = headers[principalHeader], let colon = value.firstIndex(of: ":") else { return nil }
        let id = String(value[value.index(after: colon)...])
        guard !id.isEmpty else { return nil }
        switch value[..<colon] {
        case "user": return Principal(kind: .user, id: id)
        case "frame": return Principal(kind: .frame, id: id)
        default: return nil
        }
    }

    // MARK: Helpers

    /// Serialises rendering commits and deletes of one file.
    static func lockFile(_ fileID: String, _ connection: PostgresConnection) throws {
        try connection.advisoryTransactionLock("media-file:" + fileID)
    }

    // MARK: Tombstones

    /// How long a deleted file's tombstone is kept: far longer than any event for the file can
    /// be late (a consumer that lags a month behind another has bigger problems).
    static let tombstoneRetention = "30 days"

    /// Whether `file.deleted` was handled for the file. Inside a transaction, read it after
    /// ``lockFile(_:_:)``: a delete then either committed before (and is seen) or waits.
    static func hasTombstone(_ fileID: String, _ schema: String, _ connection: PostgresConnection) throws -> Bool {
        try !connection.query("SELECT 1 FROM \(schema).deleted_files WHERE file_id = $1", [.text(fileID)]).isEmpty
    }

    /// ``hasTombstone(_:_:_:)`` outside a transaction: an early way out, re-checked at commit.
    func isDeleted(_ fileID: String) async throws -> Bool {
        try await !runtime.postgres.query("SELECT 1 FROM \(schema).deleted_files WHERE file_id = $1", [.text(fileID)]).isEmpty
    }

    /// Deletes up to 100 tombstones older than ``tombstoneRetention`` (in `file.deleted`'s
    /// transaction, so pruning keeps pace with deleting; rows another replica is pruning are
    /// skipped, never waited for).
    static func pruneTombstones(_ schema: String, _ connection: PostgresConnection) throws {
        try connection.execute("""
            DELETE FROM \(schema).deleted_files WHERE file_id IN (
                SELECT file_id FROM \(schema).deleted_files
                WHERE deleted_at < clock_timestamp() - interval '\(tombstoneRetention)'
                ORDER BY deleted_at LIMIT 100 FOR UPDATE SKIP LOCKED)
            """)
    }

    static func newID() -> String { UUID().uuidString.lowercased() }

}
