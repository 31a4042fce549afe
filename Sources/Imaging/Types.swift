/// An image format, detected from the bytes (the libvips loader that accepts them),
/// never from a file name or a declared content type.
public enum ImageFormat: String, Sendable, Hashable, CaseIterable {
    case jpeg, png, webp, heif, avif, gif, tiff

    /// The MIME type of the format.
    public var contentType: String {
        switch self {
        case .jpeg: "image/jpeg"
        case .png: "image/png"
        case .webp: "image/webp"
        case .heif: "image/heic"
        case .avif: "image/avif"
        case .gif: "image/gif"
        case .tiff: "image/tiff"
        }
    }
}

/// What the header of an image says, read without decoding its pixels.
public struct ImageHeader: Sendable, Hashable {
    public var format: ImageFormat
    /// Pixel columns as stored (before EXIF orientation is applied).
    public var width: Int
    /// Pixel rows as stored (of the first page for multi-page images).
    public var height: Int
    /// EXIF orientation 1...8 (1 when absent or invalid).
    public var orientation: Int
    public var hasAlpha: Bool
    /// Pages or frames (1 for a still image); only the first is rendered.
    public var pages: Int

    public init(format: ImageFormat, width: Int, height: Int, orientation: Int = 1,
                hasAlpha: Bool = false, pages: Int = 1) {
        self.format = format
        self.width = width
        self.height = height
        self.orientation = orientation
        self.hasAlpha = hasAlpha
        self.pages = pages
    }

    /// True when the orientation turns the image by a quarter (5...8): width and height swap.
    public var orientationSwapsAxes: Bool { (5...8).contains(orientation) }
    /// The width of the image as displayed (after the EXIF orientation).
    public var uprightWidth: Int { orientationSwapsAxes ? height : width }
    /// The height of the image as displayed (after the EXIF orientation).
    public var uprightHeight: Int { orientationSwapsAxes ? width : height }
}

/// Inputs refused before any pixel is decoded (``ImagingError/Code-swift.struct/tooLarge``).
public struct ImagingLimits: Sendable, Hashable {
    /// The largest encoded input accepted, in bytes. Default 50 MiB.
    public var maxBytes: Int
    /// The largest declared width × height accepted (of the first page). Default 100 MP:
    /// a decoded 100 MP RGBA image is 400 MB, so keep it well below memory / pool threads.
    public var maxPixels: Int

    public init(maxBytes: Int = 50 << 20, maxPixels: Int = 100_000_000) {
        self.maxBytes = maxBytes
        self.maxPixels = maxPixels
    }
}

/// One version to render from an original.
///
/// Sizes are exact and documented:
/// * `.fit`: the largest size inside the box with the aspect ratio kept, never upscaled
///   (a source smaller than the box keeps its size). The constrained side equals the box;
///   the other is `round(side × scale)` with halves rounded up, at least 1.
///   2560×1600 in 300×300 gives 300×188; in 1920×1080 gives 1728×1080.
/// * `.cover`: exactly `width`×`height`. The largest region of the box's aspect ratio is
///   chosen by attention (libvips `smartcrop`, `VIPS_INTERESTING_ATTENTION`) and scaled to
///   the box, up if the source is smaller.
public struct VersionSpec: Sendable, Hashable {
    public enum Mode: String, Sendable, Hashable {
        case fit, cover
    }

    public enum Encoding: Sendable, Hashable {
        /// Baseline JPEG, metadata stripped, optimised Huffman tables. Quality 1...100.
        case jpeg(quality: Int = 82)
        /// Lossy WebP, metadata stripped; quality 1...100, effort 0...6 (≤ 2 is cheap).
        case webp(quality: Int = 80, effort: Int = 2)

        public var format: ImageFormat {
            switch self {
            case .jpeg: .jpeg
            case .webp: .webp
            }
        }
    }

    /// The largest box side accepted.
    public static let maxSide = 16_384

    public var width: Int
    public var height: Int
    public var mode: Mode
    public var encoding: Encoding

    public init(width: Int, height: Int, mode: Mode, encoding: Encoding = .jpeg()) {
        self.width = width
        self.height = height
        self.mode = mode
        self.encoding = encoding
    }

    public static func fit(_ width: Int, _ height: Int, _ encoding: Encoding = .jpeg()) -> VersionSpec {
        VersionSpec(width: width, height: height, mode: .fit, encoding: encoding)
    }

    public static func cover(_ width: Int, _ height: Int, _ encoding: Encoding = .jpeg()) -> VersionSpec {
        VersionSpec(width: width, height: height, mode: .cover, encoding: encoding)
    }
}

/// How an ``Imaging`` encodes the JPEG versions it renders (one setting for all of an
/// instance's renders; a WebP version's cost is the `effort` in its ``VersionSpec``).
/// The defaults are the settings versions were always made with; the resize benchmark's
/// "Encode settings" table measures the alternatives (bytes, time and PSNR on the same hd),
/// and a default changes only when a cheaper setting keeps the bytes and the picture.
public struct EncoderSettings: Sendable, Hashable {
    /// JPEG chroma subsampling.
    public enum ChromaSubsampling: String, Sendable, Hashable, CaseIterable {
        /// 4:2:0 below quality 90, 4:4:4 from 90 (libvips' rule).
        case auto
        /// Always 4:2:0: colour at half resolution each way.
        case always
        /// Never: 4:4:4, colour at full resolution (larger files, slower).
        case never
    }

    /// JPEG: Huffman tables optimised for each image (one more pass over the coefficients;
    /// smaller files, the same pixels). Default true.
    public var jpegOptimizeCoding: Bool
    /// JPEG chroma subsampling. Default `.auto` (4:2:0 at the versions' quality 82).
    public var jpegSubsampling: ChromaSubsampling

    public init(jpegOptimizeCoding: Bool = true, jpegSubsampling: ChromaSubsampling = .auto) {
        self.jpegOptimizeCoding = jpegOptimizeCoding
        self.jpegSubsampling = jpegSubsampling
    }
}

/// One rendered version: encoded bytes and their size.
public struct RenderedImage: Sendable, Hashable {
    public var spec: VersionSpec
    public var width: Int
    public var height: Int
    public var format: ImageFormat
    public var bytes: [UInt8]

    public init(spec: VersionSpec, width: Int, height: Int, format: ImageFormat, bytes: [UInt8]) {
        self.spec = spec
        self.width = width
        self.height = height
        self.format = format
        self.bytes = bytes
    }
}

/// What ``Imaging/convert(_:to:)`` writes: a whole image re-encoded, pixels and metadata
/// (EXIF orientation included) kept. For tests, tools and benchmarks.
public enum ConvertTarget: Sendable, Hashable {
    case jpeg(quality: Int = 90, progressive: Bool = false)
    case png
    case webp(quality: Int = 80)
    case heif(quality: Int = 60)
    case avif(quality: Int = 60)
    case tiff
    case gif

    public var format: ImageFormat {
        switch self {
        case .jpeg: .jpeg
        case .png: .png
        case .webp: .webp
        case .heif: .heif
        case .avif: .avif
        case .tiff: .tiff
        case .gif: .gif
        }
    }
}

/// Decoded 8-bit sRGB pixels (3 bands, alpha flattened on white, upright), for comparing
/// images in tests and tools.
public struct Pixels: Sendable, Hashable {
    public var width: Int
    public var height: Int
    /// Row-major R, G, B bytes: `width × height × 3`.
    public var rgb: [UInt8]

    public init(width: Int, height: Int, rgb: [UInt8]) {
        precondition(rgb.count == width * height * 3, "rgb must hold width × height × 3 bytes")
        self.width = width
        self.height = height
        self.rgb = rgb
    }

    /// The mean of each channel, 0...255.
    public var averageColor: (red: Double, green: Double, blue: Double) {
        var sums = (0, 0, 0)
        var i = 0
        while i < rgb.count {
            sums.0 += Int(rgb[i]); sums.1 += Int(rgb[i + 1]); sums.2 += Int(rgb[i + 2])
            i += 3
        }
        let n = Double(max(1, width * height))
        return (Double(sums.0) / n, Double(sums.1) / n, Double(sums.2) / n)
    }

    /// The mean absolute difference per channel sample, 0 (same) ... 255; the images must
    /// have the same size.
    public func meanAbsoluteDifference(to other: Pixels) -> Double {
        precondition(width == other.width && height == other.height, "compare images of one size")
        var total = 0
        for i in rgb.indices { total += abs(Int(rgb[i]) - Int(other.rgb[i])) }
        return Double(total) / Double(max(1, rgb.count))
    }
}
