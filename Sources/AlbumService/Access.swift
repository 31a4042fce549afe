import Foundation
import Postgres
import ServiceKit
import Wire

extension AlbumService {
    // MARK: ListAlbumScreens (for media)

    /// The screens of the frames showing the albums a photo is, or is about to be, in. The
    /// upload rule is the one ``fileUploaded(_:_:)`` applies: `album_id` when `user_id` may add
    /// there (nothing when they may not), else that user's default album (when it exists);
    /// plus, with `file_id`, every album holding the file.
    func listAlbumScreens(_ request: ListAlbumScreensRequest) async throws -> ListAlbumScreensReply {
        var wanted: String?
        if !request.albumID.isEmpty {
            guard let id = try Self.id(request.albumID, "album_id") else { return ListAlbumScreensReply() }
            wanted = id
        }
        var fileID: String?
        if !request.fileID.isEmpty {
            guard let id = try Self.id(request.fileID, "file_id") else { throw Self.noFile }
            fileID = id
        }
        let file = fileID
        let user = request.userID
        let (schema, album) = (self.schema, wanted)
        let (albums, rows): ([String], [PostgresRow]) = try await runtime.postgres.withConnection { c in
            var albums: [String] = []
            if let album {
                if user.isEmpty {
                    if try !c.query("SELECT 1 FROM \(schema).albums WHERE album_id = $1::uuid", [.text(album)]).isEmpty { albums.append(album) }
                } else if let role = try Self.role(user, album, schema, c), role == "owner" || role == "contributor" {
                    albums.append(album)
                }
            } else if !user.isEmpty, let id: String = try c.query(
                "SELECT album_id::text AS id FROM \(schema).albums WHERE owner_id = $1 AND is_default", [.text(user)]).first?.decode("id") {
                albums.append(id)
            }
            if let file {
                for row in try c.query("SELECT album_id::text AS id FROM \(schema).album_photos WHERE file_id = $1::uuid ORDER BY album_id",
                                       [.text(file)]) {
                    let id: String = try row.decode("id")
                    if !albums.contains(id) { albums.append(id) }
                }
            }
            let rows = try c.query("""
                SELECT DISTINCT f.frame_id::text AS frame_id, f.width, f.height, f.config FROM \(schema).frames f
                JOIN \(schema).frame_albums fa ON fa.frame_id = f.frame_id
                WHERE fa.album_id::text = ANY(string_to_array($1, ',')) ORDER BY frame_id
                """, [.text(albums.joined(separator: ","))])
            return (albums, rows)
        }
        let screens = try rows.map { row in
            let config: [UInt8] = try row.decode("config")
            let format = (config.isEmpty ? nil : try? FrameConfig(wireBytes: config))?.preferredFormat ?? ""
            return FrameScreen(frameID: try row.decode("frame_id"), width: try row.decode("width"), height: try row.decode("height"),
                               format: format.isEmpty ? "jpeg" : format)
        }
        return ListAlbumScreensReply(screens: screens, albumIDs: albums)
    }

    // MARK: CanViewPhoto, CanViewAlbum (for the gateway)

    /// A user may see their own files and the files of albums they belong to (role: their
    /// strongest role on the way; unspecified for the file's owner); a frame the files of the
    /// albums it is subscribed to.
    func canViewPhoto(_ request: CanViewPhotoRequest) async throws -> AccessReply {
        let principal = try Self.principal(request.principal)
        guard let file = try Self.id(request.fileID, "file_id") else { return AccessReply(allowed: false) }
        let schema = self.schema
        return try await runtime.postgres.withConnection { c in
            switch principal {
            case .frame(let frame):
                let allowed = try !c.query("""
                    SELECT 1 FROM \(schema).frame_albums fa JOIN \(schema).album_photos ap ON ap.album_id = fa.album_id
                    WHERE fa.frame_id = $1::uuid AND ap.file_id = $2::uuid LIMIT 1
                    """, [.text(frame), .text(file)]).isEmpty
                return AccessReply(allowed: allowed)
            case .user(let user):
                if try !c.query("SELECT 1 FROM \(schema).photos WHERE file_id = $1::uuid AND owner_id = $2", [.text(file), .text(user)]).isEmpty {
                    return AccessReply(allowed: true)
                }
                let roles = try c.query("""
                    SELECT m.role FROM \(schema).album_photos ap JOIN \(schema).album_members m ON m.album_id = ap.album_id
                    WHERE ap.file_id = $1::uuid AND m.user_id = $2
                    """, [.text(file), .text(user)]).map { try $0.decode("role", as: String.self) }
                guard let best = ["owner", "contributor", "viewer"].first(where: roles.contains) else { return AccessReply(allowed: false) }
                return AccessReply(allowed: true, role: Self.wireRole(best))
            }
        }
    }

    func canViewAlbum(_ request: CanViewAlbumRequest) async throws -> AccessReply {
        let principal = try Self.principal(request.principal)
        guard let album = try Self.id(request.albumID, "album_id") else { return AccessReply(allowed: false) }
        let schema = self.schema
        return try await runtime.postgres.withConnection { c in
            switch principal {
            case .frame(let frame):
                let allowed = try !c.query("SELECT 1 FROM \(schema).frame_albums WHERE frame_id = $1::uuid AND album_id = $2::uuid",
                                           [.text(frame), .text(album)]).isEmpty
                return AccessReply(allowed: allowed)
            case .user(let user):
                guard let role = try Self.role(user, album, schema, c) else { return AccessReply(allowed: false) }
                return AccessReply(allowed: true, role: Self.wireRole(role))
            }
        }
    }

    enum Asker {
        case user(String)
        case frame(String)
    }

    static func principal(_ principal: Principal?) throws -> Asker {
        guard let principal else { throw ServiceError.invalid("principal is required") }
        switch principal.kind {
        case .user:
            return .user(try user(principal.id))
        case .frame:
            // An unknown or malformed frame id sees nothing (the all-zero UUID has no rows).
            guard TopicID.isValid(principal.id) else { throw ServiceError.invalid("principal.id is not a valid frame id") }
            return .frame(UUID(uuidString: principal.id)?.uuidString.lowercased() ?? "00000000-0000-0000-0000-000000000000")
        default:
            throw ServiceError.invalid("principal.kind must be user or frame")
        }
    }
}
