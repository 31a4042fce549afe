import Postgres

/// The `album` schema. Roles are 'owner', 'contributor', 'viewer'; the owner of an album is
/// also a row of `album_members` (so one join answers "what may this user do here").
enum AlbumSchema {
    static let name = "album"

    static let migrations: [Migration] = [
        Migration(version: 100, name: "albums_frames", sql: """
            CREATE TABLE albums (
                album_id      uuid PRIMARY KEY,
                owner_id      text NOT NULL,
                name          text NOT NULL,
                description   text NOT NULL DEFAULT '',
                is_default    boolean NOT NULL DEFAULT false,
                cover_file_id text NOT NULL DEFAULT '',
                settings      bytea NOT NULL DEFAULT '',
                created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
                updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
            );
            CREATE UNIQUE INDEX albums_one_default ON albums (owner_id) WHERE is_default;

            CREATE TABLE album_members (
                album_id  uuid NOT NULL REFERENCES albums ON DELETE CASCADE,
                user_id   text NOT NULL,
                email     text NOT NULL DEFAULT '',
                name      text NOT NULL DEFAULT '',
                role      text NOT NULL CHECK (role IN ('owner', 'contributor', 'viewer')),
                added_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
                PRIMARY KEY (album_id, user_id)
            );
            CREATE INDEX album_members_by_user ON album_members (user_id);

            -- What album knows of each file (from file.uploaded.with_ai or storage), and whether
            -- media has rendered its versions (media.cache_ready).
            CREATE TABLE photos (
                file_id      uuid PRIMARY KEY,
                owner_id     text NOT NULL DEFAULT '',
                file_name    text NOT NULL DEFAULT '',
                content_type text NOT NULL DEFAULT '',
                taken_at     bigint,
                ai_labels    text NOT NULL DEFAULT '[]',
                known        boolean NOT NULL DEFAULT false,
                cache_ready  boolean NOT NULL DEFAULT false
            );

            CREATE TABLE album_photos (
                album_id  uuid NOT NULL REFERENCES albums ON DELETE CASCADE,
                file_id   uuid NOT NULL REFERENCES photos ON DELETE CASCADE,
                added_by  text NOT NULL,
                added_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
                PRIMARY KEY (album_id, file_id)
            );
            CREATE INDEX album_photos_newest ON album_photos (album_id, added_at DESC, file_id DESC);
            CREATE INDEX album_photos_by_file ON album_photos (file_id);

            -- MQTT notifications that must go out exactly once per (album, file, kind).
            -- 'added' rows are written with the state change that makes them due (cache ready,
            -- photo added to an album whose photo is ready); removing the photo deletes the
            -- 'added' row so a later re-add announces it again.
            CREATE TABLE album_pushes (
                album_id      uuid NOT NULL,
                file_id       uuid NOT NULL,
                kind          text NOT NULL CHECK (kind IN ('added', 'removed')),
                state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'published')),
                payload       bytea NOT NULL,
                attempts      integer NOT NULL DEFAULT 0,
                claimed_until timestamptz,
                last_error    text,
                created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
                published_at  timestamptz,
                PRIMARY KEY (album_id, file_id, kind)
            );
            CREATE INDEX album_pushes_pending ON album_pushes (created_at) WHERE state = 'pending';

            CREATE TABLE frames (
                frame_id          uuid PRIMARY KEY,
                owner_id          text NOT NULL,
                name              text NOT NULL,
                width             integer NOT NULL,
                height            integer NOT NULL,
                orientation       integer NOT NULL DEFAULT 0,
                config            bytea NOT NULL DEFAULT '',
                mqtt_username     text NOT NULL,
                online            boolean NOT NULL DEFAULT false,
                last_heartbeat_at timestamptz,
                last_seen_at      timestamptz,
                sync_seq          bigint NOT NULL DEFAULT 0,
                sync_published_seq bigint NOT NULL DEFAULT 0,
                last_synced_at    timestamptz,
                created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
                updated_at        timestamptz NOT NULL DEFAULT clock_timestamp()
            );
            CREATE INDEX frames_by_owner ON frames (owner_id, created_at);

            CREATE TABLE frame_albums (
                frame_id uuid NOT NULL REFERENCES frames ON DELETE CASCADE,
                album_id uuid NOT NULL REFERENCES albums ON DELETE CASCADE,
                PRIMARY KEY (frame_id, album_id)
            );
            CREATE INDEX frame_albums_by_album ON frame_albums (album_id);

            -- What each frame reported per photo (frames/{id}/status cached / displayed).
            CREATE TABLE frame_photos (
                frame_id     uuid NOT NULL REFERENCES frames ON DELETE CASCADE,
                file_id      uuid NOT NULL,
                cached_at    timestamptz,
                displayed_at timestamptz,
                PRIMARY KEY (frame_id, file_id)
            );

            -- Per album × frame: photos pending (not cached yet), delivered (cached), displayed,
            -- refreshed on every report of the frame; last_ack_at = the frame's last report.
            CREATE TABLE album_sync_status (
                frame_id               uuid NOT NULL,
                album_id               uuid NOT NULL,
                pending                integer NOT NULL DEFAULT 0,
                delivered              integer NOT NULL DEFAULT 0,
                displayed              integer NOT NULL DEFAULT 0,
                last_displayed_file_id text NOT NULL DEFAULT '',
                last_displayed_at      timestamptz,
                last_ack_at            timestamptz,
                PRIMARY KEY (frame_id, album_id),
                FOREIGN KEY (frame_id, album_id) REFERENCES frame_albums ON DELETE CASCADE
            );
            """),
        // The frame's rotation schedule as media last announced it (RotationSchedule wire
        // encoding, '' for none; schedule_revision: the event's revision, applied only when
        // higher), and its retained config due like its sync: config_seq > config_published_seq.
        Migration(version: 101, name: "frame_schedules", sql: """
            ALTER TABLE frames
                ADD COLUMN schedule             bytea NOT NULL DEFAULT '',
                ADD COLUMN schedule_revision    bigint NOT NULL DEFAULT 0,
                ADD COLUMN config_seq           bigint NOT NULL DEFAULT 0,
                ADD COLUMN config_published_seq bigint NOT NULL DEFAULT 0;
            """),
        // Tombstones of deleted files (written by file.deleted): a late or redelivered
        // file.uploaded.with_ai or media.cache_ready, or an AddAlbumPhoto racing the delete,
        // finds it under the file's lock and adds nothing. Pruned after
        // AlbumService.tombstoneRetention.
        Migration(version: 102, name: "deleted_files", sql: """
            CREATE TABLE deleted_files (
                file_id    uuid PRIMARY KEY,
                deleted_at timestamptz NOT NULL DEFAULT clock_timestamp()
            );
            CREATE INDEX deleted_files_by_age ON deleted_files (deleted_at);
            """),
        // Media keeps its own copy of album's state from events (MediaState.swift): revisions
        // that order the events of one album (members), one frame (albums, screen) and one
        // (album, photo) pair, and the steps of republishing the whole state once for a
        // database that already held data when media started keeping its copy (a new one has
        // nothing to republish; Republisher deletes each step when done).
        Migration(version: 103, name: "state_for_media", sql: """
            ALTER TABLE albums ADD COLUMN members_revision bigint NOT NULL DEFAULT 0;
            ALTER TABLE frames ADD COLUMN albums_revision bigint NOT NULL DEFAULT 0;
            CREATE SEQUENCE photo_revisions;
            CREATE TABLE republish (
                step      text PRIMARY KEY CHECK (step IN ('members', 'photos', 'frames')),
                -- the last row republished (album id, album id/file id, frame id as text)
                after_key text NOT NULL DEFAULT '',
                queued_at timestamptz NOT NULL DEFAULT clock_timestamp()
            );
            INSERT INTO republish (step) SELECT 'members' WHERE EXISTS (SELECT 1 FROM albums);
            INSERT INTO republish (step) SELECT 'photos' WHERE EXISTS (SELECT 1 FROM album_photos);
            INSERT INTO republish (step) SELECT 'frames' WHERE EXISTS (SELECT 1 FROM frames);
            """),
        // album_pushes is a ServiceKit LeasedQueue (FramePublisher.pushQueue): a notification
        // whose publish failed is not claimed again before not_before (exponential back-off).
        Migration(version: 104, name: "album_pushes_back_off", sql: """
            ALTER TABLE album_pushes ADD COLUMN not_before timestamptz;
            """),
        // The frame edge (DESIGN.md): photos.versions = the versions frames may fetch, from
        // media.cache_ready (a JSON array of StoredVersion), signed into capability URLs when a
        // notification or a sync is built. albums.seq = the album's sequence number, taken by
        // each photo_added / photo_removed queued (in the transaction that queues it), so a
        // frame tells a missed message from a repeat. frame_albums.synced_seq = the album's seq
        // in the frame's last published sync: a frame is stale when an album's seq is above it
        // (FramePublisher refreshes the retained sync of stale frames that are offline).
        Migration(version: 105, name: "frame_edge", sql: """
            ALTER TABLE photos ADD COLUMN versions text NOT NULL DEFAULT '[]';
            ALTER TABLE albums ADD COLUMN seq bigint NOT NULL DEFAULT 0;
            ALTER TABLE frame_albums ADD COLUMN synced_seq bigint NOT NULL DEFAULT 0;
            CREATE INDEX frames_offline ON frames (last_synced_at) WHERE NOT online;
            """),
    ]
}
