import Foundation
import Wire

/// The photo metadata document of `GET /api/v1/photos/{file_id}` (the fields the agent uses;
/// others are ignored).
public struct PhotoDocument: Decodable, Sendable, Hashable {
    public struct Version: Decodable, Sendable, Hashable {
        /// `thumbnail`, `hd`, `original`, `frame:{W}x{H}`.
        public var size: String
        public var width: Int
        public var height: Int
        public var url: String
        public var bytes: Int64?
        public var contentType: String?

        public init(size: String, width: Int, height: Int, url: String, bytes: Int64? = nil, contentType: String? = nil) {
            self.size = size
            self.width = width
            self.height = height
            self.url = url
            self.bytes = bytes
            self.contentType = contentType
        }

        enum CodingKeys: String, CodingKey {
            case size, width, height, url, bytes
            case contentType = "content_type"
        }
    }

    public var fileID: String
    public var versions: [Version]

    enum CodingKeys: String, CodingKey {
        case versions
        case fileID = "file_id"
    }
}

/// Which version a frame downloads.
public enum VersionChoice {
    /// The longest side a version may claim (libvips' own limit is 10,000,000).
    static let maxSide = 10_000_000
    /// The version made for this screen (`frame:{W}x{H}`, or any version of exactly that
    /// size); else the smallest one that covers the screen (both sides at least as large);
    /// else the largest there is. Nil when there are no usable versions.
    public static func pick(_ versions: [PhotoDocument.Version], width: Int, height: Int) -> PhotoDocument.Version? {
        // Sides beyond any real image (a hostile or corrupt document) are not usable: they
        // would overflow the area comparison below.
        let usable = versions.filter { (1...Self.maxSide).contains($0.width) && (1...Self.maxSide).contains($0.height) && !$0.url.isEmpty }
        if let exact = usable.first(where: { $0.size == "frame:\(width)x\(height)" }) { return exact }
        if let sameSize = usable.first(where: { $0.width == width && $0.height == height }) { return sameSize }
        func area(_ v: PhotoDocument.Version) -> Int { v.width * v.height }
        let covering = usable.filter { $0.width >= width && $0.height >= height }
        if let smallest = covering.min(by: { (area($0), $0.size) < (area($1), $1.size) }) { return smallest }
        return usable.max { (area($0), $0.size) < (area($1), $1.size) }
    }
}

/// Which version a frame downloads straight from a notification's or a sync's capability URLs,
/// with no metadata round trip.
public enum DirectVersion {
    /// The version made for this screen (`frame:{W}x{H}`) in the frame's preferred format, else
    /// in JPEG. Nil when there is neither: the frame then asks the metadata document, which
    /// may offer another version that fits (``VersionChoice``).
    public static func pick(_ versions: [PhotoVersionLink], width: Int, height: Int, preferredFormat: String?) -> PhotoVersionLink? {
        let screen = versions.filter { $0.size == "frame:\(width)x\(height)" && !$0.url.isEmpty }
        let preferred = (preferredFormat ?? "").lowercased()
        if !preferred.isEmpty, let version = screen.first(where: { $0.format.lowercased() == preferred }) { return version }
        return screen.first { $0.format.lowercased() == "jpeg" }
    }
}

/// Ids that become file names in the cache and MQTT topic levels: ASCII letters, digits, `-`
/// and `_`, 1...64 characters (UUIDs pass; `..`, `/`, wildcards and NUL do not).
public enum SafeID {
    public static func isValid(_ id: String) -> Bool {
        guard (1...64).contains(id.utf8.count) else { return false }
        return id.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F
        }
    }
}

/// The frame's nightly sleep window (screen off), from its config: `HH:MM` start and end in
/// an IANA time zone. Pure.
public struct SleepWindow: Sendable, Hashable {
    /// Minutes after midnight.
    public var start: Int
    public var end: Int
    public var timeZone: TimeZone

    /// Nil when either time is empty or not `HH:MM`, or they are equal (no window). An unknown
    /// time zone means UTC.
    public init?(start: String, end: String, timeZone: String) {
        guard let s = Self.minutes(start), let e = Self.minutes(end), s != e else { return nil }
        self.start = s
        self.end = e
        self.timeZone = TimeZone(identifier: timeZone) ?? TimeZone(identifier: "UTC")!
    }

    static func minutes(_ text: String) -> Int? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count == 2, parts[1].count == 2,
              let h = Int(parts[0]), let m = Int(parts[1]), (0...23).contains(h), (0...59).contains(m) else { return nil }
        return h * 60 + m
    }

    /// Whether the screen sleeps at `date`: from `start` (inclusive) to `end` (exclusive),
    /// across midnight when `end` is earlier than `start`.
    public func contains(_ date: Date) -> Bool {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let c = calendar.dateComponents([.hour, .minute], from: date)
        let now = (c.hour ?? 0) * 60 + (c.minute ?? 0)
        return start < end ? (now >= start && now < end) : (now >= start || now < end)
    }
}
