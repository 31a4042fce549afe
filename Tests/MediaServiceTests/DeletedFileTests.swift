import BlobStore
import Foundation
import FramecastTesting
import Imaging
@testable import MediaService
import NATS
import Postgres
import ServiceKit
import Testing
import Wire

extension MediaHarness {
    /// The file's `render_jobs` rows.
    func jobRows(_ fileID: String) async throws -> Int {
        try await runtime.postgres.query("SELECT 1 FROM media.render_jobs WHERE file_id = $1", [.text(fileID)]).count
    }

    /// Whether media holds the file's tombstone.
    func tombstones(_ fileID: String) async throws -> Int {
        try await runtime.postgres.query("SELECT 1 FROM media.deleted_files WHERE file_id = $1", [.text(fileID)]).count
    }
}

extension MediaServiceTests {
    /// Issue 12, item 2 ("a delete is a delete"), media's part: the events arrive in the wrong
    /// order — `file.deleted` first, then the file's `file.uploaded.with_ai` (late, and once
    /// more under another event id, as a republish past JetStream's duplicate window would).
    /// Nothing is rendered, stored or announced; metadata and every version answer not_found;
    /// a frame's screen change or an on-demand request queues and renders nothing for it.
    @Test func aLateUploadEventAfterItsDeleteChangesNothing() async throws {
        let h = try await MediaHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("Kite"))
        let owner = user()
        try await h.running(album: AlbumState(screens: twoScreens)) {
            let fileID = UUID().uuidString.lowercased()
            try await h.deliver(FileDeleted(eventID: UUID().uuidString.lowercased(), occurredAt: 3, userID: owner,
                                            fileID: fileID, ownerID: owner))
            #expect(try await h.tombstones(fileID) == 1)

            let late = try await h.upload(photo, user: owner, fileID: fileID)
            #expect(try await eventually(timeout: .seconds(60)) { try await h.processed(late.eventID) })
            var again = late
            again.eventID = UUID().uuidString.lowercased()
            try await h.deliver(again)

            #expect(h.service.renderCount.current == 0, "nothing decoded or rendered")
            #expect(try await h.versionRows(fileID).isEmpty)
            #expect(try await h.metadataRows(fileID) == 0)
            #expect(try await h.events(MediaCacheReady.self).filter { $0.fileID == fileID }.isEmpty, "no cache_ready")
            #expect(try await h.events(MediaVersionCreated.self).filter { $0.version?.fileID == fileID }.isEmpty)
            let asOwner = Principal(kind: .user, id: owner)
            #expect(try await h.status(MediaAPI.getPhotoMetadata, GetPhotoMetadataRequest(fileID: fileID), as: asOwner) == .notFound)
            for size in ["original", "thumbnail", "hd", "frame:1024x600", "frame:800x480"] {
                #expect(try await h.status(MediaAPI.getVersion, GetVersionRequest(fileID: fileID, size: size), as: asOwner) == .notFound,
                        "\(size)")
            }
            // A frame that shows the file's album appears: nothing is queued for a deleted file.
            try await h.deliver(h.albumsChanged(frame: frameID(), owner: owner, 1280, 800, files: [fileID]))
            #expect(try await h.jobRows(fileID) == 0)
            #expect(h.service.renderCount.current == 0)
            #expect(try await h.tombstones(fileID) == 1)
        }
        await h.close()
    }

    /// A render that was already running when `file.deleted` landed (the background queue, an
    /// on-demand request, or the upload's own render) keeps nothing: at commit it finds the
    /// tombstone under the file's lock, stores no row and removes the blob it wrote (through
    /// the blob references: nobody references it). The file's queued jobs go with it.
    @Test func aRenderFinishingAfterTheDeleteKeepsNothing() async throws {
        let h = try await MediaHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("ColorfulCups"))
        let owner = user()
        try await h.running(album: AlbumState(screens: twoScreens)) {
            let upload = try await h.upload(photo, user: owner)
            let file = try #require(upload.file)
            _ = try #require(try await h.waitCacheReady(file.fileID))
            let versionKeys = try await h.versionRows(file.fileID).compactMap { BlobKey($0.key) }
            #expect(versionKeys.count == 4)
            let original = try #require(BlobKey(file.blobKey))
            // The render's job, claimed before the delete lands (as a worker already at it would).
            let claims = try await h.service.claim(file.fileID, [MediaService.frameVersion(width: 800, height: 480, format: "jpeg")],
                                                   priority: 0)
            #expect(claims.count == 1)

            try await h.deliver(FileDeleted(eventID: UUID().uuidString.lowercased(), occurredAt: 3, userID: owner,
                                            fileID: file.fileID, ownerID: owner, blobKey: file.blobKey, sha256: file.sha256))
            #expect(try await eventually(timeout: .seconds(30)) { versionKeys.allSatisfy { !h.blobs.exists($0) } },
                    "the deleted file's version blobs are gone")
            let before = Set(h.blobFiles())

            // What a render that began before the delete does when it reaches its commit.
            let rendersBefore = h.service.renderCount.current
            await #expect(throws: ServiceError.self) {
                try await h.service.render(file.fileID, claims, owner: owner, original: original)
            }
            #expect(h.service.renderCount.current == rendersBefore + 1, "it did render")
            #expect(try await h.versionRows(file.fileID).isEmpty, "and kept no row")
            #expect(Set(h.blobFiles()) == before, "nor the blob it wrote")
            #expect(try await h.jobRows(file.fileID) == 0)
            #expect(try await h.unmatchedVersionReferences() == 0)
            #expect(try await h.status(MediaAPI.getVersion, GetVersionRequest(fileID: file.fileID, size: "frame:800x480"),
                                       as: Principal(kind: .user, id: owner)) == .notFound)
            #expect(try await h.events(MediaVersionCreated.self).filter {
                $0.version?.fileID == file.fileID && $0.version?.size == "frame:800x480"
            }.isEmpty)
        }
        await h.close()
    }
}
