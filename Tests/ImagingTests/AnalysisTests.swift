import Foundation
import FramecastTesting
@testable import Imaging
import Testing

@Suite struct AnalysisTests {
    @Test func readsCameraAndTimeFromARealPhoto() async throws {
        let analysis = try await sharedImaging.analyzeFile(try Photos.plasma("FallenLeaf"))
        #expect(analysis.header.format == .jpeg)
        #expect((analysis.width, analysis.height) == (2560, 1600))
        #expect(analysis.cameraMake == "Canon")
        #expect(analysis.cameraModel == "Canon EOS 70D")
        // DateTimeOriginal 2015:10:29 15:44:44, no offset recorded: read as UTC.
        #expect(analysis.takenAt == Date(timeIntervalSince1970: 1_446_133_484))
        #expect(analysis.location == nil, "this photo carries no GPS")
        #expect(analysis.dominantColors.count == 3)
        #expect(Set(analysis.dominantColors.map(\.hex)).count == 3)
        #expect(analysis.dominantColors.map(\.share).reduce(0, +) <= 1.0001)
        #expect(zip(analysis.dominantColors, analysis.dominantColors.dropFirst()).allSatisfy { $0.share >= $1.share })
    }

    @Test func readsGPSFromARealPhoto() async throws {
        let analysis = try await sharedImaging.analyzeFile(try Photos.plasma("ColorfulCups"))
        #expect(analysis.cameraMake == "SONY")
        let location = try #require(analysis.location)
        // 56° 9.359705' N, 10° 12.492287' E
        #expect(abs(location.latitude - (56 + 9.359705 / 60)) < 1e-9)
        #expect(abs(location.longitude - (10 + 12.492287 / 60)) < 1e-9)
    }

    @Test func aPhotoWithoutEXIFHasNoneOfItsFields() async throws {
        // Rendered versions are stripped of metadata.
        let stripped = try await sharedImaging.render(try Photos.bytes(try Photos.plasma("Kite")),
                                                      versions: [.fit(1280, 800)])[0].bytes
        let analysis = try await sharedImaging.analyze(stripped)
        #expect((analysis.width, analysis.height) == (1280, 800))
        #expect(analysis.takenAt == nil && analysis.cameraMake == nil && analysis.cameraModel == nil && analysis.location == nil)
    }

    @Test func parsesEXIFStringsDefensively() {
        func location(_ lat: String, _ latRef: String, _ lon: String, _ lonRef: String) -> GeoLocation? {
            EXIF.location(["exif-ifd3-GPSLatitude": lat, "exif-ifd3-GPSLatitudeRef": latRef,
                           "exif-ifd3-GPSLongitude": lon, "exif-ifd3-GPSLongitudeRef": lonRef])
        }
        #expect(location("33/1 52/1 0/1 (33, 52,  0, Rational, 3 components, 24 bytes)", "S (S, ASCII, 2 components, 2 bytes)",
                         "151/1 12/1 36/1 (151, 12, 36, Rational, 3 components, 24 bytes)", "W (W, ASCII, 2 components, 2 bytes)")
                == GeoLocation(latitude: -(33 + 52.0 / 60), longitude: -(151 + 12.0 / 60 + 36.0 / 3600)))
        #expect(location("garbage", "N", "1/0 2/0 3/0", "E") == nil)
        #expect(location("95/1 0/1 0/1", "N", "1/1 0/1 0/1", "E") == nil)
        #expect(location("1/1 0/1 0/1", "X", "1/1 0/1 0/1", "E") == nil)
        #expect(EXIF.text("Adobe Photoshop Lightroom 5.7.1 (Windows) (Adobe Photoshop Lightroom 5.7.1 (Windows), ASCII, 42 components, 42 bytes)")
                == "Adobe Photoshop Lightroom 5.7.1 (Windows)")
        #expect(EXIF.date("2015:02:30 10:00:00", offset: nil) == nil, "no 30 February")
        #expect(EXIF.date("2015:10:29 15:44:44", offset: "+02:00") == Date(timeIntervalSince1970: 1_446_133_484 - 7200))
    }

    @Test func hashIsStableUnderReencodingAndRotationAndSeparatesPhotos() async throws {
        let kite = try Photos.bytes(try Photos.plasma("Kite"))
        let base = try await sharedImaging.analyze(kite).perceptualHash
        #expect(try await sharedImaging.analyze(kite).perceptualHash == base, "deterministic")

        let small = try await sharedImaging.render(kite, versions: [.fit(800, 800, .jpeg(quality: 40))])[0].bytes
        #expect(Imaging.hammingDistance(try await sharedImaging.analyze(small).perceptualHash, base) <= 6)

        let rotated = try await sharedImaging.withOrientation(kite, orientation: 6)
        let rotatedAnalysis = try await sharedImaging.analyze(rotated)
        #expect((rotatedAnalysis.width, rotatedAnalysis.height) == (2560, 1600), "upright dimensions")
        #expect(Imaging.hammingDistance(rotatedAnalysis.perceptualHash, base) <= 4)

        var hashes: [UInt64] = []
        for name in Photos.plasmaNames { hashes.append(try await sharedImaging.analyzeFile(try Photos.plasma(name)).perceptualHash) }
        for i in hashes.indices {
            for j in hashes.indices where j > i {
                #expect(Imaging.hammingDistance(hashes[i], hashes[j]) >= 16, "\(Photos.plasmaNames[i]) vs \(Photos.plasmaNames[j])")
            }
        }
    }

    @Test func aSolidImageHasOneColour() async throws {
        let width = 120, height = 80
        let row = [UInt8]((0..<width).flatMap { _ in [200, 40, 90] as [UInt8] })
        let png = PNGWriter.image(width: width, height: height, bitDepth: 8, colorType: 2,
                                  rows: Array(repeating: row, count: height))
        let analysis = try await sharedImaging.analyze(png)
        #expect(analysis.dominantColors.count == 1)
        let colour = try #require(analysis.dominantColors.first)
        #expect(abs(Int(colour.red) - 200) <= 2 && abs(Int(colour.green) - 40) <= 2 && abs(Int(colour.blue) - 90) <= 2)
        #expect(colour.share > 0.99)
    }

    @Test func refusesWhatRenderRefuses() async throws {
        let photo = try Photos.bytes(try Photos.plasma("FallenLeaf"))
        let truncated = await #expect(throws: ImagingError.self) { _ = try await sharedImaging.analyze(Array(photo.prefix(photo.count / 2))) }
        #expect(truncated?.code == .corrupt)
        let text = await #expect(throws: ImagingError.self) { _ = try await sharedImaging.analyze(Array("not an image".utf8)) }
        #expect(text?.code == .unsupportedFormat)
    }
}
