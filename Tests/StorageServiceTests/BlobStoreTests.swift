import BlobStore
import Foundation
import FramecastTesting
import Testing

@Suite struct BlobStoreTests {
    func store() throws -> BlobStore { BlobStore(root: try TestServers.scratchDirectory("blobstore")) }

    func files(_ store: BlobStore) -> [String] {
        (FileManager.default.enumerator(atPath: store.root.path)?.allObjects as? [String] ?? []).filter {
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: store.root.appendingPathComponent($0).path, isDirectory: &isDirectory)
                && !isDirectory.boolValue
        }
    }

    @Test func writesContentAddressedBlobsOnce() throws {
        let store = try store()
        let bytes = Array("family photo".utf8)
        let writer = try BlobWriter(store: store, limit: 100)
        try writer.write(Array(bytes.prefix(5)))
        try writer.write(Array(bytes.dropFirst(5)))
        let first = try writer.commit()
        // sha256("family photo")
        let expected = try Command.run("sh", ["-c", "printf 'family photo' | sha256sum"]).output.prefix(64)
        #expect(first.key.hex == String(expected))
        #expect(first.created && first.size == bytes.count)
        #expect(store.relativePath(for: first.key) == "\(expected.prefix(2))/\(expected.dropFirst(2).prefix(2))/\(expected)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: store.path(for: first.key))) == Data(bytes))

        let again = try BlobWriter(store: store, limit: 100)
        try again.write(bytes)
        let second = try again.commit()
        #expect(second.key == first.key && !second.created)
        #expect(files(store) == [store.relativePath(for: first.key)], "one blob, no temp file")
        #expect(try store.delete(first.key))
        #expect(try !store.delete(first.key))
    }

    @Test func overTheLimitOrAbortedLeavesNothing() throws {
        let store = try store()
        let writer = try BlobWriter(store: store, limit: 10)
        try writer.write(Array(repeating: 1, count: 10))
        #expect(throws: BlobStoreError.self) { try writer.write([1]) }
        let aborted = try BlobWriter(store: store, limit: 10)
        try aborted.write([1, 2, 3])
        aborted.abort()
        aborted.abort()
        do {
            let dropped = try BlobWriter(store: store, limit: 10)
            try dropped.write([4])
        }
        #expect(files(store).isEmpty)
        #expect(BlobKey("ABC") == nil && BlobKey(String(repeating: "g", count: 64)) == nil)
        #expect(BlobKey(String(repeating: "A", count: 64))?.hex == String(repeating: "a", count: 64))
    }

    @Test func aWriterUsedAfterItFinishedThrowsInsteadOfTrapping() throws {
        let store = try store()
        let committed = try BlobWriter(store: store, limit: 10)
        try committed.write([1, 2, 3])
        _ = try committed.commit()
        #expect(throws: BlobStoreError.self) { try committed.write([4]) }
        #expect(throws: BlobStoreError.self) { try committed.commit() }
        let aborted = try BlobWriter(store: store, limit: 10)
        aborted.abort()
        #expect(throws: BlobStoreError.self) { try aborted.write([1]) }
        #expect(throws: BlobStoreError.self) { try aborted.commit() }
        #expect(files(store).count == 1, "only the committed blob: \(files(store))")
    }

    @Test func sweepRemovesOnlyAbandonedTempFiles() throws {
        let store = try store()
        let tmp = store.root.appendingPathComponent("tmp")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        let old = tmp.appendingPathComponent("old.part"), fresh = tmp.appendingPathComponent("fresh.part")
        try Data([1]).write(to: old)
        try Data([2]).write(to: fresh)
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-7200)], ofItemAtPath: old.path)
        #expect(store.sweepTemporaryFiles(olderThan: 3600) == 1)
        #expect(!FileManager.default.fileExists(atPath: old.path))
        #expect(FileManager.default.fileExists(atPath: fresh.path))
    }
}
