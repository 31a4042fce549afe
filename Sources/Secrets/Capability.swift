import Foundation
internal import CSodium

/// The keys capability URLs are signed with (HMAC-SHA256), by id. The first key signs; every
/// key verifies, so a new key is rolled out by putting it first and the old one stays until
/// the URLs it signed have expired.
///
/// A key's id is derived from the key (the first 8 hex digits of its SHA-256), so a key file
/// is just keys, one per line: `FRAMECAST_CAPABILITY_KEYS` names it; the scripts generate it
/// on first start (mode 0600). Lines that are empty or start with `#` are ignored.
public struct CapabilityKeys: Sendable {
    public struct Key: Sendable {
        public let id: String
        let secret: [UInt8]
        public init(secret: [UInt8]) {
            var hasher = SHA256()
            hasher.update(secret)
            self.id = String(hasher.finalizeHex().prefix(8))
            self.secret = secret
        }
    }

    /// The signing key.
    public let current: Key
    let byID: [String: Key]

    /// `current` signs; it and `older` verify.
    public init(current: Key, older: [Key] = []) {
        self.current = current
        var byID: [String: Key] = [current.id: current]
        for key in older where byID[key.id] == nil { byID[key.id] = key }
        self.byID = byID
    }

    /// One random key, for tests and for a process that both signs and verifies (`framecast
    /// all` without a key file still needs the file when it has several replicas).
    public static func random() -> CapabilityKeys {
        CapabilityKeys(current: Key(secret: Secrets.randomBytes(32)))
    }

    /// Reads a key file: one key per line (its UTF-8 text is the HMAC key, at least 16 bytes).
    public static func load(path: String) throws -> CapabilityKeys {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw CapabilityError("cannot read the capability key file \(path): \(error.localizedDescription)")
        }
        var keys: [Key] = []
        for line in text.split(whereSeparator: \.isNewline) {
            let key = line.trimmingCharacters(in: .whitespaces)
            if key.isEmpty || key.hasPrefix("#") { continue }
            guard key.utf8.count >= 16 else {
                throw CapabilityError("a key in \(path) is shorter than 16 bytes")
            }
            keys.append(Key(secret: Array(key.utf8)))
        }
        guard let current = keys.first else { throw CapabilityError("the capability key file \(path) holds no key") }
        return CapabilityKeys(current: current, older: Array(keys.dropFirst()))
    }

    public func key(id: String) -> Key? { byID[id] }
}

public struct CapabilityError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A capability URL's path: `/c/{key id}/{expires}/{signature}/{file id}/{blob key}.{jpg|webp}`.
///
/// It names one immutable version of one photo (the blob key is the SHA-256 of its bytes) and
/// carries its own authorisation: whoever holds it may read those bytes until `expires` (Unix
/// seconds), unless the photo is deleted first. The signature is HMAC-SHA256 over
/// `"fc1\n{file id}\n{blob key}\n{ext}\n{expires}"` with the key `{key id}` names, in
/// URL-safe base64 without padding (43 characters).
public struct CapabilityPath: Sendable, Hashable {
    public let keyID: String
    public let expires: Int64
    public let signature: String
    public let fileID: String
    public let blobKey: String
    /// `jpg` or `webp`.
    public let ext: String

    public static let prefix = "/c/"

    /// Signs a path for a version. `fileID` and `blobKey` are lower-cased; `format` is the
    /// version's format (`jpeg` or `webp`).
    public static func sign(fileID: String, blobKey: String, format: String, expires: Int64, keys: CapabilityKeys) -> CapabilityPath {
        let ext = format.lowercased() == "webp" ? "webp" : "jpg"
        let (file, blob) = (fileID.lowercased(), blobKey.lowercased())
        let signature = Secrets.base64URL(hmac(keys.current.secret, message(file, blob, ext, expires)))
        return CapabilityPath(keyID: keys.current.id, expires: expires, signature: signature, fileID: file, blobKey: blob, ext: ext)
    }

    /// Expiry for a URL signed now: `lifetime` from now, rounded up to a whole day, so the
    /// same version has the same URL all day (caches and CDNs see one URL, not one per push).
    public static func expiry(now: Date = Date(), lifetime: Duration) -> Int64 {
        let seconds = Int64(now.timeIntervalSince1970) + lifetime.components.seconds
        let day: Int64 = 86_400
        return (seconds + day - 1) / day * day
    }

    public var path: String { "\(Self.prefix)\(keyID)/\(expires)/\(signature)/\(fileID)/\(blobKey).\(ext)" }

    public var contentType: String { ext == "webp" ? "image/webp" : "image/jpeg" }

    public enum Verdict: Sendable, Equatable {
        case valid(CapabilityPath)
        /// Not a capability path at all (wrong shape): 404.
        case malformed
        /// Unknown key id, wrong signature or expired: 403.
        case forbidden(String)
    }

    /// Checks the five segments after `/c/` (as the router hands them over). Constant-time
    /// signature comparison.
    public static func verify(keyID: String, expires expiresText: String, signature: String, fileID: String, name: String,
                              keys: CapabilityKeys, now: Date = Date()) -> Verdict {
        guard let dot = name.lastIndex(of: "."), let expires = Int64(expiresText), expires > 0 else { return .malformed }
        let blob = String(name[..<dot]), ext = String(name[name.index(after: dot)...])
        guard ext == "jpg" || ext == "webp", isHex(blob, count: 64), isUUID(fileID), signature.utf8.count == 43 else {
            return .malformed
        }
        guard let key = keys.key(id: keyID) else { return .forbidden("unknown key id") }
        let expected = Secrets.base64URL(hmac(key.secret, message(fileID, blob, ext, expires)))
        guard Secrets.constantTimeEqual(Array(expected.utf8), Array(signature.utf8)) else { return .forbidden("bad signature") }
        guard expires > Int64(now.timeIntervalSince1970) else { return .forbidden("expired") }
        return .valid(CapabilityPath(keyID: keyID, expires: expires, signature: signature, fileID: fileID, blobKey: blob, ext: ext))
    }

    static func message(_ file: String, _ blob: String, _ ext: String, _ expires: Int64) -> [UInt8] {
        Array("fc1\n\(file)\n\(blob)\n\(ext)\n\(expires)".utf8)
    }

    static func hmac(_ key: [UInt8], _ message: [UInt8]) -> [UInt8] {
        Secrets.ensureReady()
        var state = crypto_auth_hmacsha256_state()
        var out = [UInt8](repeating: 0, count: Int(crypto_auth_hmacsha256_BYTES))
        crypto_auth_hmacsha256_init(&state, key, key.count)
        crypto_auth_hmacsha256_update(&state, message, UInt64(message.count))
        crypto_auth_hmacsha256_final(&state, &out)
        return out
    }

    /// Lower-case hex of exactly `count` digits.
    static func isHex(_ text: String, count: Int) -> Bool {
        text.utf8.count == count && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    /// A lower-case UUID in its 8-4-4-4-12 form.
    static func isUUID(_ text: String) -> Bool {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        return parts.map(\.utf8.count) == [8, 4, 4, 4, 12] && parts.allSatisfy { isHex(String($0), count: $0.utf8.count) }
    }
}
