internal import CVips
internal import CVipsShim

/// One screenful: what a frame shows, exactly `width`×`height`, as 8-bit sRGB pixels and,
/// when asked for, the same pixels as a PNG.
public struct ScreenImage: Sendable, Hashable {
    public var pixels: Pixels
    /// Lossless PNG of ``pixels`` (empty unless asked for).
    public var png: [UInt8]

    public init(pixels: Pixels, png: [UInt8]) {
        self.pixels = pixels
        self.png = png
    }
}

extension Imaging {
    /// Decodes a photo (usually a frame version already made for this screen) and fills a
    /// `width`×`height` screen with it: upright, 8-bit sRGB, alpha on white, cropped by
    /// attention to the screen's aspect ratio and scaled (up if needed), exactly as a
    /// `frame:WxH` version is made (the same ``RenderPlan``). A version of exactly that size
    /// passes through unscaled. With `png`, the PNG encoding of the screen comes with it (for
    /// the frame agent's `png:` display).
    public func screen(_ bytes: [UInt8], width: Int, height: Int, png: Bool) async throws -> ScreenImage {
        guard (1...VersionSpec.maxSide).contains(width), (1...VersionSpec.maxSide).contains(height) else {
            throw ImagingError(.invalidArgument, "a screen must be 1...\(VersionSpec.maxSide) on each side, not \(width)x\(height)")
        }
        let limits = self.limits
        return try await run {
            try Self.withInput(bytes) { input in
                let probed = try Self.readHeader(input, limits: limits)
                var screen: ScreenImage?
                _ = try Self.derive(input, probed: probed, versions: [.cover(width, height)], keepAlpha: false) { _, image in
                    let output = try image.srgb8().flattenedOnWhite()
                    guard output.bands == 3, output.width == width, output.height == height else {
                        throw ImagingError(.processingFailed, "the screen came out \(output.width)x\(output.height)x\(output.bands), wanted \(width)x\(height)x3")
                    }
                    let rgb = try output.pixelBytes()
                    guard rgb.count == width * height * 3 else {
                        throw ImagingError(.processingFailed, "the screen's pixels are \(rgb.count) bytes, wanted \(width * height * 3)")
                    }
                    let pixels = Pixels(width: width, height: height, rgb: rgb)
                    let encoded = png ? try output.save("encoding the screen as PNG") { fc_pngsave_buffer($0, $1, $2, 1) } : []
                    screen = ScreenImage(pixels: pixels, png: encoded)
                }
                guard let result = screen else { throw ImagingError(.processingFailed, "the screen was not rendered") }
                return result
            }
        }
    }
}

extension Imaging {
    /// The PNG encoding of raw pixels (e.g. a black screen for a sleeping frame).
    public func png(_ pixels: Pixels) async throws -> [UInt8] {
        try await run {
            try pixels.rgb.withUnsafeBytes { raw in
                guard let pointer = vips_image_new_from_memory_copy(raw.baseAddress, raw.count, Int32(pixels.width),
                                                                    Int32(pixels.height), 3, VIPS_FORMAT_UCHAR) else {
                    throw vipsError(.processingFailed, "wrapping \(pixels.width)x\(pixels.height) pixels")
                }
                let image = VImage(owning: pointer)
                return try image.save("encoding PNG") { fc_pngsave_buffer($0, $1, $2, 1) }
            }
        }
    }
}
