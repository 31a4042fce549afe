import Foundation
import Logging
import Threads
internal import CVips
internal import CVipsShim

/// Decodes, resizes and encodes photos with libvips: the safe face of `CVips`.
///
/// ## Threading rules
/// * libvips calls block (a 2560×1600 decode alone takes tens of milliseconds), so every one
///   runs on this instance's own ``Threads/BlockingPool`` (threads named `imaging-N`), never
///   on Swift's cooperative pool. Calls are `async`; at most `threads` images are processed
///   at once and the rest wait in the pool's queue, which bounds memory too.
/// * libvips starts once per process (`VIPS_INIT` through CVipsShim, operation cache off);
///   any number of `Imaging` instances share it. It is never shut down (`vips_shutdown`
///   cannot be undone and other instances may still use it).
/// * Each job ends with `vips_thread_shutdown()`, which frees the calling thread's libvips
///   buffers, so an idle pool thread holds no image memory. libvips' own worker threads
///   (`vips_concurrency`, default = cores) do the pixel work of each pipeline.
/// * A `VipsImage` never leaves the job that made it; its owner (`VImage`) unrefs it.
///   Input bytes are not copied by libvips: each job holds them until its outputs are encoded.
/// * libvips' error buffer is global; a message may mention another thread's failure, but the
///   error ``ImagingError/Code-swift.struct`` always comes from the step that failed here.
/// * Memory: a running render holds its input bytes, one decoded intermediate (8-bit sRGB,
///   3–4 bytes a pixel, at most the declared size; twice that for a moment while an EXIF
///   rotation is applied) and one version at a time; at most `threads` renders run at once.
///   An analysis holds its input bytes and one thumbnail of at most 256×256.
/// * libvips prints its warnings (e.g. "error in tile" before a truncation error) through
///   GLib to stderr; errors reach the caller as ``ImagingError``.
/// * Inputs over ``ImagingLimits`` (bytes, or the header's width × height) are refused with
///   `tooLarge` before any pixel is decoded; a truncated input is `corrupt`
///   (`fail_on=truncated`), not a gray image; only JPEG, PNG, WebP, HEIF/AVIF, GIF and TIFF
///   loaders are accepted (never SVG, PDF, ImageMagick…).
public final class Imaging: Sendable {
    public let limits: ImagingLimits
    private let pool: BlockingPool
    let logger: Logger
    /// Numbers for pool threads that lost their name (see `nameThisThread`).

    /// Starts a pool of `threads` threads for libvips work (default: one per core).
    public init(threads: Int = ProcessInfo.processInfo.activeProcessorCount,
                limits: ImagingLimits = .init(), logger: Logger) {
        precondition(threads > 0, "Imaging needs at least one thread")
        self.limits = limits
        self.logger = logger
        self.pool = BlockingPool(name: "imaging", threadCount: threads)
    }

    /// Lets queued jobs finish, then stops the threads; later calls throw `unavailable`.
    public func shutdown() {
        pool.shutdown()
    }

    deinit { pool.shutdown() }

    // MARK: Header

    /// Reads the header only (format, size, orientation): no pixel is decoded. Throws
    /// `unsupportedFormat`, `tooLarge` (over ``limits``) or `corrupt`.
    public func probe(_ bytes: [UInt8]) async throws -> ImageHeader {
        let limits = self.limits
        return try await run { try Self.withInput(bytes) { try Self.readHeader($0, limits: limits).header } }
    }

    /// ``probe(_:)`` of a file's contents (read with a size check; never parsed from its name).
    public func probeFile(_ path: String) async throws -> ImageHeader {
        let limits = self.limits
        return try await run {
            let bytes = try Self.readFile(path, limits: limits)
            return try Self.withInput(bytes) { try Self.readHeader($0, limits: limits).header }
        }
    }

    // MARK: Render (the hot path)

    /// Renders every version from ONE decode: the input is decoded once with shrink-on-load
    /// to the largest size any version needs, turned upright by its EXIF orientation (the
    /// tag is removed), converted to 8-bit sRGB (embedded ICC profile or CMYK applied),
    /// held in memory once, and each version is cropped/resized from that and encoded
    /// (metadata stripped; alpha flattened on white for JPEG). Results are in `versions`'
    /// order. See ``VersionSpec`` for the exact output sizes.
    public func render(_ bytes: [UInt8], versions: [VersionSpec]) async throws -> [RenderedImage] {
        try Self.validate(versions)
        let limits = self.limits
        let logger = self.logger
        return try await run {
            try Self.withInput(bytes) { try Self.renderVersions($0, versions: versions, limits: limits, logger: logger) }
        }
    }

    /// ``render(_:versions:)`` of a file's contents.
    public func renderFile(_ path: String, versions: [VersionSpec]) async throws -> [RenderedImage] {
        try Self.validate(versions)
        let limits = self.limits
        let logger = self.logger
        return try await run {
            let bytes = try Self.readFile(path, limits: limits)
            return try Self.withInput(bytes) {
                try Self.renderVersions($0, versions: versions, limits: limits, logger: logger)
            }
        }
    }

    // MARK: Tools for tests and benchmarks

    /// The benchmark peer of ``render(_:versions:)``: each version through its own
    /// `vips_thumbnail_buffer` (decode with shrink-on-load, auto-rotate, to sRGB when the input
    /// has an ICC profile or is CMYK, like `render`, resize; `.cover`
    /// with `crop=attention`, so it may be smaller than the box when the source is), then the
    /// same encoder settings. So every version decodes the input again. Not used by services.
    public func renderPerVersion(_ bytes: [UInt8], versions: [VersionSpec]) async throws -> [RenderedImage] {
        try Self.validate(versions)
        let limits = self.limits
        return try await run {
            try Self.withInput(bytes) { input in
                let probed = try Self.readHeader(input, limits: limits)
                return try versions.map { spec in
                    var out: VipsImagePointer?
                    let status = fc_thumbnail_buffer_crop(UnsafeMutableRawPointer(mutating: input.baseAddress), input.count, &out,
                                                          Int32(spec.width), Int32(spec.height), spec.mode == .cover ? 1 : 0,
                                                          probed.needsColourTransform ? 1 : 0)
                    guard status == 0, let out else {
                        if let out { g_object_unref(out) }
                        throw vipsError(.corrupt, "decoding the image")
                    }
                    var image = try VImage(owning: out).srgb8()
                    let bytes: [UInt8]
                    switch spec.encoding {
                    case .jpeg(let quality):
                        image = try image.flattenedOnWhite()
                        bytes = try Self.encode(image, as: .jpeg(quality: quality, progressive: false), strip: true)
                    case .webp(let quality, let effort):
                        bytes = try image.save("encoding WebP") { fc_webpsave_buffer($0, $1, $2, Int32(quality), Int32(effort), 1) }
                    }
                    return RenderedImage(spec: spec, width: image.width, height: image.height,
                                         format: spec.encoding.format, bytes: bytes)
                }
            }
        }
    }

    /// Re-encodes a whole image (pixels, orientation and metadata kept), e.g. to make HEIC,
    /// PNG, WebP or progressive-JPEG copies of a photo. Alpha is flattened on white for JPEG.
    public func convert(_ bytes: [UInt8], to target: ConvertTarget) async throws -> [UInt8] {
        let limits = self.limits
        return try await run {
            try Self.withInput(bytes) { input in
                _ = try Self.readHeader(input, limits: limits)
                let image = try Self.loadWhole(input)
                return try Self.encode(image, as: target, strip: false)
            }
        }
    }

    /// A JPEG whose stored pixels are `bytes`' upright image transformed so that a viewer
    /// applying EXIF `orientation` (1...8) shows it upright again, with that tag set: the
    /// expected upright result of a rotated photo is then known.
    public func withOrientation(_ bytes: [UInt8], orientation: Int, quality: Int = 90) async throws -> [UInt8] {
        guard (1...8).contains(orientation) else {
            throw ImagingError(.invalidArgument, "EXIF orientation must be 1...8, not \(orientation)")
        }
        let limits = self.limits
        return try await run {
            try Self.withInput(bytes) { input in
                _ = try Self.readHeader(input, limits: limits)
                let upright = try Self.loadWhole(input)
                    .apply(.processingFailed, "auto-rotating") { fc_autorot($0, $1) }
                // The inverse of what a viewer does for each orientation.
                let stored: VImage
                switch orientation {
                case 2: stored = try upright.apply(.processingFailed, "flipping") { fc_flip($0, $1, VIPS_DIRECTION_HORIZONTAL) }
                case 3: stored = try upright.apply(.processingFailed, "rotating") { fc_rot($0, $1, VIPS_ANGLE_D180) }
                case 4: stored = try upright.apply(.processingFailed, "flipping") { fc_flip($0, $1, VIPS_DIRECTION_VERTICAL) }
                case 5:  // transpose = flip(rot90)
                    stored = try upright.apply(.processingFailed, "rotating") { fc_rot($0, $1, VIPS_ANGLE_D90) }
                        .apply(.processingFailed, "flipping") { fc_flip($0, $1, VIPS_DIRECTION_HORIZONTAL) }
                case 6: stored = try upright.apply(.processingFailed, "rotating") { fc_rot($0, $1, VIPS_ANGLE_D270) }
                case 7:  // transverse = flip(rot270)
                    stored = try upright.apply(.processingFailed, "rotating") { fc_rot($0, $1, VIPS_ANGLE_D270) }
                        .apply(.processingFailed, "flipping") { fc_flip($0, $1, VIPS_DIRECTION_HORIZONTAL) }
                case 8: stored = try upright.apply(.processingFailed, "rotating") { fc_rot($0, $1, VIPS_ANGLE_D90) }
                default: stored = upright
                }
                let tagged = try stored.apply(.processingFailed, "copying") { fc_copy($0, $1) }
                vips_image_set_int(tagged.pointer, "orientation", Int32(orientation))
                return try Self.encode(tagged, as: .jpeg(quality: quality, progressive: false), strip: false)
            }
        }
    }

    /// A CMYK JPEG of `bytes` (through libvips' built-in CMYK profile), for tests of the
    /// CMYK → sRGB path.
    func cmykJPEG(_ bytes: [UInt8], quality: Int = 90) async throws -> [UInt8] {
        let limits = self.limits
        return try await run {
            try Self.withInput(bytes) { input in
                _ = try Self.readHeader(input, limits: limits)
                let cmyk = try Self.loadWhole(input).srgb8()
                    .apply(.processingFailed, "converting to CMYK") { fc_colourspace_cmyk($0, $1) }
                return try cmyk.save("encoding CMYK JPEG") { fc_jpegsave_buffer($0, $1, $2, Int32(quality), 1, 0) }
            }
        }
    }

    /// Decodes an image fully (a truncated one fails), upright, 8-bit sRGB with alpha on
    /// white, scaled to exactly `width`×`height` (aspect ignored): small thumbnails of two
    /// images compare with ``Pixels/meanAbsoluteDifference(to:)``.
    public func pixels(_ bytes: [UInt8], width: Int, height: Int) async throws -> Pixels {
        guard (1...VersionSpec.maxSide).contains(width), (1...VersionSpec.maxSide).contains(height) else {
            throw ImagingError(.invalidArgument, "pixel size must be 1...\(VersionSpec.maxSide)")
        }
        let limits = self.limits
        return try await run {
            try Self.withInput(bytes) { input in
                try Self.decodePixels(input, probed: try Self.readHeader(input, limits: limits), width: width, height: height)
            }
        }
    }

    /// Upright 8-bit sRGB pixels (alpha on white) scaled to exactly `width`×`height`, decoded
    /// with shrink-on-load. Pool threads only.
    static func decodePixels(_ input: UnsafeRawBufferPointer, probed: Probed, width: Int, height: Int) throws -> Pixels {
        let image = try thumbnail(input, width: width, height: height, size: VIPS_SIZE_FORCE,
                                  exportSRGB: probed.needsColourTransform)
            .srgb8().flattenedOnWhite()
        guard image.bands == 3, image.width == width, image.height == height else {
            throw ImagingError(.processingFailed, "decoded \(image.width)x\(image.height)x\(image.bands), wanted \(width)x\(height)x3")
        }
        let rgb = try image.pixelBytes()
        guard rgb.count == width * height * 3 else {
            throw ImagingError(.processingFailed, "decoded \(rgb.count) bytes of pixels, wanted \(width * height * 3)")
        }
        return Pixels(width: width, height: height, rgb: rgb)
    }

    // MARK: Implementation (pool threads only)

    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        if let failure = vipsStartupFailure {
            throw ImagingError(.unavailable, "libvips did not start: \(failure)")
        }
        do {
            return try await pool.run {
                defer { vips_thread_shutdown() }
                return try body()
            }
        } catch is BlockingPool.ShutDown {
            throw ImagingError(.unavailable, "Imaging is shut down")
        }
    }

    /// Gives libvips a pointer to `bytes` that stays valid for the whole of `body` (libvips
    /// reads the input lazily and does not copy it).
    static func withInput<T>(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
        guard !bytes.isEmpty else { throw ImagingError(.unsupportedFormat, "empty input") }
        return try bytes.withUnsafeBytes(body)
    }

    static func readFile(_ path: String, limits: ImagingLimits) throws -> [UInt8] {
        let attributes: [FileAttributeKey: Any]
        do {
            attributes = try FileManager.default.attributesOfItem(atPath: path)
        } catch {
            throw ImagingError(.io, "cannot read the image file", context: ["imaging.path": path])
        }
        if let size = attributes[.size] as? Int, size > limits.maxBytes {
            throw ImagingError(.tooLarge, "the file has \(size) bytes, more than \(limits.maxBytes)",
                               context: ["imaging.path": path])
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ImagingError(.io, "cannot read the image file", context: ["imaging.path": path])
        }
        return [UInt8](data)
    }

    private static let formatByLoader: [String: ImageFormat] = [
        "VipsForeignLoadJpegBuffer": .jpeg,
        "VipsForeignLoadPngBuffer": .png,
        "VipsForeignLoadWebpBuffer": .webp,
        "VipsForeignLoadHeifBuffer": .heif,
        "VipsForeignLoadNsgifBuffer": .gif,
        "VipsForeignLoadGifBuffer": .gif,
        "VipsForeignLoadTiffBuffer": .tiff,
    ]

    struct Probed {
        var header: ImageHeader
        /// An embedded ICC profile or CMYK: transform to sRGB while decoding.
        var needsColourTransform: Bool
        /// The ``Exif/fieldNames`` the header carries (raw libvips strings), when asked for.
        var exif: [String: String] = [:]
    }

    /// Detects the format from the bytes, reads the header (no pixels) and applies the limits.
    static func readHeader(_ input: UnsafeRawBufferPointer, limits: ImagingLimits,
                           collectingExif: Bool = false) throws -> Probed {
        guard input.count <= limits.maxBytes else {
            throw ImagingError(.tooLarge, "the image has \(input.count) bytes, more than \(limits.maxBytes)")
        }
        guard let loaderName = vips_foreign_find_load_buffer(input.baseAddress, input.count) else {
            _ = takeVipsErrorMessage()
            throw ImagingError(.unsupportedFormat, "not an image in a known format")
        }
        let loader = String(cString: loaderName)
        guard var format = formatByLoader[loader] else {
            throw ImagingError(.unsupportedFormat, "this image format is not accepted",
                               context: ["imaging.loader": loader])
        }
        guard let pointer = fc_header_from_buffer(input.baseAddress, input.count) else {
            throw vipsError(.corrupt, "reading the \(format.rawValue) header")
        }
        let image = VImage(owning: pointer)
        if format == .heif, image.heifCompression == "av1" { format = .avif }
        let header = ImageHeader(format: format, width: image.width, height: image.height,
                                 orientation: image.orientation, hasAlpha: image.hasAlpha, pages: image.pages)
        guard header.width > 0, header.height > 0 else {
            throw ImagingError(.corrupt, "the header declares an empty image")
        }
        let (pixels, overflow) = header.width.multipliedReportingOverflow(by: header.height)
        if overflow || pixels > limits.maxPixels {
            throw ImagingError(.tooLarge, "the image declares \(header.width)x\(header.height) pixels, more than \(limits.maxPixels)",
                               context: ["imaging.format": format.rawValue])
        }
        return Probed(header: header, needsColourTransform: image.hasICCProfile || image.isCMYK,
                      exif: collectingExif ? image.strings(Exif.fieldNames) : [:])
    }

    static func thumbnail(_ input: UnsafeRawBufferPointer, width: Int, height: Int, size: VipsSize,
                          exportSRGB: Bool) throws -> VImage {
        var out: VipsImagePointer?
        let status = fc_thumbnail_buffer(UnsafeMutableRawPointer(mutating: input.baseAddress), input.count, &out,
                                         Int32(width), Int32(height), size, exportSRGB ? 1 : 0)
        guard status == 0, let out else {
            if let out { g_object_unref(out) }
            throw vipsError(.corrupt, "decoding the image")
        }
        return VImage(owning: out)
    }

    static func loadWhole(_ input: UnsafeRawBufferPointer) throws -> VImage {
        guard let pointer = fc_image_from_buffer(input.baseAddress, input.count) else {
            throw vipsError(.corrupt, "decoding the image")
        }
        return try VImage(owning: pointer).materialised()
    }

    static func validate(_ versions: [VersionSpec]) throws {
        guard !versions.isEmpty else { throw ImagingError(.invalidArgument, "no version to render") }
        for spec in versions {
            guard (1...VersionSpec.maxSide).contains(spec.width), (1...VersionSpec.maxSide).contains(spec.height) else {
                throw ImagingError(.invalidArgument, "a version box must be 1...\(VersionSpec.maxSide) on each side, not \(spec.width)x\(spec.height)")
            }
            switch spec.encoding {
            case .jpeg(let quality):
                guard (1...100).contains(quality) else { throw ImagingError(.invalidArgument, "JPEG quality must be 1...100") }
            case .webp(let quality, let effort):
                guard (1...100).contains(quality), (0...6).contains(effort) else {
                    throw ImagingError(.invalidArgument, "WebP quality must be 1...100 and effort 0...6")
                }
            }
        }
    }

    static func renderVersions(_ input: UnsafeRawBufferPointer, versions: [VersionSpec],
                               limits: ImagingLimits, logger: Logger) throws -> [RenderedImage] {
        let start = ContinuousClock.now
        let probed = try readHeader(input, limits: limits)
        let header = probed.header
        let width = header.uprightWidth, height = header.uprightHeight
        let target = Geometry.intermediate(for: versions, width: width, height: height)

        let keepsAlpha = versions.contains { if case .webp = $0.encoding { true } else { false } }
        let intermediate = try decodeOnce(input, probed: probed, needed: target, keepAlpha: keepsAlpha)

        let rendered = try versions.map { spec in
            try renderVersion(intermediate, spec: spec, sourceWidth: width, sourceHeight: height)
        }
        logger.debug("rendered versions", metadata: [
            "imaging.format": "\(header.format.rawValue)",
            "imaging.source": "\(width)x\(height)",
            "imaging.decoded": "\(intermediate.width)x\(intermediate.height)",
            "imaging.versions": "\(versions.count)",
            "imaging.duration_ms": "\((ContinuousClock.now - start).milliseconds)",
            "imaging.thread": "\(Thread.current.name ?? "?")",
        ])
        return rendered
    }

    /// The one decode of `render`: shrunk on load to no less than `needed` (JPEG `shrink`
    /// 2/4/8, WebP `scale`; other formats decode at full size), converted to 8-bit sRGB
    /// (embedded ICC profile or CMYK applied), alpha flattened on white unless kept,
    /// materialised in memory once, then turned upright by its EXIF orientation (the tag is
    /// removed). Measured on a 5120×3200 JPEG rendering thumbnail + hd + a 1024×600 cover:
    /// this took 240 ms, `vips_thumbnail_buffer` to the needed size 383 ms (it keeps a
    /// 2× margin before using JPEG shrink, so it decoded at full size), one
    /// `vips_thumbnail_buffer` per version 567 ms.
    static func decodeOnce(_ input: UnsafeRawBufferPointer, probed: Probed,
                           needed: (width: Int, height: Int), keepAlpha: Bool) throws -> VImage {
        let header = probed.header
        var jpegShrink: Int32 = 1
        var webpScale = 0.0
        switch header.format {
        case .jpeg:
            jpegShrink = Int32(Geometry.jpegShrink(width: header.uprightWidth, height: header.uprightHeight, needed: needed))
        case .webp:
            webpScale = Geometry.webpScale(width: header.uprightWidth, height: header.uprightHeight, needed: needed) ?? 0
        default:
            break
        }
        guard let pointer = fc_load_buffer(input.baseAddress, input.count, jpegShrink, webpScale) else {
            throw vipsError(.corrupt, "opening the \(header.format.rawValue) image")
        }
        var image = VImage(owning: pointer)
        if probed.needsColourTransform {
            let cmyk: Int32 = image.isCMYK ? 1 : 0
            image = try image.apply(.processingFailed, "converting the colour profile to sRGB") { fc_icc_to_srgb($0, $1, cmyk) }
        }
        image = try image.srgb8()
        if !keepAlpha { image = try image.flattenedOnWhite() }
        // The decode happens here, once; a truncated input fails here (fail_on=truncated).
        image = try image.materialised()
        if image.orientation != 1 {
            // After materialising: rotating a sequential decode would read it out of order.
            image = try image.apply(.processingFailed, "auto-rotating") { fc_autorot($0, $1) }.materialised()
        }
        return image
    }

    static func renderVersion(_ image: VImage, spec: VersionSpec, sourceWidth: Int, sourceHeight: Int) throws -> RenderedImage {
        var output: VImage
        switch spec.mode {
        case .fit:
            // The output size comes from the source's size, not the (rounded) intermediate's.
            let size = Geometry.fit(width: sourceWidth, height: sourceHeight,
                                    boxWidth: spec.width, boxHeight: spec.height)
            output = try image.resized(width: size.width, height: size.height)
        case .cover:
            // Crop first, then scale only the region: measured 2–5× faster than scaling the
            // whole image first (and far cheaper when the box needs an upscale).
            let region = Geometry.coverRegion(width: image.width, height: image.height,
                                              boxWidth: spec.width, boxHeight: spec.height)
            output = try image.smartCropped(width: region.width, height: region.height)
                .resized(width: spec.width, height: spec.height)
        }
        let bytes: [UInt8]
        switch spec.encoding {
        case .jpeg(let quality):
            output = try output.flattenedOnWhite()
            bytes = try encode(output, as: .jpeg(quality: quality, progressive: false), strip: true)
        case .webp(let quality, let effort):
            bytes = try output.save("encoding WebP") { fc_webpsave_buffer($0, $1, $2, Int32(quality), Int32(effort), 1) }
        }
        return RenderedImage(spec: spec, width: output.width, height: output.height,
                             format: spec.encoding.format, bytes: bytes)
    }

    static func encode(_ image: VImage, as target: ConvertTarget, strip: Bool) throws -> [UInt8] {
        let stripFlag: Int32 = strip ? 1 : 0
        switch target {
        case .jpeg(let quality, let progressive):
            let flat = try image.srgb8().flattenedOnWhite()
            return try flat.save("encoding JPEG") {
                fc_jpegsave_buffer($0, $1, $2, Int32(quality), stripFlag, progressive ? 1 : 0)
            }
        case .png:
            return try image.save("encoding PNG") { fc_pngsave_buffer($0, $1, $2, 6) }
        case .webp(let quality):
            return try image.save("encoding WebP") { fc_webpsave_buffer($0, $1, $2, Int32(quality), 4, stripFlag) }
        case .heif(let quality):
            return try image.save("encoding HEIF") { fc_heifsave_buffer($0, $1, $2, Int32(quality), 0) }
        case .avif(let quality):
            return try image.save("encoding AVIF") { fc_heifsave_buffer($0, $1, $2, Int32(quality), 1) }
        case .tiff:
            return try image.save("encoding TIFF") { fc_tiffsave_buffer($0, $1, $2) }
        case .gif:
            return try image.save("encoding GIF") { fc_gifsave_buffer($0, $1, $2) }
        }
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}

