import BlobStore
import Foundation
import FramecastTesting
import Imaging
@testable import MediaService
import NATS
import Postgres
import ServiceKit
import StorageService
import Testing
import Wire

extension MediaHarness {
    /// The real storage service on this harness's runtime (same database, NATS, blob store).
    func storageService() -> StorageService {
        StorageService(runtime: runtime, configuration: StorageConfiguration(blobRoot: blobs.root.path), imaging: sharedImaging)
    }

    /// The blob's references in the blob store's table, as `owner:ref`, sorted.
    func references(_ key: BlobKey) async throws -> [String] {
        try await runtime.postgres.query("SELECT owner, ref FROM blobs.refs WHERE blob_key = $1 ORDER BY owner, ref",
                                         [.text(key.hex)])
            .map { row in
                let owner: String = try row.decode("owner"), ref: String = try row.decode("ref")
                return "\(owner):\(ref)"
            }
    }

    /// Version rows without their `media` reference plus `media` references without their row
    /// (0 when rows and references match).
    func unmatchedVersionReferences() async throws -> Int64 {
        let row = try #require(try await runtime.postgres.query("""
            SELECT (SELECT count(*) FROM media.photo_versions v WHERE NOT EXISTS (
                        SELECT 1 FROM blobs.refs r WHERE r.owner = 'media' AND r.blob_key = v.blob_key
                            AND r.ref = v.file_id || '|' || v.size || '|' || v.format))
                 + (SELECT count(*) FROM blobs.refs r WHERE r.owner = 'media' AND NOT EXISTS (
                        SELECT 1 FROM media.photo_versions v WHERE v.blob_key = r.blob_key
                            AND r.ref = v.file_id || '|' || v.size || '|' || v.format)) AS n
            """).first)
        return try row.decode("n")
    }

    /// The SHA-256 of the blob's file as it is on disk.
    func sha256(of key: BlobKey) throws -> String {
        String(try Command.run("sha256sum", [blobs.path(for: key)]).output.prefix(64))
    }

    /// Every blob file in the store (temp files aside).
    func blobFiles() -> [String] {
        (FileManager.default.enumerator(atPath: blobs.root.path)?.allObjects as? [String] ?? []).filter { path in
            !path.hasPrefix("tmp") && BlobKey((path as NSString).lastPathComponent) != nil
        }
    }

    /// Waits until storage's `file.deleted` for `fileID` is in the stream and media handled it,
    /// blob removal included (the consumer handles one event at a time: a barrier published
    /// after it being processed means its handler has returned).
    func settleFileDeleted(_ fileID: String) async throws {
        var event: FileDeleted?
        _ = try await eventually(timeout: .seconds(30)) {
            event = try await events(FileDeleted.self).first { $0.fileID == fileID }
            return event != nil
        }
        let id = try #require(event, "storage announced the deletion").eventID
        #expect(try await eventually(timeout: .seconds(60)) { try await processed(id) })
        try await deliver(FileDeleted(eventID: UUID().uuidString.lowercased(), occurredAt: EventTime.now(), userID: "nobody",
                                      fileID: UUID().uuidString.lowercased(), ownerID: "nobody"))
    }
}

extension MediaServiceTests {
    /// Issue 12, item 1: a viewer downloads the owner's thumbnail, hd and frame version, uploads
    /// each as a photo of their own and deletes it. Blobs are content addressed, so each copy IS
    /// the owner's version blob; the viewer's delete releases only the viewer's references
    /// (storage's file, media's versions of the copy), and the owner's versions stay: rows,
    /// references, blobs byte for byte. When the owner deletes the photo, everything goes.
    @Test func anotherUsersCopyOfAVersionTakesNothingWhenDeleted() async throws {
        let h = try await MediaHarness.make()
        let storage = h.storageService()
        let files = ServiceClient(service: "storage", nats: h.backend.nats, timeout: .seconds(30))
        let photo = try Photos.bytes(try Photos.plasma("FallenLeaf"))
        let owner = user(), viewer = user()
        let screen = FrameScreen(frameID: landscapeFrame, width: 1024, height: 600, format: "jpeg")
        func register(_ key: BlobKey, size: Int, as user: String) async throws -> FileRecord {
            try #require(try await files.call(StorageAPI.registerUpload, RegisterUploadRequest(
                userID: user, blobKey: key.hex, sha256: key.hex, size: Int64(size), fileName: "photo.jpg",
                contentType: "image/jpeg")).file)
        }
        try await h.running(album: AlbumState(screens: [screen], viewers: [viewer])) {
            try await withServices(try await storage.services(), logger: quietLogger) {
                let up = try await eventually {
                    (try? await h.backend.nats.request("$SRV.PING.storage", payload: [], timeout: .seconds(1))) != nil
                }
                guard up else { throw NotReady() }

                let original = try h.put(photo)
                let mine = try await register(original, size: photo.count, as: owner)
                // Album puts it into the album the frame shows (early enough for the upload's
                // render or not: either way cache_ready follows the frame's version).
                try await h.place(mine.fileID, by: owner)
                _ = try #require(try await h.waitCacheReady(mine.fileID))
                let versions = try await h.versionRows(mine.fileID)
                #expect(Set(versions.map(\.size)) == ["thumbnail", "hd", "frame:1024x600"])
                #expect(try await h.references(original) == ["storage:\(mine.fileID)"])

                for size in ["thumbnail", "hd", "frame:1024x600"] {
                    let version = try #require(versions.first { $0.size == size })
                    let key = try #require(BlobKey(version.key))
                    // The viewer downloads the version and uploads the bytes as a photo of their own.
                    let bytes = try Photos.bytes(h.blobs.path(for: key))
                    #expect(try h.put(bytes) == key, "the same bytes are the same blob")
                    let copy = try await register(key, size: bytes.count, as: viewer)
                    try await h.place(copy.fileID, by: viewer)
                    #expect(copy.blobKey == key.hex)
                    _ = try #require(try await h.waitCacheReady(copy.fileID))
                    let shared = try await h.references(key)
                    #expect(shared.contains("storage:\(copy.fileID)"), "\(size): \(shared)")
                    #expect(shared.contains("media:\(mine.fileID)|\(size)|jpeg"), "\(size): \(shared)")

                    // ...and deletes it.
                    _ = try await files.call(StorageAPI.deleteFile, DeleteFileRequest(userID: viewer, fileID: copy.fileID))
                    #expect(h.blobs.exists(key), "storage let go of the viewer's file, not of the owner's \(size)")
                    try await h.settleFileDeleted(copy.fileID)
                    #expect(try await h.versionRows(copy.fileID).isEmpty)
                    #expect(try await !h.references(key).contains("storage:\(copy.fileID)"))

                    // The owner's versions are intact.
                    let rows = try await h.versionRows(mine.fileID)
                    #expect(rows.map(\.key) == versions.map(\.key), "after the copy of \(size) went")
                    for row in rows {
                        let stored = try #require(BlobKey(row.key))
                        #expect(h.blobs.exists(stored), "\(row.size) after the copy of \(size) went")
                        #expect(try h.sha256(of: stored) == stored.hex, "\(row.size) byte for byte")
                    }
                    let served = try #require(try await h.client.call(
                        MediaAPI.getVersion, GetVersionRequest(fileID: mine.fileID, size: size),
                        headers: MediaService.headers(for: Principal(kind: .user, id: owner))).version)
                    #expect(served.blobKey == key.hex)
                    #expect(h.blobs.size(of: key) == served.byteSize, "the owner's \(size) still downloads")
                }
                #expect(try await h.unmatchedVersionReferences() == 0)

                // The owner deletes the photo: its original and versions go, and nothing else is left.
                _ = try await files.call(StorageAPI.deleteFile, DeleteFileRequest(userID: owner, fileID: mine.fileID))
                #expect(!h.blobs.exists(original), "storage held the original's last reference")
                try await h.settleFileDeleted(mine.fileID)
                #expect(try await h.versionRows(mine.fileID).isEmpty)
                #expect(versions.compactMap { BlobKey($0.key) }.allSatisfy { !h.blobs.exists($0) })
                #expect(try await h.runtime.postgres.query("SELECT 1 FROM blobs.refs").isEmpty, "no reference left")
                #expect(h.blobFiles().isEmpty, "no blob left: \(h.blobFiles())")
            }
        }
        await h.close()
    }

    /// Media's own migration gives every version stored before the reference table existed
    /// its reference (the text ``MediaService/versionReference(fileID:size:format:)`` builds).
    @Test func theMediaMigrationBackfillsAReferencePerStoredVersion() async throws {
        let pool = PostgresPool(configuration: PostgresConfiguration(connInfo: try await TestServers.makeDatabase()),
                                logger: quietLogger)
        try await BlobReferences.migrate(on: pool, logger: quietLogger)
        let media = Outbox.migrations(schema: MediaService.schema) + MediaService.migrations
        _ = try await Migrations.apply(schema: MediaService.schema, media.filter { $0.version < 103 }, on: pool,
                                       logger: quietLogger)
        let key = String(repeating: "cd", count: 32), fileID = UUID().uuidString.lowercased()
        try await pool.execute("""
            INSERT INTO media.photo_versions (file_id, size, width, height, bytes, format, content_type, blob_key)
            VALUES ($1, 'frame:1024x600', 1024, 600, 10, 'webp', 'image/webp', $2)
            """, [.text(fileID), .text(key)])
        #expect(try await Migrations.apply(schema: MediaService.schema, media, on: pool, logger: quietLogger).contains(103))
        let refs = try await pool.query("SELECT blob_key, owner, ref FROM blobs.refs")
        #expect(refs.count == 1)
        let ref = try #require(refs.first)
        #expect(try ref.decode("blob_key", as: String.self) == key)
        #expect(try ref.decode("owner", as: String.self) == "media")
        #expect(try ref.decode("ref", as: String.self)
                == MediaService.versionReference(fileID: fileID, size: "frame:1024x600", format: "webp"))
        await pool.close()
    }
}
