import Foundation
@testable import FrameAgent
import FramecastTesting
import Testing
import Wire

extension EndToEndTests {
    /// `jpeg` with a comment segment (COM) right after SOI: the same picture in other bytes, so
    /// each upload is a new file (storage dedups by SHA-256 per user).
    static func variant(_ jpeg: [UInt8], _ text: String) -> [UInt8] {
        let comment = Array(text.utf8.prefix(1000))
        let length = comment.count + 2
        return [0xFF, 0xD8, 0xFF, 0xFE, UInt8(length >> 8), UInt8(length & 0xFF)] + comment + jpeg.dropFirst(2)
    }

    /// Issue 12, item 2: "a delete is a delete". 20 photos are uploaded into an album that a
    /// frame shows, each deleted after a pause of 0 ms to 2.5 s — before album or media heard of
    /// it, while media renders, after the frame was told. Right after each `DELETE` answers
    /// 204 the metadata and a version answer 404 (to the owner and to the frame); 10 s after
    /// the last one none is listed in the album, the metadata and every version answer 404,
    /// album and media hold nothing of them, no blob is left, the frame's cache holds none,
    /// and every `photo_added` the frame was told was followed by a `photo_removed`.
    @Test func photosDeletedRightAfterTheirUploadAreGoneEverywhere() async throws {
        try await withSystem { system in
            let account = try await system.signUp()
            let album = try await system.createAlbum(account)
            let (_, registration) = try await system.registerFrame(account, width: 1024, height: 600, albums: [album])
            let answer = (try? JSONSerialization.jsonObject(with: Data(registration))) as? [String: Any] ?? [:]
            let frameToken = try #require(answer["frame_token"] as? String)
            let (agent, _) = try system.agent(registration: registration)
            let base = system.baseURL
            let photo = try Photos.bytes(try Photos.plasma("Kite"))
            let pauses = [0, 0, 0, 0, 5, 10, 20, 40, 60, 80, 100, 150, 200, 300, 400, 600, 800, 1000, 1500, 2500]

            try await Observer.watching(system, ["albums/\(album)/#"]) { observer in
                try await withServices([agent], logger: quietLogger) {
                    try await ready(agent, album: album)
                    var files: [String] = []
                    var lastDelete = ContinuousClock.now
                    for (n, pause) in pauses.enumerated() {
                        let file = try await system.upload(account, Self.variant(photo, "delete-\(n)-\(UUID().uuidString)"),
                                                           album: album, name: "Delete\(n).jpg")
                        files.append(file)
                        if pause > 0 { try await Task.sleep(for: .milliseconds(pause)) }
                        let (deleted, _) = try await HTTP.request("DELETE", "\(base)/api/v1/storage/files/\(file)", token: account.token)
                        lastDelete = .now
                        try #require(deleted == 204, "DELETE of photo \(n) answered \(deleted)")
                        // At once, whatever album and media have heard so far.
                        let metadata = try await HTTP.request("GET", "\(base)/api/v1/photos/\(file)", token: account.token)
                        #expect(metadata.status == 404, "photo \(n) (pause \(pause) ms): metadata right after the delete")
                        let byFrame = try await HTTP.request("GET", "\(base)/api/v1/photos/\(file)", token: frameToken)
                        #expect(byFrame.status == 404, "photo \(n): metadata for the frame right after the delete")
                        let thumbnail = try await HTTP.request("GET", "\(base)/api/v1/files/download/\(file)?size=thumbnail",
                                                               token: account.token)
                        #expect(thumbnail.status == 404, "photo \(n): thumbnail right after the delete")
                    }
                    try await Task.sleep(until: lastDelete + .seconds(10), clock: .continuous)

                    // Album listings leave them out.
                    let (listed, listing) = try await HTTP.json("GET", "\(base)/api/v1/albums/\(album)/photos?page_size=200",
                                                                token: account.token)
                    #expect(listed == 200)
                    let inAlbum = Set(((listing["photos"] as? [[String: Any]]) ?? []).compactMap { $0["file_id"] as? String })
                    #expect(inAlbum.isDisjoint(with: files), "still listed: \(inAlbum.intersection(files).sorted())")

                    for (n, file) in files.enumerated() {
                        // Metadata and every version answer 404, to the owner and to the frame.
                        for token in [account.token, frameToken] {
                            let status = try await HTTP.request("GET", "\(base)/api/v1/photos/\(file)", token: token).status
                            #expect(status == 404, "photo \(n): metadata answered \(status)")
                        }
                        for size in ["original", "thumbnail", "hd", "frame:1024x600"] {
                            let status = try await HTTP.request("GET", "\(base)/api/v1/files/download/\(file)?size=\(size)",
                                                                token: account.token).status
                            #expect(status == 404, "photo \(n): \(size) answered \(status)")
                        }
                        let status = try await HTTP.request("GET", "\(base)/api/v1/files/download/\(file)?size=frame:1024x600",
                                                            token: frameToken).status
                        #expect(status == 404, "photo \(n): the frame's version answered \(status) to the frame")
                        // Nothing of it is left in album or media.
                        #expect(try await system.albumPhotoRows(album: album, file: file) == 0, "photo \(n) in album_photos")
                        #expect(try await system.versionRows(file: file).isEmpty, "photo \(n): versions kept")
                        let metadataRows = try await system.runtime.postgres.query(
                            "SELECT 1 FROM media.photo_metadata WHERE file_id = $1", [.text(file)]).count
                        #expect(metadataRows == 0, "photo \(n): media metadata kept")
                    }

                    // Every blob reference went (storage's with the files, media's with the versions;
                    // nothing else was uploaded here), so no blob is kept for them: each was removed
                    // when its last reference went, or — after a race the design allows, e.g. a
                    // render writing a blob another file's delete just removed — is left to the
                    // janitor's next sweep, referenced by nobody.
                    let references = try await system.runtime.postgres.query("SELECT owner, ref FROM blobs.refs")
                        .map { "\(try $0.decode("owner", as: String.self)):\(try $0.decode("ref", as: String.self))" }
                    #expect(references.isEmpty, "blob references left: \(references)")
                    print("delete right after upload: \(Self.blobFiles(system.blobRoot).count) unreferenced blob(s) left for the janitor")

                    // The frame: a photo_removed after each photo_added it was told of.
                    let added = observer.on(FrameTopics.photoAdded(album: album)).compactMap { seen in
                        (try? FrameTopics.decode(PhotoAddedMessage.self, from: seen.message.payload)).map { (file: $0.fileID, at: seen.at) }
                    }.filter { files.contains($0.file) }
                    let removed = observer.on(FrameTopics.photoRemoved(album: album)).compactMap { seen in
                        (try? FrameTopics.decode(PhotoRemovedMessage.self, from: seen.message.payload)).map { (file: $0.fileID, at: seen.at) }
                    }
                    for announcement in added {
                        let removal = removed.first { $0.file == announcement.file }
                        #expect(removal != nil, "photo_added for \(announcement.file) but no photo_removed")
                        if let removal { #expect(removal.at >= announcement.at, "photo_removed came before photo_added") }
                    }
                    print("delete right after upload: \(Set(added.map(\.file)).count) of \(files.count) photos were announced to the frame before their delete; each got photo_removed")

                    // And its cache holds none of them.
                    let photos = URL(fileURLWithPath: agent.configuration.cacheDirectory).appendingPathComponent("photos")
                    let cached = try await eventually(timeout: .seconds(10)) {
                        Set((try? FileManager.default.contentsOfDirectory(atPath: photos.path)) ?? []).isDisjoint(with: files)
                    }
                    #expect(cached, "the frame still caches a deleted photo")
                }
            }
        }
    }

    /// Every blob file under `root` (temp files aside).
    static func blobFiles(_ root: URL) -> [String] {
        (FileManager.default.enumerator(atPath: root.path)?.allObjects as? [String] ?? []).filter { path in
            let name = (path as NSString).lastPathComponent
            return !path.hasPrefix("tmp") && name.count == 64 && name.allSatisfy(\.isHexDigit)
        }.sorted()
    }
}
