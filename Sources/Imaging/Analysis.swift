import Foundation
import Logging
internal import CVips
internal import CVipsShim

/// A GPS position from EXIF, in degrees (WGS-84 as cameras write it): south and west are
/// negative. `altitude` is metres above sea level (negative below), nil when absent.
public struct GeoLocation: Sendable, Equatable {
    public var latitude: Double
    public var longitude: Double
    public var altitude: Double?

    public init(latitude: Double, longitude: Double, altitude: Double? = nil) {
        self.latitude = latitude
        self.longitude = longitude
        self.altitude = altitude
    }
}

/// One dominant colour of an image (8-bit sRGB) and the fraction of pixels it stands for.
public struct RGBColor: Sendable, Equatable, Hashable {
    public var red: UInt8
    public var green: UInt8
    public var blue: UInt8
    /// The fraction of the image's pixels nearest to this colour, 0...1.
    public var share: Double

    public init(red: UInt8, green: UInt8, blue: UInt8, share: Double) {
        self.red = red
        self.green = green
        self.blue = blue
        self.share = share
    }

    /// `#rrggbb`, lower case.
    public var hex: String {
        func byte(_ value: UInt8) -> String {
            let digits = Array("0123456789abcdef")
            return String([digits[Int(value >> 4)], digits[Int(value & 0xF)]])
        }
        return "#" + byte(red) + byte(green) + byte(blue)
    }
}

/// What ``Imaging/analyze(_:)`` computes of one photo: header, upright size, EXIF facts
/// and pixel statistics. Fields the image does not carry (or carries as garbage) are nil;
/// they never fail the analysis.
public struct ImageAnalysis: Sendable, Equatable {
    /// Format, size as stored, EXIF orientation, alpha, pages.
    public var header: ImageHeader
    /// The width as displayed, after the EXIF orientation (``ImageHeader/uprightWidth``).
    public var width: Int
    /// The height as displayed, after the EXIF orientation.
    public var height: Int
    /// When the photo was taken: EXIF DateTimeOriginal, else DateTimeDigitized, else IFD0
    /// DateTime (the first that is a valid date), at the UTC offset of its matching
    /// OffsetTime… field (`±HH:MM`). EXIF times carry no zone of their own, so without an
    /// offset the wall-clock time is interpreted as UTC. Whole seconds (SubSec… ignored).
    public var takenAt: Date?
    /// EXIF Make, trimmed; nil when absent or empty.
    public var cameraMake: String?
    /// EXIF Model, trimmed; nil when absent or empty.
    public var cameraModel: String?
    /// EXIF GPS position (degrees/minutes/seconds rationals signed by N/S/E/W); nil when
    /// absent, malformed, out of range, or 0/0 without references.
    public var location: GeoLocation?
    /// Up to 3 distinct colours (RGB distance ≥ 40 apart), most dominant first, from a 64×64
    /// thumbnail of the upright image; shares sum to at most 1. A solid image has one.
    public var dominantColors: [RGBColor]
    /// 64-bit pHash of the upright image (see ``Imaging/analyze(_:)``); compare with
    /// ``Imaging/hammingDistance(_:_:)``.
    public var perceptualHash: UInt64

    public init(header: ImageHeader, width: Int, height: Int, takenAt: Date? = nil,
                cameraMake: String? = nil, cameraModel: String? = nil, location: GeoLocation? = nil,
                dominantColors: [RGBColor] = [], perceptualHash: UInt64 = 0) {
        self.header = header
        self.width = width
        self.height = height
        self.takenAt = takenAt
        self.cameraMake = cameraMake
        self.cameraModel = cameraModel
        self.location = location
        self.dominantColors = dominantColors
        self.perceptualHash = perceptualHash
    }
}

extension Imaging {
    /// The side of the one decode ``analyze(_:)`` makes (shrink-on-load to fit this box).
    static let analysisSide = 256

    /// Analyses a photo with ONE decode: the header (limits applied first, EXIF read from
    /// it without decoding pixels), then a thumbnail fitting 256×256 decoded with
    /// shrink-on-load, turned upright, 8-bit sRGB, alpha on white. From that thumbnail:
    /// * dominant colours from a 64×64 resize (median cut + k-means, see ``ImageAnalysis``);
    /// * the perceptual hash from a 32×32 resize (aspect ignored): Rec. 601 grayscale, 2-D
    ///   DCT, top-left 8×8 coefficients, bit `63 − (8u + v)` set when coefficient (u, v) is
    ///   above the median of the 63 non-DC ones. Re-encoded or resized copies of a photo
    ///   differ by a few bits; different photos by ~32.
    ///
    /// Throws like ``render(_:versions:)``: `tooLarge` (before decoding), `unsupportedFormat`,
    /// `corrupt` (also a truncated image). EXIF problems never throw.
    public func analyze(_ bytes: [UInt8]) async throws -> ImageAnalysis {
        let limits = self.limits
        let logger = self.logger
        return try await run { try Self.withInput(bytes) { try Self.analyzeImage($0, limits: limits, logger: logger) } }
    }

    /// ``analyze(_:)`` of a file's contents (read with a size check).
    public func analyzeFile(_ path: String) async throws -> ImageAnalysis {
        let limits = self.limits
        let logger = self.logger
        return try await run {
            let bytes = try Self.readFile(path, limits: limits)
            return try Self.withInput(bytes) { try Self.analyzeImage($0, limits: limits, logger: logger) }
        }
    }

    /// The number of bits in which two perceptual hashes differ, 0...64.
    public static func hammingDistance(_ a: UInt64, _ b: UInt64) -> Int {
        (a ^ b).nonzeroBitCount
    }

    /// A JPEG of `bytes` (pixels and metadata kept) with the given libvips metadata strings
    /// set first, e.g. `"exif-ifd3-GPSLatitude": "33/1 52/1 0/1"`: libvips writes
    /// `exif-ifdN-…` fields into the saved EXIF (ASCII and rationals as given; libvips 8.14
    /// writes a BYTE field such as GPSAltitudeRef as 0 whatever the string). For tests.
    func withExifStrings(_ bytes: [UInt8], _ fields: [String: String], quality: Int = 90) async throws -> [UInt8] {
        let limits = self.limits
        return try await run {
            try Self.withInput(bytes) { input in
                _ = try Self.readHeader(input, limits: limits)
                let image = try Self.loadWhole(input).apply(.processingFailed, "copying") { fc_copy($0, $1) }
                for (name, value) in fields.sorted(by: { $0.key < $1.key }) {
                    vips_image_set_string(image.pointer, name, value)
                }
                return try Self.encode(image, as: .jpeg(quality: quality, progressive: false), strip: false)
            }
        }
    }

    // MARK: Implementation (pool threads only)

    static func analyzeImage(_ input: UnsafeRawBufferPointer, limits: ImagingLimits, logger: Logger) throws -> ImageAnalysis {
        let start = ContinuousClock.now
        let probed = try readHeader(input, limits: limits, collectingExif: true)
        let header = probed.header
        let side = analysisSide
        let small = try thumbnail(input, width: side, height: side, size: VIPS_SIZE_DOWN,
                                  exportSRGB: probed.needsColourTransform)
            .srgb8().flattenedOnWhite()
            .materialised()  // the one decode; a truncated input fails here
        let colourPixels = try small.resized(width: 64, height: 64).pixelBytes()
        let hashPixels = try small.resized(width: PixelStatistics.hashSide, height: PixelStatistics.hashSide).pixelBytes()
        guard small.bands == 3, colourPixels.count == 64 * 64 * 3,
              hashPixels.count == PixelStatistics.hashSide * PixelStatistics.hashSide * 3 else {
            throw ImagingError(.processingFailed, "the analysis thumbnail has \(small.bands) bands")
        }
        let decoded = ContinuousClock.now
        let exif = probed.exif
        let colours = PixelStatistics.dominantColors(rgb: colourPixels, count: 3)
        let coloured = ContinuousClock.now
        let hash = PixelStatistics.perceptualHash(rgb32: hashPixels)
        logger.debug("analysed image", metadata: [
            "imaging.format": "\(header.format.rawValue)",
            "imaging.source": "\(header.uprightWidth)x\(header.uprightHeight)",
            "imaging.decoded": "\(small.width)x\(small.height)",
            "imaging.decode_ms": "\((decoded - start).milliseconds)",
            "imaging.colours_ms": "\((coloured - decoded).milliseconds)",
            "imaging.hash_ms": "\((ContinuousClock.now - coloured).milliseconds)",
            "imaging.thread": "\(Thread.current.name ?? "?")",
        ])
        return ImageAnalysis(
            header: header, width: header.uprightWidth, height: header.uprightHeight,
            takenAt: Exif.takenAt(exif),
            cameraMake: Exif.text(exif[Exif.make]), cameraModel: Exif.text(exif[Exif.model]),
            location: Exif.location(exif),
            dominantColors: colours, perceptualHash: hash)
    }
}
