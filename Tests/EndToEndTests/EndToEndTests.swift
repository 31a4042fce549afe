import Foundation
@testable import FrameAgent
import FramecastTesting
import Imaging
import MQTT
import NATS
import Testing
import Wire

/// The seed's flow (section 8) end to end, everything real: a phone's upload over HTTP →
/// storage → `file.uploaded.with_ai` on NATS → album (PostgreSQL) and media (versions) →
/// `albums/{id}/photo_added` on MQTT → the frame agent fetches metadata and its version over
/// HTTP, shows it on its `png:` display and reports `displayed` → `album_sync_status`.
///
/// One test at a time: each starts its own nats-server, mosquitto, database and services.
@Suite(.serialized) struct EndToEndTests {
    static let all: [System.Role] = [.storage, .album, .media, .gateway]

    /// Runs `body` with a fresh system whose `roles` run in-process.
    func withSystem(_ roles: [System.Role] = all, _ body: (System) async throws -> Void) async throws {
        let system = try await System.make()
        do {
            try await system.running(roles) { try await body(system) }
            await system.close()
        } catch {
            await system.close()
            throw error
        }
    }

    /// Waits until the agent is subscribed to the album's photo notifications.
    func ready(_ agent: FrameAgent, album: String) async throws {
        let topic = FrameTopics.photoAdded(album: album)
        let subscriptions = agent.subscriptions
        let ok = try await eventually(timeout: .seconds(30)) { await subscriptions.current.contains(topic) }
        guard ok else { throw Failure("the agent did not subscribe to \(topic)") }
    }

    /// The PNG on screen compared with the version: mean absolute difference of 96×60 thumbnails.
    func difference(_ a: [UInt8], _ b: [UInt8]) async throws -> Double {
        let x = try await serviceImaging.pixels(a, width: 96, height: 60)
        let y = try await serviceImaging.pixels(b, width: 96, height: 60)
        return x.meanAbsoluteDifference(to: y)
    }

    func download(_ system: System, _ file: String, size: String, token: String) async throws -> [UInt8] {
        let (status, bytes) = try await HTTP.request("GET", "\(system.baseURL)/api/v1/files/download/\(file)?size=\(size)", token: token)
        guard status == 200 else { throw Failure("downloading \(size) answered \(status)") }
        return bytes
    }

    func milliseconds(_ d: Duration) -> Int { Int(d.seconds * 1000) }

    // MARK: The main flow

    @Test func anUploadIntoAnAlbumAppearsOnTheFrameAndIsReported() async throws {
        try await withSystem { system in
            let account = try await system.signUp()
            let album = try await system.createAlbum(account)
            let (frame, registration) = try await system.registerFrame(account, width: 1024, height: 600, albums: [album])
            let (agent, png) = try system.agent(registration: registration)
            try await Observer.watching(system, ["frames/\(frame)/#", "albums/\(album)/#"]) { observer in
                try await withServices([agent], logger: quietLogger) {
                    try await ready(agent, album: album)
                    #expect(!observer.reports("online", frame: frame).isEmpty, "the agent announced itself online")

                    let photo = try Photos.bytes(try Photos.plasma("Kite"))
                    let file = try await system.upload(account, photo, album: album, name: "Kite.jpg")
                    let uploaded = ContinuousClock.now

                    let shown = try await eventually(timeout: .seconds(60)) { !observer.reports("displayed", file: file, frame: frame).isEmpty }
                    try #require(shown, "the frame reported displayed")
                    let displayedAt = observer.reports("displayed", file: file, frame: frame)[0].at
                    print("⏱ upload response → displayed report (1024x600 frame, in-process services): \(milliseconds(displayedAt - uploaded)) ms")

                    // NATS: storage's event carries the album.
                    let events = try await eventsInStream(FileUploadedWithAI.self, jetStream: system.runtime.jetStream)
                    #expect(events.filter { $0.file?.fileID == file }.count == 1)
                    #expect(events.first { $0.file?.fileID == file }?.file?.metadata["album_id"] == album)
                    // PostgreSQL: the photo is in the album, once.
                    #expect(try await system.albumPhotoRows(album: album, file: file) == 1)
                    // MQTT: photo_added once, pointing at the gateway's metadata document.
                    let added = observer.on(FrameTopics.photoAdded(album: album))
                    #expect(added.count == 1)
                    let message = try FrameTopics.decode(PhotoAddedMessage.self, from: try #require(added.first).message.payload)
                    #expect(message.fileID == file && message.albumID == album && message.fileName == "Kite.jpg")
                    #expect(message.mediaServiceURL == "\(system.baseURL)/api/v1/photos/\(file)")
                    #expect(added[0].at <= displayedAt)

                    // The agent chose and cached the version made for its screen, byte for byte.
                    let version = try await download(system, file, size: "frame:1024x600", token: account.token)
                    let cached = try Data(contentsOf: URL(fileURLWithPath: agent.configuration.cacheDirectory)
                        .appendingPathComponent("photos").appendingPathComponent(file))
                    #expect([UInt8](cached) == version)
                    let index = try JSONDecoder().decode(CacheIndex.self, from: Data(contentsOf: URL(fileURLWithPath: agent.configuration.cacheDirectory)
                        .appendingPathComponent("index.json")))
                    #expect(index.entry(file)?.version == "frame:1024x600")
                    #expect(index.entry(file)?.etag?.isEmpty == false, "the ETag is kept for conditional GETs")

                    // The screen: a PNG of exactly 1024x600 showing that version.
                    let screen = [UInt8](try Data(contentsOf: png))
                    let header = try await serviceImaging.probe(screen)
                    #expect(header.format == .png && header.width == 1024 && header.height == 600)
                    let same = try await difference(screen, version)
                    let other = try await difference(screen, try Photos.bytes(try Photos.plasma("FallenLeaf")))
                    print("PNG vs its version: mean abs difference \(same); vs another photo: \(other)")
                    #expect(same < 2, "the screen shows the version")
                    #expect(other > 10, "and not just any photo")

                    // PostgreSQL: the album service recorded the report.
                    #expect(try await eventually { try await system.lastDisplayed(frame: frame, album: album) == file })
                    // The frame's heartbeat says what is on screen and what the cache holds.
                    let beat = try await eventually {
                        observer.on(FrameTopics.heartbeat(frame: frame)).contains {
                            let h = try? FrameTopics.decode(FrameHeartbeatMessage.self, from: $0.message.payload)
                            return h?.currentFileID == file && h?.cacheFiles == 1 && (h?.cacheBytes ?? 0) == Int64(version.count)
                                && h?.state == "showing" && (h?.uptimeSeconds ?? -1) >= 0
                        }
                    }
                    #expect(beat)
                    // The sync that followed was cached and reported.
                    #expect(try await eventually { !observer.reports("cached", file: file, frame: frame).isEmpty })
                    // The REST view of the frame agrees.
                    let (status, body) = try await HTTP.json("GET", "\(system.baseURL)/api/v1/frames/\(frame)", token: account.token)
                    #expect(status == 200 && body["online"] as? Bool == true)
                    let sync = (body["sync_status"] as? [[String: Any]])?.first
                    #expect(sync?["last_displayed_file_id"] as? String == file)
                }
            }
            // Graceful stop: the frame said goodbye (retained offline).
            #expect(try await eventually { try await system.runtime.postgres.query(
                "SELECT online FROM album.frames WHERE frame_id = $1::uuid", [.text(frame)]).first?.decode("online", as: Bool.self) == false })
        }
    }

    @Test func aPortraitFrameGetsItsOwnVersion() async throws {
        try await withSystem { system in
            let account = try await system.signUp()
            let album = try await system.createAlbum(account)
            let (wide, wideRegistration) = try await system.registerFrame(account, width: 1024, height: 600, albums: [album])
            let (tall, tallRegistration) = try await system.registerFrame(account, width: 600, height: 1024, albums: [album])
            let (wideAgent, widePNG) = try system.agent(registration: wideRegistration, name: "wide")
            let (tallAgent, tallPNG) = try system.agent(registration: tallRegistration, name: "tall")
            try await Observer.watching(system, ["frames/+/status"]) { observer in
                try await withServices([wideAgent, tallAgent], logger: quietLogger) {
                    try await ready(wideAgent, album: album)
                    try await ready(tallAgent, album: album)
                    let file = try await system.upload(account, try Photos.bytes(try Photos.plasma("BytheWater")), album: album)
                    let uploaded = ContinuousClock.now
                    try #require(try await eventually(timeout: .seconds(60)) {
                        !observer.reports("displayed", file: file, frame: wide).isEmpty && !observer.reports("displayed", file: file, frame: tall).isEmpty
                    })
                    for (name, frame) in [("landscape", wide), ("portrait", tall)] {
                        let at = observer.reports("displayed", file: file, frame: frame)[0].at
                        print("⏱ upload response → displayed report (\(name) frame, two frames): \(milliseconds(at - uploaded)) ms")
                    }
                    let wideVersion = try await download(system, file, size: "frame:1024x600", token: account.token)
                    let tallVersion = try await download(system, file, size: "frame:600x1024", token: account.token)
                    let tallHeader = try await serviceImaging.probe(tallVersion)
                    #expect(tallHeader.width == 600 && tallHeader.height == 1024)
                    #expect(try await system.versionRows(file: file) == ["thumbnail": 1, "hd": 1, "frame:1024x600": 1, "frame:600x1024": 1])

                    let tallScreen = [UInt8](try Data(contentsOf: tallPNG))
                    let wideScreen = [UInt8](try Data(contentsOf: widePNG))
                    let header = try await serviceImaging.probe(tallScreen)
                    #expect(header.width == 600 && header.height == 1024)
                    #expect(try await difference(tallScreen, tallVersion) < 2)
                    #expect(try await difference(wideScreen, wideVersion) < 2)
                    let cached = try Data(contentsOf: URL(fileURLWithPath: tallAgent.configuration.cacheDirectory)
                        .appendingPathComponent("photos").appendingPathComponent(file))
                    #expect([UInt8](cached) == tallVersion, "the portrait frame downloaded the portrait version")
                }
            }
        }
    }

    // MARK: Offline

    @Test func aFrameOfflineDuringTheUploadShowsThePhotoWhenItComesBack() async throws {
        try await withSystem { system in
            let account = try await system.signUp()
            let album = try await system.createAlbum(account)
            let (frame, registration) = try await system.registerFrame(account, width: 800, height: 480, albums: [album])
            try await Observer.watching(system, ["frames/\(frame)/status", "albums/\(album)/photo_added"]) { observer in
                // First start: the broker keeps the frame's session (subscriptions) from now on.
                let (first, _) = try system.agent(registration: registration)
                try await withServices([first], logger: quietLogger) { try await ready(first, album: album) }
                #expect(try await eventually { !observer.reports("offline", frame: frame).isEmpty }, "a graceful stop says offline")

                let file = try await system.upload(account, try Photos.bytes(try Photos.plasma("ColorfulCups")), album: album)
                #expect(try await eventually(timeout: .seconds(60)) { !observer.on(FrameTopics.photoAdded(album: album)).isEmpty },
                        "the album published while the frame was away")
                try await Task.sleep(for: .milliseconds(300))
                #expect(observer.reports("displayed", frame: frame).isEmpty)

                let (second, png) = try system.agent(registration: registration)
                let restarted = ContinuousClock.now
                try await withServices([second], logger: quietLogger) {
                    try #require(try await eventually(timeout: .seconds(60)) { !observer.reports("displayed", file: file, frame: frame).isEmpty })
                    print("⏱ agent start → displayed report (photo uploaded while offline): \(milliseconds(observer.reports("displayed", file: file, frame: frame)[0].at - restarted)) ms")
                    let version = try await download(system, file, size: "frame:800x480", token: account.token)
                    #expect(try await difference([UInt8](try Data(contentsOf: png)), version) < 2)
                    #expect(try await eventually { try await system.lastDisplayed(frame: frame, album: album) == file })
                }
                #expect(observer.reports("displayed", file: file, frame: frame).count == 1, "shown once, not once per notification")
            }
        }
    }

    @Test func withoutTheBrokerTheFrameShowsItsCacheAndCatchesUpWhenItReturns() async throws {
        try await withSystem { system in
            let account = try await system.signUp()
            let album = try await system.createAlbum(account)
            let (frame, registration) = try await system.registerFrame(account, width: 1024, height: 600, albums: [album])
            let first = try await system.upload(account, try Photos.bytes(try Photos.plasma("Kite")), album: album)
            let (agent, png) = try system.agent(registration: registration)
            try await withServices([agent], logger: quietLogger) {
                try await ready(agent, album: album)
                #expect(try await eventually(timeout: .seconds(60)) { FileManager.default.fileExists(atPath: png.path) })
            }
            let firstVersion = try await download(system, first, size: "frame:1024x600", token: account.token)

            // The network is gone: the broker stops and the screen file is removed.
            system.broker.stop()
            try FileManager.default.removeItem(at: png)
            let (offline, _) = try system.agent(registration: registration)
            try await withServices([offline], logger: quietLogger) {
                // It shows what it has, from its disk cache, without any server.
                #expect(try await eventually(timeout: .seconds(20)) {
                    guard let bytes = try? Data(contentsOf: png) else { return false }
                    return (try? await difference([UInt8](bytes), firstVersion)).map { $0 < 2 } ?? false
                }, "the cached photo is on screen while offline")
                #expect(!offline.mqtt.isConnected)

                // A photo uploaded meanwhile (the album service waits for the broker too).
                let second = try await system.upload(account, try Photos.bytes(try Photos.plasma("ColorfulCups")), album: album)
                try await Task.sleep(for: .seconds(1))
                try system.broker.start()
                try await Observer.watching(system, ["frames/\(frame)/status"]) { observer in
                    let caughtUp = try await eventually(timeout: .seconds(60)) {
                        !observer.reports("displayed", file: second, frame: frame).isEmpty
                    }
                    #expect(caughtUp, "back online, it catches up and shows the new photo")
                    #expect(offline.mqtt.isConnected)
                }
                let secondVersion = try await download(system, second, size: "frame:1024x600", token: account.token)
                #expect(try await difference([UInt8](try Data(contentsOf: png)), secondVersion) < 2)
                #expect(try await eventually { try await system.lastDisplayed(frame: frame, album: album) == second })
            }
        }
    }

    // MARK: The executable

    @Test func theFramecastFrameExecutableShowsAnUploadAndStopsGracefullyOnSIGTERM() async throws {
        try await withSystem { system in
            let account = try await system.signUp()
            let album = try await system.createAlbum(account)
            let (frame, registration) = try await system.registerFrame(account, width: 1024, height: 600, albums: [album])
            // What the README tells a user to do: save the registration answer, point the agent at it.
            let folder = system.scratch.appendingPathComponent("cli")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let config = folder.appendingPathComponent("frame.json")
            try Data(registration).write(to: config)
            let png = folder.appendingPathComponent("frame.png")
            try await Observer.watching(system, ["frames/\(frame)/status", "albums/\(album)/photo_added"]) { observer in
                let agent = try ChildProcess(arguments: [
                    "frame", "--config", config.path, "--gateway", system.baseURL, "--display", "png:\(png.path)",
                    "--cache-dir", folder.appendingPathComponent("cache").path,
                ], environment: ["FRAMECAST_LOG_LEVEL": "info"], log: folder.appendingPathComponent("agent.log"))
                let online = try await eventually(timeout: .seconds(30)) { !observer.reports("online", frame: frame).isEmpty }
                if !online { Issue.record("agent log:\n\(agent.output.suffix(3000))") }
                try #require(online)
                // Subscribed to the album once its log says the sync was applied.
                #expect(try await eventually(timeout: .seconds(30)) { agent.output.contains("sync applied") })
                let file = try await system.upload(account, try Photos.bytes(try Photos.plasma("Kite")), album: album)
                let uploaded = ContinuousClock.now
                let shown = try await eventually(timeout: .seconds(60)) { !observer.reports("displayed", file: file, frame: frame).isEmpty }
                if !shown { Issue.record("agent log:\n\(agent.output.suffix(3000))") }
                try #require(shown)
                print("⏱ upload response → displayed report (framecast frame child process): \(milliseconds(observer.reports("displayed", file: file, frame: frame)[0].at - uploaded)) ms")
                let version = try await download(system, file, size: "frame:1024x600", token: account.token)
                #expect(try await difference([UInt8](try Data(contentsOf: png)), version) < 2)

                agent.stop()  // SIGTERM
                #expect(agent.process.terminationStatus == 0, "a graceful stop exits 0")
                #expect(try await eventually { !observer.reports("offline", frame: frame).isEmpty }, "and says offline")
                #expect(agent.output.contains("frame agent stopped"))
            }
        }
    }

    @Test func theFramecastFrameExecutableRefusesAnIncompleteConfiguration() async throws {
        let folder = try TestServers.scratchDirectory("cli-bad")
        let agent = try ChildProcess(arguments: ["frame", "--frame-id", "f1", "--screen", "1024x600"], environment: [:],
                                     log: folder.appendingPathComponent("agent.log"))
        agent.process.waitUntilExit()
        #expect(agent.process.terminationStatus != 0)
        #expect(agent.output.contains("frame token is missing"), "\(agent.output)")
    }

    // MARK: A service killed mid-flow

    /// SIGKILLs the `role` service (a `framecast` child process) right after the upload answered,
    /// restarts it, and checks that the photo still reaches the frame, exactly once.
    func killedMidFlow(_ role: System.Role) async throws {
        let inProcess = Self.all.filter { $0 != role }
        try await withSystem(inProcess) { system in
            var child = try system.child(role)
            try await system.waitUntilUp([role])
            let account = try await system.signUp()
            let album = try await system.createAlbum(account)
            let (frame, registration) = try await system.registerFrame(account, width: 1024, height: 600, albums: [album])
            let (agent, png) = try system.agent(registration: registration)
            try await Observer.watching(system, ["frames/\(frame)/status", "albums/\(album)/photo_added"]) { observer in
                try await withServices([agent], logger: quietLogger) {
                    try await ready(agent, album: album)
                    let file = try await system.upload(account, try Photos.bytes(try Photos.plasma("FallenLeaf")), album: album)
                    let uploaded = ContinuousClock.now
                    child.kill()
                    try await Task.sleep(for: .milliseconds(500))
                    child = try system.child(role)
                    try await system.waitUntilUp([role])
                    let shown = try await eventually(timeout: .seconds(120)) { !observer.reports("displayed", file: file, frame: frame).isEmpty }
                    if !shown { Issue.record("\(role.rawValue) log:\n\(child.output.suffix(3000))") }
                    try #require(shown)
                    print("⏱ upload response → displayed report (\(role.rawValue) SIGKILLed and restarted): \(milliseconds(observer.reports("displayed", file: file, frame: frame)[0].at - uploaded)) ms")
                    try await Task.sleep(for: .seconds(2))  // room for a duplicate to show up
                    #expect(observer.reports("displayed", file: file, frame: frame).count == 1, "displayed exactly once")
                    #expect(try await system.albumPhotoRows(album: album, file: file) == 1, "in the album exactly once")
                    #expect(try await system.versionRows(file: file).values.allSatisfy { $0 == 1 }, "each version rendered once")
                    let notifications = observer.on(FrameTopics.photoAdded(album: album)).count
                    print("photo_added messages seen: \(notifications) (a frame acts once per album and file)")
                    #expect(notifications >= 1)
                    // The version the agent chose: the frame's own, whichever service was down.
                    // Media never asks album: with album down it renders thumbnail and hd, and the
                    // frame's version once album's album.photo_added arrives; album announces the
                    // photo only after that (media.cache_ready).
                    let index = try JSONDecoder().decode(CacheIndex.self, from: Data(contentsOf: URL(fileURLWithPath: agent.configuration.cacheDirectory)
                        .appendingPathComponent("index.json")))
                    let chosen = try #require(index.entry(file)?.version)
                    print("version shown: \(chosen); versions rendered: \(try await system.versionRows(file: file).keys.sorted())")
                    #expect(chosen == "frame:1024x600")
                    let version = try await download(system, file, size: chosen, token: account.token)
                    let expected = try await serviceImaging.screen(version, width: 1024, height: 600, png: true)
                    #expect(try await difference([UInt8](try Data(contentsOf: png)), expected.png) < 2)
                    #expect(try await eventually { try await system.lastDisplayed(frame: frame, album: album) == file })
                }
            }
            child.stop()
        }
    }

    @Test func theAlbumServiceKilledMidFlowStillDeliversThePhotoOnce() async throws {
        try await killedMidFlow(.album)
    }

    @Test func theMediaServiceKilledMidFlowStillDeliversThePhotoOnce() async throws {
        try await killedMidFlow(.media)
    }

    // MARK: Commands, sleep, bad input

    @Test func commandsDriveTheSlideshowOncePerIDAndBadPayloadsAreIgnored() async throws {
        try await withSystem { system in
            let account = try await system.signUp()
            let album = try await system.createAlbum(account)
            let (frame, registration) = try await system.registerFrame(account, width: 640, height: 400, albums: [album])
            let (agent, png) = try system.agent(registration: registration)
            let poke = try MQTTClient(configuration: MQTTConfiguration(host: system.broker.host, port: system.broker.port,
                                                                       clientID: "poke-\(UUID().uuidString.prefix(6))",
                                                                       username: system.broker.mqttTester.user, password: system.broker.mqttTester.password), logger: quietLogger)
            try await poke.connect()
            try await Observer.watching(system, ["frames/\(frame)/#"]) { observer in
                try await withServices([agent], logger: quietLogger) {
                    try await ready(agent, album: album)
                    func displayed() -> [String] {
                        observer.reports("displayed", frame: frame).compactMap {
                            try? FrameTopics.decode(FrameStatusMessage.self, from: $0.message.payload).fileID
                        }
                    }
                    // Garbage first: none of it may stop the agent or touch its cache folder.
                    let command = FrameTopics.command(frame: frame)
                    for payload in ["not json", "{}", "{\"v\":1,\"frame_id\":\"\(frame)\",\"seq\":\"x\"}", "[]"] {
                        try await poke.publish(FrameTopics.sync(frame: frame), payload: Array(payload.utf8), qos: .atLeastOnce)
                        try await poke.publish(command, payload: Array(payload.utf8), qos: .atLeastOnce)
                    }
                    let evil = PhotoAddedMessage(fileID: "../../escape", albumID: album, fileName: "x", contentType: "image/jpeg",
                                                 labels: [], takenAt: nil, mediaServiceURL: "http://evil.example/steal")
                    try await poke.publish(FrameTopics.photoAdded(album: album), payload: FrameTopics.encode(evil), qos: .atLeastOnce)
                    try await poke.publish(command, payload: FrameTopics.encode(FrameCommandMessage(id: "bad-1", command: "self_destruct", args: [:], issuedAt: 0)),
                                           qos: .atLeastOnce)
                    #expect(try await eventually { !observer.reports("error", frame: frame).isEmpty }, "an unknown command is reported as an error")

                    let first = try await system.upload(account, try Photos.bytes(try Photos.plasma("Kite")), album: album)
                    try #require(try await eventually(timeout: .seconds(60)) { displayed().last == first })
                    let second = try await system.upload(account, try Photos.bytes(try Photos.plasma("ColorfulCups")), album: album)
                    try #require(try await eventually(timeout: .seconds(60)) { displayed().last == second }, "a new photo is shown next")
                    let folder = URL(fileURLWithPath: agent.configuration.cacheDirectory)
                    #expect(Set(try FileManager.default.contentsOfDirectory(atPath: folder.path)) == ["photos", "index.json", "state.json"])
                    #expect(Set(try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("photos").path)) == [first, second])

                    // previous / next through the REST API.
                    func send(_ name: String, _ args: [String: String]? = nil) async throws {
                        var body: [String: Any] = ["command": name]
                        if let args { body["args"] = args }
                        let (status, answer) = try await HTTP.json("POST", "\(system.baseURL)/api/v1/frames/\(frame)/commands",
                                                                   token: account.token, body: body)
                        #expect(status == 202 || status == 200, "\(name): \(answer)")
                    }
                    try await send("previous")
                    #expect(try await eventually { displayed().last == first }, "previous shows the photo before")
                    try await send("next")
                    #expect(try await eventually { displayed().last == second }, "next comes back")
                    // The same command id delivered again (QoS 2 not relied on): acted on once.
                    let repeated = FrameCommandMessage(id: "cmd-repeat", command: "next", args: [:], issuedAt: 1)
                    try await poke.publish(command, payload: FrameTopics.encode(repeated), qos: .atLeastOnce)
                    #expect(try await eventually { displayed().last == first })
                    let count = displayed().count
                    try await poke.publish(command, payload: FrameTopics.encode(repeated), qos: .atLeastOnce)
                    try await poke.publish(command, payload: FrameTopics.encode(repeated), qos: .exactlyOnce)
                    try await Task.sleep(for: .milliseconds(800))
                    #expect(displayed().count == count, "a repeated command id does nothing")

                    // reload: every photo is checked with a conditional GET (304: the cached
                    // files stay as they are) and the screen is drawn again.
                    func inode(_ file: String) throws -> Int {
                        try FileManager.default.attributesOfItem(atPath: folder.appendingPathComponent("photos").appendingPathComponent(file).path)[.systemFileNumber] as! Int
                    }
                    let inodes = [try inode(first), try inode(second)]
                    let drawn = displayed().count
                    try await send("reload")
                    #expect(try await eventually { displayed().count == drawn + 1 }, "reload redraws the screen")
                    try await Task.sleep(for: .milliseconds(500))
                    #expect([try inode(first), try inode(second)] == inodes, "304 Not Modified: nothing downloaded again")

                    // Sleep: the screen goes black; wake: the photo comes back.
                    try await send("sleep")
                    #expect(try await eventually {
                        guard let bytes = try? Data(contentsOf: png), let p = try? await serviceImaging.pixels([UInt8](bytes), width: 32, height: 20) else { return false }
                        let c = p.averageColor
                        return c.red + c.green + c.blue < 3
                    }, "asleep: a black screen")
                    try await send("wake")
                    let version = try await download(system, first, size: "frame:640x400", token: account.token)
                    #expect(try await eventually {
                        guard let bytes = try? Data(contentsOf: png) else { return false }
                        return (try? await difference([UInt8](bytes), version)).map { $0 < 2 } ?? false
                    }, "awake: the photo again")

                    // set_interval: the slideshow moves by itself.
                    try await send("set_interval", ["seconds": "1"])
                    let before = displayed().count
                    #expect(try await eventually(timeout: .seconds(10)) { displayed().count >= before + 2 }, "the slideshow advances every second")
                    try await send("pause")
                    try await Task.sleep(for: .milliseconds(300))
                    let paused = displayed().count
                    try await Task.sleep(for: .milliseconds(2500))
                    #expect(displayed().count == paused, "paused: nothing moves")

                    // photo_removed: the photo leaves the cache (and the screen, if it was on it).
                    let (removed, _) = try await HTTP.request("DELETE", "\(system.baseURL)/api/v1/albums/\(album)/photos/\(first)", token: account.token)
                    #expect(removed == 204 || removed == 200)
                    #expect(try await eventually(timeout: .seconds(20)) {
                        (try? FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("photos").path)) == [second]
                    }, "the removed photo left the disk cache")
                    #expect(try await eventually { displayed().last == second }, "the screen shows what is left")
                    let index = try JSONDecoder().decode(CacheIndex.self, from: Data(contentsOf: folder.appendingPathComponent("index.json")))
                    #expect(Set(index.entries.keys) == [second])
                }
            }
            await poke.disconnect()
        }
    }
}
