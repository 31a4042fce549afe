import Foundation

/// The content-addressed store of photo bytes and rendered versions: a directory on one
/// machine, a shared volume in a cluster. A blob's key is the lower-case hex SHA-256 of its
/// bytes and it lives at `<root>/ab/cd/<key>`, so a blob is written once and never changes.
///
/// Threading: the calls here do blocking file-system I/O; call them from a thread pool or
/// accept a short block (they are single `stat`/`unlink`/`open` calls).
public struct BlobStore: Sendable {
    public let root: URL

    public init(root: URL) {
        self.root = root
    }

    public init(path: String) {
        self.init(root: URL(fileURLWithPath: path, isDirectory: true))
    }

    /// Where the blob with `key` lives.
    public func path(for key: BlobKey) -> String {
        let hex = key.hex
        let a = hex.prefix(2), b = hex.dropFirst(2).prefix(2)
        return root.appendingPathComponent("\(a)/\(b)/\(hex)").path
    }

    /// The blob's path relative to the store's root (what records keep).
    public func relativePath(for key: BlobKey) -> String {
        let hex = key.hex
        return "\(hex.prefix(2))/\(hex.dropFirst(2).prefix(2))/\(hex)"
    }

    public func exists(_ key: BlobKey) -> Bool {
        FileManager.default.fileExists(atPath: path(for: key))
    }

    /// Size in bytes, nil when the blob does not exist.
    public func size(of key: BlobKey) -> Int64? {
        var info = stat()
        guard stat(path(for: key), &info) == 0 else { return nil }
        return Int64(info.st_size)
    }

    /// Removes the blob; returns false when it did not exist. The raw unlink: services remove
    /// blobs only through ``BlobReferences/removeIfUnreferenced(_:)`` (under the blob's lock,
    /// when no reference is left), never directly.
    @discardableResult
    public func delete(_ key: BlobKey) throws -> Bool {
        if unlink(path(for: key)) == 0 { return true }
        if errno == ENOENT { return false }
        throw BlobStoreError(.io, "cannot delete blob \(key): \(errnoText())")
    }
}

/// The key of a blob: 64 lower-case hex digits (its SHA-256).
public struct BlobKey: Sendable, Hashable, CustomStringConvertible {
    public let hex: String

    /// Accepts exactly 64 hex digits (either case; stored lower-case).
    public init?(_ text: String) {
        let lower = text.lowercased()
        guard lower.utf8.count == 64, lower.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) else {
            return nil
        }
        hex = lower
    }

    public var description: String { hex }

    /// The name every service locks (PostgreSQL advisory lock) while it adds or removes a
    /// reference to this blob, so no blob is deleted while another record starts using it
    /// (``BlobReferences`` is the one place that takes it).
    public var referenceLockName: String { "blob:" + hex }
}

public struct BlobStoreError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public init(_ name: String) { self.name = name }
        public var description: String { name }
        public static let io = Code("io")
        public static let tooLarge = Code("tooLarge")
        public static let notFound = Code("notFound")
        public static let invalidKey = Code("invalidKey")
        public static let invalidReference = Code("invalidReference")
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}
