import Foundation

/// Pure parsing of the EXIF fields libvips exposes after loading a header (no libvips here,
/// so every rule is tested on its own). Every function returns nil for absent, empty or
/// malformed input: garbage EXIF never fails an analysis.
///
/// libvips (8.14, `vips_exif_to_s`) writes each field as `VALUE (DESCRIPTION, FORMAT,
/// N components, M bytes)`: VALUE is the raw ASCII text (at most 254 bytes, up to its first
/// NUL) or, for up to 9 numeric components, `n/d n/d …`; DESCRIPTION is libexif's
/// human-readable form, which may itself contain " (".
enum Exif {
    /// The fields ``ImageAnalysis`` reads, by their libvips metadata names.
    static let fieldNames = [
        make, model, dateTimeOriginal, offsetTimeOriginal, dateTimeDigitized, offsetTimeDigitized,
        dateTime, offsetTime, gpsLatitude, gpsLatitudeRef, gpsLongitude, gpsLongitudeRef,
        gpsAltitude, gpsAltitudeRef,
    ]
    static let make = "exif-ifd0-Make"
    static let model = "exif-ifd0-Model"
    static let dateTime = "exif-ifd0-DateTime"
    static let offsetTime = "exif-ifd2-OffsetTime"
    static let dateTimeOriginal = "exif-ifd2-DateTimeOriginal"
    static let offsetTimeOriginal = "exif-ifd2-OffsetTimeOriginal"
    static let dateTimeDigitized = "exif-ifd2-DateTimeDigitized"
    static let offsetTimeDigitized = "exif-ifd2-OffsetTimeDigitized"
    static let gpsLatitudeRef = "exif-ifd3-GPSLatitudeRef"
    static let gpsLatitude = "exif-ifd3-GPSLatitude"
    static let gpsLongitudeRef = "exif-ifd3-GPSLongitudeRef"
    static let gpsLongitude = "exif-ifd3-GPSLongitude"
    static let gpsAltitudeRef = "exif-ifd3-GPSAltitudeRef"
    static let gpsAltitude = "exif-ifd3-GPSAltitude"

    /// The raw VALUE of a libvips EXIF string. For text fields the description repeats the
    /// value (`X (X, ASCII, …)`), which finds the right " (" even when X contains one;
    /// otherwise the text before the first " (" (or the whole string).
    static func value(_ raw: String) -> String {
        var search = raw.startIndex
        while let open = raw.range(of: " (", range: search..<raw.endIndex) {
            let prefix = raw[raw.startIndex..<open.lowerBound]
            if raw[open.upperBound...].hasPrefix(prefix + ", ") { return String(prefix) }
            search = open.upperBound
        }
        if let open = raw.range(of: " (") { return String(raw[..<open.lowerBound]) }
        return raw
    }

    /// A text field: trimmed of spaces and NULs, nil when absent or empty.
    static func text(_ raw: String?) -> String? {
        guard let raw else { return nil }
        let trimmed = value(raw).trimmingCharacters(in: .whitespacesAndNewlines.union(CharacterSet(charactersIn: "\0")))
        return trimmed.isEmpty ? nil : trimmed
    }

    /// `YYYY:MM:DD HH:MM:SS` (dashes also accepted in the date) at the UTC offset
    /// `±HH:MM` of `offset`, or UTC when the offset is absent or malformed. nil for an
    /// impossible date (month 13, Feb 30, the "0000:00:00 00:00:00" placeholder…).
    static func date(_ raw: String?, offset: String?) -> Date? {
        guard let text = text(raw) else { return nil }
        let chars = Array(text.utf8)
        guard chars.count >= 19 else { return nil }
        func number(_ range: Range<Int>) -> Int? {
            var result = 0
            for i in range {
                let c = chars[i]
                guard c >= 0x30 && c <= 0x39 else { return nil }
                result = result * 10 + Int(c - 0x30)
            }
            return result
        }
        let dateSeparators: Set<UInt8> = [0x3A, 0x2D]  // ':' '-'
        guard dateSeparators.contains(chars[4]), dateSeparators.contains(chars[7]),
              chars[10] == 0x20 || chars[10] == 0x54,  // ' ' or 'T'
              chars[13] == 0x3A, chars[16] == 0x3A,
              let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
              let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19),
              (1800...9999).contains(year), (1...12).contains(month), (1...31).contains(day),
              (0...23).contains(hour), (0...59).contains(minute), (0...60).contains(second)
        else { return nil }
        let zone = offset.flatMap(utcOffset).flatMap { TimeZone(secondsFromGMT: $0) } ?? TimeZone(secondsFromGMT: 0)!
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        let components = DateComponents(year: year, month: month, day: day, hour: hour, minute: minute,
                                        second: min(second, 59))
        guard let date = calendar.date(from: components) else { return nil }
        // Calendar rolls Feb 30 over to March 2: refuse dates that do not round-trip.
        let back = calendar.dateComponents([.year, .month, .day], from: date)
        guard back.year == year, back.month == month, back.day == day else { return nil }
        return date
    }

    /// `±HH:MM` → seconds east of UTC; nil when malformed or beyond ±14 h.
    static func utcOffset(_ raw: String) -> Int? {
        guard let text = text(raw) else { return nil }
        let chars = Array(text.utf8)
        guard chars.count == 6, chars[0] == 0x2B || chars[0] == 0x2D, chars[3] == 0x3A,
              let hours = Int(String(decoding: chars[1..<3], as: UTF8.self)),
              let minutes = Int(String(decoding: chars[4..<6], as: UTF8.self)),
              chars[1...2].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              chars[4...5].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              hours <= 14, minutes < 60
        else { return nil }
        let seconds = hours * 3600 + minutes * 60
        return chars[0] == 0x2D ? -seconds : seconds
    }

    /// `n/d n/d …` (or plain numbers) → values; nil if any is malformed, has a zero
    /// denominator or is not finite.
    static func rationals(_ raw: String?) -> [Double]? {
        guard let raw else { return nil }
        let parts = value(raw).split(whereSeparator: { $0 == " " || $0 == "," })
        guard !parts.isEmpty, parts.count <= 16 else { return nil }
        var values: [Double] = []
        for part in parts {
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
            let result: Double
            switch pieces.count {
            case 1:
                guard let v = Double(pieces[0]) else { return nil }
                result = v
            case 2:
                guard let n = Int64(pieces[0]), let d = Int64(pieces[1]), d != 0 else { return nil }
                result = Double(n) / Double(d)
            default:
                return nil
            }
            guard result.isFinite else { return nil }
            values.append(result)
        }
        return values
    }

    /// Degrees from EXIF degrees/minutes/seconds (1 to 3 non-negative rationals, minutes and
    /// seconds below 60) signed by the reference (`positive`, `negative`, or absent =
    /// positive). nil when malformed, the reference is anything else, or beyond `limit`.
    static func coordinate(_ raw: String?, ref: String?, positive: Character, negative: Character,
                           limit: Double) -> Double? {
        guard let parts = rationals(raw), (1...3).contains(parts.count),
              parts.allSatisfy({ $0 >= 0 }) else { return nil }
        if parts.count > 1 && parts[1] >= 60 { return nil }
        if parts.count > 2 && parts[2] >= 60 { return nil }
        var degrees = parts[0]
        if parts.count > 1 { degrees += parts[1] / 60 }
        if parts.count > 2 { degrees += parts[2] / 3600 }
        guard degrees <= limit else { return nil }
        guard let ref = text(ref) else { return degrees }
        switch ref.uppercased().first {
        case positive: return degrees
        case negative: return -degrees
        default: return nil
        }
    }

    /// The GPS position, or nil when latitude or longitude is absent or invalid, or when it
    /// is 0/0 without references (a placeholder some cameras write without a fix).
    static func location(_ fields: [String: String]) -> GeoLocation? {
        guard let latitude = coordinate(fields[gpsLatitude], ref: fields[gpsLatitudeRef],
                                        positive: "N", negative: "S", limit: 90),
              let longitude = coordinate(fields[gpsLongitude], ref: fields[gpsLongitudeRef],
                                         positive: "E", negative: "W", limit: 180)
        else { return nil }
        if latitude == 0 && longitude == 0 && text(fields[gpsLatitudeRef]) == nil
            && text(fields[gpsLongitudeRef]) == nil {
            return nil
        }
        return GeoLocation(latitude: latitude, longitude: longitude, altitude: altitude(fields))
    }

    /// Metres above sea level; negative when GPSAltitudeRef is 1 (libexif describes it as
    /// "Sea level reference"); nil when absent or malformed.
    static func altitude(_ fields: [String: String]) -> Double? {
        guard let values = rationals(fields[gpsAltitude]), values.count == 1, values[0] >= 0,
              values[0] < 100_000 else { return nil }
        guard let ref = text(fields[gpsAltitudeRef]) else { return values[0] }
        switch ref.lowercased() {
        case "0", "sea level": return values[0]
        case "1", "sea level reference": return -values[0]
        default: return nil
        }
    }

    /// EXIF DateTimeOriginal, else DateTimeDigitized, else (IFD0) DateTime — the first that
    /// parses — each with its own OffsetTime… field, else UTC.
    static func takenAt(_ fields: [String: String]) -> Date? {
        date(fields[dateTimeOriginal], offset: fields[offsetTimeOriginal])
            ?? date(fields[dateTimeDigitized], offset: fields[offsetTimeDigitized])
            ?? date(fields[dateTime], offset: fields[offsetTime])
    }
}
