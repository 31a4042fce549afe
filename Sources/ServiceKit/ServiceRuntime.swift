import Logging
import NATS
import Postgres
import ServiceLifecycle

/// What a service needs to run: a NATS connection (with JetStream), a PostgreSQL pool, a
/// logger. `framecast all` builds one per role, each on its own NATS connection (the role's
/// NATS user) and its own pool (the role's PostgreSQL user, FRAMECAST_POSTGRES_<ROLE>_USER);
/// tests build one and hand it to every service.
public struct ServiceRuntime: Sendable {
    public let nats: NATSConnection
    public let jetStream: JetStream
    public let postgres: PostgresPool
    public let logger: Logger

    public init(nats: NATSConnection, jetStream: JetStream, postgres: PostgresPool, logger: Logger) {
        self.nats = nats
        self.jetStream = jetStream
        self.postgres = postgres
        self.logger = logger
    }

    /// Connects to NATS and, unless `ensureStream` is false, makes sure the `EVENTS` stream
    /// exists (a role that neither publishes nor consumes events, the gateway, skips it and
    /// needs no JetStream permission). `postgres` may be shared with other runtimes: the
    /// caller closes it, and drains the NATS connection, when the services are done.
    ///
    /// In a cluster, JetStream may not answer for a few seconds (a node that just restarted
    /// is catching up, a leader is being elected): creating the stream is retried for up to
    /// `jetStreamWait` before the process gives up, instead of exiting at the first timeout.
    public static func connect(nats: NATSConfiguration, postgres: PostgresPool, streamReplicas: Int = 1,
                               ensureStream: Bool = true, jetStreamWait: Duration = .seconds(60),
                               logger: Logger) async throws -> ServiceRuntime {
        let connection = try await NATSConnection.connect(nats, logger: logger)
        let jetStream = try connection.jetStream()
        let deadline = ContinuousClock.now + jetStreamWait
        while ensureStream {
            do {
                try await EventStream.ensure(on: jetStream, replicas: streamReplicas)
                break
            } catch let error as NATSError where [.timeout, .noResponders].contains(error.code) && ContinuousClock.now < deadline {
                logger.warning("JetStream is not answering yet; retrying", metadata: ["error": "\(error)"])
                try await Task.sleep(for: .seconds(1))
            } catch {
                connection.close()
                throw error
            }
        }
        return ServiceRuntime(nats: connection, jetStream: jetStream, postgres: postgres, logger: logger)
    }

    /// The pieces of one service, ready for a ServiceGroup: it migrates the schema (ServiceKit's
    /// outbox tables, then the service's own), and returns the request server, the outbox
    /// relay and the event consumers the service needs.
    public func services(identity: ServiceIdentity, schema: String, migrations: [Migration], endpoints: [Endpoint],
                         events: [EventHandler], relay: OutboxRelay?) async throws -> [any Service] {
        let applied = try await Migrations.apply(schema: schema, Outbox.migrations(schema: schema) + migrations,
                                                 on: postgres, logger: logger)
        if !applied.isEmpty {
            logger.info("migrated", metadata: ["db.schema": "\(schema)", "migrations.applied": "\(applied)"])
        }
        var services: [any Service] = []
        if !endpoints.isEmpty {
            services.append(RequestService(identity: identity, endpoints: endpoints, nats: nats, logger: logger))
        }
        if let relay { services.append(relay) }
        if !events.isEmpty {
            services.append(EventConsumerService(service: identity.name, schema: schema, handlers: events,
                                                 jetStream: jetStream, postgres: postgres, logger: logger))
        }
        return services
    }

    /// An outbox relay for `schema` on this runtime's connections.
    public func outboxRelay(schema: String) -> OutboxRelay {
        OutboxRelay(schema: schema, postgres: postgres, jetStream: jetStream, logger: logger)
    }
}
