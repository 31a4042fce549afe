import Foundation
import Hummingbird
import Logging
import Metrics
import Postgres
import Secrets
import ServiceKit
import Wire

/// Pairing a browser frame by a short code, in the gateway's own schema.
///
/// 1. The page at `/frame`, with no credentials, asks for a pairing (`POST /api/v1/frames/pairings`
///    with its screen size): a row with the hash of a random six-character code and the hash of
///    a random secret (the page's proof that it is the page that asked). The page shows the code.
/// 2. The owner types the code (`POST /api/v1/frames/pair`): the row is claimed in one UPDATE
///    (a code works once), the frame registered through the album service with the page's
///    screen, and its id recorded in the row.
/// 3. The page, polling with its secret (`GET /api/v1/frames/pairings/{id}`), finds the frame
///    and is handed its credentials once: they are made at that moment (a new MQTT password
///    through the album service's credential rotation, a new frame token), so no credential is
///    ever stored here, and the row is deleted.
///
/// The database keeps only SHA-256 hashes of codes and secrets; a row lives ``GatewayConfiguration/pairingLifetime``
/// (10 minutes), a paired one at least that long after pairing, and is swept an hour after it expired.
final class Pairings: Sendable {
    static let migrations: [Migration] = [
        Migration(version: 101, name: "frame_pairings", sql: """
            CREATE TABLE frame_pairings (
                pairing_id  uuid PRIMARY KEY,
                code_hash   text NOT NULL UNIQUE,
                secret_hash text NOT NULL,
                width       integer NOT NULL,
                height      integer NOT NULL,
                created_at  timestamptz NOT NULL DEFAULT now(),
                expires_at  timestamptz NOT NULL,
                paired_by   uuid REFERENCES users (user_id) ON DELETE CASCADE,
                paired_at   timestamptz,
                frame_id    text,
                claimed_at  timestamptz,
                CHECK (frame_id IS NULL OR paired_by IS NOT NULL)
            );
            CREATE INDEX frame_pairings_by_expiry ON frame_pairings (expires_at);
            """),
    ]

    let postgres: PostgresPool

    init(postgres: PostgresPool) {
        self.postgres = postgres
    }

    // MARK: Codes and secrets (pure)

    /// The characters of a code: digits and capitals without 0/O, 1/I/L (31 of them), so a
    /// code read across a room is typed right. Six of them: 31^6 ≈ 887 million codes.
    static let alphabet: [Character] = Array("23456789ABCDEFGHJKMNPQRSTUVWXYZ")
    static let codeLength = 6

    /// A random code (uniform: bytes of 248 and above are drawn again, 248 = 8 × 31).
    static func newCode() -> String {
        var code = ""
        while code.count < codeLength {
            for byte in Secrets.randomBytes(codeLength * 2) where byte < 248 && code.count < codeLength {
                code.append(alphabet[Int(byte) % alphabet.count])
            }
        }
        return code
    }

    /// `K7Q4MP` → `K7Q-4MP`, as the page shows it.
    static func display(_ code: String) -> String {
        "\(code.prefix(3))-\(code.dropFirst(3))"
    }

    /// A code as a person typed it (any case, with a dash or spaces) → its canonical form; nil
    /// when it cannot be a code at all.
    static func normalize(_ typed: String) -> String? {
        let kept = typed.uppercased().filter { $0 != "-" && $0 != " " && $0 != "\t" }
        guard kept.count == codeLength, kept.allSatisfy({ alphabet.contains($0) }) else { return nil }
        return kept
    }

    static func codeHash(_ code: String) -> String { Secrets.sha256Hex("framecast.pairing.code:" + code) }

    /// The hash kept of a page's secret; nil when the text cannot be one of ours.
    static func secretHash(_ secret: String) -> String? {
        guard (20...200).contains(secret.utf8.count) else { return nil }
        return Secrets.sha256Hex("framecast.pairing.secret:" + secret)
    }

    /// Whether `id` is a pairing id's form (a UUID); anything else is an unknown pairing.
    static func isID(_ id: String) -> Bool { UUID(uuidString: id) != nil }

    // MARK: Rows

    struct Created: Sendable {
        let pairingID: String
        /// As shown: `K7Q-4MP`.
        let code: String
        let secret: String
        /// Unix milliseconds.
        let expiresAt: Int64
    }

    /// A new pairing for a screen of `width` × `height` pixels, valid for `lifetime`. Expired
    /// rows older than an hour are swept first.
    func create(width: Int, height: Int, lifetime: Duration) async throws -> Created {
        let seconds = Double(lifetime.components.seconds) + Double(lifetime.components.attoseconds) / 1e18
        _ = try await postgres.execute("DELETE FROM gateway.frame_pairings WHERE expires_at < now() - interval '1 hour'")
        // A code taken by another live pairing (one chance in hundreds of millions): another.
        for _ in 0..<5 {
            let id = UUID().uuidString.lowercased()
            let code = Self.newCode()
            let secret = Secrets.newToken()
            guard let secretHash = Self.secretHash(secret) else { throw APIError.internalError }
            do {
                let rows = try await postgres.query("""
                    INSERT INTO gateway.frame_pairings (pairing_id, code_hash, secret_hash, width, height, expires_at)
                    VALUES ($1::uuid, $2, $3, $4, $5, now() + make_interval(secs => $6))
                    RETURNING (extract(epoch FROM expires_at) * 1000)::bigint AS expires_ms
                    """, [.text(id), .text(Self.codeHash(code)), .text(secretHash), .int(Int64(width)), .int(Int64(height)),
                          .double(seconds)])
                let expires: Int64 = try rows.first?.decode("expires_ms") ?? 0
                return Created(pairingID: id, code: Self.display(code), secret: secret, expiresAt: expires)
            } catch let error as PostgresError where error.isUniqueViolation {
                continue
            }
        }
        throw APIError.unavailable("no free pairing code was found; try again")
    }

    enum State: Sendable, Equatable {
        /// Unknown, expired, or the secret does not match.
        case unknown
        /// Waiting for its owner (or being handed over by another request).
        case pending(expiresAt: Int64)
        /// Paired with `frameID` by `ownerID`: its credentials can be handed over.
        case paired(frameID: String, ownerID: String)
    }

    /// What the page holding `secretHash` may learn about pairing `id`.
    func state(_ id: String, secretHash: String) async throws -> State {
        let rows = try await postgres.query("""
            SELECT frame_id, paired_by::text AS owner, (extract(epoch FROM expires_at) * 1000)::bigint AS expires_ms
            FROM gateway.frame_pairings WHERE pairing_id = $1::uuid AND secret_hash = $2 AND expires_at > now()
            """, [.text(id), .text(secretHash)])
        guard let row = rows.first else { return .unknown }
        if let frame: String = try row.decode("frame_id"), let owner: String = try row.decode("owner") {
            return .paired(frameID: frame, ownerID: owner)
        }
        return .pending(expiresAt: try row.decode("expires_ms"))
    }

    struct Claimed: Sendable {
        let pairingID: String
        let width: Int
        let height: Int
    }

    /// Claims the live, unpaired pairing whose code is `code` for `user`, in one statement (a
    /// code works once, however many try it at the same time). The row then lives at least
    /// `lifetime` more, for the page to pick its credentials up. Nil: no such code.
    func claim(code: String, user: String, lifetime: Duration) async throws -> Claimed? {
        let seconds = Double(lifetime.components.seconds) + Double(lifetime.components.attoseconds) / 1e18
        guard let row = try await postgres.query("""
            UPDATE gateway.frame_pairings SET paired_by = $2::uuid, paired_at = now(),
                expires_at = greatest(expires_at, now() + make_interval(secs => $3))
            WHERE code_hash = $1 AND paired_by IS NULL AND expires_at > now()
            RETURNING pairing_id::text AS id, width, height
            """, [.text(Self.codeHash(code)), .text(user), .double(seconds)]).first else { return nil }
        return Claimed(pairingID: try row.decode("id"), width: try row.decode("width"), height: try row.decode("height"))
    }

    /// Gives a claimed code back (registering its frame failed): it can be typed again.
    func unclaim(_ id: String) async throws {
        _ = try await postgres.execute("""
            UPDATE gateway.frame_pairings SET paired_by = NULL, paired_at = NULL WHERE pairing_id = $1::uuid AND frame_id IS NULL
            """, [.text(id)])
    }

    /// Records the frame registered for a claimed pairing: the page finds it on its next poll.
    func attach(_ id: String, frameID: String) async throws {
        let changed = try await postgres.execute("UPDATE gateway.frame_pairings SET frame_id = $2 WHERE pairing_id = $1::uuid",
                                                 [.text(id), .text(frameID)])
        guard changed == 1 else { throw APIError.internalError }
    }

    /// Takes the hand-over of a paired pairing for this request: nil when another request has
    /// it (for up to a minute, then it may be taken again, should that request have died).
    func beginHandOver(_ id: String, secretHash: String) async throws -> (frameID: String, ownerID: String)? {
        guard let row = try await postgres.query("""
            UPDATE gateway.frame_pairings SET claimed_at = now()
            WHERE pairing_id = $1::uuid AND secret_hash = $2 AND frame_id IS NOT NULL AND expires_at > now()
                AND (claimed_at IS NULL OR claimed_at < now() - interval '1 minute')
            RETURNING frame_id, paired_by::text AS owner
            """, [.text(id), .text(secretHash)]).first else { return nil }
        let frame: String = try row.decode("frame_id")
        let owner: String = try row.decode("owner")
        return (frame, owner)
    }

    /// A hand-over that failed (the broker did not take the new password…): the next poll tries again.
    func abandonHandOver(_ id: String) async throws {
        _ = try await postgres.execute("UPDATE gateway.frame_pairings SET claimed_at = NULL WHERE pairing_id = $1::uuid", [.text(id)])
    }

    /// The credentials were handed over (or the frame is gone): the pairing is over.
    func remove(_ id: String) async throws {
        _ = try await postgres.execute("DELETE FROM gateway.frame_pairings WHERE pairing_id = $1::uuid", [.text(id)])
    }
}

// MARK: - Routes

/// `POST /api/v1/frames/pairings`: the page's screen, in pixels (CSS size × devicePixelRatio).
struct PairingRequestBody: Decodable { let width: Int32; let height: Int32 }
/// `POST /api/v1/frames/pair`.
struct PairBody: Decodable { let code: String; let name: String; let album_ids: [String]? }

struct PairingJSON: Encodable, Sendable {
    let pairing_id: String
    let code: String
    let secret: String
    let expires_at: String
    /// How often the page should ask whether it was paired.
    let poll_seconds: Int
}

struct PairingStatusJSON: Encodable, Sendable {
    struct MQTT: Encodable, Sendable {
        /// The broker's WebSocket URL (``GatewayConfiguration/frameWebSocketURL``).
        let ws_url: String
        /// The broker as a Linux frame reaches it (the registration's).
        let host: String
        let port: Int32
        let username: String
        let password: String
    }
    /// `pending` or `paired`.
    let status: String
    var expires_at: String? = nil
    var frame_id: String? = nil
    var frame_token: String? = nil
    var mqtt: MQTT? = nil
    var frame: FrameJSON? = nil
}

extension HTTPFields.Element.Name {
    /// `X-Pairing-Secret`: the page's proof, on `GET /api/v1/frames/pairings/{pairing_id}`. (A
    /// literal of valid token characters: the initializer cannot fail for it.)
    static let pairingSecret = HTTPFields.Element.Name("X-Pairing-Secret") ?? .via
}

extension Gateway {
    /// The pairing of browser frames (see ``Pairings``): registered before the frame routes, so
    /// `/api/v1/frames/pair` and `/pairings` are these routes and never a frame id.
    func registerPairingRoutes(_ router: Router<GatewayContext>) {
        add(router, .post, "/api/v1/frames/pairings", auth: false) { [self] request, context in
            if let wait = throttle.withLock({ $0.beginPairingRequest(address: context.clientAddress, now: .now) }) {
                context.logger.info("pairing requests throttled", metadata: ["client.address": "\(context.clientAddress ?? "")"])
                throw APIError.tooManyRequests("too many pairing codes asked for from this address", retryAfter: wait)
            }
            let body = try await request.decode(as: PairingRequestBody.self, context: context)
            guard (16...16_384).contains(body.width), (16...16_384).contains(body.height) else {
                throw APIError.badRequest("width and height must be 16…16384 pixels")
            }
            guard configuration.frameWebSocketURL != nil else {
                throw APIError.unavailable("browser frames are not set up on this server: it knows no MQTT WebSocket URL (FRAMECAST_MQTT_WS_URL)")
            }
            let created = try await pairings.create(width: Int(body.width), height: Int(body.height), lifetime: configuration.pairingLifetime)
            context.logger.info("pairing code issued", metadata: [
                "pairing.id": "\(created.pairingID)", "frame.screen": "\(body.width)x\(body.height)"])
            return JSONBody(status: .created, body: PairingJSON(
                pairing_id: created.pairingID, code: created.code, secret: created.secret,
                expires_at: FileJSON.iso(created.expiresAt), poll_seconds: 2))
        }

        add(router, .get, "/api/v1/frames/pairings/:pairing_id", auth: false) { [self] request, context in
            let id = try context.parameters.require("pairing_id")
            guard let secret = request.headers[.pairingSecret] else {
                throw APIError.badRequest("the X-Pairing-Secret header is required")
            }
            guard Pairings.isID(id), let secretHash = Pairings.secretHash(secret) else {
                throw APIError.notFound("no such pairing, or it expired")
            }
            return try await pollPairing(id.lowercased(), secretHash: secretHash, context)
        }

        add(router, .post, "/api/v1/frames/pair") { [self] request, context in
            let user = try context.requireUser()
            let body = try await request.decode(as: PairBody.self, context: context)
            try TextInput.name(body.name, "name")
            return JSONBody(status: .created, body: FrameJSON(try await pair(body, user: user, context)))
        }
    }

    /// The owner typed a code: claims it (throttled), registers the frame with the page's screen.
    func pair(_ body: PairBody, user: String, _ context: GatewayContext) async throws -> Wire.Frame {
        let address = context.clientAddress
        if let wait = throttle.withLock({ $0.beginPairing(user: user, address: address, now: .now) }) {
            Counter(label: "gateway_frame_pairings_total", dimensions: [("result", "throttled")]).increment()
            context.logger.info("pairing attempts throttled", metadata: ["client.address": "\(address ?? "")"])
            throw APIError.tooManyRequests("too many wrong pairing codes", retryAfter: wait)
        }
        var claimed: Pairings.Claimed?
        if let code = Pairings.normalize(body.code) {
            do {
                claimed = try await pairings.claim(code: code, user: user, lifetime: configuration.pairingLifetime)
            } catch {
                // Not judged: the attempt does not count.
                throttle.withLock { $0.pairingSucceeded(user: user, address: address, now: .now) }
                throw error
            }
        }
        guard let claimed else {
            Counter(label: "gateway_frame_pairings_total", dimensions: [("result", "wrong_code")]).increment()
            context.logger.info("a wrong pairing code was typed")
            throw APIError.notFound("no frame is waiting with this code (codes change every 10 minutes)")
        }
        throttle.withLock { $0.pairingSucceeded(user: user, address: address, now: .now) }
        let frame: Wire.Frame
        do {
            let reply = try await album.call(AlbumAPI.registerFrame, RegisterFrameRequest(
                userID: user, name: body.name, width: Int32(claimed.width), height: Int32(claimed.height), orientation: .unspecified,
                albumIDs: body.album_ids ?? []), headers: headers(context))
            frame = try require(reply.frame)
        } catch {
            // The code stays usable: the owner may fix the albums or try again.
            do {
                try await pairings.unclaim(claimed.pairingID)
            } catch let unclaimError {
                context.logger.warning("a pairing code could not be given back", metadata: [
                    "pairing.id": "\(claimed.pairingID)", "error": "\(unclaimError)"])
            }
            throw error
        }
        do {
            try await pairings.attach(claimed.pairingID, frameID: frame.frameID)
        } catch {
            // The page would never hear of this frame: it goes again.
            context.logger.warning("a paired frame could not be recorded; deleting it", metadata: [
                "frame.id": "\(frame.frameID)", "pairing.id": "\(claimed.pairingID)", "error": "\(error)"])
            _ = try? await album.call(AlbumAPI.deleteFrame, DeleteFrameRequest(userID: user, frameID: frame.frameID),
                                      headers: headers(context))
            throw error
        }
        Counter(label: "gateway_frame_pairings_total", dimensions: [("result", "paired")]).increment()
        context.logger.info("browser frame paired", metadata: [
            "frame.id": "\(frame.frameID)", "pairing.id": "\(claimed.pairingID)", "frame.screen": "\(claimed.width)x\(claimed.height)"])
        return frame
    }

    /// The page asks whether it was paired; once it was, it gets its credentials, once.
    func pollPairing(_ id: String, secretHash: String, _ context: GatewayContext) async throws -> JSONBody<PairingStatusJSON> {
        switch try await pairings.state(id, secretHash: secretHash) {
        case .unknown:
            throw APIError.notFound("no such pairing, or it expired")
        case .pending(let expires):
            return JSONBody(body: PairingStatusJSON(status: "pending", expires_at: FileJSON.iso(expires)))
        case .paired:
            break
        }
        guard let (frameID, owner) = try await pairings.beginHandOver(id, secretHash: secretHash) else {
            // Another request is handing the credentials over right now.
            return JSONBody(body: PairingStatusJSON(status: "pending"))
        }
        guard let webSocketURL = configuration.frameWebSocketURL else {
            try await pairings.abandonHandOver(id)
            throw APIError.unavailable("browser frames are not set up on this server: it knows no MQTT WebSocket URL (FRAMECAST_MQTT_WS_URL)")
        }
        do {
            // Made now, handed over once, kept nowhere: a new MQTT password (the one set at
            // registration was never shown to anyone) and a frame token.
            let reply = try await album.call(AlbumAPI.rotateFrameCredentials, RotateFrameCredentialsRequest(userID: owner, frameID: frameID),
                                             headers: headers(context))
            let frame = try require(reply.frame)
            let mqtt = reply.mqtt ?? MqttCredentials()
            // A token of an earlier hand-over that died before answering must not stay valid.
            try await accounts.revokeFrameTokens(frameID: frameID)
            let token = try await accounts.issueFrameToken(frameID: frameID, ownerID: owner)
            try await pairings.remove(id)
            context.logger.info("browser frame credentials handed over", metadata: ["frame.id": "\(frameID)", "pairing.id": "\(id)"])
            return JSONBody(body: PairingStatusJSON(
                status: "paired", frame_id: frameID, frame_token: token,
                mqtt: .init(ws_url: webSocketURL, host: mqtt.host, port: mqtt.port, username: mqtt.username, password: mqtt.password),
                frame: FrameJSON(frame)))
        } catch let error as ServiceError where error.status == .notFound {
            // The owner deleted the frame before the page picked it up: the pairing is over.
            try await pairings.remove(id)
            throw APIError.notFound("the frame paired with this code was deleted")
        } catch {
            do {
                try await pairings.abandonHandOver(id)
            } catch let releaseError {
                context.logger.warning("a failed hand-over could not be released; the next poll waits a minute", metadata: [
                    "pairing.id": "\(id)", "error": "\(releaseError)"])
            }
            throw error
        }
    }
}
