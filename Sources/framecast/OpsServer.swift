import Foundation
import ArgumentParser
import ServiceLifecycle
import Hummingbird
import Logging
import Prometheus
import ServiceKit

/// Options for the small HTTP listener of the roles that have no HTTP API (storage, album,
/// media): `/healthz`, `/readyz` and `/metrics`, for orchestrators' probes and scrapers.
/// The gateway serves the same routes on its own port.
struct OpsOptions: ParsableArguments {
    @Option(help: "Address of the /healthz, /readyz, /metrics listener (env FRAMECAST_OPS_HOST).")
    var opsHost: String = env("FRAMECAST_OPS_HOST") ?? "127.0.0.1"

    @Option(help: "Port of the /healthz, /readyz, /metrics listener; 0: none (env FRAMECAST_OPS_PORT).")
    var opsPort: Int = env("FRAMECAST_OPS_PORT").flatMap(Int.init) ?? 0

    /// The listener as a Service, or nothing when no port is configured.
    func makeServices(_ runtime: ServiceRuntime) -> [any Service] {
        guard opsPort > 0 else { return [] }
        return [OpsServer.application(host: opsHost, port: opsPort, runtime: runtime, registry: metricsRegistry)]
    }
}

enum OpsServer {
    /// `/healthz`: the process runs. `/readyz`: NATS is connected and PostgreSQL answers
    /// (503 otherwise, so an orchestrator stops routing to or restarts the replica).
    /// `/metrics`: the process's Prometheus registry.
    static func application(host: String, port: Int, runtime: ServiceRuntime,
                            registry: PrometheusCollectorRegistry) -> some ApplicationProtocol {
        let router = Router()
        router.get("/healthz") { _, _ in json(.ok, #"{"status":"ok"}"#) }
        router.get("/readyz") { _, _ in
            let nats = runtime.nats.isConnected
            var postgres = true
            do { _ = try await runtime.postgres.query("SELECT 1") } catch { postgres = false }
            let ready = nats && postgres
            return json(ready ? .ok : .serviceUnavailable, """
                {"checks":{"nats":"\(nats ? "ok" : "disconnected")","postgres":"\(postgres ? "ok" : "unreachable")"},\
                "status":"\(ready ? "ready" : "not_ready")"}
                """)
        }
        router.get("/metrics") { _, _ in
            var buffer: [UInt8] = []
            registry.emit(into: &buffer)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
        }
        var logger = runtime.logger
        logger[metadataKey: "service.name"] = "ops"
        return Application(router: router,
                           configuration: .init(address: .hostname(host, port: port), serverName: "framecast-ops"),
                           logger: logger)
    }

    static func json(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}
