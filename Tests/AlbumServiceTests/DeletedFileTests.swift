import Foundation
import FramecastTesting
@testable import AlbumService
@testable import MQTT
import NATS
import Postgres
import ServiceKit
import Testing
import Wire

extension AlbumHarness {
    /// What album holds about `file`: rows in `photos`, `album_photos`, `album_pushes` (by kind),
    /// the `album.photo_added` events it wrote for it, and its tombstone.
    struct FileState: Equatable, CustomStringConvertible {
        var photos = 0, albumPhotos = 0, addedPushes = 0, removedPushes = 0, addedEvents = 0, tombstones = 0
        var description: String {
            "photos \(photos), album_photos \(albumPhotos), pushes added \(addedPushes) removed \(removedPushes), "
                + "album.photo_added \(addedEvents), tombstones \(tombstones)"
        }
    }

    func state(of file: String) async throws -> FileState {
        let postgres = runtime.postgres
        func count(_ sql: String) async throws -> Int {
            try await postgres.query(sql, [.text(file)]).count
        }
        var state = FileState()
        state.photos = try await count("SELECT 1 FROM album.photos WHERE file_id = $1::uuid")
        state.albumPhotos = try await count("SELECT 1 FROM album.album_photos WHERE file_id = $1::uuid")
        state.addedPushes = try await count("SELECT 1 FROM album.album_pushes WHERE file_id = $1::uuid AND kind = 'added'")
        state.removedPushes = try await count("SELECT 1 FROM album.album_pushes WHERE file_id = $1::uuid AND kind = 'removed'")
        state.tombstones = try await count("SELECT 1 FROM album.deleted_files WHERE file_id = $1::uuid")
        state.addedEvents = try await postgres.query("SELECT payload FROM album.outbox WHERE subject = $1",
                                                     [.text(AlbumPhotoAdded.subject)])
            .filter { row in try AlbumPhotoAdded(wireBytes: row.decode("payload", as: [UInt8].self)).photo?.fileID == file }
            .count
        return state
    }

    func deleted(_ file: String, by owner: String) -> FileDeleted {
        FileDeleted(eventID: UUID().uuidString.lowercased(), occurredAt: 3, userID: owner, fileID: file, ownerID: owner)
    }
}

extension AlbumServiceSuite {
    /// Issue 12, item 2 ("a delete is a delete"), album's part.
    @Suite struct DeletedFileTests {
        /// The events in the wrong order: `file.deleted` is handled first, then the file's
        /// `file.uploaded.with_ai` arrives (late, and again under another event id) and media's
        /// `media.cache_ready` for it. The photo is added to no album, no frame hears of it and
        /// nothing about it is left but its tombstone.
        @Test func aLateUploadAfterItsDeleteAddsNothingAndTellsNoFrame() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))"
                let album = try await h.createAlbum(owner).albumID
                let frame = try #require(try await h.registerFrame(owner).frame).frameID
                _ = try await h.client.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: owner, frameID: frame, albumIDs: [album]))
                let frameClient = try h.frameClient(frame)
                try await frameClient.connect()
                defer { Task { await frameClient.disconnect() } }

                let file = UUID().uuidString.lowercased()
                let upload = h.uploadEvent(user: owner, fileID: file, albumID: album)
                var again = upload
                again.eventID = UUID().uuidString.lowercased()
                let ready = MediaCacheReady(eventID: UUID().uuidString.lowercased(), occurredAt: 2, fileID: file)
                let topics = [FrameTopics.photoAdded(album: album), FrameTopics.photoRemoved(album: album)]
                let seen = try await h.drain(frameClient, topics, marker: "test/\(frame)/marker") {
                    let delete = h.deleted(file, by: owner)
                    try await h.publish(delete)
                    #expect(try await eventually { try await h.processed(delete.eventID) })
                    try await h.publish(upload)
                    try await h.publish(ready)
                    try await h.publish(again)
                    #expect(try await eventually {
                        let first = try await h.processed(upload.eventID)
                        let cached = try await h.processed(ready.eventID)
                        let repeated = try await h.processed(again.eventID)
                        return first && cached && repeated
                    })
                    // A push queued now would go out within the publisher's retry interval (200 ms).
                    try await Task.sleep(for: .milliseconds(600))
                }
                #expect(seen.isEmpty, "no frame hears of a deleted photo: \(seen.map(\.topic))")
                #expect(try await h.photos(owner, album).isEmpty)
                #expect(try await h.state(of: file) == AlbumHarness.FileState(tombstones: 1))
            }
        }

        /// The photo was in the album and announced; it is deleted (photo_removed), then its
        /// upload event and cache_ready come again under new ids (republished past JetStream's
        /// duplicate window): it stays out of the album and no second photo_added goes out.
        @Test func aRedeliveredUploadAfterTheDeleteBringsNothingBack() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))"
                let album = try await h.createAlbum(owner).albumID
                let file = UUID().uuidString.lowercased()
                let upload = h.uploadEvent(user: owner, fileID: file, albumID: album)
                try await h.publish(upload)
                #expect(try await eventually { try await h.photos(owner, album).map(\.fileID) == [file] })
                try await h.cacheReady(file)
                #expect(try await eventually {
                    try await h.runtime.postgres.query(
                        "SELECT 1 FROM album.album_pushes WHERE file_id = $1::uuid AND kind = 'added' AND state = 'published'",
                        [.text(file)]).count == 1
                })

                let frameClient = try h.frameClient(UUID().uuidString)
                try await frameClient.connect()
                defer { Task { await frameClient.disconnect() } }
                let removedTopic = FrameTopics.photoRemoved(album: album)
                let removed = try await h.collect(frameClient, [removedTopic], after: {
                    try await h.publish(h.deleted(file, by: owner))
                }, until: { !$0.isEmpty })
                let message = try #require(removed.first).decode(PhotoRemovedMessage.self)
                #expect(message.fileID == file && message.albumID == album && message.reason == "file_deleted")
                #expect(try await h.photos(owner, album).isEmpty)

                var again = upload
                again.eventID = UUID().uuidString.lowercased()
                let ready = MediaCacheReady(eventID: UUID().uuidString.lowercased(), occurredAt: 4, fileID: file)
                let later = try await h.drain(frameClient, [FrameTopics.photoAdded(album: album), removedTopic],
                                              marker: "test/\(album)/marker") {
                    try await h.publish(again)
                    try await h.publish(ready)
                    #expect(try await eventually {
                        let repeated = try await h.processed(again.eventID)
                        let cached = try await h.processed(ready.eventID)
                        return repeated && cached
                    })
                    try await Task.sleep(for: .milliseconds(600))
                }
                #expect(later.isEmpty, "nothing more for frames: \(later.map(\.topic))")
                #expect(try await h.photos(owner, album).isEmpty)
                let state = try await h.state(of: file)
                #expect(state.photos == 0 && state.albumPhotos == 0 && state.addedPushes == 0 && state.tombstones == 1, "\(state)")
                #expect(state.addedEvents == 1, "album.photo_added once, for the first upload only")
            }
        }
    }
}
