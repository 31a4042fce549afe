import Foundation
import Testing
import Wire

/// The frames' JSON payloads across versions: what an older album service sent (no `seq`, no
/// `versions`, no `album_seqs`) still decodes, what a newer one sends carries them, and the
/// fields left out stay out of the encoding.
@Suite struct FrameTopicsTests {
    func json(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test func anOlderPhotoAddedDecodesWithoutTheNewFields() throws {
        let old = json("""
            {"v":1,"file_id":"f1","album_id":"a1","file_name":"x.jpg","content_type":"image/jpeg","labels":["leaf"],
             "taken_at":1600000000000,"media_service_url":"http://gw/api/v1/photos/f1"}
            """)
        let message = try FrameTopics.decode(PhotoAddedMessage.self, from: old)
        #expect(message.fileID == "f1" && message.albumID == "a1" && message.labels == ["leaf"])
        #expect(message.seq == nil && message.versions == nil)
        let encoded = String(decoding: FrameTopics.encode(message), as: UTF8.self)
        #expect(!encoded.contains("\"seq\"") && !encoded.contains("\"versions\""), "absent fields stay absent: \(encoded)")
    }

    @Test func aPhotoAddedCarriesItsNumberAndCapabilityURLs() throws {
        let new = json("""
            {"v":1,"file_id":"f1","album_id":"a1","file_name":"x.jpg","content_type":"image/jpeg","labels":[],
             "media_service_url":"http://gw/api/v1/photos/f1","seq":42,"some_later_field":{"x":1},
             "versions":[{"size":"frame:1024x600","width":1024,"height":600,"format":"jpeg",
                          "url":"http://gw/c/0a1b2c3d/1767225600/sig/f1/abc.jpg"},
                         {"size":"hd","width":1728,"height":1080,"format":"webp","url":"http://gw/c/k/1/s/f1/def.webp"}]}
            """)
        let message = try FrameTopics.decode(PhotoAddedMessage.self, from: new)
        #expect(message.seq == 42)
        #expect(message.takenAt == nil)
        #expect(message.versions == [
            PhotoVersionLink(size: "frame:1024x600", width: 1024, height: 600, format: "jpeg", url: "http://gw/c/0a1b2c3d/1767225600/sig/f1/abc.jpg"),
            PhotoVersionLink(size: "hd", width: 1728, height: 1080, format: "webp", url: "http://gw/c/k/1/s/f1/def.webp"),
        ])
        #expect(try FrameTopics.decode(PhotoAddedMessage.self, from: FrameTopics.encode(message)) == message)
        let encoded = String(decoding: FrameTopics.encode(message), as: UTF8.self)
        #expect(encoded.contains(#""seq":42"#) && encoded.contains(#""url":"http://gw/c/k/1/s/f1/def.webp""#), "no escaped slashes: \(encoded)")
    }

    @Test func photoRemovedWithAndWithoutANumber() throws {
        let old = try FrameTopics.decode(PhotoRemovedMessage.self, from: json(#"{"v":1,"file_id":"f","album_id":"a","reason":"removed"}"#))
        #expect(old == PhotoRemovedMessage(fileID: "f", albumID: "a", reason: "removed"))
        #expect(old.seq == nil)
        let new = PhotoRemovedMessage(fileID: "f", albumID: "a", reason: "file_deleted", seq: 7)
        #expect(String(decoding: FrameTopics.encode(new), as: UTF8.self)
                == #"{"album_id":"a","file_id":"f","reason":"file_deleted","seq":7,"v":1}"#)
        #expect(try FrameTopics.decode(PhotoRemovedMessage.self, from: FrameTopics.encode(new)) == new)
    }

    @Test func aSyncWithAndWithoutAlbumNumbers() throws {
        let old = try FrameTopics.decode(FrameSyncMessage.self, from: json("""
            {"v":1,"frame_id":"fr","seq":3,"album_ids":["a"],"generated_at":5,
             "photos":[{"v":1,"file_id":"f","album_id":"a","file_name":"x","content_type":"image/jpeg","labels":[],
                        "media_service_url":"http://gw/api/v1/photos/f"}]}
            """))
        #expect(old.albumSeqs == nil && old.photos.count == 1 && old.photos[0].versions == nil)
        let new = FrameSyncMessage(frameID: "fr", seq: 4, albumIDs: ["a", "b"], photos: [], generatedAt: 6, albumSeqs: ["a": 12, "b": 0])
        let encoded = String(decoding: FrameTopics.encode(new), as: UTF8.self)
        #expect(encoded.contains(#""album_seqs":{"a":12,"b":0}"#), "\(encoded)")
        #expect(try FrameTopics.decode(FrameSyncMessage.self, from: FrameTopics.encode(new)) == new)
    }

    @Test func aSyncRequestIsAStatus() throws {
        let request = try FrameTopics.decode(FrameStatusMessage.self, from: json(#"{"v":1,"status":"sync_request"}"#))
        #expect(request.status == FrameStatusMessage.syncRequest)
        #expect(FrameStatusMessage.syncRequest == "sync_request")
        #expect(String(decoding: FrameTopics.encode(FrameStatusMessage(status: FrameStatusMessage.syncRequest)), as: UTF8.self)
                == #"{"status":"sync_request","v":1}"#)
    }
}
