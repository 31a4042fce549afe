import Foundation
import FramecastTesting
import Gateway
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

/// Query parameters and partial bodies at the HTTP edge: `page_size` out of range on every list
/// route (400, never silently the default), tampered storage page tokens (400, never 500), and a
/// frame resized one side at a time.
@Suite struct InputEdgeTests {
    static let pageSizeMessage = "page_size must be a whole number from 1 to 200"
    /// Not a whole number from 1 to 200, each one: zero, negative, not a number, one too many,
    /// more than an Int32, empty, a fraction, an exponent.
    static let badPageSizes = ["0", "-1", "abc", "201", "99999999999", "", "1.5", "1e2", "-2147483648"]

    // MARK: page_size

    @Test func filesPageSizeOutsideOneTo200Is400AndOneIsOneFile() async throws {
        let h = try await GatewayHarness.make()
        try await h.run { client in
            let (_, token) = try await client.signUp()
            var uploaded: [String] = []
            for seed in [UInt8(1), 2] {
                let (response, file) = try await client.upload(smallPNG(seed), token: token, name: "p\(seed).png")
                #expect(response.status == .created)
                uploaded.append(try #require(file["file_id"] as? String))
            }
            for size in Self.badPageSizes {
                let (response, _) = try await client.json("/api/v1/storage/files?page_size=\(size)", token: token)
                #expect(response.status == .badRequest, "page_size=\(size)")
                #expect(response.errorCode == "bad_request", "page_size=\(size)")
                #expect(response.errorMessage == Self.pageSizeMessage, "page_size=\(size)")
            }

            // 1: one file and a token to the next; the next page is the other file, the last.
            let (first, firstPage) = try await client.json("/api/v1/storage/files?page_size=1", token: token)
            #expect(first.status == .ok)
            let firstFiles = (firstPage["files"] as? [[String: Any]])?.compactMap { $0["file_id"] as? String }
            #expect(firstFiles == [uploaded[1]], "newest first")
            let next = try #require(firstPage["next_page_token"] as? String)
            let (second, secondPage) = try await client.json("/api/v1/storage/files?page_size=1&page_token=\(next)", token: token)
            #expect(second.status == .ok)
            #expect((secondPage["files"] as? [[String: Any]])?.compactMap { $0["file_id"] as? String } == [uploaded[0]])
            #expect(secondPage["next_page_token"] == nil)

            // The edges, and no page_size at all (the default): every file.
            for query in ["?page_size=200", "?page_size=2", ""] {
                let (response, page) = try await client.json("/api/v1/storage/files\(query)", token: token)
                #expect(response.status == .ok, "\(query)")
                #expect((page["files"] as? [[String: Any]])?.count == 2, "\(query)")
            }
        }
        await h.close()
    }

    @Test func everyListRouteRefusesThePageSizesFilesRefuses() async throws {
        let h = try await GatewayHarness.make()
        let broker = try ServerProcess(.mosquitto)
        try await h.run(album: broker) { client in
            let (_, token) = try await client.signUp()
            let (_, album) = try await client.json("/api/v1/albums", .post, token: token, body: ["name": "Family"])
            let albumID = try #require(album["album_id"] as? String)
            #expect(try await client.json("/api/v1/albums", .post, token: token, body: ["name": "Friends"]).0.status == .created)
            #expect(try await client.json("/api/v1/playlists", .post, token: token, body: ["name": "Summer"]).0.status == .created)
            let routes = ["/api/v1/storage/files", "/api/v1/albums", "/api/v1/albums/\(albumID)/photos", "/api/v1/playlists"]
            for route in routes {
                for size in Self.badPageSizes {
                    let (response, _) = try await client.json("\(route)?page_size=\(size)", token: token)
                    #expect(response.status == .badRequest, "\(route)?page_size=\(size)")
                    #expect(response.errorMessage == Self.pageSizeMessage, "\(route)?page_size=\(size)")
                }
                for query in ["?page_size=1", "?page_size=200", ""] {
                    #expect(try await client.json("\(route)\(query)", token: token).0.status == .ok, "\(route)\(query)")
                }
            }
            // page_size=1 is one item where there are more: albums (Family and Friends).
            let (_, albums) = try await client.json("/api/v1/albums?page_size=1", token: token)
            #expect((albums["albums"] as? [[String: Any]])?.count == 1)
            #expect(albums["next_page_token"] is String)
        }
        broker.stop()
        await h.close()
    }

    // MARK: page_token

    /// base64url without padding, as storage's page tokens are.
    static func token(_ text: String) -> String {
        Data(text.utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    @Test func tamperedStoragePageTokensAre400NeverServerErrors() async throws {
        let h = try await GatewayHarness.make()
        try await h.run { client in
            let (_, token) = try await client.signUp()
            for seed in [UInt8(1), 2] {
                #expect(try await client.upload(smallPNG(seed), token: token, name: "p\(seed).png").0.status == .created)
            }
            let id = UUID().uuidString.lowercased()
            let tampered = [
                Self.token("99999999999999999999|\(id)"),                  // a huge number
                Self.token("-1|\(id)"),                                    // a negative one
                Self.token("-99999999999-01-01 00:00:00+00|\(id)"),
                Self.token("99999-01-01 00:00:00+00|\(id)"),               // past what a cursor holds
                Self.token("0000-01-01 00:00:00+00|\(id)"),                // no year 0
                Self.token("2024-13-01 00:00:00+00|\(id)"),
                Self.token("2023-02-29 00:00:00+00|\(id)"),                // not a leap year
                Self.token("2024-04-31 00:00:00+00|\(id)"),
                Self.token("2024-01-01 24:00:00+00|\(id)"),
                Self.token("2024-01-01 00:60:00+00|\(id)"),
                Self.token("2024-01-01 00:00:00.1234567+00|\(id)"),        // 7 fraction digits
                Self.token("2024-01-01 00:00:00+99|\(id)"),                // no such offset
                Self.token("2024-01-01 00:00:00|\(id)"),                   // no offset
                Self.token("٢٠٢٤-01-01 00:00:00+00|\(id)"),                 // digits, not ASCII
                Self.token("2024-01-01 00:00:00+00 BC|\(id)"),
                Self.token("2024-01-01 00:00:00+00|not-a-uuid"),
                Self.token("2024-01-01 00:00:00+00|\(id)|extra"),
                Self.token("|\(id)"),
                Self.token("1 2 3 4 : - . +|\(id)"),
                "garbage!",
                "%2F%2F%2F",
                String(repeating: "A", count: 300),
            ]
            for pageToken in tampered {
                let (response, _) = try await client.json("/api/v1/storage/files?page_token=\(pageToken)", token: token)
                #expect(response.status == .badRequest, "\(pageToken): \(response.status)")
                #expect(response.errorCode == "bad_request", "\(pageToken)")
                #expect(response.errorMessage == "page_token is not valid", "\(pageToken)")
            }

            // Well-formed cursors this API could have made still page: one far in the past (no
            // file is older), one far in the future (every file is older), one with no fraction.
            for (cursor, count) in [("1970-01-01 00:00:00+00", 0), ("9999-12-31 23:59:59.999999+00", 2),
                                    ("0001-01-01 00:00:00.5+00", 0), ("2000-02-29 12:00:00+00", 0)] {
                let (response, page) = try await client.json("/api/v1/storage/files?page_token=\(Self.token("\(cursor)|\(id)"))",
                                                             token: token)
                #expect(response.status == .ok, "\(cursor)")
                #expect((page["files"] as? [[String: Any]])?.count == count, "\(cursor)")
            }
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
        }
        await h.close()
    }

    // MARK: Frames

    @Test func aFrameIsResizedOneSideAtATime() async throws {
        let h = try await GatewayHarness.make()
        let broker = try ServerProcess(.mosquitto)
        try await h.run(album: broker) { client in
            let (_, alice) = try await client.signUp()
            let (_, bob) = try await client.signUp()
            let (registered, created) = try await client.json("/api/v1/frames", .post, token: alice,
                                                              body: ["name": "Kitchen", "width": 1024, "height": 600])
            #expect(registered.status == .created)
            let frameID = try #require(created["frame_id"] as? String)
            let frameToken = try #require(created["frame_token"] as? String)
            let uri = "/api/v1/frames/\(frameID)"
            func screen() async throws -> [Int?] {
                let (_, frame) = try await client.json(uri, token: alice)
                return [frame["width"] as? Int, frame["height"] as? Int]
            }

            // Width alone: the new width, the old height; then height alone.
            let (wider, widerFrame) = try await client.json(uri, .patch, token: alice, body: ["width": 1280])
            #expect(wider.status == .ok)
            #expect([widerFrame["width"] as? Int, widerFrame["height"] as? Int] == [1280, 600])
            #expect(try await screen() == [1280, 600])
            let (taller, tallerFrame) = try await client.json(uri, .patch, token: alice, body: ["height": 800])
            #expect(taller.status == .ok)
            #expect([tallerFrame["width"] as? Int, tallerFrame["height"] as? Int] == [1280, 800])
            #expect(try await screen() == [1280, 800])

            // Each side is still checked, alone or together; a refused resize changes nothing.
            for body in [["width": 5], ["height": 5], ["width": 0], ["height": -1], ["width": 16_385],
                         ["width": 5, "height": 600], ["width": 1024, "height": 20_000]] as [[String: Any]] {
                let (response, _) = try await client.json(uri, .patch, token: alice, body: body)
                #expect(response.status == .badRequest, "\(body)")
                #expect(response.errorCode == "bad_request", "\(body)")
            }
            #expect(try await screen() == [1280, 800])

            // Both, as before; a rename leaves the screen alone; the smallest side is allowed.
            #expect(try await client.json(uri, .patch, token: alice, body: ["width": 1920, "height": 1080]).0.status == .ok)
            #expect(try await screen() == [1920, 1080])
            let (renamed, renamedFrame) = try await client.json(uri, .patch, token: alice, body: ["name": "Hall"])
            #expect(renamed.status == .ok)
            #expect(renamedFrame["name"] as? String == "Hall")
            #expect(try await screen() == [1920, 1080])
            #expect(try await client.json(uri, .patch, token: alice, body: ["height": 16]).0.status == .ok)
            #expect(try await screen() == [1920, 16])

            // Not hers to resize, or no such frame: 404.
            #expect(try await client.json(uri, .patch, token: bob, body: ["width": 800]).0.status == .notFound)
            #expect(try await client.json("/api/v1/frames/\(UUID().uuidString.lowercased())", .patch, token: alice,
                                          body: ["width": 800]).0.status == .notFound)
            // The frame itself may change its own screen, one side too (a browser frame
            // re-registers its size when rotated or resized), and nothing else: a rename is 403.
            #expect(try await client.json(uri, .patch, token: frameToken, body: ["name": "Mine"]).0.status == .forbidden)
            #expect(try await screen() == [1920, 16])
            #expect(try await client.json(uri, .patch, token: frameToken, body: ["width": 800]).0.status == .ok)
            #expect(try await screen() == [800, 16])
        }
        broker.stop()
        await h.close()
    }
}
