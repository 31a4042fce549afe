import Foundation
import FramecastTesting
import ServiceKit
@testable import StorageService
import Testing
import Wire

/// The tombstones of deleted files and `ListDeletedFiles`, which gateway replicas catch up with
/// (a deleted photo's capability URLs answer 404 on every replica, one started later included).
@Suite struct DeletedFilesTests {
    @Test func deletesAreListedOldestFirstInPagesUntilPruned() async throws {
        let h = try await StorageHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("Kite"))
        try await h.running {
            // The same bytes for three users: three files.
            var files: [(user: String, id: String)] = []
            for _ in 0..<3 {
                let owner = user()
                let file = try #require(try await h.register(photo, user: owner).file)
                files.append((owner, file.fileID))
            }
            let since = EventTime.now() - 1000
            for file in files {
                _ = try await h.client.call(StorageAPI.deleteFile, DeleteFileRequest(userID: file.user, fileID: file.id))
            }
            let after = EventTime.now() + 1000

            // Oldest first, two per page.
            let first = try await h.client.call(StorageAPI.listDeletedFiles, ListDeletedFilesRequest(since: since, pageSize: 2))
            #expect(first.files.map(\.fileID) == files.prefix(2).map(\.id))
            #expect(!first.nextPageToken.isEmpty)
            let second = try await h.client.call(StorageAPI.listDeletedFiles, ListDeletedFilesRequest(
                since: since, pageSize: 2, pageToken: first.nextPageToken))
            #expect(second.files.map(\.fileID) == [files[2].id])
            #expect(second.nextPageToken.isEmpty)
            let times = (first.files + second.files).map(\.deletedAt)
            #expect(times == times.sorted() && times.allSatisfy { $0 >= since && $0 <= after })
            // Kept for 9 days by default: complete as far back as a capability URL lives.
            let retained = first.retainedSince
            #expect(retained <= EventTime.now() - 8 * 86_400_000 && retained > EventTime.now() - 10 * 86_400_000)

            // One page by default; nothing deleted since a later time.
            let all = try await h.client.call(StorageAPI.listDeletedFiles, ListDeletedFilesRequest(since: since))
            #expect(all.files.map(\.fileID) == files.map(\.id) && all.nextPageToken.isEmpty)
            let none = try await h.client.call(StorageAPI.listDeletedFiles, ListDeletedFilesRequest(since: after))
            #expect(none.files.isEmpty)
            let error = await #expect(throws: ServiceError.self) {
                _ = try await h.client.call(StorageAPI.listDeletedFiles, ListDeletedFilesRequest(since: since, pageToken: "nonsense!"))
            }
            #expect(error?.status == .invalid)

            // Pruned once older than the retention (here: at once).
            let removed = try await DeletedFiles(schema: StorageService.schema, retention: .zero).prune(on: h.backend.postgres)
            #expect(removed == 3)
            let pruned = try await h.client.call(StorageAPI.listDeletedFiles, ListDeletedFilesRequest(since: since))
            #expect(pruned.files.isEmpty)
        }
        await h.close()
    }
}
