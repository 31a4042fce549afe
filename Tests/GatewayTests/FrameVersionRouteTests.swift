import AlbumService
import Foundation
import FramecastTesting
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import MQTT
import Testing
import Wire

/// Versions for frames across the real gateway, storage, album and media services: new
/// screens rendered in the background, on-demand downloads, sizes validated, cached reports
/// and frame deletion.
@Suite struct FrameVersionRouteTests {
    @Test func newScreensOnDemandSizesCacheAndFrameDeletionOverHTTP() async throws {
        let h = try await GatewayHarness.make()
        let broker = try ServerProcess(.mosquitto)
        let photos = [try Photos.bytes(try Photos.plasma("Kite")), try Photos.bytes(try Photos.plasma("ColorfulCups"))]
        try await h.run(album: broker) { client in
            let (_, alice) = try await client.signUp()
            let (_, album) = try await client.json("/api/v1/albums", .post, token: alice, body: ["name": "Family"])
            let albumID = try #require(album["album_id"] as? String)
            var files: [String] = []
            for photo in photos {
                let (_, uploaded) = try await client.upload(photo, token: alice, metadata: "{\"album_id\": \"\(albumID)\"}")
                files.append(try #require(uploaded["file_id"] as? String))
            }
            func sizes(_ file: String) async throws -> Set<String> {
                let (response, body) = try await client.json("/api/v1/photos/\(file)", token: alice)
                guard response.status == .ok else { return [] }
                return Set(((body["versions"] as? [[String: Any]]) ?? []).compactMap { $0["size"] as? String })
            }
            for file in files { #expect(try await eventually(timeout: .seconds(60)) { try await sizes(file) == ["thumbnail", "hd"] }) }

            // Two frames with new screens subscribe: their versions appear without a new upload.
            var frames: [(id: String, token: String)] = []
            for (width, height) in [(1024, 600), (1080, 1920)] {
                let (_, frame) = try await client.json("/api/v1/frames", .post, token: alice,
                                                       body: ["name": "Frame \(width)", "width": width, "height": height])
                let id = try #require(frame["frame_id"] as? String)
                frames.append((id, try #require(frame["frame_token"] as? String)))
                #expect(try await client.json("/api/v1/frames/\(id)/albums", .put, token: alice,
                                              body: ["album_ids": [albumID]]).0.status == .ok)
            }
            let all: Set<String> = ["thumbnail", "hd", "frame:1024x600", "frame:1080x1920"]
            for file in files {
                #expect(try await eventually(timeout: .seconds(120)) { try await sizes(file) == all }, "\(file)")
            }
            let portrait = try await client.execute(uri: "/api/v1/files/download/\(files[0])?size=frame:1080x1920", method: .get,
                                                    headers: [.authorization: "Bearer \(frames[1].token)"])
            #expect(portrait.status == .ok)
            let portraitHeader = try await testImaging.probe(portrait.bytes)
            #expect((portraitHeader.width, portraitHeader.height) == (1080, 1920))

            // On demand: eight parallel downloads of a size nobody rendered get the same bytes.
            // Only a screen alice has is rendered on request: a third frame, showing no album.
            #expect(try await client.json("/api/v1/frames", .post, token: alice,
                                          body: ["name": "Frame 800", "width": 800, "height": 480]).0.status == .created)
            let uri = "/api/v1/files/download/\(files[1])?size=frame:800x480"
            let bodies = try await withThrowingTaskGroup(of: (HTTPResponse.Status, [UInt8]).self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        let response = try await client.execute(uri: uri, method: .get, headers: [.authorization: "Bearer \(alice)"])
                        return (response.status, response.bytes)
                    }
                }
                var results: [(HTTPResponse.Status, [UInt8])] = []
                for try await result in group { results.append(result) }
                return results
            }
            #expect(bodies.allSatisfy { $0.0 == .ok })
            #expect(Set(bodies.map(\.1)).count == 1, "identical bytes")
            let onDemand = try await testImaging.probe(bodies[0].1)
            #expect((onDemand.width, onDemand.height) == (800, 480))

            // Sizes are validated.
            for size in ["frame:0x0", "frame:99999x10", "frame:abc", "huge", "frame:800x480&format=gif"] {
                let response = try await client.execute(uri: "/api/v1/files/download/\(files[1])?size=\(size)", method: .get,
                                                        headers: [.authorization: "Bearer \(alice)"])
                #expect(response.status == .badRequest, "\(size)")
            }

            // The portrait frame reports the first photo cached: cached_for_frames shows it.
            let frameClient = try MQTTClient(configuration: MQTTConfiguration(host: broker.host, port: broker.port,
                                                                              clientID: "frame-\(frames[1].id)", username: broker.mqttTester.user,
                                                                              password: broker.mqttTester.password), logger: quietLogger)
            try await frameClient.connect()
            try await frameClient.publish(FrameTopics.status(frame: frames[1].id),
                                          payload: FrameTopics.encode(FrameStatusMessage(status: "cached", fileIDs: [files[0]])),
                                          qos: .atLeastOnce)
            await frameClient.disconnect()
            func cachedFor(_ file: String) async throws -> [String] {
                let (_, body) = try await client.json("/api/v1/photos/\(file)", token: alice)
                return body["cached_for_frames"] as? [String] ?? []
            }
            #expect(try await eventually(timeout: .seconds(60)) { try await cachedFor(files[0]) == [frames[1].id] })
            #expect(try await cachedFor(files[1]).isEmpty)

            // Deleting it: its cache rows and its screen's versions go; the other screen's stay.
            #expect(try await client.json("/api/v1/frames/\(frames[1].id)", .delete, token: alice).0.status == .noContent)
            #expect(try await eventually(timeout: .seconds(60)) {
                let cached = try await cachedFor(files[0])
                let remaining = try await sizes(files[0])
                return cached.isEmpty && remaining == ["thumbnail", "hd", "frame:1024x600"]
            })
            #expect(try await sizes(files[1]) == ["thumbnail", "hd", "frame:1024x600", "frame:800x480"])
        }
        broker.stop()
        await h.close()
    }
}
