import BlobStore
import Foundation
import FramecastTesting
import Postgres
import ServiceKit
import StorageService
import Testing

/// The blob store's reference table against a fresh PostgreSQL database and a scratch blob
/// directory: the one place that decides when a blob goes.
struct ReferencesHarness {
    let pool: PostgresPool
    let store: BlobStore
    let references: BlobReferences

    static func make(connections: Int = 4) async throws -> ReferencesHarness {
        let connInfo = try await TestServers.makeDatabase()
        let pool = PostgresPool(configuration: PostgresConfiguration(connInfo: connInfo, maxConnections: connections),
                                logger: quietLogger)
        try await BlobReferences.migrate(on: pool, logger: quietLogger)
        let store = BlobStore(root: try TestServers.scratchDirectory("references"))
        return ReferencesHarness(pool: pool, store: store,
                                 references: BlobReferences(store: store, postgres: pool, logger: quietLogger))
    }

    /// Writes `bytes` as a blob, as the gateway and media do.
    func write(_ bytes: [UInt8]) throws -> BlobKey {
        let writer = try BlobWriter(store: store, limit: 1 << 20)
        try writer.write(bytes)
        return try writer.commit().key
    }

    func add(_ key: BlobKey, _ owner: BlobReferences.Owner, _ ref: String) async throws {
        let references = self.references
        try await pool.withTransaction { c in try references.add(key, owner: owner, ref: ref, on: c) }
    }

    func release(_ key: BlobKey, _ owner: BlobReferences.Owner, _ ref: String) async throws -> Bool {
        let references = self.references
        return try await pool.withTransaction { c in try references.release(key, owner: owner, ref: ref, on: c) }
    }

    func count(_ key: BlobKey) async throws -> Int64 {
        let row = try #require(try await pool.query("SELECT count(*)::bigint AS n FROM blobs.refs WHERE blob_key = $1",
                                                    [.text(key.hex)]).first)
        return try row.decode("n")
    }

    /// Advisory locks held (`granted`) or waited for in this test's database.
    func advisoryLocks(granted: Bool) async throws -> Int64 {
        let row = try #require(try await pool.query("""
            SELECT count(*)::bigint AS n FROM pg_locks
            WHERE locktype = 'advisory' AND granted = $1
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            """, [.bool(granted)]).first)
        return try row.decode("n")
    }

    /// Makes the blob's file look `seconds` old.
    func age(_ key: BlobKey, by seconds: TimeInterval) throws {
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-seconds)],
                                              ofItemAtPath: store.path(for: key))
    }

    func close() async { await pool.close() }
}

/// Holds a pool thread (inside a transaction) until the test opens it.
final class Gate: @unchecked Sendable {
    // @unchecked Sendable: `isOpen` is only touched under `condition`'s lock.
    private let condition = NSCondition()
    private var isOpen = false

    func wait(seconds: TimeInterval = 30) {
        let deadline = Date().addingTimeInterval(seconds)
        condition.lock()
        defer { condition.unlock() }
        while !isOpen && condition.wait(until: deadline) {}
    }

    func open() {
        condition.lock()
        isOpen = true
        condition.broadcast()
        condition.unlock()
    }
}

@Suite struct BlobReferencesTests {
    @Test func theSchemaIsMigratedOnceWhenBothServicesMigrateAtOnce() async throws {
        let pool = PostgresPool(configuration: PostgresConfiguration(connInfo: try await TestServers.makeDatabase()),
                                logger: quietLogger)
        let applied = try await withThrowingTaskGroup(of: [Int].self) { group in
            for _ in 0..<3 { group.addTask { try await BlobReferences.migrate(on: pool, logger: quietLogger) } }
            var all: [Int] = []
            for try await versions in group { all += versions }
            return all
        }
        #expect(applied == [100], "one of the concurrent runs applied it")
        #expect(try await BlobReferences.migrate(on: pool, logger: quietLogger) == [])

        // Storage's own migration backfills a reference per existing file.
        let storage = Outbox.migrations(schema: StorageService.schema) + StorageService.migrations
        _ = try await Migrations.apply(schema: StorageService.schema, storage.filter { $0.version < 101 }, on: pool,
                                       logger: quietLogger)
        let key = String(repeating: "ab", count: 32), fileID = UUID().uuidString.lowercased()
        try await pool.execute("""
            INSERT INTO storage.files (file_id, user_id, blob_key, sha256, size, file_name, content_type,
                declared_content_type, format, width, height, analysis, ai_metadata)
            VALUES ($1::uuid, 'u', $2, $2, 10, 'a.jpg', 'image/jpeg', 'image/jpeg', 'jpeg', 1, 1, '', '')
            """, [.text(fileID), .text(key)])
        #expect(try await Migrations.apply(schema: StorageService.schema, storage, on: pool, logger: quietLogger)
                == storage.map(\.version).filter { $0 >= 101 })
        let refs = try await pool.query("SELECT blob_key, owner, ref FROM blobs.refs")
        #expect(refs.count == 1)
        let ref = try #require(refs.first)
        #expect(try ref.decode("blob_key", as: String.self) == key)
        #expect(try ref.decode("owner", as: String.self) == "storage")
        #expect(try ref.decode("ref", as: String.self) == fileID)
        await pool.close()
    }

    @Test func aBlobReferencedByStorageAndMediaSurvivesEitherReleaseAndGoesAfterBoth() async throws {
        let h = try await ReferencesHarness.make()
        // A viewer's file (storage) whose bytes are an owner's hd version (media).
        let file = UUID().uuidString.lowercased(), version = "\(UUID().uuidString.lowercased())|hd|jpeg"
        func ref(_ owner: BlobReferences.Owner) -> String { owner == .storage ? file : version }
        for order in [[BlobReferences.Owner.storage, .media], [.media, .storage]] {
            let key = try h.write(Array("a photo and someone's hd version: \(order)".utf8))
            try await h.add(key, .storage, file)
            try await h.add(key, .media, version)
            try await h.add(key, .media, version)
            #expect(try await h.count(key) == 2, "adding twice is one reference")

            let (first, last) = (order[0], order[1])
            #expect(try await !h.release(key, first, ref(first)), "\(last) still uses it")
            #expect(try await !h.references.removeIfUnreferenced(key))
            #expect(h.store.exists(key), "\(first) letting go does not remove \(last)'s blob")
            #expect(try await !h.release(key, first, "never added"))

            #expect(try await h.release(key, last, ref(last)), "the last reference went")
            #expect(try await h.references.removeIfUnreferenced(key))
            #expect(!h.store.exists(key))
            #expect(try await h.count(key) == 0)
        }
        await h.close()
    }

    @Test func noReferenceIsAddedToABlobThatIsGone() async throws {
        let h = try await ReferencesHarness.make()
        let key = try h.write(Array("removed before its reference".utf8))
        #expect(try h.store.delete(key))
        let error = await #expect(throws: BlobStoreError.self) { try await h.add(key, .storage, "file") }
        #expect(error?.code == .notFound)
        #expect(try await h.count(key) == 0)
        await h.close()
    }

    /// An add holding the blob's lock makes the removal wait, and the removal then sees the
    /// reference; a removal holding the lock (the file already unlinked) makes the add wait,
    /// and the add then refuses: never a reference without its blob.
    @Test func anAddDuringARemovalKeepsTheBlobOrIsRefused() async throws {
        let h = try await ReferencesHarness.make()
        let references = h.references

        let key = try h.write(Array("added while being removed".utf8))
        let adding = Gate()
        let adder = Task {
            try await h.pool.withTransaction { c in
                try references.add(key, owner: .media, ref: "file-2|thumbnail|jpeg", on: c)
                adding.wait()
            }
        }
        #expect(try await eventually { try await h.advisoryLocks(granted: true) >= 1 })
        let removal = Task { try await references.removeIfUnreferenced(key) }
        #expect(try await eventually { try await h.advisoryLocks(granted: false) >= 1 }, "the removal waits for the lock")
        #expect(h.store.exists(key))
        adding.open()
        try await adder.value
        #expect(try await !removal.value, "the removal saw the committed reference")
        #expect(h.store.exists(key))
        #expect(try await h.count(key) == 1)

        let other = try h.write(Array("removed while being added".utf8))
        let removing = Gate()
        let store = h.store
        let remover = Task {
            try await h.pool.withTransaction { c in
                try BlobReferences.lock([other], on: c)
                _ = try store.delete(other)
                removing.wait()
            }
        }
        #expect(try await eventually { try await h.advisoryLocks(granted: true) >= 1 })
        let late = Task { try await h.add(other, .storage, "late-file") }
        #expect(try await eventually { try await h.advisoryLocks(granted: false) >= 1 }, "the add waits for the lock")
        removing.open()
        try await remover.value
        await #expect(throws: BlobStoreError.self) { try await late.value }
        #expect(try await h.count(other) == 0, "no reference without its blob")
        await h.close()
    }

    /// Writers, adds, releases and removals of ONE key from several tasks at once: whenever a
    /// task's reference is committed the blob exists; after the last release it is gone.
    @Test func concurrentAddsAndReleasesOfOneKeyNeverLoseAReferencedBlob() async throws {
        let h = try await ReferencesHarness.make(connections: 6)
        let bytes = Array("one blob, many owners".utf8)
        let key = try h.write(bytes)
        let (tasks, rounds) = (6, 8)
        let outcome = try await withThrowingTaskGroup(of: (missing: Int, refused: Int).self) { group in
            for task in 0..<tasks {
                group.addTask {
                    var (missing, refused) = (0, 0)
                    let owner: BlobReferences.Owner = task.isMultiple(of: 2) ? .storage : .media
                    for round in 0..<rounds {
                        let ref = "task-\(task)-\(round)"
                        while true {
                            _ = try h.write(bytes)
                            do {
                                try await h.add(key, owner, ref)
                                break
                            } catch let error as BlobStoreError where error.code == .notFound {
                                refused += 1
                            }
                        }
                        if !h.store.exists(key) { missing += 1 }
                        if try await h.release(key, owner, ref) { try await h.references.removeIfUnreferenced(key) }
                    }
                    return (missing, refused)
                }
            }
            var total = (missing: 0, refused: 0)
            for try await result in group { total = (total.missing + result.missing, total.refused + result.refused) }
            return total
        }
        #expect(outcome.missing == 0, "a committed reference always had its blob")
        #expect(try await h.count(key) == 0)
        #expect(!h.store.exists(key), "gone with the last reference")
        await h.close()
    }

    @Test func theJanitorRemovesOldUnreferencedBlobsOnly() async throws {
        let h = try await ReferencesHarness.make()
        let old = try h.write(Array("crash between commit and unlink".utf8))
        let young = try h.write(Array("an upload not registered yet".utf8))
        let referenced = try h.write(Array("an old photo someone has".utf8))
        let rewritten = try h.write(Array("old, but uploaded again just now".utf8))
        try await h.add(referenced, .storage, "file-1")
        for key in [old, referenced, rewritten] { try h.age(key, by: 7200) }
        // The same bytes again: the stored blob counts as just written.
        #expect(try h.write(Array("old, but uploaded again just now".utf8)) == rewritten)
        let tmp = h.store.root.appendingPathComponent("tmp/upload.part")
        try Data([1]).write(to: tmp)
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-7200)], ofItemAtPath: tmp.path)

        #expect(try await h.references.sweepUnreferenced(olderThan: 3600) == 1)
        #expect(!h.store.exists(old))
        #expect(h.store.exists(young), "younger than the grace period")
        #expect(h.store.exists(referenced))
        #expect(h.store.exists(rewritten), "re-written within the grace period")
        #expect(FileManager.default.fileExists(atPath: tmp.path), "temp files are not blobs (sweepTemporaryFiles' job)")
        #expect(try await h.references.sweepUnreferenced(olderThan: 3600) == 0)
        await h.close()
    }
}
