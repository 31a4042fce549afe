import Foundation
import FramecastTesting
@testable import FrameAgent
import Imaging
import Testing
import Wire

// The frame agent's pure logic: configuration, version choice, cache eviction, slideshow
// order, acting once per sync sequence / command id / notification, and bad payloads.

@Suite struct ConfigurationTests {
    /// The registration answer of POST /api/v1/frames, saved as is.
    static let registration = """
        {"frame_id": "0b9e7c1e-8a51-4c8e-9d7e-0d6f9a1b2c3d", "frame_token": "ft_secret",
         "mqtt": {"host": "127.0.0.1", "port": 18830, "username": "frame-0b9e", "password": "pw"},
         "frame": {"frame_id": "0b9e7c1e-8a51-4c8e-9d7e-0d6f9a1b2c3d", "width": 1024, "height": 600, "orientation": "landscape",
                   "name": "Kitchen", "online": false}}
        """

    @Test func registrationAnswerPlusSettingsMakeAConfiguration() throws {
        let c = try FrameAgentConfiguration.load(file: Array(Self.registration.utf8),
                                                 settings: ["FRAMECAST_GATEWAY_URL": "http://127.0.0.1:8080/",
                                                            "FRAMECAST_FRAME_DISPLAY": "png:/tmp/frame.png"])
        #expect(c.frameID == "0b9e7c1e-8a51-4c8e-9d7e-0d6f9a1b2c3d")
        #expect(c.frameToken == "ft_secret")
        #expect(c.mqttHost == "127.0.0.1" && c.mqttPort == 18830 && c.mqttUsername == "frame-0b9e" && c.mqttPassword == "pw")
        #expect(c.gatewayURL == "http://127.0.0.1:8080", "the trailing slash is dropped")
        #expect(c.screenWidth == 1024 && c.screenHeight == 600)
        #expect(c.display == .png(path: "/tmp/frame.png"))
        #expect(c.cacheDirectory == ".run/frames/0b9e7c1e-8a51-4c8e-9d7e-0d6f9a1b2c3d")
        #expect(c.cacheBytes == 512 << 20)
        #expect(c.heartbeatInterval == .seconds(30))
    }

    @Test func settingsWinOverTheFile() throws {
        let c = try FrameAgentConfiguration.load(file: Array(Self.registration.utf8), settings: [
            "FRAMECAST_GATEWAY_URL": "https://frames.example.com", "FRAMECAST_FRAME_SCREEN": "600x1024",
            "FRAMECAST_FRAME_MQTT_PORT": "1883", "FRAMECAST_FRAME_CACHE_BYTES": "2097152", "FRAMECAST_FRAME_DISPLAY": "fb:/dev/fb1",
            "FRAMECAST_FRAME_HEARTBEAT_SECONDS": "5", "FRAMECAST_FRAME_CACHE_DIR": "/var/cache/frame"])
        #expect(c.screenWidth == 600 && c.screenHeight == 1024)
        #expect(c.mqttPort == 1883 && c.cacheBytes == 2_097_152 && c.heartbeatInterval == .seconds(5))
        #expect(c.display == .framebuffer(device: "/dev/fb1") && c.cacheDirectory == "/var/cache/frame")
    }

    @Test func environmentAloneIsEnough() throws {
        let c = try FrameAgentConfiguration.load(file: nil, settings: [
            "FRAMECAST_FRAME_ID": "f1", "FRAMECAST_FRAME_TOKEN": "t", "FRAMECAST_FRAME_MQTT_HOST": "broker",
            "FRAMECAST_GATEWAY_URL": "http://gw:8080", "FRAMECAST_FRAME_SCREEN": "800X480", "FRAMECAST_FRAME_DISPLAY": "none"])
        #expect(c.frameID == "f1" && c.mqttPort == 1883 && c.screenWidth == 800 && c.screenHeight == 480 && c.display == .none)
    }

    @Test(arguments: [
        // (settings over the registration file, a word the message must contain)
        (["FRAMECAST_GATEWAY_URL": ""], "gateway URL"),
        (["FRAMECAST_GATEWAY_URL": "ftp://x"], "gateway URL"),
        (["FRAMECAST_GATEWAY_URL": "http://gw", "FRAMECAST_FRAME_SCREEN": "1024"], "WxH"),
        (["FRAMECAST_GATEWAY_URL": "http://gw", "FRAMECAST_FRAME_SCREEN": "0x600"], "WxH"),
        (["FRAMECAST_GATEWAY_URL": "http://gw", "FRAMECAST_FRAME_SCREEN": "99999x600"], "WxH"),
        (["FRAMECAST_GATEWAY_URL": "http://gw", "FRAMECAST_FRAME_MQTT_PORT": "70000"], "port"),
        (["FRAMECAST_GATEWAY_URL": "http://gw", "FRAMECAST_FRAME_MQTT_PORT": "abc"], "port"),
        (["FRAMECAST_GATEWAY_URL": "http://gw", "FRAMECAST_FRAME_DISPLAY": "hdmi"], "display"),
        (["FRAMECAST_GATEWAY_URL": "http://gw", "FRAMECAST_FRAME_DISPLAY": "png:"], "display"),
        (["FRAMECAST_GATEWAY_URL": "http://gw", "FRAMECAST_FRAME_CACHE_BYTES": "100"], "cache size"),
        (["FRAMECAST_GATEWAY_URL": "http://gw", "FRAMECAST_FRAME_CACHE_BYTES": "lots"], "cache size"),
        (["FRAMECAST_GATEWAY_URL": "http://gw", "FRAMECAST_FRAME_HEARTBEAT_SECONDS": "0"], "heartbeat"),
        (["FRAMECAST_GATEWAY_URL": "http://gw", "FRAMECAST_FRAME_ID": "a/b"], "frame id"),
        (["FRAMECAST_GATEWAY_URL": "http://gw", "FRAMECAST_FRAME_ID": "frames/#"], "frame id"),
    ])
    func badSettingsAreRefusedWithAReason(_ settings: [String: String], _ word: String) throws {
        let error = #expect(throws: FrameAgentError.self) {
            try FrameAgentConfiguration.load(file: Array(Self.registration.utf8), settings: settings)
        }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains(word) == true, "\(error?.message ?? "")")
    }

    @Test func missingPiecesAreNamed() throws {
        for (missing, word) in [("FRAMECAST_FRAME_ID", "frame id"), ("FRAMECAST_FRAME_TOKEN", "frame token"),
                                ("FRAMECAST_FRAME_MQTT_HOST", "MQTT broker host")] {
            var settings = ["FRAMECAST_FRAME_ID": "f1", "FRAMECAST_FRAME_TOKEN": "t", "FRAMECAST_FRAME_MQTT_HOST": "h",
                            "FRAMECAST_GATEWAY_URL": "http://gw", "FRAMECAST_FRAME_SCREEN": "10x10"]
            settings[missing] = nil
            let error = #expect(throws: FrameAgentError.self) { try FrameAgentConfiguration.load(file: nil, settings: settings) }
            #expect(error?.message.contains(word) == true)
            #expect(error?.message.contains(missing) == true, "the variable to set is named")
        }
        #expect(throws: FrameAgentError.self) { try FrameAgentConfiguration.load(file: Array("not json".utf8), settings: [:]) }
        #expect(throws: FrameAgentError.self) { try FrameAgentConfiguration.load(file: Array("[1,2]".utf8), settings: [:]) }
    }
}

@Suite struct VersionChoiceTests {
    typealias V = PhotoDocument.Version
    static let versions = [
        V(size: "thumbnail", width: 300, height: 188, url: "/api/v1/files/download/f?size=thumbnail"),
        V(size: "hd", width: 1728, height: 1080, url: "/api/v1/files/download/f?size=hd"),
        V(size: "frame:1024x600", width: 1024, height: 600, url: "/api/v1/files/download/f?size=frame:1024x600"),
        V(size: "frame:600x1024", width: 600, height: 1024, url: "/api/v1/files/download/f?size=frame:600x1024"),
        V(size: "original", width: 2560, height: 1600, url: "/api/v1/files/download/f"),
    ]

    @Test func theVersionMadeForTheScreenWins() {
        #expect(VersionChoice.pick(Self.versions, width: 1024, height: 600)?.size == "frame:1024x600")
        #expect(VersionChoice.pick(Self.versions, width: 600, height: 1024)?.size == "frame:600x1024")
        #expect(VersionChoice.pick(Self.versions.reversed(), width: 600, height: 1024)?.size == "frame:600x1024")
    }

    @Test func otherwiseTheClosestLargerOne() {
        // 800x480: frame:1024x600 is the smallest that covers it.
        #expect(VersionChoice.pick(Self.versions, width: 800, height: 480)?.size == "frame:1024x600")
        // 1280x800: hd (1728x1080) covers it and is smaller than the original.
        #expect(VersionChoice.pick(Self.versions, width: 1280, height: 800)?.size == "hd")
        // 1080x1920 portrait: only the original is tall enough? no: 1600 < 1920 → none covers → the largest.
        #expect(VersionChoice.pick(Self.versions, width: 1080, height: 1920)?.size == "original")
        // 200x100: the thumbnail covers it.
        #expect(VersionChoice.pick(Self.versions, width: 200, height: 100)?.size == "thumbnail")
    }

    @Test func nothingUsableGivesNil() {
        #expect(VersionChoice.pick([], width: 10, height: 10) == nil)
        #expect(VersionChoice.pick([V(size: "hd", width: 0, height: 0, url: "/x"), V(size: "thumbnail", width: 3, height: 3, url: "")],
                                   width: 10, height: 10) == nil)
    }

    /// Found by fuzzing: two versions whose claimed sides multiply beyond Int overflowed the
    /// area comparison and took the agent down. Such versions are not usable.
    @Test func absurdSidesAreIgnoredNotMultiplied() {
        let huge = 4_611_686_018_427_387_904
        let versions = [V(size: "a", width: 1000, height: huge, url: "/x"), V(size: "b", width: 1000, height: huge, url: "/y"),
                        V(size: "hd", width: 1728, height: 1080, url: "/hd")]
        #expect(VersionChoice.pick(versions, width: 1024, height: 600)?.size == "hd")
        #expect(VersionChoice.pick(Array(versions.prefix(2)), width: 1024, height: 600) == nil)
    }

    @Test func theMetadataDocumentDecodesAndIgnoresUnknownFields() throws {
        let json = """
            {"file_id": "f", "file_name": "a.jpg", "content_type": "image/jpeg", "width": 2560, "height": 1600,
             "versions": [{"size": "hd", "width": 1728, "height": 1080, "format": "jpeg", "content_type": "image/jpeg",
                           "bytes": 123, "url": "http://gw/api/v1/files/download/f?size=hd", "new_field": true}],
             "ai_metadata": {"labels": []}, "cached_for_frames": []}
            """
        let document = try JSONDecoder().decode(PhotoDocument.self, from: Data(json.utf8))
        #expect(document.fileID == "f" && document.versions.count == 1 && document.versions[0].bytes == 123)
    }
}

@Suite struct CacheIndexTests {
    func entry(_ id: String, _ bytes: Int64, shown: Int64) -> CacheEntry {
        CacheEntry(fileID: id, version: "frame:10x10", etag: "\"\(id)\"", bytes: bytes, lastShown: shown)
    }

    @Test func leastRecentlyShownGoesFirst() throws {
        var index = CacheIndex()
        #expect(try index.insert(entry("a", 40, shown: 3), budget: 100, protecting: []).isEmpty)
        #expect(try index.insert(entry("b", 40, shown: 1), budget: 100, protecting: []).isEmpty)
        index.touch("b", at: 10)  // b was shown after a
        let evicted = try index.insert(entry("c", 40, shown: 11), budget: 100, protecting: [])
        #expect(evicted.map(\.fileID) == ["a"])
        #expect(Set(index.entries.keys) == ["b", "c"] && index.totalBytes == 80)
    }

    @Test func protectedPhotosStayAndNoRoomChangesNothing() throws {
        var index = CacheIndex()
        _ = try index.insert(entry("a", 50, shown: 1), budget: 100, protecting: [])
        _ = try index.insert(entry("b", 50, shown: 2), budget: 100, protecting: [])
        // a is on screen: b goes instead.
        #expect(try index.insert(entry("c", 50, shown: 3), budget: 100, protecting: ["a"]).map(\.fileID) == ["b"])
        // Both protected: no room, nothing changes.
        let before = index
        let error = #expect(throws: FrameAgentError.self) { try index.insert(self.entry("d", 50, shown: 4), budget: 100, protecting: ["a", "c"]) }
        #expect(error?.code == .noRoom)
        #expect(index == before)
        // Larger than the whole budget.
        #expect(throws: FrameAgentError.self) { try index.insert(self.entry("e", 101, shown: 5), budget: 100, protecting: []) }
        #expect(index == before)
    }

    @Test func replacingAnEntryCountsItsOwnBytesAsFree() throws {
        var index = CacheIndex()
        _ = try index.insert(entry("a", 60, shown: 1), budget: 100, protecting: [])
        _ = try index.insert(entry("b", 40, shown: 2), budget: 100, protecting: [])
        #expect(try index.insert(entry("a", 60, shown: 3), budget: 100, protecting: []).isEmpty)
        #expect(index.totalBytes == 100)
    }

    @Test func tiesAreBrokenByID() throws {
        var index = CacheIndex()
        _ = try index.insert(entry("b", 50, shown: 1), budget: 100, protecting: [])
        _ = try index.insert(entry("a", 50, shown: 1), budget: 100, protecting: [])
        #expect(index.evictions(toFit: 10, budget: 100, protecting: [])?.map(\.fileID) == ["a"])
    }
}

@Suite struct SlideshowTests {
    @Test func goesRoundInOrderAndBack() {
        var s = Slideshow()
        s.setPhotos(["a", "b", "c"])
        #expect(s.advance() == "a")
        #expect(s.advance() == "b")
        #expect(s.advance() == "c")
        #expect(s.advance() == "a")
        #expect(s.back() == "c")
        #expect(s.advance() == "a", "after previous, next returns to the photo left")
        #expect(s.back() == "c" && s.back() == "b")
    }

    @Test func aNewPhotoComesNext() {
        var s = Slideshow()
        s.setPhotos(["a", "b"])
        s.advance()
        s.add("n", showNext: true)
        #expect(s.photos == ["n", "a", "b"], "newest first")
        #expect(s.advance() == "n")
        #expect(s.advance() == "a", "then the order resumes after the new photo")
    }

    @Test func removingThePhotoOnScreenClearsIt() {
        var s = Slideshow()
        s.setPhotos(["a", "b"])
        s.advance()
        let wasOnScreen = s.remove("a")
        #expect(wasOnScreen)
        #expect(s.current == nil)
        #expect(s.advance() == "b")
        s.setPhotos([])
        #expect(s.current == nil && s.advance() == nil)
        #expect(s.back() == nil)
    }

    @Test func shuffleNeverRepeatsTheCurrentPhotoAndIsRepeatable() {
        var a = Slideshow(shuffle: true, seed: 42), b = Slideshow(shuffle: true, seed: 42)
        a.setPhotos(["1", "2", "3", "4"])
        b.setPhotos(["1", "2", "3", "4"])
        var previous: String?
        var seen = Set<String>()
        for _ in 0..<50 {
            let x = a.advance()
            #expect(x != previous)
            #expect(x == b.advance())
            previous = x
            seen.insert(x!)
        }
        #expect(seen.count == 4)
    }

    @Test func backoffGrowsIsCappedAndJittered() {
        var backoff = Backoff(base: .milliseconds(100), max: .seconds(1), seed: 7)
        for attempt in 1...10 {
            let d = backoff.delay(attempt: attempt)
            let nominal = min(0.1 * pow(2, Double(attempt - 1)), 1.0)
            #expect(d.seconds >= nominal * 0.5 && d.seconds < nominal * 1.5)
        }
    }
}

@Suite struct ActOnceTests {
    func sync(_ seq: Int64, _ photos: [(String, String)], albums: [String] = ["alb1"]) -> FrameSyncMessage {
        FrameSyncMessage(frameID: "f1", seq: seq, albumIDs: albums, photos: photos.map {
            PhotoAddedMessage(fileID: $0.0, albumID: $0.1, fileName: "x.jpg", contentType: "image/jpeg", labels: [], takenAt: nil,
                              mediaServiceURL: "http://gw/api/v1/photos/\($0.0)")
        }, generatedAt: 0)
    }

    @Test func aSyncIsAppliedOncePerSequence() async {
        let core = AgentCore(defaultInterval: .seconds(30))
        await core.restore(nil, cached: ["old"])
        let first = await core.applySync(sync(5, [("p1", "alb1"), ("p2", "alb1")]))
        #expect(first?.drop == ["old"], "a cached photo no longer listed is dropped")
        #expect(await core.duePending() == ["p1", "p2"])
        #expect(await core.applySync(sync(5, [("p3", "alb1")])) == nil, "the same sequence again: ignored")
        #expect(await core.applySync(sync(4, [("p3", "alb1")])) == nil, "an older sequence: ignored")
        #expect(await core.wantedIDs == ["p1", "p2"])
        #expect(await core.applySync(sync(6, [("p2", "alb1")])) != nil)
        #expect(await core.wantedIDs == ["p2"])
    }

    /// A forged or corrupt sync with an absurd sequence number would make the frame ignore every
    /// real sync after it: it is dropped, and the next real sync still applies.
    @Test func anImplausibleSequenceNeverLocksTheFrameOut() async {
        let core = AgentCore(defaultInterval: .seconds(30))
        await core.restore(nil, cached: [])
        #expect(await core.applySync(sync(9_000_000_000_000_000_000, [])) == nil, "first sync, absurd sequence")
        #expect(await core.applySync(sync(3, [("p1", "alb1")])) != nil)
        #expect(await core.applySync(sync(3 + (1 << 33), [])) == nil, "a jump no real history makes")
        #expect(await core.applySync(sync(-1, [])) == nil)
        #expect(await core.applySync(sync(4, [("p2", "alb1")])) != nil)
        #expect(await core.wantedIDs == ["p2"])
    }

    @Test func theNewestPhotoALaterSyncBringsIsShownNext() async {
        let core = AgentCore(defaultInterval: .seconds(3600))
        await core.restore(nil, cached: [])
        _ = await core.applySync(sync(1, [("p2", "alb1"), ("p1", "alb1")]))
        #expect(await core.duePending() == ["p2", "p1"], "the first sync: plain order")
        for file in ["p2", "p1"] {
            _ = await core.beginFetch(file)
            _ = await core.fetched(file, showNext: false)
        }
        let now = ContinuousClock.now
        #expect(await core.step(now: now, date: Date()).0 == .show("p2"))
        await core.shown("p2")
        #expect(await core.step(now: now, date: Date()).0 == .idle)
        // A photo_added was missed; the next sync brings p4 and p3 (newest first).
        _ = await core.applySync(sync(2, [("p4", "alb1"), ("p3", "alb1"), ("p2", "alb1"), ("p1", "alb1")]))
        #expect(await core.duePending() == ["p4", "p3"])
        _ = await core.beginFetch("p3")
        _ = await core.fetched("p3", showNext: false)
        #expect(await core.step(now: now, date: Date()).0 == .idle, "p3 just joins the slideshow")
        _ = await core.beginFetch("p4")
        _ = await core.fetched("p4", showNext: false)
        #expect(await core.step(now: now, date: Date()).0 == .show("p4"), "p4 is shown next")
    }

    @Test func unsafeIDsInASyncAreSkipped() async {
        let core = AgentCore(defaultInterval: .seconds(30))
        await core.restore(nil, cached: [])
        let outcome = await core.applySync(sync(1, [("../../etc/passwd", "alb1"), ("ok", "alb1"), ("x", "a/b"), ("", "alb1")],
                                                albums: ["alb1", "bad/album", "+"]))
        #expect(outcome?.invalidPhotos == 3)
        #expect(await core.wantedIDs == ["ok"])
        #expect(await core.albumIDs == ["alb1"])
    }

    @Test func aCommandIsAppliedOncePerID() async {
        let core = AgentCore(defaultInterval: .seconds(30))
        await core.restore(nil, cached: [])
        let pause = FrameCommandMessage(id: "c1", command: "pause", args: [:], issuedAt: 0)
        #expect(await core.command(pause) == .done)
        #expect(await core.state.paused)
        #expect(await core.command(FrameCommandMessage(id: "c2", command: "resume", args: [:], issuedAt: 0)) == .done)
        #expect(await core.command(pause) == .repeated, "the same id again does nothing")
        #expect(await core.state.paused == false)
        #expect(await core.command(FrameCommandMessage(id: "c3", command: "set_interval", args: ["seconds": "0"], issuedAt: 0))
                == .refused("set_interval needs args.seconds in 1...86400"))
        #expect(await core.command(FrameCommandMessage(id: "c4", command: "set_interval", args: ["seconds": "7"], issuedAt: 0)) == .done)
        #expect(await core.interval == .seconds(7))
        #expect(await core.command(FrameCommandMessage(id: "c5", command: "self_destruct", args: [:], issuedAt: 0))
                == .refused("unknown command self_destruct"))
        #expect(await core.command(FrameCommandMessage(id: "", command: "next", args: [:], issuedAt: 0)) == .refused("a command needs an id"))
    }

    @Test func photoAddedIsActedOnOncePerAlbumAndFile() async {
        let core = AgentCore(defaultInterval: .seconds(30))
        await core.restore(nil, cached: [])
        #expect(await core.firstTime("added:alb1/p1"))
        #expect(await core.firstTime("added:alb1/p1") == false)
        #expect(await core.firstTime("added:alb2/p1"))
    }

    @Test func aFetchedPhotoAddedIsShownNextAndReported() async {
        let core = AgentCore(defaultInterval: .seconds(3600))
        await core.restore(nil, cached: [])
        _ = await core.applySync(sync(1, [("p1", "alb1")]))
        #expect(await core.beginFetch("p1"))
        #expect(await core.beginFetch("p1") == false, "one download at a time")
        #expect(await core.fetched("p1", showNext: false))
        let now = ContinuousClock.now
        #expect(await core.step(now: now, date: Date()).0 == .show("p1"))
        await core.shown("p1")
        #expect(await core.step(now: now, date: Date()).0 == .idle)
        #expect(await core.takeCachedReport() == ["p1"])
        #expect(await core.takeCachedReport() == nil, "reported once")

        await core.photoAdded("p2", album: "alb1")
        #expect(await core.duePending() == ["p2"])
        #expect(await core.beginFetch("p2"))
        #expect(await core.fetched("p2", showNext: false), "the photo_added's show-next survives")
        #expect(await core.step(now: now, date: Date()).0 == .show("p2"))
    }

    @Test func sleepBlanksTheScreenAndWakeShowsItAgain() async {
        let core = AgentCore(defaultInterval: .seconds(3600))
        await core.restore(nil, cached: [])
        _ = await core.applySync(sync(1, [("p1", "alb1")]))
        _ = await core.beginFetch("p1")
        _ = await core.fetched("p1", showNext: false)
        let now = ContinuousClock.now
        #expect(await core.step(now: now, date: Date()).0 == .show("p1"))
        await core.shown("p1")
        #expect(await core.command(FrameCommandMessage(id: "s", command: "sleep", args: [:], issuedAt: 0)) == .done)
        #expect(await core.step(now: now, date: Date()).0 == .blank)
        #expect(await core.step(now: now, date: Date()).0 == .idle)
        #expect(await core.command(FrameCommandMessage(id: "w", command: "wake", args: [:], issuedAt: 0)) == .done)
        #expect(await core.step(now: now, date: Date()).0 == .show("p1"))
    }

    @Test func theSleepWindowCrossesMidnight() throws {
        let window = try #require(SleepWindow(start: "22:30", end: "07:00", timeZone: "Europe/Paris"))
        let formatter = ISO8601DateFormatter()
        #expect(window.contains(formatter.date(from: "2026-01-10T22:00:00Z")!), "23:00 in Paris")
        #expect(window.contains(formatter.date(from: "2026-01-10T05:30:00Z")!), "06:30 in Paris")
        #expect(!window.contains(formatter.date(from: "2026-01-10T06:00:00Z")!), "07:00 in Paris: awake")
        #expect(!window.contains(formatter.date(from: "2026-01-10T12:00:00Z")!))
        #expect(SleepWindow(start: "", end: "07:00", timeZone: "UTC") == nil)
        #expect(SleepWindow(start: "25:00", end: "07:00", timeZone: "UTC") == nil)
        #expect(SleepWindow(start: "7:00", end: "08:00", timeZone: "UTC") == nil)
        #expect(SleepWindow(start: "08:00", end: "08:00", timeZone: "UTC") == nil)
        let daytime = try #require(SleepWindow(start: "09:00", end: "17:00", timeZone: "Not/AZone"))
        #expect(daytime.contains(formatter.date(from: "2026-01-10T10:00:00Z")!), "unknown zone: UTC")
    }

    @Test func recentIDsForgetTheOldestAndSurviveCoding() throws {
        var ids = RecentIDs(capacity: 2)
        let inserted = [ids.insert("a"), ids.insert("b"), ids.insert("c")]
        #expect(inserted == [true, true, true])
        #expect(!ids.contains("a") && ids.contains("b") && ids.contains("c"))
        let decoded = try JSONDecoder().decode(RecentIDs.self, from: JSONEncoder().encode(ids))
        #expect(decoded.ids == ["b", "c"] && decoded.capacity == 2)
        var again = decoded
        let repeated = again.insert("c")
        #expect(repeated == false)
    }

    @Test func idsThatCouldEscapeTheCacheFolderAreRefused() {
        for bad in ["", "..", "a/b", "a\u{0}b", "frames/+", "#", String(repeating: "a", count: 65), "a b", "é"] {
            #expect(!SafeID.isValid(bad), "\(bad)")
        }
        #expect(SafeID.isValid("0b9e7c1e-8a51-4c8e-9d7e-0d6f9a1b2c3d") && SafeID.isValid("A_z-9"))
        let topic = FrameAgent.albumTopic("albums/a1/photo_added")
        #expect(topic?.0 == "a1" && topic?.1 == "photo_added")
        #expect(FrameAgent.albumTopic("albums/a1/sync") == nil)
        #expect(FrameAgent.albumTopic("albums/../photo_added") == nil)
        #expect(FrameAgent.albumTopic("albums/a1/photo_added/x") == nil)
    }
}

@Suite struct DiskCacheTests {
    func folder() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("frame-cache-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.path
    }

    @Test func aFullCacheDeletesTheLeastRecentlyShownFileAndSurvivesARestart() async throws {
        let dir = try folder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cache = DiskCache(directory: dir, budget: 3000)
        try await cache.open()
        for (i, id) in ["a", "b", "c"].enumerated() {
            let evicted = try await cache.store(CacheEntry(fileID: id, version: "hd", etag: "\"\(id)\"", bytes: 1000, lastShown: Int64(i)),
                                                bytes: [UInt8](repeating: UInt8(i), count: 1000), protecting: [])
            #expect(evicted.isEmpty)
        }
        await cache.touch("a", at: 100)  // a was just on screen: b is now the least recently shown
        let evicted = try await cache.store(CacheEntry(fileID: "d", version: "hd", etag: nil, bytes: 1000, lastShown: 101),
                                            bytes: [UInt8](repeating: 9, count: 1000), protecting: ["c"])
        #expect(evicted == ["b"])
        let photos = URL(fileURLWithPath: dir).appendingPathComponent("photos")
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: photos.path)) == ["a", "c", "d"], "b's file is gone")
        #expect(try await cache.read("d") == [UInt8](repeating: 9, count: 1000))
        let usage = await cache.usage
        #expect(usage.bytes == 3000 && usage.files == 3)

        // Too big even after evicting everything unprotected: refused, nothing lost.
        await #expect(throws: FrameAgentError.self) {
            try await cache.store(CacheEntry(fileID: "huge", version: "hd", etag: nil, bytes: 3001, lastShown: 200),
                                  bytes: [UInt8](repeating: 1, count: 3001), protecting: [])
        }
        #expect(await cache.fileIDs == ["a", "c", "d"])

        // A stray file (a download cut by a crash) and a restart.
        try Data([1, 2, 3]).write(to: photos.appendingPathComponent("stray"))
        let reopened = DiskCache(directory: dir, budget: 3000)
        try await reopened.open()
        #expect(await reopened.fileIDs == ["a", "c", "d"])
        let a = await reopened.entry("a")
        #expect(a?.lastShown == 100 && a?.etag == "\"a\"")
        #expect(!FileManager.default.fileExists(atPath: photos.appendingPathComponent("stray").path))
        try await reopened.remove(["a"])
        #expect(!FileManager.default.fileExists(atPath: photos.appendingPathComponent("a").path))
        #expect(await reopened.usage.files == 2)
    }

    @Test func aMissingFileDropsItsEntryAtStart() async throws {
        let dir = try folder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cache = DiskCache(directory: dir, budget: 10_000)
        try await cache.open()
        _ = try await cache.store(CacheEntry(fileID: "x", version: "hd", etag: nil, bytes: 3, lastShown: 1), bytes: [1, 2, 3], protecting: [])
        try FileManager.default.removeItem(atPath: "\(dir)/photos/x")
        let reopened = DiskCache(directory: dir, budget: 10_000)
        try await reopened.open()
        #expect(await reopened.fileIDs.isEmpty)
        await #expect(throws: FrameAgentError.self) { try await reopened.read("x") }
    }
}

@Suite struct GatewayClientTests {
    let client = GatewayClient(base: "http://127.0.0.1:8080", token: "secret", timeout: .seconds(5))

    @Test func everyRequestGoesToTheConfiguredGateway() throws {
        #expect(try client.resolve("http://evil.example:666/api/v1/photos/f1").absoluteString == "http://127.0.0.1:8080/api/v1/photos/f1")
        #expect(try client.resolve("http://gw/api/v1/files/download/f1?size=frame:1024x600").absoluteString
                == "http://127.0.0.1:8080/api/v1/files/download/f1?size=frame:1024x600")
        #expect(try client.resolve("/api/v1/photos/f1").absoluteString == "http://127.0.0.1:8080/api/v1/photos/f1")
    }

    @Test func pathsOutsideTheAPIAreRefused() {
        for bad in ["/etc/passwd", "http://gw/metrics", "http://gw/api/v1/../../admin", "http://gw/api/v1/x/..", "", "api/v1/photos/x"] {
            #expect(throws: FrameAgentError.self, "\(bad)") { try client.resolve(bad) }
        }
    }

    @Test func onlyNetworkTroubleAndServerErrorsAreRetried() {
        #expect(FrameAgentError(.unreachable, "x").isTransient)
        #expect(FrameAgentError(.httpStatus, "x", status: 503).isTransient)
        #expect(FrameAgentError(.httpStatus, "x", status: 429).isTransient)
        #expect(!FrameAgentError(.httpStatus, "x", status: 404).isTransient)
        #expect(!FrameAgentError(.httpStatus, "x", status: 401).isTransient)
        #expect(!FrameAgentError(.badResponse, "x").isTransient)
        #expect(!FrameAgentError(.noRoom, "x").isTransient)
    }

    @Test func aGatewayThatIsNotThereIsUnreachable() async throws {
        let port = try freeTCPPort()
        let nowhere = GatewayClient(base: "http://127.0.0.1:\(port)", token: "t", timeout: .seconds(5))
        let error = await #expect(throws: FrameAgentError.self) { try await nowhere.metadata(fileID: "f1") }
        #expect(error?.code == .unreachable && error?.isTransient == true)
    }
}

@Suite struct FramebufferTests {
    /// A fake framebuffer: sysfs files in a folder, the device a plain file.
    func fake(bpp: Int, width: Int, height: Int, stride: Int) throws -> (sysfs: String, device: String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fb-\(UUID().uuidString.prefix(8))")
        let sys = dir.appendingPathComponent("fb7")
        try FileManager.default.createDirectory(at: sys, withIntermediateDirectories: true)
        try "\(bpp)\n".write(to: sys.appendingPathComponent("bits_per_pixel"), atomically: true, encoding: .utf8)
        try "\(width),\(height)\n".write(to: sys.appendingPathComponent("virtual_size"), atomically: true, encoding: .utf8)
        try "\(stride)\n".write(to: sys.appendingPathComponent("stride"), atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("dev"), withIntermediateDirectories: true)
        let device = dir.appendingPathComponent("dev/fb7").path
        _ = FileManager.default.createFile(atPath: device, contents: nil)
        return (dir.path, device)
    }

    /// 2×2 pixels: red, green / blue, white.
    let pixels = Pixels(width: 2, height: 2, rgb: [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255])

    @Test func thirtyTwoBitsPerPixelIsBGRXWithTheDevicesStride() throws {
        let (sysfs, device) = try fake(bpp: 32, width: 2, height: 2, stride: 12)
        let geometry = try FramebufferGeometry.read(device: device, sysfs: sysfs)
        #expect(geometry.width == 2 && geometry.height == 2 && geometry.stride == 12)
        try geometry.write(pixels, to: device)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: device)))
        #expect(bytes == [0, 0, 255, 255, 0, 255, 0, 255, 0, 0, 0, 0,
                          255, 0, 0, 255, 255, 255, 255, 255, 0, 0, 0, 0])
    }

    @Test func sixteenBitsPerPixelIsRGB565AndALargerScreenIsClipped() throws {
        let (sysfs, device) = try fake(bpp: 16, width: 1, height: 1, stride: 2)
        let geometry = try FramebufferGeometry.read(device: device, sysfs: sysfs)
        try geometry.write(pixels, to: device)
        #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: device))) == [0x00, 0xF8], "red, little-endian 565")
    }

    @Test func unsupportedDepthsAndMissingDevicesAreErrors() throws {
        let (sysfs, device) = try fake(bpp: 8, width: 2, height: 2, stride: 2)
        let error = #expect(throws: FrameAgentError.self) { try FramebufferGeometry.read(device: device, sysfs: sysfs) }
        #expect(error?.code == .display && error?.message.contains("8 bpp") == true)
        #expect(throws: FrameAgentError.self) { try FramebufferGeometry.read(device: "/dev/fb99", sysfs: sysfs) }
        let (sysfs2, _) = try fake(bpp: 32, width: 2, height: 2, stride: 8)
        let geometry = try FramebufferGeometry.read(device: "/nonexistent/fb7", sysfs: sysfs2)
        #expect(throws: FrameAgentError.self) { try geometry.write(pixels, to: "/nonexistent/fb7") }
    }

    @Test func aFadeBlendsLinearly() {
        let black = Pixels(width: 1, height: 1, rgb: [0, 0, 0]), white = Pixels(width: 1, height: 1, rgb: [255, 255, 255])
        #expect(DisplayDriver.blend(black, white, 0.5).rgb == [128, 128, 128])
        #expect(DisplayDriver.blend(black, white, 1).rgb == [255, 255, 255])
    }
}
