import ArgumentParser
import Foundation
import Imaging
import Logging
import MediaService

// Picture quality and encoder cost of the resize hot path (issue 14): bytes, time and PSNR of
// each JPEG encoder setting and WebP effort, and PSNR of every version of the service's set
// against the same version made on its own.

/// One encoder setting, measured on one version of the 12 MP photo.
struct EncodeSettingResult: Codable, Sendable {
    /// e.g. "JPEG Q82, optimised Huffman, 4:2:0 (auto)".
    var setting: String
    /// The version it encodes, e.g. "hd (fit 1920x1080)".
    var version: String
    var isDefault: Bool
    /// Renders of that one version (decode + resize + this encoder), one core.
    var msPerRender: Summary?
    var bytes: Int
    /// PSNR (dB) against the same version encoded near-losslessly (JPEG Q100, 4:4:4): what
    /// this setting loses.
    var psnrDB: Double?
}

/// PSNR of one version of the service's set against the same version made another way.
struct VersionQuality: Codable, Sendable {
    var version: String
    /// "alone": that version rendered on its own, from its own decode; "libvips-per-version":
    /// its own `vips_thumbnail` (the benchmark's peer).
    var against: String
    var photos: Int
    var psnrDB: Summary?
}

struct QualityReport: Codable, Sendable {
    var settingsInput: String
    var settings: [EncodeSettingResult]
    var versions: [VersionQuality]
}

/// PSNR in dB of two images of one size (8-bit RGB); 99 when they are identical.
func psnr(_ a: Pixels, _ b: Pixels) -> Double {
    precondition(a.width == b.width && a.height == b.height, "PSNR of images of one size")
    var sum = 0.0
    for i in a.rgb.indices {
        let d = Double(Int(a.rgb[i]) - Int(b.rgb[i]))
        sum += d * d
    }
    let mse = sum / Double(max(1, a.rgb.count))
    return mse == 0 ? 99 : 10 * log10(255 * 255 / mse)
}

struct ResizeQuality: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resize-quality",
        abstract: "Internal: encoder settings (bytes, time, PSNR) and version PSNR, written as JSON.",
        shouldDisplay: false)

    @Option(help: "The photo the encoder settings are measured on (the 12 MP JPEG).") var settingsInput: String
    @Option(help: "Timed renders per setting (their median is the figure).") var repeats = 5
    @Option(help: "Where to write the JSON result.") var result: String
    @Argument(help: "Photos whose versions are compared (the JPEG corpus).") var inputs: [String] = []

    func run() async throws {
        var logger = Logger(label: "framecast-bench")
        logger.logLevel = .error
        let settings = try await measureSettings(logger: logger)
        let versions = try await compareVersions(logger: logger)
        try writeJSON(QualityReport(settingsInput: settingsInput, settings: settings, versions: versions), to: result)
    }

    /// JPEG settings on hd (quality, Huffman optimisation, chroma subsampling) and WebP efforts
    /// on a frame cover (what a frame asking for WebP gets), each against a near-lossless
    /// encoding of the same version.
    func measureSettings(logger: Logger) async throws -> [EncodeSettingResult] {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: settingsInput)))
        let hd = hdSpec
        let frame = VersionSpec.cover(1280, 800)
        let hdName = "hd (fit \(hd.width)x\(hd.height))", frameName = "frame:1280x800 (cover)"
        let jpegQuality: Int = { if case .jpeg(let q) = hd.encoding { q } else { 82 } }()

        let lossless = Imaging(threads: 1, encoder: EncoderSettings(jpegOptimizeCoding: true, jpegSubsampling: .never), logger: logger)
        defer { lossless.shutdown() }
        func referencePixels(_ spec: VersionSpec) async throws -> Pixels {
            let reference = try await lossless.render(bytes, versions: [VersionSpec(width: spec.width, height: spec.height, mode: spec.mode,
                                                                                   encoding: .jpeg(quality: 100))])[0]
            return try await lossless.pixels(reference.bytes, width: reference.width, height: reference.height)
        }
        let hdReference = try await referencePixels(hd)
        let frameReference = try await referencePixels(frame)

        func measure(_ name: String, version: String, spec: VersionSpec, encoder: EncoderSettings, isDefault: Bool,
                     reference: Pixels) async throws -> EncodeSettingResult {
            let imaging = Imaging(threads: 1, encoder: encoder, logger: logger)
            defer { imaging.shutdown() }
            var output = try await imaging.render(bytes, versions: [spec])[0]  // warm-up, and the bytes
            var times: [Double] = []
            for _ in 0..<repeats {
                let start = ContinuousClock.now
                output = try await imaging.render(bytes, versions: [spec])[0]
                times.append((ContinuousClock.now - start).ms)
            }
            let pixels = try await imaging.pixels(output.bytes, width: output.width, height: output.height)
            let quality = pixels.width == reference.width && pixels.height == reference.height ? psnr(pixels, reference) : nil
            return EncodeSettingResult(setting: name, version: version, isDefault: isDefault, msPerRender: Summary(times),
                                       bytes: output.bytes.count, psnrDB: quality)
        }

        var results: [EncodeSettingResult] = []
        let jpegSettings: [(name: String, quality: Int, encoder: EncoderSettings)] = [
            ("JPEG Q\(jpegQuality), optimised Huffman, 4:2:0 (auto)", jpegQuality, EncoderSettings()),
            ("JPEG Q\(jpegQuality), standard Huffman, 4:2:0 (auto)", jpegQuality, EncoderSettings(jpegOptimizeCoding: false)),
            ("JPEG Q\(jpegQuality), optimised Huffman, 4:4:4", jpegQuality, EncoderSettings(jpegSubsampling: .never)),
            ("JPEG Q\(jpegQuality), standard Huffman, 4:4:4", jpegQuality, EncoderSettings(jpegOptimizeCoding: false, jpegSubsampling: .never)),
            ("JPEG Q75, optimised Huffman, 4:2:0 (auto)", 75, EncoderSettings()),
            ("JPEG Q90, optimised Huffman, 4:2:0 (forced)", 90, EncoderSettings(jpegSubsampling: .always)),
        ]
        for (index, setting) in jpegSettings.enumerated() {
            let spec = VersionSpec(width: hd.width, height: hd.height, mode: hd.mode, encoding: .jpeg(quality: setting.quality))
            results.append(try await measure(setting.name, version: hdName, spec: spec, encoder: setting.encoder,
                                             isDefault: index == 0, reference: hdReference))
        }
        // WebP: the service asks for quality 80, effort 2 (Renders.frameVersion).
        for effort in 0...4 {
            let spec = VersionSpec.cover(frame.width, frame.height, .webp(quality: 80, effort: effort))
            results.append(try await measure("WebP Q80, effort \(effort)", version: frameName, spec: spec,
                                             encoder: EncoderSettings(), isDefault: effort == 2, reference: frameReference))
        }
        return results
    }

    /// Every version of the service's set (MediaService.renderVersions, the hot path) against
    /// the same version rendered alone from its own decode (how each `.fit` version was made
    /// before versions were derived from hd) and against libvips' own `vips_thumbnail`.
    func compareVersions(logger: Logger) async throws -> [VersionQuality] {
        let imaging = Imaging(threads: 1, logger: logger)
        defer { imaging.shutdown() }
        var alone: [String: [Double]] = [:], perVersion: [String: [Double]] = [:]
        var order: [String] = []
        for path in inputs {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            let set = try await MediaService.renderVersions(file: path, screens: benchScreens, imaging: imaging)
            for (size, version) in set {
                let name = "\(size) (\(version.spec.mode.rawValue) \(version.spec.width)x\(version.spec.height))"
                if !order.contains(name) { order.append(name) }
                let pixels = try await imaging.pixels(version.bytes, width: version.width, height: version.height)
                let own = try await imaging.renderFile(path, versions: [version.spec])[0]
                if own.width == version.width && own.height == version.height {
                    let ownPixels = try await imaging.pixels(own.bytes, width: own.width, height: own.height)
                    alone[name, default: []].append(psnr(pixels, ownPixels))
                }
                let peer = try await imaging.renderPerVersion(bytes, versions: [version.spec])[0]
                // libvips' cover is smaller than the box when the source is: nothing to compare.
                if peer.width == version.width && peer.height == version.height {
                    let peerPixels = try await imaging.pixels(peer.bytes, width: peer.width, height: peer.height)
                    perVersion[name, default: []].append(psnr(pixels, peerPixels))
                }
            }
        }
        return order.flatMap { name in
            [VersionQuality(version: name, against: "alone", photos: alone[name]?.count ?? 0, psnrDB: Summary(alone[name] ?? [])),
             VersionQuality(version: name, against: "libvips-per-version", photos: perVersion[name]?.count ?? 0,
                            psnrDB: Summary(perVersion[name] ?? []))]
        }
    }
}
