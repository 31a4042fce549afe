import AlbumService
import Foundation
import FramecastTesting
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import MQTT
import Postgres
import Testing
import Wire

/// Playlists and rotation schedules through the gateway's HTTP routes, served by the real media
/// and album services (NATS, PostgreSQL, mosquitto); a schedule reaches an MQTT client
/// subscribed the way a frame is.
@Suite struct PlaylistRouteTests {
    @Test func playlistsCRUDVisibilityAndResolvedOrderOverHTTP() async throws {
        let h = try await GatewayHarness.make()
        let broker = try ServerProcess(.mosquitto)
        try await h.run(album: broker) { client in
            let bobEmail = "bob-\(UUID().uuidString.prefix(6).lowercased())@example.com"
            let (alice, aliceToken) = try await client.signUp()
            let (_, bob) = try await client.signUp(bobEmail)
            let (_, carol) = try await client.signUp()

            let (_, album) = try await client.json("/api/v1/albums", .post, token: aliceToken, body: ["name": "Family"])
            let albumID = try #require(album["album_id"] as? String)
            #expect(try await client.json("/api/v1/albums/\(albumID)/members", .post, token: aliceToken,
                                          body: ["email": bobEmail, "role": "viewer"]).0.status == .created)
            // Two photos in the album, rendered one after the other (no EXIF: ordered by upload).
            var photos: [String] = []
            for seed in [UInt8(1), 2] {
                let (uploaded, file) = try await client.upload(smallPNG(seed), token: aliceToken, name: "p\(seed).png",
                                                               metadata: "{\"album_id\": \"\(albumID)\"}")
                #expect(uploaded.status == .created)
                let id = try #require(file["file_id"] as? String)
                #expect(try await eventually(timeout: .seconds(60)) {
                    try await client.json("/api/v1/photos/\(id)", token: aliceToken).0.status == .ok
                }, "media rendered \(id)")
                photos.append(id)
            }
            let (_, carolFile) = try await client.upload(smallPNG(3), token: carol, name: "c.png")
            let carolPhoto = try #require(carolFile["file_id"] as? String)
            let (_, carolAlbum) = try await client.json("/api/v1/albums", .post, token: carol, body: ["name": "Carol's"])
            let carolAlbumID = try #require(carolAlbum["album_id"] as? String)

            // Create: 201 with the definition; GET resolves to the photos in the chosen order.
            let (created, playlist) = try await client.json("/api/v1/playlists", .post, token: aliceToken,
                                                            body: ["name": "Summer", "album_ids": [albumID], "order": "oldest"])
            #expect(created.status == .created)
            let playlistID = try #require(playlist["playlist_id"] as? String)
            #expect(playlist["order"] as? String == "oldest")
            #expect(playlist["album_ids"] as? [String] == [albumID])
            #expect(playlist["photo_ids"] == nil, "only GET of one playlist resolves")
            let (got, oldest) = try await client.json("/api/v1/playlists/\(playlistID)", token: aliceToken)
            #expect(got.status == .ok)
            #expect(oldest["photo_ids"] as? [String] == photos)
            let (patched, newest) = try await client.json("/api/v1/playlists/\(playlistID)", .patch, token: aliceToken,
                                                          body: ["order": "newest", "name": "Summer 2026"])
            #expect(patched.status == .ok)
            #expect(newest["name"] as? String == "Summer 2026")
            #expect(try await client.json("/api/v1/playlists/\(playlistID)", token: aliceToken).1["photo_ids"] as? [String]
                    == photos.reversed())
            let shuffled = try await client.json("/api/v1/playlists/\(playlistID)", .patch, token: aliceToken, body: ["order": "shuffle"])
            #expect(shuffled.1["order"] as? String == "shuffle")
            #expect(Set(try await client.json("/api/v1/playlists/\(playlistID)", token: aliceToken).1["photo_ids"] as? [String] ?? [])
                    == Set(photos))
            // Explicit photos only: just that one.
            let (_, explicit) = try await client.json("/api/v1/playlists", .post, token: aliceToken,
                                                      body: ["name": "Best", "file_ids": [photos[1]]])
            #expect(explicit["order"] as? String == "newest", "the default order")
            let explicitID = try #require(explicit["playlist_id"] as? String)
            #expect(try await client.json("/api/v1/playlists/\(explicitID)", token: aliceToken).1["photo_ids"] as? [String] == [photos[1]])
            let (_, list) = try await client.json("/api/v1/playlists", token: aliceToken)
            #expect((list["playlists"] as? [[String: Any]])?.compactMap { $0["playlist_id"] as? String } == [explicitID, playlistID])

            // Bad input: 400.
            for body: [String: Any] in [
                ["name": ""], ["name": String(repeating: "x", count: 201)], ["name": "x", "order": "sideways"],
                ["name": "x", "album_ids": ["not-a-uuid"]], ["name": "x", "file_ids": ["a/b#"]], ["album_ids": [albumID]],
            ] {
                let (response, _) = try await client.json("/api/v1/playlists", .post, token: aliceToken, body: body)
                #expect(response.status == .badRequest, "\(body)")
            }
            #expect(try await client.json("/api/v1/playlists/\(playlistID)", .patch, token: aliceToken,
                                          body: ["order": "backwards"]).0.status == .badRequest)

            // Others' albums and photos: 404, as if they did not exist.
            #expect(try await client.json("/api/v1/playlists", .post, token: aliceToken,
                                          body: ["name": "x", "album_ids": [carolAlbumID]]).0.status == .notFound)
            #expect(try await client.json("/api/v1/playlists/\(playlistID)", .patch, token: aliceToken,
                                          body: ["file_ids": [carolPhoto]]).0.status == .notFound)
            // A stranger sees nothing of alice's playlist.
            #expect(try await client.json("/api/v1/playlists/\(playlistID)", token: carol).0.status == .notFound)
            #expect(try await client.json("/api/v1/playlists/\(playlistID)", .patch, token: carol, body: ["name": "mine"]).0.status == .notFound)
            #expect(try await client.json("/api/v1/playlists/\(playlistID)", .delete, token: carol).0.status == .notFound)
            #expect((try await client.json("/api/v1/playlists", token: carol).1["playlists"] as? [[String: Any]])?.isEmpty == true)
            // A member may play the album, and alice's photo in it.
            let (bobCreated, bobPlaylist) = try await client.json("/api/v1/playlists", .post, token: bob,
                                                                  body: ["name": "Grandkids", "album_ids": [albumID], "file_ids": [photos[0]]])
            #expect(bobCreated.status == .created)
            let bobPlaylistID = try #require(bobPlaylist["playlist_id"] as? String)
            #expect(try await client.json("/api/v1/playlists/\(bobPlaylistID)", token: bob).1["photo_ids"] as? [String] == photos.reversed())

            // The rows media keeps.
            let rows = try await h.backend.postgres.query("""
                SELECT owner_id, name, play_order, array_to_string(album_ids, ',') AS albums, array_to_string(file_ids, ',') AS files
                FROM media.playlists WHERE playlist_id = $1::uuid
                """, [.text(playlistID)])
            #expect(rows.count == 1)
            #expect(try rows.first?.decode("owner_id", as: String.self) == alice)
            #expect(try rows.first?.decode("name", as: String.self) == "Summer 2026")
            #expect(try rows.first?.decode("play_order", as: String.self) == "shuffle")
            #expect(try rows.first?.decode("albums", as: String.self) == albumID)
            #expect(try rows.first?.decode("files", as: String.self) == "")

            // Delete: 204, then gone.
            #expect(try await client.json("/api/v1/playlists/\(playlistID)", .delete, token: aliceToken).0.status == .noContent)
            #expect(try await client.json("/api/v1/playlists/\(playlistID)", token: aliceToken).0.status == .notFound)
            #expect(try await h.backend.postgres.query("SELECT 1 FROM media.playlists WHERE playlist_id = $1::uuid",
                                                       [.text(playlistID)]).isEmpty)
        }
        broker.stop()
        await h.close()
    }

    @Test func aScheduleReachesTheFrameAsItsRetainedConfigOnce() async throws {
        let h = try await GatewayHarness.make()
        let broker = try ServerProcess(.mosquitto)
        try await h.run(album: broker) { client in
            let (alice, token) = try await client.signUp()
            let (_, carol) = try await client.signUp()
            let (_, frame) = try await client.json("/api/v1/frames", .post, token: token, body: ["name": "Kitchen", "width": 1024, "height": 600])
            let frameID = try #require(frame["frame_id"] as? String)
            let frameToken = try #require(frame["frame_token"] as? String)
            let (_, playlist) = try await client.json("/api/v1/playlists", .post, token: token, body: ["name": "Morning"])
            let playlistID = try #require(playlist["playlist_id"] as? String)
            let path = "/api/v1/frames/\(frameID)/schedule"
            let schedule: [String: Any] = ["entries": [
                ["playlist_id": playlistID, "days": ["mon", "tue", "wed", "thu", "fri"], "start_time": "07:00", "end_time": "22:00",
                 "interval_seconds": 60],
                ["days": ["sat", "sun"], "interval_seconds": 300, "shuffle": true],
            ]]

            // Bad input: 400; someone else's frame or playlist: 404.
            for entry: [String: Any] in [
                ["interval_seconds": 4], ["interval_seconds": 86_401], ["interval_seconds": 60, "days": ["funday"]],
                ["interval_seconds": 60, "start_time": "24:00", "end_time": "06:00"],
                ["interval_seconds": 60, "start_time": "07:00"], ["interval_seconds": 60, "start_time": "7pm", "end_time": "11pm"],
                ["interval_seconds": 60, "playlist_id": playlistID, "album_id": playlistID], ["days": ["mon"]],
            ] {
                #expect(try await client.json(path, .put, token: token, body: ["entries": [entry]]).0.status == .badRequest, "\(entry)")
            }
            #expect(try await client.json(path, .put, token: token, body: ["entries": []]).0.status == .badRequest)
            #expect(try await client.json(path, .put, token: carol, body: schedule).0.status == .notFound)
            #expect(try await client.json(path, token: carol).0.status == .notFound)
            #expect(try await client.json(path, .delete, token: carol).0.status == .notFound)
            #expect(try await client.json(path, token: frameToken).0.status == .unauthorized, "the owner's routes, not the frame's")
            let (_, carolPlaylist) = try await client.json("/api/v1/playlists", .post, token: carol, body: ["name": "Carol's"])
            #expect(try await client.json(path, .put, token: token, body: ["entries": [
                ["playlist_id": carolPlaylist["playlist_id"] as? String ?? "", "interval_seconds": 60]]]).0.status == .notFound)
            #expect((try await client.json(path, token: token).1["entries"] as? [Any])?.isEmpty == true, "no schedule yet")

            // The frame, subscribed to its topics, receives the schedule in its config.
            let frameClient = try MQTTClient(configuration: MQTTConfiguration(
                host: broker.host, port: broker.port, clientID: "frame-\(UUID().uuidString.prefix(6))",
                username: broker.mqttTester.user, password: broker.mqttTester.password), logger: quietLogger)
            try await frameClient.connect()
            let inbox = Inbox()
            try await frameClient.withMessages { messages in
                _ = try await frameClient.subscribe([("frames/\(frameID)/config", .atLeastOnce)])
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { for await message in messages { await inbox.add(message) } }

                    let (set, stored) = try await client.json(path, .put, token: token, body: schedule)
                    #expect(set.status == .ok)
                    #expect((stored["entries"] as? [[String: Any]])?.first?["days"] as? [String] == ["mon", "tue", "wed", "thu", "fri"])
                    #expect((stored["entries"] as? [[String: Any]])?.last?["days"] as? [String] == ["sun", "sat"])
                    #expect(try await eventually { await inbox.count >= 1 }, "the frame got its config")
                    let live = try #require(await inbox.messages.first)
                    let config = try Self.config(live)
                    let slots = try #require(config.schedule)
                    #expect(slots.count == 2)
                    #expect(slots[0] == ScheduleSlotMessage(days: ["mon", "tue", "wed", "thu", "fri"], startTime: "07:00", endTime: "22:00",
                                                            intervalSeconds: 60, shuffle: false, playlistID: playlistID, albumID: nil))
                    #expect(slots[1] == ScheduleSlotMessage(days: ["sun", "sat"], startTime: nil, endTime: nil, intervalSeconds: 300,
                                                            shuffle: true, playlistID: nil, albumID: nil))
                    #expect(config.intervalSeconds == 30, "the frame's own settings stay")

                    // The rows: media's slots, album's applied revision.
                    let slotRows = try await h.backend.postgres.query("""
                        SELECT position, owner_id, interval_seconds, array_to_string(days_of_week, ',') AS days, start_time, revision
                        FROM media.rotation_schedules WHERE frame_id = $1::uuid ORDER BY position
                        """, [.text(frameID)])
                    #expect(try slotRows.map { try $0.decode("interval_seconds", as: Int32.self) } == [60, 300])
                    #expect(try slotRows.map { try $0.decode("days", as: String.self) } == ["1,2,3,4,5", "0,6"])
                    #expect(try slotRows.first?.decode("owner_id", as: String.self) == alice)
                    let revision: Int64 = try #require(try slotRows.first?.decode("revision"))
                    let applied = try await Self.frameRow(h, frameID)
                    #expect(applied.revision == revision)

                    // A playlist a schedule plays cannot be deleted.
                    #expect(try await client.json("/api/v1/playlists/\(playlistID)", .delete, token: token).0.status == .conflict)

                    // The same event again (a republish past JetStream's duplicate window has a new
                    // message id): handled, and it changes nothing: no row change, no publish.
                    let event = try #require(try await eventsInStream(MediaScheduleChanged.self, jetStream: h.runtime.jetStream).last)
                    #expect(event.frameID == frameID && event.revision == revision)
                    let again = UUID().uuidString.lowercased()
                    _ = try await h.runtime.jetStream.publish(MediaScheduleChanged.subject, payload: event.wireBytes(), messageID: again)
                    #expect(try await eventually {
                        try await !h.backend.postgres.query("SELECT 1 FROM album.processed_events WHERE event_id = $1", [.text(again)]).isEmpty
                    }, "album handled the repeated event")
                    try await Task.sleep(for: .milliseconds(500))
                    #expect(try await Self.frameRow(h, frameID) == applied)
                    #expect(await inbox.count == 1, "no second config was published")

                    // The frame's own settings change: the schedule stays in the config.
                    #expect(try await client.json("/api/v1/frames/\(frameID)/config", .put, token: token,
                                                  body: ["interval_seconds": 45]).0.status == .ok)
                    #expect(try await eventually { await inbox.count >= 2 })
                    let merged = try Self.config(try #require(await inbox.messages.last))
                    #expect(merged.intervalSeconds == 45)
                    #expect(merged.schedule == config.schedule)
                    group.cancelAll()
                }
            }
            await frameClient.disconnect()

            // A frame connecting later still gets it: retained.
            let late = try await Self.retainedConfig(broker, frameID)
            #expect(late?.retain == true)
            #expect(try late.map(Self.config)?.schedule?.count == 2)
            #expect((try await client.json(path, token: token).1["entries"] as? [[String: Any]])?.count == 2)

            // Deleting the schedule takes it out of the retained config.
            #expect(try await client.json(path, .delete, token: token).0.status == .noContent)
            #expect(try await eventually {
                guard let retained = try await Self.retainedConfig(broker, frameID) else { return false }
                return try Self.config(retained).schedule == nil
            }, "the retained config without a schedule")
            #expect(try await h.backend.postgres.query("SELECT 1 FROM media.rotation_schedules WHERE frame_id = $1::uuid",
                                                       [.text(frameID)]).isEmpty)
            #expect(try await client.json(path, .delete, token: token).0.status == .notFound)
            #expect(try await client.json("/api/v1/playlists/\(playlistID)", .delete, token: token).0.status == .noContent)
        }
        broker.stop()
        await h.close()
    }

    static func config(_ message: MQTTMessage) throws -> FrameConfigMessage {
        try FrameTopics.decode(FrameConfigMessage.self, from: message.payload)
    }

    struct FrameRow: Equatable {
        let revision: Int64
        let configSeq: Int64
        let schedule: [UInt8]
    }

    static func frameRow(_ h: GatewayHarness, _ frameID: String) async throws -> FrameRow {
        let row = try #require(try await h.backend.postgres.query(
            "SELECT schedule_revision, config_seq, schedule FROM album.frames WHERE frame_id = $1::uuid", [.text(frameID)]).first)
        return FrameRow(revision: try row.decode("schedule_revision"), configSeq: try row.decode("config_seq"),
                        schedule: try row.decode("schedule"))
    }

    /// What a frame connecting now receives first on its config topic (nil within 10 s).
    static func retainedConfig(_ broker: ServerProcess, _ frameID: String) async throws -> MQTTMessage? {
        let client = try MQTTClient(configuration: MQTTConfiguration(
            host: broker.host, port: broker.port, clientID: "late-\(UUID().uuidString.prefix(6))",
            username: broker.mqttTester.user, password: broker.mqttTester.password), logger: quietLogger)
        try await client.connect()
        let message = try await client.withMessages { messages -> MQTTMessage? in
            _ = try await client.subscribe([("frames/\(frameID)/config", .atLeastOnce)])
            return try await withThrowingTaskGroup(of: MQTTMessage?.self) { group in
                group.addTask { for await m in messages { return m }; return nil }
                group.addTask { try await Task.sleep(for: .seconds(10)); return nil }
                let first = try await group.next() ?? nil
                group.cancelAll()
                return first
            }
        }
        await client.disconnect()
        return message
    }
}

/// Messages an MQTT client received, in order.
actor Inbox {
    private(set) var messages: [MQTTMessage] = []
    var count: Int { messages.count }
    func add(_ message: MQTTMessage) { messages.append(message) }
}

/// A small RGB PNG without EXIF, different for each seed (so uploads do not dedup).
func smallPNG(_ seed: UInt8) -> [UInt8] {
    let (width, height) = (64, 48)
    let rows = (0..<height).map { y in (0..<width * 3).map { x in UInt8(truncatingIfNeeded: x &* 3 &+ y &* 5 &+ Int(seed) &* 40) } }
    return PNGWriter.image(width: width, height: height, bitDepth: 8, colorType: 2, rows: rows)
}
