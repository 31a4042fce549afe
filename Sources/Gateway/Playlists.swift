import Foundation
import Hummingbird
import ServiceKit
import Wire

// Playlists and frames' rotation schedules: the media service owns both and decides who may
// see what (from its own copy of album's albums, members, photos and frames); the gateway authenticates
// and maps JSON to the wire messages.

struct PlaylistJSON: Encodable, Sendable {
    let playlist_id, owner_id, name, description, order: String
    let album_ids, file_ids: [String]
    /// GET of one playlist: the photos it plays now, in order.
    let photo_ids: [String]?
    let created_at, updated_at: String

    init(_ p: Playlist, resolved: Bool = false) {
        playlist_id = p.playlistID; owner_id = p.ownerID; name = p.name; description = p.description
        order = Gateway.orderName(p.order)
        album_ids = p.albumIDs; file_ids = p.fileIDs
        photo_ids = resolved ? p.photoIDs : nil
        created_at = FileJSON.iso(p.createdAt); updated_at = FileJSON.iso(p.updatedAt)
    }
}

struct ScheduleJSON: Encodable, Sendable {
    struct Entry: Codable, Sendable {
        var playlist_id, album_id: String?
        /// "mon"…"sun"; absent or empty: every day.
        var days: [String]?
        /// "HH:MM"; both absent: all day.
        var start_time, end_time: String?
        var interval_seconds: Int32
        var shuffle: Bool?
    }
    let frame_id: String
    let entries: [Entry]
    let updated_at: String?

    init(_ s: RotationSchedule) {
        frame_id = s.frameID
        entries = s.entries.map { e in
            Entry(playlist_id: e.playlistID.isEmpty ? nil : e.playlistID, album_id: e.albumID.isEmpty ? nil : e.albumID,
                  days: e.daysOfWeek.compactMap(ScheduleEntry.dayName), start_time: e.startTime.isEmpty ? nil : e.startTime,
                  end_time: e.endTime.isEmpty ? nil : e.endTime, interval_seconds: e.intervalSeconds, shuffle: e.shuffle)
        }
        updated_at = s.updatedAt == 0 ? nil : FileJSON.iso(s.updatedAt)
    }
}

struct CreatePlaylistBody: Decodable {
    let name: String
    let description: String?
    let album_ids: [String]?
    let file_ids: [String]?
    let order: String?
}
struct PatchPlaylistBody: Decodable {
    let name: String?
    let description: String?
    let album_ids: [String]?
    let file_ids: [String]?
    let order: String?
}
struct ScheduleBody: Decodable { let entries: [ScheduleJSON.Entry] }
struct PlaylistPage: Encodable, Sendable { let playlists: [PlaylistJSON]; let next_page_token: String? }

extension Gateway {
    func registerPlaylistRoutes(_ router: Router<GatewayContext>) {

        add(router, .post, "/api/v1/playlists") { [self] request, context in
            let user = try context.requireUser()
            let body = try await request.decode(as: CreatePlaylistBody.self, context: context)
            try TextInput.name(body.name, "name")
            try TextInput.text(body.description, "description")
            let reply = try await media.call(MediaAPI.createPlaylist, CreatePlaylistRequest(
                userID: user, name: body.name, description: body.description ?? "", fileIDs: body.file_ids ?? [],
                albumIDs: body.album_ids ?? [], order: try Self.order(body.order)), headers: headers(context))
            return JSONBody(status: .created, body: PlaylistJSON(try require(reply.playlist)))
        }
        add(router, .get, "/api/v1/playlists") { [self] request, context in
            let reply = try await media.call(MediaAPI.listPlaylists, ListPlaylistsRequest(
                userID: try context.requireUser(), pageSize: try pageSize(request),
                pageToken: request.uri.queryParameters.get("page_token") ?? ""), headers: headers(context))
            return JSONBody(body: PlaylistPage(playlists: reply.playlists.map { PlaylistJSON($0) },
                                               next_page_token: reply.nextPageToken.isEmpty ? nil : reply.nextPageToken))
        }
        add(router, .get, "/api/v1/playlists/:playlist_id") { [self] _, context in
            let reply = try await media.call(MediaAPI.getPlaylist, GetPlaylistRequest(
                userID: try context.requireUser(), playlistID: try context.parameters.require("playlist_id")), headers: headers(context))
            return JSONBody(body: PlaylistJSON(try require(reply.playlist), resolved: true))
        }
        add(router, .patch, "/api/v1/playlists/:playlist_id") { [self] request, context in
            let user = try context.requireUser()
            let body = try await request.decode(as: PatchPlaylistBody.self, context: context)
            try TextInput.name(body.name, "name")
            try TextInput.text(body.description, "description")
            let reply = try await media.call(MediaAPI.updatePlaylist, UpdatePlaylistRequest(
                userID: user, playlistID: try context.parameters.require("playlist_id"), name: body.name,
                description: body.description, replaceFileIDs: body.file_ids != nil, fileIDs: body.file_ids ?? [],
                replaceAlbumIDs: body.album_ids != nil, albumIDs: body.album_ids ?? [], order: try Self.order(body.order)),
                headers: headers(context))
            return JSONBody(body: PlaylistJSON(try require(reply.playlist)))
        }
        add(router, .delete, "/api/v1/playlists/:playlist_id") { [self] _, context in
            _ = try await media.call(MediaAPI.deletePlaylist, DeletePlaylistRequest(
                userID: try context.requireUser(), playlistID: try context.parameters.require("playlist_id")), headers: headers(context))
            return Response(status: .noContent)
        }

        add(router, .get, "/api/v1/frames/:frame_id/schedule") { [self] _, context in
            let reply = try await media.call(MediaAPI.getSchedule, GetScheduleRequest(
                userID: try context.requireUser(), frameID: try context.parameters.require("frame_id")), headers: headers(context))
            return JSONBody(body: ScheduleJSON(try require(reply.schedule)))
        }
        add(router, .put, "/api/v1/frames/:frame_id/schedule") { [self] request, context in
            let user = try context.requireUser()
            let body = try await request.decode(as: ScheduleBody.self, context: context)
            let entries = try body.entries.map { e in
                ScheduleEntry(playlistID: e.playlist_id ?? "", albumID: e.album_id ?? "", daysOfWeek: try Self.days(e.days ?? []),
                              startTime: e.start_time ?? "", endTime: e.end_time ?? "", intervalSeconds: e.interval_seconds,
                              shuffle: e.shuffle ?? false)
            }
            let reply = try await media.call(MediaAPI.setSchedule, SetScheduleRequest(
                userID: user, frameID: try context.parameters.require("frame_id"), entries: entries), headers: headers(context))
            return JSONBody(body: ScheduleJSON(try require(reply.schedule)))
        }
        add(router, .delete, "/api/v1/frames/:frame_id/schedule") { [self] _, context in
            _ = try await media.call(MediaAPI.deleteSchedule, DeleteScheduleRequest(
                userID: try context.requireUser(), frameID: try context.parameters.require("frame_id")), headers: headers(context))
            return Response(status: .noContent)
        }
    }

    static func order(_ text: String?) throws -> PlaylistOrder {
        switch text?.lowercased() {
        case nil: .unspecified
        case "newest": .newest
        case "oldest": .oldest
        case "shuffle": .shuffle
        default: throw APIError.badRequest("order must be newest, oldest or shuffle")
        }
    }

    static func orderName(_ order: PlaylistOrder) -> String {
        switch order {
        case .oldest: "oldest"
        case .shuffle: "shuffle"
        default: "newest"
        }
    }

    static func days(_ names: [String]) throws -> [Int32] {
        try names.map { name in
            guard let day = ScheduleEntry.day(named: name) else { throw APIError.badRequest("days must be among mon, tue, wed, thu, fri, sat, sun") }
            return day
        }
    }
}
