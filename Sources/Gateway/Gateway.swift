import BlobStore
import Foundation
import Hummingbird
import Logging
import NATS
import Postgres
import Prometheus
import Secrets
import ServiceKit
import ServiceLifecycle
import Threads
import Wire

/// Settings of the gateway.
public struct GatewayConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    /// The base URL phones and frames reach the gateway at (used in links it hands out).
    public var publicURL = "http://127.0.0.1:8080"
    /// Root of the blob store shared with the services.
    public var blobRoot: String
    /// The largest photo accepted, in bytes.
    public var maxUploadBytes = 50 * 1024 * 1024
    /// How long a service may take to answer before the gateway answers 503.
    public var serviceTimeout: Duration = .seconds(10)
    /// A client must send a request's head, and a JSON body, within this time: a slower one
    /// gets 408 or its connection closed. Also how long an idle keep-alive connection stays
    /// open, and the longest pause allowed within an upload.
    public var readTimeout: Duration = .seconds(15)
    /// The longest an upload's body may take to arrive (408 after it).
    public var uploadTimeout: Duration = .seconds(600)
    /// Login and sign-up attempts allowed per account and per client address.
    public var throttle = ThrottleConfiguration()
    /// Bearer tokens found valid are trusted for this long without asking PostgreSQL again
    /// (revocations reach every replica at once over NATS; the TTL bounds a missed one).
    public var tokenCache = TokenCacheConfiguration()

    /// The keys capability URLs are signed and verified with (``CapabilityKeys``: the first
    /// signs, every one verifies). The album service signs the URLs it pushes to frames with the
    /// same keys, so every process running the gateway or the album service must have them:
    /// `framecast` loads them from `FRAMECAST_CAPABILITY_KEYS`; a random ring serves only a
    /// process that runs both (`framecast all`) and tests.
    public var capabilityKeys: CapabilityKeys = .random()
    /// How long a capability URL signed now stays valid (its expiry is then rounded up to a
    /// whole day, so a version keeps one URL all day). Deleted photos are remembered for this
    /// plus that day and an hour of clock skew (``capabilityHorizon``): the album service must
    /// not sign for longer, and storage must keep deletes at least as long
    /// (``StorageConfiguration/deletedFileRetention``).
    public var capabilityLifetime: Duration = .seconds(7 * 86_400)
    /// The hot cache of blobs served through capability URLs: at most this many bytes in memory.
    /// (32 MiB: a few hundred frame-sized versions, far more than the photos an album's frames
    /// fetch at once; every version the soak benchmark's frames fetch is a miss, so the cache
    /// is memory that fills and then stays at this bound.)
    public var capabilityCacheBytes = 32 << 20
    /// The largest blob the hot cache keeps (a larger one is streamed from its file each time).
    public var capabilityCacheEntryBytes = 8 << 20
    /// Where browser frames (`GET /frame`) reach the MQTT broker over WebSockets, e.g.
    /// `ws://127.0.0.1:9001` (mosquitto's `listener PORT` + `protocol websockets`; `wss://`
    /// behind TLS). Handed to a page when it is paired, and allowed by the page's
    /// Content-Security-Policy. Every frame broker holds every frame's identity, so one URL
    /// serves all frames. Nil: browser frames cannot be paired (503).
    public var frameWebSocketURL: String?
    /// How long a pairing code shown by a browser frame stays valid.
    public var pairingLifetime: Duration = .seconds(600)

    public init(blobRoot: String) {
        self.blobRoot = blobRoot
    }

    /// The origin of a WebSocket URL (`ws://127.0.0.1:9001` of `ws://127.0.0.1:9001/mqtt`), as a
    /// Content-Security-Policy source; nil unless `url` is `ws://` or `wss://` with a host made
    /// of letters, digits, `.`, `-`, `:`, `[` and `]` (no user info, query or fragment).
    public static func webSocketOrigin(_ url: String) -> String? {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
              scheme == "ws" || scheme == "wss", let host = components.host, !host.isEmpty,
              components.user == nil, components.password == nil, components.query == nil, components.fragment == nil,
              let start = url.range(of: "://") else { return nil }
        let authority = url[start.upperBound...].prefix { $0 != "/" }
        guard !authority.isEmpty, authority.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || ".-:[]".contains($0)) }) else {
            return nil
        }
        return "\(scheme)://\(authority.lowercased())"
    }
}

/// The only HTTP server of Framecast: REST for phones, photo metadata and downloads for
/// frames, and the family web app at `/`. It authenticates callers and forwards every
/// operation to a service over NATS.
public final class Gateway: Sendable {
    let configuration: GatewayConfiguration
    let runtime: ServiceRuntime
    let accounts: Accounts
    /// Pairing codes of browser frames (Pairings.swift).
    let pairings: Pairings
    /// Token hash → principal, in front of PostgreSQL.
    let tokenCache: TokenCache
    /// Keeps `tokenCache` honest across replicas (a service of ``application()``).
    let tokenRevocations: TokenRevocations
    /// Deleted photos whose capability URLs answer 404 (a service of ``application()``).
    let capabilityRevocations: CapabilityRevocations
    /// Blobs recently served through capability URLs, in memory.
    let blobCache: BlobCache
    /// Capability paths verified recently (their HMAC is not computed again).
    let verifiedPaths = VerifiedPaths(capacity: 4096)
    let blobs: BlobStore
    let storage: ServiceClient
    let album: ServiceClient
    let media: ServiceClient
    let registry: PrometheusCollectorRegistry
    let logger: Logger
    /// fsync and other blocking file work of uploads.
    let files: BlockingPool
    /// Reads of blobs for the capability route's hot cache: their own threads, so a fan-out's
    /// first reads never wait behind an upload's fsync.
    let capabilityFiles: BlockingPool
    let routes = Locked<[RouteDescription]>([])
    /// Login and sign-up attempts, per account and per client address (this process only).
    let throttle: Locked<LoginThrottle>

    public init(configuration: GatewayConfiguration, runtime: ServiceRuntime, registry: PrometheusCollectorRegistry,
                passwordStrength: PasswordHasher.Strength = .interactive) throws {
        self.configuration = configuration
        self.runtime = runtime
        var logger = runtime.logger
        logger[metadataKey: "service.name"] = "gateway"
        let nats = runtime.nats
        let tokenCache = TokenCache(configuration: configuration.tokenCache,
                                    connectionChanges: { nats.connectionChanges }, logger: logger)
        let tokenRevocations = TokenRevocations(cache: tokenCache, nats: nats, logger: logger)
        self.tokenCache = tokenCache
        self.tokenRevocations = tokenRevocations
        self.accounts = try Accounts(postgres: runtime.postgres, strength: passwordStrength, revocations: tokenRevocations)
        self.pairings = Pairings(postgres: runtime.postgres)
        self.blobs = BlobStore(path: configuration.blobRoot)
        let storage = ServiceClient(service: StorageAPI.service, nats: runtime.nats, timeout: configuration.serviceTimeout)
        self.storage = storage
        self.album = ServiceClient(service: AlbumAPI.service, nats: runtime.nats, timeout: configuration.serviceTimeout)
        self.media = ServiceClient(service: MediaAPI.service, nats: runtime.nats, timeout: configuration.serviceTimeout)
        self.capabilityRevocations = CapabilityRevocations(
            nats: nats, storage: storage, horizon: Gateway.capabilityHorizon(lifetime: configuration.capabilityLifetime), logger: logger)
        self.registry = registry
        self.logger = logger
        self.files = BlockingPool(name: "gateway-files", threadCount: 2)
        let capabilityFiles = BlockingPool(name: "gateway-capability", threadCount: 2)
        self.capabilityFiles = capabilityFiles
        self.blobCache = BlobCache(capacity: configuration.capabilityCacheBytes, entryLimit: configuration.capabilityCacheEntryBytes,
                                   pool: capabilityFiles)
        self.throttle = Locked(LoginThrottle(configuration.throttle))
    }

    deinit {
        files.shutdown()
        capabilityFiles.shutdown()
    }

    /// The longest a capability URL can live: its lifetime, the day its expiry is rounded up by
    /// (``CapabilityPath/expiry(now:lifetime:)``), and an hour for the signer's clock running
    /// ahead. Deletes are remembered (and caught up on) this far back, and the route refuses a
    /// URL that expires later than this from now.
    static func capabilityHorizon(lifetime: Duration) -> Duration {
        max(lifetime, .zero) + .seconds(86_400 + 3600)
    }

    var capabilityHorizon: Duration { Self.capabilityHorizon(lifetime: configuration.capabilityLifetime) }

    /// The gateway schema's migrations: accounts and tokens, then browser frames' pairings.
    public static let migrations: [Migration] = Accounts.migrations + Pairings.migrations

    /// Migrates the gateway schema, and the blob store's references (an upload nobody
    /// registered is removed through them).
    public func migrate() async throws {
        try await BlobReferences.migrate(on: runtime.postgres, logger: logger)
        _ = try await Migrations.apply(schema: Accounts.schema, Self.migrations, on: runtime.postgres, logger: logger)
    }

    /// The HTTP application (a Service) on the configured host and port. A connection that
    /// sends no complete request head, or no part of a body, for ``GatewayConfiguration/readTimeout``
    /// is closed (Hummingbird's idle timeout); JSON bodies and uploads also have a total deadline.
    /// The token revocations subscription (``TokenRevocations``) and the capability URL
    /// revocations (``CapabilityRevocations``) run inside it, for as long as it serves.
    public func application() -> some ApplicationProtocol {
        let (seconds, attoseconds) = configuration.readTimeout.components
        return Application(
            responder: EdgeResponder(gateway: self, router: router().buildResponder()),
            server: .http1(configuration: .init(idleTimeout: .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000))),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "framecast"),
            services: [tokenRevocations, capabilityRevocations],
            logger: logger)
    }

    /// Every route, in one table: the router is built from it and the OpenAPI test reads it.
    public var routeTable: [RouteDescription] { routes.current }

    public func router() -> Router<GatewayContext> {
        let router = Router(context: GatewayContext.self)
        router.add(middleware: RequestIDMiddleware())
        router.add(middleware: MetricsMiddleware())
        router.add(middleware: ErrorMiddleware())
        routes.withLock { $0 = [] }

        add(router, .get, "/healthz", auth: false) { _, _ in HealthResponse(status: "ok") }
        add(router, .get, "/readyz", auth: false) { [self] _, _ in try await readiness() }
        add(router, .get, "/metrics", auth: false) { [self] _, _ in metrics() }
        add(router, .get, "/openapi.yaml", auth: false) { _, _ in
            Response(status: .ok, headers: [.contentType: OpenAPI.contentType], body: .init(byteBuffer: OpenAPI.body))
        }

        add(router, .post, "/api/v1/auth/signup", auth: false) { [self] request, context in
            if let wait = throttle.withLock({ $0.beginSignUp(address: context.clientAddress, now: .now) }) {
                context.logger.info("sign-up throttled", metadata: ["client.address": "\(context.clientAddress ?? "")"])
                throw APIError.tooManyRequests("too many sign-ups from this address", retryAfter: wait)
            }
            let body = try await request.decode(as: SignUpRequest.self, context: context)
            try TextInput.name(body.name, "name")
            return Created(try await accounts.signUp(email: body.email, password: body.password, name: body.name))
        }
        add(router, .post, "/api/v1/auth/login", auth: false) { [self] request, context in
            let body = try await request.decode(as: LoginRequest.self, context: context)
            return try await login(body, context)
        }
        add(router, .post, "/api/v1/auth/logout") { [self] _, context in
            _ = try context.requireUser()
            if let hash = context.tokenHash { try await accounts.revoke(tokenHash: hash) }
            return Response(status: .noContent)
        }

        add(router, .post, "/api/v1/storage/photos/upload") { [self] request, context in try await upload(request, context) }
        add(router, .get, "/api/v1/storage/files") { [self] request, context in try await listFiles(request, context) }
        add(router, .get, "/api/v1/storage/files/:file_id") { [self] request, context in
            FileJSON(try await file(request, context))
        }
        add(router, .delete, "/api/v1/storage/files/:file_id") { [self] request, context in
            let user = try context.requireUser()
            let id = try context.parameters.require("file_id")
            _ = try await storage.call(StorageAPI.deleteFile, DeleteFileRequest(userID: user, fileID: id),
                                       headers: headers(context))
            // Committed: its capability URLs answer 404 here at once (the other replicas hear
            // `file.deleted` in a moment).
            capabilityRevocations.revoke(id)
            return Response(status: .noContent)
        }
        add(router, .get, "/api/v1/files/download/:file_id") { [self] request, context in try await download(request, context) }
        add(router, .get, "/api/v1/photos/:file_id") { [self] _, context in try await photoMetadata(context) }
        // The frame edge: a signed URL is its own authorisation (Capabilities.swift).
        add(router, .get, CapabilityRoute.path, auth: false) { [self] request, context in try await serveCapability(request, context) }
        registerAlbumRoutes(router)
        // Browser frames pair by code (Pairings.swift): `/api/v1/frames/pair` and `/pairings`.
        registerPairingRoutes(router)
        registerFrameRoutes(router)
        registerPlaylistRoutes(router)
        // The family web app: its page at `/`, its files under `/app/`; the browser frame at
        // `/frame` with its service worker at `/frame-sw.js` (WebApp.swift).
        registerWebAppRoutes(router)
        return router
    }

    public struct RouteDescription: Sendable, Hashable {
        public let method: String
        /// OpenAPI form: `/api/v1/storage/files/{file_id}`.
        public let path: String
        public let authenticated: Bool
    }

    /// Registers a route, records it in the route table, and (unless `auth: false`) requires a
    /// valid bearer token before the handler runs.
    func add<Output: ResponseGenerator>(
        _ router: Router<GatewayContext>, _ method: HTTPRequest.Method, _ path: String, auth: Bool = true,
        _ handler: @escaping @Sendable (Request, GatewayContext) async throws -> Output
    ) {
        let openAPIPath = path.split(separator: "/", omittingEmptySubsequences: false).map { part in
            part.hasPrefix(":") ? "{\(part.dropFirst())}" : String(part)
        }.joined(separator: "/")
        routes.withLock { $0.append(RouteDescription(method: method.rawValue.lowercased(), path: openAPIPath, authenticated: auth)) }
        router.on(RouterPath(path), method: method) { [self] request, context in
            var context = context
            context.readTimeout = configuration.readTimeout
            if auth { try await authenticate(request, &context) }
            return try await handler(request, context)
        }
    }

    /// Finds the bearer token's holder in the token cache, or in PostgreSQL (then caches it).
    func authenticate(_ request: Request, _ context: inout GatewayContext) async throws {
        guard let header = request.headers[.authorization], header.count > 7,
              header.prefix(7).lowercased() == "bearer ",
              let hash = Accounts.tokenHash(String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)) else {
            throw APIError.unauthenticated
        }
        let principal: Principal
        switch tokenCache.lookup(hash) {
        case .hit(let cached):
            principal = cached
        case .miss(let ticket):
            guard let found = try await accounts.authenticate(tokenHash: hash) else { throw APIError.unauthenticated }
            if let ticket { tokenCache.fill(ticket, hash: hash, principal: found) }
            principal = found
        }
        context.principal = principal
        context.tokenHash = hash
        context.logger[metadataKey: "user.id"] = "\(principal.userID)"
    }

    /// A login, throttled: an attempt spends a token of the account and of the client address
    /// before the password is checked; with none left the answer is 429 with `Retry-After`
    /// (and the password is not even checked). A correct password forgives the account's
    /// failures.
    func login(_ body: LoginRequest, _ context: GatewayContext) async throws -> Accounts.Session {
        let attempt = LoginThrottle.login(email: body.email, address: context.clientAddress)
        if let wait = throttle.withLock({ $0.begin(attempt, now: .now) }) {
            context.logger.info("login throttled", metadata: ["client.address": "\(context.clientAddress ?? "")"])
            throw APIError.tooManyRequests("too many failed logins", retryAfter: wait)
        }
        do {
            let session = try await accounts.login(email: body.email, password: body.password)
            throttle.withLock { $0.succeeded(attempt, now: .now) }
            return session
        } catch let error as APIError where error.status == .unauthorized {
            throw error
        } catch {
            throttle.withLock { $0.undecided(attempt, now: .now) }
            throw error
        }
    }

    /// NATS headers for a service call made on behalf of this request.
    func headers(_ context: GatewayContext) -> NATSHeaders {
        var headers = NATSHeaders()
        headers["X-Request-Id"] = context.requestID
        return headers
    }

    // MARK: Health and metrics

    struct HealthResponse: ResponseEncodable {
        let status: String
        var checks: [String: String]? = nil
    }

    func readiness() async throws -> Response {
        var checks: [String: String] = [:]
        checks["nats"] = runtime.nats.isConnected ? "ok" : "disconnected"
        do {
            _ = try await runtime.postgres.query("SELECT 1")
            checks["postgres"] = "ok"
        } catch {
            checks["postgres"] = "unreachable"
        }
        let ready = checks.values.allSatisfy { $0 == "ok" }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let body = try encoder.encode(HealthResponse(status: ready ? "ready" : "not_ready", checks: checks))
        return Response(status: ready ? .ok : .serviceUnavailable, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    func metrics() -> Response {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                        body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
    }
}

/// A 201 response with a JSON body.
struct Created<Body: Encodable & Sendable>: ResponseGenerator {
    let body: Body
    init(_ body: Body) { self.body = body }
    func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = try context.responseEncoder.encode(body, from: request, context: context)
        response.status = .created
        return response
    }
}

extension Accounts.Session: ResponseEncodable {}

struct SignUpRequest: Decodable {
    let email: String
    let password: String
    let name: String
}

struct LoginRequest: Decodable {
    let email: String
    let password: String
}
