import Foundation
import Logging
import Postgres
import ServiceKit
import ServiceLifecycle
import Wire

/// The tombstones of deleted files (`storage.deleted_files`): a file's id and when it was
/// deleted, written in the delete's own transaction and kept for a retention period.
///
/// Why storage keeps them: a capability URL names a file and carries its own authorisation, so
/// a gateway replica refuses a deleted file's URLs only because it heard of the delete
/// (`file.deleted`, core NATS). A replica that was not listening (starting, reconnecting, or
/// one that dropped messages) asks `ListDeletedFiles` for what it missed; the answer must go
/// back as far as a URL can live (its lifetime plus the day it is rounded up by), which the
/// retention covers.
struct DeletedFiles: Sendable {
    let schema: String
    /// How long a tombstone is kept (``StorageConfiguration/deletedFileRetention``).
    let retention: Duration

    /// Records the delete of `fileID`, on the connection of the transaction that deletes it.
    func record(_ fileID: String, on connection: PostgresConnection) throws {
        try connection.execute(
            "INSERT INTO \(schema).deleted_files (file_id, deleted_at) VALUES ($1, clock_timestamp()) ON CONFLICT (file_id) DO NOTHING",
            [.text(fileID)])
    }

    /// A page of the files deleted at or after `since`, oldest first (`after`: the previous page's
    /// cursor), and the cursor of the next page, nil on the last.
    func page(since: Date, after: (deletedAt: String, fileID: String)?, size: Int,
              on postgres: PostgresPool) async throws -> (files: [DeletedFile], next: (deletedAt: String, fileID: String)?) {
        let rows = try await postgres.query("""
            SELECT file_id::text AS file_id, (extract(epoch FROM deleted_at) * 1000)::bigint AS deleted_ms,
                   deleted_at::text AS cursor_at
            FROM \(schema).deleted_files
            WHERE deleted_at >= $1 AND ($2 = '' OR (deleted_at, file_id) > ($2::timestamptz, $3::uuid))
            ORDER BY deleted_at, file_id LIMIT $4
            """, [.timestamptz(since), .text(after?.deletedAt ?? ""),
                  .text(after?.fileID ?? "00000000-0000-0000-0000-000000000000"), .int(Int64(size + 1))])
        let page = rows.prefix(size)
        let files = try page.map { row in
            DeletedFile(fileID: try row.decode("file_id"), deletedAt: try row.decode("deleted_ms"))
        }
        guard rows.count > size, let last = page.last else { return (files, nil) }
        let deletedAt: String = try last.decode("cursor_at"), fileID: String = try last.decode("file_id")
        return (files, (deletedAt, fileID))
    }

    /// Removes the tombstones older than the retention; returns how many went.
    @discardableResult
    func prune(on postgres: PostgresPool) async throws -> Int {
        try await postgres.execute(
            "DELETE FROM \(schema).deleted_files WHERE deleted_at < clock_timestamp() - make_interval(secs => $1)",
            [.double(Double(retention.components.seconds))])
    }

    /// The oldest delete still known for sure: now minus the retention.
    func retainedSince(now: Date = Date()) -> Date {
        now.addingTimeInterval(-Double(retention.components.seconds))
    }
}

/// Prunes the tombstones of deleted files every `interval` (``DeletedFiles/prune(on:)``).
/// Replicas may prune at once: each deletes what is old, the second finds nothing.
struct DeletedFilesPruner: Service {
    let deletedFiles: DeletedFiles
    let postgres: PostgresPool
    let interval: Duration
    let logger: Logger

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                let removed = try await deletedFiles.prune(on: postgres)
                if removed > 0 {
                    logger.info("pruned tombstones of deleted files", metadata: [
                        "deleted_files.removed": "\(removed)", "deleted_files.retention": "\(deletedFiles.retention)"])
                }
            } catch {
                logger.warning("pruning tombstones of deleted files failed; will retry", metadata: ["error": "\(error)"])
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }
}
