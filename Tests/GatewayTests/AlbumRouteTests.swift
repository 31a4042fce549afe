import AlbumService
import Foundation
import FramecastTesting
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import MQTT
import Testing

/// Albums, members and frames through the gateway's HTTP routes, served by the real album
/// service (NATS, PostgreSQL, mosquitto).
@Suite struct AlbumRouteTests {
    @Test func albumsMembersRolesAndFramesOverHTTP() async throws {
        let h = try await GatewayHarness.make()
        let broker = try ServerProcess(.mosquitto)
        let photo = try Photos.bytes(try Photos.plasma("Kite"))
        let other = try Photos.bytes(try Photos.plasma("FallenLeaf"))
        try await h.run(album: broker) { client in
            let bobEmail = "bob-\(UUID().uuidString.prefix(6).lowercased())@example.com"
            let (_, alice) = try await client.signUp()
            let (_, bob) = try await client.signUp(bobEmail)
            let (_, carol) = try await client.signUp()

            let (created, album) = try await client.json("/api/v1/albums", .post, token: alice, body: ["name": "Family"])
            #expect(created.status == .created)
            let albumID = try #require(album["album_id"] as? String)
            #expect(album["role"] as? String == "owner")
            let (_, list) = try await client.json("/api/v1/albums", token: alice)
            #expect((list["albums"] as? [[String: Any]])?.contains { $0["album_id"] as? String == albumID } == true)

            // Members by e-mail; an unknown address is 404, a bad role 400.
            let (added, member) = try await client.json("/api/v1/albums/\(albumID)/members", .post, token: alice,
                                                        body: ["email": bobEmail.uppercased(), "role": "viewer"])
            #expect(added.status == .created)
            #expect(member["role"] as? String == "viewer")
            #expect(try await client.json("/api/v1/albums/\(albumID)/members", .post, token: alice,
                                          body: ["email": "nobody@example.com", "role": "viewer"]).0.status == .notFound)
            #expect(try await client.json("/api/v1/albums/\(albumID)/members", .post, token: alice,
                                          body: ["email": bobEmail, "role": "king"]).0.status == .badRequest)

            // The owner adds a photo; the viewer may not; a stranger sees nothing.
            let (_, aliceFile) = try await client.upload(photo, token: alice)
            let fileID = try #require(aliceFile["file_id"] as? String)
            #expect(try await client.json("/api/v1/albums/\(albumID)/photos", .post, token: alice, body: ["file_id": fileID]).0.status == .created)
            let (_, bobFile) = try await client.upload(other, token: bob)
            let viewerAdd = try await client.json("/api/v1/albums/\(albumID)/photos", .post, token: bob,
                                                  body: ["file_id": try #require(bobFile["file_id"] as? String)])
            #expect(viewerAdd.0.status == .forbidden)
            let (_, photos) = try await client.json("/api/v1/albums/\(albumID)/photos", token: bob)
            #expect((photos["photos"] as? [[String: Any]])?.map { $0["file_id"] as? String } == [fileID])
            #expect(try await client.json("/api/v1/albums/\(albumID)", token: carol).0.status == .notFound)
            #expect(try await client.json("/api/v1/albums/\(albumID)/photos", token: carol).0.status == .notFound)

            // A frame: registered with its own token and MQTT details.
            let (registered, frame) = try await client.json("/api/v1/frames", .post, token: alice,
                                                            body: ["name": "Kitchen", "width": 1024, "height": 600])
            #expect(registered.status == .created)
            let frameID = try #require(frame["frame_id"] as? String)
            let frameToken = try #require(frame["frame_token"] as? String)
            let mqtt = try #require(frame["mqtt"] as? [String: Any])
            #expect(mqtt["port"] as? Int == broker.port)
            #expect(try await client.json("/api/v1/frames/\(frameID)", token: frameToken).0.status == .ok, "a frame reads itself")
            #expect(try await client.json("/api/v1/storage/files", token: frameToken).0.status == .unauthorized)

            // Only albums the owner can see; topic-breaking ids are refused.
            let (_, carolAlbum) = try await client.json("/api/v1/albums", .post, token: carol, body: ["name": "Carol's"])
            #expect(try await client.json("/api/v1/frames/\(frameID)/albums", .put, token: alice,
                                          body: ["album_ids": [carolAlbum["album_id"] as? String ?? ""]]).0.status == .notFound)
            #expect(try await client.json("/api/v1/frames/\(frameID)/albums", .put, token: alice,
                                          body: ["album_ids": ["a/b#"]]).0.status == .badRequest)

            // Subscribing publishes the frame's retained sync.
            let watcher = try MQTTClient(configuration: MQTTConfiguration(host: broker.host, port: broker.port,
                                                                         clientID: "watch-\(UUID().uuidString.prefix(6))",
                                                                         username: broker.mqttTester.user, password: broker.mqttTester.password),
                                         logger: quietLogger)
            try await watcher.connect()
            let (subscribed, _) = try await client.json("/api/v1/frames/\(frameID)/albums", .put, token: alice, body: ["album_ids": [albumID]])
            #expect(subscribed.status == .ok)
            let sync = try await watcher.withMessages { messages -> MQTTMessage? in
                _ = try await watcher.subscribe([("frames/\(frameID)/sync", .atLeastOnce)])
                return try await withThrowingTaskGroup(of: MQTTMessage?.self) { group in
                    group.addTask { for await m in messages { return m }; return nil }
                    group.addTask { try await Task.sleep(for: .seconds(15)); return nil }
                    let first = try await group.next() ?? nil
                    group.cancelAll()
                    return first
                }
            }
            let syncMessage = try #require(sync)
            #expect(syncMessage.retain)
            let syncJSON = try JSONSerialization.jsonObject(with: Data(syncMessage.payload)) as? [String: Any] ?? [:]
            #expect(syncJSON["v"] as? Int == 1)
            #expect((syncJSON["seq"] as? Int ?? 0) >= 1)
            await watcher.disconnect()

            // Commands get ids; unknown ones are 400.
            let (sent, command) = try await client.json("/api/v1/frames/\(frameID)/commands", .post, token: alice, body: ["command": "next"])
            #expect(sent.status == .accepted)
            #expect(UUID(uuidString: command["command_id"] as? String ?? "") != nil)
            #expect(try await client.json("/api/v1/frames/\(frameID)/commands", .post, token: alice,
                                          body: ["command": "self_destruct"]).0.status == .badRequest)
            #expect(try await client.json("/api/v1/frames/\(frameID)/commands", .post, token: carol,
                                          body: ["command": "next"]).0.status == .notFound)

            // The photo metadata document: versions rendered by media for the frame's screen.
            let (_, uploaded) = try await client.upload(try Photos.bytes(try Photos.plasma("BytheWater")), token: alice,
                                                        metadata: "{\"album_id\": \"\(albumID)\"}")
            let newID = try #require(uploaded["file_id"] as? String)
            var document: [String: Any] = [:]
            let rendered = try await eventually {
                let (response, body) = try await client.json("/api/v1/photos/\(newID)", token: alice)
                document = body
                return response.status == .ok && (body["versions"] as? [[String: Any]])?.count == 3
            }
            #expect(rendered, "thumbnail, hd and frame:1024x600: \(document)")
            let versions = (document["versions"] as? [[String: Any]]) ?? []
            #expect(Set(versions.compactMap { $0["size"] as? String }) == ["thumbnail", "hd", "frame:1024x600"])
            // A version's URL is its capability URL: signed, no token needed (CapabilityTests).
            let hdURL = versions.first { $0["size"] as? String == "hd" }?["url"] as? String ?? ""
            #expect(hdURL.hasPrefix("http://127.0.0.1:8080/c/") && hdURL.contains("/\(newID)/") && hdURL.hasSuffix(".jpg"), "\(hdURL)")
            #expect(try await client.json("/api/v1/photos/\(newID)", token: frameToken).0.status == .ok, "a subscribed frame reads it")
            #expect(try await client.json("/api/v1/photos/\(newID)", token: bob).0.status == .ok, "so does a member")
            let stranger = try await client.json("/api/v1/photos/\(newID)", token: carol)
            #expect(stranger.0.status == .notFound)
            let version = try await client.execute(uri: "/api/v1/files/download/\(newID)?size=frame:1024x600", method: .get,
                                                   headers: [.authorization: "Bearer \(frameToken)"])
            #expect(version.status == .ok)
            #expect(version.headers[.contentType] == "image/jpeg")
            let header = try await testImaging.probe(version.bytes)
            #expect((header.width, header.height) == (1024, 600))
            #expect(try await client.execute(uri: "/api/v1/files/download/\(newID)?size=hd", method: .get,
                                             headers: [.authorization: "Bearer \(carol)"]).status == .notFound)

            // Deleting the frame revokes its token.
            #expect(try await client.json("/api/v1/frames/\(frameID)", .delete, token: alice).0.status == .noContent)
            #expect(try await client.json("/api/v1/frames/\(frameID)", token: frameToken).0.status == .unauthorized)
        }
        broker.stop()
        await h.close()
    }
}

/// A frame's credentials through the gateway: rotation replaces the token and the MQTT password
/// at once; deletion revokes both.
@Suite struct FrameCredentialRouteTests {
    static func connects(_ broker: ServerProcess, _ mqtt: [String: Any]) async throws -> Bool {
        let user = try #require(mqtt["username"] as? String)
        let client = try MQTTClient(configuration: MQTTConfiguration(
            host: broker.host, port: broker.port, clientID: user, username: user, password: mqtt["password"] as? String,
            reconnectDelay: .seconds(30), reconnectDelayMax: .seconds(30), connectTimeout: .seconds(5)), logger: quietLogger)
        do {
            try await client.connect()
            await client.disconnect()
            return true
        } catch let error as MQTTError where error.code == .connectionRefused {
            return false
        }
    }

    @Test func rotationAndDeletionRevokeTheFramesCredentials() async throws {
        let h = try await GatewayHarness.make()
        let broker = try ServerProcess(.mosquitto)
        defer { broker.stop() }
        try await h.run(album: broker) { client in
            let (_, alice) = try await client.signUp()
            let (_, bob) = try await client.signUp()
            let (_, frame) = try await client.json("/api/v1/frames", .post, token: alice, body: ["name": "Hall", "width": 800, "height": 480])
            let frameID = try #require(frame["frame_id"] as? String)
            let oldToken = try #require(frame["frame_token"] as? String)
            let oldMQTT = try #require(frame["mqtt"] as? [String: Any])
            #expect(try await Self.connects(broker, oldMQTT))

            // Only the owner rotates; a stranger sees no such frame.
            #expect(try await client.json("/api/v1/frames/\(frameID)/credentials", .post, token: bob).0.status == .notFound)
            let (rotated, fresh) = try await client.json("/api/v1/frames/\(frameID)/credentials", .post, token: alice)
            #expect(rotated.status == .ok)
            #expect(fresh["frame_id"] as? String == frameID)
            let newToken = try #require(fresh["frame_token"] as? String)
            let newMQTT = try #require(fresh["mqtt"] as? [String: Any])
            #expect(newToken != oldToken)
            #expect(newMQTT["username"] as? String == oldMQTT["username"] as? String)
            #expect(newMQTT["password"] as? String != oldMQTT["password"] as? String)
            #expect(try await client.json("/api/v1/frames/\(frameID)", token: oldToken).0.status == .unauthorized)
            #expect(try await client.json("/api/v1/frames/\(frameID)", token: newToken).0.status == .ok)
            #expect(try await !Self.connects(broker, oldMQTT))
            #expect(try await Self.connects(broker, newMQTT))

            // Deleted: the token and the broker identity are gone.
            #expect(try await client.json("/api/v1/frames/\(frameID)", .delete, token: alice).0.status == .noContent)
            #expect(try await client.json("/api/v1/frames/\(frameID)", token: newToken).0.status == .unauthorized)
            #expect(try await !Self.connects(broker, newMQTT))
        }
    }
}
