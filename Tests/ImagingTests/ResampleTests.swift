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

    /// The SIMD levels this CPU runs (none on a CPU without SSE4.1).
    static var simdLevels: [Int32] { Array(stride(from: 1, through: fc_resample_simd_level(), by: 1)) }

    @Test(arguments: 1...4)
    func simdLoopsGiveTheScalarLoopsBytes(_ bands: Int) throws {
        #if arch(x86_64)
        #expect(fc_resample_simd_level() >= 1, "an x86-64 CPU of this century has SSE4.1")
        #endif
        for pair in Self.sizePairs {
            let input = Self.pixels(bands: bands, width: pair.from.0, height: pair.from.1)
            let scalar = try #require(Self.resample(input, pair.from.0, pair.from.1, to: pair.to.0, pair.to.1, bands: bands, simd: 0))
            for level in Self.simdLevels + [-1, 7] {
                let simd = Self.resample(input, pair.from.0, pair.from.1, to: pair.to.0, pair.to.1, bands: bands, simd: level)
                #expect(simd == scalar, "\(bands) bands, \(pair.from) → \(pair.to), SIMD level \(level)")
            }
        }
    }

    /// Lanczos-3 in double precision, straight from its definition (no tables, no fixed point):
    /// what each output sample should be before rounding.
    static func reference(_ input: [UInt8], _ width: Int, _ height: Int, to outWidth: Int, _ outHeight: Int,
                          bands: Int) -> [Double] {
        func lanczos3(_ x: Double) -> Double {
            if abs(x) < 1e-9 { return 1 }
            if abs(x) >= 3 { return 0 }
            return 3 * sin(.pi * x) * sin(.pi * x / 3) / (.pi * x * .pi * x)
        }
        func weights(_ inSize: Int, _ outSize: Int) -> [(first: Int, w: [Double])] {
            let scale = Double(inSize) / Double(outSize), filterScale = max(scale, 1), support = 3 * filterScale
            return (0..<outSize).map { i in
                let centre = (Double(i) + 0.5) * scale
                let lo = max(0, Int(floor(centre - support + 0.5))), hi = min(inSize, Int(floor(centre + support + 0.5)))
                let w = (lo..<hi).map { lanczos3((Double($0) - centre + 0.5) / filterScale) }
                let sum = w.reduce(0, +)
                return (lo, w.map { $0 / sum })
            }
        }
        let rows = weights(height, outHeight), cols = weights(width, outWidth)
        var out = [Double](repeating: 0, count: outWidth * outHeight * bands)
        for y in 0..<outHeight {
            for x in 0..<outWidth {
                for b in 0..<bands {
                    var v = 0.0
                    for (j, wy) in rows[y].w.enumerated() {
                        for (i, wx) in cols[x].w.enumerated() {
                            v += wy * wx * Double(input[((rows[y].first + j) * width + cols[x].first + i) * bands + b])
                        }
                    }
                    out[(y * outWidth + x) * bands + b] = min(255, max(0, v))
                }
            }
        }
        return out
    }

    @Test func outputFollowsTheLanczos3Definition() throws {
        // Shrinking, enlarging, one axis, a window wider than the picture: within the rounding
        // of the one 8-bit step between the two passes.
        for (from, to) in [((160, 100), (67, 43)), ((160, 100), (31, 19)), ((29, 23), (71, 47)),
                           ((160, 100), (160, 37)), ((5, 4), (3, 9)), ((160, 100), (2, 1))] {
            let input = Self.pixels(bands: 3, width: from.0, height: from.1)
            let expected = Self.reference(input, from.0, from.1, to: to.0, to.1, bands: 3)
            for level in [0] + Self.simdLevels {
                let out = try #require(Self.resample(input, from.0, from.1, to: to.0, to.1, bands: 3, simd: level))
                let differences = zip(out, expected).map { abs(Double($0) - $1) }
                let worst = differences.max() ?? 0, mean = differences.reduce(0, +) / Double(differences.count)
                #expect(worst <= 2 && mean < 0.5, "\(from) → \(to), level \(level): worst \(worst), mean \(mean)")
            }
        }
    }

    @Test func flatColourStaysExactlyFlat() throws {
        let colour: [UInt8] = [12, 200, 255, 0]
        for bands in 1...4 {
            let input = (0..<(333 * 217)).flatMap { _ in colour.prefix(bands) }
            for to in [(100, 66), (1000, 651), (7, 3)] {
                for level in [0] + Self.simdLevels {
                    let out = try #require(Self.resample(input, 333, 217, to: to.0, to.1, bands: bands, simd: level))
                    let expected = (0..<(to.0 * to.1)).flatMap { _ in colour.prefix(bands) }
                    #expect(out == expected, "\(bands) bands to \(to), level \(level)")
                }
            }
        }
    }

    @Test func badArgumentsAreRefused() {
        let input = [UInt8](repeating: 0, count: 16 * 16 * 3)
        #expect(Self.resample(input, 16, 16, to: 8, 8, bands: 5, simd: 2) == nil)
        #expect(Self.resample(input, 16, 16, to: 0, 8, bands: 3, simd: 2) == nil)
        #expect(Self.resample(input, 16, 16, to: 8, 8, bands: 0, simd: 2) == nil)
        var out = [UInt8](repeating: 0, count: 64)
        let status = input.withUnsafeBufferPointer { source in
            out.withUnsafeMutableBufferPointer { target in
                // A stride shorter than a row.
                fc_resample_u8(source.baseAddress, 10, 16, 16, target.baseAddress, 24, 8, 8, 3, 2)
            }
        }
        #expect(status == Int32(FC_RESAMPLE_BAD_ARGUMENTS))
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
        // (64, 40): a shrink by 40, box-averaged by 5 first (the window stays small).
        for (width, height) in [(1728, 1080), (1280, 800), (300, 188), (512, 320), (64, 40)] {
            let ours = try whole.resized(width: width, height: height)
            let hscale = Double(width) / Double(whole.width), vscale = Double(height) / Double(whole.height)
            let theirs = try whole.apply(.processingFailed, "vips_resize") { fc_resize($0, $1, hscale, vscale) }
            #expect(ours.width == width && ours.height == height && theirs.width == width && theirs.height == height)
            let db = Self.psnr(try ours.pixelBytes(), try theirs.pixelBytes())
            // From 4× on vips_resize box-averages by half the factor first (its gap of 2) and
            // filters the rest; CResample filters up to 16× (then box-averages to 8–16×): the
            // same picture, a little sharper here, so a little further apart.
            let factor = Double(whole.width) / Double(width)
            #expect(db > (factor < 4 ? 45 : 38), "\(width)x\(height): \(db) dB against vips_resize")
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
        // The same region of the decode while it is read (a cover made straight from a decode).
        let lazyDirect = try Imaging.withInput(try photo("Kite")) { input -> [UInt8] in
            guard let lazy = fc_load_buffer(input.baseAddress, input.count, 1, 0, 0) else {
                throw vipsError(.corrupt, "opening the photo")
            }
            return try VImage(owning: lazy).resampled(crop, width: 450, height: 300).pixelBytes()
        }
        #expect(try lazyDirect == direct.pixelBytes())
        #expect(throws: ImagingError.self) {
            try whole.resampled(Imaging.Crop(left: whole.width - 10, top: 0, width: 20, height: 20), width: 5, height: 5)
        }
    }
}
