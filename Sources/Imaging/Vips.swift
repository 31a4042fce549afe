import Foundation
internal import CVips
internal import CVipsShim
internal import CResample

// The thin layer over libvips: one owner class for VipsImage, one function that turns a
// failed vips call into an ImagingError. Everything here runs on an Imaging pool thread.

/// libvips starts once per process (VIPS_INIT through the shim). The operation cache is
/// switched off: with it, a loop over progressive JPEGs reached 1.37 GB RSS (PLATFORM.md).
/// `nil` when libvips started; otherwise the reason it did not.
let vipsStartupFailure: String? = {
    if fc_vips_init("framecast") != 0 {
        return takeVipsErrorMessage() ?? "VIPS_INIT failed"
    }
    vips_cache_set_max(0)
    return nil
}()

/// Copies and clears libvips' error buffer (one atomic call). The buffer is global to the
/// process, so a message may include another thread's concurrent failure; codes never
/// depend on it.
func takeVipsErrorMessage() -> String? {
    guard let copy = vips_error_buffer_copy() else { return nil }
    defer { g_free(copy) }
    let message = String(cString: copy).trimmingCharacters(in: .whitespacesAndNewlines)
    return message.isEmpty ? nil : message.replacingOccurrences(of: "\n", with: "; ")
}

/// The one mapping from a failed libvips call to an ``ImagingError``: `what` says which
/// step failed, libvips' message says why.
func vipsError(_ code: ImagingError.Code, _ what: String, context: [String: String] = [:]) -> ImagingError {
    if let detail = takeVipsErrorMessage() {
        return ImagingError(code, "\(what): \(detail)", context: context)
    }
    return ImagingError(code, what, context: context)
}

typealias VipsImagePointer = UnsafeMutablePointer<VipsImage>

/// Owns one reference to a VipsImage and drops it (g_object_unref) exactly once, in deinit.
/// Not Sendable: an image lives and dies inside one pool job.
final class VImage {
    let pointer: VipsImagePointer

    init(owning pointer: VipsImagePointer) {
        self.pointer = pointer
    }

    deinit { g_object_unref(pointer) }

    var width: Int { Int(vips_image_get_width(pointer)) }
    var height: Int { Int(vips_image_get_height(pointer)) }
    var bands: Int { Int(vips_image_get_bands(pointer)) }
    var hasAlpha: Bool { vips_image_hasalpha(pointer) != 0 }
    var isUChar: Bool { vips_image_get_format(pointer) == VIPS_FORMAT_UCHAR }
    var isSRGB: Bool { vips_image_get_interpretation(pointer) == VIPS_INTERPRETATION_sRGB }
    var isCMYK: Bool { vips_image_get_interpretation(pointer) == VIPS_INTERPRETATION_CMYK }
    var isGrey: Bool { vips_image_get_interpretation(pointer) == VIPS_INTERPRETATION_B_W }
    /// Bytes of pixels once in memory (width × height × bands × bytes per band sample).
    var byteCount: Int { width * height * bands * Int(vips_format_sizeof(vips_image_get_format(pointer))) }
    var orientation: Int { Int(vips_image_get_orientation(pointer)) }
    var pages: Int { Int(vips_image_get_n_pages(pointer)) }
    var hasICCProfile: Bool { fc_has_icc_profile(pointer) != 0 }
    var heifCompression: String? { fc_heif_compression(pointer).map { String(cString: $0) } }

    /// The string metadata among `names` that the image carries (EXIF fields appear as
    /// strings like "exif-ifd0-Make"); absent or unreadable fields are left out.
    func strings(_ names: [String]) -> [String: String] {
        var result: [String: String] = [:]
        for name in names where vips_image_get_typeof(pointer, name) != 0 {
            var value: UnsafePointer<CChar>?
            if vips_image_get_string(pointer, name, &value) == 0, let value {
                result[name] = String(cString: value)  // owned by the image: copied here
            } else {
                _ = takeVipsErrorMessage()
            }
        }
        return result
    }

    /// Runs one `in → out` vips operation and owns its output.
    func apply(_ code: ImagingError.Code, _ what: String,
               _ operation: (VipsImagePointer, UnsafeMutablePointer<VipsImagePointer?>) -> Int32) throws -> VImage {
        var out: VipsImagePointer?
        let status = operation(pointer, &out)
        guard status == 0, let out else {
            if let out { g_object_unref(out) }
            throw vipsError(code, what)
        }
        return VImage(owning: out)
    }

    /// Runs one saver and copies its g_malloc'ed output into Swift memory, freed at once.
    func save(_ what: String,
              _ saver: (VipsImagePointer, UnsafeMutablePointer<UnsafeMutableRawPointer?>, UnsafeMutablePointer<Int>) -> Int32) throws -> [UInt8] {
        var buffer: UnsafeMutableRawPointer?
        var length = 0
        let status = saver(pointer, &buffer, &length)
        defer { if let buffer { g_free(buffer) } }
        guard status == 0, let buffer else { throw vipsError(.encodeFailed, what) }
        return [UInt8](UnsafeRawBufferPointer(start: buffer, count: length))
    }

    /// Decodes the whole pipeline into memory once (vips_image_copy_memory), so several
    /// versions read the pixels without decoding the input again.
    func materialised() throws -> VImage {
        guard let copy = vips_image_copy_memory(pointer) else {
            throw vipsError(.corrupt, "decoding the image")
        }
        return VImage(owning: copy)
    }

    /// The pixels as bytes (vips_image_write_to_memory), copied into Swift memory.
    func pixelBytes() throws -> [UInt8] {
        var length = 0
        guard let memory = vips_image_write_to_memory(pointer, &length) else {
            throw vipsError(.corrupt, "decoding the pixels")
        }
        defer { g_free(memory) }
        return [UInt8](UnsafeRawBufferPointer(start: memory, count: length))
    }

    // MARK: Steps used by Imaging

    /// 8-bit sRGB: CMYK, Lab, 16-bit, grey… converted; the alpha band kept.
    func srgb8() throws -> VImage {
        var image = self
        if !image.isSRGB {
            image = try image.apply(.processingFailed, "converting to sRGB") { fc_colourspace_srgb($0, $1) }
        }
        if !image.isUChar {
            image = try image.apply(.processingFailed, "converting to 8 bits") { fc_cast_uchar($0, $1) }
        }
        return image
    }

    /// Alpha composited on white (for JPEG); the image itself when it has no alpha.
    func flattenedOnWhite() throws -> VImage {
        guard hasAlpha else { return self }
        return try apply(.processingFailed, "flattening alpha") { fc_flatten_white($0, $1) }
    }

    /// Resized to exactly `width`×`height` (Lanczos-3): by CResample when the pixels are 8-bit
    /// without alpha (see ``resampled(_:width:height:)``), otherwise by libvips with alpha
    /// premultiplied around the resize.
    func resized(width: Int, height: Int) throws -> VImage {
        if width == self.width && height == self.height { return self }
        if canResample {
            return try resampled(Imaging.Crop(left: 0, top: 0, width: self.width, height: self.height), width: width, height: height)
        }
        let hscale = Double(width) / Double(self.width)
        let vscale = Double(height) / Double(self.height)
        let context = ["imaging.from": "\(self.width)x\(self.height)", "imaging.to": "\(width)x\(height)"]
        var result: VImage
        if hasAlpha {
            let premultiplied = try apply(.processingFailed, "premultiplying alpha") { fc_premultiply($0, $1) }
            let scaled = try premultiplied.apply(.processingFailed, "resizing") { fc_resize($0, $1, hscale, vscale) }
            result = try scaled.apply(.processingFailed, "unpremultiplying alpha") { fc_unpremultiply($0, $1) }
            result = try result.apply(.processingFailed, "converting to 8 bits") { fc_cast_uchar($0, $1) }
        } else {
            result = try apply(.processingFailed, "resizing") { fc_resize($0, $1, hscale, vscale) }
        }
        guard result.width == width, result.height == height else {
            throw ImagingError(.processingFailed, "resize gave \(result.width)x\(result.height)", context: context)
        }
        return result
    }

    /// 8-bit samples, 1 to 4 bands, none of them alpha, on a CPU with SSE4.1 or AVX2: what
    /// CResample resizes. Its scalar loop (other CPUs, e.g. an arm64 frame) is slower than
    /// libvips' resize, which those CPUs keep.
    var canResample: Bool {
        Self.resamplerHasSIMD && isUChar && !hasAlpha && bands <= 4 && vips_image_get_coding(pointer) == VIPS_CODING_NONE
    }

    static let resamplerHasSIMD = fc_resample_simd_level() > 0

    /// `region` of this image resized to exactly `width`×`height` by CResample (Lanczos-3, the
    /// same filter as libvips' reduce; see CResample.h), into memory, with this image's
    /// metadata. An image in memory is read in place; a lazy one (a sequential decode) is
    /// computed strip by strip while it is resized, never held whole: when that computation
    /// fails (a truncated decode) the error is `corrupt`. Needs ``canResample``.
    func resampled(_ region: Imaging.Crop, width: Int, height: Int) throws -> VImage {
        var out: VipsImagePointer?
        let status = fc_resample(pointer, &out, Int32(region.left), Int32(region.top), Int32(region.width),
                                 Int32(region.height), Int32(width), Int32(height))
        guard status == FC_RESAMPLE_OK, let out else {
            if let out { g_object_unref(out) }
            if status == FC_RESAMPLE_READ_FAILED { throw vipsError(.corrupt, "decoding the image") }
            throw vipsError(.processingFailed, "resizing \(region.width)x\(region.height) at \(region.left),\(region.top) of \(self.width)x\(self.height) to \(width)x\(height)")
        }
        return VImage(owning: out)
    }

    /// The `width`×`height` region at (`left`, `top`); the image itself when that is all of it.
    func extracted(left: Int, top: Int, width: Int, height: Int) throws -> VImage {
        if left == 0 && top == 0 && width == self.width && height == self.height { return self }
        return try apply(.processingFailed, "cropping \(width)x\(height) at \(left),\(top) of \(self.width)x\(self.height)") {
            fc_extract_area($0, $1, Int32(left), Int32(top), Int32(width), Int32(height))
        }
    }

    /// Where libvips' attention search (smartcrop, `VIPS_INTERESTING_ATTENTION`) puts a
    /// `width`×`height` crop of this image: the centre of attention it found and the crop's
    /// origin. No pixel of the crop is computed.
    func attention(width: Int, height: Int) throws -> Attention {
        var x: Int32 = 0, y: Int32 = 0, left: Int32 = 0, top: Int32 = 0
        guard fc_smartcrop_attention(pointer, Int32(width), Int32(height), &x, &y, &left, &top) == 0 else {
            throw vipsError(.processingFailed, "finding the attention centre of \(self.width)x\(self.height) for \(width)x\(height)")
        }
        return Attention(x: Int(x), y: Int(y), left: Int(left), top: Int(top))
    }
}

/// What libvips' attention search found in an image (see ``VImage/attention(width:height:)``),
/// in that image's pixels.
struct Attention: Equatable, Sendable {
    /// The centre of attention.
    var x: Int
    var y: Int
    /// The origin of the crop libvips chose around it (the crop centred on the point, then
    /// moved inside the image).
    var left: Int
    var top: Int
}
