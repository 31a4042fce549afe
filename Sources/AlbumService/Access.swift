import Foundation
import Postgres
import ServiceKit
import Wire

extension AlbumService {
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
