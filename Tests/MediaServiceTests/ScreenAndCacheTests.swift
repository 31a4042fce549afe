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
    /// Uploads each photo (no frame subscribed yet: thumbnail and hd only) and waits for its
    /// versions; returns the file ids, oldest first.
    func uploadAll(_ names: [String], user owner: String) async throws -> [String] {
        var files: [String] = []
        for name in names {
            let event = try await upload(try Photos.bytes(try Photos.plasma(name)), user: owner)
            _ = try #require(try await waitCacheReady(event.file!.fileID))
            files.append(event.file!.fileID)
        }
        return files
    }

    func albumsChanged(frame: String, owner: String, _ width: Int32, _ height: Int32, format: String = "jpeg",
                       files: [String], albums: [String] = [UUID().uuidString.lowercased()],
                       at time: Int64 = EventTime.now()) -> DeviceAlbumsChanged {
        DeviceAlbumsChanged(eventID: UUID().uuidString.lowercased(), occurredAt: time, userID: owner, frameID: frame,
                            width: width, height: height, format: format, albumIDs: albums, fileIDs: files)
    }

    /// The versions of `size` with their creation order.
    func frameRows(_ size: String) async throws -> [(file: String, width: Int32, height: Int32, key: String)] {
        try await runtime.postgres.query("""
            SELECT file_id, width, height, blob_key FROM media.photo_versions WHERE size = $1 ORDER BY created_at, file_id
            """, [.text(size)])
            .map { (try $0.decode("file_id"), try $0.decode("width"), try $0.decode("height"), try $0.decode("blob_key")) }
    }

    func cacheRows(frame: String) async throws -> [String] {
        try await runtime.postgres.query("SELECT file_id FROM media.photo_cache WHERE frame_id = $1 ORDER BY file_id", [.text(frame)])
            .map { try $0.decode("file_id") }
    }

    func metadata(_ fileID: String, as owner: String) async throws -> PhotoMetadata {
        try #require(try await client.call(MediaAPI.getPhotoMetadata, GetPhotoMetadataRequest(fileID: fileID),
                                           headers: MediaService.headers(for: Principal(kind: .user, id: owner))).metadata)
    }

    /// Publishes `event` and waits until the consumer committed it.
    func deliver<E: WireEvent>(_ event: E, messageID: String? = nil) async throws {
        try await publish(event, messageID: messageID)
        #expect(try await eventually(timeout: .seconds(60)) { try await processed(event.eventID) }, "\(E.subject) processed")
    }
}

func frameID() -> String { UUID().uuidString.lowercased() }

extension MediaServiceTests {
    /// Item 2: a landscape and a portrait frame subscribed to an album with photos → each
    /// photo gets both screens' versions in the background, newest photo first, filling the
    /// screen exactly; the metadata lists them; a redelivered event renders nothing more.
    @Test func newScreensGetTheirVersionsInTheBackgroundNewestFirst() async throws {
        let h = try await MediaHarness.make()
        let owner = user()
        try await h.running() {
            let files = try await h.uploadAll(["FallenLeaf", "BytheWater", "Kite"], user: owner)
            #expect(h.service.renderCount.current == 3)
            // Until the frame versions exist the metadata has hd (a frame always has something).
            #expect(Set(try await h.metadata(files[0], as: owner).versions.map(\.size)) == ["thumbnail", "hd"])

            let (landscape, portrait) = (frameID(), frameID())
            let newestFirst = Array(files.reversed())
            let first = h.albumsChanged(frame: landscape, owner: owner, 1024, 600, files: newestFirst)
            try await h.deliver(first)
            try await h.deliver(h.albumsChanged(frame: portrait, owner: owner, 1080, 1920, files: newestFirst))
            #expect(try await eventually(timeout: .seconds(120)) {
                let (landscapeRows, portraitRows) = (try await h.frameRows("frame:1024x600"), try await h.frameRows("frame:1080x1920"))
                return landscapeRows.count == 3 && portraitRows.count == 3
            })
            for (size, expected) in [("frame:1024x600", (Int32(1024), Int32(600))), ("frame:1080x1920", (1080, 1920))] {
                let rows = try await h.frameRows(size)
                #expect(rows.map(\.file) == newestFirst, "\(size) rendered newest first")
                for row in rows {
                    #expect((row.width, row.height) == expected)
                    let header = try await sharedImaging.probe(try Photos.bytes(h.blobs.path(for: try #require(BlobKey(row.key)))))
                    #expect((Int32(header.width), Int32(header.height)) == expected, "the blob fills the \(size) screen")
                }
            }
            for file in files {
                let sizes = Set(try await h.metadata(file, as: owner).versions.map(\.size))
                #expect(sizes == ["thumbnail", "hd", "frame:1024x600", "frame:1080x1920"])
            }
            let created = try await h.events(MediaVersionCreated.self).filter { $0.version?.size.hasPrefix("frame:") == true }
            #expect(created.count == 6)
            #expect(created.allSatisfy { $0.userID == owner })
            #expect(try await h.runtime.postgres.query("SELECT 1 FROM media.render_jobs").isEmpty, "the queue is empty")

            // The same event again (new message id): nothing queued, nothing rendered.
            let renders = h.service.renderCount.current
            try await h.deliver(first, messageID: first.eventID + "-again")
            var again = first
            again.eventID = UUID().uuidString.lowercased()
            try await h.deliver(again)
            try await Task.sleep(for: .milliseconds(500))
            #expect(h.service.renderCount.current == renders)
            #expect(try await h.frameRows("frame:1024x600").count == 3)
        }
        await h.close()
    }

    /// Item 3: eight concurrent requests for a version not rendered yet → one render, one row,
    /// one version_created, identical bytes for all.
    @Test func concurrentOnDemandRequestsRenderOnce() async throws {
        let h = try await MediaHarness.make()
        let owner = user()
        try await h.running() {
            let file = try await h.uploadAll(["ColorfulCups"], user: owner)[0]
            #expect(h.service.renderCount.current == 1)
            let headers = MediaService.headers(for: Principal(kind: .user, id: owner))
            let client = h.client
            let start = ContinuousClock.now
            let versions = try await withThrowingTaskGroup(of: PhotoVersion?.self) { group in
                for index in 0..<8 {
                    group.addTask {
                        let method = index % 2 == 0 ? MediaAPI.getVersion : MediaAPI.renderOnDemand
                        return try await client.call(method, GetVersionRequest(fileID: file, size: "frame:800x480"), headers: headers).version
                    }
                }
                var all: [PhotoVersion] = []
                for try await version in group { if let version { all.append(version) } }
                return all
            }
            print("media: 8 concurrent on-demand requests for frame:800x480 answered in \(ContinuousClock.now - start)")
            #expect(versions.count == 8)
            #expect(Set(versions.map(\.blobKey)).count == 1, "identical bytes for all")
            #expect(versions.allSatisfy { ($0.width, $0.height) == (800, 480) && $0.format == "jpeg" })
            #expect(h.service.renderCount.current == 2, "rendered once on demand")
            #expect(try await h.frameRows("frame:800x480").count == 1)
            let key = try #require(BlobKey(versions[0].blobKey))
            let header = try await sharedImaging.probe(try Photos.bytes(h.blobs.path(for: key)))
            #expect((header.width, header.height) == (800, 480))
            #expect(try await eventually {
                try await h.events(MediaVersionCreated.self).filter { $0.version?.size == "frame:800x480" }.count == 1
            })
            // Asked again: served, not rendered.
            _ = try await client.call(MediaAPI.getVersion, GetVersionRequest(fileID: file, size: "frame:800x480"), headers: headers)
            #expect(h.service.renderCount.current == 2)
            #expect(try await h.runtime.postgres.query("SELECT 1 FROM media.render_jobs").isEmpty, "no claim is left")
        }
        await h.close()
    }

    /// Sizes are validated before anything else: bounded dimensions, known names and formats.
    @Test func invalidSizesAreRefused() async throws {
        let h = try await MediaHarness.make()
        let owner = user()
        try await h.running() {
            let file = try await h.uploadAll(["Kite"], user: owner)[0]
            let asOwner = Principal(kind: .user, id: owner)
            for size in ["frame:0x0", "frame:99999x10", "frame:8193x600", "frame:15x600", "frame:abc", "frame:800x", "frame:-800x480",
                         "huge", "", "HD", "frame:800x480x2", "frame: 800x480"] {
                #expect(try await h.status(MediaAPI.getVersion, GetVersionRequest(fileID: file, size: size), as: asOwner) == .invalid,
                        "\(size)")
            }
            #expect(try await h.status(MediaAPI.getVersion, GetVersionRequest(fileID: file, size: "frame:800x480", format: "gif"),
                                       as: asOwner) == .invalid)
            #expect(try await h.status(MediaAPI.getVersion, GetVersionRequest(fileID: file, size: "hd", format: "webp"),
                                       as: asOwner) == .invalid)
            #expect(h.service.renderCount.current == 1, "nothing rendered")
            // The bounds themselves are valid; a stranger still gets not_found, and nothing is rendered for them.
            #expect(try await h.status(MediaAPI.getVersion, GetVersionRequest(fileID: file, size: "frame:16x8192"),
                                       as: Principal(kind: .user, id: user())) == .notFound)
            #expect(h.service.renderCount.current == 1)
            let webp = try #require(try await h.client.call(MediaAPI.getVersion, GetVersionRequest(fileID: file, size: "frame:640x480", format: "webp"),
                                                            headers: MediaService.headers(for: asOwner)).version)
            #expect(webp.format == "webp" && (webp.width, webp.height) == (640, 480))
        }
        await h.close()
    }

    /// Items 4 and 6: cached reports fill photo_cache and cached_for_frames; deleting a frame
    /// drops its cache rows and the frame versions only it needed (rows and blobs), keeps a
    /// version another frame needs; redelivered events change nothing.
    @Test func cacheReportsAndFrameDeletion() async throws {
        let h = try await MediaHarness.make()
        let owner = user()
        try await h.running() {
            let files = try await h.uploadAll(["FallenLeaf", "BytheWater"], user: owner)
            let (a, b, c) = (frameID(), frameID(), frameID())
            // a and c share the 1024×600 screen; b alone has 800×480.
            try await h.deliver(h.albumsChanged(frame: a, owner: owner, 1024, 600, files: files))
            try await h.deliver(h.albumsChanged(frame: b, owner: owner, 800, 480, files: files))
            try await h.deliver(h.albumsChanged(frame: c, owner: owner, 1024, 600, files: files))
            #expect(try await eventually(timeout: .seconds(120)) {
                let (landscapeRows, smallRows) = (try await h.frameRows("frame:1024x600"), try await h.frameRows("frame:800x480"))
                return landscapeRows.count == 2 && smallRows.count == 2
            })

            let reportA = DeviceCacheReported(eventID: UUID().uuidString.lowercased(), occurredAt: EventTime.now(), userID: owner,
                                              frameID: a, fileIDs: files)
            try await h.deliver(reportA)
            try await h.deliver(DeviceCacheReported(eventID: UUID().uuidString.lowercased(), occurredAt: EventTime.now(), userID: owner,
                                                    frameID: b, fileIDs: [files[0]]))
            try await h.deliver(reportA, messageID: reportA.eventID + "-again")
            #expect(try await h.metadata(files[0], as: owner).cachedForFrames == [a, b].sorted())
            #expect(try await h.metadata(files[1], as: owner).cachedForFrames == [a])
            #expect(try await h.cacheRows(frame: a) == files.sorted())
            let cachedSize: String? = try await h.runtime.postgres.query(
                "SELECT size FROM media.photo_cache WHERE frame_id = $1 LIMIT 1", [.text(b)]).first?.decode("size")
            #expect(cachedSize == "frame:800x480", "the frame has its own screen's version")

            // b goes: its cache rows, its screen's versions and their blobs.
            let onlyB = try await h.frameRows("frame:800x480").compactMap { BlobKey($0.key) }
            let shared = try await h.frameRows("frame:1024x600").compactMap { BlobKey($0.key) }
            let deleteB = DeviceDeleted(eventID: UUID().uuidString.lowercased(), occurredAt: EventTime.now(), userID: owner,
                                        frameID: b, width: 800, height: 480)
            try await h.deliver(deleteB)
            #expect(try await h.cacheRows(frame: b).isEmpty)
            #expect(try await h.frameRows("frame:800x480").isEmpty)
            // (Blobs go after the handler's commit, which marks the event processed.)
            #expect(try await eventually { onlyB.allSatisfy { !h.blobs.exists($0) } }, "b's version blobs are gone")
            #expect(try await h.metadata(files[0], as: owner).cachedForFrames == [a])
            #expect(try await h.frameRows("frame:1024x600").count == 2)

            // a goes: c still needs 1024×600, so those versions stay.
            try await h.deliver(DeviceDeleted(eventID: UUID().uuidString.lowercased(), occurredAt: EventTime.now(), userID: owner,
                                              frameID: a, width: 1024, height: 600))
            #expect(try await h.cacheRows(frame: a).isEmpty)
            #expect(try await h.frameRows("frame:1024x600").count == 2, "c needs them")
            #expect(shared.allSatisfy(h.blobs.exists))
            #expect(try await h.metadata(files[0], as: owner).cachedForFrames.isEmpty)

            // Redelivered and late events change nothing: b's deletion again, a late screen
            // change and cache report for b (deleted).
            let renders = h.service.renderCount.current
            try await h.deliver(deleteB, messageID: deleteB.eventID + "-again")
            try await h.deliver(h.albumsChanged(frame: b, owner: owner, 800, 480, files: files, at: deleteB.occurredAt - 1))
            try await h.deliver(h.albumsChanged(frame: b, owner: owner, 800, 480, files: files))
            try await h.deliver(DeviceCacheReported(eventID: UUID().uuidString.lowercased(), occurredAt: EventTime.now(), userID: owner,
                                                    frameID: b, fileIDs: files))
            try await Task.sleep(for: .milliseconds(500))
            #expect(try await h.cacheRows(frame: b).isEmpty)
            #expect(try await h.runtime.postgres.query("SELECT 1 FROM media.render_jobs").isEmpty)
            #expect(h.service.renderCount.current == renders)
            #expect(try await h.frameRows("frame:800x480").isEmpty)

            // c goes too: now nobody needs 1024×600.
            try await h.deliver(DeviceDeleted(eventID: UUID().uuidString.lowercased(), occurredAt: EventTime.now(), userID: owner,
                                              frameID: c, width: 1024, height: 600))
            #expect(try await h.frameRows("frame:1024x600").isEmpty)
            #expect(try await eventually { shared.allSatisfy { !h.blobs.exists($0) } })
            #expect(Set(try await h.metadata(files[0], as: owner).versions.map(\.size)) == ["thumbnail", "hd"])
            #expect(try await h.unmatchedVersionReferences() == 0, "device.deleted released what it deleted")
        }
        await h.close()
    }

    /// A resized frame gets its new screen's versions, and its old screen's versions (rows and
    /// blobs) go when no other frame needs them; a rendered photo added to one more album gets
    /// the versions of that album's screens.
    @Test func aResizedFrameLeavesItsOldScreenAndAddedPhotosGetItsSize() async throws {
        let h = try await MediaHarness.make()
        let owner = user()
        try await h.running() {
            let rendered = try await h.uploadAll(["Kite", "ColorfulCups"], user: owner)
            let files = [rendered[0]]
            let (frame, album) = (frameID(), frameID())
            try await h.deliver(h.albumsChanged(frame: frame, owner: owner, 1024, 600, files: files, albums: [album]))
            #expect(try await eventually(timeout: .seconds(60)) { try await h.frameRows("frame:1024x600").count == 1 })
            let old = try await h.frameRows("frame:1024x600").compactMap { BlobKey($0.key) }
            try await h.deliver(h.albumsChanged(frame: frame, owner: owner, 600, 1024, files: files, albums: [album]))
            #expect(try await eventually(timeout: .seconds(60)) { try await h.frameRows("frame:600x1024").count == 1 })
            #expect(try await h.frameRows("frame:1024x600").isEmpty)
            #expect(try await eventually { old.allSatisfy { !h.blobs.exists($0) } })
            #expect(Set(try await h.metadata(files[0], as: owner).versions.map(\.size)) == ["thumbnail", "hd", "frame:600x1024"])

            // The other photo joins the frame's album (it was rendered before, without frames).
            let added = AlbumPhotoAdded(eventID: UUID().uuidString.lowercased(), occurredAt: EventTime.now(), userID: owner,
                                        photo: AlbumPhoto(albumID: album, fileID: rendered[1], addedBy: owner))
            try await h.deliver(added)
            #expect(try await eventually(timeout: .seconds(60)) { try await h.frameRows("frame:600x1024").count == 2 })
            // Added to an album no frame shows: nothing queued.
            try await h.deliver(AlbumPhotoAdded(eventID: UUID().uuidString.lowercased(), occurredAt: EventTime.now(), userID: owner,
                                                photo: AlbumPhoto(albumID: frameID(), fileID: rendered[1], addedBy: owner)))
            #expect(try await h.runtime.postgres.query("SELECT 1 FROM media.render_jobs").isEmpty)
            #expect(try await h.unmatchedVersionReferences() == 0, "a resize released the old screen's versions")
        }
        await h.close()
    }

    /// render_jobs is durable: work queued (or claimed by a replica that died) before a restart
    /// is rendered after it, from one decode per photo; and two replicas asked for the same
    /// version at once render it once (the job row's lease is the claim).
    @Test func queuedRendersSurviveARestartAndReplicasRenderOnce() async throws {
        let h = try await MediaHarness.make()
        let owner = user()
        let file = try await h.running() { try await h.uploadAll(["BytheWater"], user: owner)[0] }
        // Stopped. Left behind: a claim whose replica died (lease expired) and a job never claimed.
        _ = try await h.runtime.postgres.execute("""
            INSERT INTO media.render_jobs (file_id, size, format, width, height, priority, attempts, lease_until) VALUES
                ($1, 'frame:1024x600', 'jpeg', 1024, 600, 1, 1, clock_timestamp() - interval '1 second'),
                ($1, 'frame:1080x1920', 'webp', 1080, 1920, 1, 0, NULL)
            """, [.text(file)])
        let configuration = h.service.configuration
        let restarted = MediaService(runtime: h.runtime, configuration: configuration, imaging: sharedImaging)
        let replica = MediaService(runtime: h.runtime, configuration: configuration, imaging: sharedImaging)
        try await withServices(try await restarted.services(), logger: quietLogger) {
            #expect(try await eventually(timeout: .seconds(60)) {
                try await h.runtime.postgres.query("SELECT 1 FROM media.render_jobs").isEmpty
            })
            let sizes = Set(try await h.versionRows(file).map(\.size))
            #expect(sizes == ["thumbnail", "hd", "frame:1024x600", "frame:1080x1920"])
            let webp = try await h.runtime.postgres.query(
                "SELECT format, width, height FROM media.photo_versions WHERE file_id = $1 AND size = 'frame:1080x1920'", [.text(file)])
            #expect(try webp.first?.decode("format", as: String.self) == "webp")
            #expect(restarted.renderCount.current == 1, "both queued versions from one decode")

            // Two replicas, the same unrendered version, at the same moment.
            let wanted = MediaService.frameVersion(width: 640, height: 400, format: "jpeg")
            async let first = restarted.renderShared(file, [wanted])
            async let second = replica.renderShared(file, [wanted])
            let (a, b) = try await (first, second)
            #expect(a.count == 1 && b.count == 1)
            #expect(a.first?.blobKey == b.first?.blobKey)
            #expect(restarted.renderCount.current + replica.renderCount.current == 2, "one render for both replicas")
            #expect(try await h.frameRows("frame:640x400").count == 1)
        }
        await h.close()
    }
}
