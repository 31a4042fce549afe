import CResample
import CVipsShim
import Foundation
import FramecastTesting
import Testing
@testable import Imaging

/// Issue 14: every resize of a version goes through CResample. Its SIMD loops must give the
/// scalar loop's bytes, its filter libvips' Lanczos-3 (what versions were made with before),
/// and its streaming path (a decode resized while it is read) the in-memory path's bytes.
@Suite struct ResampleTests {
    /// Decoded pixels of a real photograph (upright as stored, 3 bands), once.
    static let decoded: (width: Int, height: Int, rgb: [UInt8]) = {
        precondition(vipsStartupFailure == nil, "libvips did not start")
        let image = try! Imaging.withInput(try! photo("BytheWater")) { try Imaging.loadWhole($0) }
        return (image.width, image.height, try! image.pixelBytes())
    }()

    /// `bands` samples per pixel taken from the photo's RGB (1: red; 2: red, green; 4: RGB and
    /// blue again), `width`×`height` from its top-left corner.
    static func pixels(bands: Int, width: Int, height: Int) -> [UInt8] {
        let source = decoded
        var out = [UInt8](repeating: 0, count: width * height * bands)
        for y in 0..<height {
            for x in 0..<width {
                let s = (y * source.width + x) * 3
                for b in 0..<bands { out[(y * width + x) * bands + b] = source.rgb[s + (b < 3 ? b : 2)] }
            }
        }
        return out
    }

    static func resample(_ input: [UInt8], _ width: Int, _ height: Int, to outWidth: Int, _ outHeight: Int,
                         bands: Int, simd: Int32) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: outWidth * outHeight * bands)
        let status = input.withUnsafeBufferPointer { source in
            out.withUnsafeMutableBufferPointer { target in
                fc_resample_u8(source.baseAddress, width * bands, Int32(width), Int32(height),
                               target.baseAddress, outWidth * bands, Int32(outWidth), Int32(outHeight), Int32(bands), simd)
            }
        }
        return status == 0 ? out : nil
    }

    static let sizePairs: [(from: (Int, Int), to: (Int, Int))] = [
        ((1280, 800), (864, 540)),     // hd-like shrink by 1.48
        ((1280, 800), (150, 94)),      // thumbnail-like shrink by 8.5
        ((1280, 800), (1280, 400)),    // one axis only
        ((1280, 800), (1000, 800)),
        ((301, 203), (97, 61)),        // odd sizes
        ((97, 61), (301, 203)),        // enlarging
        ((640, 400), (1, 1)),
        ((1, 1), (5, 3)),
        ((3, 2), (2, 7)),
        ((640, 400), (640, 400)),      // copied
    ]

    @Test(arguments: 1...4)
    func simdLoopsGiveTheScalarLoopsBytes(_ bands: Int) throws {
        #expect(fc_resample_simd_level() >= 1, "this machine's CPU has SSE4.1")
        for pair in Self.sizePairs {
            let input = Self.pixels(bands: bands, width: pair.from.0, height: pair.from.1)
            let scalar = try #require(Self.resample(input, pair.from.0, pair.from.1, to: pair.to.0, pair.to.1, bands: bands, simd: 0))
            for level in 1...fc_resample_simd_level() {
                let simd = Self.resample(input, pair.from.0, pair.from.1, to: pair.to.0, pair.to.1, bands: bands, simd: level)
                #expect(simd == scalar, "\(bands) bands, \(pair.from) → \(pair.to), SIMD level \(level)")
            }
        }
    }

    @Test func flatColourStaysExactlyFlat() throws {
        let colour: [UInt8] = [12, 200, 255, 0]
        for bands in 1...4 {
            let input = (0..<(333 * 217)).flatMap { _ in colour.prefix(bands) }
            for to in [(100, 66), (1000, 651), (7, 3)] {
                let out = try #require(Self.resample(input, 333, 217, to: to.0, to.1, bands: bands, simd: 2))
                let expected = (0..<(to.0 * to.1)).flatMap { _ in colour.prefix(bands) }
                #expect(out == expected, "\(bands) bands to \(to)")
            }
        }
    }

    @Test func badArgumentsAreRefused() {
        let input = [UInt8](repeating: 0, count: 16 * 16 * 3)
        #expect(Self.resample(input, 16, 16, to: 8, 8, bands: 5, simd: 2) == nil)
        #expect(Self.resample(input, 16, 16, to: 8, 8, bands: 0, simd: 2) == nil)
        var out = [UInt8](repeating: 0, count: 64)
        let status = input.withUnsafeBufferPointer { source in
            out.withUnsafeMutableBufferPointer { target in
                // A stride shorter than a row.
                fc_resample_u8(source.baseAddress, 10, 16, 16, target.baseAddress, 24, 8, 8, 3, 2)
            }
        }
        #expect(status == -1)
    }

    /// PSNR in dB of two equal-length byte arrays (99 when equal).
    static func psnr(_ a: [UInt8], _ b: [UInt8]) -> Double {
        precondition(a.count == b.count)
        var sum = 0.0
        for i in a.indices {
            let d = Double(a[i]) - Double(b[i])
            sum += d * d
        }
        let mse = sum / Double(a.count)
        return mse == 0 ? 99 : 10 * log10(255 * 255 / mse)
    }

    @Test func shrinkingMatchesLibvipsLanczos3() throws {
        // What the versions were made with before: libvips' vips_resize (Lanczos-3).
        let whole = try Imaging.withInput(try photo("BytheWater")) { try Imaging.loadWhole($0) }
        for (width, height) in [(1728, 1080), (1280, 800), (300, 188), (512, 320)] {
            let ours = try whole.resized(width: width, height: height)
            let hscale = Double(width) / Double(whole.width), vscale = Double(height) / Double(whole.height)
            let theirs = try whole.apply(.processingFailed, "vips_resize") { fc_resize($0, $1, hscale, vscale) }
            #expect(ours.width == width && ours.height == height && theirs.width == width && theirs.height == height)
            let db = Self.psnr(try ours.pixelBytes(), try theirs.pixelBytes())
            #expect(db > 45, "\(width)x\(height): \(db) dB against vips_resize")
        }
    }

    @Test func aDecodeResizedWhileReadGivesTheInMemoryBytes() throws {
        // The base of a render: the sequential decode is read strip by strip by the resize.
        let bytes = try photo("ColorfulCups")
        try Imaging.withInput(bytes) { input in
            let whole = try Imaging.loadWhole(input)
            for (width, height) in [(1728, 1080), (333, 211)] {
                // A sequential decode is read once: a new one for each resize.
                guard let lazy = fc_load_buffer(input.baseAddress, input.count, 1, 0, 0) else {
                    throw vipsError(.corrupt, "opening the photo")
                }
                let a = try VImage(owning: lazy).resized(width: width, height: height)
                let b = try whole.resized(width: width, height: height)
                #expect(try a.pixelBytes() == b.pixelBytes(), "\(width)x\(height)")
            }
        }
    }

    @Test func aRegionIsResizedAsIfCutOutFirst() throws {
        let whole = try Imaging.withInput(try photo("Kite")) { try Imaging.loadWhole($0) }
        let crop = Imaging.Crop(left: 101, top: 57, width: 900, height: 600)
        let direct = try whole.resampled(crop, width: 450, height: 300)
        let cut = try whole.extracted(left: crop.left, top: crop.top, width: crop.width, height: crop.height).materialised()
        let viaCut = try cut.resized(width: 450, height: 300)
        #expect(try direct.pixelBytes() == viaCut.pixelBytes())
        #expect(throws: ImagingError.self) {
            try whole.resampled(Imaging.Crop(left: whole.width - 10, top: 0, width: 20, height: 20), width: 5, height: 5)
        }
    }
}
