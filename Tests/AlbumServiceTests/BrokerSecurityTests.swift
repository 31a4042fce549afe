import Foundation
import FramecastTesting
@testable import AlbumService
@testable import MQTT
import Postgres
import ServiceKit
import Testing
import Wire

/// The frame broker's security, against a real mosquitto with the dynamic-security plugin the
/// album service administers: no anonymous client, every frame on its own topics only, album
/// changes and deletions effective at once, credentials rotated, broker and database in line.
extension AlbumServiceSuite {
    @Suite struct BrokerSecurityTests {
        /// A frame's own connection, with the credentials its registration returned.
        static func frameConnection(_ h: AlbumHarness, _ reply: RegisterFrameReply, password: String? = nil,
                                    clientID: String? = nil) throws -> MQTTClient {
            let mqtt = try #require(reply.mqtt)
            return try MQTTClient(configuration: MQTTConfiguration(
                host: h.broker.host, port: h.broker.port, clientID: clientID ?? mqtt.username,
                username: mqtt.username, password: password ?? mqtt.password, keepAlive: .seconds(5),
                reconnectDelay: .seconds(30), reconnectDelayMax: .seconds(30), connectTimeout: .seconds(5)), logger: quietLogger)
        }

        static func refused(_ client: MQTTClient) async -> Bool {
            do {
                try await client.connect()
                await client.disconnect()
                return false
            } catch let error as MQTTError {
                return error.code == .connectionRefused
            } catch {
                return false
            }
        }

        @Test("an anonymous client, or one with a wrong password, is refused")
        func anonymousRefused() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            let anonymous = try MQTTClient(configuration: MQTTConfiguration(
                host: h.broker.host, port: h.broker.port, clientID: "anon-\(UUID().uuidString.prefix(6))"), logger: quietLogger)
            #expect(await Self.refused(anonymous))
            let guessing = try MQTTClient(configuration: MQTTConfiguration(
                host: h.broker.host, port: h.broker.port, clientID: "album-guess", username: "album", password: "album"),
                logger: quietLogger)
            #expect(await Self.refused(guessing))
        }

        @Test("frame A reads and writes only its own topics and the albums it shows; forged messages never reach frame B")
        func framesAreIsolated() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))"
                let album = try await h.createAlbum(owner).albumID
                let other = try await h.createAlbum(owner, "Other").albumID
                let a = try await h.registerFrame(owner, name: "A"), b = try await h.registerFrame(owner, name: "B")
                let frameA = try #require(a.frame?.frameID), frameB = try #require(b.frame?.frameID)
                _ = try await h.client.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: owner, frameID: frameA, albumIDs: [album]))
                _ = try await h.client.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: owner, frameID: frameB, albumIDs: [album]))

                // Another frame's client id is refused (no session takeover).
                #expect(await Self.refused(try Self.frameConnection(h, a, clientID: BrokerAdmin.username(frame: frameB))))

                let clientA = try Self.frameConnection(h, a)
                try await clientA.connect()
                defer { Task { await clientA.disconnect() } }
                let granted = try await clientA.subscribe([
                    (FrameTopics.sync(frame: frameA), .atLeastOnce), (FrameTopics.photoAdded(album: album), .atLeastOnce),
                    (FrameTopics.sync(frame: frameB), .atLeastOnce), (FrameTopics.command(frame: frameB), .atLeastOnce),
                    (FrameTopics.photoAdded(album: other), .atLeastOnce), ("#", .atLeastOnce), ("frames/+/sync", .atLeastOnce),
                    (FrameTopics.status(frame: frameA), .atLeastOnce),
                ])
                #expect(granted[0] != nil && granted[1] != nil, "its own sync and its album")
                #expect(granted[2...].allSatisfy { $0 == nil }, "another frame's topics, an album it does not show, wildcards: \(granted)")

                // Forgeries by A: B's sync (a huge seq), command and status, an album's photo_removed.
                let observer = try h.frameClient(frameB)
                try await observer.connect()
                defer { Task { await observer.disconnect() } }
                let forged: [(String, FrameSyncMessage?)] = [
                    (FrameTopics.sync(frame: frameB), FrameSyncMessage(frameID: frameB, seq: 9_000_000_000_000_000_000, albumIDs: [],
                                                                        photos: [], generatedAt: 0)),
                    (FrameTopics.command(frame: frameB), nil), (FrameTopics.status(frame: frameB), nil),
                    (FrameTopics.photoRemoved(album: album), nil), (FrameTopics.sync(frame: frameA), nil),
                ]
                let seen = try await h.drain(observer, forged.map(\.0), marker: "test/\(frameB)/marker") {
                    for (topic, sync) in forged {
                        let payload = sync.map(FrameTopics.encode) ?? Array(#"{"v":1,"command":"sleep","id":"x","status":"offline"}"#.utf8)
                        try? await clientA.publish(topic, payload: payload, qos: .atLeastOnce)
                    }
                }
                let forgedPayloads = seen.filter { !$0.retain }
                #expect(forgedPayloads.isEmpty, "forged messages delivered: \(forgedPayloads.map(\.topic))")
                // B's retained sync is still the album service's.
                let retained = seen.filter { $0.topic == FrameTopics.sync(frame: frameB) }
                #expect(try retained.allSatisfy { try $0.decode(FrameSyncMessage.self).seq < 1_000_000 })

                // What A may publish arrives: its status.
                let own = try await h.drain(observer, [FrameTopics.status(frame: frameA)], marker: "test/\(frameA)/marker") {
                    try await clientA.publish(FrameTopics.status(frame: frameA), payload: Array(#"{"v":1,"status":"online"}"#.utf8),
                                              qos: .atLeastOnce)
                }
                #expect(own.count == 1)
            }
        }

        @Test("a frame that stops showing an album stops receiving it at once, before its new sync")
        func unsubscribedAlbumStopsDelivery() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))"
                let album = try await h.createAlbum(owner).albumID
                let reply = try await h.registerFrame(owner)
                let frame = try #require(reply.frame?.frameID)
                _ = try await h.client.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: owner, frameID: frame, albumIDs: [album]))
                let client = try Self.frameConnection(h, reply)
                try await client.connect()
                defer { Task { await client.disconnect() } }
                let tester = try h.frameClient(frame)
                try await tester.connect()
                defer { Task { await tester.disconnect() } }
                let topic = FrameTopics.photoAdded(album: album)

                let before = try await h.collect(client, [topic], after: {
                    try await tester.publish(topic, payload: Array("one".utf8), qos: .atLeastOnce)
                }, until: { $0.count >= 1 })
                #expect(before.map(\.payload) == [Array("one".utf8)])

                _ = try await h.client.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: owner, frameID: frame, albumIDs: []))
                // The subscription is still in place on the frame's side: nothing more arrives on it.
                let after = try await h.collect(client, [topic], timeout: .seconds(2), after: {
                    try await tester.publish(topic, payload: Array("two".utf8), qos: .atLeastOnce)
                }, until: { $0.contains { $0.payload == Array("two".utf8) } })
                #expect(!after.contains { $0.payload == Array("two".utf8) })
                // A new subscription to it is refused.
                #expect(try await client.subscribe([(topic, .atLeastOnce)]) == [nil])
            }
        }

        @Test("a deleted frame's credentials are refused and its connection dropped; rotated credentials replace the old ones")
        func deletionAndRotation() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))"
                let reply = try await h.registerFrame(owner)
                let frame = try #require(reply.frame?.frameID)

                // Rotation: the connected frame is dropped, the old password refused, the new one works.
                let connected = try Self.frameConnection(h, reply)
                try await connected.connect()
                let rotated = try await h.client.call(AlbumAPI.rotateFrameCredentials,
                                                      RotateFrameCredentialsRequest(userID: owner, frameID: frame))
                let newPassword = try #require(rotated.mqtt?.password)
                #expect(newPassword != reply.mqtt?.password)
                #expect(try await eventually { !connected.isConnected })
                await connected.disconnect()
                #expect(await Self.refused(try Self.frameConnection(h, reply)))
                let renewed = try Self.frameConnection(h, reply, password: newPassword)
                try await renewed.connect()
                // Only the owner rotates.
                #expect(try await h.status(AlbumAPI.rotateFrameCredentials,
                                           RotateFrameCredentialsRequest(userID: "someone-else", frameID: frame)) == .notFound)

                // Deletion: the connection drops and the credentials are refused from then on.
                _ = try await h.client.call(AlbumAPI.deleteFrame, DeleteFrameRequest(userID: owner, frameID: frame))
                #expect(try await eventually { !renewed.isConnected })
                await renewed.disconnect()
                #expect(await Self.refused(try Self.frameConnection(h, reply, password: newPassword)))
            }
        }

        @Test("after a restart the album service brings the broker in line with the database")
        func reconcileAfterRestart() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            let owner = "owner-\(UUID().uuidString.prefix(8))"
            let (kept, gone, album) = try await h.running { _ in
                let album = try await h.createAlbum(owner).albumID
                let kept = try await h.registerFrame(owner, name: "kept"), gone = try await h.registerFrame(owner, name: "gone")
                _ = try await h.client.call(AlbumAPI.setFrameAlbums,
                                            SetFrameAlbumsRequest(userID: owner, frameID: kept.frame!.frameID, albumIDs: [album]))
                return (kept, gone, album)
            }
            // While the service is down the database changes behind the broker's back.
            let keptID = try #require(kept.frame?.frameID)
            _ = try await h.runtime.postgres.execute("DELETE FROM album.frames WHERE frame_id = $1::uuid", [.text(try #require(gone.frame?.frameID))])
            _ = try await h.runtime.postgres.execute("DELETE FROM album.frame_albums WHERE frame_id = $1::uuid", [.text(keptID)])
            try await h.running { service in
                // The deleted frame's identity is removed; the kept frame's role loses the album.
                #expect(try await eventually(timeout: .seconds(20)) {
                    await Self.refused(try Self.frameConnection(h, gone))
                })
                let client = try Self.frameConnection(h, kept)
                try await client.connect()
                defer { Task { await client.disconnect() } }
                #expect(try await eventually(timeout: .seconds(20)) {
                    try await client.subscribe([(FrameTopics.photoAdded(album: album), .atLeastOnce)]) == [nil]
                })
                #expect(try await client.subscribe([(FrameTopics.sync(frame: keptID), .atLeastOnce)]) != [nil])
                _ = service
            }
        }

        @Test("a frame registered with its albums receives them from the start; an album its owner cannot see, or a bad id, registers nothing")
        func registrationWithAlbums() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))", stranger = "stranger-\(UUID().uuidString.prefix(8))"
                let album = try await h.createAlbum(owner).albumID
                let foreign = try await h.createAlbum(stranger, "Not yours").albumID
                let reply = try await h.client.call(AlbumAPI.registerFrame, RegisterFrameRequest(
                    userID: owner, name: "Hall", width: 1024, height: 600, albumIDs: [album, album]))
                let frame = try #require(reply.frame)
                #expect(frame.albumIDs == [album], "the album, once")

                // Its own credentials may use the album at once, and its first sync names it.
                let client = try Self.frameConnection(h, reply)
                try await client.connect()
                defer { Task { await client.disconnect() } }
                let seen = try await h.collect(client, [FrameTopics.sync(frame: frame.frameID)], after: {
                    let granted = try await client.subscribe([(FrameTopics.photoAdded(album: album), .atLeastOnce),
                                                              (FrameTopics.photoAdded(album: foreign), .atLeastOnce)])
                    #expect(granted[0] != nil && granted[1] == nil, "its album only: \(granted)")
                }, until: { $0.contains { $0.topic == FrameTopics.sync(frame: frame.frameID) } })
                let sync = try #require(seen.first { $0.topic == FrameTopics.sync(frame: frame.frameID) })
                #expect(try sync.decode(FrameSyncMessage.self).albumIDs == [album])

                // Refused registrations leave no row (and so no broker identity) behind.
                #expect(try await h.status(AlbumAPI.registerFrame, RegisterFrameRequest(
                    userID: owner, name: "Foreign", width: 800, height: 480, albumIDs: [foreign])) == .notFound)
                #expect(try await h.status(AlbumAPI.registerFrame, RegisterFrameRequest(
                    userID: owner, name: "Bad", width: 800, height: 480, albumIDs: ["not-an-id"])) != .ok)
                #expect(try await h.status(AlbumAPI.registerFrame, RegisterFrameRequest(
                    userID: owner, name: "Many", width: 800, height: 480,
                    albumIDs: (0...100).map { _ in UUID().uuidString.lowercased() })) == .invalid)
                let rows = try await h.runtime.postgres.query("SELECT name FROM album.frames WHERE owner_id = $1", [.text(owner)])
                #expect(try rows.map { try $0.decode("name", as: String.self) } == ["Hall"])
            }
        }

        @Test("a registration while the broker is unreachable answers unavailable and leaves no frame behind")
        func registrationWithoutBroker() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                h.broker.kill()
                let owner = "owner-\(UUID().uuidString.prefix(8))"
                #expect(try await h.status(AlbumAPI.registerFrame,
                                           RegisterFrameRequest(userID: owner, name: "Hall", width: 800, height: 480)) == .unavailable)
                let rows = try await h.runtime.postgres.query("SELECT count(*)::bigint AS n FROM album.frames WHERE owner_id = $1", [.text(owner)])
                #expect(try rows.first?.decode("n", as: Int64.self) == 0)
                try h.broker.start()
            }
        }
    }
}
