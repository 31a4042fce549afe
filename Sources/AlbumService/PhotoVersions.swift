import Foundation
import Wire

/// One version of a photo as album keeps it (`photos.versions`, a JSON array), learnt from
/// `media.cache_ready`: enough to sign its capability URL and describe it to a frame, so a
/// photo_added or a sync carries URLs that need no metadata round trip (DESIGN.md "The frame
/// edge"). Media stays the owner of versions; this is album's copy of what frames may fetch.
struct StoredVersion: Codable, Sendable, Hashable {
    /// `thumbnail`, `hd` or `frame:{W}x{H}`.
    var size: String
    var width: Int
    var height: Int
    /// `jpeg` or `webp`.
    var format: String
    /// Lower-case hex SHA-256 of the version's bytes (its blob key).
    var blobKey: String

    enum CodingKeys: String, CodingKey {
        case size, width, height, format
        case blobKey = "blob_key"
    }

    /// The versions of a `media.cache_ready` a frame may be sent: `thumbnail`, `hd` and the
    /// `frame:` ones, in a format a capability URL names (jpeg, webp), with a well-formed blob
    /// key. `original` is left out: it keeps the upload's format and frames never need it.
    static func frameVersions(_ versions: [PhotoVersion]) -> [StoredVersion] {
        versions.compactMap { v in
            let format = v.format.lowercased()
            let blob = v.blobKey.lowercased()
            guard v.size == "thumbnail" || v.size == "hd" || v.size.hasPrefix("frame:"),
                  format == "jpeg" || format == "webp", v.width > 0, v.height > 0,
                  blob.utf8.count == 64, blob.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) else {
                return nil
            }
            return StoredVersion(size: v.size, width: Int(v.width), height: Int(v.height), format: format, blobKey: blob)
        }
    }

    /// `old` with `new` laid over it (a version is one per size and format; media may announce
    /// a photo again after rendering more), sorted by size then format so the JSON is stable.
    static func merge(_ old: [StoredVersion], _ new: [StoredVersion]) -> [StoredVersion] {
        var byKey: [String: StoredVersion] = [:]
        for v in old + new { byKey["\(v.size)\n\(v.format)"] = v }
        return byKey.values.sorted { ($0.size, $0.format) < ($1.size, $1.format) }
    }

    /// The `photos.versions` column's JSON; an unreadable value counts as none (the frame then
    /// falls back to the metadata document).
    static func decode(_ json: String) -> [StoredVersion] {
        guard !json.isEmpty else { return [] }
        return (try? FrameTopics.decode([StoredVersion].self, from: Array(json.utf8))) ?? []
    }

    static func encode(_ versions: [StoredVersion]) -> String {
        String(decoding: FrameTopics.encode(versions), as: UTF8.self)
    }

    /// The links of `versions` for a frame message, each signed now (nil when there are none, so
    /// the field is left out rather than sent empty).
    static func links(_ versions: [StoredVersion], fileID: String, expires: Int64,
                      _ configuration: AlbumConfiguration) -> [PhotoVersionLink]? {
        guard !versions.isEmpty else { return nil }
        return versions.map { v in
            PhotoVersionLink(size: v.size, width: v.width, height: v.height, format: v.format,
                             url: configuration.capabilityURL(fileID: fileID, version: v, expires: expires))
        }
    }
}
