import ArgumentParser
import BlobStore
import Foundation
import Logging
import NATS
import Postgres
import ServiceKit
import ServiceLifecycle
import StorageService
import AlbumService
import MediaService
import Gateway
import Metrics
import Prometheus
import Imaging
import MQTT
import FrameAgent
import Secrets
import Threads

@main
struct Framecast: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "framecast",
        abstract: "Family photos from a phone to smart photo frames, live.",
        version: FramecastVersion.current,
        subcommands: [All.self, GatewayRole.self, Storage.self, Album.self, Media.self, Frame.self, Migrate.self, Ping.self],
        defaultSubcommand: All.self)
}

/// Options every role shares; each also reads an environment variable.
struct CommonOptions: ParsableArguments {
    @Option(name: .customLong("nats"), help: "NATS server URLs, comma separated (env FRAMECAST_NATS_URL).")
    var natsURL: String = env("FRAMECAST_NATS_URL") ?? "nats://127.0.0.1:4222"

    @Option(name: .customLong("postgres"), help: """
        libpq conninfo, without the password: libpq reads PGPASSFILE or PGPASSWORD (env FRAMECAST_POSTGRES). \
        `all` with FRAMECAST_POSTGRES_<ROLE>_USER set for every role connects each role as that user instead \
        (a pool of its own, on the same server and database).
        """)
    var postgres: String = env("FRAMECAST_POSTGRES") ?? "host=127.0.0.1 port=5432 user=postgres dbname=framecast"

    @Option(help: "trace, debug, info, notice, warning, error, critical (env FRAMECAST_LOG_LEVEL).")
    var logLevel: String = env("FRAMECAST_LOG_LEVEL") ?? "info"

    @Option(help: "Replicas of the EVENTS stream (env FRAMECAST_STREAM_REPLICAS).")
    var streamReplicas: Int = env("FRAMECAST_STREAM_REPLICAS").flatMap(Int.init) ?? 1

    @Option(help: """
        NATS user, for servers that require one (env FRAMECAST_NATS_USER; or nats://user:pass@host in the URL). \
        Its reply subjects start with _INBOX.<user>. `all` with FRAMECAST_NATS_<ROLE>_PASSWORD set for every \
        role connects each role as user <role> instead.
        """)
    var natsUser: String? = env("FRAMECAST_NATS_USER")

    @Option(help: "NATS password (env FRAMECAST_NATS_PASSWORD; prefer the environment: flags show in `ps`).")
    var natsPassword: String? = env("FRAMECAST_NATS_PASSWORD")

    @Option(help: "NATS token, for servers configured with token authentication (env FRAMECAST_NATS_TOKEN).")
    var natsToken: String? = env("FRAMECAST_NATS_TOKEN")

    func bootstrapLogging() -> Logger { framecast.bootstrapLogging(level: logLevel, label: "framecast") }

    var natsConfiguration: NATSConfiguration {
        var configuration = NATSConfiguration(
            servers: natsURL.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty },
            name: "framecast")
        configuration.user = natsUser
        configuration.password = natsPassword
        configuration.token = natsToken
        if let natsUser { configuration.inboxPrefix = NATSConfiguration.inboxPrefix(user: natsUser) }
        return configuration
    }

    /// `framecast all`: each role's NATS configuration as user `<role>` with
    /// FRAMECAST_NATS_<ROLE>_PASSWORD (the variables deploy/nats/cluster/accounts.conf reads),
    /// or nil when none of them is set (the roles then share ``natsConfiguration``). Throws
    /// when only some are: a role silently falling back to another identity would fail later
    /// with permission errors instead.
    func perRoleNATSConfigurations(_ roles: [ServiceRole]) throws -> [(ServiceRole, NATSConfiguration)]? {
        if roles.allSatisfy({ env($0.natsPasswordVariable) == nil }) { return nil }
        var configurations: [(ServiceRole, NATSConfiguration)] = []
        for role in roles {
            guard let password = env(role.natsPasswordVariable) else {
                throw ValidationError("""
                    \(role.natsPasswordVariable) is not set: set FRAMECAST_NATS_<ROLE>_PASSWORD for every role \
                    (\(roles.map(\.rawValue).joined(separator: ", "))) or for none
                    """)
            }
            var configuration = natsConfiguration
            configuration.name = "framecast-\(role.rawValue)"
            configuration.user = role.rawValue
            configuration.password = password
            configuration.token = nil
            configuration.inboxPrefix = NATSConfiguration.inboxPrefix(user: role.rawValue)
            configurations.append((role, configuration))
        }
        return configurations
    }

    var postgresConfiguration: PostgresConfiguration { PostgresConfiguration(connInfo: postgres) }

    /// `framecast all`: each role's PostgreSQL user from FRAMECAST_POSTGRES_<ROLE>_USER (the
    /// roles deploy/postgres/roles.sql creates are framecast_<role>), or nil when none of them is
    /// set (the roles then share one pool as ``postgres``'s user). Throws when only some are, as
    /// ``perRoleNATSConfigurations(_:)`` does.
    func perRolePostgresUsers(_ roles: [ServiceRole]) throws -> [ServiceRole: String]? {
        if roles.allSatisfy({ env($0.postgresUserVariable) == nil }) { return nil }
        var users: [ServiceRole: String] = [:]
        for role in roles {
            guard let user = env(role.postgresUserVariable) else {
                throw ValidationError("""
                    \(role.postgresUserVariable) is not set: set FRAMECAST_POSTGRES_<ROLE>_USER for every role \
                    (\(roles.map(\.rawValue).joined(separator: ", "))) or for none
                    """)
            }
            users[role] = user
        }
        return users
    }
}

/// Logs to standard error at `level` (a swift-log level name; info when unknown), once per process.
func bootstrapLogging(level name: String, label: String) -> Logger {
    let level = Logger.Level(rawValue: name) ?? .info
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
    return Logger(label: label)
}

func env(_ name: String) -> String? {
    guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { return nil }
    return value
}

/// The service roles of the executable; each is a NATS user of deploy/nats/cluster/accounts.conf.
enum ServiceRole: String, CaseIterable, Sendable {
    case gateway, storage, album, media

    /// The role's NATS password for `framecast all`; the NATS servers read the same variable.
    var natsPasswordVariable: String { "FRAMECAST_NATS_\(rawValue.uppercased())_PASSWORD" }

    /// The role's PostgreSQL user for `framecast all` (its password comes from libpq: PGPASSFILE).
    var postgresUserVariable: String { "FRAMECAST_POSTGRES_\(rawValue.uppercased())_USER" }

    /// Whether the role publishes or consumes events, so makes sure the EVENTS stream exists.
    var usesEvents: Bool { self != .gateway }
}

/// Every role in one process: the embedded single-machine default.
struct All: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run every Framecast service in one process (the single-machine default).")

    @OptionGroup var options: CommonOptions
    @OptionGroup var storage: StorageOptions
    @OptionGroup var gateway: GatewayOptions
    @OptionGroup var album: AlbumOptions
    @OptionGroup var media: MediaOptions
    @OptionGroup var capability: CapabilityOptions

    func run() async throws {
        // The gateway and the album service share these keys: without a key file, a random
        // ring only this process knows.
        let keys = try capability.settings()
        try await runRoles(options, ServiceRole.allCases, userPerRole: true) { runtimes in
            let publicURL = gateway.publicURL ?? "http://\(gateway.httpHost):\(gateway.httpPort)"
            return try await storage.makeServices(runtimes.runtime(.storage), capabilityLifetime: keys.lifetime)
                + album.makeServices(runtimes.runtime(.album), publicURL: publicURL, capability: keys)
                + media.makeServices(runtimes.runtime(.media), blobDir: storage.blobDir, imagingThreads: storage.imagingThreads,
                                     publicURL: publicURL)
                + gateway.makeServices(runtimes.runtime(.gateway), blobDir: storage.blobDir, capability: keys)
        }
    }
}

/// The keys and lifetime of capability URLs (the frame edge: signed links to a photo's
/// versions). The album service signs the URLs it pushes to frames and the gateway signs and
/// verifies them, so both must have the same keys: from a key file, or, for `framecast all`
/// without one, a random ring that only this process knows.
struct CapabilityOptions: ParsableArguments {
    @Option(help: """
        Key file of capability URLs: one key per line (at least 16 characters; the first signs, \
        every one verifies, so a new key goes first and the old one stays until its URLs expired), \
        mode 0600. Required when the gateway or the album service runs without the other in the \
        same process (env FRAMECAST_CAPABILITY_KEYS).
        """)
    var capabilityKeys: String? = env("FRAMECAST_CAPABILITY_KEYS")

    @Option(help: """
        How long a capability URL stays valid, in seconds; the same for the gateway and the album \
        service (env FRAMECAST_CAPABILITY_LIFETIME; default 604800, 7 days).
        """)
    var capabilityLifetime: String? = env("FRAMECAST_CAPABILITY_LIFETIME")

    /// At least a minute, at most a year.
    func parsedLifetime() throws -> Duration {
        guard let text = capabilityLifetime else { return .seconds(7 * 86_400) }
        guard let seconds = Int64(text), seconds >= 60, seconds <= 366 * 86_400 else {
            throw ValidationError("--capability-lifetime / FRAMECAST_CAPABILITY_LIFETIME must be seconds from 60 to 31622400, not \(text)")
        }
        return .seconds(seconds)
    }

    func validate() throws {
        _ = try parsedLifetime()
    }

    /// A process running `role` without `other`: the key file is required (the two would
    /// otherwise sign and verify with different random keys, and every URL would answer 403).
    func requireKeyFile(running role: String, without other: String) throws {
        guard capabilityKeys == nil else { return }
        throw ValidationError("""
            FRAMECAST_CAPABILITY_KEYS (--capability-keys) is required to run the \(role) without the \(other) in \
            the same process: both must sign and verify capability URLs with the same keys. Give every gateway and \
            album process the same key file: one random line of at least 16 characters, mode 0600, e.g. \
            `(umask 077; head -c 32 /dev/urandom | base64 > capability-keys)`.
            """)
    }

    /// The keys from the key file, or a random ring when there is none.
    func settings() throws -> CapabilitySettings {
        let lifetime = try parsedLifetime()
        guard let path = capabilityKeys else { return CapabilitySettings(keys: .random(), lifetime: lifetime) }
        do {
            return CapabilitySettings(keys: try CapabilityKeys.load(path: path), lifetime: lifetime)
        } catch let error as CapabilityError {
            throw ValidationError("FRAMECAST_CAPABILITY_KEYS: \(error.description)")
        }
    }
}

/// What the gateway and the album service share about capability URLs.
struct CapabilitySettings: Sendable {
    let keys: CapabilityKeys
    let lifetime: Duration
}

/// The HTTP gateway alone.
struct GatewayRole: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gateway", abstract: "Run the HTTP gateway.")
    @OptionGroup var options: CommonOptions
    @OptionGroup var gateway: GatewayOptions
    @OptionGroup var capability: CapabilityOptions

    @Option(help: "Blob store directory shared with the services (env FRAMECAST_BLOB_DIR).")
    var blobDir: String = env("FRAMECAST_BLOB_DIR") ?? ".run/blobs"

    func validate() throws {
        try capability.requireKeyFile(running: "gateway", without: "album service")
    }

    func run() async throws {
        let keys = try capability.settings()
        try await runRoles(options, [.gateway]) { runtimes in
            try await gateway.makeServices(runtimes.runtime(.gateway), blobDir: blobDir, capability: keys)
        }
    }
}

struct GatewayOptions: ParsableArguments {
    @Option(help: "Address the gateway listens on (env FRAMECAST_HTTP_HOST).")
    var httpHost: String = env("FRAMECAST_HTTP_HOST") ?? "127.0.0.1"

    @Option(help: "Port the gateway listens on (env FRAMECAST_HTTP_PORT).")
    var httpPort: Int = env("FRAMECAST_HTTP_PORT").flatMap(Int.init) ?? 8080

    @Option(help: "URL phones and frames reach the gateway at (env FRAMECAST_PUBLIC_URL; default http://HOST:PORT).")
    var publicURL: String? = env("FRAMECAST_PUBLIC_URL")

    @Option(help: "Largest photo accepted, in bytes (env FRAMECAST_MAX_UPLOAD_BYTES).")
    var maxUploadBytes: Int = env("FRAMECAST_MAX_UPLOAD_BYTES").flatMap(Int.init) ?? 50 * 1024 * 1024

    @Option(help: """
        Bytes of recently fetched versions the gateway keeps in memory for capability URLs         (env FRAMECAST_CAPABILITY_CACHE_BYTES; default 33554432, 32 MiB; 0: none).
        """)
    var capabilityCacheBytes: Int = env("FRAMECAST_CAPABILITY_CACHE_BYTES").flatMap(Int.init) ?? 32 << 20

    @Option(help: """
        The MQTT broker's WebSocket URL as browser frames (/frame) reach it, ws://HOST:PORT[/PATH] or \
        wss://… (env FRAMECAST_MQTT_WS_URL; without it, browser frames cannot be paired).
        """)
    var mqttWsURL: String? = env("FRAMECAST_MQTT_WS_URL")

    func makeServices(_ runtime: ServiceRuntime, blobDir: String, capability: CapabilitySettings) async throws -> [any Service] {
        try FileManager.default.createDirectory(atPath: blobDir, withIntermediateDirectories: true)
        var configuration = GatewayConfiguration(blobRoot: blobDir)
        configuration.host = httpHost
        configuration.port = httpPort
        configuration.publicURL = publicURL ?? "http://\(httpHost):\(httpPort)"
        configuration.maxUploadBytes = maxUploadBytes
        configuration.capabilityKeys = capability.keys
        configuration.capabilityLifetime = capability.lifetime
        configuration.capabilityCacheBytes = max(0, capabilityCacheBytes)
        if let mqttWsURL {
            guard GatewayConfiguration.webSocketOrigin(mqttWsURL) != nil else {
                throw ValidationError("--mqtt-ws-url / FRAMECAST_MQTT_WS_URL must be ws://HOST:PORT[/PATH] or wss://…, not \(mqttWsURL.prefix(200))")
            }
            configuration.frameWebSocketURL = mqttWsURL
        }
        let gateway = try Gateway(configuration: configuration, runtime: runtime, registry: metricsRegistry)
        try await gateway.migrate()
        return [gateway.application()]
    }
}

/// The process's Prometheus registry: swift-metrics reports into it, `/metrics` renders it.
let metricsRegistry: PrometheusCollectorRegistry = {
    let registry = PrometheusCollectorRegistry()
    MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    return registry
}()

/// The storage service alone.
struct Storage: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the storage service.")
    @OptionGroup var options: CommonOptions
    @OptionGroup var storage: StorageOptions
    @OptionGroup var ops: OpsOptions

    func run() async throws {
        try await runRoles(options, [.storage]) { runtimes in
            let runtime = try runtimes.runtime(.storage)
            return try await storage.makeServices(runtime) + ops.makeServices(runtime)
        }
    }
}

/// A thread count of 0 or less is refused when the options are read (Imaging traps on it).
func validateImagingThreads(_ threads: Int) throws {
    guard threads > 0 else { throw ValidationError("--imaging-threads / FRAMECAST_IMAGING_THREADS must be at least 1, not \(threads)") }
}

struct StorageOptions: ParsableArguments {
    @Option(help: "Blob store directory shared with the gateway (env FRAMECAST_BLOB_DIR).")
    var blobDir: String = env("FRAMECAST_BLOB_DIR") ?? ".run/blobs"

    @Option(help: "Threads for image analysis (env FRAMECAST_IMAGING_THREADS; default: cores).")
    var imagingThreads: Int = env("FRAMECAST_IMAGING_THREADS").flatMap(Int.init) ?? ProcessInfo.processInfo.activeProcessorCount

    func validate() throws {
        try validateImagingThreads(imagingThreads)
    }

    /// `capabilityLifetime`: the gateways' (`all`); storage alone reads FRAMECAST_CAPABILITY_LIFETIME.
    func makeServices(_ runtime: ServiceRuntime, capabilityLifetime: Duration? = nil) async throws -> [any Service] {
        try FileManager.default.createDirectory(atPath: blobDir, withIntermediateDirectories: true)
        let imaging = Imaging(threads: imagingThreads, logger: runtime.logger)
        var configuration = StorageConfiguration(blobRoot: blobDir)
        // Deletes are kept at least as long as a capability URL can live (gateways catch up on
        // them): its lifetime, the day its expiry is rounded up by, and a margin.
        let lifetime = capabilityLifetime ?? env("FRAMECAST_CAPABILITY_LIFETIME").flatMap(Int64.init).map { Duration.seconds($0) }
        if let lifetime, lifetime > .zero {
            configuration.deletedFileRetention = max(configuration.deletedFileRetention, lifetime + .seconds(2 * 86_400))
        }
        let service = StorageService(runtime: runtime, configuration: configuration, imaging: imaging)
        return try await service.services()
    }
}

/// The album service alone.
struct Album: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the album service (albums, frames, MQTT push).")
    @OptionGroup var options: CommonOptions
    @OptionGroup var album: AlbumOptions
    @OptionGroup var ops: OpsOptions
    @OptionGroup var capability: CapabilityOptions

    func validate() throws {
        try capability.requireKeyFile(running: "album service", without: "gateway")
    }

    func run() async throws {
        let keys = try capability.settings()
        try await runRoles(options, [.album]) { runtimes in
            let runtime = try runtimes.runtime(.album)
            return try await album.makeServices(runtime, capability: keys) + ops.makeServices(runtime)
        }
    }
}

struct AlbumOptions: ParsableArguments {
    @Option(help: "MQTT broker host the album service publishes to (env FRAMECAST_MQTT_HOST).")
    var mqttHost: String = env("FRAMECAST_MQTT_HOST") ?? "127.0.0.1"

    @Option(help: "MQTT broker port (env FRAMECAST_MQTT_PORT).")
    var mqttPort: Int = env("FRAMECAST_MQTT_PORT").flatMap(Int.init) ?? 1883

    @Option(help: "MQTT user of the album service, when the broker requires one (env FRAMECAST_MQTT_USER).")
    var mqttUser: String? = env("FRAMECAST_MQTT_USER")

    @Option(help: "MQTT password (env FRAMECAST_MQTT_PASSWORD; prefer the environment).")
    var mqttPassword: String? = env("FRAMECAST_MQTT_PASSWORD")

    @Option(help: """
        Brokers handed to frames, host:port[,host:port…]: each frame gets one, chosen by a hash of \
        its id (leaf brokers of a tree); default: the service's own (env FRAMECAST_FRAME_MQTT).
        """)
    var frameMQTT: String? = env("FRAMECAST_FRAME_MQTT")

    @Option(help: """
        The gateway's public URL, base of the photo URLs sent to frames (env FRAMECAST_PUBLIC_URL; \
        `all` uses the gateway's --public-url).
        """)
    var gatewayURL: String = env("FRAMECAST_PUBLIC_URL") ?? "http://127.0.0.1:8080"

    /// `publicURL`: the gateway's, when it runs in the same process. `capability`: the keys the
    /// gateway verifies the pushed URLs with.
    func makeServices(_ runtime: ServiceRuntime, publicURL: String? = nil, capability: CapabilitySettings) async throws -> [any Service] {
        let frameBrokers: [FrameBroker]
        do {
            frameBrokers = try frameMQTT.map(FrameBroker.parseList) ?? [FrameBroker(host: mqttHost, port: mqttPort)]
        } catch {
            throw ValidationError("--frame-mqtt / FRAMECAST_FRAME_MQTT: \(error)")
        }
        let mqtt = MQTTConfiguration(host: mqttHost, port: mqttPort, clientID: "album-\(ServiceIdentity.newInstanceID())",
                                     username: mqttUser, password: mqttPassword)
        var configuration = try AlbumConfiguration(mqtt: mqtt, publicGatewayURL: publicURL ?? gatewayURL, frameBrokers: frameBrokers)
        configuration.capabilityKeys = capability.keys
        configuration.capabilityLifetime = capability.lifetime
        let service = try AlbumService(runtime: runtime, configuration: configuration)
        return try await service.services()
    }
}

/// The media service alone.
struct Media: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the media service (photo versions and metadata).")
    @OptionGroup var options: CommonOptions
    @OptionGroup var media: MediaOptions

    @Option(help: "Blob store directory shared with the gateway and storage (env FRAMECAST_BLOB_DIR).")
    var blobDir: String = env("FRAMECAST_BLOB_DIR") ?? ".run/blobs"

    @Option(help: "Threads for rendering (env FRAMECAST_IMAGING_THREADS; default: cores).")
    var imagingThreads: Int = env("FRAMECAST_IMAGING_THREADS").flatMap(Int.init) ?? ProcessInfo.processInfo.activeProcessorCount

    @OptionGroup var ops: OpsOptions

    func validate() throws {
        try validateImagingThreads(imagingThreads)
    }

    func run() async throws {
        try await runRoles(options, [.media]) { runtimes in
            let runtime = try runtimes.runtime(.media)
            return try await media.makeServices(runtime, blobDir: blobDir, imagingThreads: imagingThreads) + ops.makeServices(runtime)
        }
    }
}

struct MediaOptions: ParsableArguments {
    @Option(name: .customLong("media-gateway-url"), help: """
        The gateway's public URL, base of version download URLs (env FRAMECAST_PUBLIC_URL; \
        `all` uses the gateway's --public-url).
        """)
    var mediaGatewayURL: String = env("FRAMECAST_PUBLIC_URL") ?? "http://127.0.0.1:8080"

    /// `publicURL`: the gateway's, when it runs in the same process.
    func makeServices(_ runtime: ServiceRuntime, blobDir: String, imagingThreads: Int,
                      publicURL: String? = nil) async throws -> [any Service] {
        try FileManager.default.createDirectory(atPath: blobDir, withIntermediateDirectories: true)
        let imaging = Imaging(threads: imagingThreads, logger: runtime.logger)
        let service = MediaService(runtime: runtime, configuration: MediaConfiguration(
            blobRoot: blobDir, publicGatewayURL: publicURL ?? mediaGatewayURL), imaging: imaging)
        return try await service.services()
    }
}

/// The PostgreSQL pool of each role a process runs: one pool shared by all, as the user of
/// FRAMECAST_POSTGRES; or, for `framecast all` with FRAMECAST_POSTGRES_<ROLE>_USER set for every
/// role, a pool per role as that role's own user (deploy/postgres/roles.sql: each may use its
/// own schema only), like the per-role NATS connections.
struct RolePools: Sendable {
    let byRole: [ServiceRole: PostgresPool]
    /// Who the roles are on PostgreSQL, for the start-up log ("-": FRAMECAST_POSTGRES's user).
    let users: [String]

    /// Creates the pools (they connect lazily). Throws when only some per-role users are set.
    static func make(_ roles: [ServiceRole], userPerRole: Bool, options: CommonOptions, logger: Logger) throws -> RolePools {
        if userPerRole, let users = try options.perRolePostgresUsers(roles) {
            var byRole: [ServiceRole: PostgresPool] = [:]
            for role in roles {
                var configuration = options.postgresConfiguration
                configuration.user = users[role]
                configuration.applicationName = "framecast-\(role.rawValue)"
                byRole[role] = PostgresPool(configuration: configuration, logger: logger)
            }
            return RolePools(byRole: byRole, users: roles.compactMap { users[$0] })
        }
        let shared = PostgresPool(configuration: options.postgresConfiguration, logger: logger)
        var byRole: [ServiceRole: PostgresPool] = [:]
        for role in roles { byRole[role] = shared }
        return RolePools(byRole: byRole, users: ["-"])
    }

    /// The pool of `role`, one of the roles the pools were made for.
    func pool(_ role: ServiceRole) throws -> PostgresPool {
        guard let pool = byRole[role] else { throw ValidationError("the \(role.rawValue) role has no PostgreSQL pool") }
        return pool
    }

    /// Closes every pool (once each).
    func close() async {
        var seen = Set<ObjectIdentifier>()
        for pool in byRole.values where seen.insert(ObjectIdentifier(pool)).inserted {
            await pool.close()
        }
    }
}

/// The ServiceRuntime of each role a process runs: on PostgreSQL the role's pool (``RolePools``);
/// on NATS either one shared connection, or one connection per role as the role's own user.
struct RoleRuntimes: Sendable {
    let byRole: [ServiceRole: ServiceRuntime]
    let postgres: RolePools
    /// Who the roles are on NATS, for the start-up log.
    let natsUsers: [String]

    /// Connects `roles`. With `userPerRole` and every FRAMECAST_NATS_<ROLE>_PASSWORD set, each
    /// role gets its own connection as user `<role>`; otherwise they share one connection with
    /// the process's NATS identity (FRAMECAST_NATS_USER / FRAMECAST_NATS_PASSWORD, or none).
    /// Either way each role's runtime has that role's PostgreSQL pool.
    static func connect(_ roles: [ServiceRole], userPerRole: Bool, options: CommonOptions, postgres: RolePools,
                        logger: Logger) async throws -> RoleRuntimes {
        var byRole: [ServiceRole: ServiceRuntime] = [:]
        var users: [String] = []
        do {
            if userPerRole, let configurations = try options.perRoleNATSConfigurations(roles) {
                for (role, configuration) in configurations {
                    users.append(role.rawValue)
                    byRole[role] = try await ServiceRuntime.connect(
                        nats: configuration, postgres: postgres.pool(role), streamReplicas: options.streamReplicas,
                        ensureStream: role.usesEvents, logger: logger)
                }
            } else {
                guard let first = roles.first else { throw ValidationError("no role to run") }
                let shared = try await ServiceRuntime.connect(
                    nats: options.natsConfiguration, postgres: postgres.pool(first), streamReplicas: options.streamReplicas,
                    ensureStream: roles.contains(where: \.usesEvents), logger: logger)
                for role in roles {
                    byRole[role] = try ServiceRuntime(nats: shared.nats, jetStream: shared.jetStream,
                                                      postgres: postgres.pool(role), logger: logger)
                }
                users.append(options.natsUser ?? "-")
            }
        } catch {
            for connection in Self.connections(byRole) { connection.close() }
            throw error
        }
        return RoleRuntimes(byRole: byRole, postgres: postgres, natsUsers: users)
    }

    /// The runtime of `role`, one of the roles connected.
    func runtime(_ role: ServiceRole) throws -> ServiceRuntime {
        guard let runtime = byRole[role] else { throw ValidationError("the \(role.rawValue) role is not connected") }
        return runtime
    }

    /// Closes the pools, then drains every NATS connection (once each).
    func close() async {
        await postgres.close()
        for connection in Self.connections(byRole) { try? await connection.drain() }
    }

    private static func connections(_ byRole: [ServiceRole: ServiceRuntime]) -> [NATSConnection] {
        var seen = Set<ObjectIdentifier>()
        return byRole.values.map(\.nats).filter { seen.insert(ObjectIdentifier($0)).inserted }
    }
}

/// Connects the roles' runtimes (see ``RoleRuntimes``), builds their services, runs them in one
/// ServiceGroup until SIGTERM/SIGINT (graceful: in-flight work finishes), then closes the connections.
func runRoles(_ options: CommonOptions, _ roles: [ServiceRole], userPerRole: Bool = false,
              _ build: (RoleRuntimes) async throws -> [any Service]) async throws {
    let logger = options.bootstrapLogging()
    let arenas = MallocArenas.limit()
    logger.debug("malloc arenas", metadata: ["limit": "\(arenas.map(String.init) ?? "from the environment")"])
    let postgres = try RolePools.make(roles, userPerRole: userPerRole, options: options, logger: logger)
    let runtimes: RoleRuntimes
    do {
        runtimes = try await RoleRuntimes.connect(roles, userPerRole: userPerRole, options: options, postgres: postgres, logger: logger)
    } catch {
        await postgres.close()
        throw error
    }
    let services: [any Service]
    do {
        services = try await build(runtimes)
    } catch {
        await runtimes.close()
        throw error
    }
    logger.info("framecast is up", metadata: [
        "nats.url": "\(options.natsURL)", "nats.users": "\(runtimes.natsUsers.joined(separator: ","))",
        "postgres.users": "\(runtimes.postgres.users.joined(separator: ","))", "services": "\(services.count)",
    ])
    let group = ServiceGroup(configuration: .init(
        services: services.map { .init(service: $0) },
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger))
    do {
        try await group.run()
    } catch {
        logger.error("a service failed", metadata: ["error": "\(error)"])
        await runtimes.close()
        throw error
    }
    await runtimes.close()
    logger.info("framecast stopped")
}

/// The smart-frame agent: MQTT from the broker, HTTP to the gateway, a disk cache and a display.
struct Frame: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a frame agent (a real frame, or a simulator with a png: display).",
        discussion: """
            Reads a JSON file (the answer of POST /api/v1/frames saved as is, plus optional gateway_url, \
            display, screen, cache_dir, cache_bytes, heartbeat_seconds), then the environment, then flags; \
            later ones win.
            """)

    @Option(help: "JSON configuration file, e.g. the registration answer (env FRAMECAST_FRAME_CONFIG).")
    var config: String?
    @Option(help: "Frame id (env FRAMECAST_FRAME_ID).") var frameID: String?
    @Option(help: "Frame token (env FRAMECAST_FRAME_TOKEN).") var frameToken: String?
    @Option(help: "MQTT broker host (env FRAMECAST_FRAME_MQTT_HOST).") var mqttHost: String?
    @Option(help: "MQTT broker port (env FRAMECAST_FRAME_MQTT_PORT; default 1883).") var mqttPort: Int?
    @Option(help: "MQTT username (env FRAMECAST_FRAME_MQTT_USERNAME).") var mqttUsername: String?
    @Option(help: "MQTT password (env FRAMECAST_FRAME_MQTT_PASSWORD).") var mqttPassword: String?
    @Option(help: "Gateway URL, e.g. http://127.0.0.1:8080 (env FRAMECAST_GATEWAY_URL).") var gateway: String?
    @Option(help: "Disk cache folder (env FRAMECAST_FRAME_CACHE_DIR; default .run/frames/ID).") var cacheDir: String?
    @Option(help: "Disk cache budget in bytes (env FRAMECAST_FRAME_CACHE_BYTES; default 536870912).") var cacheBytes: Int64?
    @Option(help: "png:PATH, fb:/dev/fb0 or none (env FRAMECAST_FRAME_DISPLAY; default none).") var display: String?
    @Option(help: "Screen WxH, e.g. 1024x600 (env FRAMECAST_FRAME_SCREEN; default: the file's frame.width/height).") var screen: String?
    @Option(help: "Heartbeat period in seconds (env FRAMECAST_FRAME_HEARTBEAT_SECONDS; default 30).") var heartbeatSeconds: Int?
    @Option(help: "trace, debug, info, notice, warning, error, critical (env FRAMECAST_LOG_LEVEL).")
    var logLevel: String = env("FRAMECAST_LOG_LEVEL") ?? "info"

    func run() async throws {
        let logger = bootstrapLogging(level: logLevel, label: "framecast.frame")
        MallocArenas.limit()
        typealias S = FrameAgentConfiguration.Setting
        var settings: [String: String] = [:]
        for name in S.all { if let value = env(name) { settings[name] = value } }
        let flags: [(String, String?)] = [
            (S.frameID, frameID), (S.frameToken, frameToken), (S.mqttHost, mqttHost), (S.mqttPort, mqttPort.map(String.init)),
            (S.mqttUsername, mqttUsername), (S.mqttPassword, mqttPassword), (S.gatewayURL, gateway), (S.cacheDirectory, cacheDir),
            (S.cacheBytes, cacheBytes.map(String.init)), (S.display, display), (S.screen, screen),
            (S.heartbeatSeconds, heartbeatSeconds.map(String.init)),
        ]
        for (name, value) in flags { if let value { settings[name] = value } }
        var file: [UInt8]?
        if let path = config ?? settings[S.configFile] {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ValidationError("cannot read the configuration file \(path)")
            }
            file = [UInt8](data)
        }
        let configuration: FrameAgentConfiguration
        do {
            configuration = try FrameAgentConfiguration.load(file: file, settings: settings)
        } catch let error as FrameAgentError {
            throw ValidationError(error.message)
        }
        let agent = try FrameAgent(configuration: configuration, logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: agent)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// Applies every service schema's migrations and exits. It connects as FRAMECAST_POSTGRES's
/// user: with a role per service (deploy/postgres/roles.sql), an administrator, who applies
/// each schema's migrations as the schema's owner (``Migrations/apply(schema:_:on:logger:)``),
/// the blob store's (`blobs`, which no service may change) included.
struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply database migrations and exit.")
    @OptionGroup var options: CommonOptions

    func run() async throws {
        let logger = options.bootstrapLogging()
        let postgres = PostgresPool(configuration: options.postgresConfiguration, logger: logger)
        // Services get ServiceKit's outbox tables first; the gateway has no events. The blob
        // store's references come before storage and media (their migrations fill them).
        let schemas: [(String, [Migration])] = [
            (BlobReferences.schema, BlobReferences.migrations),
            (StorageService.schema, Outbox.migrations(schema: StorageService.schema) + StorageService.migrations),
            (AlbumService.schema, Outbox.migrations(schema: AlbumService.schema) + AlbumService.migrations),
            (MediaService.schema, Outbox.migrations(schema: MediaService.schema) + MediaService.migrations),
            (Accounts.schema, Gateway.migrations),
        ]
        for (schema, migrations) in schemas {
            let applied = try await Migrations.apply(schema: schema, migrations, on: postgres, logger: logger)
            logger.info("migrated", metadata: ["db.schema": "\(schema)", "migrations.applied": "\(applied)"])
        }
        await postgres.close()
    }
}

/// Lists the Framecast services answering on NATS (`$SRV.PING`).
struct Ping: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the services answering on NATS.")
    @OptionGroup var options: CommonOptions

    func run() async throws {
        let logger = options.bootstrapLogging()
        let nats = try await NATSConnection.connect(options.natsConfiguration, logger: logger)
        // Under the user's inbox prefix: a server may let each user read only its own replies.
        let inbox = try nats.newInbox()
        try await nats.subscribe(inbox) { replies in
            try nats.publish("$SRV.PING", payload: [], reply: inbox)
            try await nats.flush()
            let deadline = ContinuousClock.now + .milliseconds(500)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await reply in replies {
                        FileHandle.standardOutput.write(Data(reply.payload + [10]))
                    }
                }
                try await Task.sleep(until: deadline)
                group.cancelAll()
            }
        }
        nats.close()
    }
}
