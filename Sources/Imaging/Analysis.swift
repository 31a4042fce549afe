import Foundation
internal import CVips
internal import CVipsShim

/// A place on Earth, from EXIF GPS.
public struct GeoLocation: Sendable, Equatable {
    public var latitude: Double
    public var longitude: Double
    /// Metres above sea level (negative below), when the photo records it.
    public var altitude: Double?

    public init(latitude: Double, longitude: Double, altitude: Double? = nil) {
        self.latitude = latitude
        self.longitude = longitude
        self.altitude = altitude
    }
}

/// A colour that covers part of a photo.
public struct RGBColor: Sendable, Equatable, Hashable {
    public var red: UInt8
    public var green: UInt8
    public var blue: UInt8
    /// The fraction of the photo's pixels closest to this colour, 0...1.
    public var share: Double

    public init(red: UInt8, green: UInt8, blue: UInt8, share: Double) {
        self.red = red
        self.green = green
        self.blue = blue
        self.share = share
    }

    /// `#rrggbb`.
    public var hex: String {
        "#" + [red, green, blue].map { String(format: "%02x", $0) }.joined()
    }
}

/// What the storage service records about a photo: its header, EXIF facts, colours and a
/// perceptual hash. Fields a photo does not carry are nil, never guessed.
public struct ImageAnalysis: Sendable, Equatable {
    public var header: ImageHeader
    /// Upright size (after EXIF orientation).
    public var width: Int
    public var height: Int
    /// EXIF DateTimeOriginal (else DateTimeDigitized, else DateTime). With OffsetTimeOriginal
    /// (or OffsetTime) the local time is converted with it; without an offset it is read as UTC.
    public var takenAt: Date?
    public var cameraMake: String?
    public var cameraModel: String?
    public var location: GeoLocation?
    /// Up to 3 distinct colours, most dominant first.
    public var dominantColors: [RGBColor]
    /// DCT perceptual hash of the upright image: similar photos differ in few bits
    /// (see ``Imaging/hammingDistance(_:_:)``).
    public var perceptualHash: UInt64
}

extension Imaging {
    /// Analyses a photo: header and EXIF without decoding pixels, then ONE small
    /// shrink-on-load decode (64×64, upright, sRGB) for the colours and the hash. Throws what
    /// ``probe(_:)`` throws, and `corrupt` for a damaged image.
    public func analyze(_ bytes: [UInt8]) async throws -> ImageAnalysis {
        let limits = self.limits
        return try await run { try Self.withInput(bytes) { try Self.analyzeInput($0, limits: limits) } }
    }

    /// ``analyze(_:)`` of a file's contents.
    public func analyzeFile(_ path: String) async throws -> ImageAnalysis {
        let limits = self.limits
        return try await run {
            let bytes = try Self.readFile(path, limits: limits)
            return try Self.withInput(bytes) { try Self.analyzeInput($0, limits: limits) }
        }
    }

    /// The number of bits in which two perceptual hashes differ (0 = alike, 64 = opposite).
    public static func hammingDistance(_ a: UInt64, _ b: UInt64) -> Int { (a ^ b).nonzeroBitCount }

    static let analysisSide = 64

    static func analyzeInput(_ input: UnsafeRawBufferPointer, limits: ImagingLimits) throws -> ImageAnalysis {
        let probed = try readHeader(input, limits: limits)
        let exif = try readEXIF(input)
        let pixels = try decodePixels(input, probed: probed, width: analysisSide, height: analysisSide)
        let header = probed.header
        return ImageAnalysis(
            header: header, width: header.uprightWidth, height: header.uprightHeight,
            takenAt: EXIF.takenAt(exif), cameraMake: EXIF.text(exif["exif-ifd0-Make"]),
            cameraModel: EXIF.text(exif["exif-ifd0-Model"]), location: EXIF.location(exif),
            dominantColors: ColorAnalysis.dominantColors(pixels), perceptualHash: PerceptualHash.hash(pixels))
    }

    /// The header's `exif-*` string fields (libvips parses the EXIF block at header time).
    static func readEXIF(_ input: UnsafeRawBufferPointer) throws -> [String: String] {
        guard let pointer = fc_header_from_buffer(input.baseAddress, input.count) else {
            throw vipsError(.corrupt, "reading the header")
        }
        let image = VImage(owning: pointer)
        guard let names = vips_image_get_fields(image.pointer) else { return [:] }
        defer { g_strfreev(names) }
        var fields: [String: String] = [:]
        var index = 0
        while let name = names[index] {
            index += 1
            let key = String(cString: name)
            guard key.hasPrefix("exif-ifd") else { continue }
            var value: UnsafePointer<CChar>?
            if vips_image_get_string(image.pointer, name, &value) == 0, let value {
                fields[key] = String(cString: value)
            } else {
                _ = takeVipsErrorMessage()
            }
        }
        return fields
    }
}

/// Parsing of libvips' EXIF strings, which look like
/// `RAW (HUMAN, Type, N components, M bytes)`, e.g. `Canon (Canon, ASCII, 6 components, 6 bytes)`
/// or `56/1 9359705/1000000 0/1 (56, 9.359705,  0, Rational, 3 components, 24 bytes)`.
/// Anything unexpected yields nil: bad EXIF never fails an analysis.
enum EXIF {
    /// The raw part of a field (before the human-readable parenthesis).
    static func raw(_ field: String?) -> String? {
        guard let field else { return nil }
        var body = field
        // Drop the trailing "(…, Type, N components, M bytes)" description when present.
        if body.hasSuffix(" bytes)"), let open = body.range(of: " (", options: .backwards) {
            // The description may itself contain " (" (e.g. "Lightroom (Windows)"): for ASCII
            // fields the raw text equals the human text, so split where both halves agree.
            let parts = body.components(separatedBy: " (")
            for split in 1..<parts.count {
                let left = parts[..<split].joined(separator: " (")
                let right = parts[split...].joined(separator: " (")
                if right.hasPrefix(left + ",") { return left }
            }
            body = String(body[..<open.lowerBound])
            if let first = body.range(of: " (") { body = String(body[..<first.lowerBound]) }
        }
        return body
    }

    static func text(_ field: String?) -> String? {
        guard let value = raw(field)?.trimmingCharacters(in: .whitespacesAndNewlines.union(.controlCharacters)),
              !value.isEmpty, value.count <= 256 else { return nil }
        return value
    }

    static func rationals(_ field: String?) -> [Double]? {
        guard let raw = raw(field) else { return nil }
        let values = raw.split(separator: " ").map { part -> Double? in
            let pieces = part.split(separator: "/")
            guard pieces.count == 2, let n = Double(pieces[0]), let d = Double(pieces[1]), d != 0 else { return nil }
            return n / d
        }
        guard !values.isEmpty, values.allSatisfy({ $0 != nil && $0!.isFinite }) else { return nil }
        return values.map { $0! }
    }

    static func takenAt(_ exif: [String: String]) -> Date? {
        let candidates = [("exif-ifd2-DateTimeOriginal", "exif-ifd2-OffsetTimeOriginal"),
                          ("exif-ifd2-DateTimeDigitized", "exif-ifd2-OffsetTimeDigitized"),
                          ("exif-ifd0-DateTime", "exif-ifd2-OffsetTime")]
        for (dateKey, offsetKey) in candidates {
            if let date = date(text(exif[dateKey]), offset: text(exif[offsetKey])) { return date }
        }
        return nil
    }

    /// "YYYY:MM:DD HH:MM:SS" with an optional "+HH:MM" offset.
    static func date(_ text: String?, offset: String?) -> Date? {
        guard let text else { return nil }
        let digits = text.split(whereSeparator: { $0 == ":" || $0 == " " }).compactMap { Int($0) }
        guard digits.count >= 6, (1826...2200).contains(digits[0]), (1...12).contains(digits[1]),
              (1...31).contains(digits[2]), (0...23).contains(digits[3]), (0...59).contains(digits[4]),
              (0...60).contains(digits[5]) else { return nil }
        var seconds = 0
        if let offset, offset.count == 6, let sign = offset.first, sign == "+" || sign == "-" {
            let parts = offset.dropFirst().split(separator: ":").compactMap { Int($0) }
            if parts.count == 2, (0...14).contains(parts[0]), (0...59).contains(parts[1]) {
                seconds = (parts[0] * 3600 + parts[1] * 60) * (sign == "-" ? -1 : 1)
            }
        }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(secondsFromGMT: seconds) ?? TimeZone(identifier: "UTC")!
        let components = DateComponents(year: digits[0], month: digits[1], day: digits[2],
                                        hour: digits[3], minute: digits[4], second: digits[5])
        guard let date = calendar.date(from: components), calendar.component(.day, from: date) == digits[2] else { return nil }
        return date
    }

    static func location(_ exif: [String: String]) -> GeoLocation? {
        guard let lat = degrees(exif["exif-ifd3-GPSLatitude"]), let lon = degrees(exif["exif-ifd3-GPSLongitude"]),
              let latRef = text(exif["exif-ifd3-GPSLatitudeRef"])?.uppercased(),
              let lonRef = text(exif["exif-ifd3-GPSLongitudeRef"])?.uppercased(),
              latRef == "N" || latRef == "S", lonRef == "E" || lonRef == "W" else { return nil }
        let latitude = latRef == "S" ? -lat : lat
        let longitude = lonRef == "W" ? -lon : lon
        guard (-90...90).contains(latitude), (-180...180).contains(longitude) else { return nil }
        var altitude: Double?
        if let value = rationals(exif["exif-ifd3-GPSAltitude"])?.first {
            let below = raw(exif["exif-ifd3-GPSAltitudeRef"]).map { $0.hasPrefix("1") || $0.lowercased().contains("below") } ?? false
            altitude = below ? -value : value
        }
        return GeoLocation(latitude: latitude, longitude: longitude, altitude: altitude)
    }

    static func degrees(_ field: String?) -> Double? {
        guard let parts = rationals(field), parts.count == 3 else { return nil }
        guard parts[1] >= 0, parts[1] < 60, parts[2] >= 0, parts[2] < 60 else { return nil }
        return parts[0] + parts[1] / 60 + parts[2] / 3600
    }
}

/// Dominant colours by k-means on a small thumbnail, deterministic.
enum ColorAnalysis {
    static func dominantColors(_ pixels: Pixels, maximum: Int = 3) -> [RGBColor] {
        let count = pixels.width * pixels.height
        guard count > 0 else { return [] }
        var points = [SIMD3<Double>](repeating: .zero, count: count)
        for i in 0..<count {
            points[i] = SIMD3(Double(pixels.rgb[3 * i]), Double(pixels.rgb[3 * i + 1]), Double(pixels.rgb[3 * i + 2]))
        }
        // Seeds spread over the luminance order: deterministic and covers dark to light.
        let k = 6
        let byLuma = points.indices.sorted { luma(points[$0]) < luma(points[$1]) }
        var centres = (0..<k).map { points[byLuma[min(count - 1, ($0 * 2 + 1) * count / (2 * k))]] }
        var assignment = [Int](repeating: 0, count: count)
        for _ in 0..<12 {
            var sums = [SIMD3<Double>](repeating: .zero, count: k)
            var sizes = [Int](repeating: 0, count: k)
            for (i, point) in points.enumerated() {
                var best = 0, bestDistance = Double.infinity
                for (c, centre) in centres.enumerated() {
                    let d = distanceSquared(point, centre)
                    if d < bestDistance { bestDistance = d; best = c }
                }
                assignment[i] = best
                sums[best] += point
                sizes[best] += 1
            }
            for c in 0..<k where sizes[c] > 0 { centres[c] = sums[c] / Double(sizes[c]) }
        }
        var sizes = [Int](repeating: 0, count: k)
        for a in assignment { sizes[a] += 1 }
        // Merge clusters that ended up alike, biggest first.
        var merged: [(centre: SIMD3<Double>, size: Int)] = []
        for c in (0..<k).sorted(by: { sizes[$0] > sizes[$1] }) where sizes[c] > 0 {
            if let j = merged.firstIndex(where: { distanceSquared($0.centre, centres[c]) < 28 * 28 }) {
                let total = merged[j].size + sizes[c]
                merged[j].centre = (merged[j].centre * Double(merged[j].size) + centres[c] * Double(sizes[c])) / Double(total)
                merged[j].size = total
            } else {
                merged.append((centres[c], sizes[c]))
            }
        }
        return merged.sorted { $0.size > $1.size }.prefix(maximum).map { cluster in
            let c = cluster.centre.rounded(.toNearestOrEven)
            return RGBColor(red: UInt8(clamping: Int(c.x)), green: UInt8(clamping: Int(c.y)), blue: UInt8(clamping: Int(c.z)),
                            share: Double(cluster.size) / Double(count))
        }
    }

    static func luma(_ p: SIMD3<Double>) -> Double { 0.299 * p.x + 0.587 * p.y + 0.114 * p.z }

    static func distanceSquared(_ a: SIMD3<Double>, _ b: SIMD3<Double>) -> Double {
        let d = a - b
        return (d * d).sum()
    }
}

/// pHash: 32×32 grey of the upright image → 2-D DCT → the 8×8 lowest frequencies → one bit
/// per coefficient above their median (the DC term is left out of the median).
enum PerceptualHash {
    static func hash(_ pixels: Pixels) -> UInt64 {
        let n = 32
        // 64×64 → 32×32 grey by 2×2 averaging (any source size is sampled to 32×32).
        var grey = [Double](repeating: 0, count: n * n)
        for y in 0..<n {
            for x in 0..<n {
                var sum = 0.0, samples = 0.0
                let x0 = x * pixels.width / n, x1 = max(x0 + 1, (x + 1) * pixels.width / n)
                let y0 = y * pixels.height / n, y1 = max(y0 + 1, (y + 1) * pixels.height / n)
                for sy in y0..<y1 {
                    for sx in x0..<x1 {
                        let i = 3 * (sy * pixels.width + sx)
                        sum += 0.299 * Double(pixels.rgb[i]) + 0.587 * Double(pixels.rgb[i + 1]) + 0.114 * Double(pixels.rgb[i + 2])
                        samples += 1
                    }
                }
                grey[y * n + x] = sum / samples
            }
        }
        var cosines = [Double](repeating: 0, count: 8 * n)
        for u in 0..<8 {
            for x in 0..<n { cosines[u * n + x] = cos(Double((2 * x + 1) * u) * .pi / Double(2 * n)) }
        }
        var coefficients = [Double](repeating: 0, count: 64)
        for u in 0..<8 {
            for v in 0..<8 {
                var sum = 0.0
                for y in 0..<n {
                    let cy = cosines[u * n + y]
                    for x in 0..<n { sum += grey[y * n + x] * cy * cosines[v * n + x] }
                }
                coefficients[u * 8 + v] = sum
            }
        }
        let median = coefficients.dropFirst().sorted()[31]
        var hash: UInt64 = 0
        for (i, c) in coefficients.enumerated() where c > median {
            hash |= 1 << UInt64(63 - i)
        }
        return hash
    }
}
