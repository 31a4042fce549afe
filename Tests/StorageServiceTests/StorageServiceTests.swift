import BlobStore
import Foundation
import FramecastTesting
import Imaging
import NATS
import Postgres
import ServiceKit
import StorageService
import Testing
import Wire

/// The storage service against a real nats-server (JetStream), PostgreSQL and blob directory,
/// called over NATS exactly as the gateway calls it.
struct StorageHarness {
    let backend: IsolatedBackend
    let runtime: ServiceRuntime
    let service: StorageService
    let blobs: BlobStore
    let client: ServiceClient

    static func make() async throws -> StorageHarness {
        let backend = try await IsolatedBackend.make()
        let runtime = ServiceRuntime(nats: backend.nats, jetStream: try backend.nats.jetStream(),
                                     postgres: backend.postgres, logger: quietLogger)
        try await EventStream.ensure(on: runtime.jetStream)
        let root = try TestServers.scratchDirectory("blobs")
        let service = StorageService(runtime: runtime, configuration: StorageConfiguration(blobRoot: root.path),
                                     imaging: sharedImaging)
        return StorageHarness(backend: backend, runtime: runtime, service: service, blobs: BlobStore(root: root),
                              client: ServiceClient(service: "storage", nats: backend.nats))
    }

    /// Runs the storage service while `body` runs.
    func running<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        try await withServices(try await service.services(), logger: quietLogger) {
            _ = try await eventually { (try? await backend.nats.request("$SRV.PING.storage", payload: [], timeout: .seconds(1))) != nil }
            return try await body()
        }
    }

    /// Stores `bytes` in the blob store as the gateway would; returns the key.
    func put(_ bytes: [UInt8]) throws -> BlobKey {
        let scratch = try TestServers.scratchDirectory("upload").appendingPathComponent("bytes")
        try Data(bytes).write(to: scratch)
        let result = try Command.run("sha256sum", [scratch.path])
        let key = BlobKey(String(result.output.prefix(64)))!
        let path = blobs.path(for: key)
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        if !FileManager.default.fileExists(atPath: path) { try FileManager.default.moveItem(atPath: scratch.path, toPath: path) }
        return key
    }

    func register(_ bytes: [UInt8], user: String, name: String = "IMG_0001.jpg", metadata: [String: String] = [:])
        async throws -> RegisterUploadReply {
        let key = try put(bytes)
        return try await client.call(StorageAPI.registerUpload, RegisterUploadRequest(
            userID: user, blobKey: key.hex, sha256: key.hex, size: Int64(bytes.count), fileName: name,
            contentType: "image/jpeg", metadata: metadata))
    }

    /// The blob's references in the blob store's table, as `owner:ref`, sorted.
    func references(_ key: BlobKey) async throws -> [String] {
        try await backend.postgres.query("SELECT owner, ref FROM blobs.refs WHERE blob_key = $1 ORDER BY owner, ref",
                                         [.text(key.hex)])
            .map { row in
                let owner: String = try row.decode("owner"), ref: String = try row.decode("ref")
                return "\(owner):\(ref)"
            }
    }

    /// Every event of type `E` now in the stream.
    func events<E: WireEvent>(_ type: E.Type) async throws -> [E] {
        try await eventsInStream(type, jetStream: runtime.jetStream)
    }

    func close() async { await backend.close() }
}

let sharedImaging = Imaging(threads: 2, logger: quietLogger)

func user() -> String { "user-\(UUID().uuidString.prefix(8))" }

@Suite struct StorageServiceTests {
    @Test func registersARealPhotoWithItsAnalysisAndAnnouncesIt() async throws {
        let h = try await StorageHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("FallenLeaf"))
        let expected = try await sharedImaging.analyze(photo)
        let owner = user()
        try await h.running {
            let reply = try await h.register(photo, user: owner, name: "../../etc/FallenLeaf.jpg", metadata: ["album_id": "a1"])
            #expect(!reply.duplicate)
            let file = try #require(reply.file)
            #expect(UUID(uuidString: file.fileID) != nil)
            #expect(file.userID == owner)
            #expect(file.size == Int64(photo.count))
            #expect(file.fileName == "FallenLeaf.jpg", "no path in a stored name")
            #expect(file.contentType == "image/jpeg")
            #expect(file.metadata == ["album_id": "a1"])
            let analysis = try #require(file.analysis)
            #expect(analysis.format == "jpeg")
            #expect((analysis.width, analysis.height) == (2560, 1600))
            #expect(analysis.takenAt == expected.takenAt.map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) })
            #expect(analysis.cameraMake == (expected.cameraMake ?? ""))
            #expect(analysis.dominantColors.count == 3)
            #expect(analysis.perceptualHash == expected.perceptualHash)
            #expect(file.aiMetadata?.labels == [], "the built-in analyser claims no labels")

            // Both events went through the outbox to the stream, with the upload's metadata.
            #expect(try await eventually { try await h.events(FileUploadedWithAI.self).count == 1 })
            let event = try #require(try await h.events(FileUploadedWithAI.self).first)
            #expect(event.file?.fileID == file.fileID)
            #expect(event.file?.metadata["album_id"] == "a1")
            #expect(event.userID == owner)
            #expect(try await h.events(FileUploaded.self).count == 1)

            // Read back through GetFile: the same record.
            let fetched = try await h.client.call(StorageAPI.getFile, GetFileRequest(userID: owner, fileID: file.fileID))
            #expect(fetched.file == file)
        }
        await h.close()
    }

    @Test func theSameBytesTwiceAreOneFileAndOneEvent() async throws {
        let h = try await StorageHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("Kite"))
        let owner = user(), other = user()
        try await h.running {
            let first = try await h.register(photo, user: owner)
            let second = try await h.register(photo, user: owner, name: "copy.jpg")
            #expect(!first.duplicate)
            #expect(second.duplicate)
            #expect(second.file?.fileID == first.file?.fileID)
            // Another user uploading the same bytes gets a file of their own.
            let theirs = try await h.register(photo, user: other)
            #expect(!theirs.duplicate)
            #expect(theirs.file?.fileID != first.file?.fileID)
            #expect(theirs.file?.blobKey == first.file?.blobKey, "one blob for identical bytes")

            #expect(try await eventually { try await h.events(FileUploadedWithAI.self).count == 2 })
            try await Task.sleep(for: .milliseconds(500))
            let events = try await h.events(FileUploadedWithAI.self)
            #expect(events.count == 2, "no event for the duplicate")
        }
        await h.close()
    }

    @Test func refusesWhatIsNotAnImageAndLeavesNoBlob() async throws {
        let h = try await StorageHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("BytheWater"))
        let cases: [(String, [UInt8])] = [
            ("text named .jpg", Array("just some text, not a photo\n".utf8)),
            ("truncated JPEG", Array(photo.prefix(photo.count / 2))),
            ("random bytes", (0..<4096).map { _ in UInt8.random(in: 0...255) }),
        ]
        try await h.running {
            for (label, bytes) in cases {
                let key = try h.put(bytes)
                let error = await #expect(throws: ServiceError.self, "\(label)") {
                    _ = try await h.client.call(StorageAPI.registerUpload, RegisterUploadRequest(
                        userID: user(), blobKey: key.hex, sha256: key.hex, size: Int64(bytes.count), fileName: "x.jpg"))
                }
                #expect(error?.status == .unsupported, "\(label)")
                #expect(!h.blobs.exists(key), "\(label): no blob left behind")
            }
            let rows = try await h.backend.postgres.query("SELECT count(*)::bigint AS n FROM storage.files")
            #expect(try rows[0].decode("n", as: Int64.self) == 0)
        }
        await h.close()
    }

    @Test func badRequestsAreInvalid() async throws {
        let h = try await StorageHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("Kite"))
        try await h.running {
            let key = try h.put(photo)
            let bad: [RegisterUploadRequest] = [
                RegisterUploadRequest(userID: "", blobKey: key.hex, sha256: key.hex, size: Int64(photo.count)),
                RegisterUploadRequest(userID: "u", blobKey: "not-a-key", sha256: key.hex, size: Int64(photo.count)),
                RegisterUploadRequest(userID: "u", blobKey: key.hex, sha256: String(repeating: "0", count: 64), size: Int64(photo.count)),
                RegisterUploadRequest(userID: "u", blobKey: key.hex, sha256: key.hex, size: 0),
                RegisterUploadRequest(userID: "u", blobKey: key.hex, sha256: key.hex, size: Int64(photo.count) + 1),
                RegisterUploadRequest(userID: "u", blobKey: String(repeating: "a", count: 64),
                                      sha256: String(repeating: "a", count: 64), size: 10),
            ]
            for request in bad {
                let error = await #expect(throws: ServiceError.self) { _ = try await h.client.call(StorageAPI.registerUpload, request) }
                #expect(error?.status == .invalid)
            }
        }
        await h.close()
    }

    @Test func usersSeeOnlyTheirOwnFilesNewestFirstInPages() async throws {
        let h = try await StorageHarness.make()
        let owner = user(), stranger = user()
        try await h.running {
            var ids: [String] = []
            for name in Photos.plasmaNames {
                let reply = try await h.register(try Photos.bytes(try Photos.plasma(name)), user: owner, name: "\(name).jpg")
                ids.append(reply.file!.fileID)
            }
            let first = try await h.client.call(StorageAPI.listFiles, ListFilesRequest(userID: owner, pageSize: 3))
            #expect(first.files.map(\.fileID) == Array(ids.reversed().prefix(3)))
            #expect(!first.nextPageToken.isEmpty)
            let second = try await h.client.call(StorageAPI.listFiles,
                                                 ListFilesRequest(userID: owner, pageSize: 3, pageToken: first.nextPageToken))
            #expect(second.files.map(\.fileID) == [ids[0]])
            #expect(second.nextPageToken.isEmpty)

            #expect(try await h.client.call(StorageAPI.listFiles, ListFilesRequest(userID: stranger)).files.isEmpty)
            for request in [GetFileRequest(userID: stranger, fileID: ids[0]), GetFileRequest(userID: owner, fileID: "nope"),
                            GetFileRequest(userID: owner, fileID: UUID().uuidString)] {
                let error = await #expect(throws: ServiceError.self) { _ = try await h.client.call(StorageAPI.getFile, request) }
                #expect(error?.status == .notFound)
            }
            let badToken = await #expect(throws: ServiceError.self) {
                _ = try await h.client.call(StorageAPI.listFiles, ListFilesRequest(userID: owner, pageToken: "garbage!"))
            }
            #expect(badToken?.status == .invalid)
        }
        await h.close()
    }

    @Test func deletingAnnouncesItAndRemovesTheBlobWithItsLastFile() async throws {
        let h = try await StorageHarness.make()
        let photo = try Photos.bytes(try Photos.plasma("ColorfulCups"))
        let a = user(), b = user()
        try await h.running {
            let mine = try await h.register(photo, user: a).file!
            let theirs = try await h.register(photo, user: b).file!
            let key = try #require(BlobKey(mine.blobKey))

            // Not yours: not found, nothing deleted.
            let error = await #expect(throws: ServiceError.self) {
                _ = try await h.client.call(StorageAPI.deleteFile, DeleteFileRequest(userID: b, fileID: mine.fileID))
            }
            #expect(error?.status == .notFound)

            // Each file holds its reference in the blob store's table.
            #expect(try await h.references(key) == [mine.fileID, theirs.fileID].sorted().map { "storage:\($0)" })

            _ = try await h.client.call(StorageAPI.deleteFile, DeleteFileRequest(userID: a, fileID: mine.fileID))
            #expect(h.blobs.exists(key), "b's file still uses the blob")
            #expect(try await h.references(key) == ["storage:\(theirs.fileID)"])
            _ = try await h.client.call(StorageAPI.deleteFile, DeleteFileRequest(userID: b, fileID: theirs.fileID))
            #expect(!h.blobs.exists(key), "the blob went with its last file")
            #expect(try await h.references(key).isEmpty)

            #expect(try await eventually { try await h.events(FileDeleted.self).count == 2 })
            let deleted = try await h.events(FileDeleted.self)
            #expect(Set(deleted.map(\.fileID)) == [mine.fileID, theirs.fileID])
            let again = await #expect(throws: ServiceError.self) {
                _ = try await h.client.call(StorageAPI.deleteFile, DeleteFileRequest(userID: a, fileID: mine.fileID))
            }
            #expect(again?.status == .notFound)
        }
        await h.close()
    }
}
