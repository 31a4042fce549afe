import Foundation

/// Real photographs shipped by Debian packages that scripts/test installs
/// (plasma-workspace-wallpapers, mate-backgrounds).
public enum Photos {
    public struct Missing: Error, CustomStringConvertible {
        public let path: String
        public var description: String {
            "test photo \(path) is missing: scripts/test installs plasma-workspace-wallpapers and mate-backgrounds"
        }
    }

    /// 2560×1600 camera photos (with EXIF) from plasma-workspace-wallpapers.
    public static let plasmaNames = ["FallenLeaf", "BytheWater", "Kite", "ColorfulCups"]

    /// The path of a plasma wallpaper photo at 2560×1600.
    public static func plasma(_ name: String) throws -> String {
        try existing("/usr/share/wallpapers/\(name)/contents/images/2560x1600.jpg")
    }

    /// A photo from mate-backgrounds' nature set, e.g. "Elephants.jpg".
    public static func mate(_ name: String) throws -> String {
        try existing("/usr/share/backgrounds/mate/nature/\(name)")
    }

    /// Every JPEG photo of mate-backgrounds' nature set.
    public static func mateNature() -> [String] {
        let dir = "/usr/share/backgrounds/mate/nature"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.filter { $0.lowercased().hasSuffix(".jpg") }.sorted().map { "\(dir)/\($0)" }
    }

    public static func bytes(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    static func existing(_ path: String) throws -> String {
        guard FileManager.default.fileExists(atPath: path) else { throw Missing(path: path) }
        return path
    }
}
