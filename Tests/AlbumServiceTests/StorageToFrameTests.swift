import BlobStore
import Foundation
import FramecastTesting
import Imaging
@testable import AlbumService
@testable import MQTT
import ServiceKit
import StorageService
import Testing
import Wire

/// The real storage service registers a real photo (as the gateway asks it to) and its
/// `file.uploaded.with_ai` reaches the album service: the event contract between the two,
/// end to end, down to the frame's MQTT client.
extension AlbumServiceSuite {
    @Suite struct StorageToFrameTests {
        @Test func uploadThroughStorageReachesTheFrame() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            let root = try TestServers.scratchDirectory("blobs")
            let imaging = Imaging(threads: 1, logger: quietLogger)
            let storage = StorageService(runtime: h.runtime, configuration: StorageConfiguration(blobRoot: root.path), imaging: imaging)
            try await withServices(try await storage.services(), logger: quietLogger) {
                try await h.running { _ in
                    let owner = "owner-\(UUID().uuidString.prefix(8))"
                    let album = try await h.createAlbum(owner).albumID
                    let frame = try await h.registerFrame(owner).frame!.frameID
                    _ = try await h.client.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: owner, frameID: frame, albumIDs: [album]))

                    // What the gateway does: stream the bytes into the blob store, then RegisterUpload.
                    let bytes = try Photos.bytes(try Photos.plasma("FallenLeaf"))
                    let writer = try BlobWriter(store: BlobStore(root: root), limit: bytes.count)
                    try writer.write(bytes)
                    let (key, size, _) = try writer.commit()
                    let storageClient = ServiceClient(service: StorageAPI.service, nats: h.backend.nats, timeout: .seconds(60))
                    let registered = try await storageClient.call(StorageAPI.registerUpload, RegisterUploadRequest(
                        userID: owner, blobKey: key.hex, sha256: key.hex, size: Int64(size), fileName: "FallenLeaf.jpg",
                        contentType: "image/jpeg", metadata: ["album_id": album]))
                    let file = try #require(registered.file)
                    let inAlbum = try await eventually { try await h.photos(owner, album).map(\.fileID) == [file.fileID] }
                    #expect(inAlbum)

                    let frameClient = try h.frameClient(frame)
                    try await frameClient.connect()
                    defer { Task { await frameClient.disconnect() } }
                    let topic = FrameTopics.photoAdded(album: album)
                    let seen = try await h.collect(frameClient, [topic], after: { try await h.cacheReady(file.fileID) }, until: { !$0.isEmpty })
                    let added = try #require(seen.first).decode(PhotoAddedMessage.self)
                    #expect(added.fileID == file.fileID)
                    #expect(added.fileName == "FallenLeaf.jpg")
                    #expect(added.contentType == file.contentType)
                    #expect(added.takenAt == file.analysis?.takenAt)
                    #expect(added.mediaServiceURL == "\(AlbumHarness.gateway)/api/v1/photos/\(file.fileID)")

                    // Deleting the file in storage takes it out of the album and off the frame.
                    let removedTopic = FrameTopics.photoRemoved(album: album)
                    let removed = try await h.collect(frameClient, [removedTopic], after: {
                        _ = try await storageClient.call(StorageAPI.deleteFile, DeleteFileRequest(userID: owner, fileID: file.fileID))
                    }, until: { !$0.isEmpty })
                    #expect(try removed.first?.decode(PhotoRemovedMessage.self).reason == "file_deleted")
                    #expect(try await h.photos(owner, album).isEmpty)
                }
            }
        }
    }
}
