import ArgumentParser
import Foundation
import Logging
import NATS
import Postgres
import ServiceKit
import ServiceLifecycle

@main
struct Framecast: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "framecast",
        abstract: "Family photos from a phone to smart photo frames, live.",
        version: FramecastVersion.current,
        subcommands: [All.self, Migrate.self, Ping.self],
        defaultSubcommand: All.self)
}

/// Options every role shares; each also reads an environment variable.
struct CommonOptions: ParsableArguments {
    @Option(name: .customLong("nats"), help: "NATS server URLs, comma separated (env FRAMECAST_NATS_URL).")
    var natsURL: String = env("FRAMECAST_NATS_URL") ?? "nats://127.0.0.1:4222"

    @Option(name: .customLong("postgres"), help: "libpq conninfo (env FRAMECAST_POSTGRES).")
    var postgres: String = env("FRAMECAST_POSTGRES") ?? "host=127.0.0.1 port=5432 user=postgres dbname=framecast"

    @Option(help: "trace, debug, info, notice, warning, error, critical (env FRAMECAST_LOG_LEVEL).")
    var logLevel: String = env("FRAMECAST_LOG_LEVEL") ?? "info"

    @Option(help: "Replicas of the EVENTS stream (env FRAMECAST_STREAM_REPLICAS).")
    var streamReplicas: Int = env("FRAMECAST_STREAM_REPLICAS").flatMap(Int.init) ?? 1

    func bootstrapLogging() -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: "framecast")
    }

    var natsConfiguration: NATSConfiguration {
        NATSConfiguration(servers: natsURL.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) },
                          name: "framecast")
    }

    var postgresConfiguration: PostgresConfiguration { PostgresConfiguration(connInfo: postgres) }
}

func env(_ name: String) -> String? {
    guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { return nil }
    return value
}

/// Every role in one process: the embedded single-machine default.
struct All: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run every Framecast service in one process (the single-machine default).")

    @OptionGroup var options: CommonOptions

    func run() async throws {
        let logger = options.bootstrapLogging()
        let nats = try await NATSConnection.connect(options.natsConfiguration, logger: logger)
        let jetStream = try nats.jetStream()
        try await EventStream.ensure(on: jetStream, replicas: options.streamReplicas)
        let postgres = PostgresPool(configuration: options.postgresConfiguration, logger: logger)
        _ = try await postgres.query("SELECT 1")
        logger.info("framecast is up", metadata: ["nats.url": "\(options.natsURL)"])

        let group = ServiceGroup(
            services: [IdleUntilShutdown()],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        try await group.run()
        await postgres.close()
        try? await nats.drain()
        logger.info("framecast stopped")
    }
}

/// Holds the process open until SIGTERM/SIGINT while the roles that will join `all` are built.
struct IdleUntilShutdown: Service {
    func run() async throws {
        try? await gracefulShutdown()
    }
}

/// Applies every service schema's migrations and exits.
struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply database migrations and exit.")
    @OptionGroup var options: CommonOptions

    func run() async throws {
        let logger = options.bootstrapLogging()
        let postgres = PostgresPool(configuration: options.postgresConfiguration, logger: logger)
        for schema in ["storage", "album", "media", "gateway"] {
            let applied = try await Migrations.apply(schema: schema, Outbox.migrations(schema: schema), on: postgres, logger: logger)
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
        let inbox = "_INBOX.ping.\(ServiceIdentity.newInstanceID())"
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
