import Foundation
import Secrets

/// A capability key file for a test (`FRAMECAST_CAPABILITY_KEYS`), and the keys it holds.
///
/// The gateway verifies the capability URLs the album service signs, so both must have the same
/// keys: a test that runs them in-process gives ``keys`` to both configurations, and a `framecast`
/// child process (gateway or album alone, which refuses to start without a key file) gets
/// ``path`` in its environment.
public struct CapabilityKeyFile: Sendable {
    public let path: String
    public let keys: CapabilityKeys

    /// Writes one random key (mode 0600) into a folder of its own under the test run's folder.
    public static func make() throws -> CapabilityKeyFile {
        let directory = try TestServers.scratchDirectory("capability-keys")
        let url = directory.appendingPathComponent("capability-keys")
        let key = Secrets.base64URL(Secrets.randomBytes(24))
        guard FileManager.default.createFile(atPath: url.path, contents: Data("\(key)\n".utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw CapabilityError("cannot write the test capability key file \(url.path)")
        }
        return CapabilityKeyFile(path: url.path, keys: try CapabilityKeys.load(path: url.path))
    }
}
