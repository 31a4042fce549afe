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

let sharedImaging = Imaging(threads: 2, logger: quietLogger)

/// What the album service would have published about its state before a test: media never
/// asks album anything, so no album service runs in these tests at all; the harness publishes
/// album's events instead (album.members_changed, device.albums_changed, album.photo_added).
struct AlbumState: Sendable {
    /// Frames showing the harness's album (device.albums_changed each).
    var screens: [FrameScreen] = []
    /// Members of the harness's album besides the photos' owners (viewers).
    var viewers: [String] = []
}

/// The media service against a private nats-server (JetStream), a fresh PostgreSQL database
/// and a scratch blob store; storage and album are played by publishing their events into the
/// stream.
struct MediaHarness {
    static let gateway = "http://gateway.test:8080"

    let backend: IsolatedBackend
    let runtime: ServiceRuntime
    let blobs: BlobStore
    let service: MediaService
    let client: ServiceClient
    /// The album uploads go into (album.photo_added) unless a test says otherwise.
    let album: String

    static func make(imaging: Imaging = sharedImaging) async throws -> MediaHarness {
        let backend = try await IsolatedBackend.make()
        let runtime = ServiceRuntime(nats: backend.nats, jetStream: try backend.nats.jetStream(),
                                     postgres: backend.postgres, logger: quietLogger)
        try await EventStream.ensure(on: runtime.jetStream)
        let root = try TestServers.scratchDirectory("media-blobs")
        var configuration = MediaConfiguration(blobRoot: root.path, publicGatewayURL: gateway)
        // The harness publishes a photo's placement before its upload event; tests of a late
        // placement or a refused access need not wait long.
        configuration.placementWait = .milliseconds(300)
        configuration.accessGrace = .milliseconds(300)
        let service = MediaService(runtime: runtime, configuration: configuration, imaging: imaging)
        return MediaHarness(backend: backend, runtime: runtime, blobs: BlobStore(root: root), service: service,
                            client: ServiceClient(service: "media", nats: backend.nats, timeout: .seconds(20)),
                            album: UUID().uuidString.lowercased())
    }

    /// Runs the media service while `body` runs, once it answers and, first, the album state
    /// album would have published (`album`) is applied. No album service runs.
    func running<T: Sendable>(album state: AlbumState = AlbumState(), _ body: () async throws -> T) async throws -> T {
        let nats = backend.nats
        return try await withServices(try await service.services(), logger: quietLogger) {
            let up = try await eventually { (try? await nats.request("$SRV.PING.media", payload: [], timeout: .seconds(1))) != nil }
            guard up else { throw NotReady() }
            if !state.viewers.isEmpty {
                try await members(album, owner: "album-owner", viewers: state.viewers)
            }
            for screen in state.screens {
                try await deliver(DeviceAlbumsChanged(
                    eventID: UUID().uuidString.lowercased(), occurredAt: EventTime.now(), userID: "frame-owner", frameID: screen.frameID,
                    width: screen.width, height: screen.height, format: screen.format, albumIDs: [album]))
            }
            return try await body()
        }
    }

    func close() async { await backend.close() }

    /// Stores `bytes` as an upload (as the gateway does).
    func put(_ bytes: [UInt8]) throws -> BlobKey {
        let writer = try BlobWriter(store: blobs, limit: 100 << 20)
        try writer.write(bytes)
        return try writer.commit().key
    }

    /// Publishes storage's `file.uploaded.with_ai` for `bytes` (stored first); returns the event.
    /// Unless `placed` is false, album's `album.photo_added` of the file into `albumID` (the
    /// harness's album when nil) is applied first, as album usually publishes it before media
    /// gets to render.
    @discardableResult
    func upload(_ bytes: [UInt8], user: String, fileID: String = UUID().uuidString.lowercased(),
                albumID: String? = nil, placed: Bool = true) async throws -> FileUploadedWithAI {
        let key = try put(bytes)
        let target = albumID ?? album
        if placed { try await place(fileID, in: target, by: user) }
        let file = FileRecord(fileID: fileID, userID: user, blobKey: key.hex, sha256: key.hex, size: Int64(bytes.count),
                              fileName: "IMG_0001.jpg", contentType: "image/jpeg", declaredContentType: "image/jpeg",
                              metadata: ["album_id": target], analysis: PhotoAnalysis(format: "jpeg", width: 2560, height: 1600, orientation: 1),
                              aiMetadata: AIMetadata(labels: ["leaf", "autumn"], analyser: "test"), createdAt: 1, storagePath: "")
        let event = FileUploadedWithAI(eventID: UUID().uuidString.lowercased(), occurredAt: 1, userID: user, file: file)
        try await publish(event)
        return event
    }

    // MARK: Playing album

    /// Album's `album.photo_added` (applied when this returns).
    @discardableResult
    func place(_ fileID: String, in albumID: String? = nil, by user: String, revision: Int64 = 0) async throws -> AlbumPhotoAdded {
        let event = AlbumPhotoAdded(eventID: UUID().uuidString.lowercased(), occurredAt: EventTime.now(), userID: user,
                                    photo: AlbumPhoto(albumID: albumID ?? album, fileID: fileID, addedBy: user, addedAt: EventTime.now()),
                                    revision: revision)
        try await deliver(event)
        return event
    }

    /// Album's `album.photo_removed` (applied when this returns).
    func unplace(_ fileID: String, from albumID: String? = nil, by user: String, revision: Int64 = 0) async throws {
        try await deliver(AlbumPhotoRemoved(eventID: UUID().uuidString.lowercased(), occurredAt: EventTime.now(), userID: user,
                                            albumID: albumID ?? album, fileID: fileID, reason: "removed", revision: revision))
    }

    /// Album's `album.members_changed`: `owner` and `viewers` are the members now.
    func members(_ albumID: String, owner: String, viewers: [String], revision: Int64 = 0) async throws {
        try await deliver(AlbumMembersChanged(
            eventID: UUID().uuidString.lowercased(), occurredAt: EventTime.now(), userID: owner, albumID: albumID, ownerID: owner,
            members: [AlbumMemberRole(userID: owner, role: .owner)] + viewers.map { AlbumMemberRole(userID: $0, role: .viewer) },
            revision: revision))
    }

    func publish<E: WireEvent>(_ event: E, messageID: String? = nil) async throws {
        _ = try await runtime.jetStream.publish(E.subject, payload: event.wireBytes(), messageID: messageID ?? event.eventID)
    }

    func events<E: WireEvent>(_ type: E.Type) async throws -> [E] {
        try await eventsInStream(type, jetStream: runtime.jetStream)
    }

    func processed(_ eventID: String) async throws -> Bool {
        try await !runtime.postgres.query("SELECT 1 FROM media.processed_events WHERE event_id = $1", [.text(eventID)]).isEmpty
    }

    func versionRows(_ fileID: String) async throws -> [(size: String, width: Int32, height: Int32, key: String)] {
        try await runtime.postgres.query(
            "SELECT size, width, height, blob_key FROM media.photo_versions WHERE file_id = $1 ORDER BY size", [.text(fileID)])
            .map { (try $0.decode("size"), try $0.decode("width"), try $0.decode("height"), try $0.decode("blob_key")) }
    }

    func metadataRows(_ fileID: String) async throws -> Int {
        try await runtime.postgres.query("SELECT 1 FROM media.photo_metadata WHERE file_id = $1", [.text(fileID)]).count
    }

    /// Waits for the cache_ready of `fileID`.
    func waitCacheReady(_ fileID: String) async throws -> MediaCacheReady? {
        var found: MediaCacheReady?
        _ = try await eventually(timeout: .seconds(60)) {
            found = try await events(MediaCacheReady.self).first { $0.fileID == fileID }
            return found != nil
        }
        return found
    }

    func status<Req, Res>(_ method: WireMethod<Req, Res>, _ request: Req, as principal: Principal?) async throws -> WireStatus {
        let headers = principal.map(MediaService.headers(for:)) ?? NATSHeaders()
        let reply = try await backend.nats.request(method.subject, payload: request.wireBytes(), headers: headers, timeout: .seconds(20))
        return try Reply(wireBytes: reply.payload).status
    }
}

struct NotReady: Error {}

func user() -> String { "user-\(UUID().uuidString.prefix(8))" }

/// Frame ids (media takes only UUIDs), in sorted order.
let landscapeFrame = "1a000000-0000-4000-8000-000000000001"
let landscapeFrame2 = "1a000000-0000-4000-8000-000000000002"
let portraitFrame = "1a000000-0000-4000-8000-000000000003"

let twoScreens = [
    FrameScreen(frameID: landscapeFrame, width: 1024, height: 600, format: "jpeg"),
    FrameScreen(frameID: portraitFrame, width: 1080, height: 1920, format: "jpeg"),
    // A second frame with the landscape screen: rendered once.
    FrameScreen(frameID: landscapeFrame2, width: 1024, height: 600, format: "jpeg"),
]

/// Every media test starts its own nats-server and renders real photos: one at a time, as
/// the package's other tests run in parallel on a 2-core machine.
@Suite(.serialized) struct MediaServiceTests {
    @Test func rendersEveryVersionFromARealPhotoAndAnnouncesThem() async throws {
        let h = try await MediaHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("FallenLeaf"))
        let owner = user()
        try await h.running(album: AlbumState(screens: twoScreens)) {
            let event = try await h.upload(photo, user: owner)
            let fileID = event.file!.fileID
            let ready = try #require(try await h.waitCacheReady(fileID))

            let expected: [String: (Int32, Int32)] = [
                "thumbnail": (300, 188), "hd": (1728, 1080), "frame:1024x600": (1024, 600), "frame:1080x1920": (1080, 1920)]
            let rows = try await h.versionRows(fileID)
            #expect(rows.count == 4)
            for row in rows {
                let size = try #require(expected[row.size], "unexpected version \(row.size)")
                #expect((row.width, row.height) == size, "\(row.size)")
                // The stored blob decodes to exactly that size.
                let bytes = try Photos.bytes(h.blobs.path(for: try #require(BlobKey(row.key))))
                let header = try await sharedImaging.probe(bytes)
                #expect(header.format == .jpeg)
                #expect((Int32(header.width), Int32(header.height)) == size, "\(row.size)")
            }
            #expect(try await h.metadataRows(fileID) == 1)

            #expect(Set(ready.versions.map(\.size)) == Set(expected.keys))
            #expect(ready.userID == owner)
            #expect(ready.frameIDs == [landscapeFrame, landscapeFrame2, portraitFrame])
            #expect(ready.albumIDs == [h.album])
            let created = try await h.events(MediaVersionCreated.self).filter { $0.version?.fileID == fileID }
            #expect(created.count == 4)
            #expect(Set(created.compactMap { $0.version?.size }) == Set(expected.keys))
            #expect(created.allSatisfy { $0.userID == owner && ($0.version?.byteSize ?? 0) > 0 })
        }
        await h.close()
    }

    @Test func theSameFileAnnouncedTwiceIsRenderedOnce() async throws {
        let h = try await MediaHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("BytheWater"))
        try await h.running(album: AlbumState(screens: twoScreens)) {
            let event = try await h.upload(photo, user: user())
            let fileID = event.file!.fileID
            // The same event again under another message id (JetStream would drop a republish
            // with the same id), and once more as a new event about the same file.
            try await h.publish(event, messageID: event.eventID + "-again")
            var again = event
            again.eventID = UUID().uuidString.lowercased()
            try await h.publish(again)
            let all = try await eventually(timeout: .seconds(60)) {
                let first = try await h.processed(event.eventID)
                let republished = try await h.processed(event.eventID + "-again")
                let renamed = try await h.processed(again.eventID)
                return first && republished && renamed
            }
            #expect(all)
            _ = try await h.waitCacheReady(fileID)
            #expect(h.service.renderCount.current == 1, "decoded and rendered once")
            #expect(try await h.versionRows(fileID).count == 4)
            #expect(try await h.metadataRows(fileID) == 1)
            #expect(try await h.events(MediaCacheReady.self).filter { $0.fileID == fileID }.count == 1)
            #expect(try await h.events(MediaVersionCreated.self).filter { $0.version?.fileID == fileID }.count == 4)
        }
        await h.close()
    }

    @Test func aTruncatedPhotoIsAnnouncedAsFailedAndTheServiceKeepsWorking() async throws {
        let h = try await MediaHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("Kite"))
        let owner = user()
        try await h.running(album: AlbumState(screens: twoScreens)) {
            let broken = try await h.upload(Array(photo.prefix(photo.count / 2)), user: owner)
            let fileID = broken.file!.fileID
            var failed: [MediaVersionFailed] = []
            _ = try await eventually(timeout: .seconds(60)) {
                failed = try await h.events(MediaVersionFailed.self).filter { $0.fileID == fileID }
                return failed.count >= 4
            }
            #expect(Set(failed.map(\.size)) == ["thumbnail", "hd", "frame:1024x600", "frame:1080x1920"])
            #expect(failed.allSatisfy { $0.userID == owner && $0.error.contains("corrupt") })
            // Acked once (recorded as processed), nothing stored.
            #expect(try await h.processed(broken.eventID))
            #expect(try await h.versionRows(fileID).isEmpty)
            #expect(try await h.metadataRows(fileID) == 0)
            #expect(try await h.status(MediaAPI.getPhotoMetadata, GetPhotoMetadataRequest(fileID: fileID),
                                       as: Principal(kind: .user, id: owner)) == .notFound)
            // Still healthy: the next photo renders.
            let good = try await h.upload(photo, user: owner)
            #expect(try await h.waitCacheReady(good.file!.fileID) != nil)
            #expect(try await h.events(MediaVersionFailed.self).filter { $0.fileID == fileID }.count == 4)
        }
        await h.close()
    }

    @Test func aPhotoOverTheImagingLimitsIsAnnouncedAsFailed() async throws {
        let small = Imaging(threads: 1, limits: ImagingLimits(maxPixels: 1_000_000), logger: quietLogger)
        defer { small.shutdown() }
        let h = try await MediaHarness.make(imaging: small)
        let photo = try Photos.bytes(try Photos.plasma("FallenLeaf"))
        try await h.running() {
            let event = try await h.upload(photo, user: user())
            let fileID = event.file!.fileID
            var failed: [MediaVersionFailed] = []
            _ = try await eventually(timeout: .seconds(60)) {
                failed = try await h.events(MediaVersionFailed.self).filter { $0.fileID == fileID }
                return failed.count >= 2
            }
            #expect(Set(failed.map(\.size)) == ["thumbnail", "hd"])
            #expect(failed.allSatisfy { $0.error.contains("tooLarge") })
            #expect(try await h.processed(event.eventID))
            #expect(try await h.versionRows(fileID).isEmpty)
        }
        await h.close()
    }

    @Test func aWebPScreenGetsAWebPVersion() async throws {
        let h = try await MediaHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("BytheWater"))
        let screens = [FrameScreen(frameID: UUID().uuidString.lowercased(), width: 800, height: 480, format: "webp")]
        try await h.running(album: AlbumState(screens: screens)) {
            let event = try await h.upload(photo, user: user())
            let ready = try #require(try await h.waitCacheReady(event.file!.fileID))
            let frame = try #require(ready.versions.first { $0.size == "frame:800x480" })
            #expect(frame.format == "webp")
            #expect(frame.contentType == "image/webp")
            let header = try await sharedImaging.probe(try Photos.bytes(h.blobs.path(for: try #require(BlobKey(frame.blobKey)))))
            #expect(header.format == .webp)
            #expect((header.width, header.height) == (800, 480))
        }
        await h.close()
    }

    /// The photo's album has no frame: thumbnail and hd only, announced at once.
    @Test func withoutFramesOnlyThumbnailAndHDAreRendered() async throws {
        let h = try await MediaHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("ColorfulCups"))
        try await h.running() {
            let event = try await h.upload(photo, user: user())
            let ready = try #require(try await h.waitCacheReady(event.file!.fileID))
            #expect(Set(ready.versions.map(\.size)) == ["thumbnail", "hd"])
            #expect(ready.frameIDs.isEmpty)
            #expect(ready.albumIDs == [h.album])
        }
        await h.close()
    }

    @Test func photoMetadataAndVersionsAreServedOnlyToThoseWhoMaySeeThem() async throws {
        let h = try await MediaHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("FallenLeaf"))
        let owner = user(), member = user(), stranger = user()
        try await h.running(album: AlbumState(screens: twoScreens, viewers: [member])) {
            let event = try await h.upload(photo, user: owner)
            let fileID = event.file!.fileID
            _ = try await h.waitCacheReady(fileID)

            let reply = try await h.client.call(MediaAPI.getPhotoMetadata, GetPhotoMetadataRequest(fileID: fileID),
                                                headers: MediaService.headers(for: Principal(kind: .user, id: owner)))
            let metadata = try #require(reply.metadata)
            #expect(metadata.ownerID == owner)
            #expect(metadata.fileName == "IMG_0001.jpg")
            #expect(metadata.contentType == "image/jpeg")
            #expect(metadata.aiMetadata?.labels == ["leaf", "autumn"])
            #expect(metadata.cachedForFrames.isEmpty)
            #expect(Set(metadata.versions.map(\.size)) == ["thumbnail", "hd", "frame:1024x600", "frame:1080x1920"])
            let hd = try #require(metadata.versions.first { $0.size == "hd" })
            #expect((hd.width, hd.height) == (1728, 1080))
            #expect(hd.byteSize > 0)
            #expect(MediaService.downloadURL(gateway: MediaHarness.gateway, fileID: fileID, size: hd.size)
                    == "http://gateway.test:8080/api/v1/files/download/\(fileID)?size=hd")
            #expect(MediaService.downloadURL(gateway: MediaHarness.gateway + "/", fileID: fileID, size: "frame:1024x600")
                    == "http://gateway.test:8080/api/v1/files/download/\(fileID)?size=frame:1024x600")

            // A member of the album and a frame showing it see it too (media's copy of album's state).
            #expect(try await h.status(MediaAPI.getPhotoMetadata, GetPhotoMetadataRequest(fileID: fileID),
                                       as: Principal(kind: .user, id: member)) == .ok)
            #expect(try await h.status(MediaAPI.getPhotoMetadata, GetPhotoMetadataRequest(fileID: fileID),
                                       as: Principal(kind: .frame, id: landscapeFrame)) == .ok)
            // A stranger, a frame named like the owner, and nobody do not.
            #expect(try await h.status(MediaAPI.getPhotoMetadata, GetPhotoMetadataRequest(fileID: fileID),
                                       as: Principal(kind: .user, id: stranger)) == .notFound)
            #expect(try await h.status(MediaAPI.getPhotoMetadata, GetPhotoMetadataRequest(fileID: fileID),
                                       as: Principal(kind: .frame, id: owner)) == .notFound)
            #expect(try await h.status(MediaAPI.getPhotoMetadata, GetPhotoMetadataRequest(fileID: fileID), as: nil) == .notFound)
            #expect(try await h.status(MediaAPI.getPhotoMetadata, GetPhotoMetadataRequest(fileID: UUID().uuidString.lowercased()),
                                       as: Principal(kind: .user, id: owner)) == .notFound)

            // GetVersion: the stored blob of the version, with the same access rule.
            let version = try #require(try await h.client.call(
                MediaAPI.getVersion, GetVersionRequest(fileID: fileID, size: "frame:1080x1920"),
                headers: MediaService.headers(for: Principal(kind: .frame, id: landscapeFrame))).version)
            #expect(version.contentType == "image/jpeg")
            let key = try #require(BlobKey(version.blobKey))
            #expect(h.blobs.size(of: key) == version.byteSize)
            let header = try await sharedImaging.probe(try Photos.bytes(h.blobs.path(for: key)))
            #expect((header.width, header.height) == (1080, 1920))
            let original = try #require(try await h.client.call(
                MediaAPI.getVersion, GetVersionRequest(fileID: fileID, size: "original"),
                headers: MediaService.headers(for: Principal(kind: .user, id: owner))).version)
            #expect(original.blobKey == event.file!.blobKey)
            #expect(original.byteSize == Int64(photo.count))
            #expect(try await h.status(MediaAPI.getVersion, GetVersionRequest(fileID: fileID, size: "hd"),
                                       as: Principal(kind: .user, id: stranger)) == .notFound)
            // A size not rendered yet is rendered on request (ScreenAndCacheTests); one no
            // version can have is invalid.
            #expect(try await h.status(MediaAPI.getVersion, GetVersionRequest(fileID: fileID, size: "frame:800x480"),
                                       as: Principal(kind: .user, id: owner)) == .ok)
            #expect(try await h.status(MediaAPI.getVersion, GetVersionRequest(fileID: fileID, size: "hd", format: "webp"),
                                       as: Principal(kind: .user, id: owner)) == .invalid)
        }
        await h.close()
    }

    @Test func deletingAFileRemovesItsRowsAndTheBlobsNobodyElseUses() async throws {
        let h = try await MediaHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("Kite"))
        try await h.running(album: AlbumState(screens: twoScreens)) {
            // Two users upload the same bytes: identical, shared version blobs.
            let first = try await h.upload(photo, user: user())
            let second = try await h.upload(photo, user: user())
            let (a, b) = (first.file!.fileID, second.file!.fileID)
            _ = try await h.waitCacheReady(a)
            _ = try await h.waitCacheReady(b)
            let keys = try await h.versionRows(a).compactMap { BlobKey($0.key) }
            #expect(keys.count == 4)
            #expect(Set(try await h.versionRows(b).map(\.key)) == Set(keys.map(\.hex)))

            let deleteA = FileDeleted(eventID: UUID().uuidString.lowercased(), occurredAt: 3, userID: first.userID, fileID: a,
                                      ownerID: first.userID, blobKey: first.file!.blobKey, sha256: first.file!.sha256)
            try await h.publish(deleteA)
            #expect(try await eventually(timeout: .seconds(60)) { try await h.processed(deleteA.eventID) })
            // The file.deleted consumer handles one event at a time: once a later one is
            // processed, deleteA's handler (blob removal included) has finished.
            let barrier = FileDeleted(eventID: UUID().uuidString.lowercased(), occurredAt: 3, userID: "nobody",
                                      fileID: UUID().uuidString.lowercased(), ownerID: "nobody")
            try await h.publish(barrier)
            #expect(try await eventually(timeout: .seconds(60)) { try await h.processed(barrier.eventID) })
            #expect(try await h.versionRows(a).isEmpty)
            #expect(try await h.metadataRows(a) == 0)
            #expect(keys.allSatisfy(h.blobs.exists), "the other file still uses the blobs")

            let deleteB = FileDeleted(eventID: UUID().uuidString.lowercased(), occurredAt: 4, userID: second.userID, fileID: b,
                                      ownerID: second.userID, blobKey: second.file!.blobKey, sha256: second.file!.sha256)
            try await h.publish(deleteB)
            #expect(try await eventually(timeout: .seconds(60)) { try await h.processed(deleteB.eventID) })
            #expect(try await h.versionRows(b).isEmpty)
            #expect(try await eventually(timeout: .seconds(60)) { keys.allSatisfy { !h.blobs.exists($0) } },
                    "no version blob is left")
            #expect(h.blobs.exists(try #require(BlobKey(first.file!.blobKey))), "the original is storage's, not media's")
            #expect(try await h.status(MediaAPI.getPhotoMetadata, GetPhotoMetadataRequest(fileID: b),
                                       as: Principal(kind: .user, id: second.userID)) == .notFound)
        }
        await h.close()
    }

    /// The figure for the report: the full version set of a 2560×1600 photo from one decode.
    @Test func rendersTheFullVersionSetOfALargePhotoInUnderAFewSeconds() async throws {
        let path = try Photos.plasma("FallenLeaf")
        let specs: [VersionSpec] = [.fit(300, 300), .fit(1920, 1080), .cover(1024, 600), .cover(1080, 1920),
                                    .cover(1280, 800, .webp(quality: 80, effort: 2))]
        _ = try await sharedImaging.renderFile(path, versions: specs)
        let start = ContinuousClock.now
        let rendered = try await sharedImaging.renderFile(path, versions: specs)
        let elapsed = ContinuousClock.now - start
        #expect(rendered.count == 5)
        #expect(elapsed < .seconds(10), "took \(elapsed)")
        print("media: full version set (5 versions) of a 2560x1600 JPEG rendered in \(elapsed)")
    }
}
