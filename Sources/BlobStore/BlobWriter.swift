import Foundation
import Secrets

/// Writes one new blob: bytes are appended to a temp file under `<root>/tmp/` while their
/// SHA-256 and size are computed; `commit()` fsyncs the file, renames it to its content
/// address and fsyncs the directory. A writer that is aborted, fails, or exceeds its byte
/// limit leaves nothing behind.
///
/// Not Sendable: one writer belongs to one upload. `write` is a page-cache write (fast);
/// `commit` fsyncs (slow): run it off an event loop.
public final class BlobWriter {
    public let store: BlobStore
    public let limit: Int
    public private(set) var size = 0
    private var hasher = SHA256()
    private var fd: Int32
    private let tempPath: String
    private var finished = false

    /// Opens a temp file in the store. `limit`: the most bytes this blob may have.
    public init(store: BlobStore, limit: Int) throws {
        self.store = store
        self.limit = limit
        let tmp = store.root.appendingPathComponent("tmp").path
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        tempPath = "\(tmp)/\(UUID().uuidString).part"
        fd = open(tempPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw BlobStoreError(.io, "cannot create a temp file in the blob store: \(errnoText())") }
    }

    /// Appends bytes. Throws `tooLarge` (and removes the temp file) past the limit.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard !finished else { throw BlobStoreError(.io, "write after the blob was committed or aborted") }
        guard size + bytes.count <= limit else {
            abort()
            throw BlobStoreError(.tooLarge, "more than \(limit) bytes")
        }
        var offset = 0
        while offset < bytes.count {
            let n = Foundation.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                let reason = errnoText()
                abort()
                throw BlobStoreError(.io, "writing the blob failed: \(reason)")
            }
            offset += n
        }
        hasher.update(bytes)
        size += bytes.count
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Makes the bytes durable under their content address. `created` is false when an
    /// identical blob already existed (the new copy is dropped, the stored one kept and its
    /// modification time set to now).
    public func commit() throws -> (key: BlobKey, size: Int, created: Bool) {
        guard !finished else { throw BlobStoreError(.io, "commit after the blob was committed or aborted") }
        finished = true
        defer { if fd >= 0 { close(fd); fd = -1 } }
        guard fsync(fd) == 0 else {
            let reason = errnoText()
            unlink(tempPath)
            throw BlobStoreError(.io, "fsync of the blob failed: \(reason)")
        }
        guard let key = BlobKey(hasher.finalizeHex()) else {
            unlink(tempPath)
            throw BlobStoreError(.invalidKey, "the blob's SHA-256 is not 64 hex digits")
        }
        let path = store.path(for: key)
        let directory = (path as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            unlink(tempPath)
            throw BlobStoreError(.io, "cannot create \(directory): \(error)")
        }
        if FileManager.default.fileExists(atPath: path) {
            // Keep the stored copy, marked as just written: a reference to it is about to be
            // added, and the janitor leaves unreferenced blobs alone for a grace period after
            // their last write (BlobReferences.sweepUnreferenced). Removed in between: this
            // copy takes its place below.
            if utimes(path, nil) == 0 || errno != ENOENT {
                unlink(tempPath)
                return (key, size, false)
            }
        }
        guard rename(tempPath, path) == 0 else {
            let reason = errnoText()
            unlink(tempPath)
            throw BlobStoreError(.io, "cannot move the blob into place: \(reason)")
        }
        let dirfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirfd >= 0 {
            fsync(dirfd)
            close(dirfd)
        }
        return (key, size, true)
    }

    /// Drops the temp file. Safe to call more than once.
    public func abort() {
        guard !finished else { return }
        finished = true
        if fd >= 0 { close(fd); fd = -1 }
        unlink(tempPath)
    }

    deinit { abort() }
}

func errnoText() -> String { String(cString: strerror(errno)) }

extension BlobStore {
    /// Removes temp files older than `age` (uploads that died mid-way); returns how many.
    @discardableResult
    public func sweepTemporaryFiles(olderThan age: TimeInterval) -> Int {
        let tmp = root.appendingPathComponent("tmp")
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: tmp.path) else { return 0 }
        var removed = 0
        let cutoff = Date().addingTimeInterval(-age)
        for name in names where name.hasSuffix(".part") {
            let path = tmp.appendingPathComponent(name).path
            if let modified = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date,
               modified < cutoff, unlink(path) == 0 {
                removed += 1
            }
        }
        return removed
    }
}
