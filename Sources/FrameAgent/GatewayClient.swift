import Foundation
import Metrics
import Threads
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The frame's HTTP side: photo metadata and version downloads from the gateway, with the
/// frame token, through Foundation's URLSession (libcurl on Linux; its own threads, so no
/// cooperative thread waits on the network).
///
/// Every request with the token goes to the configured gateway: URLs from MQTT messages or
/// metadata documents contribute only their path and query (under `/api/v1/`), so a message
/// naming another host never receives the frame's token. Capability URLs
/// (``download(capability:etag:)``) are the exception: they authorise themselves, so they are
/// fetched as they are, with no token at all (they may name a CDN).
final class GatewayClient: Sendable {
    let base: String
    let token: String
    let timeout: Duration
    let session: URLSession
    /// Requests made, by kind. The frame edge's promise is a new photo fetched with one request
    /// and no metadata round trip; this is where that shows.
    let counts = Locked(RequestCounts())

    struct RequestCounts: Sendable, Hashable {
        /// `GET /api/v1/photos/{file_id}`.
        var metadata = 0
        /// Token-authenticated version downloads (from a metadata document).
        var downloads = 0
        /// Capability URL downloads (from a notification or a sync), without a token.
        var capabilityDownloads = 0
    }

    init(base: String, token: String, timeout: Duration) {
        self.base = base
        self.token = token
        self.timeout = timeout
        let configuration = URLSessionConfiguration.ephemeral
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        configuration.httpMaximumConnectionsPerHost = 4
        configuration.timeoutIntervalForRequest = timeout.seconds
        self.session = URLSession(configuration: configuration)
    }

    deinit { session.invalidateAndCancel() }

    /// `base` + the path and query of `reference` (an absolute URL or a path). Throws
    /// `invalidInput` unless the path is under `/api/v1/`.
    func resolve(_ reference: String) throws -> URL {
        guard let components = URLComponents(string: reference) else {
            throw FrameAgentError(.invalidInput, "not a URL", context: ["http.url": String(reference.prefix(200))])
        }
        let path = components.percentEncodedPath
        guard path.hasPrefix("/api/v1/"), !path.contains("/../"), !path.hasSuffix("/..") else {
            throw FrameAgentError(.invalidInput, "the URL is not a gateway API path", context: ["http.url": String(reference.prefix(200))])
        }
        let query = components.percentEncodedQuery.map { "?\($0)" } ?? ""
        guard let url = URL(string: base + path + query) else {
            throw FrameAgentError(.invalidInput, "cannot build the gateway URL", context: ["http.url": String(reference.prefix(200))])
        }
        return url
    }

    /// A capability URL as it is: an absolute http(s) URL whose path ends in
    /// `/c/{key id}/{expires}/{signature}/{file id}/{blob key}.{ext}` (below any path prefix of
    /// the public gateway URL), without user info, query or `..`. Throws `invalidInput` otherwise.
    func capabilityURL(_ text: String) throws -> URL {
        let context = ["http.url": String(text.prefix(40))]
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
              scheme == "http" || scheme == "https", let host = components.host, !host.isEmpty,
              components.user == nil, components.password == nil, components.query == nil, components.fragment == nil else {
            throw FrameAgentError(.invalidInput, "not an http(s) URL", context: context)
        }
        let segments = components.percentEncodedPath.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        guard segments.count >= 6, segments[segments.endIndex - 6] == "c",
              !segments.contains(where: { $0.isEmpty || $0 == ".." || $0 == "." }), let url = components.url else {
            throw FrameAgentError(.invalidInput, "not a capability URL", context: context)
        }
        return url
    }

    /// `GET /api/v1/photos/{file_id}`.
    func metadata(fileID: String) async throws -> PhotoDocument {
        let url = try resolve("/api/v1/photos/\(fileID)")
        counts.withLock { $0.metadata += 1 }
        Counter(label: "frame_agent_http_requests_total", dimensions: [("kind", "metadata")]).increment()
        let (body, response) = try await get(url, etag: nil)
        guard response.statusCode == 200 else { throw Self.statusError(response, url) }
        do {
            return try JSONDecoder().decode(PhotoDocument.self, from: body)
        } catch {
            throw FrameAgentError(.badResponse, "the photo metadata is not the expected JSON", context: ["http.url": url.absoluteString])
        }
    }

    enum Download: Sendable {
        case notModified
        case fetched(bytes: [UInt8], etag: String?)
    }

    /// A version's bytes; with `etag`, a conditional GET (`If-None-Match`) that may answer
    /// ``Download/notModified``.
    func download(_ reference: String, etag: String?) async throws -> Download {
        let url = try resolve(reference)
        counts.withLock { $0.downloads += 1 }
        Counter(label: "frame_agent_http_requests_total", dimensions: [("kind", "download")]).increment()
        return try await download(url, etag: etag, authorized: true)
    }

    /// A version's bytes from a capability URL (``capabilityURL(_:)``), with no `Authorization`
    /// header; with `etag`, a conditional GET.
    func download(capability: String, etag: String?) async throws -> Download {
        let url = try capabilityURL(capability)
        counts.withLock { $0.capabilityDownloads += 1 }
        Counter(label: "frame_agent_http_requests_total", dimensions: [("kind", "capability_download")]).increment()
        return try await download(url, etag: etag, authorized: false)
    }

    private func download(_ url: URL, etag: String?, authorized: Bool) async throws -> Download {
        let (body, response) = try await get(url, etag: etag, authorized: authorized)
        switch response.statusCode {
        case 200:
            guard !body.isEmpty else {
                throw FrameAgentError(.badResponse, "the download was empty", context: ["http.url": authorized ? url.absoluteString : Self.redacted(url)])
            }
            return .fetched(bytes: [UInt8](body), etag: response.value(forHTTPHeaderField: "ETag"))
        case 304:
            return .notModified
        default:
            throw Self.statusError(response, url, shown: authorized ? nil : Self.redacted(url))
        }
    }

    /// `shown`: how the URL appears in the error (default: as it is).
    static func statusError(_ response: HTTPURLResponse, _ url: URL, shown: String? = nil) -> FrameAgentError {
        let text = shown ?? url.absoluteString
        return FrameAgentError(.httpStatus, "the gateway refused GET \(shown ?? url.path)", context: ["http.url": text],
                               status: response.statusCode)
    }

    /// A capability URL for logs and errors: its signature left out (the URL is a bearer
    /// credential for the photo until it expires).
    static func redacted(_ url: URL) -> String {
        var parts = url.path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if parts.count >= 6 { parts[parts.count - 3] = "…" }
        return "\(url.scheme ?? "http")://\(url.host ?? "")\(url.port.map { ":\($0)" } ?? "")" + parts.joined(separator: "/")
    }

    /// `authorized`: with the frame token (only ever to ``base``); without it the URL is a
    /// capability URL and appears redacted in errors.
    private func get(_ url: URL, etag: String?, authorized: Bool = true) async throws -> (Data, HTTPURLResponse) {
        var request = URLRequest(url: url, cachePolicy: .reloadIgnoringLocalCacheData, timeoutInterval: timeout.seconds)
        if authorized { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let etag { request.setValue(etag, forHTTPHeaderField: "If-None-Match") }
        let shown = authorized ? url.absoluteString : Self.redacted(url)
        let path = authorized ? url.path : shown
        let box = TaskBox()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<(Data, HTTPURLResponse), Error>) in
                let task = session.dataTask(with: request) { data, response, error in
                    if let error {
                        continuation.resume(throwing: FrameAgentError(.unreachable, "GET \(path) failed: \(error.localizedDescription)",
                                                                      context: ["http.url": shown]))
                    } else if let response = response as? HTTPURLResponse {
                        continuation.resume(returning: (data ?? Data(), response))
                    } else {
                        continuation.resume(throwing: FrameAgentError(.badResponse, "GET \(path) gave no HTTP response",
                                                                      context: ["http.url": shown]))
                    }
                }
                box.set(task)
                task.resume()
            }
        } onCancel: {
            box.cancel()
        }
    }
}

/// Holds the running URLSessionTask so cancellation can reach it. `@unchecked Sendable`:
/// `task` and `cancelled` are only touched under `lock`.
final class TaskBox: @unchecked Sendable {
    private let lock = NSLock()
    private var task: URLSessionTask?
    private var cancelled = false

    func set(_ task: URLSessionTask) {
        let cancelNow = lock.withLock {
            self.task = task
            return cancelled
        }
        if cancelNow { task.cancel() }
    }

    func cancel() {
        let task = lock.withLock {
            cancelled = true
            return self.task
        }
        task?.cancel()
    }
}
