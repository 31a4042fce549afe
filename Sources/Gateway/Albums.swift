import Foundation
import Hummingbird
import ServiceKit
import Wire

// Albums, members, album photos and frames: the gateway authenticates, resolves e-mails and
// issues frame tokens; the album service decides everything else.

struct AlbumJSON: Encodable, Sendable {
    struct Settings: Codable, Sendable {
        var interval_seconds: Int32?
        var shuffle: Bool?
        var transition: String?
        var show_captions: Bool?
    }
    let album_id, owner_id, name, description: String
    let is_default: Bool
    let photo_count: Int32
    let role: String?
    let cover_file_id: String?
    let settings: Settings
    let created_at, updated_at: String

    init(_ a: Album) {
        album_id = a.albumID; owner_id = a.ownerID; name = a.name; description = a.description
        is_default = a.isDefault; photo_count = a.photoCount; role = roleName(a.role)
        cover_file_id = a.coverFileID.isEmpty ? nil : a.coverFileID
        let s = a.settings ?? AlbumSettings()
        settings = Settings(interval_seconds: s.intervalSeconds, shuffle: s.shuffle, transition: s.transition, show_captions: s.showCaptions)
        created_at = FileJSON.iso(a.createdAt); updated_at = FileJSON.iso(a.updatedAt)
    }
}

struct MemberJSON: Encodable, Sendable {
    let album_id, user_id, email, name: String
    let role: String?
    let added_at: String
    init(_ m: Member) {
        album_id = m.albumID; user_id = m.userID; email = m.email; name = m.name; role = roleName(m.role)
        added_at = FileJSON.iso(m.addedAt)
    }
}

struct AlbumPhotoJSON: Encodable, Sendable {
    let album_id, file_id, added_by, file_name, content_type: String
    let added_at: String
    let taken_at: String?
    let ai_labels: [String]
    init(_ p: AlbumPhoto) {
        album_id = p.albumID; file_id = p.fileID; added_by = p.addedBy; file_name = p.fileName; content_type = p.contentType
        added_at = FileJSON.iso(p.addedAt); taken_at = p.takenAt.map(FileJSON.iso); ai_labels = p.aiLabels
    }
}

struct FrameJSON: Encodable, Sendable {
    struct Config: Codable, Sendable {
        var interval_seconds: Int32?
        var shuffle: Bool?
        var sleep_start, sleep_end, time_zone, transition, preferred_format: String?
        var brightness: Int32?
    }
    struct Sync: Encodable, Sendable {
        let album_id: String
        let total_photos, displayed_photos: Int32
        let last_displayed_file_id: String?
        let last_displayed_at: String?
        let sync_sequence: Int64
        let last_synced_at: String?
    }
    let frame_id, owner_id, name: String
    let width, height: Int32
    let orientation: String
    let album_ids: [String]
    let config: Config
    let online: Bool
    let last_heartbeat_at: String?
    let sync_status: [Sync]
    let created_at, updated_at: String

    init(_ f: Frame) {
        frame_id = f.frameID; owner_id = f.ownerID; name = f.name; width = f.width; height = f.height
        orientation = f.orientation == .portrait ? "portrait" : "landscape"
        album_ids = f.albumIDs
        let c = f.config ?? FrameConfig()
        config = Config(interval_seconds: c.intervalSeconds, shuffle: c.shuffle, sleep_start: c.sleepStart, sleep_end: c.sleepEnd,
                        time_zone: c.timeZone, transition: c.transition, preferred_format: c.preferredFormat, brightness: c.brightness)
        online = f.online
        last_heartbeat_at = f.lastHeartbeatAt == 0 ? nil : FileJSON.iso(f.lastHeartbeatAt)
        sync_status = f.syncStatus.map {
            Sync(album_id: $0.albumID, total_photos: $0.totalPhotos, displayed_photos: $0.displayedPhotos,
                 last_displayed_file_id: $0.lastDisplayedFileID.isEmpty ? nil : $0.lastDisplayedFileID,
                 last_displayed_at: $0.lastDisplayedAt == 0 ? nil : FileJSON.iso($0.lastDisplayedAt),
                 sync_sequence: $0.syncSequence, last_synced_at: $0.lastSyncedAt == 0 ? nil : FileJSON.iso($0.lastSyncedAt))
        }
        created_at = FileJSON.iso(f.createdAt); updated_at = FileJSON.iso(f.updatedAt)
    }
}

// Request and response bodies of the album and frame routes.
struct CreateAlbum: Decodable { let name: String; let description: String? }
struct PatchAlbum: Decodable {
            let name: String?
            let description: String?
            let cover_file_id: String?
            let settings: AlbumJSON.Settings?
        }
struct AddMemberBody: Decodable { let email: String; let role: String }
struct AddPhotoBody: Decodable { let file_id: String }
struct RegisterBody: Decodable { let name: String; let width: Int32; let height: Int32; let orientation: String?; let album_ids: [String]? }
struct PatchBody: Decodable { let name: String?; let width: Int32?; let height: Int32?; let orientation: String? }
struct AlbumsBody: Decodable { let album_ids: [String] }
struct CommandBody: Decodable { let command: String; let args: [String: String]? }
struct Registered: Encodable, Sendable {
            struct MQTT: Encodable, Sendable { let host: String; let port: Int32; let username: String; let password: String }
            let frame_id: String
            let frame_token: String
            let mqtt: MQTT
            let frame: FrameJSON
        }
struct AlbumPage: Encodable, Sendable { let albums: [AlbumJSON]; let next_page_token: String? }
struct AlbumPhotoPage: Encodable, Sendable { let photos: [AlbumPhotoJSON]; let next_page_token: String? }
struct MemberList: Encodable, Sendable { let members: [MemberJSON] }
struct FrameList: Encodable, Sendable { let frames: [FrameJSON] }
struct Synced: Encodable, Sendable { let sequence: Int64; let photo_count: Int32 }
struct CommandSent: Encodable, Sendable { let command_id: String }

func roleName(_ role: Role) -> String? {
    switch role {
    case .owner: "owner"
    case .contributor: "contributor"
    case .viewer: "viewer"
    default: nil
    }
}

struct JSONBody<Body: Encodable & Sendable>: ResponseGenerator {
    var status: HTTPResponse.Status = .ok
    let body: Body
    func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = try context.responseEncoder.encode(body, from: request, context: context)
        response.status = status
        return response
    }
}

extension Gateway {
    func registerAlbumRoutes(_ router: Router<GatewayContext>) {

        add(router, .post, "/api/v1/albums") { [self] request, context in
            let user = try context.requireUser()
            let body = try await request.decode(as: CreateAlbum.self, context: context)
            try TextInput.name(body.name, "name")
            try TextInput.text(body.description, "description")
            let reply = try await album.call(AlbumAPI.createAlbum, CreateAlbumRequest(userID: user, name: body.name,
                                                                                      description: body.description ?? ""),
                                             headers: headers(context))
            return JSONBody(status: .created, body: AlbumJSON(try require(reply.album)))
        }
        add(router, .get, "/api/v1/albums") { [self] request, context in
            let user = try context.requireUser()
            let reply = try await album.call(AlbumAPI.listAlbums, ListAlbumsRequest(
                userID: user, pageSize: try pageSize(request), pageToken: request.uri.queryParameters.get("page_token") ?? ""),
                headers: headers(context))
            return JSONBody(body: AlbumPage(albums: reply.albums.map(AlbumJSON.init),
                                       next_page_token: reply.nextPageToken.isEmpty ? nil : reply.nextPageToken))
        }
        add(router, .get, "/api/v1/albums/:album_id") { [self] _, context in
            let reply = try await album.call(AlbumAPI.getAlbum, GetAlbumRequest(
                userID: try context.requireUser(), albumID: try context.parameters.require("album_id")), headers: headers(context))
            return JSONBody(body: AlbumJSON(try require(reply.album)))
        }
        add(router, .patch, "/api/v1/albums/:album_id") { [self] request, context in
            let user = try context.requireUser()
            let id = try context.parameters.require("album_id")
            let body = try await request.decode(as: PatchAlbum.self, context: context)
            try TextInput.name(body.name, "name")
            try TextInput.text(body.description, "description")
            var reply = try await album.call(AlbumAPI.updateAlbum, UpdateAlbumRequest(
                userID: user, albumID: id, name: body.name, description: body.description, coverFileID: body.cover_file_id),
                headers: headers(context))
            if let s = body.settings {
                reply = try await album.call(AlbumAPI.updateAlbumSettings, UpdateAlbumSettingsRequest(
                    userID: user, albumID: id, settings: AlbumSettings(
                        intervalSeconds: s.interval_seconds ?? 0, shuffle: s.shuffle ?? false,
                        transition: s.transition ?? "", showCaptions: s.show_captions ?? false)), headers: headers(context))
            }
            return JSONBody(body: AlbumJSON(try require(reply.album)))
        }
        add(router, .delete, "/api/v1/albums/:album_id") { [self] _, context in
            _ = try await album.call(AlbumAPI.deleteAlbum, DeleteAlbumRequest(
                userID: try context.requireUser(), albumID: try context.parameters.require("album_id")), headers: headers(context))
            return Response(status: .noContent)
        }
        add(router, .get, "/api/v1/albums/:album_id/members") { [self] _, context in
            let reply = try await album.call(AlbumAPI.listMembers, ListMembersRequest(
                userID: try context.requireUser(), albumID: try context.parameters.require("album_id")), headers: headers(context))
            return JSONBody(body: MemberList(members: reply.members.map(MemberJSON.init)))
        }
        add(router, .post, "/api/v1/albums/:album_id/members") { [self] request, context in
            let user = try context.requireUser()
            let body = try await request.decode(as: AddMemberBody.self, context: context)
            let role = try Self.role(body.role)
            guard let account = try await accounts.account(forEmail: body.email) else {
                throw APIError.notFound("no account with this email")
            }
            let reply = try await album.call(AlbumAPI.addMember, AddMemberRequest(
                userID: user, albumID: try context.parameters.require("album_id"), memberUserID: account.userID,
                memberEmail: account.email, memberName: account.name, role: role), headers: headers(context))
            return JSONBody(status: .created, body: MemberJSON(try require(reply.member)))
        }
        add(router, .delete, "/api/v1/albums/:album_id/members/:user_id") { [self] _, context in
            _ = try await album.call(AlbumAPI.removeMember, RemoveMemberRequest(
                userID: try context.requireUser(), albumID: try context.parameters.require("album_id"),
                memberUserID: try context.parameters.require("user_id")), headers: headers(context))
            return Response(status: .noContent)
        }
        add(router, .get, "/api/v1/albums/:album_id/photos") { [self] request, context in
            let reply = try await album.call(AlbumAPI.listAlbumPhotos, ListAlbumPhotosRequest(
                userID: try context.requireUser(), albumID: try context.parameters.require("album_id"),
                pageSize: try pageSize(request), pageToken: request.uri.queryParameters.get("page_token") ?? ""),
                headers: headers(context))
            return JSONBody(body: AlbumPhotoPage(photos: reply.photos.map(AlbumPhotoJSON.init),
                                       next_page_token: reply.nextPageToken.isEmpty ? nil : reply.nextPageToken))
        }
        add(router, .post, "/api/v1/albums/:album_id/photos") { [self] request, context in
            let body = try await request.decode(as: AddPhotoBody.self, context: context)
            let reply = try await album.call(AlbumAPI.addAlbumPhoto, AddAlbumPhotoRequest(
                userID: try context.requireUser(), albumID: try context.parameters.require("album_id"), fileID: body.file_id),
                headers: headers(context))
            return JSONBody(status: .created, body: AlbumPhotoJSON(try require(reply.photo)))
        }
        add(router, .delete, "/api/v1/albums/:album_id/photos/:file_id") { [self] _, context in
            _ = try await album.call(AlbumAPI.removeAlbumPhoto, RemoveAlbumPhotoRequest(
                userID: try context.requireUser(), albumID: try context.parameters.require("album_id"),
                fileID: try context.parameters.require("file_id")), headers: headers(context))
            return Response(status: .noContent)
        }
    }

    func registerFrameRoutes(_ router: Router<GatewayContext>) {

        add(router, .post, "/api/v1/frames") { [self] request, context in
            let user = try context.requireUser()
            let body = try await request.decode(as: RegisterBody.self, context: context)
            try TextInput.name(body.name, "name")
            let reply = try await album.call(AlbumAPI.registerFrame, RegisterFrameRequest(
                userID: user, name: body.name, width: body.width, height: body.height, orientation: try Self.orientation(body.orientation),
                albumIDs: body.album_ids ?? []),
                headers: headers(context))
            let frame = try require(reply.frame)
            let mqtt = reply.mqtt ?? MqttCredentials()
            let token = try await accounts.issueFrameToken(frameID: frame.frameID, ownerID: user)
            return JSONBody(status: .created, body: Registered(
                frame_id: frame.frameID, frame_token: token,
                mqtt: .init(host: mqtt.host, port: mqtt.port, username: mqtt.username, password: mqtt.password),
                frame: FrameJSON(frame)))
        }
        add(router, .get, "/api/v1/frames") { [self] _, context in
            let reply = try await album.call(AlbumAPI.listFrames, ListFramesRequest(userID: try context.requireUser()),
                                             headers: headers(context))
            return JSONBody(body: FrameList(frames: reply.frames.map(FrameJSON.init)))
        }
        add(router, .get, "/api/v1/frames/:frame_id") { [self] _, context in
            let id = try context.parameters.require("frame_id")
            let request: GetFrameRequest
            switch context.principal {
            case .user(let user): request = GetFrameRequest(userID: user, frameID: id)
            case .frame(let frame, _): request = GetFrameRequest(frameID: id, principal: Wire.Principal(kind: .frame, id: frame))
            case nil: throw APIError.unauthenticated
            }
            return JSONBody(body: FrameJSON(try require(try await album.call(AlbumAPI.getFrame, request, headers: headers(context)).frame)))
        }
        add(router, .patch, "/api/v1/frames/:frame_id") { [self] request, context in
            let id = try context.parameters.require("frame_id")
            let body = try await request.decode(as: PatchBody.self, context: context)
            try TextInput.name(body.name, "name")
            // The owner changes anything; a frame (its own token) only its own screen: a browser
            // frame re-registers its size when it is rotated or resized, so media renders it.
            let owner: String
            switch context.principal {
            case .user(let user):
                owner = user
            case .frame(let frame, let frameOwner):
                guard frame.lowercased() == id.lowercased() else { throw APIError.notFound("no such frame") }
                guard body.name == nil else { throw APIError.forbidden("a frame may change only its own screen size and orientation") }
                owner = frameOwner
            case nil:
                throw APIError.unauthenticated
            }
            // One side alone (a new width, the same height) changes that side: album keeps the other.
            let reply = try await album.call(AlbumAPI.updateFrame, UpdateFrameRequest(
                userID: owner, frameID: id, name: body.name,
                width: body.width, height: body.height, orientation: try Self.orientation(body.orientation)), headers: headers(context))
            return JSONBody(body: FrameJSON(try require(reply.frame)))
        }
        add(router, .delete, "/api/v1/frames/:frame_id") { [self] _, context in
            let id = try context.parameters.require("frame_id")
            _ = try await album.call(AlbumAPI.deleteFrame, DeleteFrameRequest(userID: try context.requireUser(), frameID: id),
                                     headers: headers(context))
            try await accounts.revokeFrameTokens(frameID: id)
            return Response(status: .noContent)
        }
        // New credentials for a frame (a lost or leaked configuration): a new MQTT password and
        // frame token; the old ones stop working at once. The answer is the registration's.
        add(router, .post, "/api/v1/frames/:frame_id/credentials") { [self] _, context in
            let user = try context.requireUser()
            let id = try context.parameters.require("frame_id")
            let reply = try await album.call(AlbumAPI.rotateFrameCredentials, RotateFrameCredentialsRequest(userID: user, frameID: id),
                                             headers: headers(context))
            let frame = try require(reply.frame)
            let mqtt = reply.mqtt ?? MqttCredentials()
            try await accounts.revokeFrameTokens(frameID: frame.frameID)
            let token = try await accounts.issueFrameToken(frameID: frame.frameID, ownerID: user)
            return JSONBody(body: Registered(
                frame_id: frame.frameID, frame_token: token,
                mqtt: .init(host: mqtt.host, port: mqtt.port, username: mqtt.username, password: mqtt.password),
                frame: FrameJSON(frame)))
        }
        add(router, .put, "/api/v1/frames/:frame_id/albums") { [self] request, context in
            let body = try await request.decode(as: AlbumsBody.self, context: context)
            let reply = try await album.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(
                userID: try context.requireUser(), frameID: try context.parameters.require("frame_id"), albumIDs: body.album_ids),
                headers: headers(context))
            return JSONBody(body: FrameJSON(try require(reply.frame)))
        }
        add(router, .post, "/api/v1/frames/:frame_id/sync") { [self] _, context in
            let reply = try await album.call(AlbumAPI.syncFrame, SyncFrameRequest(
                userID: try context.requireUser(), frameID: try context.parameters.require("frame_id")), headers: headers(context))
            return JSONBody(body: Synced(sequence: reply.sequence, photo_count: reply.photoCount))
        }
        add(router, .post, "/api/v1/frames/:frame_id/commands") { [self] request, context in
            let body = try await request.decode(as: CommandBody.self, context: context)
            let reply = try await album.call(AlbumAPI.sendFrameCommand, SendFrameCommandRequest(
                userID: try context.requireUser(), frameID: try context.parameters.require("frame_id"),
                command: body.command, args: body.args ?? [:]), headers: headers(context))
            return JSONBody(status: .accepted, body: CommandSent(command_id: reply.commandID))
        }
        add(router, .put, "/api/v1/frames/:frame_id/config") { [self] request, context in
            let c = try await request.decode(as: FrameJSON.Config.self, context: context)
            let reply = try await album.call(AlbumAPI.setFrameConfig, SetFrameConfigRequest(
                userID: try context.requireUser(), frameID: try context.parameters.require("frame_id"),
                config: FrameConfig(intervalSeconds: c.interval_seconds ?? 0, shuffle: c.shuffle ?? false,
                                    sleepStart: c.sleep_start ?? "", sleepEnd: c.sleep_end ?? "", timeZone: c.time_zone ?? "",
                                    transition: c.transition ?? "", preferredFormat: c.preferred_format ?? "",
                                    brightness: c.brightness ?? 0)), headers: headers(context))
            return JSONBody(body: FrameJSON(try require(reply.frame)))
        }
    }

    static func role(_ text: String) throws -> Role {
        switch text.lowercased() {
        case "owner": return .owner
        case "contributor": return .contributor
        case "viewer": return .viewer
        default: throw APIError.badRequest("role must be owner, contributor or viewer")
        }
    }

    static func orientation(_ text: String?) throws -> ScreenOrientation {
        switch text?.lowercased() {
        case nil: .unspecified
        case "landscape": .landscape
        case "portrait": .portrait
        default: throw APIError.badRequest("orientation must be landscape or portrait")
        }
    }

    /// The most items a page of a list route holds: the services' (storage's, album's, media's)
    /// `maxPageSize`.
    static let maxPageSize: Int32 = 200

    /// `page_size` of a list route (files, albums, album photos, playlists): absent, 0 (the
    /// service's default, 50); else a whole number from 1 to ``maxPageSize`` — anything else
    /// (0, negative, not a number, too large) is 400, never silently the default or the most.
    func pageSize(_ request: Request) throws -> Int32 {
        guard let text = request.uri.queryParameters.get("page_size") else { return 0 }
        guard let size = Int32(text), (1...Self.maxPageSize).contains(size) else {
            throw APIError.badRequest("page_size must be a whole number from 1 to \(Self.maxPageSize)")
        }
        return size
    }

    func require<T>(_ value: T?) throws -> T {
        guard let value else { throw APIError.internalError }
        return value
    }
}
