import Foundation
import Testing
@testable import Imaging

// The pure parts of analysis: EXIF string parsing, dominant colours, pHash (no libvips).
@Suite struct ExifParsingTests {
    @Test func valueIsTheRawPartOfLibvipsStrings() {
        #expect(Exif.value("Canon EOS 70D (Canon EOS 70D, ASCII, 14 components, 14 bytes)") == "Canon EOS 70D")
        // A value that itself contains " (".
        #expect(Exif.value("Cam (Pro) (Cam (Pro), ASCII, 10 components, 10 bytes)") == "Cam (Pro)")
        // Rationals: the description differs from the value.
        #expect(Exif.value("56/1 9359705/1000000 0/1 (56, 9.359705,  0, Rational, 3 components, 24 bytes)") == "56/1 9359705/1000000 0/1")
        #expect(Exif.value("plain") == "plain")
        #expect(Exif.text("                                ([None] (Photographer) - [None] (Editor), ASCII, 64 components, 64 bytes)") == nil)
        #expect(Exif.text("OLYMPUS DIGITAL CAMERA          (OLYMPUS DIGITAL CAMERA         , ASCII, 32 components, 32 bytes)") == "OLYMPUS DIGITAL CAMERA")
        #expect(Exif.text(" \0 ") == nil && Exif.text(nil) == nil && Exif.text("") == nil)
    }

    @Test func dates() {
        let raw = "2019:05:04 10:21:33 (2019:05:04 10:21:33, ASCII, 20 components, 20 bytes)"
        #expect(Exif.date(raw, offset: nil) == utc(2019, 5, 4, 10, 21, 33))
        #expect(Exif.date(raw, offset: "+02:00 (+02:00, ASCII, 7 components, 7 bytes)") == utc(2019, 5, 4, 8, 21, 33))
        #expect(Exif.date(raw, offset: "-05:30") == utc(2019, 5, 4, 15, 51, 33))
        #expect(Exif.date(raw, offset: "garbage") == utc(2019, 5, 4, 10, 21, 33), "a bad offset means UTC")
        #expect(Exif.date("2019-05-04T10:21:33", offset: nil) == utc(2019, 5, 4, 10, 21, 33))
        for bad in ["0000:00:00 00:00:00", "2019:02:30 10:00:00", "2019:13:01 10:00:00", "2019:05:04 25:00:00",
                    "2019:05:04", "", "    :  :     :  :  ", "abcd:ef:gh ij:kl:mn", "2019:05:04 10:21:3x"] {
            #expect(Exif.date(bad, offset: nil) == nil, "\(bad)")
        }
        #expect(Exif.utcOffset("+14:00") == 50400 && Exif.utcOffset("+15:00") == nil && Exif.utcOffset("+0200") == nil)
        // Fallback order: Original, Digitized, DateTime — the first that parses.
        #expect(Exif.takenAt([Exif.dateTimeOriginal: "bad", Exif.dateTimeDigitized: "2001:01:01 00:00:00",
                              Exif.dateTime: "2002:01:01 00:00:00"]) == utc(2001, 1, 1, 0, 0, 0))
        #expect(Exif.takenAt([Exif.dateTime: "2002:01:01 00:00:00", Exif.offsetTime: "+01:00",
                              Exif.offsetTimeOriginal: "+05:00"]) == utc(2001, 12, 31, 23, 0, 0))
        #expect(Exif.takenAt([:]) == nil)
    }

    @Test func rationalsAndCoordinates() {
        #expect(Exif.rationals("1/2 3/4 (x)") == [0.5, 0.75])
        #expect(Exif.rationals("-1/2") == [-0.5])
        #expect(Exif.rationals("1/0") == nil && Exif.rationals("a/b") == nil && Exif.rationals("") == nil
                && Exif.rationals("1/2/3") == nil && Exif.rationals(nil) == nil)
        #expect(Exif.coordinate("10/1 30/1 0/1", ref: "S", positive: "N", negative: "S", limit: 90) == -10.5)
        #expect(Exif.coordinate("10/1 30/1 0/1", ref: nil, positive: "N", negative: "S", limit: 90) == 10.5)
        #expect(Exif.coordinate("10/1 30/1 0/1", ref: "X", positive: "N", negative: "S", limit: 90) == nil)
        #expect(Exif.coordinate("91/1 0/1 0/1", ref: "N", positive: "N", negative: "S", limit: 90) == nil)
        #expect(Exif.coordinate("10/1 75/1 0/1", ref: "N", positive: "N", negative: "S", limit: 90) == nil)
        #expect(Exif.coordinate("-10/1 0/1 0/1", ref: "N", positive: "N", negative: "S", limit: 90) == nil)
        #expect(Exif.coordinate("1/1 2/1 3/1 4/1", ref: "N", positive: "N", negative: "S", limit: 90) == nil)
    }

    @Test func locations() {
        let sydney = Exif.location([Exif.gpsLatitude: "33/1 51/1 0/1", Exif.gpsLatitudeRef: "S (S, ASCII, 2 components, 2 bytes)",
                                    Exif.gpsLongitude: "151/1 12/1 0/1", Exif.gpsLongitudeRef: "E",
                                    Exif.gpsAltitude: "5/1", Exif.gpsAltitudeRef: "Sea level reference (Sea level reference, Byte, 1 components, 1 bytes)"])
        #expect(sydney == GeoLocation(latitude: -(33 + 51.0 / 60), longitude: 151.2, altitude: -5))
        // 0/0 without references is a placeholder; with references it is a position.
        #expect(Exif.location([Exif.gpsLatitude: "0/1 0/1 0/1", Exif.gpsLongitude: "0/1 0/1 0/1"]) == nil)
        #expect(Exif.location([Exif.gpsLatitude: "0/1", Exif.gpsLatitudeRef: "N", Exif.gpsLongitude: "0/1", Exif.gpsLongitudeRef: "E"])
                == GeoLocation(latitude: 0, longitude: 0))
        // One half missing or out of range.
        #expect(Exif.location([Exif.gpsLatitude: "10/1"]) == nil)
        #expect(Exif.location([Exif.gpsLatitude: "10/1", Exif.gpsLongitude: "181/1"]) == nil)
        // A bad altitude drops only the altitude.
        #expect(Exif.location([Exif.gpsLatitude: "10/1", Exif.gpsLongitude: "20/1", Exif.gpsAltitude: "1/0"])
                == GeoLocation(latitude: 10, longitude: 20, altitude: nil))
        #expect(Exif.altitude([Exif.gpsAltitude: "100/1", Exif.gpsAltitudeRef: "0"]) == 100)
        #expect(Exif.altitude([Exif.gpsAltitude: "100/1", Exif.gpsAltitudeRef: "1"]) == -100)
    }
}

@Suite struct PixelStatisticsTests {
    @Test func twoColourImage() {
        // 75 % red, 25 % blue.
        let pixels: [UInt8] = (0..<400).flatMap { i -> [UInt8] in i < 300 ? [250, 10, 10] : [10, 10, 250] }
        let colours = PixelStatistics.dominantColors(rgb: pixels)
        #expect(colours.map(\.hex) == ["#fa0a0a", "#0a0afa"])
        #expect(colours.map(\.share) == [0.75, 0.25])
    }

    @Test func nearShadesMerge() {
        // Two shades of grey 10 apart are one colour; black is another.
        let pixels: [UInt8] = (0..<300).flatMap { i -> [UInt8] in
            i < 100 ? [120, 120, 120] : i < 200 ? [130, 130, 130] : [0, 0, 0]
        }
        let colours = PixelStatistics.dominantColors(rgb: pixels)
        #expect(colours.count == 2)
        #expect(colours[0].hex == "#7d7d7d" && abs(colours[0].share - 2.0 / 3) < 1e-9)
        #expect(colours[1].hex == "#000000")
        #expect(PixelStatistics.dominantColors(rgb: []) == [])
    }

    @Test func hashOfPatterns() {
        func image(_ value: (Int, Int) -> UInt8) -> [UInt8] {
            (0..<32).flatMap { y in (0..<32).flatMap { x in Array(repeating: value(x, y), count: 3) } }
        }
        // 8×8 blocks of pseudo-random grey (energy at every low frequency), and the same
        // picture with less contrast and lighter, mirrored, turned.
        var seed: UInt32 = 12345
        let blocks: [Double] = (0..<64).map { _ in
            seed = seed &* 1_103_515_245 &+ 12345
            return Double((seed >> 16) % 200) - 100
        }
        let wave: (Int, Int) -> Double = { x, y in blocks[(y / 4) * 8 + x / 4] }
        let pattern = PixelStatistics.perceptualHash(rgb32: image { x, y in UInt8((128 + wave(x, y)).rounded()) })
        let flatter = PixelStatistics.perceptualHash(rgb32: image { x, y in UInt8((150 + 0.7 * wave(x, y)).rounded()) })
        let mirrored = PixelStatistics.perceptualHash(rgb32: image { x, y in UInt8((128 + wave(31 - x, y)).rounded()) })
        let turned = PixelStatistics.perceptualHash(rgb32: image { x, y in UInt8((128 + wave(y, x)).rounded()) })
        #expect(pattern == PixelStatistics.perceptualHash(rgb32: image { x, y in UInt8((128 + wave(x, y)).rounded()) }))
        #expect(Imaging.hammingDistance(pattern, flatter) <= 2)
        #expect(Imaging.hammingDistance(pattern, mirrored) >= 16)
        #expect(Imaging.hammingDistance(pattern, turned) >= 16)
        #expect(Imaging.hammingDistance(0, .max) == 64 && Imaging.hammingDistance(0b1011, 0b0001) == 2)
    }
}
