import Foundation
import Threads

/// One photo in the disk cache: the version the frame chose, its bytes on disk, its ETag
/// (for conditional GETs) and when it was last on screen (least recently shown goes first).
public struct CacheEntry: Sendable, Hashable, Codable {
    public var fileID: String
    /// The version's name (`frame:1024x600`, `hd`…).
    public var version: String
    public var etag: String?
    public var bytes: Int64
    /// Unix milliseconds it was last shown (its download time until it is shown).
    public var lastShown: Int64

    public init(fileID: String, version: String, etag: String?, bytes: Int64, lastShown: Int64) {
        self.fileID = fileID
        self.version = version
        self.etag = etag
        self.bytes = bytes
        self.lastShown = lastShown
    }

    enum CodingKeys: String, CodingKey {
        case version, etag, bytes
        case fileID = "file_id", lastShown = "last_shown"
    }
}

/// The disk cache's bookkeeping as a pure value: which photos, how many bytes, and what to
/// evict for a newcomer within a byte budget (least recently shown first, never a protected one).
public struct CacheIndex: Sendable, Hashable, Codable {
    public private(set) var entries: [String: CacheEntry] = [:]
    public var totalBytes: Int64 { entries.values.reduce(0) { $0 + $1.bytes } }

    public init() {}

    public func entry(_ file: String) -> CacheEntry? { entries[file] }

    /// The photos to evict so that `bytes` more fit in `budget`, least recently shown first
    /// (ties by id), skipping `protected`. Nil when even evicting every unprotected photo is
    /// not enough (then nothing should be evicted).
    public func evictions(toFit bytes: Int64, budget: Int64, protecting protected: Set<String>) -> [CacheEntry]? {
        guard bytes <= budget else { return nil }
        var total = totalBytes
        if total + bytes <= budget { return [] }
        let candidates = entries.values.filter { !protected.contains($0.fileID) }
            .sorted { ($0.lastShown, $0.fileID) < ($1.lastShown, $1.fileID) }
        var chosen: [CacheEntry] = []
        for candidate in candidates {
            chosen.append(candidate)
            total -= candidate.bytes
            if total + bytes <= budget { return chosen }
        }
        return nil
    }

    /// Adds (or replaces) `entry`, evicting as ``evictions(toFit:budget:protecting:)`` says;
    /// returns the evicted entries (their files are the caller's to delete), or throws
    /// `noRoom` and changes nothing. A replaced entry's own bytes count as free.
    public mutating func insert(_ entry: CacheEntry, budget: Int64, protecting protected: Set<String>) throws -> [CacheEntry] {
        let previous = entries.removeValue(forKey: entry.fileID)
        guard let evicted = evictions(toFit: entry.bytes, budget: budget, protecting: protected.union([entry.fileID])) else {
            if let previous { entries[previous.fileID] = previous }
            throw FrameAgentError(.noRoom, "\(entry.bytes) bytes do not fit in the cache budget of \(budget) bytes",
                                  context: ["file.id": entry.fileID])
        }
        for e in evicted { entries[e.fileID] = nil }
        entries[entry.fileID] = entry
        return evicted
    }

    @discardableResult
    public mutating func remove(_ file: String) -> CacheEntry? { entries.removeValue(forKey: file) }

    /// Records that `file` was shown at `time` (unix ms).
    public mutating func touch(_ file: String, at time: Int64) {
        entries[file]?.lastShown = time
    }
}

/// The photos on disk: `{dir}/photos/{file_id}` plus `{dir}/index.json`, bounded in bytes.
/// File work runs on one thread of its own (never on the cooperative pool); the index is
/// written atomically (temp file + rename) after every change, so a crash loses at most the
/// last change, and files without an index entry are deleted at start.
actor DiskCache {
    let directory: URL
    let budget: Int64
    private(set) var index = CacheIndex()
    private let io = BlockingPool(name: "frame-cache", threadCount: 1)

    init(directory: String, budget: Int64) {
        self.directory = URL(fileURLWithPath: directory, isDirectory: true)
        self.budget = budget
    }

    deinit { io.shutdown() }

    var photosDirectory: URL { directory.appendingPathComponent("photos", isDirectory: true) }
    var indexURL: URL { directory.appendingPathComponent("index.json") }

    func path(_ file: String) -> URL { photosDirectory.appendingPathComponent(file) }

    /// Creates the folders, reads the index (dropping entries whose file is gone) and deletes
    /// files the index does not know (a download interrupted by a crash).
    func open() async throws {
        let (photos, indexURL) = (photosDirectory, self.indexURL)
        index = try await io.run {
            do {
                try FileManager.default.createDirectory(at: photos, withIntermediateDirectories: true)
            } catch {
                throw FrameAgentError(.io, "creating the cache folder failed: \(error.localizedDescription)", context: ["path": photos.path])
            }
            var index = CacheIndex()
            if let data = FileManager.default.contents(atPath: indexURL.path) {
                index = (try? JSONDecoder().decode(CacheIndex.self, from: data)) ?? CacheIndex()
            }
            let present = Set((try? FileManager.default.contentsOfDirectory(atPath: photos.path)) ?? [])
            for file in index.entries.keys where !present.contains(file) { index.remove(file) }
            for name in present where index.entry(name) == nil {
                try? FileManager.default.removeItem(at: photos.appendingPathComponent(name))
            }
            return index
        }
    }

    func contains(_ file: String) -> Bool { index.entry(file) != nil }
    func entry(_ file: String) -> CacheEntry? { index.entry(file) }
    var fileIDs: Set<String> { Set(index.entries.keys) }
    var usage: (bytes: Int64, files: Int) { (index.totalBytes, index.entries.count) }

    /// The cached bytes of `file`.
    func read(_ file: String) async throws -> [UInt8] {
        let url = path(file)
        return try await io.run {
            guard let data = FileManager.default.contents(atPath: url.path) else {
                throw FrameAgentError(.io, "reading a cached photo failed", context: ["path": url.path])
            }
            return [UInt8](data)
        }
    }

    /// Stores a downloaded version, evicting least recently shown photos (never `protecting`);
    /// returns the evicted ids. Throws `noRoom` (nothing changed) or `io`.
    func store(_ entry: CacheEntry, bytes: [UInt8], protecting: Set<String>) async throws -> [String] {
        // The index changes before the first await, so concurrent stores (actor reentrancy)
        // each see the other's bytes; a failed write takes the entry out again.
        let evicted = try index.insert(entry, budget: budget, protecting: protecting)
        let url = path(entry.fileID)
        let removed = evicted.map { path($0.fileID) }
        do {
            try await io.run {
                do {
                    try Data(bytes).write(to: url, options: .atomic)
                } catch {
                    throw FrameAgentError(.io, "writing a cached photo failed: \(error.localizedDescription)", context: ["path": url.path])
                }
                for old in removed { try? FileManager.default.removeItem(at: old) }
            }
        } catch {
            index.remove(entry.fileID)
            throw error
        }
        try await saveIndex()
        return evicted.map(\.fileID)
    }

    /// Drops photos from the cache (files and entries).
    func remove(_ files: [String]) async throws {
        let urls = files.filter { index.entry($0) != nil }.map(path)
        guard !urls.isEmpty else { return }
        for file in files { index.remove(file) }
        try await io.run { for url in urls { try? FileManager.default.removeItem(at: url) } }
        try await saveIndex()
    }

    func touch(_ file: String, at time: Int64) async {
        index.touch(file, at: time)
        try? await saveIndex()
    }

    var stateURL: URL { directory.appendingPathComponent("state.json") }

    /// The agent's saved state (`state.json`), nil when absent.
    func readState() async -> Data? {
        let url = stateURL
        return try? await io.run { FileManager.default.contents(atPath: url.path) }
    }

    /// Replaces `state.json` atomically.
    func writeState(_ data: Data) async throws {
        let url = stateURL
        try await io.run {
            do {
                try data.write(to: url, options: .atomic)
            } catch {
                throw FrameAgentError(.io, "writing the agent state failed: \(error.localizedDescription)", context: ["path": url.path])
            }
        }
    }

    private func saveIndex() async throws {
        let data = try JSONEncoder().encode(index)
        let url = indexURL
        try await io.run {
            do {
                try data.write(to: url, options: .atomic)
            } catch {
                throw FrameAgentError(.io, "writing the cache index failed: \(error.localizedDescription)", context: ["path": url.path])
            }
        }
    }
}
