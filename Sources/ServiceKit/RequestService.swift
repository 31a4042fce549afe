import Foundation
import Logging
import Metrics
import NATS
import ServiceLifecycle
import Threads
import Wire

/// What a request handler knows about the request besides its message.
public struct CallContext: Sendable {
    public let method: String
    public let subject: String
    public let headers: NATSHeaders
    /// Carries `request.id` (the `X-Request-Id` header, when the caller sent one) and the method.
    public let logger: Logger
}

/// One request/reply method, `svc.<service>.v1.<Method>`: decodes the request message,
/// runs the handler, encodes its reply into a ``Reply`` envelope.
public struct Endpoint: Sendable {
    public let method: String
    let handle: @Sendable ([UInt8], CallContext) async throws -> [UInt8]

    public init<Request: WireMessage, Response: WireMessage>(
        _ method: String,
        _ handler: @escaping @Sendable (Request, CallContext) async throws -> Response
    ) {
        self.method = method
        self.handle = { bytes, context in
            let request: Request
            do {
                request = try Request(wireBytes: bytes)
            } catch {
                throw ServiceError.invalid("malformed \(Request.self): \(error)")
            }
            return try await handler(request, context).wireBytes()
        }
    }

    /// An endpoint for a method of the wire contract (`StorageAPI.registerUpload`…), so the
    /// request and reply types cannot drift from the contract.
    public init<Request: WireMessage, Response: WireMessage>(
        _ method: WireMethod<Request, Response>,
        _ handler: @escaping @Sendable (Request, CallContext) async throws -> Response
    ) {
        self.init(method.method, handler)
    }
}

/// Serves a service's endpoints on `svc.<name>.v1.<Method>` in queue group `<name>`, and
/// answers the NATS micro-service discovery protocol (`$SRV.PING|INFO|STATS`, optionally
/// followed by `.<name>` and `.<name>.<id>`) like nats.go's `micro` package does.
///
/// On graceful shutdown it stops taking requests (unsubscribes), lets the in-flight ones
/// finish and answer, then returns.
public final class RequestService: Service, Sendable {
    public let identity: ServiceIdentity
    let endpoints: [Endpoint]
    let nats: NATSConnection
    let logger: Logger
    let maxConcurrentRequests: Int
    let stats: Locked<[String: EndpointStats]>
    let started = Date()

    struct EndpointStats: Sendable {
        var requests = 0
        var errors = 0
        var lastError = ""
        var processingNanoseconds: Int64 = 0
    }

    public init(identity: ServiceIdentity, endpoints: [Endpoint], nats: NATSConnection, logger: Logger,
                maxConcurrentRequests: Int = 64) {
        self.identity = identity
        self.endpoints = endpoints
        self.nats = nats
        self.logger = logger
        self.maxConcurrentRequests = maxConcurrentRequests
        self.stats = Locked(Dictionary(uniqueKeysWithValues: endpoints.map { ($0.method, EndpointStats()) }))
    }

    public func subject(for method: String) -> String { Subjects.request(service: identity.name, method: method) }

    public func run() async throws {
        logger.info("serving requests", metadata: [
            "service.name": "\(identity.name)", "service.id": "\(identity.instanceID)",
            "service.endpoints": "\(endpoints.map(\.method).joined(separator: ","))",
        ])
        try await withThrowingDiscardingTaskGroup { group in
            for endpoint in endpoints {
                group.addTask { try await self.serve(endpoint) }
            }
            for suffix in ["", ".\(identity.name)", ".\(identity.name).\(identity.instanceID)"] {
                group.addTask { try await self.serveDiscovery("$SRV.*\(suffix)") }
            }
        }
        logger.info("stopped serving requests", metadata: ["service.name": "\(identity.name)"])
    }

    private func serve(_ endpoint: Endpoint) async throws {
        let subject = subject(for: endpoint.method)
        try await nats.subscribe(subject, queue: identity.name) { subscription in
            try await withThrowingTaskGroup(of: Void.self) { inFlight in
                var running = 0
                for try await message in subscription.cancelOnGracefulShutdown() {
                    if running >= maxConcurrentRequests {
                        _ = try await inFlight.next()
                        running -= 1
                    }
                    inFlight.addTask { await self.handle(message, endpoint) }
                    running += 1
                }
                try await inFlight.waitForAll()
            }
        }
    }

    private func handle(_ message: NATSMessage, _ endpoint: Endpoint) async {
        let start = ContinuousClock.now
        var logger = self.logger
        logger[metadataKey: "rpc.method"] = "\(endpoint.method)"
        if let requestID = message.headers["X-Request-Id"] { logger[metadataKey: "request.id"] = "\(requestID)" }
        let context = CallContext(method: endpoint.method, subject: message.subject, headers: message.headers, logger: logger)

        let reply: Reply
        do {
            let body = try await endpoint.handle(message.payload, context)
            reply = Reply(status: .ok, message: "", body: body)
        } catch let error as ServiceError {
            reply = Reply(status: error.status, message: error.message, body: [])
        } catch {
            logger.error("request failed", metadata: ["error": "\(error)"])
            reply = Reply(status: .internal, message: "internal error", body: [])
        }

        let elapsed = ContinuousClock.now - start
        let nanos = elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
        let failed = reply.status != .ok
        stats.withLock { all in
            var entry = all[endpoint.method] ?? EndpointStats()
            entry.requests += 1
            entry.processingNanoseconds += nanos
            if failed {
                entry.errors += 1
                entry.lastError = "\(reply.status): \(reply.message)"
            }
            all[endpoint.method] = entry
        }
        let dimensions = [("service", identity.name), ("method", endpoint.method), ("status", "\(reply.status)")]
        Counter(label: "rpc_server_requests_total", dimensions: dimensions).increment()
        Metrics.Timer(label: "rpc_server_duration_seconds", dimensions: [("service", identity.name), ("method", endpoint.method)])
            .recordNanoseconds(nanos)

        guard let replyTo = message.reply else {
            logger.debug("request without a reply subject dropped")
            return
        }
        var headers = NATSHeaders()
        if failed {
            // As NATS micro services do, so generic NATS tooling sees the failure too.
            headers["Nats-Service-Error"] = reply.message
            headers["Nats-Service-Error-Code"] = String(Self.microErrorCode(reply.status))
        }
        do {
            try nats.publish(replyTo, payload: reply.wireBytes(), headers: headers)
        } catch {
            logger.warning("could not send reply", metadata: ["error": "\(error)"])
        }
    }

    static func microErrorCode(_ status: WireStatus) -> Int {
        switch status {
        case .ok: 200
        case .notFound: 404
        case .invalid: 400
        case .conflict: 409
        case .unauthorized: 401
        case .unavailable: 503
        default: 500
        }
    }

    // MARK: $SRV discovery

    private func serveDiscovery(_ subject: String) async throws {
        try await nats.subscribe(subject) { subscription in
            for try await message in subscription.cancelOnGracefulShutdown() {
                guard let reply = message.reply else { continue }
                let verb = message.subject.split(separator: ".").dropFirst().first.map(String.init) ?? ""
                let body: [UInt8]?
                switch verb {
                case "PING": body = encodeJSON(pingResponse())
                case "INFO": body = encodeJSON(infoResponse())
                case "STATS": body = encodeJSON(statsResponse())
                default: body = nil
                }
                if let body { try? nats.publish(reply, payload: body) }
            }
        }
    }

    struct PingResponse: Codable, Sendable {
        var type = "io.nats.micro.v1.ping_response"
        var name: String
        var id: String
        var version: String
        var metadata: [String: String]
    }

    struct InfoResponse: Codable, Sendable {
        struct EndpointInfo: Codable, Sendable {
            var name: String
            var subject: String
            var queue_group: String
            var metadata: [String: String]?
        }
        var type = "io.nats.micro.v1.info_response"
        var name: String
        var id: String
        var version: String
        var metadata: [String: String]
        var description: String
        var endpoints: [EndpointInfo]
    }

    struct StatsResponse: Codable, Sendable {
        struct EndpointStatsInfo: Codable, Sendable {
            var name: String
            var subject: String
            var queue_group: String
            var num_requests: Int
            var num_errors: Int
            var last_error: String
            var processing_time: Int64
            var average_processing_time: Int64
        }
        var type = "io.nats.micro.v1.stats_response"
        var name: String
        var id: String
        var version: String
        var metadata: [String: String]
        var started: String
        var endpoints: [EndpointStatsInfo]
    }

    func pingResponse() -> PingResponse {
        PingResponse(name: identity.name, id: identity.instanceID, version: identity.version, metadata: identity.metadata)
    }

    func infoResponse() -> InfoResponse {
        InfoResponse(
            name: identity.name, id: identity.instanceID, version: identity.version, metadata: identity.metadata,
            description: identity.description,
            endpoints: endpoints.map { .init(name: $0.method, subject: subject(for: $0.method), queue_group: identity.name) })
    }

    func statsResponse() -> StatsResponse {
        let snapshot = stats.current
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return StatsResponse(
            name: identity.name, id: identity.instanceID, version: identity.version, metadata: identity.metadata,
            started: formatter.string(from: started),
            endpoints: endpoints.map { endpoint in
                let s = snapshot[endpoint.method] ?? EndpointStats()
                return .init(
                    name: endpoint.method, subject: subject(for: endpoint.method), queue_group: identity.name,
                    num_requests: s.requests, num_errors: s.errors, last_error: s.lastError,
                    processing_time: s.processingNanoseconds,
                    average_processing_time: s.requests == 0 ? 0 : s.processingNanoseconds / Int64(s.requests))
            })
    }

    private func encodeJSON<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? [UInt8](encoder.encode(value))) ?? []
    }
}

/// Calls a service method over NATS and unwraps the ``Reply`` envelope: the one way every
/// caller (gateway, other services, tests) talks to a service.
public struct ServiceClient: Sendable {
    public let service: String
    public let nats: NATSConnection
    public var timeout: Duration

    public init(service: String, nats: NATSConnection, timeout: Duration = .seconds(5)) {
        self.service = service
        self.nats = nats
        self.timeout = timeout
    }

    /// Calls a method of the wire contract (`StorageAPI.getFile`…).
    public func call<Request: WireMessage, Response: WireMessage>(
        _ method: WireMethod<Request, Response>, _ request: Request, headers: NATSHeaders = NATSHeaders()
    ) async throws -> Response {
        // A method of another service's client is a programming error: it fails this call.
        guard method.service == service else { throw ServiceError.internal("\(method) is not a method of \(service)") }
        return try await call(method.method, request, as: Response.self, headers: headers)
    }

    /// Sends `request` to `svc.<service>.v1.<method>`; returns the decoded reply, or throws
    /// ``ServiceError`` (the service's status, or `unavailable` when nobody answers in time).
    public func call<Request: WireMessage, Response: WireMessage>(
        _ method: String, _ request: Request, as: Response.Type = Response.self, headers: NATSHeaders = NATSHeaders()
    ) async throws -> Response {
        let subject = Subjects.request(service: service, method: method)
        let message: NATSMessage
        do {
            message = try await nats.request(subject, payload: request.wireBytes(), headers: headers, timeout: timeout)
        } catch let error as NATSError where error.code == .noResponders {
            throw ServiceError.unavailable("\(service) service is not running")
        } catch let error as NATSError where error.code == .timeout {
            throw ServiceError.unavailable("\(service) service did not answer within \(timeout)")
        } catch let error as NATSError {
            throw ServiceError.unavailable("\(service) service unreachable: \(error)")
        }
        let reply: Reply
        do {
            reply = try Reply(wireBytes: message.payload)
        } catch {
            throw ServiceError.internal("malformed reply from \(service).\(method): \(error)")
        }
        guard reply.status == .ok else { throw ServiceError(reply.status, reply.message) }
        do {
            return try Response(wireBytes: reply.body)
        } catch {
            throw ServiceError.internal("malformed \(Response.self) from \(service).\(method): \(error)")
        }
    }
}
