import Foundation
import Postgres
import ServiceKit
import Wire

// Playlists: a user's named selection of albums and photos chosen one by one, played newest
// first, oldest first or shuffled. Visibility follows album's rules, checked against media's
// own copy of album's state (AlbumState.swift: members, albums' photos) when a playlist is
// written and again when it is resolved, so a photo or album the owner lost access to drops out.

extension MediaService {
    static let noPlaylist = ServiceError.notFound("no such playlist")

    /// Most albums and chosen photos one playlist names.
    static let maxPlaylistAlbums = 50
    static let maxPlaylistFiles = 500
    /// Most photos GetPlaylist resolves to (the newest / oldest / a shuffle of them).
    static let maxPlaylistPhotos = 1000
    /// Playlists per ListPlaylists page when none is asked for, and the most a page holds.
    static let defaultPageSize = 50
    static let maxPageSize = 200

    func createPlaylist(_ request: CreatePlaylistRequest) async throws -> PlaylistReply {
        let user = try Input.user(request.userID)
        let name = try Input.text(request.name, "name", max: 200, required: true)
        let description = try Input.text(request.description, "description", max: 2000)
        let order = try Self.order(request.order) ?? "newest"
        let albums = try Self.uuids(request.albumIDs, "album_ids", max: Self.maxPlaylistAlbums)
        let files = try Self.uuids(request.fileIDs, "file_ids", max: Self.maxPlaylistFiles)
        try await requireVisible(albums: albums, files: files, user: user)
        let (schema, id) = (self.schema, Self.newID())
        let playlist: Playlist = try await runtime.postgres.withTransaction { c in
            _ = try c.execute("""
                INSERT INTO \(schema).playlists (playlist_id, owner_id, name, description, play_order, album_ids, file_ids)
                VALUES ($1::uuid, $2, $3, $4, $5, string_to_array($6, ','), string_to_array($7, ','))
                """, [.text(id), .text(user), .text(name), .text(description), .text(order),
                      .text(albums.joined(separator: ",")), .text(files.joined(separator: ","))])
            guard let playlist = try Self.playlist(id, owner: user, schema, c) else {
                throw ServiceError.internal("the playlist just created was not found")
            }
            return playlist
        }
        logger.info("playlist created", metadata: ["playlist.id": "\(id)"])
        return PlaylistReply(playlist: playlist)
    }

    /// The playlist with `photo_ids`: what it plays now, in its order.
    func getPlaylist(_ request: GetPlaylistRequest) async throws -> PlaylistReply {
        let user = try Input.user(request.userID)
        guard let id = Self.uuid(request.playlistID) else { throw Self.noPlaylist }
        let schema = self.schema
        guard var playlist = try await runtime.postgres.withConnection({ c in try Self.playlist(id, owner: user, schema, c) }) else {
            throw Self.noPlaylist
        }
        playlist.photoIDs = try await resolve(playlist, user: user)
        return PlaylistReply(playlist: playlist)
    }

    func listPlaylists(_ request: ListPlaylistsRequest) async throws -> ListPlaylistsReply {
        let user = try Input.user(request.userID)
        let size = request.pageSize <= 0 ? Self.defaultPageSize : min(Int(request.pageSize), Self.maxPageSize)
        let offset = try Input.offset(request.pageToken)
        let rows = try await runtime.postgres.query("""
            \(Self.playlistSelect(schema)) WHERE owner_id = $1 ORDER BY created_at DESC, playlist_id DESC LIMIT $2 OFFSET $3
            """, [.text(user), .int(Int64(size + 1)), .int(Int64(offset))])
        return ListPlaylistsReply(playlists: try rows.prefix(size).map(Self.playlist),
                                  nextPageToken: rows.count > size ? String(offset + size) : "")
    }

    func updatePlaylist(_ request: UpdatePlaylistRequest) async throws -> PlaylistReply {
        let user = try Input.user(request.userID)
        guard let id = Self.uuid(request.playlistID) else { throw Self.noPlaylist }
        let name = try request.name.map { try Input.text($0, "name", max: 200, required: true) }
        let description = try request.description.map { try Input.text($0, "description", max: 2000) }
        let order = try Self.order(request.order)
        let albums: [String]? = try request.replaceAlbumIDs ? Self.uuids(request.albumIDs, "album_ids", max: Self.maxPlaylistAlbums) : nil
        let files: [String]? = try request.replaceFileIDs ? Self.uuids(request.fileIDs, "file_ids", max: Self.maxPlaylistFiles) : nil
        let schema = self.schema
        // A stranger learns nothing from the lists they send: the playlist is checked first.
        guard try await runtime.postgres.withConnection({ c in try Self.playlist(id, owner: user, schema, c) }) != nil else {
            throw Self.noPlaylist
        }
        try await requireVisible(albums: albums ?? [], files: files ?? [], user: user)
        let playlist: Playlist = try await runtime.postgres.withTransaction { c in
            let n = try c.execute("""
                UPDATE \(schema).playlists SET name = coalesce($3, name), description = coalesce($4, description),
                    play_order = coalesce($5, play_order),
                    album_ids = coalesce(string_to_array($6, ','), album_ids), file_ids = coalesce(string_to_array($7, ','), file_ids),
                    updated_at = clock_timestamp()
                WHERE playlist_id = $1::uuid AND owner_id = $2
                """, [.text(id), .text(user), name.map(PostgresValue.text) ?? .null, description.map(PostgresValue.text) ?? .null,
                      order.map(PostgresValue.text) ?? .null, albums.map { PostgresValue.text($0.joined(separator: ",")) } ?? .null,
                      files.map { PostgresValue.text($0.joined(separator: ",")) } ?? .null])
            guard n == 1, let playlist = try Self.playlist(id, owner: user, schema, c) else { throw Self.noPlaylist }
            return playlist
        }
        return PlaylistReply(playlist: playlist)
    }

    /// Deletes a playlist no frame's schedule uses (conflict otherwise).
    func deletePlaylist(_ request: DeletePlaylistRequest) async throws -> Empty {
        let user = try Input.user(request.userID)
        guard let id = Self.uuid(request.playlistID) else { throw Self.noPlaylist }
        let schema = self.schema
        try await runtime.postgres.withTransaction { c in
            guard try !c.query("SELECT 1 FROM \(schema).playlists WHERE playlist_id = $1::uuid AND owner_id = $2 FOR UPDATE",
                               [.text(id), .text(user)]).isEmpty else { throw Self.noPlaylist }
            if try !c.query("SELECT 1 FROM \(schema).rotation_schedules WHERE playlist_id = $1::uuid LIMIT 1", [.text(id)]).isEmpty {
                throw ServiceError.conflict("a frame's schedule plays this playlist; change the schedule first")
            }
            _ = try c.execute("DELETE FROM \(schema).playlists WHERE playlist_id = $1::uuid", [.text(id)])
        }
        logger.info("playlist deleted", metadata: ["playlist.id": "\(id)"])
        return Empty()
    }

    // MARK: Visibility and resolution

    /// not_found unless `user` can see every album (a member) and every photo (owner, or a
    /// member of an album holding it).
    func requireVisible(albums: [String], files: [String], user: String) async throws {
        let asker = Principal(kind: .user, id: user)
        for id in albums {
            guard try await isMember(user, of: id, grace: true) else { throw ServiceError.notFound("no such album") }
        }
        for id in try await notOwned(files, user: user) {
            guard try await mayView(id, asker, grace: true) else { throw ServiceError.notFound("no such photo") }
        }
    }

    /// The files of `files` whose photo metadata does not name `user` as owner.
    func notOwned(_ files: [String], user: String) async throws -> [String] {
        guard !files.isEmpty else { return [] }
        let owned = Set(try await runtime.postgres.query("""
            SELECT file_id FROM \(schema).photo_metadata WHERE file_id = ANY(string_to_array($1, ',')) AND user_id = $2
            """, [.text(files.joined(separator: ",")), .text(user)]).map { try $0.decode("file_id", as: String.self) })
        return files.filter { !owned.contains($0) }
    }

    /// The photos the playlist plays now: its albums' photos (as the owner sees them) and its
    /// chosen photos the owner can still see, each once, that media has rendered; ordered by
    /// taken-at (upload time when unknown), newest or oldest first, or shuffled; at most
    /// ``maxPlaylistPhotos``.
    func resolve(_ playlist: Playlist, user: String) async throws -> [String] {
        var candidates: [String] = []
        var seen = Set<String>()
        let scanLimit = Self.maxPlaylistPhotos * 4
        let schema = self.schema
        for id in playlist.albumIDs where candidates.count < scanLimit {
            // The album's photos, newest first, while the owner is a member (none when the
            // album was deleted or they left it).
            let rows = try await runtime.postgres.query("""
                SELECT ap.file_id FROM \(schema).album_photos ap
                WHERE ap.album_id = $1 AND ap.present
                    AND EXISTS (SELECT 1 FROM \(schema).album_members m WHERE m.album_id = ap.album_id AND m.user_id = $2)
                ORDER BY ap.added_at DESC, ap.file_id DESC LIMIT $3
                """, [.text(id), .text(user), .int(Int64(scanLimit - candidates.count))])
            for row in rows {
                let file: String = try row.decode("file_id")
                if seen.insert(file).inserted { candidates.append(file) }
            }
        }
        let asker = Principal(kind: .user, id: user)
        let hidden = Set(try await notOwned(playlist.fileIDs, user: user))
        for id in playlist.fileIDs where !seen.contains(id) {
            if hidden.contains(id) {
                guard try await mayView(id, asker, grace: false) else { continue }
            }
            seen.insert(id)
            candidates.append(id)
        }
        guard !candidates.isEmpty else { return [] }
        let rows = try await runtime.postgres.query("""
            SELECT file_id, analysis, (extract(epoch FROM created_at) * 1000)::bigint AS created_ms
            FROM \(schema).photo_metadata WHERE file_id = ANY(string_to_array($1, ','))
            """, [.text(candidates.joined(separator: ","))])
        let keyed: [(id: String, at: Int64)] = try rows.map { row in
            let id: String = try row.decode("file_id"), created: Int64 = try row.decode("created_ms")
            let analysis: [UInt8] = try row.decode("analysis")
            let takenAt: Int64? = analysis.isEmpty ? nil : (try? PhotoAnalysis(wireBytes: analysis))?.takenAt
            return (id: id, at: takenAt ?? created)
        }
        let ordered: [String]
        switch playlist.order {
        case .oldest: ordered = keyed.sorted { ($0.at, $0.id) < ($1.at, $1.id) }.map(\.id)
        case .shuffle: ordered = keyed.map(\.id).shuffled()
        default: ordered = keyed.sorted { ($0.at, $0.id) > ($1.at, $1.id) }.map(\.id)
        }
        return Array(ordered.prefix(Self.maxPlaylistPhotos))
    }

    // MARK: Rows and input

    static func playlistSelect(_ schema: String) -> String {
        """
        SELECT playlist_id::text AS playlist_id, owner_id, name, description, play_order,
            array_to_string(album_ids, ',') AS album_ids, array_to_string(file_ids, ',') AS file_ids,
            (extract(epoch FROM created_at) * 1000)::bigint AS created_ms,
            (extract(epoch FROM updated_at) * 1000)::bigint AS updated_ms
        FROM \(schema).playlists
        """
    }

    static func playlist(_ id: String, owner: String, _ schema: String, _ c: PostgresConnection) throws -> Playlist? {
        try c.query("\(playlistSelect(schema)) WHERE playlist_id = $1::uuid AND owner_id = $2", [.text(id), .text(owner)])
            .first.map(playlist)
    }

    static func playlist(_ row: PostgresRow) throws -> Playlist {
        func list(_ column: String) throws -> [String] {
            try row.decode(column, as: String.self).split(separator: ",").map(String.init)
        }
        return Playlist(
            playlistID: try row.decode("playlist_id"), ownerID: try row.decode("owner_id"), name: try row.decode("name"),
            description: try row.decode("description"), fileIDs: try list("file_ids"),
            createdAt: try row.decode("created_ms"), updatedAt: try row.decode("updated_ms"), albumIDs: try list("album_ids"),
            order: PlaylistOrder(name: try row.decode("play_order")))
    }

    /// The stored name of an order; nil for unspecified (the caller's default); invalid for
    /// a value this version does not know.
    static func order(_ order: PlaylistOrder) throws -> String? {
        switch order {
        case .unspecified: nil
        case .newest: "newest"
        case .oldest: "oldest"
        case .shuffle: "shuffle"
        case .unrecognized: throw ServiceError.invalid("order must be newest, oldest or shuffle")
        }
    }

    /// A lower-case UUID, nil when `text` is not one.
    static func uuid(_ text: String) -> String? {
        guard text.utf8.count <= 64 else { return nil }
        return UUID(uuidString: text).map { $0.uuidString.lowercased() }
    }

    /// Distinct lower-case UUIDs in the given order; invalid for anything else or more than `max`.
    static func uuids(_ texts: [String], _ field: String, max: Int) throws -> [String] {
        guard texts.count <= max else { throw ServiceError.invalid("\(field) holds at most \(max) ids") }
        var ids: [String] = []
        for text in texts {
            guard let id = uuid(text) else { throw ServiceError.invalid("\(field) holds an invalid id") }
            if !ids.contains(id) { ids.append(id) }
        }
        return ids
    }
}

extension PlaylistOrder {
    /// From the stored name (`playlists.play_order`).
    init(name: String) {
        switch name {
        case "newest": self = .newest
        case "oldest": self = .oldest
        case "shuffle": self = .shuffle
        default: self = .unspecified
        }
    }
}
