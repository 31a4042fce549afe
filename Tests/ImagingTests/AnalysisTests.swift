import Foundation
import FramecastTesting
import Logging
import Testing
@testable import Imaging

/// A UTC date from its calendar fields.
func utc(_ year: Int, _ month: Int, _ day: Int, _ hour: Int, _ minute: Int, _ second: Int) -> Date {
    var calendar = Calendar(identifier: .gregorian)
    calendar.timeZone = TimeZone(secondsFromGMT: 0)!
    return calendar.date(from: DateComponents(year: year, month: month, day: day, hour: hour, minute: minute, second: second))!
}

// analyze() on the real plasma photos (EXIF values as `vipsheader -a` shows them) and on
// copies made from them with libvips.
@Suite struct AnalysisTests {
    let imaging = sharedImaging

    struct Expected: Sendable {
        var name: String, make: String, model: String, takenAt: Date
    }

    static let cameras = [
        Expected(name: "FallenLeaf", make: "Canon", model: "Canon EOS 70D", takenAt: utc(2015, 10, 29, 15, 44, 44)),
        Expected(name: "BytheWater", make: "Nokia", model: "N9", takenAt: utc(2015, 4, 29, 14, 33, 31)),
        Expected(name: "Kite", make: "OLYMPUS IMAGING CORP.", model: "E-M1", takenAt: utc(2015, 7, 21, 16, 17, 44)),
        Expected(name: "ColorfulCups", make: "SONY", model: "NEX-3N", takenAt: utc(2014, 4, 29, 14, 25, 26)),
    ]

    @Test(arguments: cameras)
    func realPhotoCarriesItsExif(_ expected: Expected) async throws {
        let analysis = try await imaging.analyze(photo(expected.name))
        #expect(analysis.header == ImageHeader(format: .jpeg, width: 2560, height: 1600))
        #expect(analysis.width == 2560 && analysis.height == 1600)
        #expect(analysis.cameraMake == expected.make)
        #expect(analysis.cameraModel == expected.model)
        #expect(analysis.takenAt == expected.takenAt)
        // Only ColorfulCups carries GPS (tested below).
        #expect((analysis.location != nil) == (expected.name == "ColorfulCups"))

        let colours = analysis.dominantColors
        #expect(colours.count == 3, "\(colours)")
        #expect(Set(colours.map(\.hex)).count == colours.count)
        #expect(colours.allSatisfy { $0.share > 0.02 && $0.share <= 1 })
        #expect(colours.map(\.share).reduce(0, +) <= 1.000001)
        #expect(zip(colours, colours.dropFirst()).allSatisfy { $0.share >= $1.share }, "most dominant first")
        #expect(colours.allSatisfy { $0.hex.count == 7 && $0.hex.hasPrefix("#") })
        // Colours are really apart.
        for (i, a) in colours.enumerated() {
            for b in colours.dropFirst(i + 1) {
                let d = (pow(Double(a.red) - Double(b.red), 2) + pow(Double(a.green) - Double(b.green), 2) + pow(Double(a.blue) - Double(b.blue), 2)).squareRoot()
                #expect(d >= 30, "\(a.hex) and \(b.hex) are too close")
            }
        }
    }

    @Test func realGPSOfColorfulCups() async throws {
        // exif-ifd3-GPSLatitude: 56/1 9359705/1000000 0/1, N; longitude 10/1 12492287/1000000 0/1, E.
        let analysis = try await imaging.analyzeFile(Photos.plasma("ColorfulCups"))
        let location = try #require(analysis.location)
        #expect(abs(location.latitude - (56 + 9.359705 / 60)) < 1e-9)
        #expect(abs(location.longitude - (10 + 12.492287 / 60)) < 1e-9)
        #expect(location.altitude == nil)
        // The same photo as PNG, HEIC and WebP: libvips keeps the EXIF blob and parses it
        // back into the same fields.
        for target in [ConvertTarget.png, .heif(quality: 50), .webp(quality: 80)] {
            let converted = try await imaging.convert(photo("ColorfulCups"), to: target)
            let analysis = try await imaging.analyze(converted)
            #expect(analysis.header.format == target.format)
            #expect(analysis.cameraModel == "NEX-3N" && analysis.takenAt == utc(2014, 4, 29, 14, 25, 26), "\(target)")
            #expect(analysis.location == location, "\(target)")
        }
    }

    @Test func dominantColoursOfFallenLeafAreItsColours() async throws {
        let analysis = try await imaging.analyze(photo("FallenLeaf"))
        // Each dominant colour is a real colour of the photo: a good part of its pixels lie
        // near it (RGB distance < 50), in line with its share.
        let pixels = try await imaging.pixels(photo("FallenLeaf"), width: 64, height: 40)
        for colour in analysis.dominantColors {
            var near = 0
            for i in 0..<(pixels.rgb.count / 3) {
                let dr = Double(pixels.rgb[3 * i]) - Double(colour.red)
                let dg = Double(pixels.rgb[3 * i + 1]) - Double(colour.green)
                let db = Double(pixels.rgb[3 * i + 2]) - Double(colour.blue)
                if (dr * dr + dg * dg + db * db).squareRoot() < 50 { near += 1 }
            }
            let fraction = Double(near) / Double(pixels.width * pixels.height)
            #expect(fraction >= colour.share * 0.8, "\(colour.hex): \(fraction) of pixels near it, share \(colour.share)")
        }
        let total = analysis.dominantColors.map(\.share).reduce(0, +)
        #expect(total > 0.3 && total <= 1, "the top three cover a good part of the picture: \(total)")
    }

    @Test func photoWithoutExifHasNoExifFields() async throws {
        // A rendered version is stripped of metadata; as JPEG and as PNG.
        let stripped = try await imaging.render(photo("ColorfulCups"), versions: [.fit(1280, 800)])[0].bytes
        let png = try await imaging.convert(stripped, to: .png)
        for bytes in [stripped, png] {
            let analysis = try await imaging.analyze(bytes)
            #expect(analysis.width == 1280 && analysis.height == 800)
            #expect(analysis.takenAt == nil && analysis.cameraMake == nil && analysis.cameraModel == nil)
            #expect(analysis.location == nil)
            #expect(analysis.dominantColors.count == 3)
        }
    }

    @Test func southWestGPSWrittenByLibvips() async throws {
        // Sydney Opera House: 33°51'25.2" S, 151°12'54" E … here written as W to check signs.
        let fields = [
            "exif-ifd3-GPSLatitudeRef": "S",
            "exif-ifd3-GPSLatitude": "33/1 51/1 252/10",
            "exif-ifd3-GPSLongitudeRef": "W",
            "exif-ifd3-GPSLongitude": "151/1 12/1 54/1",
            "exif-ifd3-GPSAltitude": "58/2",
        ]
        let jpeg = try await imaging.withExifStrings(photo("FallenLeaf"), fields)
        let analysis = try await imaging.analyze(jpeg)
        let location = try #require(analysis.location)
        #expect(abs(location.latitude - -(33 + 51.0 / 60 + 25.2 / 3600)) < 1e-9)
        #expect(abs(location.longitude - -(151 + 12.0 / 60 + 54.0 / 3600)) < 1e-9)
        #expect(location.altitude == 29)
        // The rest of the EXIF survived the rewrite.
        #expect(analysis.cameraModel == "Canon EOS 70D")
        #expect(analysis.takenAt == utc(2015, 10, 29, 15, 44, 44))

        // Below sea level: GPSAltitudeRef (a BYTE) 1. libvips 8.14 cannot write a BYTE
        // from a string (it writes the entry as 0, "Sea level"), so the byte is patched.
        var below = fields
        below["exif-ifd3-GPSAltitudeRef"] = "1"
        let belowBytes = try #require(patchExifEntry(try await imaging.withExifStrings(photo("FallenLeaf"), below),
                                                     tag: 0x0005, type: 1, from: 0, to: 1))
        let belowSea = try await imaging.analyze(belowBytes)
        #expect(belowSea.location?.altitude == -29)
    }

    // libvips writes these strings into the saved EXIF as given (checked with vipsheader -a).
    @Test func offsetTimeAndGarbageExifWrittenByLibvips() async throws {
        let withOffset = try await imaging.withExifStrings(photo("FallenLeaf"), [
            "exif-ifd2-OffsetTimeOriginal": "+02:00",
        ])
        let offset = try await imaging.analyze(withOffset)
        #expect(offset.takenAt == utc(2015, 10, 29, 13, 44, 44))

        let garbage = try await imaging.withExifStrings(photo("FallenLeaf"), [
            "exif-ifd0-Make": "   ",
            "exif-ifd2-DateTimeOriginal": "garbage garbage",
            "exif-ifd2-DateTimeDigitized": "2015:02:30 10:00:00",
            "exif-ifd0-DateTime": "0000:00:00 00:00:00",
            "exif-ifd3-GPSLatitude": "1/0 2/0 3/0",
            "exif-ifd3-GPSLongitude": "10/1 0/1 0/1",
        ])
        let analysis = try await imaging.analyze(garbage)
        #expect(analysis.cameraMake == nil)
        #expect(analysis.cameraModel == "Canon EOS 70D")
        #expect(analysis.takenAt == nil)
        #expect(analysis.location == nil)
        #expect(analysis.dominantColors.count == 3)
    }

    @Test func orientationSixIsUprightAndHashesLikeTheOriginal() async throws {
        let upright = try await imaging.analyze(photo("FallenLeaf"))
        let rotated = try await imaging.analyze(imaging.withOrientation(photo("FallenLeaf"), orientation: 6))
        #expect(rotated.header.orientation == 6)
        #expect(rotated.header.width == 1600 && rotated.header.height == 2560)
        #expect(rotated.width == 2560 && rotated.height == 1600)
        let distance = Imaging.hammingDistance(upright.perceptualHash, rotated.perceptualHash)
        #expect(distance <= 4, "distance \(distance)")
        // The same stored pixels with the tag patched to 1 show the photo sideways: the hash
        // is of the upright image, not of the stored pixels.
        let tagged = try await imaging.withOrientation(photo("FallenLeaf"), orientation: 6)
        let untagged = try #require(patchOrientation(tagged, from: 6, to: 1))
        let sideways = try await imaging.analyze(untagged)
        #expect(sideways.header.orientation == 1 && sideways.width == 1600 && sideways.height == 2560)
        let sidewaysDistance = Imaging.hammingDistance(sideways.perceptualHash, upright.perceptualHash)
        #expect(sidewaysDistance >= 16, "distance \(sidewaysDistance)")
    }

    /// Rewrites the EXIF Orientation entry (tag 0x0112, SHORT) of a JPEG in place.
    func patchOrientation(_ jpeg: [UInt8], from: UInt8, to: UInt8) -> [UInt8]? {
        patchExifEntry(jpeg, tag: 0x0112, type: 3, from: from, to: to)
    }

    @Test(arguments: Photos.plasmaNames)
    func hashSurvivesReencodingAndResizing(_ name: String) async throws {
        let original = try photo(name)
        let reference = try await imaging.analyze(original)
        let again = try await imaging.analyze(original)
        #expect(again == reference, "deterministic")
        let copies = try await imaging.render(original, versions: [.fit(800, 800, .jpeg(quality: 40)), .fit(1920, 1080, .webp(quality: 60)), .cover(2000, 1250)])
        var distances: [Int] = []
        for copy in copies {
            let analysis = try await imaging.analyze(copy.bytes)
            let distance = Imaging.hammingDistance(reference.perceptualHash, analysis.perceptualHash)
            distances.append(distance)
            #expect(distance <= 6, "\(name) → \(copy.width)x\(copy.height): distance \(distance)")
        }
        let heic = try await imaging.analyze(imaging.convert(original, to: .heif(quality: 50)))
        let heicDistance = Imaging.hammingDistance(reference.perceptualHash, heic.perceptualHash)
        #expect(heicDistance <= 6)
        print("pHash \(name): copies differ by \(distances + [heicDistance]) bits")
    }

    @Test func differentPhotosHashFarApart() async throws {
        var hashes: [(String, UInt64)] = []
        for name in Photos.plasmaNames {
            hashes.append((name, try await imaging.analyze(photo(name)).perceptualHash))
        }
        for path in Photos.mateNature().prefix(4) {
            hashes.append((path, try await imaging.analyzeFile(path).perceptualHash))
        }
        #expect(hashes.count >= 6)
        var distances: [Int] = []
        for (i, a) in hashes.enumerated() {
            for b in hashes.dropFirst(i + 1) {
                let distance = Imaging.hammingDistance(a.1, b.1)
                distances.append(distance)
                #expect(distance >= 16, "\(a.0) vs \(b.0): \(distance)")
            }
        }
        print("pHash: \(distances.count) pairs of different photos differ by \(distances.min() ?? 0)...\(distances.max() ?? 0) bits")
    }

    @Test func solidColourHasOneDominantColour() async throws {
        let row: [UInt8] = (0..<64).flatMap { _ -> [UInt8] in [200, 40, 90] }
        let png = PNGWriter.image(width: 64, height: 48, bitDepth: 8, colorType: 2, rows: Array(repeating: row, count: 48))
        let analysis = try await imaging.analyze(png)
        #expect(analysis.header.format == .png && analysis.width == 64 && analysis.height == 48)
        #expect(analysis.dominantColors.count == 1, "\(analysis.dominantColors)")
        let colour = try #require(analysis.dominantColors.first)
        #expect(abs(Int(colour.red) - 200) <= 2 && abs(Int(colour.green) - 40) <= 2 && abs(Int(colour.blue) - 90) <= 2)
        #expect(abs(colour.share - 1) < 1e-9)
        #expect(analysis.takenAt == nil && analysis.cameraMake == nil && analysis.location == nil)
    }

    @Test func extremeShapesAreAnalysed() async throws {
        // 1×1, a 2000×2 strip and a 2×2000 column: the 64×64 and 32×32 resizes still work.
        let dot = PNGWriter.image(width: 1, height: 1, bitDepth: 8, colorType: 2, rows: [[10, 200, 30]])
        let strip = PNGWriter.image(width: 2000, height: 2, bitDepth: 8, colorType: 0,
                                    rows: Array(repeating: (0..<2000).map { UInt8($0 % 256) }, count: 2))
        let column = PNGWriter.image(width: 2, height: 2000, bitDepth: 8, colorType: 0,
                                     rows: (0..<2000).map { y in [UInt8(y % 256), UInt8(y % 256)] })
        let a = try await imaging.analyze(dot)
        #expect(a.width == 1 && a.height == 1 && a.dominantColors.count == 1)
        #expect(a.dominantColors.first.map { abs(Int($0.green) - 200) <= 2 && $0.share == 1 } == true)
        let b = try await imaging.analyze(strip)
        #expect(b.width == 2000 && b.height == 2 && !b.dominantColors.isEmpty)
        let c = try await imaging.analyze(column)
        #expect(c.width == 2 && c.height == 2000 && !c.dominantColors.isEmpty)
    }

    @Test func badInputsFailLikeRender() async throws {
        let bomb = PNGWriter.bomb(width: 30000, height: 30000)
        let bombError = await #expect(throws: ImagingError.self) { try await imaging.analyze(bomb) }
        #expect(bombError?.code == .tooLarge)

        let full = try photo("FallenLeaf")
        let half = Array(full.prefix(full.count / 2))
        let truncated = await #expect(throws: ImagingError.self) { try await imaging.analyze(half) }
        #expect(truncated?.code == .corrupt)

        var random = SystemRandomNumberGenerator()
        let noise = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &random) }
        for bytes in [noise, [], Array("not a photo".utf8)] {
            let error = await #expect(throws: ImagingError.self) { try await imaging.analyze(bytes) }
            #expect(error?.code == .unsupportedFormat)
        }

        let small = Imaging(threads: 1, limits: ImagingLimits(maxBytes: 100_000), logger: Logger(label: "test"))
        defer { small.shutdown() }
        let bytesError = await #expect(throws: ImagingError.self) { try await small.analyze(full) }
        #expect(bytesError?.code == .tooLarge)
        let fileError = await #expect(throws: ImagingError.self) { try await small.analyzeFile(Photos.plasma("Kite")) }
        #expect(fileError?.code == .tooLarge)
        let missing = await #expect(throws: ImagingError.self) { try await imaging.analyzeFile("/nonexistent/photo.jpg") }
        #expect(missing?.code == .io)
    }

    @Test func timePerAnalysis() async throws {
        // Not asserted (the machine is shared): printed for the record, and the debug log
        // shows the phases and that the work ran on the pool's threads.
        let logs = CapturedLogs()
        let own = Imaging(threads: 1, logger: logs.logger)
        defer { own.shutdown() }
        let clock = ContinuousClock()
        for name in ["FallenLeaf", "ColorfulCups"] {
            let bytes = try photo(name)
            _ = try await own.analyze(bytes)
            let runs = 5
            let elapsed = try await clock.measure { for _ in 0..<runs { _ = try await own.analyze(bytes) } }
            print("analysis of \(name) 2560×1600 JPEG: \(elapsed / runs) (debug build)")
        }
        let records = logs.metadata(of: "analysed image")
        #expect(records.count == 12)
        #expect(records.allSatisfy { $0["imaging.thread"]?.hasPrefix("imaging-") == true })
        // One decode, shrunk on load to fit 256×256.
        #expect(records.allSatisfy { $0["imaging.decoded"] == "256x160" })
        print(records.map { "decode \($0["imaging.decode_ms"] ?? "?") ms, colours \($0["imaging.colours_ms"] ?? "?") ms, hash \($0["imaging.hash_ms"] ?? "?") ms" }.joined(separator: "\n"))
    }
}

/// Rewrites the one-component value of an IFD entry (`tag`, `type` 1 BYTE or 3 SHORT,
/// count 1) inside the JPEG's EXIF APP1 segment, in either byte order; nil when not found.
func patchExifEntry(_ jpeg: [UInt8], tag: UInt16, type: UInt16, from: UInt8, to: UInt8) -> [UInt8]? {
    // Find the APP1 "Exif\0\0" segment: markers FF xx with a big-endian length.
    var i = 2
    var segment: Range<Int>?
    while i + 4 <= jpeg.count, jpeg[i] == 0xFF {
        let length = Int(jpeg[i + 2]) << 8 | Int(jpeg[i + 3])
        if jpeg[i + 1] == 0xE1, i + 10 <= jpeg.count, Array(jpeg[(i + 4)..<(i + 10)]) == Array("Exif\0\0".utf8) {
            segment = (i + 4)..<min(jpeg.count, i + 2 + length)
            break
        }
        i += 2 + length
    }
    guard let segment else { return nil }
    let t = [UInt8(tag >> 8), UInt8(tag & 0xFF)], k = [UInt8(type >> 8), UInt8(type & 0xFF)]
    // BYTE values sit in the first byte of the value field; SHORT in the first two.
    let bigValue: [UInt8] = type == 1 ? [from] : [0, from]
    let big = t + k + [0, 0, 0, 1] + bigValue
    let little = [t[1], t[0], k[1], k[0], 1, 0, 0, 0, from]
    for (pattern, offset) in [(big, big.count - 1), (little, 8)] {
        var j = segment.lowerBound
        while j + pattern.count <= segment.upperBound {
            if Array(jpeg[j..<(j + pattern.count)]) == pattern {
                var patched = jpeg
                patched[j + offset] = to
                return patched
            }
            j += 1
        }
    }
    return nil
}
