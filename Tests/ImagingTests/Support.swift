import Foundation
import FramecastTesting
import Imaging
import Logging
import Synchronization

/// The versions media renders for a typical album: thumbnail, hd and two frame screens.
let standardVersions: [VersionSpec] = [
    .fit(300, 300),
    .fit(1920, 1080),
    .cover(1024, 600),
    .cover(1080, 1920),
]

/// One pool of two threads shared by the tests (the machine has two cores).
let sharedImaging = Imaging(threads: 2, logger: Logger(label: "framecast.imaging.tests"))

func photo(_ name: String = "FallenLeaf") throws -> [UInt8] {
    try Photos.bytes(Photos.plasma(name))
}

/// Resident memory of this process from /proc/self/status, in kB (VmRSS, VmHWM).
func memoryStatus() -> (rss: Int, peak: Int) {
    let text = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    func field(_ name: String) -> Int {
        for line in text.split(separator: "\n") where line.hasPrefix(name + ":") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0
        }
        return 0
    }
    return (field("VmRSS"), field("VmHWM"))
}

/// Pixels turned by 180°, to check that the comparison tells orientations apart.
func rotated180(_ pixels: Pixels) -> Pixels {
    var out = [UInt8](repeating: 0, count: pixels.rgb.count)
    let count = pixels.width * pixels.height
    for i in 0..<count {
        let j = count - 1 - i
        out[3 * j] = pixels.rgb[3 * i]
        out[3 * j + 1] = pixels.rgb[3 * i + 1]
        out[3 * j + 2] = pixels.rgb[3 * i + 2]
    }
    return Pixels(width: pixels.width, height: pixels.height, rgb: out)
}

/// A log handler that keeps every record's metadata, for checking where work ran.
final class CapturedLogs: Sendable {
    let records = Mutex<[(message: String, metadata: [String: String])]>([])

    var logger: Logger {
        var logger = Logger(label: "framecast.imaging.capture") { _ in Handler(sink: self) }
        logger.logLevel = .debug
        return logger
    }

    func metadata(of message: String) -> [[String: String]] {
        records.withLock { $0.filter { $0.message == message }.map(\.metadata) }
    }

    struct Handler: LogHandler {
        let sink: CapturedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?,
                 source: String, file: String, function: String, line: UInt) {
            var merged: [String: String] = [:]
            for (key, value) in self.metadata.merging(metadata ?? [:], uniquingKeysWith: { $1 }) {
                merged[key] = "\(value)"
            }
            sink.records.withLock { $0.append((message.description, merged)) }
        }
    }
}
