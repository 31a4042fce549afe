// Builds PNG files by hand (no libvips), so tests can make inputs libvips did not write:
// a decompression bomb and images with alpha or 16-bit samples.

public enum PNGWriter {
    /// A valid grayscale PNG of `width`×`height` 1-bit black pixels whose zlib stream repeats
    /// <length 258, distance 1> matches: 30000×30000 is ~700 KB on disk, 900 MB decoded.
    public static func bomb(width: Int, height: Int) -> [UInt8] {
        let rowBytes = 1 + (width + 7) / 8  // filter byte + packed bits
        let total = rowBytes * height
        var bits = BitWriter()
        bits.write(1, count: 1)  // BFINAL
        bits.write(1, count: 2)  // BTYPE = 01, fixed Huffman
        bits.writeHuffman(0x30, count: 8)  // literal 0
        var remaining = total - 1
        while remaining >= 258 {
            bits.writeHuffman(0b1100_0101, count: 8)  // length code 285 = 258
            bits.writeHuffman(0, count: 5)  // distance code 0 = 1
            remaining -= 258
        }
        for _ in 0..<remaining { bits.writeHuffman(0x30, count: 8) }
        bits.writeHuffman(0, count: 7)  // end of block (256)
        let adler = UInt32(total % 65521) << 16 | 1  // Adler-32 of `total` zero bytes
        var zlib: [UInt8] = [0x78, 0x01]
        zlib += bits.finish()
        zlib += bigEndian(adler)
        return png(width: width, height: height, bitDepth: 1, colorType: 0, zlib: zlib)
    }

    /// A PNG from raw scanlines (each without its filter byte), deflate "stored" blocks.
    /// colorType 0 gray, 2 RGB, 4 gray+alpha, 6 RGBA.
    public static func image(width: Int, height: Int, bitDepth: Int, colorType: Int, rows: [[UInt8]]) -> [UInt8] {
        var raw: [UInt8] = []
        for row in rows { raw.append(0); raw += row }
        var zlib: [UInt8] = [0x78, 0x01]
        var offset = 0
        repeat {
            let count = min(65535, raw.count - offset)
            let final: UInt8 = offset + count == raw.count ? 1 : 0
            zlib.append(final)
            zlib += [UInt8(count & 0xff), UInt8(count >> 8), UInt8(~count & 0xff), UInt8((~count >> 8) & 0xff)]
            zlib += raw[offset..<offset + count]
            offset += count
        } while offset < raw.count
        zlib += bigEndian(adler32(raw))
        return png(width: width, height: height, bitDepth: bitDepth, colorType: colorType, zlib: zlib)
    }

    private static func png(width: Int, height: Int, bitDepth: Int, colorType: Int, zlib: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        let ihdr = bigEndian(UInt32(width)) + bigEndian(UInt32(height))
            + [UInt8(bitDepth), UInt8(colorType), 0, 0, 0]
        out += chunk("IHDR", ihdr)
        out += chunk("IDAT", zlib)
        out += chunk("IEND", [])
        return out
    }

    private static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let typeBytes = Array(type.utf8)
        return bigEndian(UInt32(data.count)) + typeBytes + data + bigEndian(crc32(typeBytes + data))
    }

    private static func bigEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8((value >> 16) & 0xff), UInt8((value >> 8) & 0xff), UInt8(value & 0xff)]
    }

    private static func adler32(_ data: [UInt8]) -> UInt32 {
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in data {
            a = (a + UInt32(byte)) % 65521
            b = (b + a) % 65521
        }
        return b << 16 | a
    }

    private static func crc32(_ data: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xffff_ffff
        for byte in data {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xedb8_8320 : crc >> 1 }
        }
        return ~crc
    }

    /// Deflate's bit order: values LSB first; Huffman codes MSB first.
    private struct BitWriter {
        var bytes: [UInt8] = []
        var current: UInt32 = 0
        var used = 0

        mutating func write(_ value: UInt32, count: Int) {
            for i in 0..<count { push((value >> UInt32(i)) & 1) }
        }

        mutating func writeHuffman(_ code: UInt32, count: Int) {
            for i in stride(from: count - 1, through: 0, by: -1) { push((code >> UInt32(i)) & 1) }
        }

        private mutating func push(_ bit: UInt32) {
            current |= bit << UInt32(used)
            used += 1
            if used == 8 {
                bytes.append(UInt8(current))
                current = 0
                used = 0
            }
        }

        mutating func finish() -> [UInt8] {
            if used > 0 { bytes.append(UInt8(current)) }
            return bytes
        }
    }
}
