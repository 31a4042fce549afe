import Foundation
import FramecastTesting
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

/// No silent orphans: an upload whose `metadata.album_id` names an album the uploader may not
/// add photos to is refused when it arrives — with the answer `POST /api/v1/albums/{id}/photos`
/// gives for that album — and nothing of it is stored (no file, no blob, no temp file),
/// whether the metadata part comes before the file or after it. Real gateway, storage, album
/// and media services.
@Suite struct UploadIntoAlbumTests {
    @Test func anAlbumTheUploaderMayNotAddToIsRefusedAndNothingIsStored() async throws {
        let h = try await GatewayHarness.make()
        let broker = try ServerProcess(.mosquitto)
        try await h.run(album: broker) { client in
            let bobEmail = "bob-\(UUID().uuidString.prefix(6).lowercased())@example.com"
            let carolEmail = "carol-\(UUID().uuidString.prefix(6).lowercased())@example.com"
            let (_, alice) = try await client.signUp()
            let (_, bob) = try await client.signUp(bobEmail)
            let (_, carol) = try await client.signUp(carolEmail)
            let (_, dave) = try await client.signUp()

            let (_, album) = try await client.json("/api/v1/albums", .post, token: alice, body: ["name": "Family"])
            let albumID = try #require(album["album_id"] as? String)
            #expect(try await client.json("/api/v1/albums/\(albumID)/members", .post, token: alice,
                                          body: ["email": bobEmail, "role": "contributor"]).0.status == .created)
            #expect(try await client.json("/api/v1/albums/\(albumID)/members", .post, token: alice,
                                          body: ["email": carolEmail, "role": "viewer"]).0.status == .created)
            let (_, old) = try await client.json("/api/v1/albums", .post, token: alice, body: ["name": "Old"])
            let deletedID = try #require(old["album_id"] as? String)
            #expect(try await client.json("/api/v1/albums/\(deletedID)", .delete, token: alice).0.status == .noContent)
            // A photo of Alice's (no album named: her default album), to ask the album route
            // the same questions.
            let (_, kept) = try await client.upload(smallPNG(1), token: alice, name: "kept.png")
            let keptID = try #require(kept["file_id"] as? String)

            let cases: [(who: String, token: String, album: String, status: HTTPResponse.Status)] = [
                ("a stranger to the album", dave, albumID, .notFound),
                ("a viewer", carol, albumID, .forbidden),
                ("a deleted album", alice, deletedID, .notFound),
                ("an album that never was", alice, UUID().uuidString.lowercased(), .notFound),
                ("an id that is not a uuid", alice, "family", .notFound),
                ("an id that cannot be one", alice, "a+b", .badRequest),
            ]
            var seed: UInt8 = 10
            for refused in cases {
                let route = try await client.json("/api/v1/albums/\(refused.album)/photos", .post, token: refused.token,
                                                  body: ["file_id": keptID])
                #expect(route.0.status == refused.status, "the album route, \(refused.who)")
                for metadataFirst in [false, true] {
                    seed += 1
                    let photo = smallPNG(seed)
                    let (response, _) = try await client.upload(photo, token: refused.token, album: refused.album,
                                                                metadataFirst: metadataFirst)
                    #expect(response.status == refused.status, "\(refused.who), metadata first: \(metadataFirst)")
                    #expect(response.status == route.0.status, "answered as the album route: \(refused.who)")
                    #expect(response.errorCode == route.0.errorCode, "\(refused.who)")
                    #expect(h.storedCopies(of: photo).isEmpty, "no blob of the refused upload: \(refused.who)")
                }
            }

            // With the metadata first the album is asked before the file is read: a file that is
            // not even an image is refused for the album (404), not for its type (415).
            let notAnImage = try await client.upload(Array(repeating: 7, count: 100_000), token: dave, album: albumID,
                                                     metadataFirst: true)
            #expect(notAnImage.0.status == .notFound)

            // Nothing was registered for anyone, and no temp file stayed behind.
            for token in [dave, carol] {
                let (_, listed) = try await client.json("/api/v1/storage/files", token: token)
                #expect((listed["files"] as? [Any])?.isEmpty == true)
            }
            let (_, aliceFiles) = try await client.json("/api/v1/storage/files", token: alice)
            #expect((aliceFiles["files"] as? [[String: Any]])?.compactMap { $0["file_id"] as? String } == [keptID])
            // (Media may be writing a version of Alice's photo into tmp/ for a moment.)
            #expect(try await eventually { h.blobFiles().allSatisfy { !$0.hasPrefix("tmp/") } }, "\(h.blobFiles())")

            // The owner and a contributor, metadata before or after the file: 201, and the photo
            // lands in the album.
            var added: [String] = []
            for (token, metadataFirst) in [(alice, false), (bob, true), (alice, true), (bob, false)] {
                seed += 1
                let (response, file) = try await client.upload(smallPNG(seed), token: token, album: albumID, metadataFirst: metadataFirst)
                #expect(response.status == .created)
                added.append(try #require(file["file_id"] as? String))
            }
            var listed: Set<String> = []
            let landed = try await eventually(timeout: .seconds(30)) {
                let (_, page) = try await client.json("/api/v1/albums/\(albumID)/photos", token: alice)
                listed = Set((page["photos"] as? [[String: Any]] ?? []).compactMap { $0["file_id"] as? String })
                return listed == Set(added)
            }
            #expect(landed, "the album holds exactly the accepted uploads: \(listed) vs \(added)")
        }
        broker.stop()
        await h.close()
    }
}

extension GatewayHarness {
    /// The blob files (temp files included) holding exactly `bytes`.
    func storedCopies(of bytes: [UInt8]) -> [String] {
        blobFiles().filter { path in
            (try? Data(contentsOf: blobRoot.appendingPathComponent(path))).map { Array($0) == bytes } ?? false
        }
    }
}

extension TestClientProtocol {
    /// A PNG upload whose metadata names `album`, the metadata part before or after the file.
    func upload(_ bytes: [UInt8], token: String, album: String, metadataFirst: Bool) async throws -> (TestResponse, [String: Any]) {
        let metadata = Part(name: "metadata", bytes: Array(try JSONSerialization.data(withJSONObject: ["album_id": album])))
        let file = Part(name: "file", fileName: "photo.png", contentType: "image/png", bytes: bytes)
        let (type, body) = multipart(metadataFirst ? [metadata, file] : [file, metadata])
        let response = try await execute(uri: "/api/v1/storage/photos/upload", method: .post,
                                         headers: [.contentType: type, .authorization: "Bearer \(token)"], body: body)
        return (response, response.jsonObject)
    }
}
