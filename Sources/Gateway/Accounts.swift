import Foundation
import Logging
import Metrics
import Postgres
import Secrets
import Threads

/// People and their tokens, in the gateway's own schema. Passwords are kept only as Argon2id
/// hashes; tokens are random 256-bit values kept only as their SHA-256, so a database leak
/// gives no usable token. Frame tokens live here too (kind `frame`).
public final class Accounts: Sendable {
    public static let schema = "gateway"

    public static let migrations: [Migration] = [
        Migration(version: 100, name: "users_and_tokens", sql: """
            CREATE TABLE users (
                user_id       uuid PRIMARY KEY,
                email         text NOT NULL UNIQUE,
                name          text NOT NULL,
                password_hash text NOT NULL,
                created_at    timestamptz NOT NULL DEFAULT now()
            );
            CREATE TABLE tokens (
                token_hash   text PRIMARY KEY,
                kind         text NOT NULL CHECK (kind IN ('user', 'frame')),
                user_id      uuid NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
                frame_id     text,
                created_at   timestamptz NOT NULL DEFAULT now(),
                revoked_at   timestamptz,
                CHECK ((kind = 'frame') = (frame_id IS NOT NULL))
            );
            CREATE INDEX tokens_by_frame ON tokens (frame_id) WHERE frame_id IS NOT NULL;
            """),
    ]

    let postgres: PostgresPool
    let hasher: PasswordHasher
    /// Password hashing is slow on purpose: it runs here, never on an event loop.
    let hashing: BlockingPool
    /// A valid hash of nothing anyone knows, verified when an email is unknown so that a wrong
    /// email takes as long as a wrong password.
    let decoyHash: String
    /// Told about every revocation once it is committed (the gateway's token cache and the
    /// other replicas); nil when no cache depends on this instance.
    let revocations: TokenRevocations?
    /// Token lookups this instance made in PostgreSQL (tests read it: the token cache saves them).
    let tokenQueries = Locked(0)
    private let tokenQueriesMetric = Counter(label: "gateway_token_queries_total")

    public convenience init(postgres: PostgresPool, strength: PasswordHasher.Strength = .interactive, hashingThreads: Int = 2) throws {
        try self.init(postgres: postgres, strength: strength, hashingThreads: hashingThreads, revocations: nil)
    }

    init(postgres: PostgresPool, strength: PasswordHasher.Strength, hashingThreads: Int = 2, revocations: TokenRevocations?) throws {
        self.postgres = postgres
        self.hasher = PasswordHasher(strength: strength)
        self.hashing = BlockingPool(name: "passwords", threadCount: hashingThreads)
        self.decoyHash = try hasher.hash(Secrets.newToken())
        self.revocations = revocations
    }

    deinit { hashing.shutdown() }

    public struct Session: Sendable, Encodable {
        public let userID: String
        public let token: String
        enum CodingKeys: String, CodingKey {
            case userID = "user_id"
            case token
        }
    }

    /// Lower-cased, trimmed; nil when it is not a plausible address.
    public static func normalizeEmail(_ email: String) -> String? {
        let e = email.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        let parts = e.split(separator: "@", omittingEmptySubsequences: false)
        guard e.utf8.count <= 254, parts.count == 2, !parts[0].isEmpty, parts[0].utf8.count <= 64,
              parts[1].contains("."), !parts[1].hasPrefix("."), !parts[1].hasSuffix("."),
              !e.contains(where: { $0.isWhitespace || $0.asciiValue.map { $0 < 32 || $0 == 127 } ?? false }) else { return nil }
        return e
    }

    public func signUp(email: String, password: String, name: String) async throws -> Session {
        guard let email = Self.normalizeEmail(email) else { throw APIError.badRequest("email is not a valid address") }
        guard (8...1024).contains(password.count) else { throw APIError.badRequest("password must have 8 to 1024 characters") }
        let name = name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (1...100).contains(name.count), !name.contains(where: { $0.isNewline }) else {
            throw APIError.badRequest("name must have 1 to 100 characters")
        }
        let hasher = self.hasher
        let hash = try await hashing.run { try hasher.hash(password) }
        let userID = UUID().uuidString.lowercased()
        let token = Secrets.newToken()
        do {
            try await postgres.withTransaction { connection in
                _ = try connection.execute(
                    "INSERT INTO gateway.users (user_id, email, name, password_hash) VALUES ($1::uuid, $2, $3, $4)",
                    [.text(userID), .text(email), .text(name), .text(hash)])
                try Self.insertToken(token, userID: userID, frameID: nil, connection)
            }
        } catch let error as PostgresError where error.isUniqueViolation {
            throw APIError.conflict("an account with this email already exists")
        }
        return Session(userID: userID, token: token)
    }

    public func login(email: String, password: String) async throws -> Session {
        let normalized = Self.normalizeEmail(email) ?? ""
        let rows = try await postgres.query("SELECT user_id::text AS id, password_hash FROM gateway.users WHERE email = $1",
                                            [.text(normalized)])
        let stored: String = try rows.first?.decode("password_hash") ?? decoyHash
        let hasher = self.hasher
        let matches = try await hashing.run { hasher.verify(password, against: stored) }
        guard matches, let row = rows.first else {
            throw APIError(.unauthorized, "unauthorized", "invalid email or password")
        }
        let userID: String = try row.decode("id")
        let token = Secrets.newToken()
        try await postgres.withConnection { try Self.insertToken(token, userID: userID, frameID: nil, $0) }
        return Session(userID: userID, token: token)
    }

    /// Revokes the token with this hash (logout); later requests with it get 401, on every
    /// gateway replica at once (``TokenRevocations``).
    public func revoke(tokenHash: String) async throws {
        _ = try await postgres.execute("UPDATE gateway.tokens SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL",
                                       [.text(tokenHash)])
        revocations?.revoked([.token(hash: tokenHash)])
    }

    /// The hash `gateway.tokens` keeps for `token`; nil when it cannot be a token at all.
    public static func tokenHash(_ token: String) -> String? {
        guard (20...200).contains(token.utf8.count) else { return nil }
        return Secrets.sha256Hex(token)
    }

    /// Who holds `token`, nil when it is unknown or revoked. Asks PostgreSQL every time (the
    /// gateway's token cache sits in front of ``authenticate(tokenHash:)``).
    public func authenticate(token: String) async throws -> (Principal, tokenHash: String)? {
        guard let hash = Self.tokenHash(token), let principal = try await authenticate(tokenHash: hash) else { return nil }
        return (principal, hash)
    }

    /// Who holds the token with this hash, nil when it is unknown or revoked (one query).
    public func authenticate(tokenHash hash: String) async throws -> Principal? {
        tokenQueries.withLock { $0 += 1 }
        tokenQueriesMetric.increment()
        let rows = try await postgres.query("""
            SELECT kind, user_id::text AS user_id, frame_id FROM gateway.tokens
            WHERE token_hash = $1 AND revoked_at IS NULL
            """, [.text(hash)])
        guard let row = rows.first else { return nil }
        let user: String = try row.decode("user_id")
        if try row.decode("kind", as: String.self) == "frame", let frame: String = try row.decode("frame_id") {
            return .frame(id: frame, ownerID: user)
        }
        return .user(id: user)
    }

    /// A new token for a frame owned by `ownerID`.
    public func issueFrameToken(frameID: String, ownerID: String) async throws -> String {
        let token = Secrets.newToken()
        try await postgres.withConnection { try Self.insertToken(token, userID: ownerID, frameID: frameID, $0) }
        return token
    }

    /// Revokes every token of a frame (when it is deleted, or its credentials are rotated), on
    /// every gateway replica at once (``TokenRevocations``).
    public func revokeFrameTokens(frameID: String) async throws {
        _ = try await postgres.execute("UPDATE gateway.tokens SET revoked_at = now() WHERE frame_id = $1 AND revoked_at IS NULL",
                                       [.text(frameID)])
        revocations?.revoked([.frame(id: frameID)])
    }

    /// The account registered with `email`, for adding album members by email.
    public func account(forEmail email: String) async throws -> (userID: String, email: String, name: String)? {
        guard let email = Self.normalizeEmail(email) else { return nil }
        guard let row = try await postgres.query("SELECT user_id::text AS id, email, name FROM gateway.users WHERE email = $1",
                                                 [.text(email)]).first else { return nil }
        return (try row.decode("id"), try row.decode("email"), try row.decode("name"))
    }

    static func insertToken(_ token: String, userID: String, frameID: String?, _ connection: PostgresConnection) throws {
        _ = try connection.execute(
            "INSERT INTO gateway.tokens (token_hash, kind, user_id, frame_id) VALUES ($1, $2, $3::uuid, $4)",
            [.text(Secrets.sha256Hex(token)), .text(frameID == nil ? "user" : "frame"), .text(userID),
             frameID.map { .text($0) } ?? .null])
    }
}
