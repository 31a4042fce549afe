import Foundation
@testable import FrameAgent
import FramecastTesting
import MQTT
import Testing
import Wire

/// Issue 13, "the frame edge", with everything real: a new photo reaches the frame agent as one
/// `photo_added` carrying a capability URL for its screen, which it downloads with no token and
/// no metadata request; a gap in the album's numbers makes it ask for its sync and converge.
///
/// The album service and the gateway must hold the same capability keys (System wires them).
extension EndToEndTests {
    @Test func theAgentShowsAPhotoFromTheNotificationsURLAlone() async throws {
        try await withSystem { system in
            let account = try await system.signUp()
            let album = try await system.createAlbum(account)
            let (frame, registration) = try await system.registerFrame(account, width: 1024, height: 600, albums: [album])
            let (agent, png) = try system.agent(registration: registration, name: "edge")
            let syncTopic = FrameTopics.sync(frame: frame)
            try await Observer.watching(system, ["frames/\(frame)/#", "albums/\(album)/#"]) { observer in
                try await withServices([agent], logger: quietLogger) {
                    try await ready(agent, album: album)
                    // On connecting it asked for its sync (the retained one, and the answer).
                    #expect(try await eventually {
                        !observer.reports(FrameStatusMessage.syncRequest, frame: frame).isEmpty && observer.on(syncTopic).count >= 2
                    }, "the agent asked for its sync on connecting and got it")
                    try await Task.sleep(for: .milliseconds(500))
                    let syncsBefore = observer.on(syncTopic).count
                    let before = agent.gateway.counts.current

                    let file = try await system.upload(account, try Photos.bytes(try Photos.plasma("Kite")), album: album, name: "Kite.jpg")
                    try #require(try await eventually(timeout: .seconds(60)) { !observer.reports("displayed", file: file, frame: frame).isEmpty },
                                 "the frame reported displayed")

                    // One photo_added, numbered, with this screen's version as a capability URL.
                    let added = observer.on(FrameTopics.photoAdded(album: album))
                    #expect(added.count == 1)
                    let message = try FrameTopics.decode(PhotoAddedMessage.self, from: try #require(added.first).message.payload)
                    #expect(message.seq == 1)
                    #expect(message.mediaServiceURL == "\(system.baseURL)/api/v1/photos/\(file)", "kept for older frames")
                    let sizes = Set((message.versions ?? []).map(\.size))
                    #expect(sizes.isSuperset(of: ["thumbnail", "hd", "frame:1024x600"]) && !sizes.contains("original"), "\(sizes)")
                    let version = try #require(message.versions?.first { $0.size == "frame:1024x600" })
                    #expect(version.url.hasPrefix("\(system.baseURL)/c/"), "\(version.url)")

                    // The agent used that URL alone: no metadata request, no token download.
                    let counts = agent.gateway.counts.current
                    #expect(counts.metadata == before.metadata, "no metadata request")
                    #expect(counts.downloads == before.downloads, "no token-authenticated download")
                    #expect(counts.capabilityDownloads == before.capabilityDownloads + 1, "one capability download")

                    // The URL needs no Authorization header, and the frame holds and shows its bytes.
                    let (status, bytes) = try await HTTP.request("GET", version.url)
                    #expect(status == 200)
                    let cached = try Data(contentsOf: URL(fileURLWithPath: agent.configuration.cacheDirectory)
                        .appendingPathComponent("photos").appendingPathComponent(file))
                    #expect([UInt8](cached) == bytes)
                    #expect(try await difference([UInt8](try Data(contentsOf: png)), bytes) < 2)
                    #expect(try await eventually { !observer.reports("cached", file: file, frame: frame).isEmpty }, "and reported it cached")

                    // No sync was sent to the frame because of the photo.
                    try await Task.sleep(for: .milliseconds(1500))
                    #expect(observer.on(syncTopic).count == syncsBefore, "no per-photo sync on \(syncTopic)")
                }
            }
        }
    }

    /// A notification whose number skips one (here forged on the album's topic: as if the broker
    /// had lost one): the agent asks for its sync, gets it, and ends up with exactly what the
    /// album holds — the forged photo is gone, the real one stays.
    @Test func anAgentThatSeesAGapAsksForItsSyncAndConverges() async throws {
        try await withSystem { system in
            let account = try await system.signUp()
            let album = try await system.createAlbum(account)
            let (frame, registration) = try await system.registerFrame(account, width: 800, height: 480, albums: [album])
            let (agent, _) = try system.agent(registration: registration, name: "gap")
            let poke = try MQTTClient(configuration: MQTTConfiguration(host: system.broker.host, port: system.broker.port,
                                                                       clientID: "poke-\(UUID().uuidString.prefix(6))",
                                                                       username: system.broker.mqttTester.user,
                                                                       password: system.broker.mqttTester.password), logger: quietLogger)
            try await poke.connect()
            try await Observer.watching(system, ["frames/\(frame)/#"]) { observer in
                try await withServices([agent], logger: quietLogger) {
                    try await ready(agent, album: album)
                    let file = try await system.upload(account, try Photos.bytes(try Photos.plasma("FallenLeaf")), album: album)
                    try #require(try await eventually(timeout: .seconds(60)) { !observer.reports("displayed", file: file, frame: frame).isEmpty })
                    #expect(await agent.core.lastSeq(album: album) == 1)
                    let requests = observer.reports(FrameStatusMessage.syncRequest, frame: frame).count

                    // Number 3 while the frame heard 1: number 2 was missed.
                    let forged = UUID().uuidString.lowercased()
                    let gap = PhotoAddedMessage(fileID: forged, albumID: album, fileName: "x.jpg", contentType: "image/jpeg", labels: [],
                                                takenAt: nil, mediaServiceURL: "\(system.baseURL)/api/v1/photos/\(forged)", seq: 3)
                    try await poke.publish(FrameTopics.photoAdded(album: album), payload: FrameTopics.encode(gap), qos: .atLeastOnce)
                    #expect(try await eventually { observer.reports(FrameStatusMessage.syncRequest, frame: frame).count > requests },
                            "the gap made the agent ask for its sync")
                    // The sync says the album is at 1 with the real photo only: behind what the agent
                    // heard (3), it asks once more and then believes it.
                    #expect(try await eventually(timeout: .seconds(20)) { await agent.core.wantedIDs == [file] },
                            "the forged photo is gone, the real one stays")
                    #expect(await agent.core.lastSeq(album: album) == 1)
                    // The album service still sees the frame online: a sync_request is not a status.
                    #expect(try await system.runtime.postgres.query("SELECT online FROM album.frames WHERE frame_id = $1::uuid", [.text(frame)])
                        .first?.decode("online", as: Bool.self) == true)

                    // The next real photo is number 2: next in line again, shown without another request.
                    let settled = observer.reports(FrameStatusMessage.syncRequest, frame: frame).count
                    let next = try await system.upload(account, try Photos.bytes(try Photos.plasma("Kite")), album: album)
                    try #require(try await eventually(timeout: .seconds(60)) { !observer.reports("displayed", file: next, frame: frame).isEmpty })
                    #expect(await agent.core.lastSeq(album: album) == 2)
                    #expect(observer.reports(FrameStatusMessage.syncRequest, frame: frame).count == settled, "no gap, no request")
                }
            }
            await poke.disconnect()
        }
    }
}
