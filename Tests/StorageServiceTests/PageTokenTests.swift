import Foundation
import FramecastTesting
import ServiceKit
@testable import StorageService
import Testing
import Wire

/// Page tokens of `ListFiles` and `ListDeletedFiles`: base64url of `time|file id`, the time as
/// PostgreSQL writes a `timestamptz` in UTC. What a token could not have come from this service
/// is `invalid` (400 at the gateway) before any query, never a `::timestamptz` PostgreSQL refuses
/// (an internal error).
@Suite struct PageTokenTests {
    static let id = "0b7e4c1e-3f2a-4d5b-9c8e-1a2b3c4d5e6f"

    static func token(_ text: String) -> String {
        Data(text.utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Times as `created_at::text` reads in a UTC session: every fraction length, leap days, the
    /// first and last years, and offsets another session's TimeZone would give.
    static let cursorTimes = [
        "2024-05-06 07:08:09.123456+00", "2024-05-06 07:08:09.5+00", "2024-05-06 07:08:09+00",
        "2024-02-29 23:59:59.999999+00", "2000-02-29 00:00:00+00", "0001-01-01 00:00:00+00",
        "9999-12-31 23:59:59.999999+00", "2024-05-06 09:08:09+02", "2024-05-06 01:38:09-05:30",
    ]

    /// Not a time `::timestamptz` takes, or not one a cursor holds.
    static let impossibleTimes = [
        "", "99999999999999999999", "-1", "0", "1717000000000", "-99999999999-01-01 00:00:00+00",
        "99999-01-01 00:00:00+00", "0000-01-01 00:00:00+00", "2024-00-10 00:00:00+00", "2024-13-01 00:00:00+00",
        "2024-01-00 00:00:00+00", "2024-01-32 00:00:00+00", "2023-02-29 00:00:00+00", "1900-02-29 00:00:00+00",
        "2024-04-31 00:00:00+00", "2024-01-01 24:00:00+00", "2024-01-01 00:60:00+00", "2024-01-01 00:00:60+00",
        "2024-01-01 00:00:00.+00", "2024-01-01 00:00:00.1234567+00", "2024-01-01 00:00:00+15", "2024-01-01 00:00:00+99",
        "2024-01-01 00:00:00+00:60", "2024-01-01 00:00:00", "2024-01-01 00:00:00+0", "2024-01-01T00:00:00+00",
        "2024-1-01 00:00:00+00", " 2024-01-01 00:00:00+00", "2024-01-01 00:00:00+00 ", "2024-01-01 00:00:00+00 BC",
        "٢٠٢٤-01-01 00:00:00+00", "2024-01-01 00:00:00+00\u{0}", "infinity", "epoch", "now", "1 2 3 4 : - . +",
    ]

    @Test func tokensOfRealCursorsDecodeToTheirTimeAndFile() throws {
        for time in Self.cursorTimes {
            let decoded = try #require(StorageService.decodeCursor(StorageService.encodeCursor(createdAt: time, fileID: Self.id)),
                                       "\(time)")
            #expect(decoded.createdAt == time)
            #expect(decoded.fileID == Self.id)
        }
        // The file id as the service compares it, whatever its case.
        #expect(StorageService.decodeCursor(Self.token("2024-05-06 07:08:09+00|\(Self.id.uppercased())"))?.fileID == Self.id)
    }

    @Test func tokensWithImpossibleTimesOrIdsDecodeToNothing() {
        for time in Self.impossibleTimes {
            #expect(StorageService.decodeCursor(Self.token("\(time)|\(Self.id)"))?.fileID == nil, "\(time)")
        }
        for token in [
            "", "garbage!", "////", "%%%%", String(repeating: "A", count: 201),
            Self.token("2024-05-06 07:08:09+00"), Self.token("2024-05-06 07:08:09+00|"), Self.token("|\(Self.id)"),
            Self.token("2024-05-06 07:08:09+00|not-a-uuid"), Self.token("2024-05-06 07:08:09+00|\(Self.id)|\(Self.id)"),
            Self.token("2024-05-06 07:08:09+00||\(Self.id)"),
        ] {
            #expect(StorageService.decodeCursor(token)?.fileID == nil, "\(token)")
        }
    }

    @Test func tamperedTokensAreInvalidRequestsNeverInternalErrors() async throws {
        let h = try await StorageHarness.make()
        let owner = user()
        try await h.running {
            for name in Photos.plasmaNames.prefix(2) {
                _ = try await h.register(try Photos.bytes(try Photos.plasma(name)), user: owner, name: "\(name).jpg")
            }
            for time in Self.impossibleTimes {
                let token = Self.token("\(time)|\(Self.id)")
                let listed = await #expect(throws: ServiceError.self, "\(time)") {
                    _ = try await h.client.call(StorageAPI.listFiles, ListFilesRequest(userID: owner, pageToken: token))
                }
                #expect(listed?.status == .invalid, "\(time)")
                #expect(listed?.message == "page_token is not valid", "\(time)")
                let deleted = await #expect(throws: ServiceError.self, "\(time)") {
                    _ = try await h.client.call(StorageAPI.listDeletedFiles, ListDeletedFilesRequest(since: 0, pageToken: token))
                }
                #expect(deleted?.status == .invalid, "\(time)")
            }

            // Well-formed cursors query: nothing is older than the year 1, everything older than 9999.
            for (time, count) in [("0001-01-01 00:00:00+00", 0), ("9999-12-31 23:59:59.999999+00", 2),
                                  ("2024-05-06 01:38:09-05:30", 0)] {
                let reply = try await h.client.call(StorageAPI.listFiles, ListFilesRequest(
                    userID: owner, pageToken: Self.token("\(time)|\(Self.id)")))
                #expect(reply.files.count == count, "\(time)")
            }
            // And a token the service handed out pages on.
            let first = try await h.client.call(StorageAPI.listFiles, ListFilesRequest(userID: owner, pageSize: 1))
            #expect(first.files.count == 1 && !first.nextPageToken.isEmpty)
            let second = try await h.client.call(StorageAPI.listFiles, ListFilesRequest(
                userID: owner, pageSize: 1, pageToken: first.nextPageToken))
            #expect(second.files.count == 1 && second.files.first?.fileID != first.files.first?.fileID)
        }
        await h.close()
    }
}
