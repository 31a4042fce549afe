import BlobStore
import Foundation
import Imaging
import Logging
import Metrics
import Postgres
import ServiceKit
import ServiceLifecycle
import Wire

/// Settings of the storage service.
public struct StorageConfiguration: Sendable {
    /// Root of the blob store the gateway writes uploads into.
    public var blobRoot: String
    /// Files per page when a request asks for none.
    public var defaultPageSize = 50
    /// The most files a page holds, whatever a request asks for.
    public var maxPageSize = 200
    /// How often the blob janitor sweeps the blob store.
    public var janitorInterval: Duration = .seconds(600)
    /// How long a blob nobody references is kept after it was (last) written: uploads not
    /// registered yet and versions not committed yet are that young. Also the age at which
    /// an upload's abandoned temp file goes.
    public var blobGracePeriod: Duration = .seconds(3600)
    /// How long a deleted file's tombstone is kept (``DeletedFiles``): gateways catching up on
    /// `file.deleted` ask for this far back, as far as a capability URL can live (its lifetime,
    /// 7 days by default, plus the day its expiry is rounded up by, plus an hour of clock skew).
    /// Must be at least that; 9 days by default.
    public var deletedFileRetention: Duration = .seconds(9 * 86_400)
    /// How often old tombstones are pruned.
    public var deletedFilePruneInterval: Duration = .seconds(3600)
    /// Deleted files per `ListDeletedFiles` page when a request asks for none, and the most.
    public var defaultDeletedPageSize = 1000
    public var maxDeletedPageSize = 5000

    public init(blobRoot: String) {
        self.blobRoot = blobRoot
    }
}

/// The storage service (`svc.storage.v1.*`): registers blobs the gateway stored, validates and
/// analyses them, dedups per user by SHA-256, lists and deletes files, and announces
/// `file.uploaded`, `file.uploaded.with_ai` and `file.deleted` through its outbox. A delete
/// leaves a tombstone for a while, which `ListDeletedFiles` answers from (``DeletedFiles``).
///
/// Each file holds a reference to its blob in the blob store's table (``BlobReferences``, owner
/// `storage`, ref = file id), added and released in the transaction that inserts or deletes
/// the file; the blob goes when its last reference (a file's or a media version's) goes.
public final class StorageService: Sendable {
    public static let name = StorageAPI.service
    /// The PostgreSQL schema the service owns, and its migrations (after ServiceKit's).
    public static let schema = StorageSchema.name
    public static var migrations: [Migration] { StorageSchema.migrations }

    let runtime: ServiceRuntime
    let configuration: StorageConfiguration
    let blobs: BlobStore
    let references: BlobReferences
    let imaging: Imaging
    let analyser: any PhotoAnalyser
    let relay: OutboxRelay
    let deletedFiles: DeletedFiles
    let logger: Logger
    let schema = StorageSchema.name

    public init(runtime: ServiceRuntime, configuration: StorageConfiguration, imaging: Imaging,
                analyser: any PhotoAnalyser = NoAIAnalyser()) {
        self.runtime = runtime
        self.configuration = configuration
        let blobs = BlobStore(path: configuration.blobRoot)
        self.blobs = blobs
        self.imaging = imaging
        self.analyser = analyser
        self.relay = runtime.outboxRelay(schema: StorageSchema.name)
        self.deletedFiles = DeletedFiles(schema: StorageSchema.name, retention: configuration.deletedFileRetention)
        var logger = runtime.logger
        logger[metadataKey: "service.name"] = "\(Self.name)"
        self.logger = logger
        self.references = BlobReferences(store: blobs, postgres: runtime.postgres, logger: logger)
    }

    /// Migrates the blob store's `blobs` schema and the `storage` schema, and returns the
    /// request server, the outbox relay, the blob janitor (abandoned upload files, blobs
    /// nobody references) and the pruner of deleted files' tombstones.
    public func services() async throws -> [any Service] {
        try await BlobReferences.migrate(on: runtime.postgres, logger: logger)
        return try await runtime.services(
            identity: ServiceIdentity(name: Self.name, description: "Framecast storage: uploads, analysis, dedup, files"),
            schema: schema, migrations: StorageSchema.migrations, endpoints: endpoints, events: [], relay: relay)
            + [BlobJanitor(references: references, interval: configuration.janitorInterval,
                           gracePeriod: configuration.blobGracePeriod, logger: logger),
               DeletedFilesPruner(deletedFiles: deletedFiles, postgres: runtime.postgres,
                                  interval: configuration.deletedFilePruneInterval, logger: logger)]
    }

    var endpoints: [Endpoint] {
        [
            Endpoint(StorageAPI.registerUpload) { [self] request, context in try await registerUpload(request, context) },
            Endpoint(StorageAPI.getFile) { [self] request, _ in try await getFile(request) },
            Endpoint(StorageAPI.listFiles) { [self] request, _ in try await listFiles(request) },
            Endpoint(StorageAPI.deleteFile) { [self] request, context in try await deleteFile(request, context) },
            Endpoint(StorageAPI.listDeletedFiles) { [self] request, _ in try await listDeletedFiles(request) },
        ]
    }

    // MARK: RegisterUpload

    func registerUpload(_ request: RegisterUploadRequest, _ context: CallContext) async throws -> RegisterUploadReply {
        guard !request.userID.isEmpty else { throw ServiceError.invalid("user_id is required") }
        guard let key = BlobKey(request.blobKey), key.hex == request.sha256.lowercased() else {
            throw ServiceError.invalid("blob_key must be the upload's SHA-256 in hex")
        }
        guard request.size > 0 else { throw ServiceError.invalid("the upload is empty") }
        let fileName = Self.cleanFileName(request.fileName)

        if let existing = try await file(user: request.userID, sha256: key.hex) {
            context.logger.info("duplicate upload", metadata: ["file.id": "\(existing.fileID)"])
            Counter(label: "storage_uploads_total", dimensions: [("outcome", "duplicate")]).increment()
            return RegisterUploadReply(file: existing, duplicate: true)
        }
        guard blobs.size(of: key) == request.size else {
            throw ServiceError.invalid("no stored upload of \(request.size) bytes under blob_key \(key)")
        }

        let path = blobs.path(for: key)
        let analysis: ImageAnalysis
        do {
            analysis = try await imaging.analyzeFile(path)
        } catch let error as ImagingError {
            // Nothing references a refused upload's bytes, unless they are someone's already
            // (then they stay); a failure here leaves them to the janitor.
            do {
                try await references.removeIfUnreferenced(key)
            } catch {
                context.logger.warning("removing a refused upload's blob failed", metadata: [
                    "blob.key": "\(key)", "error": "\(error)"])
            }
            Counter(label: "storage_uploads_total", dimensions: [("outcome", "refused")]).increment()
            throw Self.refusal(error)
        }
        let ai: AIMetadata
        do {
            ai = try await analyser.analyse(path: path, analysis: analysis)
        } catch {
            // The photo is fine; only the AI analysis failed. Store it honestly without AI data.
            context.logger.warning("AI analysis failed", metadata: ["analyser": "\(analyser.name)", "error": "\(error)"])
            ai = AIMetadata(analyser: analyser.name)
        }

        let fileID = UUID().uuidString.lowercased()
        var record = FileRecord(
            fileID: fileID, userID: request.userID, blobKey: key.hex, sha256: key.hex, size: request.size,
            fileName: fileName, contentType: analysis.header.format.contentType,
            declaredContentType: request.contentType, metadata: request.metadata,
            analysis: Self.wireAnalysis(analysis), aiMetadata: ai, createdAt: 0,
            storagePath: blobs.relativePath(for: key))
        let takenAt: PostgresValue = analysis.takenAt.map { .double($0.timeIntervalSince1970 * 1000) } ?? .null
        let analysisBytes: [UInt8] = record.analysis?.wireBytes() ?? []
        let parameters: [PostgresValue] = [
            .text(record.fileID), .text(record.userID), .text(record.blobKey), .text(record.sha256),
            .int(record.size), .text(record.fileName), .text(record.contentType),
            .text(record.declaredContentType), .text(Self.json(request.metadata)),
            .text(analysis.header.format.rawValue), .int(Int64(analysis.width)), .int(Int64(analysis.height)),
            takenAt, .bytea(analysisBytes), .bytea(ai.wireBytes()),
        ]
        let (schema, snapshot, references) = (self.schema, record, self.references)
        let created: Int64?
        do {
            created = try await runtime.postgres.withTransaction { connection in
                let rows = try connection.query("""
                    INSERT INTO \(schema).files (file_id, user_id, blob_key, sha256, size, file_name, content_type,
                        declared_content_type, metadata, format, width, height, taken_at, analysis, ai_metadata)
                    VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12,
                            to_timestamp($13::double precision / 1000), $14, $15)
                    ON CONFLICT (user_id, sha256) DO NOTHING
                    RETURNING (extract(epoch FROM created_at) * 1000)::bigint AS created_ms
                    """, parameters)
                guard let row = rows.first else { return nil }
                // The file's reference to its blob, under the blob's lock (a blob removed since
                // the gateway stored it is refused here, and nothing is committed).
                try references.add(key, owner: .storage, ref: snapshot.fileID, on: connection)
                let createdAt: Int64 = try row.decode("created_ms")
                var file = snapshot
                file.createdAt = createdAt
                let now = EventTime.now()
                try Outbox.enqueue(FileUploaded(eventID: UUID().uuidString.lowercased(), occurredAt: now,
                                                userID: file.userID, file: file), schema: schema, on: connection)
                try Outbox.enqueue(FileUploadedWithAI(eventID: UUID().uuidString.lowercased(), occurredAt: now,
                                                      userID: file.userID, file: file), schema: schema, on: connection)
                return createdAt
            }
        } catch let error as BlobStoreError where error.code == .notFound {
            context.logger.warning("the upload's blob was removed before it was registered", metadata: ["blob.key": "\(key)"])
            throw ServiceError.conflict("the upload's bytes were removed concurrently; upload the photo again")
        }
        guard let created else {
            // The same bytes were registered concurrently by the same user: that one wins.
            guard let existing = try await file(user: request.userID, sha256: key.hex) else {
                throw ServiceError.conflict("the upload was registered and removed concurrently; try again")
            }
            return RegisterUploadReply(file: existing, duplicate: true)
        }
        record.createdAt = created
        relay.wake()
        Counter(label: "storage_uploads_total", dimensions: [("outcome", "registered")]).increment()
        context.logger.info("file registered", metadata: [
            "file.id": "\(fileID)", "file.format": "\(analysis.header.format.rawValue)",
            "file.size": "\(request.size)",
        ])
        return RegisterUploadReply(file: record, duplicate: false)
    }

    static func refusal(_ error: ImagingError) -> ServiceError {
        switch error.code {
        case .unsupportedFormat:
            return ServiceError(.unsupported, "not a supported image (JPEG, PNG, WebP, HEIC/HEIF, AVIF, GIF or TIFF)")
        case .tooLarge:
            return ServiceError(.unsupported, "the image is too large to process: \(error.message)")
        case .corrupt:
            return ServiceError(.unsupported, "the image is damaged or truncated")
        default:
            return ServiceError(.unsupported, "the image cannot be processed: \(error.message)")
        }
    }

    // MARK: GetFile, ListFiles

    func getFile(_ request: GetFileRequest) async throws -> GetFileReply {
        guard let id = Self.uuid(request.fileID) else { throw ServiceError.notFound("no such file") }
        let schema = self.schema
        let rows = try await runtime.postgres.query("""
            SELECT \(Self.columns) FROM \(schema).files WHERE file_id = $1::uuid AND ($2 = '' OR user_id = $2)
            """, [.text(id), .text(request.userID)])
        guard let row = rows.first else { throw ServiceError.notFound("no such file") }
        return GetFileReply(file: try record(row))
    }

    func listFiles(_ request: ListFilesRequest) async throws -> ListFilesReply {
        guard !request.userID.isEmpty else { throw ServiceError.invalid("user_id is required") }
        let size = request.pageSize <= 0 ? configuration.defaultPageSize : min(Int(request.pageSize), configuration.maxPageSize)
        var after: (createdAt: String, fileID: String)?
        if !request.pageToken.isEmpty {
            guard let cursor = Self.decodeCursor(request.pageToken) else { throw ServiceError.invalid("page_token is not valid") }
            after = cursor
        }
        let schema = self.schema
        let rows = try await runtime.postgres.query("""
            SELECT \(Self.columns), created_at::text AS cursor_at FROM \(schema).files
            WHERE user_id = $1 AND ($2 = '' OR (created_at, file_id) < ($2::timestamptz, $3::uuid))
            ORDER BY created_at DESC, file_id DESC LIMIT $4
            """, [.text(request.userID), .text(after?.createdAt ?? ""),
                  .text(after?.fileID ?? "00000000-0000-0000-0000-000000000000"), .int(Int64(size + 1))])
        let page = rows.prefix(size)
        var next = ""
        if rows.count > size, let last = page.last {
            next = Self.encodeCursor(createdAt: try last.decode("cursor_at"), fileID: try last.decode("file_id"))
        }
        return ListFilesReply(files: try page.map(record), nextPageToken: next)
    }

    // MARK: DeleteFile

    func deleteFile(_ request: DeleteFileRequest, _ context: CallContext) async throws -> Empty {
        guard !request.userID.isEmpty else { throw ServiceError.invalid("user_id is required") }
        guard let id = Self.uuid(request.fileID) else { throw ServiceError.notFound("no such file") }
        let (schema, references, deletedFiles) = (self.schema, self.references, self.deletedFiles)
        let deleted: (blob: BlobKey?, unreferenced: Bool)? = try await runtime.postgres.withTransaction { connection in
            let rows = try connection.query(
                "DELETE FROM \(schema).files WHERE file_id = $1::uuid AND user_id = $2 RETURNING blob_key, sha256",
                [.text(id), .text(request.userID)])
            guard let row = rows.first else { return nil }
            // The tombstone commits with the delete: a gateway that asks ListDeletedFiles after
            // this commit sees it, and one that asked before hears `file.deleted` (published
            // after the commit).
            try deletedFiles.record(id, on: connection)
            let blob: String = try row.decode("blob_key"), sha: String = try row.decode("sha256")
            try Outbox.enqueue(FileDeleted(eventID: UUID().uuidString.lowercased(), occurredAt: EventTime.now(),
                                           userID: request.userID, fileID: id, ownerID: request.userID,
                                           blobKey: blob, sha256: sha), schema: schema, on: connection)
            guard let key = BlobKey(blob) else { return (nil, false) }
            return (key, try references.release(key, owner: .storage, ref: id, on: connection))
        }
        guard let deleted else { throw ServiceError.notFound("no such file") }
        relay.wake()
        // The file is deleted (committed): a blob left behind by a failure here is unreferenced
        // and goes with the janitor's next sweep, so the delete still answers ok.
        var removed = false
        if let key = deleted.blob, deleted.unreferenced {
            do {
                removed = try await references.removeIfUnreferenced(key)
            } catch {
                context.logger.warning("removing the deleted file's blob failed; the janitor will", metadata: [
                    "file.id": "\(id)", "blob.key": "\(key)", "error": "\(error)"])
            }
        }
        context.logger.info("file deleted", metadata: ["file.id": "\(id)", "blob.removed": "\(removed)"])
        return Empty()
    }

    // MARK: ListDeletedFiles

    /// The files deleted at or after `since`, oldest first, in pages (the gateway's catch-up on
    /// `file.deleted`, see ``DeletedFiles``). `retained_since` says how far back the answer is
    /// complete.
    func listDeletedFiles(_ request: ListDeletedFilesRequest) async throws -> ListDeletedFilesReply {
        guard request.pageSize >= 0 else { throw ServiceError.invalid("page_size must not be negative") }
        let size = request.pageSize == 0 ? configuration.defaultDeletedPageSize
            : min(Int(request.pageSize), configuration.maxDeletedPageSize)
        var after: (deletedAt: String, fileID: String)?
        if !request.pageToken.isEmpty {
            guard let cursor = Self.decodeCursor(request.pageToken) else { throw ServiceError.invalid("page_token is not valid") }
            after = (cursor.createdAt, cursor.fileID)
        }
        let now = Date()
        let since = Date(timeIntervalSince1970: Double(max(0, request.since)) / 1000)
        let page = try await deletedFiles.page(since: since, after: after, size: size, on: runtime.postgres)
        return ListDeletedFilesReply(
            files: page.files,
            nextPageToken: page.next.map { Self.encodeCursor(createdAt: $0.deletedAt, fileID: $0.fileID) } ?? "",
            retainedSince: EventTime.millis(deletedFiles.retainedSince(now: now)))
    }

    // MARK: Rows

    static let columns = """
        file_id::text AS file_id, user_id, blob_key, sha256, size, file_name, content_type, declared_content_type,
        metadata::text AS metadata, analysis, ai_metadata, (extract(epoch FROM created_at) * 1000)::bigint AS created_ms
        """

    func file(user: String, sha256: String) async throws -> FileRecord? {
        let schema = self.schema
        let rows = try await runtime.postgres.query(
            "SELECT \(Self.columns) FROM \(schema).files WHERE user_id = $1 AND sha256 = $2", [.text(user), .text(sha256)])
        return try rows.first.map(record)
    }

    func record(_ row: PostgresRow) throws -> FileRecord {
        let blobKey: String = try row.decode("blob_key")
        return FileRecord(
            fileID: try row.decode("file_id"), userID: try row.decode("user_id"), blobKey: blobKey,
            sha256: try row.decode("sha256"), size: try row.decode("size"), fileName: try row.decode("file_name"),
            contentType: try row.decode("content_type"), declaredContentType: try row.decode("declared_content_type"),
            metadata: Self.dictionary(try row.decode("metadata")),
            analysis: try PhotoAnalysis(wireBytes: try row.decode("analysis", as: [UInt8].self)),
            aiMetadata: try AIMetadata(wireBytes: try row.decode("ai_metadata", as: [UInt8].self)),
            createdAt: try row.decode("created_ms"),
            storagePath: BlobKey(blobKey).map(blobs.relativePath(for:)) ?? "")
    }

    // MARK: Helpers

    static func wireAnalysis(_ a: ImageAnalysis) -> PhotoAnalysis {
        PhotoAnalysis(
            format: a.header.format.rawValue, width: Int32(a.width), height: Int32(a.height),
            orientation: Int32(a.header.orientation),
            takenAt: a.takenAt.map(EventTime.millis),
            cameraMake: a.cameraMake ?? "", cameraModel: a.cameraModel ?? "",
            gps: a.location.map { GeoPoint(latitude: $0.latitude, longitude: $0.longitude, altitude: $0.altitude) },
            dominantColors: a.dominantColors.map(\.hex), perceptualHash: a.perceptualHash)
    }

    /// A file name safe to show and to put in a Content-Disposition: no path, no control
    /// characters, at most 255 bytes; "photo" when nothing is left.
    static func cleanFileName(_ name: String) -> String {
        let base = name.split(whereSeparator: { $0 == "/" || $0 == "\\" }).last.map(String.init) ?? ""
        var cleaned = String(base.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7F }.map(Character.init))
            .trimmingCharacters(in: .whitespaces)
        while cleaned.utf8.count > 255 { cleaned.removeLast() }
        return cleaned.isEmpty || cleaned == "." || cleaned == ".." ? "photo" : cleaned
    }

    static func uuid(_ text: String) -> String? {
        UUID(uuidString: text).map { $0.uuidString.lowercased() }
    }


    static func json(_ dictionary: [String: String]) -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: dictionary, options: [.sortedKeys]) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    static func dictionary(_ json: String) -> [String: String] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else { return [:] }
        return object.compactMapValues { $0 as? String ?? "\($0)" }
    }

    static func encodeCursor(createdAt: String, fileID: String) -> String {
        Data("\(createdAt)|\(fileID)".utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// The cursor a page token stands for, nil for anything ``encodeCursor(createdAt:fileID:)``
    /// could not have made. Its time goes into the query as `$2::timestamptz`, so it is checked
    /// field by field first (``isCursorTime(_:)``): a tampered token is `invalid` (400 at the
    /// gateway), never a cast PostgreSQL refuses (an internal error, 500).
    static func decodeCursor(_ token: String) -> (createdAt: String, fileID: String)? {
        guard token.utf8.count <= 200 else { return nil }
        var base64 = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.utf8.count % 4 != 0 { base64 += "=" }
        guard let data = Data(base64Encoded: base64) else { return nil }
        let parts = String(decoding: data, as: UTF8.self).split(separator: "|", omittingEmptySubsequences: false)
        guard parts.count == 2, let id = uuid(String(parts[1])), isCursorTime(parts[0]) else { return nil }
        return (String(parts[0]), id)
    }

    /// Whether `text` is a time as cursors hold it — `created_at::text` (`deleted_at::text`) of
    /// a session with `DateStyle=ISO` and `TimeZone=UTC`: `YYYY-MM-DD HH:MM:SS[.f…f]±HH[:MM]`,
    /// ASCII digits only, with every field in range (years 1…9999, a day the month has, at most
    /// six fraction digits, an offset of at most 14:59), which `::timestamptz` always accepts.
    static func isCursorTime(_ text: Substring) -> Bool {
        let bytes = Array(text.utf8)
        var i = 0
        func digits(_ count: Int) -> Int? {
            guard i + count <= bytes.count else { return nil }
            var value = 0
            for byte in bytes[i..<(i + count)] {
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
            }
            i += count
            return value
        }
        func skip(_ byte: UInt8) -> Bool {
            guard i < bytes.count, bytes[i] == byte else { return false }
            i += 1
            return true
        }
        guard let year = digits(4), skip(UInt8(ascii: "-")), let month = digits(2), skip(UInt8(ascii: "-")),
              let day = digits(2), skip(UInt8(ascii: " ")), let hour = digits(2), skip(UInt8(ascii: ":")),
              let minute = digits(2), skip(UInt8(ascii: ":")), let second = digits(2) else { return false }
        if skip(UInt8(ascii: ".")) {
            let start = i
            while i - start < 6, digits(1) != nil {}
            guard i > start else { return false }
        }
        guard skip(UInt8(ascii: "+")) || skip(UInt8(ascii: "-")), let offsetHours = digits(2), offsetHours <= 14 else {
            return false
        }
        if skip(UInt8(ascii: ":")) {
            guard let offsetMinutes = digits(2), offsetMinutes <= 59 else { return false }
        }
        guard i == bytes.count, (1...9999).contains(year), (1...12).contains(month),
              hour <= 23, minute <= 59, second <= 59 else { return false }
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        let days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
        return (1...days).contains(day)
    }
}
