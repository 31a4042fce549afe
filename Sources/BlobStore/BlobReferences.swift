import Foundation
import Logging
import Postgres

/// Who uses which blob, counted in one place: the blob store's own table
/// `blobs.refs (blob_key, owner, ref)`. Storage holds one reference per file
/// (`storage`, file id), media one per stored version (`media`, ``versionReference``-style id).
/// A blob is removed only when its last reference is gone, never because one owner let go.
///
/// * ``add(_:owner:on:)`` and ``release(_:owner:on:)`` run INSIDE the caller's transaction, on
///   its connection, next to the rows that make the reference (a file, a version): both commit
///   or neither does. Both take the blob's advisory lock (``BlobKey/referenceLockName``, held
///   until that transaction ends), keys in ascending order so two callers never deadlock.
/// * ``add(_:owner:on:)`` re-checks, under the lock, that the blob file exists: a reference is
///   never committed to a blob that a concurrent removal has just unlinked (the caller gets
///   `BlobStoreError.notFound` and writes the blob again).
/// * After the caller committed a release that left no reference, it calls
///   ``removeIfUnreferenced(_:)``: in a transaction of its own it takes the lock, checks that
///   no reference exists (a concurrent add has either committed, and is seen, or waits for
///   the lock and then finds the file gone) and unlinks the file while still holding the lock.
/// * A crash between the release's commit and the unlink leaves an unreferenced blob, never a
///   reference without its blob; ``sweepUnreferenced(olderThan:)`` (the storage service's
///   blob janitor) removes such blobs once their file is older than a grace period, which
///   also covers blobs written but not yet referenced (an upload before `RegisterUpload`
///   commits, a rendered version before its rows commit).
///
/// The schema is migrated by every service that holds references (``migrate(on:logger:)``,
/// before the service's own migrations); ``Migrations`` serialises concurrent runs.
public struct BlobReferences: Sendable {
    /// The PostgreSQL schema the blob store owns.
    public static let schema = "blobs"

    /// Who holds a reference.
    public enum Owner: String, Sendable, CaseIterable {
        /// A file of the storage service; `ref` is the file id.
        case storage
        /// A rendered version of the media service; `ref` names the version.
        case media
    }

    public static let migrations: [Migration] = [
        Migration(version: 100, name: "refs", sql: """
            CREATE TABLE refs (
                blob_key   text NOT NULL CHECK (blob_key ~ '^[0-9a-f]{64}$'),
                owner      text NOT NULL CHECK (owner IN ('storage', 'media')),
                ref        text NOT NULL CHECK (ref <> ''),
                created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                PRIMARY KEY (blob_key, owner, ref)
            );
            """),
    ]

    /// Brings the `blobs` schema up to date; returns the versions this call applied. Safe when
    /// several services (and replicas) run it at once: each migration is applied once.
    @discardableResult
    public static func migrate(on postgres: PostgresPool, logger: Logger) async throws -> [Int] {
        try await Migrations.apply(schema: schema, migrations, on: postgres, logger: logger)
    }

    public let store: BlobStore
    public let postgres: PostgresPool
    let logger: Logger

    public init(store: BlobStore, postgres: PostgresPool, logger: Logger) {
        self.store = store
        self.postgres = postgres
        self.logger = logger
    }

    // MARK: In the caller's transaction

    /// Takes the advisory lock of each key (once, in ascending key order) for the rest of the
    /// transaction on `connection`.
    public static func lock(_ keys: some Sequence<BlobKey>, on connection: PostgresConnection) throws {
        for key in Set(keys).sorted(by: { $0.hex < $1.hex }) {
            try connection.advisoryTransactionLock(key.referenceLockName)
        }
    }

    /// Adds `owner`'s reference `ref` to the blob `key`, in the transaction open on
    /// `connection`. Idempotent. Throws `BlobStoreError.notFound` when the blob file is not
    /// in the store (removed concurrently): nothing is added, and the caller's transaction
    /// should roll back.
    public func add(_ key: BlobKey, owner: Owner, ref: String, on connection: PostgresConnection) throws {
        try add([(key, ref)], owner: owner, on: connection)
    }

    /// ``add(_:owner:ref:on:)`` for several references.
    public func add(_ references: [(key: BlobKey, ref: String)], owner: Owner, on connection: PostgresConnection) throws {
        guard !references.isEmpty else { return }
        try Self.validate(references)
        try Self.lock(references.map { $0.key }, on: connection)
        var present = Set<BlobKey>()
        for (key, ref) in references.sorted(by: Self.order) {
            if !present.contains(key) {
                guard store.exists(key) else {
                    throw BlobStoreError(.notFound, "blob \(key) is not in the store (removed concurrently); write it again")
                }
                present.insert(key)
            }
            try connection.execute("""
                INSERT INTO \(Self.schema).refs (blob_key, owner, ref) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING
                """, [.text(key.hex), .text(owner.rawValue), .text(ref)])
        }
    }

    /// Removes `owner`'s reference `ref` to the blob `key`, in the transaction open on
    /// `connection`. Returns true when no reference to the blob is left: after the caller's
    /// commit, call ``removeIfUnreferenced(_:)``.
    public func release(_ key: BlobKey, owner: Owner, ref: String, on connection: PostgresConnection) throws -> Bool {
        try !release([(key, ref)], owner: owner, on: connection).isEmpty
    }

    /// ``release(_:owner:ref:on:)`` for several references; returns the keys (each once,
    /// ascending) that no reference is left to.
    public func release(_ references: [(key: BlobKey, ref: String)], owner: Owner,
                        on connection: PostgresConnection) throws -> [BlobKey] {
        guard !references.isEmpty else { return [] }
        try Self.lock(references.map { $0.key }, on: connection)
        for (key, ref) in references.sorted(by: Self.order) {
            try connection.execute("DELETE FROM \(Self.schema).refs WHERE blob_key = $1 AND owner = $2 AND ref = $3",
                                   [.text(key.hex), .text(owner.rawValue), .text(ref)])
        }
        return try Set(references.map { $0.key }).sorted(by: { $0.hex < $1.hex }).filter { key in
            try connection.query("SELECT 1 FROM \(Self.schema).refs WHERE blob_key = $1 LIMIT 1", [.text(key.hex)]).isEmpty
        }
    }

    // MARK: Removal

    /// Deletes the blob when no reference to it exists (checked under its lock, the unlink
    /// done before the lock is released). Returns whether a file was deleted. Call it after
    /// the commit of a release that left no reference, or for a blob that was written and
    /// then not used (a refused upload).
    @discardableResult
    public func removeIfUnreferenced(_ key: BlobKey) async throws -> Bool {
        let (store, logger) = (self.store, self.logger)
        return try await postgres.withConnection { connection in
            let removed = try Self.remove(key, modifiedBefore: nil, store: store, on: connection)
            if removed { logger.debug("blob removed", metadata: ["blob.key": "\(key)"]) }
            return removed
        }
    }

    /// Removes every blob in the store that no reference names and whose file was written (or
    /// re-written, see ``BlobWriter/commit()``) more than `age` seconds ago; returns how many.
    /// Each is re-checked under its lock, so a blob referenced or re-written meanwhile stays.
    /// The walk runs on the PostgreSQL pool's threads, one top-level directory at a time.
    @discardableResult
    public func sweepUnreferenced(olderThan age: TimeInterval) async throws -> Int {
        let store = self.store
        let cutoff = Date().addingTimeInterval(-age)
        let shards = try await postgres.withConnection { _ in store.shardDirectories() }
        var removed = 0
        for shard in shards {
            removed += try await postgres.withConnection { connection in
                let candidates = store.keys(inShard: shard, modifiedBefore: cutoff)
                var count = 0
                for start in stride(from: 0, to: candidates.count, by: 500) {
                    let chunk = candidates[start..<min(start + 500, candidates.count)]
                    let unreferenced = try connection.query("""
                        SELECT k FROM unnest(string_to_array($1, ',')) AS k
                        WHERE NOT EXISTS (SELECT 1 FROM \(Self.schema).refs r WHERE r.blob_key = k)
                        """, [.text(chunk.map(\.hex).joined(separator: ","))])
                    for row in unreferenced {
                        guard let key = BlobKey(try row.decode("k", as: String.self)) else { continue }
                        if try Self.remove(key, modifiedBefore: cutoff, store: store, on: connection) { count += 1 }
                    }
                }
                return count
            }
        }
        if removed > 0 {
            logger.info("removed unreferenced blobs", metadata: ["blob.removed": "\(removed)", "blob.grace_seconds": "\(Int(age))"])
        }
        return removed
    }

    /// Lock, check no reference (and, with `cutoff`, that the file is older), unlink — all in
    /// one transaction on `connection`, so the unlink happens while the lock is held.
    static func remove(_ key: BlobKey, modifiedBefore cutoff: Date?, store: BlobStore,
                       on connection: PostgresConnection) throws -> Bool {
        try connection.transaction { c in
            try lock([key], on: c)
            guard try c.query("SELECT 1 FROM \(schema).refs WHERE blob_key = $1 LIMIT 1", [.text(key.hex)]).isEmpty else {
                return false
            }
            if let cutoff {
                guard let modified = store.modificationDate(of: key), modified < cutoff else { return false }
            }
            return try store.delete(key)
        }
    }

    // MARK: Helpers

    static func order(_ a: (key: BlobKey, ref: String), _ b: (key: BlobKey, ref: String)) -> Bool {
        (a.key.hex, a.ref) < (b.key.hex, b.ref)
    }

    static func validate(_ references: [(key: BlobKey, ref: String)]) throws {
        for (_, ref) in references where ref.isEmpty || ref.utf8.count > 512 {
            throw BlobStoreError(.invalidReference, "a blob reference must be 1…512 bytes")
        }
    }
}

extension BlobStore {
    /// When the blob's file was written (or last re-written); nil when it does not exist.
    public func modificationDate(of key: BlobKey) -> Date? {
        (try? FileManager.default.attributesOfItem(atPath: path(for: key)))?[.modificationDate] as? Date
    }

    /// The top-level directories blobs live in (`ab` of `<root>/ab/cd/<key>`).
    func shardDirectories() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        return names.filter(Self.isShardName).sorted()
    }

    /// The blobs under `<root>/<shard>/` whose file is older than `cutoff`.
    func keys(inShard shard: String, modifiedBefore cutoff: Date) -> [BlobKey] {
        let files = FileManager.default
        let top = root.appendingPathComponent(shard)
        var keys: [BlobKey] = []
        for sub in ((try? files.contentsOfDirectory(atPath: top.path)) ?? []).filter(Self.isShardName) {
            for name in (try? files.contentsOfDirectory(atPath: top.appendingPathComponent(sub).path)) ?? [] {
                guard let key = BlobKey(name), key.hex == name, relativePath(for: key) == "\(shard)/\(sub)/\(name)",
                      let modified = modificationDate(of: key), modified < cutoff else { continue }
                keys.append(key)
            }
        }
        return keys
    }

    static func isShardName(_ name: String) -> Bool {
        name.utf8.count == 2 && name.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }
}
