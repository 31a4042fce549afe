import Foundation
import Imaging
import Threads

/// Puts screens on the configured display. Writes happen on a thread of their own (file and
/// device I/O never block the cooperative pool); one write at a time.
///
/// * `png:PATH`: the screen as a PNG of exactly the frame's resolution, replaced atomically
///   (temp file + rename), black while asleep. Transitions are not drawn (the file shows the
///   final screen).
/// * `fb:/dev/fbN`: the pixels written to the framebuffer device, converted to its depth
///   (32 bpp BGRX or 16 bpp RGB565, read from `/sys/class/graphics/fbN/`), clipped to its
///   size; `fade` blends from the previous screen in a few steps.
/// * `none`: nothing is drawn.
final class DisplayDriver: Sendable {
    let display: FrameAgentConfiguration.Display
    let width: Int
    let height: Int
    private let io = BlockingPool(name: "frame-display", threadCount: 1)
    /// The pixels last written (for fades on a framebuffer).
    private let last = Locked<Pixels?>(nil)

    init(display: FrameAgentConfiguration.Display, width: Int, height: Int) {
        self.display = display
        self.width = width
        self.height = height
    }

    deinit { io.shutdown() }

    /// Whether this display wants PNG bytes with each screen.
    var wantsPNG: Bool { if case .png = display { true } else { false } }

    func show(_ screen: ScreenImage, transition: String) async throws {
        switch display {
        case .none:
            return
        case .png(let path):
            let png = screen.png
            try await io.run { try Self.writeFile(png, to: path) }
        case .framebuffer(let device):
            let previous = last.current
            let pixels = screen.pixels
            try await io.run {
                let geometry = try FramebufferGeometry.read(device: device)
                if transition == "fade", let previous, previous.width == pixels.width, previous.height == pixels.height {
                    for step in 1...5 {
                        try geometry.write(Self.blend(previous, pixels, Double(step) / 6), to: device)
                        Thread.sleep(forTimeInterval: 0.04)
                    }
                }
                try geometry.write(pixels, to: device)
            }
        }
        last.withLock { $0 = screen.pixels }
    }

    /// Turns the screen off (black).
    func blank(black: ScreenImage) async throws {
        try await show(black, transition: "none")
    }

    static func writeFile(_ bytes: [UInt8], to path: String) throws {
        let url = URL(fileURLWithPath: path)
        do {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(bytes).write(to: url, options: .atomic)
        } catch {
            throw FrameAgentError(.display, "writing the screen PNG failed: \(error.localizedDescription)", context: ["path": path])
        }
    }

    static func blend(_ a: Pixels, _ b: Pixels, _ t: Double) -> Pixels {
        var rgb = [UInt8](repeating: 0, count: b.rgb.count)
        for i in rgb.indices { rgb[i] = UInt8((Double(a.rgb[i]) * (1 - t) + Double(b.rgb[i]) * t).rounded()) }
        return Pixels(width: b.width, height: b.height, rgb: rgb)
    }
}

/// A Linux framebuffer's layout, from sysfs.
struct FramebufferGeometry {
    var width: Int
    var height: Int
    var bitsPerPixel: Int
    var stride: Int

    /// `sysfs`: where the `fbN` folders are (another folder in tests).
    static func read(device: String, sysfs: String = "/sys/class/graphics") throws -> FramebufferGeometry {
        let name = URL(fileURLWithPath: device).lastPathComponent
        let sys = "\(sysfs)/\(name)"
        func value(_ file: String) -> String? {
            (try? String(contentsOfFile: "\(sys)/\(file)", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        guard let bpp = value("bits_per_pixel").flatMap(Int.init),
              let size = value("virtual_size")?.split(separator: ","), size.count == 2,
              let w = Int(size[0]), let h = Int(size[1]) else {
            throw FrameAgentError(.display, "cannot read the framebuffer's geometry from sysfs", context: ["path": sys])
        }
        guard bpp == 32 || bpp == 16 else {
            throw FrameAgentError(.display, "framebuffer depth \(bpp) bpp is not supported (32 or 16)", context: ["path": device])
        }
        let stride = value("stride").flatMap(Int.init) ?? w * bpp / 8
        return FramebufferGeometry(width: w, height: h, bitsPerPixel: bpp, stride: stride)
    }

    /// Writes `pixels` at the top-left corner, clipped, converted to the device's format.
    func write(_ pixels: Pixels, to device: String) throws {
        let columns = min(width, pixels.width), rows = min(height, pixels.height)
        var buffer = [UInt8](repeating: 0, count: stride * rows)
        for y in 0..<rows {
            for x in 0..<columns {
                let s = (y * pixels.width + x) * 3
                let (r, g, b) = (pixels.rgb[s], pixels.rgb[s + 1], pixels.rgb[s + 2])
                if bitsPerPixel == 32 {
                    let d = y * stride + x * 4
                    buffer[d] = b; buffer[d + 1] = g; buffer[d + 2] = r; buffer[d + 3] = 255
                } else {
                    let v = UInt16(r >> 3) << 11 | UInt16(g >> 2) << 5 | UInt16(b >> 3)
                    let d = y * stride + x * 2
                    buffer[d] = UInt8(v & 0xFF); buffer[d + 1] = UInt8(v >> 8)
                }
            }
        }
        guard let handle = FileHandle(forWritingAtPath: device) else {
            throw FrameAgentError(.display, "cannot open the framebuffer for writing", context: ["path": device])
        }
        defer { try? handle.close() }
        do {
            try handle.write(contentsOf: Data(buffer))
        } catch {
            throw FrameAgentError(.display, "writing to the framebuffer failed: \(error.localizedDescription)", context: ["path": device])
        }
    }
}
