import Foundation
import Logging
import Threads
internal import CVips
internal import CVipsShim

/// Decodes, resizes and encodes photos: libvips decodes, converts colour and encodes (the safe
/// face of `CVips`); our own CResample (Lanczos-3, SSE4.1/AVX2) does every resize of 8-bit
/// pixels without alpha, several times faster than libvips 8.14's reduce (alpha, and CPUs
/// without SSE4.1, keep libvips' resize).
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
///   buffers, so an idle pool thread holds no image memory. A resize by CResample runs on the
///   job's pool thread and pulls the decode it reads strip by strip on that thread too; the
///   rest (encodes, colour transforms) is done by libvips' own worker threads
///   (`vips_concurrency`, default = cores).
/// * A `VipsImage` never leaves the job that made it; its owner (`VImage`) unrefs it.
///   Input bytes are not copied by libvips: each job holds them until its outputs are encoded.
/// * libvips' error buffer is global; a message may mention another thread's failure, but the
///   error ``ImagingError/Code-swift.struct`` always comes from the step that failed here.
/// * Memory: a running render holds its input bytes, the base (8-bit sRGB, 3–4 bytes a pixel,
///   the size of its largest version and at most the declared size; twice that for a moment
///   while an EXIF rotation is applied), the `.fit` versions that smaller versions are made
///   from, one attention copy of at most 512×512, libvips' buffers of the version being
///   encoded, and the encoded versions; the full-size decode is never held (CResample reads it
///   in strips of 16 rows, holding only the rows under its filter, while it makes the base). At most `threads` renders run at once. Each render logs what it
///   held at most (`imaging.held_mb`). An analysis holds its input bytes and one thumbnail of
///   at most 256×256.
/// * libvips prints its warnings (e.g. "error in tile" before a truncation error) through
///   GLib to stderr; errors reach the caller as ``ImagingError``.
/// * Inputs over ``ImagingLimits`` (bytes, or the header's width × height) are refused with
///   `tooLarge` before any pixel is decoded; a truncated input is `corrupt`
///   (`fail_on=truncated`), not a gray image; only JPEG, PNG, WebP, HEIF/AVIF, GIF and TIFF
///   loaders are accepted (never SVG, PDF, ImageMagick…).
public final class Imaging: Sendable {
    public let limits: ImagingLimits
    /// How rendered JPEG versions are encoded.
    public let encoder: EncoderSettings
    private let pool: BlockingPool
    let logger: Logger

    /// Starts a pool of `threads` threads for libvips work (default: one per core).
    public init(threads: Int = ProcessInfo.processInfo.activeProcessorCount,
                limits: ImagingLimits = .init(), encoder: EncoderSettings = .init(), logger: Logger) {
        precondition(threads > 0, "Imaging needs at least one thread")
        self.limits = limits
        self.encoder = encoder
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

    /// Renders every version from ONE decode (see ``RenderPlan``): the input is decoded once,
    /// in one sequential pass with shrink-on-load, straight to the largest size any version
    /// needs (the base), converted to 8-bit sRGB (embedded ICC profile or CMYK applied) and
    /// turned upright by its EXIF orientation (the tag is removed). Every smaller version is
    /// made from the smallest image already in memory that is large enough (the thumbnail from
    /// hd, a cover from hd when hd holds its region), covers placed by attention found on a
    /// small copy; each is encoded (metadata stripped; alpha flattened on white for JPEG) with
    /// ``encoder``. Results are in `versions`' order. See ``VersionSpec`` for the exact sizes.
    public func render(_ bytes: [UInt8], versions: [VersionSpec]) async throws -> [RenderedImage] {
        try Self.validate(versions)
        let (limits, encoder, logger) = (self.limits, self.encoder, self.logger)
        return try await run {
            try Self.withInput(bytes) {
                try Self.renderVersions($0, versions: versions, limits: limits, encoder: encoder, logger: logger)
            }
        }
    }

    /// ``render(_:versions:)`` of a file's contents.
    public func renderFile(_ path: String, versions: [VersionSpec]) async throws -> [RenderedImage] {
        try Self.validate(versions)
        let (limits, encoder, logger) = (self.limits, self.encoder, self.logger)
        return try await run {
            let bytes = try Self.readFile(path, limits: limits)
            return try Self.withInput(bytes) {
                try Self.renderVersions($0, versions: versions, limits: limits, encoder: encoder, logger: logger)
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
        let (limits, encoder) = (self.limits, self.encoder)
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
                    return try Self.encodeVersion(VImage(owning: out).srgb8(), spec: spec, encoder: encoder)
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
                return try cmyk.save("encoding CMYK JPEG") {
                    fc_jpegsave_buffer($0, $1, $2, Int32(quality), 1, 0, 1, VIPS_FOREIGN_SUBSAMPLE_AUTO)
                }
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

    /// The side of the small copy covers are placed on (see ``RenderPlan``): a few hundred
    /// pixels, so the attention search costs next to nothing, while the crop lands within a
    /// few pixels of where a search on the whole picture puts it (tested).
    static let attentionSide = 512

    static func renderVersions(_ input: UnsafeRawBufferPointer, versions: [VersionSpec], limits: ImagingLimits,
                               encoder: EncoderSettings, logger: Logger) throws -> [RenderedImage] {
        let start = ContinuousClock.now
        let probed = try readHeader(input, limits: limits)
        let header = probed.header
        let keepsAlpha = versions.contains { if case .webp = $0.encoding { true } else { false } }
        var rendered = [RenderedImage?](repeating: nil, count: versions.count)
        let done = try derive(input, probed: probed, versions: versions, keepAlpha: keepsAlpha) { index, image in
            rendered[index] = try encodeVersion(image, spec: versions[index], encoder: encoder)
        }
        let results = try rendered.enumerated().map { index, image in
            guard let image else { throw ImagingError(.processingFailed, "version \(index) was not rendered") }
            return image
        }
        logger.debug("rendered versions", metadata: [
            "imaging.format": "\(header.format.rawValue)",
            "imaging.source": "\(header.uprightWidth)x\(header.uprightHeight)",
            "imaging.decoded": "\(done.decoded)",
            "imaging.base": "\(done.base)",
            "imaging.held_mb": "\(String(format: "%.1f", Double(done.peakHeldBytes) / 1_048_576))",
            "imaging.input_bytes": "\(input.count)",
            "imaging.versions": "\(versions.count)",
            "imaging.duration_ms": "\((ContinuousClock.now - start).milliseconds)",
            "imaging.thread": "\(Thread.current.name ?? "?")",
        ])
        return results
    }

    /// What ``derive(_:probed:versions:keepAlpha:_:)`` did.
    struct Derivation {
        /// The size decoded (shrink-on-load), as stored.
        var decoded: PixelSize
        /// The upright base every version was made from.
        var base: PixelSize
        /// The most bytes of pixels the job's own images (base, kept versions, attention copy,
        /// the moment of the EXIF rotation) held at once; libvips' buffers for the image being
        /// encoded come on top.
        var peakHeldBytes: Int
    }

    /// Carries out the ``RenderPlan`` of `versions`: decodes the base once, makes each version
    /// (upright, 8-bit sRGB, alpha kept only with `keepAlpha`) from its planned source and hands
    /// it to `body` with its index in `versions`, in the plan's order (largest first). An image
    /// `body` gets may be computed lazily from a source: encode or copy it inside `body`.
    /// Pool threads only.
    static func derive(_ input: UnsafeRawBufferPointer, probed: Probed, versions: [VersionSpec], keepAlpha: Bool,
                       _ body: (Int, VImage) throws -> Void) throws -> Derivation {
        let header = probed.header
        let plan = RenderPlan(specs: versions, width: header.uprightWidth, height: header.uprightHeight,
                              attentionSide: attentionSide)
        // Only `held` refers to the base, so releasing it there frees it.
        var held: [RenderPlan.Source: VImage]
        let decodedSize: PixelSize
        var peak: Int
        do {
            let decoded = try decodeBase(input, probed: probed, size: plan.base, keepAlpha: keepAlpha)
            held = [.base: decoded.image]
            decodedSize = decoded.decoded
            peak = decoded.peakBytes
        }
        var attention: VImage?
        for step in plan.steps {
            guard let source = held[step.source] else {
                throw ImagingError(.processingFailed, "the render plan uses the \(step.source) after releasing it")
            }
            switch step.work {
            case .attention:
                let copy = try source.resized(width: step.size.width, height: step.size.height)
                attention = copy === source ? source : try copy.materialised()
            case .version(let index):
                var image: VImage
                switch versions[index].mode {
                case .fit:
                    image = try source.resized(width: step.size.width, height: step.size.height)
                case .cover:
                    image = try cover(source, box: step.size, attention: attention)
                }
                if step.kept {
                    // A source of later versions: computed once, into memory.
                    if image !== source { image = try image.materialised() }
                    held[.version(index)] = image
                }
                try body(index, image)
            }
            var counted = Set<ObjectIdentifier>()
            var bytes = attention?.byteCount ?? 0
            for image in held.values {
                // A kept version of the base's size is the base itself: count it once.
                if counted.insert(ObjectIdentifier(image)).inserted { bytes += image.byteCount }
            }
            peak = max(peak, bytes)
            for released in step.releases { held[released] = nil }
        }
        return Derivation(decoded: decodedSize, base: plan.base, peakHeldBytes: peak)
    }

    /// The base of a render, in memory.
    struct DecodedBase {
        var image: VImage
        /// The size decoded (shrink-on-load), as stored.
        var decoded: PixelSize
        /// Bytes of pixels held at once while making it (two copies during an EXIF rotation).
        var peakBytes: Int
    }

    /// The one decode of a render: the upright picture at exactly `size`, 8-bit sRGB
    /// (embedded ICC profile or CMYK applied), alpha flattened on white unless kept, in memory.
    ///
    /// One sequential pass: shrink-on-load to no less than `size` (JPEG DCT scaling by 1/2, 1/4
    /// or 1/8; WebP `scale`; a HEIF/AVIF's embedded thumbnail when it is large enough; other
    /// formats at full size), resized to `size` while streaming (CResample pulls the decode
    /// strip by strip into its filter and writes the base into memory; with alpha, libvips'
    /// resize streams and the result is copied into memory), so the full-size decode is never
    /// held; a truncated input fails there (`fail_on=truncated`, `corrupt`), then turned upright by its EXIF orientation (the tag is removed;
    /// rotating is done on the small image, after the sequential read). 8-bit RGB, grey and
    /// CMYK inputs are resized before their colour transform, as `vips_thumbnail` does (fewer
    /// pixels through the ICC transform); others (16-bit, float, Lab…) are converted to 8-bit
    /// sRGB first, so alpha and range survive the resize. Pool threads only.
    static func decodeBase(_ input: UnsafeRawBufferPointer, probed: Probed, size: PixelSize,
                           keepAlpha: Bool) throws -> DecodedBase {
        let header = probed.header
        // Decoded and resized as stored; turned upright once small.
        let stored = header.orientationSwapsAxes ? PixelSize(size.height, size.width) : size
        var jpegShrink: Int32 = 1
        var webpScale = 0.0
        var heifThumbnail = false
        switch header.format {
        case .jpeg:
            jpegShrink = Int32(Geometry.jpegShrink(width: header.width, height: header.height,
                                                   needed: (stored.width, stored.height)))
        case .webp:
            webpScale = Geometry.webpScale(width: header.width, height: header.height,
                                           needed: (stored.width, stored.height)) ?? 0
        case .heif, .avif:
            heifThumbnail = heifThumbnailSuffices(input, header: header, needed: stored)
        default:
            break
        }
        guard let pointer = fc_load_buffer(input.baseAddress, input.count, jpegShrink, webpScale, heifThumbnail ? 1 : 0) else {
            throw vipsError(.corrupt, "opening the \(header.format.rawValue) image")
        }
        var image = VImage(owning: pointer)
        let decoded = PixelSize(image.width, image.height)
        if image.isUChar && (image.isSRGB || image.isGrey || image.isCMYK) {
            if !keepAlpha { image = try image.flattenedOnWhite() }
            // Decoded while it is resized (CResample reads the decode strip by strip).
            image = try image.resized(width: stored.width, height: stored.height)
            image = try colourManaged(image, probed: probed)
        } else {
            image = try colourManaged(image, probed: probed)
            if !keepAlpha { image = try image.flattenedOnWhite() }
            image = try image.resized(width: stored.width, height: stored.height)
        }
        // The decode happens here, once.
        image = try image.materialised()
        var peakBytes = image.byteCount
        if image.orientation != 1 {
            let upright = try image.apply(.processingFailed, "auto-rotating") { fc_autorot($0, $1) }.materialised()
            peakBytes += upright.byteCount
            image = upright
        }
        guard image.width == size.width, image.height == size.height else {
            throw ImagingError(.processingFailed, "the base came out \(image.width)x\(image.height), wanted \(size)",
                               context: ["imaging.format": header.format.rawValue, "imaging.decoded": "\(decoded)"])
        }
        return DecodedBase(image: image, decoded: decoded, peakBytes: peakBytes)
    }

    /// 8-bit sRGB: through the embedded ICC profile (or the built-in CMYK profile) when the
    /// header said so, then any other colourspace or depth converted.
    static func colourManaged(_ image: VImage, probed: Probed) throws -> VImage {
        var image = image
        if probed.needsColourTransform {
            let cmyk: Int32 = image.isCMYK ? 1 : 0
            image = try image.apply(.processingFailed, "converting the colour profile to sRGB") { fc_icc_to_srgb($0, $1, cmyk) }
        }
        return try image.srgb8()
    }

    /// Whether a HEIF/AVIF carries an embedded thumbnail that is smaller than the main image,
    /// of its aspect ratio, and at least `needed` (as stored): decoding it instead of the main
    /// image is the format's shrink-on-load. Any doubt (no thumbnail, unreadable) decodes the
    /// main image.
    static func heifThumbnailSuffices(_ input: UnsafeRawBufferPointer, header: ImageHeader, needed: PixelSize) -> Bool {
        guard let pointer = fc_heif_thumbnail_header(input.baseAddress, input.count) else {
            _ = takeVipsErrorMessage()
            return false
        }
        let thumbnail = VImage(owning: pointer)
        let (w, h) = (thumbnail.width, thumbnail.height)
        guard w < header.width, h < header.height, w >= needed.width, h >= needed.height else { return false }
        let aspect = Double(w) / Double(h), mainAspect = Double(header.width) / Double(header.height)
        return abs(aspect - mainAspect) <= 0.01 * mainAspect
    }

    /// A `.cover` of `box` from `source`, the whole upright picture at some scale: the region
    /// of ``coverCrop(sourceWidth:sourceHeight:box:attention:)`` cut out and scaled to exactly
    /// the box (cut first, then scale only the region: far cheaper than scaling the whole
    /// picture, and cheaper still when the box needs an upscale).
    static func cover(_ source: VImage, box: PixelSize, attention: VImage?) throws -> VImage {
        let crop = try coverCrop(sourceWidth: source.width, sourceHeight: source.height, box: box, attention: attention)
        if source.canResample && (crop.width != box.width || crop.height != box.height) {
            return try source.resampled(crop, width: box.width, height: box.height)
        }
        return try source.extracted(left: crop.left, top: crop.top, width: crop.width, height: crop.height)
            .resized(width: box.width, height: box.height)
    }

    /// A rectangle of a picture, in its pixels.
    struct Crop: Equatable, Sendable {
        var left: Int
        var top: Int
        var width: Int
        var height: Int
    }

    /// Where a `.cover` of `box` cuts a `sourceWidth`×`sourceHeight` picture: the largest
    /// region of the box's aspect ratio (``Geometry/coverRegion(width:height:boxWidth:boxHeight:)``),
    /// centred on the attention centre libvips' smartcrop finds in `attention` (a small copy of
    /// the same picture) for that region at the copy's scale, mapped to the source by
    /// ``Geometry/coverOrigin(attention:copy:region:source:)``.
    ///
    /// The search places its centre on a coarse grid of its input anyway (libvips 8.14 reduces
    /// it to 32×32 first), so searching a copy of a few hundred pixels instead of the full
    /// picture moves the crop by at most a few pixels and saves the search's pass over the
    /// full picture. Without a copy (the plan makes none when no cover cuts the picture), or
    /// when the region is the whole copy at the copy's scale, the region is centred: it is
    /// then only a pixel or two smaller than the source.
    static func coverCrop(sourceWidth: Int, sourceHeight: Int, box: PixelSize, attention: VImage?) throws -> Crop {
        let region = Geometry.coverRegion(width: sourceWidth, height: sourceHeight, boxWidth: box.width, boxHeight: box.height)
        if region.width == sourceWidth && region.height == sourceHeight {
            return Crop(left: 0, top: 0, width: region.width, height: region.height)
        }
        var origin = (left: (sourceWidth - region.width) / 2, top: (sourceHeight - region.height) / 2)
        if let copy = attention {
            let small = Geometry.coverRegion(width: copy.width, height: copy.height, boxWidth: box.width, boxHeight: box.height)
            if small.width < copy.width || small.height < copy.height {
                let found = try copy.attention(width: small.width, height: small.height)
                origin = Geometry.coverOrigin(attention: (found.x, found.y), copy: (copy.width, copy.height),
                                              region: region, source: (sourceWidth, sourceHeight))
            }
        }
        return Crop(left: origin.left, top: origin.top, width: region.width, height: region.height)
    }

    /// One version encoded as its spec says (JPEG: alpha flattened on white, with `encoder`'s
    /// settings; WebP: alpha kept), metadata stripped.
    static func encodeVersion(_ image: VImage, spec: VersionSpec, encoder: EncoderSettings) throws -> RenderedImage {
        var output = image
        let bytes: [UInt8]
        switch spec.encoding {
        case .jpeg(let quality):
            output = try output.flattenedOnWhite()
            bytes = try encode(output, as: .jpeg(quality: quality, progressive: false), strip: true, encoder: encoder)
        case .webp(let quality, let effort):
            bytes = try output.save("encoding WebP") { fc_webpsave_buffer($0, $1, $2, Int32(quality), Int32(effort), 1) }
        }
        return RenderedImage(spec: spec, width: output.width, height: output.height,
                             format: spec.encoding.format, bytes: bytes)
    }

    static func encode(_ image: VImage, as target: ConvertTarget, strip: Bool,
                       encoder: EncoderSettings = EncoderSettings()) throws -> [UInt8] {
        let stripFlag: Int32 = strip ? 1 : 0
        switch target {
        case .jpeg(let quality, let progressive):
            let flat = try image.srgb8().flattenedOnWhite()
            let optimize: Int32 = encoder.jpegOptimizeCoding ? 1 : 0
            let subsample: VipsForeignSubsample
            switch encoder.jpegSubsampling {
            case .auto: subsample = VIPS_FOREIGN_SUBSAMPLE_AUTO
            case .always: subsample = VIPS_FOREIGN_SUBSAMPLE_ON
            case .never: subsample = VIPS_FOREIGN_SUBSAMPLE_OFF
            }
            return try flat.save("encoding JPEG") {
                fc_jpegsave_buffer($0, $1, $2, Int32(quality), stripFlag, progressive ? 1 : 0, optimize, subsample)
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

