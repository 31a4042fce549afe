import Foundation
import Hummingbird
import ServiceKit
import Wire

/// The photo metadata document frames read (seed step 5): versions with their URLs. A rendered
/// version's `url` is its capability URL (needs no token, served like a static file); what a
/// capability path cannot name (an `original`, whose format may be neither JPEG nor WebP) keeps
/// the token-authenticated download URL.
struct PhotoMetadataJSON: Encodable, Sendable {
    struct Version: Encodable, Sendable {
        let size: String
        let width, height: Int32
        let format, content_type: String
        let bytes: Int64
        /// The capability URL (no token needed), or the token download URL where there is none.
        let url: String
        /// The token-authenticated download of the same version (`Authorization: Bearer`), for a
        /// client that cannot use `url`.
        let download_url: String
    }
    let file_id, file_name, content_type: String
    let width, height: Int32?
    let taken_at: String?
    let versions: [Version]
    let ai_metadata: FileJSON.AI
    let cached_for_frames: [String]

    /// `capabilityURL`: a version's signed URL, nil where it has none.
    init(_ m: PhotoMetadata, baseURL: String, capabilityURL: (PhotoVersion) -> String?) {
        file_id = m.fileID; file_name = m.fileName; content_type = m.contentType
        width = m.analysis?.width; height = m.analysis?.height
        taken_at = m.analysis?.takenAt.map(FileJSON.iso)
        versions = m.versions.map { v in
            // A WebP version names its format (without one the route answers JPEG when there is one).
            let download = "\(baseURL)/api/v1/files/download/\(m.fileID)?size=\(v.size)" + (v.format == "webp" ? "&format=webp" : "")
            return Version(size: v.size, width: v.width, height: v.height, format: v.format, content_type: v.contentType,
                           bytes: v.byteSize, url: capabilityURL(v) ?? download, download_url: download)
        }
        let ai = m.aiMetadata ?? AIMetadata()
        ai_metadata = FileJSON.AI(labels: ai.labels, faces: ai.faces.map { .init(x: $0.x, y: $0.y, width: $0.width, height: $0.height, confidence: $0.confidence) },
                                  objects: ai.objects, analyser: ai.analyser)
        cached_for_frames = m.cachedForFrames
    }
}

extension Gateway {
    /// GET /api/v1/photos/{file_id}: readable by the owner, members of an album holding it, and
    /// frames subscribed to such an album (media checks, on behalf of the caller); 404 otherwise,
    /// and 404 as soon as the file is deleted (storage checks, alongside: ``requireStoredFile(_:_:)``).
    func photoMetadata(_ context: GatewayContext) async throws -> JSONBody<PhotoMetadataJSON> {
        let id = try context.parameters.require("file_id")
        let headers = try principalHeaders(context)
        async let reply = media.call(MediaAPI.getPhotoMetadata, GetPhotoMetadataRequest(fileID: id), headers: headers)
        try await requireStoredFile(id, context)
        let metadata = try require(try await reply.metadata)
        let now = Date()
        return JSONBody(body: PhotoMetadataJSON(metadata, baseURL: configuration.publicURL) { version in
            capabilityURL(fileID: metadata.fileID, version: version, now: now)
        })
    }
}
