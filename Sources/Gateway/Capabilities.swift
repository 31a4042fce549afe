import BlobStore
import Foundation
import Hummingbird
import Logging
import Metrics
import Secrets
import Threads
import Wire

// The frame edge (DESIGN.md, "The frame edge"): a capability URL,
// `/c/{kid}/{expires}/{sig}/{file id}/{blob key}.{jpg|webp}`, names one immutable version of one
// photo and carries its own authorisation, so thousands of frames fetching a new photo cost what
// a static file server costs: an HMAC check, a look in the set of revoked files, and bytes from
// memory. No bearer token, no PostgreSQL query, no NATS request on that path.

/// Where a capability path's route keeps its segments (the route table's and the metrics' form).
enum CapabilityRoute {
    static let path = "/c/:kid/:exp/:sig/:file_id/:name"
    /// `http.route` of the route's metrics (Hummingbird's form of ``path``).
    static let metricsRoute = "/c/{kid}/{exp}/{sig}/{file_id}/{name}"
    /// The longest `max-age` a response gives (a year, what RFC 9111 caches expect at most).
    static let maxAge: Int64 = 31_536_000
}

extension Gateway {
    /// `GET /c/{kid}/{exp}/{sig}/{file_id}/{name}`: a version's bytes for whoever holds its
    /// signed URL.
    ///
    /// In order, each step cheap: the signature and expiry (403 when tampered with, expired or
    /// signed with a key this gateway does not know; 404 for something that is not a capability
    /// path at all); the file's revocation (404 once deleted; 503 while this replica has not yet
    /// caught up with deletes, see ``CapabilityRevocations``); `If-None-Match` (304 without
    /// touching the blob: the ETag is the blob key in the URL); then the bytes, from the hot cache
    /// (``BlobCache``) or read once from the blob store. `Range` gives 206 (416 outside the blob).
    func serveCapability(_ request: Request, _ context: GatewayContext) async throws -> Response {
        let now = Date()
        let capability = try verifiedCapability(request, context, now: now)
        let secondsLeft = capability.expires - Int64(now.timeIntervalSince1970)
        // A link may not outlive what the revocations remember (``capabilityHorizon``): one
        // signed with a longer lifetime than this gateway's (a misconfigured signer) would come
        // back to life after its file's delete was forgotten.
        guard secondsLeft <= capabilityHorizon.components.seconds else {
            throw APIError.forbidden("this photo link is not valid: it expires later than links may")
        }
        switch capabilityRevocations.check(capability.fileID) {
        case .allowed:
            break
        case .revoked:
            throw APIError.notFound("no such photo")
        case .catchingUp:
            var error = APIError.unavailable("this gateway is catching up with deleted photos; try again in a moment")
            error.headers[.retryAfter] = "1"
            throw error
        }

        let etag = "\"\(capability.blobKey)\""
        var headers: HTTPFields = [
            .eTag: etag,
            .cacheControl: "public, max-age=\(min(secondsLeft, CapabilityRoute.maxAge)), immutable",
            .acceptRanges: "bytes",
        ]
        if let match = request.headers[.ifNoneMatch], HTTPConditions.matches(ifNoneMatch: match, etag: etag) {
            return Response(status: .notModified, headers: headers)
        }
        let blob: BlobCache.Blob
        do {
            // The path only on a miss: building it is string work a hit does not need.
            blob = try await blobCache.blob(capability.blobKey) { BlobKey(capability.blobKey).map { blobs.path(for: $0) } }
        } catch {
            context.logger.error("reading a blob for a capability URL failed", metadata: [
                "blob.key": "\(capability.blobKey)", "file.id": "\(capability.fileID)", "error": "\(error)"])
            var unavailable = APIError.unavailable("the photo could not be read; try again")
            unavailable.headers[.retryAfter] = "1"
            throw unavailable
        }
        headers[.contentType] = capability.contentType

        let total: Int
        switch blob {
        case .missing:
            throw APIError.notFound("no such photo")
        case .bytes(let buffer):
            total = buffer.readableBytes
            if let range = try Self.requestedRange(request, etag: etag, total: total, headers: &headers) {
                // A slice shares the cached bytes: nothing is copied.
                let slice = buffer.getSlice(at: buffer.readerIndex + range.lowerBound, length: range.count) ?? ByteBuffer()
                return Response(status: .partialContent, headers: headers, body: .init(byteBuffer: slice))
            }
            headers[.contentLength] = String(total)
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: buffer))
        case .file(let size):
            // Larger than the cache takes a blob: streamed from the file, as the token route does.
            total = size
            guard let key = BlobKey(capability.blobKey) else { throw APIError.notFound("no such photo") }
            let path = blobs.path(for: key)
            if let range = try Self.requestedRange(request, etag: etag, total: total, headers: &headers) {
                let body = try await FileIO().loadFile(path: path, range: range, context: context)
                return Response(status: .partialContent, headers: headers, body: body)
            }
            headers[.contentLength] = String(total)
            return Response(status: .ok, headers: headers, body: try await FileIO().loadFile(path: path, context: context))
        }
    }

    /// The capability path of the request, verified (``CapabilityPath/verify(keyID:expires:signature:fileID:name:keys:now:)``):
    /// 404 when it is not one, 403 when it is tampered with, expired or signed with a key this
    /// gateway does not know. A path verified before (``VerifiedPaths``: the same URL fetched by
    /// every frame of an album) is not verified again, only its expiry is checked.
    func verifiedCapability(_ request: Request, _ context: GatewayContext, now: Date) throws -> CapabilityPath {
        let path = request.uri.path
        if let known = verifiedPaths.lookup(path) {
            guard known.expires > Int64(now.timeIntervalSince1970) else {
                throw APIError.forbidden("this photo link is not valid: expired")
            }
            return known
        }
        // `/c/{kid}/{exp}/{sig}/{file_id}/{name}`, read from the path itself: the edge serves it
        // before the router (``EdgeResponder``), so there are no route parameters.
        let segments = path.utf8.dropFirst(CapabilityPath.prefix.utf8.count).split(separator: UInt8(ascii: "/"),
                                                                                  omittingEmptySubsequences: false)
        guard segments.count == 5, let keyID = String(segments[0]), let expires = String(segments[1]),
              let signature = String(segments[2]), let fileID = String(segments[3]), let name = String(segments[4]) else {
            throw APIError.notFound("no such photo")
        }
        switch CapabilityPath.verify(keyID: keyID, expires: expires, signature: signature, fileID: fileID, name: name,
                                     keys: configuration.capabilityKeys, now: now) {
        case .valid(let capability):
            verifiedPaths.insert(path, capability)
            return capability
        case .malformed:
            throw APIError.notFound("no such photo")
        case .forbidden(let reason):
            throw APIError.forbidden("this photo link is not valid: \(reason)")
        }
    }

    /// The single byte range a request asks for (and honoured: `If-Range` naming this ETag or
    /// absent), with `Content-Range` and `Content-Length` set; nil to answer everything; 416 for
    /// a range outside the blob.
    static func requestedRange(_ request: Request, etag: String, total: Int, headers: inout HTTPFields) throws -> ClosedRange<Int>? {
        guard let header = request.headers[.range], request.headers[.ifRange].map({ $0 == etag }) ?? true else { return nil }
        switch HTTPConditions.byteRange(header, size: total) {
        case .satisfiable(let range):
            headers[.contentRange] = "bytes \(range.lowerBound)-\(range.upperBound)/\(total)"
            headers[.contentLength] = String(range.count)
            return range
        case .unsatisfiable:
            var error = APIError(.rangeNotSatisfiable, "range_not_satisfiable", "the range is outside the file")
            error.headers[.contentRange] = "bytes */\(total)"
            throw error
        case .ignored:
            return nil
        }
    }

    /// The capability URL of a rendered version (absolute: the public URL and the signed path),
    /// signed now for ``GatewayConfiguration/capabilityLifetime`` (rounded up to a whole day, so
    /// the same version has the same URL all day); nil for what a capability path cannot name (the
    /// original, whose format may be neither JPEG nor WebP, or a record without a blob key).
    func capabilityURL(fileID: String, version: PhotoVersion, now: Date = Date()) -> String? {
        let format = version.format.lowercased()
        guard version.size != "original", format == "jpeg" || format == "webp", BlobKey(version.blobKey) != nil,
              UUID(uuidString: fileID) != nil else { return nil }
        let path = CapabilityPath.sign(fileID: fileID, blobKey: version.blobKey, format: format,
                                       expires: CapabilityPath.expiry(now: now, lifetime: configuration.capabilityLifetime),
                                       keys: configuration.capabilityKeys)
        return configuration.publicURL + path.path
    }
}

/// Blobs recently served through capability URLs, in memory: the photo every frame of an album
/// fetches within seconds of one notification is read from disk once.
///
/// Bounded by bytes (``GatewayConfiguration/capabilityCacheBytes``) with CLOCK eviction (a hit
/// sets a bit; the hand clears bits and evicts the first entry whose bit is clear), so a hit is
/// one dictionary lookup and one store under the lock. A blob larger than the per-entry limit is
/// never kept (it would push out hundreds of frame-sized versions): it is streamed from its file.
/// Concurrent misses for the same blob share one read. Blobs are immutable (content addressed),
/// so an entry is never stale; a deleted photo is refused before the cache is asked.
final class BlobCache: Sendable {
    enum Blob: Sendable {
        case bytes(ByteBuffer)
        /// Too large for the cache: its size, to stream from the file.
        case file(size: Int)
        case missing
    }

    let capacity: Int
    let entryLimit: Int
    /// Reads blobs (blocking file I/O) off the cooperative pool and the event loops.
    private let pool: BlockingPool
    private let state = Locked(State())

    private let hits = Counter(label: "gateway_capability_cache_hits_total")
    private let misses = Counter(label: "gateway_capability_cache_misses_total")
    private let evictions = Counter(label: "gateway_capability_cache_evictions_total")

    init(capacity: Int, entryLimit: Int, pool: BlockingPool) {
        self.capacity = max(0, capacity)
        self.entryLimit = max(0, min(entryLimit, capacity))
        self.pool = pool
    }

    /// The blob with `key` (lower-case hex; its file at `path()`, nil for none): from memory, or
    /// read once and kept.
    func blob(_ key: String, path: () -> String?) async throws -> Blob {
        if let buffer = state.withLock({ $0.lookup(key) }) {
            hits.increment()
            return .bytes(buffer)
        }
        misses.increment()
        guard let file = path() else { return .missing }
        let limit = entryLimit
        // One read per blob however many requests miss at once: the first starts it, the others
        // wait for the same task. Unstructured because it belongs to no one request (any of them
        // may be cancelled); it ends with the read and is awaited by every request that joined.
        let load: Task<Blob, Error> = state.withLock { s in
            if let running = s.loading[key] { return running }
            let pool = self.pool
            let task = Task<Blob, Error> { [self] in
                let result: Result<Blob, Error>
                do {
                    result = .success(try await pool.run { try BlobCache.read(file, limit: limit) })
                } catch {
                    result = .failure(error)
                }
                let evicted = state.withLock { held -> Int in
                    held.loading[key] = nil
                    guard case .success(.bytes(let buffer)) = result else { return 0 }
                    return held.insert(key, buffer, capacity: capacity)
                }
                if evicted > 0 { evictions.increment(by: evicted) }
                return try result.get()
            }
            s.loading[key] = task
            return task
        }
        return try await load.value
    }

    /// Bytes held now.
    var bytes: Int { state.withLock { $0.bytes } }
    /// Blobs held now.
    var count: Int { state.withLock { $0.slots.count } }

    /// Reads a blob whole when it is at most `limit` bytes (blocking).
    static func read(_ path: String, limit: Int) throws -> Blob {
        var info = stat()
        guard stat(path, &info) == 0 else {
            if errno == ENOENT || errno == ENOTDIR { return .missing }
            throw BlobStoreError(.io, "cannot stat \(path): errno \(errno)")
        }
        let size = Int(info.st_size)
        guard size <= limit else { return .file(size: size) }
        guard let handle = FileHandle(forReadingAtPath: path) else { return .missing }
        defer { try? handle.close() }
        let data = try handle.readToEnd() ?? Data()
        return .bytes(ByteBuffer(bytes: data))
    }

    struct State {
        struct Slot {
            let key: String
            let buffer: ByteBuffer
            var referenced: Bool
        }
        /// Key → index in `slots`.
        var index: [String: Int] = [:]
        var slots: [Slot] = []
        var hand = 0
        var bytes = 0
        var loading: [String: Task<Blob, Error>] = [:]

        mutating func lookup(_ key: String) -> ByteBuffer? {
            guard let i = index[key] else { return nil }
            slots[i].referenced = true
            return slots[i].buffer
        }

        /// Keeps `buffer` (when it fits at all), evicting by CLOCK; returns how many went.
        mutating func insert(_ key: String, _ buffer: ByteBuffer, capacity: Int) -> Int {
            let size = buffer.readableBytes
            guard index[key] == nil, size <= capacity else { return 0 }
            var evicted = 0
            while bytes + size > capacity, !slots.isEmpty {
                if hand >= slots.count { hand = 0 }
                if slots[hand].referenced {
                    slots[hand].referenced = false
                    hand += 1
                } else {
                    remove(at: hand)
                    evicted += 1
                }
            }
            index[key] = slots.count
            // New entries start unreferenced: a blob read once and never again goes first.
            slots.append(Slot(key: key, buffer: buffer, referenced: false))
            bytes += size
            return evicted
        }

        /// Removes the slot at `i` by moving the last one into its place.
        private mutating func remove(at i: Int) {
            let victim = slots[i]
            index[victim.key] = nil
            bytes -= victim.buffer.readableBytes
            let last = slots.count - 1
            if i != last {
                slots[i] = slots[last]
                index[slots[i].key] = i
            }
            slots.removeLast()
        }
    }
}

/// Capability paths verified recently, by their exact text: every frame of an album fetches the
/// same URL, so its HMAC is computed once, not once per frame. Only a path that verified is
/// kept, and the keys never change while the gateway runs, so a hit is as good as a
/// verification; its expiry is still checked on every request. Bounded: emptied when full.
final class VerifiedPaths: Sendable {
    let capacity: Int
    private let paths = Locked<[String: CapabilityPath]>([:])

    init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    func lookup(_ path: String) -> CapabilityPath? {
        paths.withLock { $0[path] }
    }

    func insert(_ path: String, _ capability: CapabilityPath) {
        paths.withLock { paths in
            if paths.count >= capacity { paths.removeAll(keepingCapacity: true) }
            paths[path] = capability
        }
    }
}

/// The gateway's responder: a `GET` of a capability path is answered here, before the router
/// and its middleware (request ids, the general metrics, error mapping, the route trie), since
/// that path is the one frames hit thousands of times a second and needs none of them: it
/// records its own metrics (the same series the route would) and turns its own errors into
/// their responses. Everything else goes to the router. (Measured: 0.48× nginx's requests/s
/// through the router, 0.64× here; benchmarks/results/serve.md.)
struct EdgeResponder: HTTPResponder {
    typealias Context = GatewayContext
    let gateway: Gateway
    let router: RouterResponder<GatewayContext>
    let metrics = CapabilityMetrics()

    func respond(to request: Request, context: GatewayContext) async throws -> Response {
        guard request.method == .get, request.uri.path.hasPrefix(CapabilityPath.prefix) else {
            return try await router.respond(to: request, context: context)
        }
        let start = DispatchTime.now().uptimeNanoseconds
        do {
            let response = try await gateway.serveCapability(request, context)
            metrics.record(response.status, nanoseconds: DispatchTime.now().uptimeNanoseconds - start, failed: false)
            return response
        } catch {
            // Hummingbird answers 500 for whatever a responder throws: the error becomes its
            // response here (the router's ErrorMiddleware does this for every other route).
            let failure: APIError
            if let apiError = error as? APIError {
                failure = apiError
            } else {
                context.logger.error("a capability request failed", metadata: ["error": "\(error)"])
                failure = .internalError
            }
            metrics.record(failure.status, nanoseconds: DispatchTime.now().uptimeNanoseconds - start, failed: true)
            return try failure.response(from: request, context: context)
        }
    }
}

/// The capability route's metric handles, by status: the families Hummingbird's metrics
/// middleware records (`hb.requests`, `http.server.request.duration`, `hb.request.errors`, route
/// `/c/{kid}/{exp}/{sig}/{file_id}/{name}`), resolved once. The duration runs until the handler
/// returns (the body, bytes in memory, is then written by the server);
/// `http.server.active_requests` is not kept for this route.
final class CapabilityMetrics: Sendable {
    struct Handles: Sendable {
        let requests: Counter
        let duration: Metrics.Timer
        let errors: Counter

        init(_ status: HTTPResponse.Status) {
            let code = status.code.description
            let dimensions = [("http.route", CapabilityRoute.metricsRoute), ("http.request.method", "GET"),
                              ("http.response.status_code", code)]
            requests = Counter(label: "hb.requests", dimensions: dimensions)
            duration = Metrics.Timer(label: "http.server.request.duration", dimensions: dimensions, preferredDisplayUnit: .seconds)
            errors = Counter(label: "hb.request.errors", dimensions: [
                ("http.route", CapabilityRoute.metricsRoute), ("http.request.method", "GET"), ("error.type", code)])
        }
    }

    /// The statuses the route answers; another (not expected) is resolved when it happens.
    private let byStatus: [Int: Handles]

    init() {
        var byStatus: [Int: Handles] = [:]
        for status: HTTPResponse.Status in [.ok, .partialContent, .notModified, .forbidden, .notFound, .rangeNotSatisfiable,
                                           .serviceUnavailable, .internalServerError] {
            byStatus[status.code] = Handles(status)
        }
        self.byStatus = byStatus
    }

    func record(_ status: HTTPResponse.Status, nanoseconds: UInt64, failed: Bool) {
        let handles = byStatus[status.code] ?? Handles(status)
        handles.requests.increment()
        handles.duration.recordNanoseconds(Int64(clamping: nanoseconds))
        if failed { handles.errors.increment() }
    }
}
