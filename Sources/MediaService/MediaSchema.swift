import Postgres

/// The `media` schema: the rendered versions of each photo (content addressed, immutable) and
/// the photo's metadata as media serves it. AI metadata and analysis are kept as their wire
/// encodings.
enum MediaSchema {
    static let name = "media"

    static let migrations: [Migration] = [
        Migration(version: 100, name: "photo_versions_and_metadata", sql: """
            CREATE TABLE photo_metadata (
                file_id           text PRIMARY KEY,
                user_id           text NOT NULL,
                file_name         text NOT NULL,
                content_type      text NOT NULL,
                original_blob_key text NOT NULL,
                original_bytes    bigint NOT NULL,
                ai_metadata       bytea NOT NULL,
                analysis          bytea NOT NULL,
                created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
                updated_at        timestamptz NOT NULL DEFAULT clock_timestamp()
            );
            CREATE TABLE photo_versions (
                file_id      text NOT NULL,
                size         text NOT NULL,
                width        integer NOT NULL CHECK (width > 0),
                height       integer NOT NULL CHECK (height > 0),
                bytes        bigint NOT NULL CHECK (bytes > 0),
                format       text NOT NULL,
                content_type text NOT NULL,
                blob_key     text NOT NULL,
                created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
                UNIQUE (file_id, size, format)
            );
            CREATE INDEX photo_versions_by_blob ON photo_versions (blob_key);
            """),
    ]
}
