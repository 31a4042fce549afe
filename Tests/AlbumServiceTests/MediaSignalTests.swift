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
    /// What album tells media about frames: their screens and photos (device.albums_changed),
    /// and what they reported cached (device.cache_reported).
    @Suite struct MediaSignalTests {
        /// Registering, subscribing, resizing and reconfiguring a frame each announce its screen,
        /// format, albums and their photos newest first.
        @Test func frameChangesAnnounceTheScreenAndItsPhotos() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))"
                let album = try await h.createAlbum(owner).albumID
                var files: [String] = []
                for _ in 0..<3 {
                    files.append(try await h.upload(user: owner, albumID: album))
                    #expect(try await eventually { try await h.photos(owner, album).count == files.count })
                }
                let frame = try await h.registerFrame(owner).frame!.frameID
                _ = try await h.client.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: owner, frameID: frame, albumIDs: [album]))
                _ = try await h.client.call(AlbumAPI.updateFrame, UpdateFrameRequest(userID: owner, frameID: frame,
                                                                                      width: 1080, height: 1920))
                _ = try await h.client.call(AlbumAPI.setFrameConfig, SetFrameConfigRequest(
                    userID: owner, frameID: frame, config: FrameConfig(intervalSeconds: 10, preferredFormat: "webp")))
                var events: [DeviceAlbumsChanged] = []
                #expect(try await eventually {
                    events = try await eventsInStream(DeviceAlbumsChanged.self, jetStream: h.runtime.jetStream).filter { $0.frameID == frame }
                    return events.count == 4
                })
                guard events.count == 4 else { return }
                // Registered: its screen, no albums yet.
                #expect((events[0].width, events[0].height, events[0].format) == (1280, 800, "jpeg"))
                #expect(events[0].albumIDs.isEmpty && events[0].fileIDs.isEmpty)
                #expect(events.allSatisfy { $0.userID == owner })
                // Subscribed: the album's photos, newest first.
                #expect(events[1].albumIDs == [album])
                #expect(events[1].fileIDs == files.reversed())
                #expect((events[2].width, events[2].height) == (1080, 1920))
                #expect(events[3].format == "webp" && events[3].fileIDs == files.reversed())
            }
        }

        /// A frame's `cached` report reaches media once per photo of its albums; repeats and
        /// photos outside its albums send nothing.
        @Test func cachedReportsAreForwardedOncePerPhoto() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))"
                let album = try await h.createAlbum(owner).albumID
                let a = try await h.upload(user: owner, albumID: album)
                let b = try await h.upload(user: owner, albumID: album)
                let elsewhere = try await h.upload(user: "someone-else")
                #expect(try await eventually { try await h.photos(owner, album).count == 2 })
                let frame = try await h.registerFrame(owner).frame!.frameID
                _ = try await h.client.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: owner, frameID: frame, albumIDs: [album]))

                let frameClient = try h.frameClient(frame)
                try await frameClient.connect()
                defer { Task { await frameClient.disconnect() } }
                let status = FrameTopics.status(frame: frame)
                try await frameClient.publish(status, payload: FrameTopics.encode(FrameStatusMessage(status: "cached", fileIDs: [a, elsewhere])),
                                              qos: .atLeastOnce)
                var reports: [DeviceCacheReported] = []
                #expect(try await eventually {
                    reports = try await eventsInStream(DeviceCacheReported.self, jetStream: h.runtime.jetStream).filter { $0.frameID == frame }
                    return !reports.isEmpty
                })
                #expect(reports.first?.fileIDs == [a])
                #expect(reports.first?.userID == owner)

                // Again (nothing new), then b displayed (new: displayed implies cached).
                try await frameClient.publish(status, payload: FrameTopics.encode(FrameStatusMessage(status: "cached", fileIDs: [a])),
                                              qos: .atLeastOnce)
                try await frameClient.publish(status, payload: FrameTopics.encode(FrameStatusMessage(status: "displayed", fileID: b)),
                                              qos: .atLeastOnce)
                #expect(try await eventually {
                    reports = try await eventsInStream(DeviceCacheReported.self, jetStream: h.runtime.jetStream).filter { $0.frameID == frame }
                    return reports.count >= 2
                })
                // Telemetry is applied in order: b's report came after a's repeat, which sent nothing.
                #expect(reports.map(\.fileIDs) == [[a], [b]])
            }
        }
    }
}
