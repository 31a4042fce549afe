import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The frame's HTTP side: photo metadata and version downloads from the gateway, with the
/// frame token, through Foundation's URLSession (libcurl on Linux; its own threads, so no
/// cooperative thread waits on the network).
///
/// Every request goes to the configured gateway: URLs from MQTT messages or metadata
/// documents contribute only their path and query (under `/api/v1/`), so a message naming
/// another host never receives the frame's token.
final class GatewayClient: Sendable {
    let base: String
    let token: String
    let timeout: Duration
    let session: URLSession

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

    /// `GET /api/v1/photos/{file_id}`.
    func metadata(fileID: String) async throws -> PhotoDocument {
        let url = try resolve("/api/v1/photos/\(fileID)")
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
        let (body, response) = try await get(url, etag: etag)
        switch response.statusCode {
        case 200:
            guard !body.isEmpty else { throw FrameAgentError(.badResponse, "the download was empty", context: ["http.url": url.absoluteString]) }
            return .fetched(bytes: [UInt8](body), etag: response.value(forHTTPHeaderField: "ETag"))
        case 304:
            return .notModified
        default:
            throw Self.statusError(response, url)
        }
    }

    static func statusError(_ response: HTTPURLResponse, _ url: URL) -> FrameAgentError {
        FrameAgentError(.httpStatus, "the gateway refused GET \(url.path)", context: ["http.url": url.absoluteString],
                        status: response.statusCode)
    }

    private func get(_ url: URL, etag: String?) async throws -> (Data, HTTPURLResponse) {
        var request = URLRequest(url: url, cachePolicy: .reloadIgnoringLocalCacheData, timeoutInterval: timeout.seconds)
        request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        if let etag { request.setValue(etag, forHTTPHeaderField: "If-None-Match") }
        let box = TaskBox()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<(Data, HTTPURLResponse), Error>) in
                let task = session.dataTask(with: request) { data, response, error in
                    if let error {
                        continuation.resume(throwing: FrameAgentError(.unreachable, "GET \(url.path) failed: \(error.localizedDescription)",
                                                                      context: ["http.url": url.absoluteString]))
                    } else if let response = response as? HTTPURLResponse {
                        continuation.resume(returning: (data ?? Data(), response))
                    } else {
                        continuation.resume(throwing: FrameAgentError(.badResponse, "GET \(url.path) gave no HTTP response",
                                                                      context: ["http.url": url.absoluteString]))
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
