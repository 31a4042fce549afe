import BlobStore
import Foundation
import Hummingbird
import NATS
import ServiceKit
import Wire

/// Moves an upload's writer to a pool thread for its fsync + rename.
struct WriterHandoff: @unchecked Sendable {
    // @unchecked Sendable: the upload task that owns the writer awaits the pool job and does
    // not touch the writer meanwhile, so only one thread uses it at a time.
    let writer: BlobWriter
}

/// The JSON face of a stored file.
struct FileJSON: ResponseEncodable {
    struct Camera: Encodable { let make: String?; let model: String? }
    struct GPS: Encodable { let latitude: Double; let longitude: Double; let altitude: Double? }
    struct AI: Encodable {
        struct Face: Encodable { let x, y, width, height: Int32; let confidence: Float }
        let labels: [String]
        let faces: [Face]
        let objects: [String]
        let analyser: String
    }

    let file_id: String
    let file_name: String
    let content_type: String
    let size: Int64
    let sha256: String
    let created_at: String
    let format: String
    let width: Int32
    let height: Int32
    let orientation: Int32
    let taken_at: String?
    let camera: Camera?
    let gps: GPS?
    let dominant_colors: [String]
    let perceptual_hash: String
    let metadata: [String: String]
    let ai_metadata: AI
    let download_url: String
    var duplicate: Bool?

    init(_ file: FileRecord, duplicate: Bool? = nil) {
        let analysis = file.analysis ?? PhotoAnalysis()
        file_id = file.fileID
        file_name = file.fileName
        content_type = file.contentType
        size = file.size
        sha256 = file.sha256
        created_at = Self.iso(file.createdAt)
        format = analysis.format
        width = analysis.width
        height = analysis.height
        orientation = analysis.orientation
        taken_at = analysis.takenAt.map(Self.iso)
        camera = analysis.cameraMake.isEmpty && analysis.cameraModel.isEmpty ? nil
            : Camera(make: analysis.cameraMake.isEmpty ? nil : analysis.cameraMake,
                     model: analysis.cameraModel.isEmpty ? nil : analysis.cameraModel)
        gps = analysis.gps.map { GPS(latitude: $0.latitude, longitude: $0.longitude, altitude: $0.altitude) }
        dominant_colors = analysis.dominantColors
        perceptual_hash = String(format: "%016llx", analysis.perceptualHash)
        metadata = file.metadata
        let ai = file.aiMetadata ?? AIMetadata()
        ai_metadata = AI(labels: ai.labels, faces: ai.faces.map { .init(x: $0.x, y: $0.y, width: $0.width, height: $0.height, confidence: $0.confidence) },
                         objects: ai.objects, analyser: ai.analyser)
        download_url = "/api/v1/files/download/\(file.fileID)"
        self.duplicate = duplicate
    }

    static func iso(_ millis: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date(timeIntervalSince1970: Double(millis) / 1000))
    }
}

struct FileListJSON: ResponseEncodable {
    let files: [FileJSON]
    let next_page_token: String?
}

/// A JSON body with a chosen status (201 for a new upload, 200 for a duplicate).
struct StatusJSON<Body: Encodable & Sendable>: ResponseGenerator {
    let status: HTTPResponse.Status
    let body: Body
    func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = try context.responseEncoder.encode(body, from: request, context: context)
        response.status = status
        return response
    }
}

extension Gateway {
    // MARK: Upload

    /// Streams a multipart upload into the blob store (SHA-256 while streaming, fsync,
    /// rename), then asks storage to register it. Nothing is held in memory but one chunk.
    func upload(_ request: Request, _ context: GatewayContext) async throws -> StatusJSON<FileJSON> {
        let user = try context.requireUser()
        guard let contentType = request.headers[.contentType],
              let boundary = MultipartParser.boundary(fromContentType: contentType) else {
            throw APIError.badRequest("expected multipart/form-data with a boundary")
        }
        let limit = configuration.maxUploadBytes
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit + 64 * 1024 {
            throw APIError.tooLarge("the photo is larger than \(limit) bytes")
        }
        var parser: MultipartParser
        do { parser = try MultipartParser(boundary: boundary) } catch { throw APIError.badRequest("\(error)") }

        var writer: BlobWriter?
        var current: String?
        var fileName = ""
        var declaredType = ""
        var prefix: [UInt8] = []
        var metadataBytes: [UInt8] = []
        var fileParts = 0
        /// The album the upload names, once album said the uploader may add photos to it.
        var checkedAlbum: String?
        defer { writer?.abort() }

        // A pause of `readTimeout` closes the connection (the server's idle timeout); this bounds
        // the whole body.
        let deadline = ContinuousClock.now + configuration.uploadTimeout
        var body = request.body.makeAsyncIterator()
        do {
            while let chunk = try await RequestBodies.next(&body) {
                guard ContinuousClock.now <= deadline else {
                    throw APIError.requestTimeout("the upload did not arrive within \(RequestBodies.seconds(configuration.uploadTimeout)) s")
                }
                for event in try parser.feed(chunk.readableBytesView) {
                    switch event {
                    case .partStart(let headers):
                        current = headers.name
                        if headers.name == "file" {
                            fileParts += 1
                            guard fileParts == 1 else { throw APIError.badRequest("more than one file part") }
                            writer = try BlobWriter(store: blobs, limit: limit)
                            fileName = headers.fileName ?? ""
                            declaredType = headers.contentType ?? ""
                        }
                    case .data(let bytes):
                        if current == "file", let writer {
                            if prefix.count < ImageSniffer.prefixLength {
                                prefix += bytes.prefix(ImageSniffer.prefixLength - prefix.count)
                            }
                            try writer.write(bytes)
                        } else if current == "metadata" {
                            metadataBytes += bytes
                            guard metadataBytes.count <= 64 * 1024 else { throw APIError.badRequest("metadata is larger than 64 KiB") }
                        }
                    case .partEnd:
                        // The metadata before the file: an album the uploader may not add to
                        // is refused before a byte of the photo is stored.
                        if current == "metadata", writer == nil,
                           let wanted = Self.requestedAlbum(try Self.parseMetadata(metadataBytes)) {
                            try await requireMayAddPhotos(to: wanted, user: user, context)
                            checkedAlbum = wanted
                        }
                        current = nil
                    }
                }
            }
            try parser.finish()
        } catch let error as BlobStoreError where error.code == .tooLarge {
            throw APIError.tooLarge("the photo is larger than \(limit) bytes")
        } catch let error as MultipartParser.Failure {
            throw APIError.badRequest("malformed multipart body: \(error)")
        }

        guard let writer, writer.size > 0 else { throw APIError.badRequest("the form has no non-empty \"file\" part") }
        let metadata = try Self.parseMetadata(metadataBytes)
        guard ImageSniffer.contentType(of: prefix) != nil else {
            throw APIError.unsupportedMedia("not a supported image (JPEG, PNG, WebP, HEIC/HEIF, AVIF, GIF or TIFF)")
        }
        // The metadata after the file (or a second metadata part): checked before the blob is
        // committed, so a refused upload leaves only its temp file, which `abort()` removes.
        if let wanted = Self.requestedAlbum(metadata), wanted != checkedAlbum {
            try await requireMayAddPhotos(to: wanted, user: user, context)
        }
        let handoff = WriterHandoff(writer: writer)
        let committed = try await files.run { try handoff.writer.commit() }
        context.logger.debug("upload stored", metadata: ["blob.key": "\(committed.key)", "blob.size": "\(committed.size)"])

        do {
            let reply = try await storage.call(StorageAPI.registerUpload, RegisterUploadRequest(
                userID: user, blobKey: committed.key.hex, sha256: committed.key.hex, size: Int64(committed.size),
                fileName: fileName, contentType: declaredType, metadata: metadata), headers: headers(context))
            guard let file = reply.file else { throw APIError.internalError }
            return StatusJSON(status: reply.duplicate ? .ok : .created, body: FileJSON(file, duplicate: reply.duplicate))
        } catch let error as ServiceError where error.status == .unavailable {
            // Nobody registered the bytes: a blob this upload created must not stay behind —
            // unless someone references it by now (the blob store's references decide, under
            // the blob's lock). After a timeout storage may still register it, so only a
            // definite "nobody answered" removes it; the blob janitor covers the rest.
            if committed.created && error.message.hasSuffix("is not running") {
                let references = BlobReferences(store: blobs, postgres: runtime.postgres, logger: logger)
                _ = try? await references.removeIfUnreferenced(committed.key)
            }
            throw APIError(error)
        }
    }

    /// The album an upload's metadata names (`album_id`, trimmed, as album reads it), nil
    /// for none (the photo goes to the uploader's default album).
    static func requestedAlbum(_ metadata: [String: String]) -> String? {
        guard let text = metadata["album_id"]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return nil }
        return text
    }

    /// No silent orphans: an upload naming an album is accepted only when the uploader may add
    /// photos to it (owner or contributor), answered as `POST /api/v1/albums/{id}/photos`
    /// answers — 404 for an album that does not exist, was deleted, is not a UUID or is not
    /// theirs (its existence is not revealed), 403 for a viewer, 400 for an id that could not
    /// be one (`/`, `+`, `#`, too long). Album is asked at accept time; a membership changed
    /// between this answer and album's handling of the upload is album's to log and drop.
    func requireMayAddPhotos(to albumID: String, user: String, _ context: GatewayContext) async throws {
        let access = try await album.call(AlbumAPI.canViewAlbum, CanViewAlbumRequest(
            principal: Wire.Principal(kind: .user, id: user), albumID: albumID), headers: headers(context))
        guard access.allowed else { throw APIError.notFound("no such album") }
        switch access.role {
        case .owner, .contributor:
            return
        case .viewer:
            throw APIError.forbidden("a viewer of this album may not do this")
        default:
            throw APIError.forbidden("you may not add photos to this album")
        }
    }

    /// The optional `metadata` part: a JSON object; values become text (`album_id`…).
    static func parseMetadata(_ bytes: [UInt8]) throws -> [String: String] {
        guard !bytes.isEmpty else { return [:] }
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
            throw APIError.badRequest("metadata must be a JSON object")
        }
        var result: [String: String] = [:]
        for (key, value) in object {
            guard key.count <= 64, !key.contains("\0") else { throw APIError.badRequest("metadata key too long") }
            let text: String
            switch value {
            case let s as String: text = s
            case let n as NSNumber: text = n.stringValue
            default: throw APIError.badRequest("metadata values must be strings or numbers")
            }
            guard !text.contains("\0"), text.count <= 1024 else { throw APIError.badRequest("metadata value too long") }
            result[key] = text
        }
        return result
    }

    // MARK: Files

    func listFiles(_ request: Request, _ context: GatewayContext) async throws -> FileListJSON {
        let user = try context.requireUser()
        let size = try pageSize(request)
        let token = request.uri.queryParameters.get("page_token") ?? ""
        let reply = try await storage.call(StorageAPI.listFiles, ListFilesRequest(userID: user, pageSize: size, pageToken: token),
                                           headers: headers(context))
        return FileListJSON(files: reply.files.map { FileJSON($0) },
                            next_page_token: reply.nextPageToken.isEmpty ? nil : reply.nextPageToken)
    }

    func file(_ request: Request, _ context: GatewayContext) async throws -> FileRecord {
        let user = try context.requireUser()
        let id = try context.parameters.require("file_id")
        guard let file = try await storage.call(StorageAPI.getFile, GetFileRequest(userID: user, fileID: id),
                                                headers: headers(context)).file else { throw APIError.notFound() }
        return file
    }

    // MARK: Download

    /// The original bytes, streamed from the blob store. Versions are immutable, so the ETag is
    /// the SHA-256 and caches may keep it forever; `Range` gives 206, `If-None-Match` 304.
    func download(_ request: Request, _ context: GatewayContext) async throws -> Response {
        let asked = request.uri.queryParameters.get("size") ?? "original"
        if asked == "original" {
            let file = try await file(request, context)
            return try await serveBlob(request, context, key: file.blobKey, sha256: file.sha256, byteSize: file.size,
                                       contentType: file.contentType, fileName: file.fileName)
        }
        // A rendered version (thumbnail, hd, frame:{W}x{H}): media knows it and checks access;
        // storage, at the same time, that the file was not deleted (media may not have heard yet).
        let id = try context.parameters.require("file_id")
        let format = request.uri.queryParameters.get("format") ?? ""
        _ = try Self.versionSize(asked)
        async let rendered = renderedVersion(id, size: asked, format: format, context)
        try await requireStoredFile(id, context)
        let version = try await rendered
        let ext = version.format == "webp" ? "webp" : "jpg"
        return try await serveBlob(request, context, key: version.blobKey, sha256: version.sha256, byteSize: version.byteSize,
                                   contentType: version.contentType,
                                   fileName: "\(id)-\(version.size.replacingOccurrences(of: ":", with: "-")).\(ext)")
    }

    /// A rendered version of a photo the caller may see. Media renders a missing version on
    /// request, so only `thumbnail`, `hd` and the screens the caller has (a user: the frames
    /// they own; a frame: its own) are asked for that way. Another `frame:{W}x{H}` may only be
    /// read when it exists already (made for someone else's frame, listed in the photo's
    /// metadata document): it is taken from that document, so nothing is rendered or stored
    /// for it, and when there is none the answer is 400. One album call for a `frame:` size,
    /// none for the others.
    func renderedVersion(_ id: String, size asked: String, format: String, _ context: GatewayContext) async throws -> PhotoVersion {
        let size = try Self.versionSize(asked)
        if size.hasPrefix("frame:") {
            let screens = try await screenSizes(context)
            if !screens.contains(size) {
                let metadata = try require(try await media.call(
                    MediaAPI.getPhotoMetadata, GetPhotoMetadataRequest(fileID: id), headers: principalHeaders(context)).metadata)
                let candidates = metadata.versions.filter { $0.size == size }
                let wanted = format.lowercased()
                // No format asked: JPEG when there is one, else what exists (as media chooses).
                if let existing = wanted.isEmpty ? candidates.first(where: { $0.format == "jpeg" }) ?? candidates.first
                                                 : candidates.first(where: { $0.format == wanted }) {
                    return existing
                }
                var whose = "this frame's screen"
                var sizes = ["thumbnail", "hd"]
                if case .user = context.principal {
                    whose = "the screen of one of your frames"
                    sizes.append("original")
                }
                for other in screens + metadata.versions.map(\.size) where other.hasPrefix("frame:") && !sizes.contains(other) {
                    sizes.append(other)
                }
                throw APIError.badRequest("\(size) is not \(whose); sizes: \(sizes.joined(separator: ", "))")
            }
        }
        let reply = try await media.call(MediaAPI.getVersion, GetVersionRequest(fileID: id, size: size, format: format),
                                         headers: principalHeaders(context))
        return try require(reply.version)
    }

    /// The rendered size `asked` names: `thumbnail`, `hd` or `frame:{W}x{H}` (normalised); 400
    /// for anything else (`original` is served before, from storage).
    static func versionSize(_ asked: String) throws -> String {
        if asked == "thumbnail" || asked == "hd" { return asked }
        guard let match = asked.wholeMatch(of: /frame:([0-9]{1,5})x([0-9]{1,5})/),
              let width = Int(match.1), let height = Int(match.2) else {
            throw APIError.badRequest("size must be original, thumbnail, hd or frame:{W}x{H}")
        }
        return "frame:\(width)x\(height)"
    }

    /// A delete is a delete: 404 for a file storage no longer has, whatever media (which
    /// learns of the delete from `file.deleted`, a moment later) still holds. Storage commits
    /// the delete before `DELETE` answers 204, so every request that starts after it gets 404.
    /// One `GetFile` by primary key, run alongside the media call (the callers start that one
    /// first), so it adds load, not latency. The answer is the same "no such photo" as media's
    /// for a photo the caller may not see, so neither tells a hidden photo from a deleted one.
    func requireStoredFile(_ id: String, _ context: GatewayContext) async throws {
        do {
            _ = try await storage.call(StorageAPI.getFile, GetFileRequest(userID: "", fileID: id), headers: headers(context))
        } catch let error as ServiceError where error.status == .notFound {
            throw APIError.notFound("no such photo")
        }
    }

    /// `frame:{W}x{H}` of the caller's screens: a user's frames, or a frame's own screen.
    func screenSizes(_ context: GatewayContext) async throws -> [String] {
        let frames: [Wire.Frame]
        switch context.principal {
        case .user(let id):
            frames = try await album.call(AlbumAPI.listFrames, ListFramesRequest(userID: id), headers: headers(context)).frames
        case .frame(let id, _):
            let reply = try await album.call(AlbumAPI.getFrame, GetFrameRequest(
                frameID: id, principal: Wire.Principal(kind: .frame, id: id)), headers: headers(context))
            frames = reply.frame.map { [$0] } ?? []
        case nil:
            throw APIError.unauthenticated
        }
        var seen = Set<String>()
        return frames.map { "frame:\($0.width)x\($0.height)" }.filter { seen.insert($0).inserted }
    }

    /// NATS headers of a call made on behalf of the caller (user or frame), for services that
    /// check access themselves.
    func principalHeaders(_ context: GatewayContext) throws -> NATSHeaders {
        var headers = headers(context)
        switch context.principal {
        case .user(let id): headers[Subjects.principalHeader] = "user:\(id)"
        case .frame(let id, _): headers[Subjects.principalHeader] = "frame:\(id)"
        case nil: throw APIError.unauthenticated
        }
        return headers
    }

    /// Streams an immutable blob: ETag = its SHA-256, cacheable forever, `Range` → 206,
    /// `If-None-Match` → 304.
    func serveBlob(_ request: Request, _ context: GatewayContext, key keyText: String, sha256: String, byteSize: Int64,
                   contentType: String, fileName: String) async throws -> Response {
        guard let key = BlobKey(keyText) else { throw APIError.internalError }
        let etag = "\"\(sha256)\""
        var headers: HTTPFields = [
            .eTag: etag,
            .cacheControl: "private, max-age=31536000, immutable",
            .acceptRanges: "bytes",
        ]
        if let match = request.headers[.ifNoneMatch], HTTPConditions.matches(ifNoneMatch: match, etag: etag) {
            return Response(status: .notModified, headers: headers)
        }
        headers[.contentType] = contentType
        headers[.contentDisposition] = "inline; filename=\"\(fileName.replacingOccurrences(of: "\"", with: ""))\""
        let path = blobs.path(for: key)
        let total = Int(byteSize)
        let fileIO = FileIO()
        if let rangeHeader = request.headers[.range], request.headers[.ifRange].map({ $0 == etag }) ?? true {
            switch HTTPConditions.byteRange(rangeHeader, size: total) {
            case .satisfiable(let range):
                headers[.contentRange] = "bytes \(range.lowerBound)-\(range.upperBound)/\(total)"
                headers[.contentLength] = String(range.count)
                let body = try await fileIO.loadFile(path: path, range: range, context: context)
                return Response(status: .partialContent, headers: headers, body: body)
            case .unsatisfiable:
                var error = APIError(.rangeNotSatisfiable, "range_not_satisfiable", "the range is outside the file")
                error.headers[.contentRange] = "bytes */\(total)"
                throw error
            case .ignored:
                break
            }
        }
        headers[.contentLength] = String(total)
        let body = try await fileIO.loadFile(path: path, context: context)
        return Response(status: .ok, headers: headers, body: body)
    }
}

/// Conditional and range requests (RFC 9110), for immutable content.
enum HTTPConditions {
    enum RangeResult: Equatable {
        case satisfiable(ClosedRange<Int>)
        case unsatisfiable
        /// Not a single bytes range we serve partially: answer 200 with everything.
        case ignored
    }

    /// `If-None-Match: "a", W/"b"` or `*`, compared weakly.
    static func matches(ifNoneMatch header: String, etag: String) -> Bool {
        let strip = { (tag: String) -> String in
            let t = tag.trimmingCharacters(in: .whitespaces)
            return t.hasPrefix("W/") ? String(t.dropFirst(2)) : t
        }
        return header.split(separator: ",").contains { candidate in
            let c = candidate.trimmingCharacters(in: .whitespaces)
            return c == "*" || strip(c) == strip(etag)
        }
    }

    /// `bytes=a-b`, `bytes=a-`, `bytes=-n` (one range; several ranges are answered whole).
    static func byteRange(_ header: String, size: Int) -> RangeResult {
        let h = header.trimmingCharacters(in: .whitespaces)
        guard h.lowercased().hasPrefix("bytes=") else { return .ignored }
        let spec = h.dropFirst(6).trimmingCharacters(in: .whitespaces)
        guard !spec.contains(",") else { return .ignored }
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2 else { return .ignored }
        if parts[0].isEmpty {
            guard let suffix = Int(parts[1]), suffix > 0 else { return parts[1].isEmpty ? .ignored : .unsatisfiable }
            guard size > 0 else { return .unsatisfiable }
            return .satisfiable(max(0, size - suffix)...(size - 1))
        }
        guard let start = Int(parts[0]), start >= 0 else { return .ignored }
        guard start < size else { return .unsatisfiable }
        if parts[1].isEmpty { return .satisfiable(start...(size - 1)) }
        guard let end = Int(parts[1]), end >= start else { return .ignored }
        return .satisfiable(start...min(end, size - 1))
    }
}
