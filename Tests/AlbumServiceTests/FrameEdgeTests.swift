import Foundation
import FramecastTesting
@testable import AlbumService
@testable import MQTT
import Postgres
import Secrets
import ServiceKit
import Testing
import Wire

// Issue 13, the album service's part of "the frame edge" (DESIGN.md): one publish per photo per
// album carrying the album's sequence number and capability URLs; no sync per frame after a
// photo; frames that missed something ask (`sync_request`); an offline frame's retained sync is
// refreshed in the background.

extension AlbumHarness {
    /// Publishes `online` for `frame` as its agent does on connecting, and waits until the
    /// service has recorded it.
    func goOnline(_ client: MQTTClient, _ frame: String) async throws {
        try await client.publish(FrameTopics.status(frame: frame), payload: FrameTopics.encode(FrameStatusMessage(status: "online")),
                                 qos: .atLeastOnce, retain: true)
        guard try await eventually({ try await isOnline(frame) }) else { throw NotReady() }
    }

    func isOnline(_ frame: String) async throws -> Bool {
        try await runtime.postgres.query("SELECT online FROM album.frames WHERE frame_id = $1::uuid", [.text(frame)])
            .first?.decode("online", as: Bool.self) ?? false
    }

    /// The frame's sync sequence: it grows by one with every sync built for it.
    func syncSeq(_ frame: String) async throws -> Int64 {
        try await runtime.postgres.query("SELECT sync_seq FROM album.frames WHERE frame_id = $1::uuid", [.text(frame)])
            .first?.decode("sync_seq", as: Int64.self) ?? -1
    }

    func publishedPushes(album: String) async throws -> Int {
        try await runtime.postgres.query("SELECT 1 FROM album.album_pushes WHERE album_id = $1::uuid AND state = 'published'",
                                         [.text(album)]).count
    }

    func requestSync(_ client: MQTTClient, _ frame: String) async throws {
        try await client.publish(FrameTopics.status(frame: frame),
                                 payload: FrameTopics.encode(FrameStatusMessage(status: FrameStatusMessage.syncRequest)), qos: .atLeastOnce)
    }
}

extension AlbumServiceSuite {
    @Suite struct FrameEdgeTests {
        /// Five uploads into an album an online frame shows: its topics carry five photo_added,
        /// numbered 1…5, each with capability URLs the gateway's keys verify (thumbnail, hd and
        /// the frame's screen; never the original), and no sync is built for the frame.
        @Test func fiveUploadsAreFivePhotoAddedAndNoSync() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { service in
                let owner = "owner-\(UUID().uuidString.prefix(8))"
                let album = try await h.createAlbum(owner).albumID
                let frame = try #require(try await h.registerFrame(owner).frame).frameID  // 1280x800
                _ = try await h.client.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: owner, frameID: frame, albumIDs: [album]))
                let frameClient = try h.frameClient(frame)
                try await frameClient.connect()
                defer { Task { await frameClient.disconnect() } }
                try await h.goOnline(frameClient, frame)
                let syncsBefore = try await h.syncSeq(frame)

                let addedTopic = FrameTopics.photoAdded(album: album), syncTopic = FrameTopics.sync(frame: frame)
                var files: [String] = []
                let seen = try await h.drain(frameClient, [addedTopic, syncTopic], marker: "test/\(frame)/marker") {
                    for n in 0..<5 {
                        let file = try await h.upload(user: owner, albumID: album, name: "IMG_\(n).jpg")
                        #expect(try await eventually { try await h.photos(owner, album).count == n + 1 })
                        try await h.cacheReady(file, versions: AlbumHarness.versions(file, screens: [(1280, 800)]))
                        files.append(file)
                    }
                    #expect(try await eventually { try await h.publishedPushes(album: album) == 5 })
                    // Room for a sync after the photos, were one sent (the publisher loops every 200 ms).
                    try await Task.sleep(for: .milliseconds(1500))
                }

                let syncs = seen.filter { $0.topic == syncTopic }
                #expect(syncs.count == 1 && syncs.allSatisfy(\.retain), "only the retained sync, on subscribing: \(syncs.count)")
                #expect(try await h.syncSeq(frame) == syncsBefore, "no sync was built for the photos")
                let added = try seen.filter { $0.topic == addedTopic }.map { try $0.decode(PhotoAddedMessage.self) }
                #expect(added.map(\.fileID) == files)
                #expect(added.map(\.seq) == [1, 2, 3, 4, 5], "the album's numbers, one by one")

                let keys = service.configuration.capabilityKeys
                for message in added {
                    let versions = try #require(message.versions)
                    #expect(versions.map(\.size) == ["frame:1280x800", "hd", "thumbnail"], "the original is never pushed")
                    #expect(versions.allSatisfy { $0.format == "jpeg" && $0.width > 0 && $0.height > 0 })
                    for version in versions {
                        #expect(version.url.hasPrefix("\(AlbumHarness.gateway)/c/"), "\(version.url)")
                        let parts = version.url.dropFirst(AlbumHarness.gateway.count + 3).split(separator: "/").map(String.init)
                        try #require(parts.count == 5, "\(version.url)")
                        let verdict = CapabilityPath.verify(keyID: parts[0], expires: parts[1], signature: parts[2], fileID: parts[3],
                                                            name: parts[4], keys: keys)
                        guard case .valid(let path) = verdict else {
                            Issue.record("\(version.size) of \(message.fileID): \(verdict)")
                            continue
                        }
                        #expect(path.fileID == message.fileID && path.ext == "jpg")
                        let lifetime = path.expires - Int64(Date().timeIntervalSince1970)
                        #expect(lifetime > 6 * 86_400 && lifetime <= 8 * 86_400, "about the configured 7 days: \(lifetime) s")
                    }
                }
                #expect(Set(added.flatMap { $0.versions ?? [] }.map(\.url)).count == 15, "each version its own URL")

                // The frame's sync, when one is built, lists them with its own screen's version and
                // the album's number.
                let built = try await h.client.call(AlbumAPI.syncFrame, SyncFrameRequest(userID: owner, frameID: frame)).sequence
                // (The publisher's due-sync loop may publish the same contents once more under the
                // next number, replacing the retained copy before this subscribes: any sync built
                // at or after the request will do.)
                let latest = try await h.collect(frameClient, [syncTopic], until: { messages in
                    messages.contains { ((try? $0.decode(FrameSyncMessage.self))?.seq ?? 0) >= built }
                })
                let sync = try #require(latest.compactMap { try? $0.decode(FrameSyncMessage.self) }.first { $0.seq >= built })
                #expect(sync.albumSeqs == [album: 5])
                #expect(Set(sync.photos.map(\.fileID)) == Set(files))
                #expect(sync.photos.allSatisfy { $0.seq == nil && $0.versions?.map(\.size) == ["frame:1280x800"] })
                #expect(try await h.isOnline(frame))
            }
        }

        /// An online frame that missed two photo_added (it was not listening) finds a retained
        /// sync without them (online frames are not refreshed), asks with `sync_request` and gets
        /// a fresh sync listing them, numbered; the request is not recorded as its status.
        /// Requests at once are answered together, never dropped.
        @Test func aFrameThatMissedPhotosCatchesUpThroughSyncRequest() async throws {
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
                try await h.goOnline(frameClient, frame)

                var files: [String] = []
                for n in 0..<2 {
                    let file = try await h.upload(user: owner, albumID: album, name: "IMG_\(n).jpg")
                    #expect(try await eventually { try await h.photos(owner, album).count == n + 1 })
                    try await h.cacheReady(file, versions: AlbumHarness.versions(file, screens: [(1280, 800)]))
                    files.append(file)
                }
                #expect(try await eventually { try await h.publishedPushes(album: album) == 2 })
                try await Task.sleep(for: .milliseconds(1000))  // a refresh would have happened by now

                let syncTopic = FrameTopics.sync(frame: frame)
                let retained = try await h.collect(frameClient, [syncTopic], until: { !$0.isEmpty })
                let stale = try #require(retained.first).decode(FrameSyncMessage.self)
                #expect(stale.albumSeqs == [album: 0] && stale.photos.isEmpty, "an online frame's sync is left as it was")

                let answered = try await h.collect(frameClient, [syncTopic], after: { try await h.requestSync(frameClient, frame) },
                                                   until: { messages in
                    messages.contains { (try? $0.decode(FrameSyncMessage.self))?.albumSeqs?[album] == 2 }
                })
                let fresh = try #require(answered.compactMap { try? $0.decode(FrameSyncMessage.self) }.first { $0.albumSeqs?[album] == 2 })
                #expect(fresh.seq > stale.seq)
                #expect(Set(fresh.photos.map(\.fileID)) == Set(files))
                #expect(fresh.photos.allSatisfy { $0.versions?.map(\.size) == ["frame:1280x800"] })
                #expect(try await h.isOnline(frame), "a sync_request is not recorded as the frame's status")

                // Three at once: answered together (one sync now, at most one more when the
                // frame's window ends), never dropped.
                let before = try await h.syncSeq(frame)
                let burst = try await h.drain(frameClient, [syncTopic], marker: "test/\(frame)/marker") {
                    for _ in 0..<3 { try await h.requestSync(frameClient, frame) }
                    try await Task.sleep(for: .seconds(3))  // the 2 s window and some
                }
                let live = burst.filter { !$0.retain }
                #expect((1...2).contains(live.count), "\(live.count) syncs for three requests")
                #expect(try await h.syncSeq(frame) == before + Int64(live.count))
                #expect(try await h.isOnline(frame))
            }
        }

        /// A frame that is offline while photos arrive finds, when it comes back, a retained sync
        /// that lists them: the service refreshed it in the background (at most once per
        /// interval per frame), without any request.
        @Test func anOfflineFrameFindsARefreshedRetainedSync() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))"
                let album = try await h.createAlbum(owner).albumID
                let frame = try #require(try await h.registerFrame(owner).frame).frameID
                _ = try await h.client.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: owner, frameID: frame, albumIDs: [album]))
                #expect(try await h.isOnline(frame) == false)
                let before = try await h.syncSeq(frame)

                var files: [String] = []
                for n in 0..<3 {
                    let file = try await h.upload(user: owner, albumID: album, name: "IMG_\(n).jpg")
                    #expect(try await eventually { try await h.photos(owner, album).count == n + 1 })
                    try await h.cacheReady(file)
                    files.append(file)
                }
                #expect(try await eventually { try await h.publishedPushes(album: album) == 3 })
                #expect(try await eventually {
                    try await h.runtime.postgres.query(
                        "SELECT synced_seq FROM album.frame_albums WHERE frame_id = $1::uuid", [.text(frame)]
                    ).first?.decode("synced_seq", as: Int64.self) == 3
                }, "the retained sync caught up with the album")
                let refreshes = try await h.syncSeq(frame) - before
                #expect(refreshes >= 1 && refreshes <= 3, "a few refreshes for three photos, not one per photo and frame: \(refreshes)")

                let frameClient = try h.frameClient(frame)
                try await frameClient.connect()
                defer { Task { await frameClient.disconnect() } }
                let retained = try await h.collect(frameClient, [FrameTopics.sync(frame: frame)], until: { !$0.isEmpty })
                let sync = try #require(retained.first).decode(FrameSyncMessage.self)
                #expect(sync.albumSeqs == [album: 3])
                #expect(Set(sync.photos.map(\.fileID)) == Set(files))

                // Caught up: no more refreshes while nothing changes.
                let settled = try await h.syncSeq(frame)
                try await Task.sleep(for: .milliseconds(1500))
                #expect(try await h.syncSeq(frame) == settled)
            }
        }
    }
}

/// The pure parts: when requested syncs are served, and which versions are kept.
extension AlbumServiceSuite {
    @Suite struct SyncRequestScheduleTests {
        @Test func oneSyncPerFrameAndWindowAndNoRequestDropped() {
            var schedule = SyncRequestSchedule(interval: .seconds(2))
            let t0 = ContinuousClock.now
            let a1 = schedule.request("a", now: t0)
            let a2 = schedule.request("a", now: t0 + .milliseconds(10))
            let b1 = schedule.request("b", now: t0 + .milliseconds(20))
            #expect(a1 == t0, "the first is served at once")
            #expect(a2 == t0, "a second before it is served: the same turn")
            #expect(b1 == t0 + .milliseconds(20))
            let first = schedule.take(now: t0 + .milliseconds(30), limit: 10)
            #expect(first.frames == ["a", "b"] && first.next == nil)

            // Inside a's window: served when it ends, once for both requests.
            let a3 = schedule.request("a", now: t0 + .milliseconds(500))
            let a4 = schedule.request("a", now: t0 + .milliseconds(900))
            #expect(a3 == t0 + .milliseconds(2030) && a4 == a3)
            let early = schedule.take(now: t0 + .seconds(1), limit: 10)
            #expect(early.frames.isEmpty && early.next == t0 + .milliseconds(2030))
            let due = schedule.take(now: t0 + .milliseconds(2030), limit: 10)
            let waiting = schedule.waitingCount
            #expect(due.frames == ["a"] && due.next == nil && waiting == 0)

            // After the window, at once again.
            let b2 = schedule.request("b", now: t0 + .seconds(3))
            #expect(b2 == t0 + .seconds(3))
        }

        @Test func aBatchTakesTheEarliestFirst() {
            var schedule = SyncRequestSchedule(interval: .seconds(2))
            let t0 = ContinuousClock.now
            for (n, frame) in ["c", "a", "d", "b"].enumerated() { schedule.request(frame, now: t0 + .milliseconds(n)) }
            let batch = schedule.take(now: t0 + .seconds(1), limit: 3)
            #expect(batch.frames == ["c", "a", "d"])
            #expect(batch.next == t0 + .milliseconds(3))
            let rest = schedule.take(now: t0 + .seconds(1), limit: 3)
            #expect(rest.frames == ["b"] && rest.next == nil)
        }
    }

    @Suite struct StoredVersionTests {
        @Test func onlyWhatAFrameMayFetchIsKeptAndNewerVersionsWin() {
            let versions = AlbumHarness.versions("f", screens: [(1024, 600), (600, 1024)])
            let kept = StoredVersion.frameVersions(versions)
            #expect(kept.map(\.size) == ["thumbnail", "hd", "frame:1024x600", "frame:600x1024"], "no original")
            #expect(StoredVersion.frameVersions([PhotoVersion(size: "hd", width: 10, height: 10, format: "jpeg", blobKey: "not-a-key")]).isEmpty)
            #expect(StoredVersion.frameVersions([PhotoVersion(size: "hd", width: 10, height: 10, format: "gif",
                                                              blobKey: String(repeating: "a", count: 64))]).isEmpty)

            let webp = StoredVersion(size: "frame:1024x600", width: 1024, height: 600, format: "webp", blobKey: String(repeating: "b", count: 64))
            let rerendered = StoredVersion(size: "hd", width: 1728, height: 1080, format: "jpeg", blobKey: String(repeating: "c", count: 64))
            let merged = StoredVersion.merge(kept, [webp, rerendered])
            #expect(merged.map { "\($0.size)/\($0.format)" }
                    == ["frame:1024x600/jpeg", "frame:1024x600/webp", "frame:600x1024/jpeg", "hd/jpeg", "thumbnail/jpeg"])
            #expect(merged.first { $0.size == "hd" }?.blobKey == rerendered.blobKey)
            #expect(StoredVersion.decode(StoredVersion.encode(merged)) == merged)
            #expect(StoredVersion.decode("not json").isEmpty && StoredVersion.decode("").isEmpty)
        }
    }
}
