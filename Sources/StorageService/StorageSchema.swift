import Postgres

/// The `storage` schema: one row per (user, distinct bytes). Analysis and AI metadata are kept
/// as their wire encodings next to the columns queries need. Each file holds a reference to
/// its blob in the blob store's `blobs.refs` (owner `storage`, ref = file id). A deleted file
/// leaves a tombstone in `deleted_files` for a while (``DeletedFiles``).
enum StorageSchema {
    static let name = "storage"

    static let migrations: [Migration] = [
        Migration(version: 100, name: "files", sql: """
            CREATE TABLE files (
                file_id               uuid PRIMARY KEY,
                user_id               text NOT NULL,
                blob_key              text NOT NULL,
                sha256                text NOT NULL,
                size                  bigint NOT NULL CHECK (size > 0),
                file_name             text NOT NULL,
                content_type          text NOT NULL,
                declared_content_type text NOT NULL,
                metadata              jsonb NOT NULL DEFAULT '{}',
                format                text NOT NULL,
                width                 integer NOT NULL,
                height                integer NOT NULL,
                taken_at              timestamptz,
                analysis              bytea NOT NULL,
                ai_metadata           bytea NOT NULL,
                created_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
                UNIQUE (user_id, sha256)
            );
            CREATE INDEX files_by_user_newest ON files (user_id, created_at DESC, file_id DESC);
            CREATE INDEX files_by_blob ON files (blob_key);
            """),
        // Blob references are counted by the blob store (`blobs.refs`, migrated before this
        // schema): a reference per file, for the files stored before it existed.
        Migration(version: 101, name: "blob_references", sql: """
            INSERT INTO blobs.refs (blob_key, owner, ref)
            SELECT blob_key, 'storage', file_id::text FROM files WHERE blob_key ~ '^[0-9a-f]{64}$'
            ON CONFLICT DO NOTHING;
            """),
        // Tombstones of deleted files, written in the delete's transaction and kept for a
        // retention period, for gateways catching up on `file.deleted` (``DeletedFiles``).
        Migration(version: 102, name: "deleted_files", sql: """
            CREATE TABLE deleted_files (
                file_id    uuid PRIMARY KEY,
                deleted_at timestamptz NOT NULL DEFAULT clock_timestamp()
            );
            CREATE INDEX deleted_files_by_time ON deleted_files (deleted_at, file_id);
            """),
    ]
}
