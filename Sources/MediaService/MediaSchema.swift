import Postgres

/// The `media` schema: the rendered versions of each photo (content addressed, immutable), the
/// photo's metadata as media serves it (AI metadata and analysis kept as their wire
/// encodings), playlists and frames' rotation schedules, frames' screens and caches, the
/// queue of versions to render, and the tombstones of deleted files.
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
        // Playlists (albums and/or photos chosen one by one, in an order) and per-frame rotation
        // schedules: one row per slot, in position order. Ids are validated UUIDs, so the id
        // lists are plain text arrays. A playlist a schedule uses cannot be deleted (the FK).
        Migration(version: 101, name: "playlists_rotation_schedules", sql: """
            CREATE TABLE playlists (
                playlist_id uuid PRIMARY KEY,
                owner_id    text NOT NULL,
                name        text NOT NULL,
                description text NOT NULL DEFAULT '',
                play_order  text NOT NULL CHECK (play_order IN ('newest', 'oldest', 'shuffle')),
                album_ids   text[] NOT NULL DEFAULT '{}',
                file_ids    text[] NOT NULL DEFAULT '{}',
                created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
                updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
            );
            CREATE INDEX playlists_by_owner ON playlists (owner_id, created_at DESC, playlist_id DESC);

            -- Every schedule change (set or delete, any frame) takes the next revision; album
            -- applies a frame's schedule only when its revision is above the last one applied.
            CREATE SEQUENCE schedule_revisions;
            CREATE TABLE rotation_schedules (
                frame_id         uuid NOT NULL,
                position         integer NOT NULL CHECK (position >= 0),
                owner_id         text NOT NULL,
                playlist_id      uuid REFERENCES playlists,
                album_id         uuid,
                days_of_week     integer[] NOT NULL DEFAULT '{}',
                start_time       text NOT NULL DEFAULT '',
                end_time         text NOT NULL DEFAULT '',
                interval_seconds integer NOT NULL CHECK (interval_seconds BETWEEN 5 AND 86400),
                shuffle          boolean NOT NULL DEFAULT false,
                revision         bigint NOT NULL,
                updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
                PRIMARY KEY (frame_id, position),
                CHECK (playlist_id IS NULL OR album_id IS NULL)
            );
            CREATE INDEX rotation_schedules_by_playlist ON rotation_schedules (playlist_id) WHERE playlist_id IS NOT NULL;
            """),
        // Frames' screens (from album's device.albums_changed; a deleted frame stays as a
        // tombstone so a late event does not bring it back), what each frame reported cached
        // (one row per frame and photo: the version it has), and the durable queue of versions
        // to render (background work for new screens; a row with a lease is also the claim of
        // whoever renders it, so replicas render a version once).
        Migration(version: 102, name: "frame_screens_photo_cache_render_jobs", sql: """
            CREATE TABLE frame_screens (
                frame_id   text PRIMARY KEY,
                owner_id   text NOT NULL,
                width      integer NOT NULL,
                height     integer NOT NULL,
                format     text NOT NULL,
                album_ids  text[] NOT NULL DEFAULT '{}',
                -- occurred_at of the event applied: an older event changes nothing.
                changed_at bigint NOT NULL,
                deleted    boolean NOT NULL DEFAULT false
            );
            CREATE INDEX frame_screens_by_screen ON frame_screens (width, height, format) WHERE NOT deleted;
            CREATE TABLE photo_cache (
                frame_id    text NOT NULL,
                file_id     text NOT NULL,
                size        text NOT NULL,
                format      text NOT NULL,
                reported_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                PRIMARY KEY (frame_id, file_id)
            );
            CREATE INDEX photo_cache_by_file ON photo_cache (file_id);
            CREATE TABLE render_jobs (
                file_id     text NOT NULL,
                size        text NOT NULL,
                format      text NOT NULL,
                width       integer NOT NULL CHECK (width > 0),
                height      integer NOT NULL CHECK (height > 0),
                -- the photo's created_at in ms: newest first
                priority    bigint NOT NULL,
                attempts    integer NOT NULL DEFAULT 0,
                lease_until timestamptz,
                created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
                PRIMARY KEY (file_id, size, format)
            );
            CREATE INDEX render_jobs_by_priority ON render_jobs (priority DESC, file_id);
            """),
        // Blob references are counted by the blob store (`blobs.refs`, migrated before this
        // schema): a reference per stored version (MediaService.versionReference), for the
        // versions stored before it existed.
        Migration(version: 103, name: "blob_references", sql: """
            INSERT INTO blobs.refs (blob_key, owner, ref)
            SELECT blob_key, 'media', file_id || '|' || size || '|' || format FROM photo_versions
            WHERE blob_key ~ '^[0-9a-f]{64}$'
            ON CONFLICT DO NOTHING;
            """),
        // Tombstones of deleted files (written by file.deleted): whatever arrives for the file
        // afterwards (a late file.uploaded.with_ai, a render, an on-demand request) finds it
        // under the file's lock and stores nothing. Pruned after MediaService.tombstoneRetention.
        Migration(version: 104, name: "deleted_files", sql: """
            CREATE TABLE deleted_files (
                file_id    text PRIMARY KEY,
                deleted_at timestamptz NOT NULL DEFAULT clock_timestamp()
            );
            CREATE INDEX deleted_files_by_age ON deleted_files (deleted_at);
            """),
        // Media's own copy of album's state (AlbumState.swift), kept from album's events so
        // that access checks and renders never ask album: each album's owner and members
        // (album.members_changed; a deleted album stays as a tombstone so a late event does
        // not bring it back), which albums hold each photo (album.photo_added / photo_removed;
        // a removal stays as a row with present = false, so an older add arriving later changes
        // nothing), and each frame's revision (device.albums_changed; frame_screens already
        // holds its owner, screen and albums). cache_ready_due: the photo's media.cache_ready
        // is still to be sent (no album was known for it yet, or its albums' frame versions are
        // being rendered).
        Migration(version: 105, name: "album_state", sql: """
            CREATE TABLE albums (
                album_id text PRIMARY KEY,
                owner_id text NOT NULL DEFAULT '',
                -- revision of the members applied (album.members_changed)
                revision bigint NOT NULL DEFAULT 0,
                deleted  boolean NOT NULL DEFAULT false
            );
            CREATE TABLE album_members (
                album_id text NOT NULL REFERENCES albums ON DELETE CASCADE,
                user_id  text NOT NULL,
                role     text NOT NULL CHECK (role IN ('owner', 'contributor', 'viewer')),
                PRIMARY KEY (album_id, user_id)
            );
            CREATE INDEX album_members_by_user ON album_members (user_id);
            CREATE TABLE album_photos (
                album_id text NOT NULL,
                file_id  text NOT NULL,
                present  boolean NOT NULL,
                revision bigint NOT NULL,
                -- when it was added, ms (newest first in playlists)
                added_at bigint NOT NULL DEFAULT 0,
                PRIMARY KEY (album_id, file_id)
            );
            CREATE INDEX album_photos_by_file ON album_photos (file_id) WHERE present;
            CREATE INDEX album_photos_newest ON album_photos (album_id, added_at DESC, file_id DESC) WHERE present;
            ALTER TABLE frame_screens ADD COLUMN revision bigint NOT NULL DEFAULT 0;
            CREATE INDEX frame_screens_by_album ON frame_screens USING gin (album_ids) WHERE NOT deleted;
            ALTER TABLE photo_metadata ADD COLUMN cache_ready_due boolean NOT NULL DEFAULT false;
            """),
        // render_jobs is a ServiceKit LeasedQueue (MediaService.renderJobsQueue, its lease in
        // lease_until): a job whose render failed is not claimed by the background queue
        // before not_before (exponential back-off), and keeps what the failure said.
        Migration(version: 106, name: "render_jobs_back_off", sql: """
            ALTER TABLE render_jobs ADD COLUMN not_before timestamptz, ADD COLUMN last_error text;
            """),
    ]
}
