import Foundation
import FramecastTesting
import Logging
import Testing
@testable import Imaging

// Real photographs (plasma/mate wallpapers, 2560×1600 camera JPEGs with EXIF) and copies
// made from them with libvips. Serialized: the bomb test measures this process's memory.
@Suite(.serialized) struct ImagingTests {
    let imaging = sharedImaging

    // MARK: probe

    @Test func probeReadsJPEGHeader() async throws {
        let header = try await imaging.probe(photo("FallenLeaf"))
        #expect(header == ImageHeader(format: .jpeg, width: 2560, height: 1600, orientation: 1, hasAlpha: false, pages: 1))
        let file = try await imaging.probeFile(Photos.plasma("BytheWater"))
        #expect(file.format == .jpeg && file.width == 2560 && file.height == 1600 && file.orientation == 1)
    }

    @Test(arguments: [ConvertTarget.png, .webp(quality: 80), .heif(quality: 50), .avif(quality: 40), .tiff, .jpeg(quality: 85, progressive: true)])
    func probeDetectsConvertedFormats(_ target: ConvertTarget) async throws {
        let source = try photo("Kite")
        let converted = try await imaging.convert(source, to: target)
        let header = try await imaging.probe(converted)
        #expect(header.format == target.format)
        #expect(header.width == 2560 && header.height == 1600 && header.orientation == 1 && !header.hasAlpha)
    }

    @Test func probeDoesNotDecodePixels() async throws {
        // A quarter of a JPEG: the header is intact, the pixels are not. probe succeeds
        // (so it read no pixels) while a decode of the same bytes fails.
        let full = try photo("FallenLeaf")
        let quarter = Array(full.prefix(full.count / 4))
        let header = try await imaging.probe(quarter)
        #expect(header.width == 2560 && header.height == 1600)
        let error = await #expect(throws: ImagingError.self) { try await imaging.pixels(quarter, width: 32, height: 32) }
        #expect(error?.code == .corrupt)
    }

    @Test func probeReportsOrientationAndStoredSize() async throws {
        let rotated = try await imaging.withOrientation(photo("FallenLeaf"), orientation: 6)
        let header = try await imaging.probe(rotated)
        #expect(header.format == .jpeg)
        #expect(header.orientation == 6)
        #expect(header.width == 1600 && header.height == 2560)
        #expect(header.uprightWidth == 2560 && header.uprightHeight == 1600)
    }

    // MARK: render

    @Test func rendersStandardVersionsFromOneCall() async throws {
        let rendered = try await imaging.render(photo("FallenLeaf"), versions: standardVersions)
        #expect(rendered.map(\.spec) == standardVersions)
        #expect(rendered.map { "\($0.width)x\($0.height)" } == ["300x188", "1728x1080", "1024x600", "1080x1920"])
        for image in rendered {
            #expect(image.format == .jpeg)
            let header = try await imaging.probe(image.bytes)
            #expect(header == ImageHeader(format: .jpeg, width: image.width, height: image.height))
            // Decodes completely (a truncated output would fail here).
            let pixels = try await imaging.pixels(image.bytes, width: 16, height: 16)
            #expect(pixels.rgb.count == 16 * 16 * 3)
        }
        // Thumbnail and hd show the same picture.
        let a = try await imaging.pixels(rendered[0].bytes, width: 30, height: 19)
        let b = try await imaging.pixels(rendered[1].bytes, width: 30, height: 19)
        #expect(a.meanAbsoluteDifference(to: b) < 4)
    }

    @Test func rendersFromFilePath() async throws {
        let rendered = try await imaging.renderFile(Photos.plasma("Kite"), versions: [.fit(300, 300)])
        #expect(rendered.count == 1 && rendered[0].width == 300 && rendered[0].height == 188)
    }

    @Test func rendersWebP() async throws {
        let specs: [VersionSpec] = [.fit(300, 300, .webp(quality: 75, effort: 2)), .cover(800, 480, .webp())]
        let rendered = try await imaging.render(photo("ColorfulCups"), versions: specs)
        #expect(rendered.map { "\($0.width)x\($0.height)" } == ["300x188", "800x480"])
        for image in rendered {
            #expect(image.format == .webp)
            let header = try await imaging.probe(image.bytes)
            #expect(header.format == .webp && header.width == image.width && header.height == image.height)
            _ = try await imaging.pixels(image.bytes, width: 8, height: 8)
        }
    }

    @Test func rendersPortraitSource() async throws {
        // A real portrait photo: a 1200×1920 attention crop of a landscape one.
        let portrait = try await imaging.render(photo("BytheWater"), versions: [.cover(1200, 1920, .jpeg(quality: 92))])[0].bytes
        let rendered = try await imaging.render(portrait, versions: standardVersions)
        // 1200×1920 in 300×300: 300 × 1200/1920 = 187.5 → 188 (halves round up).
        #expect(rendered.map { "\($0.width)x\($0.height)" } == ["188x300", "675x1080", "1024x600", "1080x1920"])
    }

    @Test(arguments: [ConvertTarget.png, .heif(quality: 60), .webp(quality: 85), .jpeg(quality: 90, progressive: true)])
    func rendersOtherSourceFormats(_ target: ConvertTarget) async throws {
        let original = try photo("FallenLeaf")
        let source = try await imaging.convert(original, to: target)
        #expect(try await imaging.probe(source).format == target.format)
        let rendered = try await imaging.render(source, versions: standardVersions)
        #expect(rendered.map { "\($0.width)x\($0.height)" } == ["300x188", "1728x1080", "1024x600", "1080x1920"])
        // Same picture as the render of the original JPEG.
        let reference = try await imaging.render(original, versions: [.fit(300, 300)])[0]
        let a = try await imaging.pixels(reference.bytes, width: 40, height: 25)
        let b = try await imaging.pixels(rendered[0].bytes, width: 40, height: 25)
        #expect(a.meanAbsoluteDifference(to: b) < 5)
    }

    @Test func rendersProgressiveJPEGWithICCProfile() async throws {
        // ColorfulCups is itself a progressive JPEG with an embedded ICC profile.
        let rendered = try await imaging.render(photo("ColorfulCups"), versions: standardVersions)
        #expect(rendered.map { "\($0.width)x\($0.height)" } == ["300x188", "1728x1080", "1024x600", "1080x1920"])
    }

    @Test func fitNeverUpscalesAndCoverDoes() async throws {
        let small = try await imaging.render(photo("FallenLeaf"), versions: [.fit(320, 200)])[0].bytes
        let rendered = try await imaging.render(small, versions: [.fit(1920, 1080), .cover(1080, 1920), .fit(100, 100)])
        #expect(rendered.map { "\($0.width)x\($0.height)" } == ["320x200", "1080x1920", "100x63"])
    }

    @Test(arguments: 1...8)
    func exifOrientationComesOutUpright(_ orientation: Int) async throws {
        let upright = try photo("FallenLeaf")
        let rotated = try await imaging.withOrientation(upright, orientation: orientation)
        let header = try await imaging.probe(rotated)
        #expect(header.orientation == orientation)
        #expect(header.width == (orientation >= 5 ? 1600 : 2560))

        let rendered = try await imaging.render(rotated, versions: [.fit(300, 300), .cover(600, 600)])
        #expect(rendered.map { "\($0.width)x\($0.height)" } == ["300x188", "600x600"])
        // The output carries no orientation tag: it is stored upright.
        #expect(try await imaging.probe(rendered[0].bytes).orientation == 1)

        let reference = try await imaging.render(upright, versions: [.fit(300, 300)])[0]
        let expected = try await imaging.pixels(reference.bytes, width: 40, height: 25)
        let actual = try await imaging.pixels(rendered[0].bytes, width: 40, height: 25)
        #expect(actual.meanAbsoluteDifference(to: expected) < 6)
        // The measure tells orientations apart: the same picture upside down is far off.
        #expect(rotated180(expected).meanAbsoluteDifference(to: expected) > 20)
    }

    @Test func alphaIsFlattenedOnWhiteForJPEGAndKeptForWebP() async throws {
        // 64×48 RGBA, fully transparent black: JPEG shows white, WebP keeps the alpha.
        let rows = Array(repeating: [UInt8](repeating: 0, count: 64 * 4), count: 48)
        let png = PNGWriter.image(width: 64, height: 48, bitDepth: 8, colorType: 6, rows: rows)
        let header = try await imaging.probe(png)
        #expect(header.format == .png && header.hasAlpha && header.width == 64)
        let rendered = try await imaging.render(png, versions: [.fit(32, 32), .fit(32, 32, .webp())])
        let jpeg = try await imaging.pixels(rendered[0].bytes, width: 8, height: 6)
        #expect(jpeg.averageColor.red > 250 && jpeg.averageColor.green > 250 && jpeg.averageColor.blue > 250)
        #expect(try await imaging.probe(rendered[0].bytes).hasAlpha == false)
        #expect(try await imaging.probe(rendered[1].bytes).hasAlpha == true)
        #expect(rendered[0].width == 32 && rendered[0].height == 24)
    }

    @Test func cmykJPEGIsConvertedToSRGB() async throws {
        let original = try photo("FallenLeaf")
        let cmyk = try await imaging.cmykJPEG(original)
        let rendered = try await imaging.render(cmyk, versions: [.fit(300, 300), .cover(200, 200, .webp())])
        #expect(rendered.map { "\($0.width)x\($0.height)" } == ["300x188", "200x200"])
        #expect(try await imaging.probe(rendered[0].bytes).format == .jpeg)
        // Same colours as libvips' own CMYK → sRGB thumbnail of the CMYK file (a CMYK image
        // read as RGB would be far off), and near the original (CMYK's gamut shifts it a bit).
        let actual = try await imaging.pixels(rendered[0].bytes, width: 40, height: 25)
        let viaThumbnail = try await imaging.pixels(cmyk, width: 40, height: 25)
        let original25 = try await imaging.pixels(original, width: 40, height: 25)
        #expect(actual.meanAbsoluteDifference(to: viaThumbnail) < 5)
        #expect(actual.meanAbsoluteDifference(to: original25) < 20)
    }

    @Test func sixteenBitGrayIsConvertedToEightBitSRGB() async throws {
        // 40×30 16-bit grey, a horizontal ramp.
        let rows = (0..<30).map { _ in (0..<40).flatMap { x -> [UInt8] in let v = UInt16(x * 1600); return [UInt8(v >> 8), UInt8(v & 0xff)] } }
        let png = PNGWriter.image(width: 40, height: 30, bitDepth: 16, colorType: 0, rows: rows)
        let rendered = try await imaging.render(png, versions: [.cover(20, 20), .fit(40, 40, .webp())])
        #expect(rendered.map { "\($0.width)x\($0.height)" } == ["20x20", "40x30"])
        let pixels = try await imaging.pixels(rendered[1].bytes, width: 40, height: 1)
        #expect(pixels.rgb[0] < 20 && pixels.rgb[3 * 39] > 220)
    }

    // MARK: refusals

    @Test func decompressionBombIsRefusedBeforeDecoding() async throws {
        let bomb = PNGWriter.bomb(width: 30000, height: 30000)
        #expect(bomb.count < 1_000_000)
        // The file really declares 30000×30000 (probed with a higher limit, header only).
        let lenient = Imaging(threads: 1, limits: ImagingLimits(maxPixels: 1_000_000_000), logger: Logger(label: "test"))
        defer { lenient.shutdown() }
        let header = try await lenient.probe(bomb)
        #expect(header.format == .png && header.width == 30000 && header.height == 30000)

        let before = memoryStatus()
        let start = ContinuousClock.now
        let error = await #expect(throws: ImagingError.self) { try await imaging.render(bomb, versions: standardVersions) }
        #expect(error?.code == .tooLarge)
        let probeError = await #expect(throws: ImagingError.self) { try await imaging.probe(bomb) }
        #expect(probeError?.code == .tooLarge)
        // Refused before decoding (decoding 900 MP would take far longer); a bound, not a speed check.
        #expect(ContinuousClock.now - start < .seconds(15))
        let after = memoryStatus()
        // Decoding would need 900 MB; refusing needs next to nothing.
        #expect(after.peak - before.peak < 100_000, "VmHWM grew by \(after.peak - before.peak) kB")
        #expect(after.rss - before.rss < 100_000, "VmRSS grew by \(after.rss - before.rss) kB")
    }

    @Test func byteLimitIsRefused() async throws {
        let small = Imaging(threads: 1, limits: ImagingLimits(maxBytes: 100_000), logger: Logger(label: "test"))
        defer { small.shutdown() }
        let error = await #expect(throws: ImagingError.self) { try await small.render(photo(), versions: [.fit(300, 300)]) }
        #expect(error?.code == .tooLarge)
        let fileError = await #expect(throws: ImagingError.self) { try await small.probeFile(Photos.plasma("FallenLeaf")) }
        #expect(fileError?.code == .tooLarge)
    }

    @Test func truncatedJPEGIsCorrupt() async throws {
        let full = try photo("FallenLeaf")
        let half = Array(full.prefix(full.count / 2))
        let error = await #expect(throws: ImagingError.self) { try await imaging.render(half, versions: standardVersions) }
        #expect(error?.code == .corrupt)
        let single = await #expect(throws: ImagingError.self) { try await imaging.render(half, versions: [.fit(300, 300)]) }
        #expect(single?.code == .corrupt)
        // Just a JPEG signature: detected as JPEG, but no header.
        let signature = await #expect(throws: ImagingError.self) { try await imaging.probe([0xFF, 0xD8, 0xFF]) }
        #expect(signature?.code == .corrupt)
    }

    @Test func notImagesAreUnsupported() async throws {
        var random = SystemRandomNumberGenerator()
        let noise = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &random) }
        let text = Array("This is not a photo, just a text file named holiday.jpg\n".utf8)
        for bytes in [noise, [], text, [0x00]] {
            let error = await #expect(throws: ImagingError.self) { try await imaging.render(bytes, versions: [.fit(300, 300)]) }
            #expect(error?.code == .unsupportedFormat)
            let probeError = await #expect(throws: ImagingError.self) { try await imaging.probe(bytes) }
            #expect(probeError?.code == .unsupportedFormat)
        }
        // A file name says nothing: a text file named .jpg is refused by its content.
        let dir = try TestServers.scratchDirectory()
        let path = dir.appendingPathComponent("holiday.jpg").path
        try Data(text).write(to: URL(fileURLWithPath: path))
        let fileError = await #expect(throws: ImagingError.self) { try await imaging.renderFile(path, versions: [.fit(300, 300)]) }
        #expect(fileError?.code == .unsupportedFormat)
        let missing = await #expect(throws: ImagingError.self) { try await imaging.probeFile(path + ".missing") }
        #expect(missing?.code == .io)
        // SVG is a format libvips may read, but Framecast does not accept it.
        let svg = Array(#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>"#.utf8)
        let svgError = await #expect(throws: ImagingError.self) { try await imaging.probe(svg) }
        #expect(svgError?.code == .unsupportedFormat)
    }

    @Test func invalidVersionsAreRefused() async throws {
        let bytes = try photo()
        for versions in [[], [VersionSpec.fit(0, 100)], [.cover(100, 100_000)], [.fit(10, 10, .jpeg(quality: 0))], [.fit(10, 10, .webp(quality: 80, effort: 9))]] {
            let error = await #expect(throws: ImagingError.self) { try await imaging.render(bytes, versions: versions) }
            #expect(error?.code == .invalidArgument)
        }
        let orientation = await #expect(throws: ImagingError.self) { try await imaging.withOrientation(bytes, orientation: 9) }
        #expect(orientation?.code == .invalidArgument)
    }

    // MARK: threads

    @Test func renderRunsOnThePoolThreads() async throws {
        let logs = CapturedLogs()
        let own = Imaging(threads: 2, logger: logs.logger)
        defer { own.shutdown() }
        _ = try await own.render(photo(), versions: [.fit(300, 300)])
        let threads = logs.metadata(of: "rendered versions").compactMap { $0["imaging.thread"] }
        #expect(threads.count == 1)
        // Shrink-on-load: a 300 px thumbnail decodes the 2560×1600 JPEG at 1/8 only.
        #expect(logs.metadata(of: "rendered versions").first?["imaging.decoded"] == "320x200")
        #expect(threads.allSatisfy { $0.hasPrefix("imaging-") }, "ran on \(threads)")
    }

    @Test func concurrentRendersOnTwoThreadsAllSucceed() async throws {
        let logs = CapturedLogs()
        let own = Imaging(threads: 2, logger: logs.logger)
        defer { own.shutdown() }
        let names = Photos.plasmaNames + Photos.plasmaNames
        let sizes = try await withThrowingTaskGroup(of: [String].self) { group in
            for name in names {
                let bytes = try photo(name)
                group.addTask { try await own.render(bytes, versions: standardVersions).map { "\($0.width)x\($0.height)" } }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(sizes.count == 8)
        #expect(sizes.allSatisfy { $0 == ["300x188", "1728x1080", "1024x600", "1080x1920"] })
        let threads = Set(logs.metadata(of: "rendered versions").compactMap { $0["imaging.thread"] })
        #expect(logs.metadata(of: "rendered versions").count == 8)
        #expect(threads.allSatisfy { $0.hasPrefix("imaging-") } && threads.count <= 2, "ran on \(threads)")
    }

    @Test func shutdownRefusesLaterWork() async throws {
        let own = Imaging(threads: 1, logger: Logger(label: "test"))
        own.shutdown()
        let error = await #expect(throws: ImagingError.self) { try await own.probe(photo()) }
        #expect(error?.code == .unavailable)
    }
}
