import Foundation

/// Who a running service instance is, as NATS micro services describe themselves:
/// a name (also its queue group and the `svc.<name>.v1.*` prefix), a version, and an id
/// unique to this process.
public struct ServiceIdentity: Sendable {
    public var name: String
    public var version: String
    public var instanceID: String
    public var description: String
    public var metadata: [String: String]

    public init(name: String, version: String = FramecastVersion.current, description: String = "",
                metadata: [String: String] = [:], instanceID: String = ServiceIdentity.newInstanceID()) {
        precondition(Self.isValidName(name), "service names are letters, digits, '-' and '_'")
        self.name = name
        self.version = version
        self.instanceID = instanceID
        self.description = description
        self.metadata = metadata
    }

    /// 22 random alphanumerics, like a NATS nuid.
    public static func newInstanceID() -> String {
        let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        var rng = SystemRandomNumberGenerator()
        return String((0..<22).map { _ in alphabet[Int(rng.next(upperBound: UInt64(alphabet.count)))] })
    }

    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.allSatisfy { c in
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 45 || c == 95
        }
    }
}

public enum FramecastVersion {
    public static let current = "0.1.0"
}
