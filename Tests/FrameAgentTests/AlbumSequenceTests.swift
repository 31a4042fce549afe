import Foundation
@testable import FrameAgent
import Testing
import Wire

// The frame edge on the agent's side: per-album sequence numbers (what is next, a gap, a repeat,
// an impossible number), syncs built before notifications already received, and the capability
// URL of this screen's version chosen from a notification or a sync.

@Suite struct AlbumSequenceTests {
    func photo(_ file: String, _ album: String = "alb1", versions: [PhotoVersionLink]? = nil) -> PhotoAddedMessage {
        PhotoAddedMessage(fileID: file, albumID: album, fileName: "x.jpg", contentType: "image/jpeg", labels: [], takenAt: nil,
                          mediaServiceURL: "http://gw/api/v1/photos/\(file)", versions: versions)
    }

    func sync(_ seq: Int64, _ files: [String], albums: [String] = ["alb1"], albumSeqs: [String: Int64]?) -> FrameSyncMessage {
        FrameSyncMessage(frameID: "f1", seq: seq, albumIDs: albums, photos: files.map { photo($0) }, generatedAt: 0, albumSeqs: albumSeqs)
    }

    static func link(_ size: String, _ format: String = "jpeg") -> PhotoVersionLink {
        PhotoVersionLink(size: size, width: 1, height: 1, format: format, url: "http://gw/c/k/1/s/f/\(size)-\(format)")
    }

    @Test func aNotificationIsNextAGapARepeatOrImpossible() async {
        let core = AgentCore(defaultInterval: .seconds(30))
        await core.restore(nil, cached: [])
        #expect(await core.observe(album: "alb1", seq: nil) == .unnumbered, "an older service: no numbers")
        #expect(await core.observe(album: "alb1", seq: 4) == .next, "the first number heard for the album")
        #expect(await core.observe(album: "alb1", seq: 5) == .next)
        #expect(await core.observe(album: "alb1", seq: 5) == .seen, "a repeat")
        #expect(await core.observe(album: "alb1", seq: 3) == .seen, "older than the last one")
        #expect(await core.observe(album: "alb1", seq: 8) == .gap(missed: 2), "6 and 7 never came")
        #expect(await core.observe(album: "alb1", seq: 9) == .next, "after a gap, the count goes on from the newest")
        #expect(await core.observe(album: "alb2", seq: 1) == .next, "each album its own numbers")

        for impossible: Int64 in [0, -1, AgentCore.maxSeq + 1, 9 + AgentCore.maxSeqJump + 1] {
            #expect(await core.observe(album: "alb1", seq: impossible) == .implausible, "\(impossible)")
        }
        #expect(await core.lastSeq(album: "alb1") == 9, "an impossible number is not adopted")
        #expect(await core.observe(album: "alb1", seq: 10) == .next)
    }

    @Test func aSyncSetsTheNumbersExpectedNext() async {
        let core = AgentCore(defaultInterval: .seconds(30))
        await core.restore(nil, cached: [])
        let outcome = await core.applySync(sync(1, ["p1"], albums: ["alb1", "alb2"], albumSeqs: ["alb1": 5, "alb2": 0]))
        #expect(outcome?.behind == [])
        #expect(await core.observe(album: "alb1", seq: 6) == .next)
        #expect(await core.observe(album: "alb2", seq: 2) == .gap(missed: 1))
        #expect(await core.observe(album: "alb1", seq: 5) == .seen, "the sync already brought it")

        // An album the frame no longer shows forgets its number.
        _ = await core.applySync(sync(2, ["p1"], albums: ["alb1"], albumSeqs: ["alb1": 6]))
        #expect(await core.lastSeq(album: "alb2") == nil)
        #expect(await core.lastSeq(album: "alb1") == 6)
        // A sync from an older service (no numbers) keeps what the frame knows.
        _ = await core.applySync(sync(3, ["p1"], albumSeqs: nil))
        #expect(await core.lastSeq(album: "alb1") == 6)
    }

    /// A sync built before notifications the frame already acted on (a retained one, delivered
    /// after a persistent session's queued messages) must not undo them: that album's photos
    /// stay, the frame asks for a newer sync, and believes the next one whatever its number.
    @Test func aSyncOlderThanTheNotificationsKeepsWhatTheyBrought() async {
        let core = AgentCore(defaultInterval: .seconds(30))
        await core.restore(nil, cached: [])
        _ = await core.applySync(sync(1, ["p1"], albums: ["alb1", "alb2"], albumSeqs: ["alb1": 1, "alb2": 1]))
        #expect(await core.observe(album: "alb1", seq: 2) == .next)
        await core.photoAdded("p2", album: "alb1")

        let stale = await core.applySync(sync(2, ["p1", "q1"], albums: ["alb1", "alb2"], albumSeqs: ["alb1": 1, "alb2": 1]))
        #expect(stale?.behind == ["alb1"])
        #expect(await core.holds("p2", album: "alb1"), "the photo a notification brought stays")
        #expect(await core.holds("q1", album: "alb1") == false, "the old sync's list for that album is not taken")
        #expect(await core.lastSeq(album: "alb1") == 2)

        // The frame asked; the answer lists what the album holds now.
        let fresh = await core.applySync(sync(3, ["p2", "p1"], albums: ["alb1", "alb2"], albumSeqs: ["alb1": 2, "alb2": 1]))
        #expect(fresh?.behind == [])
        #expect(await core.wantedIDs == ["p2", "p1"])

        // Behind twice in a row on the same album: believed (the service's numbers went back).
        _ = await core.applySync(sync(4, ["p1"], albumSeqs: ["alb1": 1]))
        let again = await core.applySync(sync(5, ["p1"], albumSeqs: ["alb1": 1]))
        #expect(again?.behind == [])
        #expect(await core.wantedIDs == ["p1"])
        #expect(await core.lastSeq(album: "alb1") == 1)
    }

    @Test func aSavedStateWithoutNumbersStillLoads() throws {
        // Unset, the field is left out: the file is then what an agent before album numbers saved.
        let saved = try JSONEncoder().encode(AgentState())
        #expect(!String(decoding: saved, as: UTF8.self).contains("albumSeqs"))
        let state = try JSONDecoder().decode(AgentState.self, from: saved)
        #expect(state.albumSeqs == nil)
        var current = AgentState()
        current.albumSeqs = ["alb1": 12]
        #expect(try JSONDecoder().decode(AgentState.self, from: JSONEncoder().encode(current)).albumSeqs == ["alb1": 12])
    }

    @Test func thisScreensVersionInThePreferredFormatElseJPEG() {
        let versions = [Self.link("thumbnail"), Self.link("hd"), Self.link("frame:1024x600"), Self.link("frame:1024x600", "webp"),
                        Self.link("frame:600x1024")]
        #expect(DirectVersion.pick(versions, width: 1024, height: 600, preferredFormat: "webp")?.format == "webp")
        #expect(DirectVersion.pick(versions, width: 1024, height: 600, preferredFormat: "jpeg")?.format == "jpeg")
        #expect(DirectVersion.pick(versions, width: 1024, height: 600, preferredFormat: nil)?.url == Self.link("frame:1024x600").url)
        #expect(DirectVersion.pick(versions, width: 600, height: 1024, preferredFormat: "webp")?.size == "frame:600x1024",
                "no WebP for this screen: its JPEG")
        #expect(DirectVersion.pick(versions, width: 800, height: 480, preferredFormat: nil) == nil,
                "no version for this screen: the metadata document decides")
        #expect(DirectVersion.pick([Self.link("frame:800x480", "png")], width: 800, height: 480, preferredFormat: nil) == nil)
    }

    @Test func theCoreKeepsTheURLOfThisScreensVersion() async {
        let core = AgentCore(defaultInterval: .seconds(30), screenWidth: 1024, screenHeight: 600)
        await core.restore(nil, cached: [])
        let screen = Self.link("frame:1024x600")
        var first = sync(1, [], albumSeqs: ["alb1": 0])
        first.photos = [photo("p1", versions: [Self.link("hd"), screen]), photo("p2", versions: [Self.link("frame:600x1024")]), photo("p3")]
        _ = await core.applySync(first)
        #expect(await core.link(for: "p1") == screen)
        #expect(await core.link(for: "p2") == nil, "another screen's version is not this frame's")
        #expect(await core.link(for: "p3") == nil)

        await core.photoAdded("p4", album: "alb1")
        await core.remember("p4", versions: [screen])
        #expect(await core.link(for: "p4") == screen)
        #expect(await core.photoRemoved("p4", album: "alb1"))
        #expect(await core.link(for: "p4") == nil, "a removed photo's URL goes with it")
        await core.forgetLink("p1")
        #expect(await core.link(for: "p1") == nil)

        // A frame without a known screen never downloads directly.
        let blind = AgentCore(defaultInterval: .seconds(30))
        await blind.restore(nil, cached: [])
        _ = await blind.applySync(first)
        #expect(await blind.link(for: "p1") == nil)
    }

    @Test func aRepeatOnlyRetriesTheDownloadOfAPhotoStillMissing() async {
        let core = AgentCore(defaultInterval: .seconds(30))
        await core.restore(nil, cached: [])
        _ = await core.applySync(sync(1, ["p1", "p2"], albumSeqs: ["alb1": 2]))
        _ = await core.beginFetch("p1")
        await core.fetchFailed("p1", transient: false)
        #expect(await core.duePending() == ["p2"], "p1 failed for good until something asks again")
        #expect(await core.retryIfMissing("p1"))
        #expect(await core.duePending() == ["p1", "p2"])
        _ = await core.beginFetch("p2")
        _ = await core.fetched("p2", showNext: false)
        #expect(await core.retryIfMissing("p2") == false, "cached: nothing to do")
        #expect(await core.retryIfMissing("p9") == false, "not wanted: nothing to do")
    }
}

@Suite struct CapabilityURLTests {
    let client = GatewayClient(base: "http://127.0.0.1:8080", token: "secret", timeout: .seconds(5))

    @Test func capabilityURLsAreFetchedAsTheyAre() throws {
        let url = "http://gw.example:8080/c/0a1b2c3d/1767225600/\(String(repeating: "s", count: 43))/f1/\(String(repeating: "a", count: 64)).jpg"
        #expect(try client.capabilityURL(url).absoluteString == url, "another host is fine: no token goes with it")
        let prefixed = "https://cdn.example/framecast/c/k/1/sig/f1/blob.webp"
        #expect(try client.capabilityURL(prefixed).absoluteString == prefixed, "below the public URL's own path")
    }

    @Test func anythingElseIsRefused() {
        for bad in ["/c/k/1/sig/f1/blob.jpg", "ftp://gw/c/k/1/sig/f1/blob.jpg", "http://gw/c/k/1/sig/f1/blob.jpg?x=1",
                    "http://user:pw@gw/c/k/1/sig/f1/blob.jpg", "http://gw/c/k/1/../f1/blob.jpg", "http://gw/api/v1/photos/f1",
                    "http://gw/c/k/1/sig/f1", "http://gw/c/k/1/sig/f1/blob.jpg/", "http://gw/x/k/1/sig/f1/blob.jpg", "not a url"] {
            #expect(throws: FrameAgentError.self, "\(bad)") { try client.capabilityURL(bad) }
        }
    }

    @Test func errorsDoNotRepeatTheSignature() throws {
        let url = try #require(URL(string: "http://gw:8080/c/k1/1767225600/THESIGNATURE/f1/blob.jpg"))
        let shown = GatewayClient.redacted(url)
        #expect(!shown.contains("THESIGNATURE"))
        #expect(shown == "http://gw:8080/c/k1/1767225600/…/f1/blob.jpg")
    }
}
