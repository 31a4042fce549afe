import Foundation
import Logging
import Metrics
import MQTT
import Postgres
import ServiceKit
import Secrets
import ServiceLifecycle
import Wire

/// Settings of the album service.
public struct AlbumConfiguration: Sendable {
    /// The service's own MQTT connection (publishing to frames, reading their telemetry).
    /// Use a client id unique per replica.
    public var mqtt: MQTTConfiguration
    /// The gateway's public base URL, e.g. "http://127.0.0.1:8080": `media_service_url` of a
    /// photo is `{publicGatewayURL}/api/v1/photos/{file_id}`.
    public var publicGatewayURL: String
    /// The brokers frames connect to (leaf brokers in a cluster). Each frame is given one at
    /// registration, chosen by ``frameBroker(for:)``; never empty.
    public var frameBrokers: [FrameBroker] {
        didSet { if frameBrokers.isEmpty { frameBrokers = oldValue } }
    }
    /// The first frame broker (the only one on a single machine).
    public var frameMQTTHost: String {
        get { frameBrokers.first?.host ?? "" }
        set { frameBrokers = [FrameBroker(host: newValue, port: frameMQTTPort)] }
    }
    public var frameMQTTPort: Int {
        get { frameBrokers.first?.port ?? 1883 }
        set { frameBrokers = [FrameBroker(host: frameMQTTHost, port: newValue)] }
    }
    /// Albums / photos per page when a request asks for none, and the most a page holds.
    public var defaultPageSize = 50
    public var maxPageSize = 200
    /// Name of the album created for a user's uploads without an album_id.
    public var defaultAlbumName = "My photos"
    /// How often the MQTT publisher retries pending notifications and syncs.
    public var retryInterval: Duration = .seconds(1)
    /// How long a photo notification whose publish failed waits before it is tried again,
    /// after its `n`th attempt: `min(cap, base · 2^n)`.
    public var pushBackOff = LeasedQueue.BackOff(base: .milliseconds(250), cap: .seconds(30))
    /// The keys capability URLs are signed with: the gateway that serves them must hold the
    /// same ones (`FRAMECAST_CAPABILITY_KEYS`). The default, a random key, suits only a process
    /// whose gateway shares this configuration's keys (tests, `framecast all` given them).
    public var capabilityKeys: CapabilityKeys = .random()
    /// How long a capability URL in a notification or a sync stays valid (rounded up to a
    /// whole day, so a version keeps one URL all day). A frame that holds an expired one falls
    /// back to the metadata document.
    public var capabilityLifetime: Duration = .seconds(7 * 86_400)
    /// The most often the retained sync of a frame that is offline is refreshed in the
    /// background after its albums changed (one sync per frame per interval, whatever the
    /// number of photos meanwhile), so a frame coming back finds a recent one. Online frames
    /// follow photo_added/photo_removed and ask (`sync_request`) when they miss one.
    public var syncRefreshInterval: Duration = .seconds(10)
    /// The most often a frame's `sync_request` is answered: one sync per frame per interval; a
    /// request inside the window is served when it ends (never dropped).
    public var syncRequestInterval: Duration = .seconds(2)

    public init(mqtt: MQTTConfiguration, publicGatewayURL: String, frameMQTTHost: String, frameMQTTPort: Int) {
        self.mqtt = mqtt
        self.publicGatewayURL = publicGatewayURL
        self.frameBrokers = [FrameBroker(host: frameMQTTHost, port: frameMQTTPort)]
    }

    /// Frames spread over `frameBrokers`; an empty list is refused (``Invalid``), at start.
    public init(mqtt: MQTTConfiguration, publicGatewayURL: String, frameBrokers: [FrameBroker]) throws {
        guard !frameBrokers.isEmpty else { throw Invalid(description: "at least one frame broker is needed") }
        self.mqtt = mqtt
        self.publicGatewayURL = publicGatewayURL
        self.frameBrokers = frameBrokers
    }

    /// The broker a frame is told to connect to: rendezvous (highest random weight) hashing
    /// of the frame id over `frameBrokers`. Stable for a frame while the list is unchanged,
    /// even across replicas and restarts (no shared state); frames spread evenly; adding or
    /// removing a broker moves only the frames that must move (about 1/n of them).
    /// Throws `internal` (failing one registration) only if the list were empty, which the
    /// initialisers and the setter never allow.
    public func frameBroker(for frameID: String) throws -> FrameBroker {
        guard let broker = FrameBroker.pick(for: frameID, among: frameBrokers) else {
            throw ServiceError.internal("no frame broker configured")
        }
        return broker
    }

    /// A configuration that cannot work.
    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// `publicGatewayURL` without trailing slashes.
    var gatewayBase: String {
        var base = publicGatewayURL
        while base.hasSuffix("/") { base.removeLast() }
        return base
    }

    func mediaURL(_ fileID: String) -> String {
        "\(gatewayBase)/api/v1/photos/\(fileID)"
    }

    /// The absolute capability URL of one version of `fileID`, valid until `expires` (Unix
    /// seconds, ``CapabilityPath/expiry(now:lifetime:)``).
    func capabilityURL(fileID: String, version: StoredVersion, expires: Int64) -> String {
        gatewayBase + CapabilityPath.sign(fileID: fileID, blobKey: version.blobKey, format: version.format, expires: expires,
                                          keys: capabilityKeys).path
    }
}

/// The album service (`svc.album.v1.*`): albums, members, album photos, frames and their
/// album subscriptions, sync status, and all MQTT publishing to frames.
///
/// Consumes `file.uploaded.with_ai` (adds uploads to albums), `media.cache_ready` (announces
/// photos on `albums/{id}/photo_added`, exactly once per album and photo, with the album's
/// sequence number and the versions' capability URLs — one publish per photo per album, never
/// a sync per frame; see ``FramePublisher``), `file.deleted` and
/// `media.schedule_changed` (the frame's rotation schedule, merged into its retained config);
/// produces `album.created`, `album.members_changed` (an album's members, for media's access
/// checks), `album.deleted`, `album.photo_added`, `album.photo_removed`, `device.deleted`,
/// `device.albums_changed` (a frame's owner, screen, albums and photos, for media's access
/// checks and renders) and `device.cache_reported` (photos a frame reported cached). Media
/// keeps its own copy of that state and never asks album (MediaState.swift; `Republisher`
/// publishes it once for data that existed before).
public final class AlbumService: Sendable {
    public static let name = AlbumAPI.service
    /// The PostgreSQL schema the service owns, and its migrations (after ServiceKit's).
    public static let schema = AlbumSchema.name
    public static var migrations: [Migration] { AlbumSchema.migrations }

    let runtime: ServiceRuntime
    let configuration: AlbumConfiguration
    let relay: OutboxRelay
    let publisher: FramePublisher
    /// Frames' identities and topic rights on the frame brokers (dynamic security).
    let admin: BrokerAdmin
    let logger: Logger
    let schema = AlbumSchema.name

    public init(runtime: ServiceRuntime, configuration: AlbumConfiguration, logger: Logger? = nil) throws {
        self.runtime = runtime
        self.configuration = configuration
        var logger = logger ?? runtime.logger
        logger[metadataKey: "service.name"] = "\(Self.name)"
        self.logger = logger
        self.relay = runtime.outboxRelay(schema: AlbumSchema.name)
        self.admin = try BrokerAdmin(configuration: configuration, postgres: runtime.postgres, schema: AlbumSchema.name, logger: logger)
        self.publisher = try FramePublisher(configuration: configuration, postgres: runtime.postgres,
                                            schema: AlbumSchema.name, relay: relay, admin: admin, logger: logger)
    }

    /// Migrates the `album` schema and returns the request server, the outbox relay, the event
    /// consumers and the MQTT publisher (which connects, follows frame telemetry, publishes
    /// pending notifications and disconnects cleanly on graceful shutdown).
    public func services() async throws -> [any Service] {
        var services = try await runtime.services(
            identity: ServiceIdentity(name: Self.name, description: "Framecast album: albums, members, frames, MQTT push"),
            schema: schema, migrations: AlbumSchema.migrations, endpoints: endpoints, events: events, relay: relay)
        // First in the group, so it stops last: request handlers and event consumers finish
        // their publishes before the MQTT connection closes.
        services.insert(publisher, at: 0)
        services.insert(admin, at: 0)
        services.append(Republisher(postgres: runtime.postgres, schema: schema, relay: relay, logger: logger))
        return services
    }

    var endpoints: [Endpoint] {
        [
            Endpoint(AlbumAPI.createAlbum) { [self] r, _ in try await createAlbum(r) },
            Endpoint(AlbumAPI.getAlbum) { [self] r, _ in try await getAlbum(r) },
            Endpoint(AlbumAPI.listAlbums) { [self] r, _ in try await listAlbums(r) },
            Endpoint(AlbumAPI.updateAlbum) { [self] r, _ in try await updateAlbum(r) },
            Endpoint(AlbumAPI.deleteAlbum) { [self] r, _ in try await deleteAlbum(r) },
            Endpoint(AlbumAPI.updateAlbumSettings) { [self] r, _ in try await updateAlbumSettings(r) },
            Endpoint(AlbumAPI.addMember) { [self] r, _ in try await addMember(r) },
            Endpoint(AlbumAPI.removeMember) { [self] r, _ in try await removeMember(r) },
            Endpoint(AlbumAPI.listMembers) { [self] r, _ in try await listMembers(r) },
            Endpoint(AlbumAPI.addAlbumPhoto) { [self] r, _ in try await addAlbumPhoto(r) },
            Endpoint(AlbumAPI.removeAlbumPhoto) { [self] r, _ in try await removeAlbumPhoto(r) },
            Endpoint(AlbumAPI.listAlbumPhotos) { [self] r, _ in try await listAlbumPhotos(r) },
            Endpoint(AlbumAPI.registerFrame) { [self] r, _ in try await registerFrame(r) },
            Endpoint(AlbumAPI.listFrames) { [self] r, _ in try await listFrames(r) },
            Endpoint(AlbumAPI.getFrame) { [self] r, _ in try await getFrame(r) },
            Endpoint(AlbumAPI.updateFrame) { [self] r, _ in try await updateFrame(r) },
            Endpoint(AlbumAPI.deleteFrame) { [self] r, _ in try await deleteFrame(r) },
            Endpoint(AlbumAPI.rotateFrameCredentials) { [self] r, _ in try await rotateFrameCredentials(r) },
            Endpoint(AlbumAPI.setFrameAlbums) { [self] r, _ in try await setFrameAlbums(r) },
            Endpoint(AlbumAPI.syncFrame) { [self] r, _ in try await syncFrame(r) },
            Endpoint(AlbumAPI.sendFrameCommand) { [self] r, _ in try await sendFrameCommand(r) },
            Endpoint(AlbumAPI.setFrameConfig) { [self] r, _ in try await setFrameConfig(r) },
            Endpoint(AlbumAPI.canViewPhoto) { [self] r, _ in try await canViewPhoto(r) },
            Endpoint(AlbumAPI.canViewAlbum) { [self] r, _ in try await canViewAlbum(r) },
        ]
    }

    var events: [EventHandler] {
        [
            EventHandler(FileUploadedWithAI.self) { [self] event, delivery in try await fileUploaded(event, delivery) },
            EventHandler(MediaCacheReady.self) { [self] event, delivery in try await cacheReady(event, delivery) },
            EventHandler(FileDeleted.self) { [self] event, delivery in try await fileDeleted(event, delivery) },
            EventHandler(MediaScheduleChanged.self) { [self] event, delivery in try await scheduleChanged(event, delivery) },
        ]
    }

    // MARK: Albums

    func createAlbum(_ request: CreateAlbumRequest) async throws -> AlbumReply {
        let user = try Self.user(request.userID)
        let name = try Self.text(request.name, "name", max: 200, required: true)
        let description = try Self.text(request.description, "description", max: 2000)
        let schema = self.schema
        let album: Album = try await runtime.postgres.withTransaction { c in
            let id = try Self.insertAlbum(owner: user, name: name, description: description, isDefault: false, schema, c)
            return try Self.readBack(Self.album(id, user: user, schema, c), else: .internal("the album just created was not found"))
        }
        relay.wake()
        return AlbumReply(album: album)
    }

    /// Inserts an album, its owner membership and `album.created`; returns the album id.
    static func insertAlbum(owner: String, name: String, description: String, isDefault: Bool,
                            _ schema: String, _ c: PostgresConnection) throws -> String {
        let id = UUID().uuidString.lowercased()
        _ = try c.execute("""
            INSERT INTO \(schema).albums (album_id, owner_id, name, description, is_default, settings)
            VALUES ($1::uuid, $2, $3, $4, $5, $6)
            """, [.text(id), .text(owner), .text(name), .text(description), .bool(isDefault), .bytea(AlbumSettings().wireBytes())])
        _ = try c.execute("INSERT INTO \(schema).album_members (album_id, user_id, role) VALUES ($1::uuid, $2, 'owner')",
                          [.text(id), .text(owner)])
        try enqueueMembersChanged(album: id, by: owner, schema, c)
        let album = try readBack(Self.album(id, user: owner, schema, c), else: .internal("the album just inserted was not found"))
        try Outbox.enqueue(AlbumCreated(eventID: Self.newID(), occurredAt: EventTime.now(), userID: owner, album: album),
                           schema: schema, on: c)
        return id
    }

    func getAlbum(_ request: GetAlbumRequest) async throws -> AlbumReply {
        let user = try Self.user(request.userID)
        guard let id = try Self.id(request.albumID, "album_id") else { throw Self.noAlbum }
        let schema = self.schema
        guard let album = try await runtime.postgres.withConnection({ c in try Self.album(id, user: user, schema, c) }) else {
            throw Self.noAlbum
        }
        return AlbumReply(album: album)
    }

    func listAlbums(_ request: ListAlbumsRequest) async throws -> ListAlbumsReply {
        let user = try Self.user(request.userID)
        let size = pageSize(request.pageSize)
        let offset = try Self.offset(request.pageToken)
        let schema = self.schema
        let rows = try await runtime.postgres.query("""
            \(Self.albumSelect(schema)) ORDER BY a.created_at DESC, a.album_id DESC LIMIT $2 OFFSET $3
            """, [.text(user), .int(Int64(size + 1)), .int(Int64(offset))])
        let albums = try rows.prefix(size).map(Self.album)
        return ListAlbumsReply(albums: albums, nextPageToken: rows.count > size ? String(offset + size) : "")
    }

    func updateAlbum(_ request: UpdateAlbumRequest) async throws -> AlbumReply {
        let user = try Self.user(request.userID)
        guard let id = try Self.id(request.albumID, "album_id") else { throw Self.noAlbum }
        let name = try request.name.map { try Self.text($0, "name", max: 200, required: true) }
        let description = try request.description.map { try Self.text($0, "description", max: 2000) }
        var cover: String?
        if let value = request.coverFileID, !value.isEmpty {
            guard let file = try Self.id(value, "cover_file_id") else { throw ServiceError.invalid("cover_file_id is not a photo of the album") }
            cover = file
        } else if request.coverFileID != nil {
            cover = ""
        }
        let (schema, newCover) = (self.schema, cover)
        let album: Album = try await runtime.postgres.withTransaction { c in
            try Self.requireRole(user, id, ["owner"], schema, c)
            if let cover = newCover, !cover.isEmpty, try c.query("SELECT 1 FROM \(schema).album_photos WHERE album_id = $1::uuid AND file_id = $2::uuid",
                                                      [.text(id), .text(cover)]).isEmpty {
                throw ServiceError.invalid("cover_file_id is not a photo of the album")
            }
            _ = try c.execute("""
                UPDATE \(schema).albums SET name = coalesce($2, name), description = coalesce($3, description),
                    cover_file_id = coalesce($4, cover_file_id), updated_at = clock_timestamp()
                WHERE album_id = $1::uuid
                """, [.text(id), name.map(PostgresValue.text) ?? .null, description.map(PostgresValue.text) ?? .null,
                      newCover.map(PostgresValue.text) ?? .null])
            return try Self.readBack(Self.album(id, user: user, schema, c), else: Self.noAlbum)
        }
        return AlbumReply(album: album)
    }

    func updateAlbumSettings(_ request: UpdateAlbumSettingsRequest) async throws -> AlbumReply {
        let user = try Self.user(request.userID)
        guard let id = try Self.id(request.albumID, "album_id") else { throw Self.noAlbum }
        let settings = request.settings ?? AlbumSettings()
        guard (0...86_400).contains(settings.intervalSeconds) else { throw ServiceError.invalid("interval_seconds must be 0…86400") }
        _ = try Self.text(settings.transition, "transition", max: 32)
        let schema = self.schema
        let album: Album = try await runtime.postgres.withTransaction { c in
            try Self.requireRole(user, id, ["owner"], schema, c)
            _ = try c.execute("UPDATE \(schema).albums SET settings = $2, updated_at = clock_timestamp() WHERE album_id = $1::uuid",
                              [.text(id), .bytea(settings.wireBytes())])
            return try Self.readBack(Self.album(id, user: user, schema, c), else: Self.noAlbum)
        }
        let message = AlbumConfigMessage(albumID: id, intervalSeconds: settings.intervalSeconds, shuffle: settings.shuffle,
                                         transition: settings.transition, showCaptions: settings.showCaptions)
        try await publisher.publishNow(FrameTopics.albumConfig(album: id), FrameTopics.encode(message), qos: .atLeastOnce, retain: true)
        return AlbumReply(album: album)
    }

    func deleteAlbum(_ request: DeleteAlbumRequest) async throws -> Empty {
        let user = try Self.user(request.userID)
        guard let id = try Self.id(request.albumID, "album_id") else { throw Self.noAlbum }
        let schema = self.schema
        let frames: [String] = try await runtime.postgres.withTransaction { c in
            try Self.requireRole(user, id, ["owner"], schema, c)
            let frames = try c.query("SELECT frame_id::text AS id FROM \(schema).frame_albums WHERE album_id = $1::uuid", [.text(id)])
                .map { try $0.decode("id", as: String.self) }
            let files = try c.query("SELECT file_id::text AS id FROM \(schema).album_photos WHERE album_id = $1::uuid", [.text(id)])
                .map { try $0.decode("id", as: String.self) }
            _ = try c.execute("DELETE FROM \(schema).album_pushes WHERE album_id = $1::uuid", [.text(id)])
            _ = try c.execute("DELETE FROM \(schema).albums WHERE album_id = $1::uuid", [.text(id)])
            // After the delete (its rows are locked): revisions above any change of these photos.
            for file in files {
                try Outbox.enqueue(AlbumPhotoRemoved(eventID: Self.newID(), occurredAt: EventTime.now(), userID: user,
                                                     albumID: id, fileID: file, reason: "album_deleted",
                                                     revision: try Self.photoRevision(schema, c)), schema: schema, on: c)
            }
            try Outbox.enqueue(AlbumDeleted(eventID: Self.newID(), occurredAt: EventTime.now(), userID: user, albumID: id),
                               schema: schema, on: c)
            for frame in frames {
                try Self.bumpSync(frame, schema, c)
                // The frame shows one album less (media's copy of the frame follows).
                try Self.enqueueAlbumsChanged(frame: frame, schema, c)
            }
            return frames
        }
        relay.wake()
        // Frames that showed the album get a sync without it; its retained config goes away.
        try? await publisher.publishNow(FrameTopics.albumConfig(album: id), [], qos: .atLeastOnce, retain: true)
        for frame in frames { _ = try? await publisher.publishSync(frame: frame) }
        return Empty()
    }

    // MARK: Members

    func addMember(_ request: AddMemberRequest) async throws -> MemberReply {
        let user = try Self.user(request.userID)
        guard let id = try Self.id(request.albumID, "album_id") else { throw Self.noAlbum }
        let member = try Self.text(request.memberUserID, "member_user_id", max: 200, required: true)
        let email = try Self.text(request.memberEmail, "member_email", max: 320)
        let name = try Self.text(request.memberName, "member_name", max: 200)
        let role: String
        switch request.role {
        case .contributor: role = "contributor"
        case .viewer: role = "viewer"
        case .owner: throw ServiceError.invalid("an album has one owner; add members as contributor or viewer")
        default: throw ServiceError.invalid("role must be contributor or viewer")
        }
        let schema = self.schema
        let row: Member = try await runtime.postgres.withTransaction { c in
            try Self.requireRole(user, id, ["owner"], schema, c)
            if member == user { throw ServiceError.conflict("the owner cannot change their own role") }
            let rows = try c.query("""
                INSERT INTO \(schema).album_members (album_id, user_id, email, name, role) VALUES ($1::uuid, $2, $3, $4, $5)
                ON CONFLICT (album_id, user_id) DO UPDATE SET role = EXCLUDED.role, email = EXCLUDED.email, name = EXCLUDED.name
                RETURNING \(Self.memberColumns)
                """, [.text(id), .text(member), .text(email), .text(name), .text(role)])
            guard let added = rows.first else { throw ServiceError.internal("the member just added was not returned") }
            try Self.enqueueMembersChanged(album: id, by: user, schema, c)
            return try Self.member(added)
        }
        relay.wake()
        return MemberReply(member: row)
    }

    func removeMember(_ request: RemoveMemberRequest) async throws -> Empty {
        let user = try Self.user(request.userID)
        guard let id = try Self.id(request.albumID, "album_id") else { throw Self.noAlbum }
        let member = try Self.text(request.memberUserID, "member_user_id", max: 200, required: true)
        let schema = self.schema
        let frames: [String] = try await runtime.postgres.withTransaction { c in
            // Members may leave; only the owner removes others; the owner cannot leave.
            if member == user {
                guard let role = try Self.role(user, id, schema, c) else { throw Self.noAlbum }
                if role == "owner" { throw ServiceError.conflict("the owner cannot leave their album; delete it instead") }
            } else {
                try Self.requireRole(user, id, ["owner"], schema, c)
            }
            let n = try c.execute("DELETE FROM \(schema).album_members WHERE album_id = $1::uuid AND user_id = $2 AND role <> 'owner'",
                                  [.text(id), .text(member)])
            if n == 0 { throw ServiceError.notFound("no such member") }
            try Self.enqueueMembersChanged(album: id, by: user, schema, c)
            // The member's frames stop showing the album (their broker role loses it before
            // their next sync is published).
            let frames = try c.query("""
                DELETE FROM \(schema).frame_albums fa USING \(schema).frames f
                WHERE fa.frame_id = f.frame_id AND fa.album_id = $1::uuid AND f.owner_id = $2
                RETURNING fa.frame_id::text AS id
                """, [.text(id), .text(member)]).map { try $0.decode("id", as: String.self) }
            for frame in frames {
                _ = try c.execute("DELETE FROM \(schema).album_sync_status WHERE frame_id = $1::uuid AND album_id = $2::uuid",
                                  [.text(frame), .text(id)])
                try Self.bumpSync(frame, schema, c)
                try Self.enqueueAlbumsChanged(frame: frame, schema, c)
            }
            return frames
        }
        relay.wake()
        for frame in frames { _ = try? await publisher.publishSync(frame: frame) }
        return Empty()
    }

    func listMembers(_ request: ListMembersRequest) async throws -> ListMembersReply {
        let user = try Self.user(request.userID)
        guard let id = try Self.id(request.albumID, "album_id") else { throw Self.noAlbum }
        let schema = self.schema
        let members: [Member] = try await runtime.postgres.withConnection { c in
            guard try Self.role(user, id, schema, c) != nil else { throw Self.noAlbum }
            return try c.query("SELECT \(Self.memberColumns) FROM \(schema).album_members WHERE album_id = $1::uuid ORDER BY added_at, user_id",
                               [.text(id)]).map(Self.member)
        }
        return ListMembersReply(members: members)
    }

    // MARK: Album photos

    func addAlbumPhoto(_ request: AddAlbumPhotoRequest) async throws -> AlbumPhotoReply {
        let user = try Self.user(request.userID)
        guard let id = try Self.id(request.albumID, "album_id") else { throw Self.noAlbum }
        guard let file = try Self.id(request.fileID, "file_id") else { throw Self.noFile }
        let schema = self.schema
        // Check the album first (404 / 403 before anything else), then learn the file.
        _ = try await runtime.postgres.withConnection { c in try Self.requireRole(user, id, ["owner", "contributor"], schema, c) }
        try await learnFile(file, user: user)
        let (photo, added): (AlbumPhoto, Bool) = try await runtime.postgres.withTransaction { [configuration] c in
            try Self.requireRole(user, id, ["owner", "contributor"], schema, c)
            // Deleted (file.deleted handled, under the file's lock): never added again.
            if try Self.fileIsDeleted(locking: file, schema, c) { throw Self.noFile }
            // A user adds their own files, or files they can already see in one of their albums.
            let visible = try !c.query("""
                SELECT 1 FROM \(schema).photos p WHERE p.file_id = $1::uuid AND p.known AND (p.owner_id = $2 OR EXISTS (
                    SELECT 1 FROM \(schema).album_photos ap JOIN \(schema).album_members m ON m.album_id = ap.album_id
                    WHERE ap.file_id = p.file_id AND m.user_id = $2))
                """, [.text(file), .text(user)]).isEmpty
            guard visible else { throw Self.noFile }
            let added = try Self.insertAlbumPhoto(album: id, file: file, by: user, configuration, schema, c)
            return (try Self.readBack(Self.albumPhoto(album: id, file: file, schema, c),
                                      else: .internal("the album photo just added was not found")), added)
        }
        if added {
            relay.wake()
            publisher.wake()
        }
        return AlbumPhotoReply(photo: photo)
    }

    /// Makes sure `photos` knows `file` (owner, name, type, labels): from storage when no
    /// file.uploaded.with_ai has told us yet. Not found or storage unavailable: not_found.
    func learnFile(_ file: String, user: String) async throws {
        let schema = self.schema
        let known = try await runtime.postgres.query("SELECT 1 FROM \(schema).photos WHERE file_id = $1::uuid AND known", [.text(file)])
        guard known.isEmpty else { return }
        let client = ServiceClient(service: StorageAPI.service, nats: runtime.nats, timeout: .seconds(3))
        let reply: GetFileReply
        do {
            reply = try await client.call(StorageAPI.getFile, GetFileRequest(userID: user, fileID: file))
        } catch {
            logger.debug("file unknown to storage or storage unavailable", metadata: ["file.id": "\(file)", "error": "\(error)"])
            throw Self.noFile
        }
        guard let record = reply.file else { throw Self.noFile }
        // Storage answered before a delete that album has handled since: learn nothing.
        try await runtime.postgres.withTransaction { c in
            if try Self.fileIsDeleted(locking: file, schema, c) { throw Self.noFile }
            try Self.upsertPhoto(record, schema, c)
        }
    }

    static func upsertPhoto(_ file: FileRecord, _ schema: String, _ c: PostgresConnection) throws {
        let labels = String(decoding: FrameTopics.encode(file.aiMetadata?.labels ?? []), as: UTF8.self)
        let takenAt: PostgresValue = file.analysis?.takenAt.map { .int($0) } ?? .null
        _ = try c.execute("""
            INSERT INTO \(schema).photos (file_id, owner_id, file_name, content_type, taken_at, ai_labels, known)
            VALUES ($1::uuid, $2, $3, $4, $5::bigint, $6, true)
            ON CONFLICT (file_id) DO UPDATE SET owner_id = EXCLUDED.owner_id, file_name = EXCLUDED.file_name,
                content_type = EXCLUDED.content_type, taken_at = EXCLUDED.taken_at, ai_labels = EXCLUDED.ai_labels, known = true
            """, [.text(file.fileID.lowercased()), .text(file.userID), .text(file.fileName), .text(file.contentType), takenAt, .text(labels)])
    }

    /// Adds a known photo to an album (idempotent). When it is new there: `album.photo_added`,
    /// and, if media already rendered the photo, its MQTT notification is queued.
    static func insertAlbumPhoto(album: String, file: String, by user: String, _ configuration: AlbumConfiguration,
                                 _ schema: String, _ c: PostgresConnection) throws -> Bool {
        let inserted = try c.execute("""
            INSERT INTO \(schema).album_photos (album_id, file_id, added_by) VALUES ($1::uuid, $2::uuid, $3)
            ON CONFLICT DO NOTHING
            """, [.text(album), .text(file), .text(user)]) == 1
        guard inserted else { return false }
        let photo = try readBack(albumPhoto(album: album, file: file, schema, c), else: .internal("the album photo just inserted was not found"))
        try Outbox.enqueue(AlbumPhotoAdded(eventID: newID(), occurredAt: EventTime.now(), userID: user, photo: photo,
                                           revision: try photoRevision(schema, c)), schema: schema, on: c)
        _ = try c.execute("DELETE FROM \(schema).album_pushes WHERE album_id = $1::uuid AND file_id = $2::uuid AND kind = 'removed'",
                          [.text(album), .text(file)])
        try queueAddedPushes(file: file, albums: [album], configuration, schema, c)
        return true
    }

    /// Queues `photo_added` for `file` in each album (that holds it) when its versions are ready.
    /// A row already there (pending or published) stays as it is: one notification per (album,
    /// file). Each new row takes the album's next sequence number (``nextAlbumSeq(_:_:_:)``) and
    /// carries the photo's versions with capability URLs signed now. Callers hold the file's
    /// lock (``fileIsDeleted(locking:_:_:)``), so two of them never queue the same row; albums
    /// are taken in id order, as every transaction that locks several album rows does.
    static func queueAddedPushes(file: String, albums: [String]?, _ configuration: AlbumConfiguration,
                                 _ schema: String, _ c: PostgresConnection) throws {
        let rows = try c.query("""
            SELECT ap.album_id::text AS album_id, p.file_name, p.content_type, p.taken_at, p.ai_labels, p.versions
            FROM \(schema).album_photos ap JOIN \(schema).photos p ON p.file_id = ap.file_id
            WHERE ap.file_id = $1::uuid AND p.cache_ready AND ($2 = '' OR ap.album_id::text = ANY(string_to_array($2, ',')))
                AND NOT EXISTS (SELECT 1 FROM \(schema).album_pushes q
                                WHERE q.album_id = ap.album_id AND q.file_id = ap.file_id AND q.kind = 'added')
            ORDER BY ap.album_id
            """, [.text(file), .text(albums?.joined(separator: ",") ?? "")])
        guard !rows.isEmpty else { return }
        let expires = CapabilityPath.expiry(lifetime: configuration.capabilityLifetime)
        for row in rows {
            let album: String = try row.decode("album_id")
            // Under the album's lock, read again: a removal that committed meanwhile (it holds
            // the same lock) took the photo out, or the album went; nothing to announce then.
            guard try lockAlbum(album, schema, c), try !c.query(
                "SELECT 1 FROM \(schema).album_photos WHERE album_id = $1::uuid AND file_id = $2::uuid", [.text(album), .text(file)]
            ).isEmpty, let seq = try nextAlbumSeq(album, schema, c) else { continue }
            let message = PhotoAddedMessage(
                fileID: file, albumID: album, fileName: try row.decode("file_name"), contentType: try row.decode("content_type"),
                labels: labels(try row.decode("ai_labels")), takenAt: try row.decode("taken_at"),
                mediaServiceURL: configuration.mediaURL(file), seq: seq,
                versions: StoredVersion.links(StoredVersion.decode(try row.decode("versions")), fileID: file, expires: expires, configuration))
            _ = try c.execute("""
                INSERT INTO \(schema).album_pushes (album_id, file_id, kind, payload) VALUES ($1::uuid, $2::uuid, 'added', $3)
                ON CONFLICT DO NOTHING
                """, [.text(album), .text(file), .bytea(FrameTopics.encode(message))])
        }
    }

    /// Takes the album's next sequence number, in the caller's transaction (which queues the
    /// photo_added / photo_removed carrying it): the album's row stays locked until it commits,
    /// so numbers follow commit order and a frame can tell a missed message (a gap) from a
    /// repeat. Nil when the album is gone. A number taken by a row that is later deleted before
    /// it was published (a photo removed, or added back, before its notification went out)
    /// leaves a gap: frames then ask for their sync, which is always safe.
    static func nextAlbumSeq(_ album: String, _ schema: String, _ c: PostgresConnection) throws -> Int64? {
        try c.query("UPDATE \(schema).albums SET seq = seq + 1 WHERE album_id = $1::uuid RETURNING seq", [.text(album)])
            .first?.decode("seq")
    }

    /// Locks the album's row for the rest of the transaction, as taking its number does (FOR NO
    /// KEY UPDATE: adding photos to it, which only references it, is not blocked); false when the
    /// album is gone. Queueing a photo_added and removing a photo both take it first, so one
    /// waits for the other and then sees what it committed (each statement of a READ COMMITTED
    /// transaction does).
    static func lockAlbum(_ album: String, _ schema: String, _ c: PostgresConnection) throws -> Bool {
        try !c.query("SELECT 1 FROM \(schema).albums WHERE album_id = $1::uuid FOR NO KEY UPDATE", [.text(album)]).isEmpty
    }

    /// Removes a photo from an album: `album.photo_removed`, and MQTT `photo_removed` (with the
    /// album's next sequence number) queued when frames were told about it. Frames showing the
    /// album are not resynced: the notification's number tells them whether they missed
    /// anything. Returns false when absent.
    static func deleteAlbumPhoto(album: String, file: String, by user: String, reason: String,
                                 _ schema: String, _ c: PostgresConnection) throws -> Bool {
        // The album's lock first (see ``lockAlbum(_:_:_:)``): a photo_added being queued for this
        // photo commits before, and its row is seen below, or after, and finds the photo gone.
        guard try lockAlbum(album, schema, c) else { return false }
        let removed = try c.execute("DELETE FROM \(schema).album_photos WHERE album_id = $1::uuid AND file_id = $2::uuid",
                                    [.text(album), .text(file)]) == 1
        guard removed else { return false }
        try Outbox.enqueue(AlbumPhotoRemoved(eventID: newID(), occurredAt: EventTime.now(), userID: user, albumID: album,
                                             fileID: file, reason: reason, revision: try photoRevision(schema, c)),
                           schema: schema, on: c)
        // Frames heard of the photo if its photo_added went out or may be going out right now.
        let announced = try c.query("""
            DELETE FROM \(schema).album_pushes WHERE album_id = $1::uuid AND file_id = $2::uuid AND kind = 'added'
            RETURNING state = 'published' OR coalesce(claimed_until > now(), false) AS announced
            """, [.text(album), .text(file)]).first?.decode("announced", as: Bool.self) ?? false
        if announced, let seq = try nextAlbumSeq(album, schema, c) {
            let message = PhotoRemovedMessage(fileID: file, albumID: album, reason: reason, seq: seq)
            _ = try c.execute("""
                INSERT INTO \(schema).album_pushes (album_id, file_id, kind, payload) VALUES ($1::uuid, $2::uuid, 'removed', $3)
                ON CONFLICT (album_id, file_id, kind) DO UPDATE SET state = 'pending', payload = EXCLUDED.payload,
                    published_at = NULL, claimed_until = NULL, not_before = NULL
                """, [.text(album), .text(file), .bytea(FrameTopics.encode(message))])
        }
        return true
    }

    func removeAlbumPhoto(_ request: RemoveAlbumPhotoRequest) async throws -> Empty {
        let user = try Self.user(request.userID)
        guard let id = try Self.id(request.albumID, "album_id") else { throw Self.noAlbum }
        guard let file = try Self.id(request.fileID, "file_id") else { throw Self.noFile }
        let schema = self.schema
        try await runtime.postgres.withTransaction { c in
            try Self.requireRole(user, id, ["owner", "contributor"], schema, c)
            guard try Self.deleteAlbumPhoto(album: id, file: file, by: user, reason: "removed", schema, c) else { throw Self.noFile }
            _ = try c.execute("UPDATE \(schema).albums SET cover_file_id = '' WHERE album_id = $1::uuid AND cover_file_id = $2",
                              [.text(id), .text(file)])
        }
        relay.wake()
        publisher.wake()
        return Empty()
    }

    func listAlbumPhotos(_ request: ListAlbumPhotosRequest) async throws -> ListAlbumPhotosReply {
        let user = try Self.user(request.userID)
        guard let id = try Self.id(request.albumID, "album_id") else { throw Self.noAlbum }
        let size = pageSize(request.pageSize)
        let offset = try Self.offset(request.pageToken)
        let schema = self.schema
        let rows: [PostgresRow] = try await runtime.postgres.withConnection { c in
            guard try Self.role(user, id, schema, c) != nil else { throw Self.noAlbum }
            return try c.query("""
                SELECT \(Self.photoColumns) FROM \(schema).album_photos ap JOIN \(schema).photos p ON p.file_id = ap.file_id
                WHERE ap.album_id = $1::uuid ORDER BY ap.added_at DESC, ap.file_id DESC LIMIT $2 OFFSET $3
                """, [.text(id), .int(Int64(size + 1)), .int(Int64(offset))])
        }
        return ListAlbumPhotosReply(photos: try rows.prefix(size).map(Self.albumPhoto),
                                    nextPageToken: rows.count > size ? String(offset + size) : "")
    }

    // MARK: Access

    static let noAlbum = ServiceError.notFound("no such album")
    static let noFile = ServiceError.notFound("no such photo")

    /// A row read back in the transaction that wrote or checked it. Missing only when the
    /// database lost a race (an album deleted while its update waited for the delete's lock) or
    /// did not keep what was written: `error` fails this one request or event, never the process.
    static func readBack<Row>(_ row: Row?, else error: ServiceError) throws -> Row {
        guard let row else { throw error }
        return row
    }

    static func role(_ user: String, _ album: String, _ schema: String, _ c: PostgresConnection) throws -> String? {
        try c.query("SELECT role FROM \(schema).album_members WHERE album_id = $1::uuid AND user_id = $2", [.text(album), .text(user)])
            .first?.decode("role")
    }

    /// not_found for non-members (the album's existence is not revealed), unauthorized for
    /// members whose role is not in `roles`.
    @discardableResult
    static func requireRole(_ user: String, _ album: String, _ roles: Set<String>, _ schema: String,
                            _ c: PostgresConnection) throws -> String {
        guard let role = try role(user, album, schema, c) else { throw noAlbum }
        guard roles.contains(role) else {
            throw ServiceError.unauthorized("a \(role) of this album may not do this")
        }
        return role
    }

    // MARK: Rows

    static func albumSelect(_ schema: String) -> String {
        """
        SELECT a.album_id::text AS album_id, a.owner_id, a.name, a.description, a.is_default, a.cover_file_id, a.settings,
            (extract(epoch FROM a.created_at) * 1000)::bigint AS created_ms,
            (extract(epoch FROM a.updated_at) * 1000)::bigint AS updated_ms,
            (SELECT count(*) FROM \(schema).album_photos ap WHERE ap.album_id = a.album_id)::integer AS photo_count,
            m.role
        FROM \(schema).albums a JOIN \(schema).album_members m ON m.album_id = a.album_id AND m.user_id = $1
        """
    }

    static func album(_ id: String, user: String, _ schema: String, _ c: PostgresConnection) throws -> Album? {
        try c.query("\(albumSelect(schema)) WHERE a.album_id = $2::uuid", [.text(user), .text(id)]).first.map(album)
    }

    static func album(_ row: PostgresRow) throws -> Album {
        let settings: [UInt8] = try row.decode("settings")
        return Album(
            albumID: try row.decode("album_id"), ownerID: try row.decode("owner_id"), name: try row.decode("name"),
            description: try row.decode("description"), isDefault: try row.decode("is_default"),
            photoCount: try row.decode("photo_count"), role: wireRole(try row.decode("role")),
            coverFileID: try row.decode("cover_file_id"),
            settings: settings.isEmpty ? AlbumSettings() : try AlbumSettings(wireBytes: settings),
            createdAt: try row.decode("created_ms"), updatedAt: try row.decode("updated_ms"))
    }

    static let memberColumns = """
        album_id::text AS album_id, user_id, email, name, role, (extract(epoch FROM added_at) * 1000)::bigint AS added_ms
        """

    static func member(_ row: PostgresRow) throws -> Member {
        Member(albumID: try row.decode("album_id"), userID: try row.decode("user_id"), email: try row.decode("email"),
               name: try row.decode("name"), role: wireRole(try row.decode("role")), addedAt: try row.decode("added_ms"))
    }

    static let photoColumns = """
        ap.album_id::text AS album_id, ap.file_id::text AS file_id, ap.added_by,
        (extract(epoch FROM ap.added_at) * 1000)::bigint AS added_ms, p.file_name, p.content_type, p.taken_at, p.ai_labels
        """

    static func albumPhoto(album: String, file: String, _ schema: String, _ c: PostgresConnection) throws -> AlbumPhoto? {
        try c.query("""
            SELECT \(photoColumns) FROM \(schema).album_photos ap JOIN \(schema).photos p ON p.file_id = ap.file_id
            WHERE ap.album_id = $1::uuid AND ap.file_id = $2::uuid
            """, [.text(album), .text(file)]).first.map(albumPhoto)
    }

    static func albumPhoto(_ row: PostgresRow) throws -> AlbumPhoto {
        AlbumPhoto(albumID: try row.decode("album_id"), fileID: try row.decode("file_id"), addedBy: try row.decode("added_by"),
                   addedAt: try row.decode("added_ms"), fileName: try row.decode("file_name"),
                   contentType: try row.decode("content_type"), takenAt: try row.decode("taken_at"),
                   aiLabels: labels(try row.decode("ai_labels")))
    }

    static func wireRole(_ role: String) -> Role {
        switch role {
        case "owner": .owner
        case "contributor": .contributor
        case "viewer": .viewer
        default: .unspecified
        }
    }

    static func labels(_ json: String) -> [String] {
        (try? FrameTopics.decode([String].self, from: Array(json.utf8))) ?? []
    }

    // MARK: Input

    static func user(_ id: String) throws -> String { try Input.user(id) }

    /// An id that may end up in an MQTT topic: invalid when it could break a topic (`/`, `+`,
    /// `#`, NUL, too long, empty); nil (the caller answers not_found) when it is not a UUID,
    /// as every id this service hands out is.
    static func id(_ text: String, _ field: String) throws -> String? {
        guard TopicID.isValid(text) else { throw ServiceError.invalid("\(field) is not a valid id") }
        return UUID(uuidString: text).map { $0.uuidString.lowercased() }
    }

    /// ``Input/text(_:_:max:required:)``, and no DEL or C1 control characters either (these
    /// texts reach frames' screens).
    static func text(_ value: String, _ field: String, max: Int, required: Bool = false) throws -> String {
        let text = try Input.text(value, field, max: max, required: required)
        guard !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control && $0 != "\n" && $0 != "\t" }) else {
            throw ServiceError.invalid("\(field) contains control characters")
        }
        return text
    }

    func pageSize(_ asked: Int32) -> Int {
        asked <= 0 ? configuration.defaultPageSize : min(Int(asked), configuration.maxPageSize)
    }

    static func offset(_ token: String) throws -> Int { try Input.offset(token) }

    static func newID() -> String { UUID().uuidString.lowercased() }

    /// Marks a frame's sync as due (a new sequence number); the publisher publishes it.
    static func bumpSync(_ frame: String, _ schema: String, _ c: PostgresConnection) throws {
        _ = try c.execute("UPDATE \(schema).frames SET sync_seq = sync_seq + 1 WHERE frame_id = $1::uuid", [.text(frame)])
    }
}
