import Foundation

// The MQTT side of Framecast (DESIGN.md "MQTT topics"): topic builders and the JSON payloads
// exchanged with frames. Shared by the album service, the frame agent and tests; it lives in
// Wire (the contract's Swift face) so the frame agent needs neither PostgreSQL nor service code.
//
// Every payload carries `"v": 1` and is encoded with sorted keys. Frames must treat unknown
// keys as absent (newer services may add some) and must act once per album `seq` for
// photo_added/photo_removed (once per (album, file) for a message without one, from an older
// service), once per `seq` for sync (ignore a seq not above the last one applied) and once per
// command `id`: QoS 2 is requested but never relied on.
//
// Fields added later are optionals, so a payload without them (an older service's, an older
// frame's) still decodes: `seq` and `versions` of photo_added, `seq` of photo_removed,
// `album_seqs` of sync.

/// Ids that are put into MQTT topics.
public enum TopicID {
    /// The longest id accepted in a topic level, in UTF-8 bytes.
    public static let maxLength = 64

    /// Whether `id` can be one topic level: non-empty, at most ``maxLength`` bytes, without
    /// `/`, `+`, `#`, NUL or other control characters.
    public static func isValid(_ id: String) -> Bool {
        guard !id.isEmpty, id.utf8.count <= maxLength else { return false }
        return !id.unicodeScalars.contains { $0 == "/" || $0 == "+" || $0 == "#" || $0.value < 0x20 || $0.value == 0x7F }
    }
}

/// Topic names. Each builder expects an id that passed ``TopicID/isValid(_:)``.
public enum FrameTopics {
    public static func photoAdded(album: String) -> String { "albums/\(album)/photo_added" }
    public static func photoRemoved(album: String) -> String { "albums/\(album)/photo_removed" }
    public static func albumConfig(album: String) -> String { "albums/\(album)/config" }
    public static func sync(frame: String) -> String { "frames/\(frame)/sync" }
    public static func command(frame: String) -> String { "frames/\(frame)/command" }
    public static func config(frame: String) -> String { "frames/\(frame)/config" }
    public static func status(frame: String) -> String { "frames/\(frame)/status" }
    public static func heartbeat(frame: String) -> String { "frames/\(frame)/heartbeat" }
    /// What the album service subscribes to for telemetry.
    public static let allStatus = "frames/+/status"
    public static let allHeartbeats = "frames/+/heartbeat"
    /// The retained topics of a frame (cleared with an empty retained message when it is deleted).
    public static func retained(frame: String) -> [String] {
        [sync(frame: frame), config(frame: frame), status(frame: frame), heartbeat(frame: frame)]
    }

    /// The frame id of `frames/{id}/<leaf>`, nil for any other topic or an invalid id.
    public static func frameID(in topic: String, leaf: String) -> String? {
        let parts = topic.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "frames", parts[2] == leaf else { return nil }
        let id = String(parts[1])
        return TopicID.isValid(id) ? id : nil
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    /// The JSON bytes of a payload (sorted keys).
    public static func encode(_ payload: some Encodable) -> [UInt8] {
        // Encoding these plain structs of strings and numbers cannot fail.
        (try? [UInt8](encoder.encode(payload))) ?? []
    }

    /// Decodes a payload from a frame; throws DecodingError for malformed JSON.
    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        try JSONDecoder().decode(type, from: Data(bytes))
    }
}

/// One version of a photo as a frame may fetch it: what it is and a **capability URL**
/// (DESIGN.md "The frame edge"), an absolute, immutable, content-addressed URL signed by the
/// album service with the gateway's key, that needs no `Authorization` header (whoever holds it
/// may read those bytes until it expires or the photo is deleted).
public struct PhotoVersionLink: Codable, Sendable, Hashable {
    /// `thumbnail`, `hd` or `frame:{W}x{H}`.
    public var size: String
    public var width: Int
    public var height: Int
    /// `jpeg` or `webp`.
    public var format: String
    /// `{public gateway URL}/c/{key id}/{expires}/{signature}/{file id}/{blob key}.{jpg|webp}`.
    public var url: String

    public init(size: String, width: Int, height: Int, format: String, url: String) {
        self.size = size
        self.width = width
        self.height = height
        self.format = format
        self.url = url
    }
}

/// `albums/{album_id}/photo_added` (QoS 1), and one entry of a sync's photo list.
public struct PhotoAddedMessage: Codable, Sendable, Hashable {
    public var v: Int = 1
    public var fileID: String
    public var albumID: String
    public var fileName: String
    public var contentType: String
    public var labels: [String]
    /// Unix milliseconds, absent when unknown.
    public var takenAt: Int64?
    /// The gateway URL of the photo's metadata document: `{public}/api/v1/photos/{file_id}`.
    /// A frame whose screen is not among `versions` fetches it to choose a version.
    public var mediaServiceURL: String
    /// The album's sequence number: each photo_added and photo_removed of an album takes the
    /// next one, so a frame that sees a number that is not its last one + 1 knows it missed a
    /// message and asks for its sync (`sync_request`). Absent in a sync's photo list (the sync
    /// carries `album_seqs`) and from older services.
    public var seq: Int64?
    /// The photo's versions with capability URLs: `thumbnail`, `hd` and every `frame:{W}x{H}`
    /// rendered for the album's frames (in a sync: only the frame's own screen). Absent from
    /// older services or when the album service knows no version yet.
    public var versions: [PhotoVersionLink]?

    public init(fileID: String, albumID: String, fileName: String, contentType: String, labels: [String],
                takenAt: Int64?, mediaServiceURL: String, seq: Int64? = nil, versions: [PhotoVersionLink]? = nil) {
        self.fileID = fileID
        self.albumID = albumID
        self.fileName = fileName
        self.contentType = contentType
        self.labels = labels
        self.takenAt = takenAt
        self.mediaServiceURL = mediaServiceURL
        self.seq = seq
        self.versions = versions
    }

    enum CodingKeys: String, CodingKey {
        case v, labels, seq, versions
        case fileID = "file_id", albumID = "album_id", fileName = "file_name", contentType = "content_type"
        case takenAt = "taken_at", mediaServiceURL = "media_service_url"
    }
}

/// `albums/{album_id}/photo_removed` (QoS 1).
public struct PhotoRemovedMessage: Codable, Sendable, Hashable {
    public var v: Int = 1
    public var fileID: String
    public var albumID: String
    /// "removed", "file_deleted", "album_deleted".
    public var reason: String
    /// The album's sequence number (see ``PhotoAddedMessage/seq``); absent from older services.
    public var seq: Int64?

    public init(fileID: String, albumID: String, reason: String, seq: Int64? = nil) {
        self.fileID = fileID
        self.albumID = albumID
        self.reason = reason
        self.seq = seq
    }

    enum CodingKeys: String, CodingKey {
        case v, reason, seq
        case fileID = "file_id", albumID = "album_id"
    }
}

/// `frames/{frame_id}/sync` (QoS 2, retained): everything the frame should show. Published
/// when what the frame shows changes (its albums, an album deleted, a member leaving), when it
/// asks (`sync_request`) or its owner does, and, for a frame that is offline while its albums
/// change, refreshed in the background (so a frame coming back finds a fresh one) — never
/// after each photo: photos arrive as photo_added/photo_removed with the album's `seq`.
public struct FrameSyncMessage: Codable, Sendable, Hashable {
    public var v: Int = 1
    public var frameID: String
    /// Grows with every sync of this frame; apply only a seq above the last one applied.
    public var seq: Int64
    public var albumIDs: [String]
    /// One entry per (album, photo) whose versions are ready, newest first per album; each
    /// carries the versions made for this frame's screen, when known (`versions`).
    public var photos: [PhotoAddedMessage]
    public var generatedAt: Int64
    /// Each album's sequence number when the sync was built: the photo list includes every
    /// photo_added/photo_removed up to it, so the frame expects that number + 1 next. Absent
    /// from older services.
    public var albumSeqs: [String: Int64]?

    public init(frameID: String, seq: Int64, albumIDs: [String], photos: [PhotoAddedMessage], generatedAt: Int64,
                albumSeqs: [String: Int64]? = nil) {
        self.frameID = frameID
        self.seq = seq
        self.albumIDs = albumIDs
        self.photos = photos
        self.generatedAt = generatedAt
        self.albumSeqs = albumSeqs
    }

    enum CodingKeys: String, CodingKey {
        case v, seq, photos
        case frameID = "frame_id", albumIDs = "album_ids", generatedAt = "generated_at", albumSeqs = "album_seqs"
    }
}

/// `frames/{frame_id}/command` (QoS 2, not retained). Act once per `id`.
public struct FrameCommandMessage: Codable, Sendable, Hashable {
    public static let known: Set<String> = ["next", "previous", "pause", "resume", "reload", "sleep", "wake", "set_interval"]

    public var v: Int = 1
    public var id: String
    public var command: String
    public var args: [String: String]
    public var issuedAt: Int64

    public init(id: String, command: String, args: [String: String], issuedAt: Int64) {
        self.id = id
        self.command = command
        self.args = args
        self.issuedAt = issuedAt
    }

    enum CodingKeys: String, CodingKey {
        case v, id, command, args
        case issuedAt = "issued_at"
    }
}

/// `frames/{frame_id}/config` (QoS 1, retained): the frame's settings merged with its rotation
/// schedule (set through the media service).
public struct FrameConfigMessage: Codable, Sendable, Hashable {
    public var v: Int = 1
    public var intervalSeconds: Int32
    public var shuffle: Bool
    public var sleepStart: String
    public var sleepEnd: String
    public var timeZone: String
    public var transition: String
    public var preferredFormat: String
    public var brightness: Int32
    /// The rotation schedule's slots, in order; absent: the frame has none (it shows its albums
    /// all day at `interval_seconds`).
    public var schedule: [ScheduleSlotMessage]?

    public init(intervalSeconds: Int32, shuffle: Bool, sleepStart: String, sleepEnd: String, timeZone: String,
                transition: String, preferredFormat: String, brightness: Int32, schedule: [ScheduleSlotMessage]? = nil) {
        self.intervalSeconds = intervalSeconds
        self.shuffle = shuffle
        self.sleepStart = sleepStart
        self.sleepEnd = sleepEnd
        self.timeZone = timeZone
        self.transition = transition
        self.preferredFormat = preferredFormat
        self.brightness = brightness
        self.schedule = schedule
    }

    enum CodingKeys: String, CodingKey {
        case v, shuffle, transition, brightness, schedule
        case intervalSeconds = "interval_seconds", sleepStart = "sleep_start", sleepEnd = "sleep_end"
        case timeZone = "time_zone", preferredFormat = "preferred_format"
    }
}

/// One slot of a frame's rotation schedule in `frames/{frame_id}/config`: what to show when.
public struct ScheduleSlotMessage: Codable, Sendable, Hashable {
    /// "sun"…"sat"; empty: every day.
    public var days: [String]
    /// "HH:MM" in the frame's time zone; both absent: all day; end before start: past midnight.
    public var startTime: String?
    public var endTime: String?
    public var intervalSeconds: Int32
    public var shuffle: Bool
    /// What to show: a playlist (`GET /api/v1/playlists/{id}`), an album, or neither: the
    /// frame's own albums.
    public var playlistID: String?
    public var albumID: String?

    public init(days: [String], startTime: String?, endTime: String?, intervalSeconds: Int32, shuffle: Bool,
                playlistID: String?, albumID: String?) {
        self.days = days
        self.startTime = startTime
        self.endTime = endTime
        self.intervalSeconds = intervalSeconds
        self.shuffle = shuffle
        self.playlistID = playlistID
        self.albumID = albumID
    }

    enum CodingKeys: String, CodingKey {
        case days, shuffle
        case startTime = "start_time", endTime = "end_time", intervalSeconds = "interval_seconds"
        case playlistID = "playlist_id", albumID = "album_id"
    }
}

/// `albums/{album_id}/config` (QoS 1, retained).
public struct AlbumConfigMessage: Codable, Sendable, Hashable {
    public var v: Int = 1
    public var albumID: String
    public var intervalSeconds: Int32
    public var shuffle: Bool
    public var transition: String
    public var showCaptions: Bool

    public init(albumID: String, intervalSeconds: Int32, shuffle: Bool, transition: String, showCaptions: Bool) {
        self.albumID = albumID
        self.intervalSeconds = intervalSeconds
        self.shuffle = shuffle
        self.transition = transition
        self.showCaptions = showCaptions
    }

    enum CodingKeys: String, CodingKey {
        case v, shuffle, transition
        case albumID = "album_id", intervalSeconds = "interval_seconds", showCaptions = "show_captions"
    }
}

/// `frames/{frame_id}/status` (QoS 0, from the frame). A frame connects with the last will
/// `{"v":1,"status":"offline"}` (retained) and publishes `online` (retained) once connected.
///
/// `sync_request` (never retained) asks the album service for a fresh `frames/{id}/sync`: a
/// frame sends it when it (re)connects and when an album's `seq` shows it missed a message.
/// It is not a state of the frame: the service answers it (at most one sync per frame every
/// few seconds; a request inside that window is served when it ends) and records nothing.
public struct FrameStatusMessage: Codable, Sendable, Hashable {
    /// A frame asking for its sync (see above).
    public static let syncRequest = "sync_request"

    /// "online", "offline", "cached", "displayed", "error", "sync_request".
    public var status: String
    /// The photo concerned (`cached`, `displayed`).
    public var fileID: String?
    /// Several photos at once (`cached` after a sync).
    public var fileIDs: [String]?
    public var message: String?
    public var v: Int?

    public init(status: String, fileID: String? = nil, fileIDs: [String]? = nil, message: String? = nil) {
        self.status = status
        self.fileID = fileID
        self.fileIDs = fileIDs
        self.message = message
        self.v = 1
    }

    enum CodingKeys: String, CodingKey {
        case v, status, message
        case fileID = "file_id", fileIDs = "file_ids"
    }
}

/// `frames/{frame_id}/heartbeat` (QoS 0, retained, from the frame). Every field but `v` is
/// optional: the album service records only that a heartbeat came; the rest is for people.
public struct FrameHeartbeatMessage: Codable, Sendable, Hashable {
    public var v: Int?
    /// The frame's clock, unix milliseconds (informational: the service records its own time).
    public var at: Int64?
    /// Seconds since the frame agent started.
    public var uptimeSeconds: Int64?
    /// The photo on screen now (absent when none, or asleep).
    public var currentFileID: String?
    /// "showing", "paused", "asleep", "empty".
    public var state: String?
    /// Bytes and photos in the frame's disk cache, and its budget in bytes.
    public var cacheBytes: Int64?
    public var cacheFiles: Int?
    public var cacheBudgetBytes: Int64?
    /// Whether the frame reaches the gateway (false: showing from its cache, catching up later).
    public var gatewayReachable: Bool?

    public init(at: Int64? = nil, uptimeSeconds: Int64? = nil, currentFileID: String? = nil, state: String? = nil,
                cacheBytes: Int64? = nil, cacheFiles: Int? = nil, cacheBudgetBytes: Int64? = nil, gatewayReachable: Bool? = nil) {
        self.v = 1
        self.at = at
        self.uptimeSeconds = uptimeSeconds
        self.currentFileID = currentFileID
        self.state = state
        self.cacheBytes = cacheBytes
        self.cacheFiles = cacheFiles
        self.cacheBudgetBytes = cacheBudgetBytes
        self.gatewayReachable = gatewayReachable
    }

    enum CodingKeys: String, CodingKey {
        case v, at, state
        case uptimeSeconds = "uptime_seconds", currentFileID = "current_file_id", cacheBytes = "cache_bytes"
        case cacheFiles = "cache_files", cacheBudgetBytes = "cache_budget_bytes", gatewayReachable = "gateway_reachable"
    }
}
