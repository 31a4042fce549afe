import CResample

// fuzz-resample: the resampler behind every version of a photo (CResample) gives the same bytes
// however it runs: every SIMD level the CPU has (SSE4.1, AVX2) and the row reader (an image
// resized while it is decoded) give the scalar loop's bytes, for any sizes and pixels, reading
// nothing outside the input and writing nothing outside the output rows (the buffers are
// exactly as long as the image, so AddressSanitizer sees any access past them).
//
// Input: byte 0: the bands, byte % 4 + 1; bytes 1 and 2: the input's width and height, byte % 48
// + 1 each; bytes 3 and 4: the output's, byte % 80 + 1 each; byte 5: bit 0 pads every row (input
// and output) by (byte >> 1) % 8 bytes after its pixels; the rest: the pixel bytes, repeated to
// fill the image (zeros when there are none). fc_resample_u8 runs at use_simd 0, 1 and 2 (each
// capped at what the CPU has), fc_resample_u8_rows at 2, its reader checking that rows are asked
// for in order, each once. Every call must succeed (the sizes are valid), write every output
// pixel and no padding, and give the scalar loop's bytes; a band whose input samples are all one
// value (every band of a flat colour, zeros when there are no pixel bytes) must come out as
// exactly that value (each output's coefficients sum to one).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzResample(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data = data, size >= 6 else { return 0 }
    let bands = Int(data[0] % 4) + 1
    let padding = (data[5] & 1) == 1 ? Int((data[5] >> 1) % 8) : 0
    let input = Layout(width: Int(data[1] % 48) + 1, height: Int(data[2] % 48) + 1, bands: bands, padding: padding)
    let output = Layout(width: Int(data[3] % 80) + 1, height: Int(data[4] % 80) + 1, bands: bands, padding: padding)
    let what = "\(bands) bands, \(input) → \(output)"

    let pixels = UnsafeBufferPointer(start: data + 6, count: size - 6)
    var image = [UInt8](repeating: 0, count: input.count)
    var next = 0
    for y in 0..<input.height {
        let start = y * input.stride
        for i in 0..<input.row {
            if !pixels.isEmpty { image[start + i] = pixels[next % pixels.count] }
            next += 1
        }
        // The padding (none after the last row): unlike the row's first sample, so that reading
        // it would change the output (the row reader never passes it on).
        if y < input.height - 1 {
            for i in input.row..<input.stride { image[start + i] = ~image[start] }
        }
    }
    // Each band's value when all its input samples have it.
    let flat = (0..<bands).map { (band: Int) -> UInt8? in
        let value = image[band]
        for y in 0..<input.height {
            for x in 0..<input.width where image[y * input.stride + x * bands + band] != value { return nil }
        }
        return value
    }

    let scalar = resample(image, input, output, level: 0, what)
    for level: Int32 in [1, 2] {
        let out = resample(image, input, output, level: level, what)
        if let difference = firstDifference(scalar, out, output) {
            fatalError("\(what): use_simd \(level) (this CPU runs \(fc_resample_simd_level())) differs from the scalar loop at \(difference)")
        }
    }
    let rows = resampleRows(image, input, output, level: 2, what)
    if let difference = firstDifference(scalar, rows, output) {
        fatalError("\(what): fc_resample_u8_rows at use_simd 2 (this CPU runs \(fc_resample_simd_level())) differs from the scalar loop at \(difference)")
    }
    for band in 0..<bands {
        guard let value = flat[band] else { continue }
        for y in 0..<output.height {
            for x in 0..<output.width where scalar[y * output.stride + x * bands + band] != value {
                fatalError("\(what): band \(band) is flat at \(value), but output pixel (\(x), \(y)) has \(scalar[y * output.stride + x * bands + band])")
            }
        }
    }
    return 0
}

/// An image's rows: `row` bytes of pixels (width × bands), `stride` bytes apart. Its buffer ends
/// with the last row's pixels (no padding after them), exactly what the resampler may touch.
private struct Layout: CustomStringConvertible {
    let width: Int
    let height: Int
    let bands: Int
    let stride: Int

    init(width: Int, height: Int, bands: Int, padding: Int) {
        self.width = width
        self.height = height
        self.bands = bands
        stride = width * bands + padding
    }

    var row: Int { width * bands }
    var count: Int { stride * (height - 1) + row }
    var description: String { "\(width)x\(height) (stride \(stride))" }
}

/// The first pixel byte (padding aside) where `a` and `b` differ, described.
private func firstDifference(_ a: [UInt8], _ b: [UInt8], _ layout: Layout) -> String? {
    for y in 0..<layout.height {
        for i in 0..<layout.row where a[y * layout.stride + i] != b[y * layout.stride + i] {
            return "pixel (\(i / layout.bands), \(y)) band \(i % layout.bands): \(a[y * layout.stride + i]) and \(b[y * layout.stride + i])"
        }
    }
    return nil
}

/// Stops if the resampler wrote into the padding between output rows (`fill` before the call).
private func checkPadding(_ out: [UInt8], _ layout: Layout, fill: UInt8, _ what: String) {
    for y in 0..<(layout.height - 1) {
        for i in layout.row..<layout.stride where out[y * layout.stride + i] != fill {
            fatalError("\(what) wrote padding byte \(i - layout.row) after output row \(y)")
        }
    }
}

/// fc_resample_u8 of the whole input buffer. The output starts filled with a value of this
/// level's own, so that a pixel left unwritten differs from the other calls' outputs.
private func resample(_ image: [UInt8], _ input: Layout, _ output: Layout, level: Int32, _ what: String) -> [UInt8] {
    let fill = 0x5A + UInt8(level)
    var out = [UInt8](repeating: fill, count: output.count)
    let status = image.withUnsafeBufferPointer { source in
        out.withUnsafeMutableBufferPointer { target in
            fc_resample_u8(source.baseAddress, input.stride, Int32(input.width), Int32(input.height),
                           target.baseAddress, output.stride, Int32(output.width), Int32(output.height),
                           Int32(input.bands), level)
        }
    }
    if status != Int32(FC_RESAMPLE_OK) {
        fatalError("\(what): fc_resample_u8 at use_simd \(level) returned \(status)")
    }
    checkPadding(out, output, fill: fill, "\(what): fc_resample_u8 at use_simd \(level)")
    return out
}

/// What the row reader copies from (its context): the input buffer, and the next row due.
private struct RowReader {
    let image: UnsafePointer<UInt8>
    let input: Layout
    let what: String
    var next = 0
}

/// fc_resample_u8_rows's reader: copies input row `y` (its pixels, not its padding) into `row`,
/// checking that rows come in order, each once.
private func readRow(_ context: UnsafeMutableRawPointer?, _ y: Int32, _ row: UnsafeMutablePointer<UInt8>?) -> Int32 {
    let reader = context!.assumingMemoryBound(to: RowReader.self)
    let input = reader.pointee.input
    guard Int(y) == reader.pointee.next, Int(y) < input.height else {
        fatalError("\(reader.pointee.what): fc_resample_u8_rows asked for input row \(y) when row \(reader.pointee.next) was next (rows must come in order, each once)")
    }
    guard let row = row else {
        fatalError("\(reader.pointee.what): fc_resample_u8_rows gave no buffer for input row \(y)")
    }
    row.update(from: reader.pointee.image + Int(y) * input.stride, count: input.row)
    reader.pointee.next += 1
    return 0
}

/// fc_resample_u8_rows of the input, read row by row through `readRow`; every row must be read.
private func resampleRows(_ image: [UInt8], _ input: Layout, _ output: Layout, level: Int32, _ what: String) -> [UInt8] {
    let fill: UInt8 = 0xC3
    var out = [UInt8](repeating: fill, count: output.count)
    let (status, read) = image.withUnsafeBufferPointer { source -> (Int32, Int) in
        var reader = RowReader(image: source.baseAddress!, input: input, what: what)
        let status = out.withUnsafeMutableBufferPointer { target in
            withUnsafeMutablePointer(to: &reader) { context in
                fc_resample_u8_rows(readRow, context, Int32(input.width), Int32(input.height),
                                    target.baseAddress, output.stride, Int32(output.width), Int32(output.height),
                                    Int32(input.bands), level)
            }
        }
        return (status, reader.next)
    }
    if status != Int32(FC_RESAMPLE_OK) {
        fatalError("\(what): fc_resample_u8_rows at use_simd \(level) returned \(status)")
    }
    if read != input.height {
        fatalError("\(what): fc_resample_u8_rows at use_simd \(level) read \(read) of the \(input.height) input rows")
    }
    checkPadding(out, output, fill: fill, "\(what): fc_resample_u8_rows at use_simd \(level)")
    return out
}
