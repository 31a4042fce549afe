import Foundation
internal import CSodium

/// The project's cryptography, through libsodium (a well-kept C library; nothing home-made):
/// SHA-256 (streaming), password hashing (Argon2id), random tokens.
///
/// Threading: every function is thread-safe once libsodium is initialised (done lazily, once).
/// ``PasswordHasher/hash(_:)`` and ``PasswordHasher/verify(_:against:)`` are deliberately slow
/// (tens of milliseconds, 64 MiB): call them off the cooperative pool.
public enum Secrets {
    static let ready: Bool = sodium_init() >= 0

    static func ensureReady() {
        precondition(ready, "libsodium failed to initialise")
    }

    /// `count` cryptographically random bytes.
    public static func randomBytes(_ count: Int) -> [UInt8] {
        ensureReady()
        var bytes = [UInt8](repeating: 0, count: max(count, 0))
        bytes.withUnsafeMutableBytes { buffer in
            if let base = buffer.baseAddress { randombytes_buf(base, buffer.count) }
        }
        return bytes
    }

    /// A random 256-bit token as URL-safe base64 without padding (43 characters).
    public static func newToken() -> String {
        base64URL(randomBytes(32))
    }

    /// Lower-case hex SHA-256 of `text`'s UTF-8 bytes (how tokens are stored).
    public static func sha256Hex(_ text: String) -> String {
        var hasher = SHA256()
        hasher.update(Array(text.utf8))
        return hasher.finalizeHex()
    }

    /// Compares two byte strings in time independent of where they differ.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        ensureReady()
        return a.withUnsafeBytes { pa in
            b.withUnsafeBytes { pb in
                guard let x = pa.baseAddress, let y = pb.baseAddress else { return a.isEmpty }
                return sodium_memcmp(x, y, a.count) == 0
            }
        }
    }

    public static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}

/// Incremental SHA-256 (libsodium's crypto_hash_sha256 state), for hashing uploads while
/// they stream. A value type: copying it forks the state.
public struct SHA256: Sendable {
    private var state = crypto_hash_sha256_state()

    public init() {
        Secrets.ensureReady()
        crypto_hash_sha256_init(&state)
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        crypto_hash_sha256_update(&state, base.assumingMemoryBound(to: UInt8.self), UInt64(bytes.count))
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The 32-byte digest; the hasher must not be used afterwards.
    public mutating func finalize() -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: Int(crypto_hash_sha256_BYTES))
        crypto_hash_sha256_final(&state, &digest)
        return digest
    }

    public mutating func finalizeHex() -> String {
        finalize().map { String(format: "%02x", $0) }.joined()
    }
}

/// Argon2id password hashes in libsodium's self-describing string format (algorithm,
/// parameters and salt inside), so parameters can be raised later without breaking old hashes.
public struct PasswordHasher: Sendable {
    public struct Strength: Sendable {
        public let operations: UInt64
        public let memoryBytes: Int
        /// libsodium's "interactive" limits (2 passes, 64 MiB): suited to logins on a server.
        public static let interactive = Strength(operations: UInt64(crypto_pwhash_OPSLIMIT_INTERACTIVE),
                                                 memoryBytes: Int(crypto_pwhash_MEMLIMIT_INTERACTIVE))
        /// libsodium's minimum (1 pass, 8 KiB): for tests only.
        public static let minimumForTests = Strength(operations: UInt64(crypto_pwhash_OPSLIMIT_MIN),
                                                     memoryBytes: Int(crypto_pwhash_MEMLIMIT_MIN))
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public let strength: Strength

    public init(strength: Strength = .interactive) {
        Secrets.ensureReady()
        self.strength = strength
    }

    /// A new salted Argon2id hash of `password` (e.g. `$argon2id$v=19$m=65536,t=2,p=1$…`).
    public func hash(_ password: String) throws -> String {
        var out = [CChar](repeating: 0, count: Int(crypto_pwhash_STRBYTES))
        // withCString: the UTF-8 bytes (a NUL inside included, as the length says) at an
        // address that always exists, the empty password too.
        let length = UInt64(password.utf8.count)
        let status = password.withCString { crypto_pwhash_str(&out, $0, length, strength.operations, strength.memoryBytes) }
        guard status == 0 else { throw Failure(description: "password hashing failed (out of memory)") }
        return String(cString: out)
    }

    /// Whether `password` matches `hash` (any parameters libsodium understands).
    public func verify(_ password: String, against hash: String) -> Bool {
        let length = UInt64(password.utf8.count)
        return password.withCString { crypto_pwhash_str_verify(hash, $0, length) == 0 }
    }
}
