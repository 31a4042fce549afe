import Foundation
import FramecastTesting
@testable import AlbumService
@testable import MQTT
import NATS
import Postgres
import ServiceKit
import Testing
import Wire

extension AlbumServiceSuite {
    @Suite struct AlbumPushTests {
        /// Upload with album_id → after media.cache_ready the frame's client gets exactly one
        /// photo_added with the right payload (the album's first sequence number) and QoS 1; a
        /// second cache_ready for the same photo (another event id) and a redelivery of the same
        /// event publish nothing more.
        @Test func uploadToAlbumPushesPhotoAddedExactlyOnce() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))"
                let album = try await h.createAlbum(owner)
                let frameReply = try await h.registerFrame(owner)
                let frame = frameReply.frame!.frameID
                _ = try await h.client.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: owner, frameID: frame, albumIDs: [album.albumID]))

                let fileID = try await h.upload(user: owner, albumID: album.albumID, name: "Leaf.jpg")
                #expect(try await eventually { try await h.photos(owner, album.albumID).map(\.fileID) == [fileID] })

                let frameClient = try h.frameClient(frame)
                try await frameClient.connect()
                defer { Task { await frameClient.disconnect() } }
                let topic = FrameTopics.photoAdded(album: album.albumID)
                let eventID = UUID().uuidString.lowercased()
                let first = try await h.collect(frameClient, [topic], after: { try await h.cacheReady(fileID, eventID: eventID) },
                                                until: { $0.count >= 1 })
                #expect(first.count == 1)
                let message = try #require(first.first)
                #expect(message.qos == .atLeastOnce)
                #expect(!message.retain)
                let payload = try message.decode(PhotoAddedMessage.self)
                #expect(payload == PhotoAddedMessage(fileID: fileID, albumID: album.albumID, fileName: "Leaf.jpg", contentType: "image/jpeg",
                                                     labels: ["leaf", "autumn"], takenAt: 1_600_000_000_000,
                                                     mediaServiceURL: "\(AlbumHarness.gateway)/api/v1/photos/\(fileID)", seq: 1))
                let json = try JSONSerialization.jsonObject(with: Data(message.payload)) as? [String: Any]
                #expect(json?["v"] as? Int == 1)

                // media announces the photo again (a re-render) and JetStream redelivers the first event.
                let again = UUID().uuidString.lowercased()
                let later = try await h.drain(frameClient, [topic], marker: "test/\(frame)/marker") {
                    try await h.cacheReady(fileID, eventID: again)
                    try await h.cacheReady(fileID, eventID: eventID)
                    #expect(try await eventually { try await h.processed(again) })
                    let rows = try await h.runtime.postgres.query(
                        "SELECT state, attempts FROM album.album_pushes WHERE file_id = $1::uuid", [.text(fileID)])
                    #expect(rows.count == 1)
                    #expect(try rows.first?.decode("state", as: String.self) == "published")
                    #expect(try rows.first?.decode("attempts", as: Int32.self) == 1)
                }
                #expect(later.isEmpty, "no second photo_added: \(later.map(\.topic))")
            }
        }

        /// A push committed while the broker is down is published once after the service restarts.
        @Test func pendingPushSurvivesRestart() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            let owner = "owner-\(UUID().uuidString.prefix(8))"
            let (album, fileID): (String, String) = try await h.running { _ in
                let album = try await h.createAlbum(owner).albumID
                let fileID = try await h.upload(user: owner, albumID: album)
                #expect(try await eventually { try await h.photos(owner, album).count == 1 })
                h.broker.stop()
                let eventID = UUID().uuidString.lowercased()
                try await h.cacheReady(fileID, eventID: eventID)
                #expect(try await eventually { try await h.processed(eventID) })
                let pending = try await h.runtime.postgres.query("SELECT state FROM album.album_pushes WHERE file_id = $1::uuid", [.text(fileID)])
                #expect(try pending.map { try $0.decode("state", as: String.self) } == ["pending"])
                return (album, fileID)
            }
            try h.broker.start()
            let frameClient = try h.frameClient(UUID().uuidString)
            try await frameClient.connect()
            defer { Task { await frameClient.disconnect() } }
            let topic = FrameTopics.photoAdded(album: album)
            let seen = try await h.drain(frameClient, [topic], marker: "test/\(album)/marker") {
                let published = try await h.running { _ in
                    try await eventually {
                        try await h.runtime.postgres.query("SELECT 1 FROM album.album_pushes WHERE file_id = $1::uuid AND state = 'published'",
                                                           [.text(fileID)]).count == 1
                    }
                }
                #expect(published)
            }
            #expect(seen.count == 1)
            #expect(try seen.first?.decode(PhotoAddedMessage.self).fileID == fileID)
        }

        /// A frame subscribing late gets the retained sync (QoS 2 asked) listing every ready photo
        /// and the album's sequence number; removing a photo publishes photo_removed with the next
        /// number and, the frame being offline, its retained sync is refreshed without the photo.
        @Test func lateFrameGetsRetainedSyncAndRemovals() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))"
                let album = try await h.createAlbum(owner).albumID
                var files: [String] = []
                for n in 0..<3 {
                    let file = try await h.upload(user: owner, albumID: album, name: "IMG_\(n).jpg")
                    try await h.cacheReady(file)
                    files.append(file)
                }
                #expect(try await eventually {
                    try await h.runtime.postgres.query("SELECT 1 FROM album.album_pushes WHERE state = 'published'").count == 3
                })
                let frame = try await h.registerFrame(owner).frame!.frameID
                let set = try await h.client.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: owner, frameID: frame, albumIDs: [album]))
                #expect(set.frame?.albumIDs == [album])

                let frameClient = try h.frameClient(frame)
                try await frameClient.connect()
                defer { Task { await frameClient.disconnect() } }
                let syncTopic = FrameTopics.sync(frame: frame)
                let retained = try await h.collect(frameClient, [syncTopic], until: { !$0.isEmpty })
                let sync = try #require(retained.first)
                #expect(sync.retain)
                let message = try sync.decode(FrameSyncMessage.self)
                #expect(message.frameID == frame)
                #expect(message.seq >= 1)
                #expect(message.albumIDs == [album])
                #expect(Set(message.photos.map(\.fileID)) == Set(files))
                #expect(message.photos.allSatisfy { $0.mediaServiceURL == "\(AlbumHarness.gateway)/api/v1/photos/\($0.fileID)" })
                #expect(message.albumSeqs == [album: 3], "three photo_added so far")

                // SyncFrame publishes again with a higher sequence number.
                let reply = try await h.client.call(AlbumAPI.syncFrame, SyncFrameRequest(userID: owner, frameID: frame))
                #expect(reply.sequence > message.seq)
                #expect(reply.photoCount == 3)

                // Remove one photo: photo_removed once, and the next sync lacks it.
                let removedTopic = FrameTopics.photoRemoved(album: album)
                let seen = try await h.collect(frameClient, [removedTopic, syncTopic], after: {
                    _ = try await h.client.call(AlbumAPI.removeAlbumPhoto, RemoveAlbumPhotoRequest(userID: owner, albumID: album, fileID: files[0]))
                }, until: { messages in
                    messages.contains { $0.topic == removedTopic }
                        && messages.contains { (try? $0.decode(FrameSyncMessage.self))?.photos.count == 2 }
                })
                let removed = try #require(seen.first { $0.topic == removedTopic })
                #expect(try removed.decode(PhotoRemovedMessage.self)
                        == PhotoRemovedMessage(fileID: files[0], albumID: album, reason: "removed", seq: 4))
                let latestMessage = try #require(seen.last { $0.topic == syncTopic })
                let latest = try latestMessage.decode(FrameSyncMessage.self)
                #expect(!latest.photos.map(\.fileID).contains(files[0]))
                #expect(latest.seq > reply.sequence)
                #expect(latest.albumSeqs == [album: 4])
            }
        }
    }
}

extension AlbumServiceSuite {
    @Suite struct FrameTests {
        /// SetFrameConfig and album settings are retained; commands arrive with the id the call returned.
        @Test func configRetainedAndCommandsCarryIDs() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))"
                let album = try await h.createAlbum(owner).albumID
                let registered = try await h.registerFrame(owner)
                let frame = registered.frame!.frameID
                #expect(registered.mqtt?.port == Int32(h.broker.port))
                #expect(registered.mqtt?.username == "frame-\(frame)")
                #expect((registered.mqtt?.password.count ?? 0) >= 32)

                let config = FrameConfig(intervalSeconds: 45, shuffle: true, sleepStart: "22:30", sleepEnd: "07:00", timeZone: "Europe/Paris",
                                         transition: "fade", preferredFormat: "webp", brightness: 80)
                let set = try await h.client.call(AlbumAPI.setFrameConfig, SetFrameConfigRequest(userID: owner, frameID: frame, config: config))
                #expect(set.frame?.config == config)
                #expect(try await h.status(AlbumAPI.setFrameConfig, SetFrameConfigRequest(
                    userID: owner, frameID: frame, config: FrameConfig(intervalSeconds: 10, sleepStart: "25:00", sleepEnd: "07:00"))) == .invalid)
                _ = try await h.client.call(AlbumAPI.updateAlbumSettings, UpdateAlbumSettingsRequest(
                    userID: owner, albumID: album, settings: AlbumSettings(intervalSeconds: 20, shuffle: true, transition: "slide", showCaptions: true)))

                let frameClient = try h.frameClient(frame)
                try await frameClient.connect()
                defer { Task { await frameClient.disconnect() } }
                let configTopic = FrameTopics.config(frame: frame), albumTopic = FrameTopics.albumConfig(album: album)
                let retained = try await h.collect(frameClient, [configTopic, albumTopic], until: { $0.count >= 2 })
                let frameConfig = try #require(retained.first { $0.topic == configTopic })
                #expect(frameConfig.retain)
                #expect(try frameConfig.decode(FrameConfigMessage.self) == FrameConfigMessage(
                    intervalSeconds: 45, shuffle: true, sleepStart: "22:30", sleepEnd: "07:00", timeZone: "Europe/Paris",
                    transition: "fade", preferredFormat: "webp", brightness: 80))
                let albumConfig = try #require(retained.first { $0.topic == albumTopic })
                #expect(albumConfig.retain)
                #expect(try albumConfig.decode(AlbumConfigMessage.self) == AlbumConfigMessage(
                    albumID: album, intervalSeconds: 20, shuffle: true, transition: "slide", showCaptions: true))

                let commandTopic = FrameTopics.command(frame: frame)
                var ids: [String] = []
                let commands = try await h.collect(frameClient, [commandTopic], after: {
                    for (command, args) in [("next", [:]), ("set_interval", ["seconds": "15"]), ("pause", [:])] as [(String, [String: String])] {
                        ids.append(try await h.client.call(AlbumAPI.sendFrameCommand, SendFrameCommandRequest(
                            userID: owner, frameID: frame, command: command, args: args)).commandID)
                    }
                }, until: { $0.count >= 3 })
                let decoded = try commands.map { try $0.decode(FrameCommandMessage.self) }
                #expect(decoded.map(\.id) == ids)
                #expect(Set(ids).count == 3)
                #expect(decoded.map(\.command) == ["next", "set_interval", "pause"])
                #expect(decoded[1].args == ["seconds": "15"])
                #expect(commands.allSatisfy { !$0.retain && $0.qos == .exactlyOnce })
                #expect(try await h.status(AlbumAPI.sendFrameCommand, SendFrameCommandRequest(userID: owner, frameID: frame, command: "explode")) == .invalid)
                #expect(try await h.status(AlbumAPI.sendFrameCommand, SendFrameCommandRequest(userID: "someone-else", frameID: frame, command: "next")) == .notFound)
            }
        }

        /// Deleting a frame clears its retained topics and emits device.deleted.
        @Test func deletingAFrameClearsRetainedMessages() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))"
                let album = try await h.createAlbum(owner).albumID
                let frame = try await h.registerFrame(owner).frame!.frameID
                _ = try await h.client.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: owner, frameID: frame, albumIDs: [album]))
                _ = try await h.client.call(AlbumAPI.setFrameConfig, SetFrameConfigRequest(userID: owner, frameID: frame,
                                                                                            config: FrameConfig(intervalSeconds: 10)))
                let frameClient = try h.frameClient(frame, will: true)
                try await frameClient.connect()
                try await frameClient.publish(FrameTopics.heartbeat(frame: frame), payload: FrameTopics.encode(FrameHeartbeatMessage(at: 1)),
                                              qos: .atLeastOnce, retain: true)
                await frameClient.disconnect()

                let watcher = try h.frameClient(frame)
                try await watcher.connect()
                defer { Task { await watcher.disconnect() } }
                let before = try await h.drain(watcher, ["frames/\(frame)/#"], marker: "test/\(frame)/m1")
                #expect(Set(before.map(\.topic)) == [FrameTopics.sync(frame: frame), FrameTopics.config(frame: frame),
                                                     FrameTopics.heartbeat(frame: frame)])
                _ = try await h.client.call(AlbumAPI.deleteFrame, DeleteFrameRequest(userID: owner, frameID: frame))
                let after = try await h.drain(watcher, ["frames/\(frame)/#"], marker: "test/\(frame)/m2")
                #expect(after.filter { !$0.payload.isEmpty }.isEmpty, "retained left: \(after.map(\.topic))")
                #expect(try await h.status(AlbumAPI.getFrame, GetFrameRequest(userID: owner, frameID: frame)) == .notFound)

                let consumer = try await h.runtime.jetStream.pullConsumer(
                    stream: Subjects.streamName, durable: "inspect_\(UUID().uuidString.prefix(8))",
                    configuration: ConsumerConfiguration(filterSubject: DeviceDeleted.subject))
                defer { consumer.close() }
                var deleted: DeviceDeleted?
                #expect(try await eventually {
                    if let message = try await consumer.fetch(batch: 1, expires: .milliseconds(300)).first {
                        deleted = try DeviceDeleted(wireBytes: message.payload)
                    }
                    return deleted != nil
                })
                #expect(deleted?.frameID == frame)
                #expect(deleted?.width == 1280 && deleted?.height == 800)
            }
        }

        /// A frame whose connection dies without DISCONNECT is shown offline (its last will);
        /// heartbeats and cached/displayed reports show up in GetFrame; malformed telemetry is dropped.
        @Test func telemetryOnlineOfflineAndSyncStatus() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))"
                let album = try await h.createAlbum(owner).albumID
                var files: [String] = []
                for _ in 0..<3 {
                    let file = try await h.upload(user: owner, albumID: album)
                    try await h.cacheReady(file)
                    files.append(file)
                }
                #expect(try await eventually { try await h.photos(owner, album).count == 3 })
                let frame = try await h.registerFrame(owner).frame!.frameID
                _ = try await h.client.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: owner, frameID: frame, albumIDs: [album]))
                func get() async throws -> Frame { try await h.client.call(AlbumAPI.getFrame, GetFrameRequest(userID: owner, frameID: frame)).frame! }
                #expect(try await get().online == false)
                #expect(try await get().lastHeartbeatAt == 0)

                let frameClient = try h.frameClient(frame, will: true)
                try await frameClient.connect()
                let status = FrameTopics.status(frame: frame)
                // Garbage first: the service must drop it and keep going.
                for junk in ["not json", "{\"status\": 5}", "{\"status\":\"cached\",\"file_ids\":[\"../../x\"]}", "{\"status\":\"dance\"}", "[]"] {
                    try await frameClient.publish(status, payload: Array(junk.utf8), qos: .atLeastOnce)
                }
                try await frameClient.publish("frames/not-a-uuid/status", payload: FrameTopics.encode(FrameStatusMessage(status: "online")), qos: .atLeastOnce)
                try await frameClient.publish(status, payload: FrameTopics.encode(FrameStatusMessage(status: "online")), qos: .atLeastOnce, retain: true)
                try await frameClient.publish(FrameTopics.heartbeat(frame: frame), payload: FrameTopics.encode(FrameHeartbeatMessage(at: 5)), qos: .atLeastOnce)
                #expect(try await eventually { let f = try await get(); return f.online && f.lastHeartbeatAt > 0 })

                try await frameClient.publish(status, payload: FrameTopics.encode(FrameStatusMessage(status: "cached", fileIDs: files)), qos: .atLeastOnce)
                try await frameClient.publish(status, payload: FrameTopics.encode(FrameStatusMessage(status: "displayed", fileID: files[1])), qos: .atLeastOnce)
                #expect(try await eventually {
                    let s = try await get().syncStatus.first
                    return s?.displayedPhotos == 1 && s?.lastDisplayedFileID == files[1]
                })
                let s = try #require(try await get().syncStatus.first)
                #expect(s.albumID == album)
                #expect(s.totalPhotos == 3)
                #expect(s.lastDisplayedAt > 0)
                #expect(s.syncSequence >= 1)
                let row = try await h.runtime.postgres.query(
                    "SELECT pending, delivered, displayed FROM album.album_sync_status WHERE frame_id = $1::uuid", [.text(frame)])
                #expect(try row.first?.decode("pending", as: Int32.self) == 0)
                #expect(try row.first?.decode("delivered", as: Int32.self) == 3)
                #expect(try row.first?.decode("displayed", as: Int32.self) == 1)

                // The frame's connection dies without DISCONNECT: the broker publishes its will.
                frameClient.abortConnectionForTesting()
                #expect(try await eventually(timeout: .seconds(30)) { try await get().online == false })
                await frameClient.disconnect()
            }
        }
    }
}

extension AlbumServiceSuite {
    @Suite struct AlbumAccessTests {
        /// Roles: viewers read but cannot add; non-members see not_found; a frame cannot show an
        /// album its owner cannot see; topic-breaking ids are refused as invalid.
        @Test func rolesAndVisibility() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))", viewer = "viewer-\(UUID().uuidString.prefix(8))"
                let contributor = "contrib-\(UUID().uuidString.prefix(8))", stranger = "stranger-\(UUID().uuidString.prefix(8))"
                let album = try await h.createAlbum(owner).albumID
                _ = try await h.client.call(AlbumAPI.addMember, AddMemberRequest(userID: owner, albumID: album, memberUserID: viewer,
                                                                                 memberEmail: "v@example.com", role: .viewer))
                _ = try await h.client.call(AlbumAPI.addMember, AddMemberRequest(userID: owner, albumID: album, memberUserID: contributor,
                                                                                 memberEmail: "c@example.com", role: .contributor))
                let members = try await h.client.call(AlbumAPI.listMembers, ListMembersRequest(userID: viewer, albumID: album)).members
                #expect(Set(members.map(\.userID)) == [owner, viewer, contributor])
                #expect(members.first { $0.userID == owner }?.role == .owner)

                let ownersFile = try await h.upload(user: owner, albumID: album)
                #expect(try await eventually { try await h.photos(owner, album).count == 1 })
                let viewersFile = try await h.upload(user: viewer)  // lands in the viewer's default album
                let contributorsFile = try await h.upload(user: contributor, albumID: album)
                #expect(try await eventually { try await h.photos(owner, album).count == 2 })

                // Viewer: reads, cannot add or remove; their upload naming the album did not land there.
                let viewed = try await h.client.call(AlbumAPI.getAlbum, GetAlbumRequest(userID: viewer, albumID: album)).album
                #expect(viewed?.role == .viewer)
                #expect(viewed?.photoCount == 2)
                #expect(try await h.status(AlbumAPI.addAlbumPhoto, AddAlbumPhotoRequest(userID: viewer, albumID: album, fileID: viewersFile)) == .unauthorized)
                #expect(try await h.status(AlbumAPI.removeAlbumPhoto, RemoveAlbumPhotoRequest(userID: viewer, albumID: album, fileID: ownersFile)) == .unauthorized)
                #expect(try await h.status(AlbumAPI.updateAlbum, UpdateAlbumRequest(userID: contributor, albumID: album, name: "Mine")) == .unauthorized)
                let viewerUpload = try await h.upload(user: viewer, albumID: album)
                let viewerAlbums = try await h.client.call(AlbumAPI.listAlbums, ListAlbumsRequest(userID: viewer)).albums
                #expect(try await eventually {
                    try await h.runtime.postgres.query("SELECT 1 FROM album.photos WHERE file_id = $1::uuid", [.text(viewerUpload)]).count == 1
                })
                #expect(try await h.photos(owner, album).map(\.fileID).contains(viewerUpload) == false)
                #expect(viewerAlbums.contains { $0.isDefault && $0.ownerID == viewer })
                #expect(viewerAlbums.contains { $0.albumID == album })

                // Contributor: adds their own photo to the album (idempotent), cannot add a stranger's.
                let added = try await h.client.call(AlbumAPI.addAlbumPhoto, AddAlbumPhotoRequest(userID: contributor, albumID: album, fileID: contributorsFile))
                #expect(added.photo?.fileID == contributorsFile)
                let strangersFile = try await h.upload(user: stranger)
                #expect(try await eventually {
                    try await h.client.call(AlbumAPI.listAlbums, ListAlbumsRequest(userID: stranger)).albums.first?.photoCount == 1
                })
                #expect(try await h.status(AlbumAPI.addAlbumPhoto, AddAlbumPhotoRequest(userID: contributor, albumID: album, fileID: strangersFile)) == .notFound)

                // Strangers: not_found everywhere, never unauthorized (the album is not revealed).
                #expect(try await h.status(AlbumAPI.getAlbum, GetAlbumRequest(userID: stranger, albumID: album)) == .notFound)
                #expect(try await h.status(AlbumAPI.listAlbumPhotos, ListAlbumPhotosRequest(userID: stranger, albumID: album)) == .notFound)
                #expect(try await h.status(AlbumAPI.addAlbumPhoto, AddAlbumPhotoRequest(userID: stranger, albumID: album, fileID: strangersFile)) == .notFound)
                #expect(try await h.status(AlbumAPI.deleteAlbum, DeleteAlbumRequest(userID: stranger, albumID: album)) == .notFound)
                #expect(try await h.client.call(AlbumAPI.listAlbums, ListAlbumsRequest(userID: stranger)).albums.contains { $0.albumID == album } == false)

                // A frame cannot be subscribed to an album its owner cannot see.
                let strangersFrame = try await h.registerFrame(stranger).frame!.frameID
                #expect(try await h.status(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: stranger, frameID: strangersFrame, albumIDs: [album])) == .notFound)
                #expect(try await h.status(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: owner, frameID: strangersFrame, albumIDs: [album])) == .notFound)
                let viewersFrame = try await h.registerFrame(viewer).frame!.frameID
                let subscribed = try await h.client.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: viewer, frameID: viewersFrame, albumIDs: [album]))
                #expect(subscribed.frame?.albumIDs == [album])

                // Topic-breaking ids are invalid; well-formed unknown ids are not_found.
                // (A NUL cannot cross the wire: protobuf-c strings end at it; TopicIDTests covers it.)
                for bad in ["a/b", "+", "#", "frames/+/#", "x\u{1}y", String(repeating: "a", count: 65), ""] {
                    #expect(try await h.status(AlbumAPI.getAlbum, GetAlbumRequest(userID: owner, albumID: bad)) == .invalid, "\(bad.debugDescription)")
                    #expect(try await h.status(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: viewer, frameID: viewersFrame, albumIDs: [bad])) == .invalid)
                    #expect(try await h.status(AlbumAPI.sendFrameCommand, SendFrameCommandRequest(userID: owner, frameID: bad, command: "next")) == .invalid)
                }
                #expect(try await h.status(AlbumAPI.getAlbum, GetAlbumRequest(userID: owner, albumID: UUID().uuidString)) == .notFound)
                #expect(try await h.status(AlbumAPI.getFrame, GetFrameRequest(userID: owner, frameID: "not-a-uuid")) == .notFound)

                // Removing the viewer hides the album from them.
                _ = try await h.client.call(AlbumAPI.removeMember, RemoveMemberRequest(userID: owner, albumID: album, memberUserID: viewer))
                #expect(try await h.status(AlbumAPI.getAlbum, GetAlbumRequest(userID: viewer, albumID: album)) == .notFound)
            }
        }

        /// Album CRUD: create, rename, list newest first with paging, delete.
        @Test func albumLifecycle() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running(waitForMQTT: true) { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))"
                #expect(try await h.status(AlbumAPI.createAlbum, CreateAlbumRequest(userID: owner, name: "  ")) == .invalid)
                #expect(try await h.status(AlbumAPI.createAlbum, CreateAlbumRequest(userID: "", name: "x")) == .invalid)
                var ids: [String] = []
                for n in 0..<3 { ids.append(try await h.createAlbum(owner, "Album \(n)").albumID) }
                let page1 = try await h.client.call(AlbumAPI.listAlbums, ListAlbumsRequest(userID: owner, pageSize: 2))
                #expect(page1.albums.map(\.albumID) == [ids[2], ids[1]])
                let page2 = try await h.client.call(AlbumAPI.listAlbums, ListAlbumsRequest(userID: owner, pageSize: 2, pageToken: page1.nextPageToken))
                #expect(page2.albums.map(\.albumID) == [ids[0]])
                #expect(page2.nextPageToken.isEmpty)

                let renamed = try await h.client.call(AlbumAPI.updateAlbum, UpdateAlbumRequest(userID: owner, albumID: ids[0], name: "Holidays"))
                #expect(renamed.album?.name == "Holidays")
                #expect(renamed.album?.role == .owner)
                #expect(renamed.album?.photoCount == 0)
                _ = try await h.client.call(AlbumAPI.deleteAlbum, DeleteAlbumRequest(userID: owner, albumID: ids[0]))
                #expect(try await h.status(AlbumAPI.getAlbum, GetAlbumRequest(userID: owner, albumID: ids[0])) == .notFound)

                let created = try await h.runtime.postgres.query("SELECT count(*)::bigint AS n FROM album.outbox WHERE subject = 'album.created'")
                #expect(try created[0].decode("n", as: Int64.self) == 3)
            }
        }
    }
}

/// Pure checks of the topic rules and payload encodings shared with frames.
extension AlbumServiceSuite {
    @Suite struct TopicIDTests {
        @Test func topicIDsRefuseWhatBreaksTopics() {
            for bad in ["", "a/b", "+", "a+", "#", "x\u{0}y", "tab\there", String(repeating: "a", count: 65)] {
                #expect(!TopicID.isValid(bad), "\(bad.debugDescription)")
            }
            for good in [UUID().uuidString.lowercased(), "kitchen-frame_1", String(repeating: "a", count: 64)] {
                #expect(TopicID.isValid(good))
            }
        }

        @Test func frameIDsAreReadOnlyFromTheirOwnTopics() {
            let id = UUID().uuidString.lowercased()
            #expect(FrameTopics.frameID(in: FrameTopics.status(frame: id), leaf: "status") == id)
            #expect(FrameTopics.frameID(in: FrameTopics.heartbeat(frame: id), leaf: "status") == nil)
            #expect(FrameTopics.frameID(in: "frames/\(id)/status/extra", leaf: "status") == nil)
            #expect(FrameTopics.frameID(in: "frames//status", leaf: "status") == nil)
            #expect(FrameTopics.frameID(in: "albums/\(id)/status", leaf: "status") == nil)
        }

        @Test func payloadsAreVersionedWithSortedKeys() throws {
            let bytes = FrameTopics.encode(PhotoRemovedMessage(fileID: "f", albumID: "a", reason: "removed"))
            #expect(String(decoding: bytes, as: UTF8.self) == #"{"album_id":"a","file_id":"f","reason":"removed","v":1}"#)
            let added = PhotoAddedMessage(fileID: "f", albumID: "a", fileName: "x.jpg", contentType: "image/jpeg", labels: [],
                                          takenAt: nil, mediaServiceURL: "http://h/api/v1/photos/f")
            #expect(try FrameTopics.decode(PhotoAddedMessage.self, from: FrameTopics.encode(added)) == added)
            #expect(throws: DecodingError.self) { try FrameTopics.decode(FrameStatusMessage.self, from: Array("{}".utf8)) }
        }
    }
}

extension AlbumServiceSuite {
    @Suite struct AccessAndDeletionTests {
        /// CanViewPhoto / CanViewAlbum for users and frames; the events media keeps its own copy
        /// from (members with roles, the frame's screen, format and albums, album photos).
        @Test func accessChecksAndScreens() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))", viewer = "viewer-\(UUID().uuidString.prefix(8))"
                let stranger = "stranger-\(UUID().uuidString.prefix(8))"
                let album = try await h.createAlbum(owner).albumID
                _ = try await h.client.call(AlbumAPI.addMember, AddMemberRequest(userID: owner, albumID: album, memberUserID: viewer, role: .viewer))
                let shown = try await h.registerFrame(owner).frame!.frameID
                let idle = try await h.registerFrame(owner, name: "Hall").frame!.frameID
                _ = try await h.client.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: owner, frameID: shown, albumIDs: [album]))
                _ = try await h.client.call(AlbumAPI.setFrameConfig, SetFrameConfigRequest(userID: owner, frameID: shown,
                                                                                            config: FrameConfig(intervalSeconds: 30, preferredFormat: "webp")))
                let file = try await h.upload(user: owner, albumID: album)
                #expect(try await eventually { try await h.photos(owner, album).count == 1 })

                func photo(_ kind: PrincipalKind, _ id: String) async throws -> AccessReply {
                    try await h.client.call(AlbumAPI.canViewPhoto, CanViewPhotoRequest(principal: Principal(kind: kind, id: id), fileID: file))
                }
                #expect(try await photo(.user, owner) == AccessReply(allowed: true, role: .unspecified))
                #expect(try await photo(.user, viewer) == AccessReply(allowed: true, role: .viewer))
                #expect(try await photo(.user, stranger).allowed == false)
                #expect(try await photo(.frame, shown).allowed)
                #expect(try await photo(.frame, idle).allowed == false)
                #expect(try await photo(.frame, "not-a-frame").allowed == false)
                #expect(try await h.status(AlbumAPI.canViewPhoto, CanViewPhotoRequest(principal: Principal(kind: .frame, id: "a/#"), fileID: file)) == .invalid)
                #expect(try await h.status(AlbumAPI.canViewPhoto, CanViewPhotoRequest(fileID: file)) == .invalid)

                func albumAccess(_ kind: PrincipalKind, _ id: String) async throws -> AccessReply {
                    try await h.client.call(AlbumAPI.canViewAlbum, CanViewAlbumRequest(principal: Principal(kind: kind, id: id), albumID: album))
                }
                #expect(try await albumAccess(.user, owner) == AccessReply(allowed: true, role: .owner))
                #expect(try await albumAccess(.user, viewer) == AccessReply(allowed: true, role: .viewer))
                #expect(try await albumAccess(.user, stranger).allowed == false)
                #expect(try await albumAccess(.frame, shown).allowed)
                #expect(try await albumAccess(.frame, idle).allowed == false)

                // What media learns instead of asking: the members with their roles, the frame's
                // screen, format and albums, the album holding the photo.
                var members: [AlbumMembersChanged] = []
                #expect(try await eventually {
                    members = try await eventsInStream(AlbumMembersChanged.self, jetStream: h.runtime.jetStream).filter { $0.albumID == album }
                    return members.count == 2
                })
                let latest = try #require(members.max { $0.revision < $1.revision })
                #expect(latest.ownerID == owner)
                #expect(latest.members == [AlbumMemberRole(userID: owner, role: .owner), AlbumMemberRole(userID: viewer, role: .viewer)])
                var frames: [DeviceAlbumsChanged] = []
                #expect(try await eventually {
                    frames = try await eventsInStream(DeviceAlbumsChanged.self, jetStream: h.runtime.jetStream).filter { $0.frameID == shown }
                    return frames.count == 3
                })
                let screen = try #require(frames.max { $0.revision < $1.revision })
                #expect((screen.width, screen.height, screen.format, screen.albumIDs) == (1280, 800, "webp", [album]))
                #expect(Set(frames.map(\.revision)).count == 3, "each change has its own revision")
                #expect(try await eventually {
                    try await eventsInStream(AlbumPhotoAdded.self, jetStream: h.runtime.jetStream)
                        .contains { $0.photo?.fileID == file && $0.photo?.albumID == album && $0.revision > 0 }
                })
            }
        }

        /// file.deleted takes the photo out of every album and tells the frames (photo_removed).
        @Test func deletedFileLeavesAlbumsAndFrames() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))"
                let album = try await h.createAlbum(owner).albumID
                let other = try await h.createAlbum(owner, "Other").albumID
                let file = try await h.upload(user: owner, albumID: album)
                #expect(try await eventually { try await h.photos(owner, album).count == 1 })
                _ = try await h.client.call(AlbumAPI.addAlbumPhoto, AddAlbumPhotoRequest(userID: owner, albumID: other, fileID: file))
                try await h.cacheReady(file)
                #expect(try await eventually {
                    try await h.runtime.postgres.query("SELECT 1 FROM album.album_pushes WHERE state = 'published'").count == 2
                })
                let frameClient = try h.frameClient(UUID().uuidString)
                try await frameClient.connect()
                defer { Task { await frameClient.disconnect() } }
                let topics = [FrameTopics.photoRemoved(album: album), FrameTopics.photoRemoved(album: other)]
                let seen = try await h.collect(frameClient, topics, after: {
                    try await h.publish(FileDeleted(eventID: UUID().uuidString.lowercased(), occurredAt: 3, userID: owner, fileID: file, ownerID: owner))
                }, until: { $0.count >= 2 })
                let removed = try seen.map { try $0.decode(PhotoRemovedMessage.self) }
                #expect(Set(removed.map(\.albumID)) == [album, other])
                #expect(removed.allSatisfy { $0.fileID == file && $0.reason == "file_deleted" })
                #expect(try await h.photos(owner, album).isEmpty)
                #expect(try await h.photos(owner, other).isEmpty)
            }
        }
    }
}

extension AlbumServiceSuite {
    @Suite struct KeyedLockTests {
        /// Holders of one key never overlap; other keys are not blocked.
        @Test func oneHolderPerKey() async throws {
            let lock = KeyedLock()
            let inside = Counter()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for n in 0..<40 {
                    group.addTask {
                        let key = n % 2 == 0 ? "a" : "b"
                        await lock.lock(key)
                        let now = await inside.enter(key)
                        #expect(now == 1, "two holders of \(key)")
                        try await Task.sleep(for: .milliseconds(2))
                        await inside.leave(key)
                        await lock.unlock(key)
                    }
                }
                try await group.waitForAll()
            }
            #expect(await inside.maxTotal == 2, "keys a and b were held at the same time")
        }

        actor Counter {
            var count: [String: Int] = [:]
            var maxTotal = 0
            func enter(_ key: String) -> Int {
                count[key, default: 0] += 1
                maxTotal = max(maxTotal, count.values.reduce(0, +))
                return count[key]!
            }
            func leave(_ key: String) { count[key, default: 0] -= 1 }
        }
    }
}

extension AlbumServiceSuite {
    @Suite struct FrameLifecycleTests {
        /// Register → list → rename/resize → a frame reads itself by its principal, not others.
        @Test func registerListUpdateAndSelfRead() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))"
                #expect(try await h.status(AlbumAPI.registerFrame, RegisterFrameRequest(userID: owner, name: "x", width: 0, height: 800)) == .invalid)
                #expect(try await h.status(AlbumAPI.registerFrame, RegisterFrameRequest(userID: owner, name: "", width: 800, height: 800)) == .invalid)
                let portrait = try await h.client.call(AlbumAPI.registerFrame, RegisterFrameRequest(userID: owner, name: "Desk", width: 600, height: 1024))
                #expect(portrait.frame?.orientation == .portrait)
                #expect(portrait.frame?.online == false)
                #expect(portrait.frame?.config?.intervalSeconds == 30)
                let other = try await h.registerFrame(owner).frame!.frameID
                let id = portrait.frame!.frameID
                let listed = try await h.client.call(AlbumAPI.listFrames, ListFramesRequest(userID: owner)).frames.map(\.frameID)
                #expect(listed == [id, other])
                #expect(try await h.client.call(AlbumAPI.listFrames, ListFramesRequest(userID: "nobody")).frames.isEmpty)

                let updated = try await h.client.call(AlbumAPI.updateFrame, UpdateFrameRequest(userID: owner, frameID: id, name: "Study",
                                                                                               width: 1920, height: 1080, orientation: .landscape))
                #expect(updated.frame?.name == "Study")
                #expect(updated.frame?.width == 1920 && updated.frame?.height == 1080)
                #expect(updated.frame?.orientation == .landscape)
                #expect(try await h.status(AlbumAPI.updateFrame, UpdateFrameRequest(userID: "nobody", frameID: id, name: "Mine")) == .notFound)

                let me = try await h.client.call(AlbumAPI.getFrame, GetFrameRequest(frameID: id, principal: Principal(kind: .frame, id: id)))
                #expect(me.frame?.name == "Study")
                #expect(try await h.status(AlbumAPI.getFrame, GetFrameRequest(frameID: other, principal: Principal(kind: .frame, id: id))) == .notFound)
            }
        }
    }
}
