import Foundation
import Logging
import Metrics
import NATS
import ServiceLifecycle
import Threads

/// Settings of the gateway's token cache (``GatewayConfiguration/tokenCache``).
public struct TokenCacheConfiguration: Sendable {
    /// How long a token found valid in PostgreSQL is trusted without asking again. A revocation
    /// announced on NATS ends it at once on every replica; the TTL only bounds what a missed
    /// announcement can cost. Default 15 s; above ``maxTTL`` it is lowered to it; zero turns the
    /// cache off (every request asks PostgreSQL).
    public var ttl: Duration = .seconds(15)
    /// The most tokens kept (the oldest go first). An entry is a few hundred bytes: 100,000
    /// (the default) is some tens of MB at most. Zero turns the cache off.
    public var capacity = 100_000

    /// The longest ``ttl`` honoured.
    public static let maxTTL: Duration = .seconds(30)

    public init() {}
}

/// Token hash → principal, so a token costs one PostgreSQL query per TTL instead of one per
/// request.
///
/// Correctness rests on three rules:
/// * **Positive results only.** An unknown or revoked token always asks PostgreSQL: caching
///   "no" would let anyone fill the cache with random tokens (evicting real ones) and saves
///   nothing a legitimate client needs.
/// * **Revocations empty entries at once**, here and (through ``TokenRevocations``, NATS
///   subject `gateway.tokens.revoked`) on every replica. Every invalidation advances an epoch;
///   a lookup that missed takes a ``Ticket`` before it queries PostgreSQL, and its result is
///   kept only if no invalidation happened meanwhile. A revocation commits in PostgreSQL before
///   it is announced, so a query that could still see the token as valid started before the
///   announcement arrived, and its result is dropped.
/// * **Trusted only while announcements are known to arrive.** The cache serves nothing until
///   ``TokenRevocations`` has seen one of its own probes come back on the subject (the
///   subscription is live, and NATS permissions allow it), and it stops, emptied, as soon as the
///   NATS connection reports a disconnect or reconnect (``NATSConnection/connectionChanges``):
///   messages published meanwhile were lost. It is trusted again, empty, after a new probe
///   returns. What remains is a link that died without the client noticing yet (detected by
///   NATS pings): a revocation lost then is honoured by this replica at the latest after the TTL.
final class TokenCache: Sendable {
    /// What a revocation names.
    enum Key: Sendable, Hashable {
        /// One token (logout), by its SHA-256 (hex), as `gateway.tokens` keeps it.
        case token(hash: String)
        /// Every token of a frame (frame deleted, credentials rotated).
        case frame(id: String)

        /// `token:<hash>` or `frame:<id>`, as announcements carry it.
        var text: String {
            switch self {
            case .token(let hash): "token:\(hash)"
            case .frame(let id): "frame:\(id)"
            }
        }

        /// Nil for a kind this version does not know (the caller then empties the whole cache).
        init?(text: String) {
            guard let colon = text.firstIndex(of: ":") else { return nil }
            let value = String(text[text.index(after: colon)...])
            guard !value.isEmpty else { return nil }
            switch text[..<colon] {
            case "token": self = .token(hash: value)
            case "frame": self = .frame(id: value)
            default: return nil
            }
        }
    }

    /// Taken by a lookup that missed, before it asks PostgreSQL; ``fill(_:hash:principal:)``
    /// keeps the answer only if nothing was invalidated since.
    struct Ticket: Sendable {
        fileprivate let epoch: UInt64
        fileprivate let started: ContinuousClock.Instant
    }

    enum Lookup: Sendable {
        case hit(Principal)
        /// Ask PostgreSQL; fill with the ticket (nil: the cache is off or not trusted now).
        case miss(Ticket?)
    }

    enum Source: String { case local, remote }

    enum ClearReason: String {
        case connectionChanged = "connection_changed"
        case droppedMessages = "dropped_messages"
        case unreadableMessage = "unreadable_message"
    }

    let ttl: Duration
    let capacity: Int
    var isEnabled: Bool { ttl > .zero && capacity > 0 }
    /// ``NATSConnection/connectionChanges`` of the connection the announcements arrive on.
    let connectionChanges: @Sendable () -> UInt64
    let logger: Logger
    private let state = Locked(State())

    private let hits = Counter(label: "gateway_token_cache_hits_total")
    private let misses = Counter(label: "gateway_token_cache_misses_total")
    /// Lookups while the cache is off or not trusted (they ask PostgreSQL and fill nothing).
    private let bypasses = Counter(label: "gateway_token_cache_bypasses_total")
    private let localInvalidations = Counter(label: "gateway_token_cache_invalidations_total", dimensions: [("source", Source.local.rawValue)])
    private let remoteInvalidations = Counter(label: "gateway_token_cache_invalidations_total", dimensions: [("source", Source.remote.rawValue)])

    init(configuration: TokenCacheConfiguration, connectionChanges: @escaping @Sendable () -> UInt64, logger: Logger) {
        self.ttl = min(max(configuration.ttl, .zero), TokenCacheConfiguration.maxTTL)
        self.capacity = max(0, configuration.capacity)
        self.connectionChanges = connectionChanges
        self.logger = logger
    }

    // MARK: Lookups

    func lookup(_ hash: String, now: ContinuousClock.Instant = .now) -> Lookup {
        guard isEnabled else { return .miss(nil) }
        let changes = connectionChanges()
        let (result, distrusted) = state.withLock { s -> (Lookup, Bool) in
            guard let trusted = s.trustedFor else { return (.miss(nil), false) }
            guard trusted == changes else {
                s.distrust()
                return (.miss(nil), true)
            }
            if let entry = s.entries[hash] {
                if now < entry.expires { return (.hit(entry.principal), false) }
                s.remove(hash)
            }
            return (.miss(Ticket(epoch: s.epoch, started: now)), false)
        }
        switch result {
        case .hit: hits.increment()
        case .miss(let ticket): (ticket == nil ? bypasses : misses).increment()
        }
        if distrusted { connectionChangedWhileTrusted() }
        return result
    }

    /// Keeps what PostgreSQL answered for `hash`, unless something was invalidated (or the NATS
    /// connection changed) since `ticket` was taken. The entry expires a TTL after the ticket.
    func fill(_ ticket: Ticket, hash: String, principal: Principal, now: ContinuousClock.Instant = .now) {
        let changes = connectionChanges()
        state.withLock { s in
            guard s.trustedFor == changes, s.epoch == ticket.epoch else { return }
            s.insert(hash, principal, expires: ticket.started + ttl, now: now, capacity: capacity)
        }
    }

    // MARK: Invalidation

    /// Removes what `keys` name; fills in flight are dropped.
    func invalidate(_ keys: [Key], source: Source) {
        guard isEnabled, !keys.isEmpty else { return }
        state.withLock { s in
            s.epoch &+= 1
            for key in keys {
                switch key {
                case .token(let hash): s.remove(hash)
                case .frame(let id):
                    for hash in s.frames[id] ?? [] { s.remove(hash) }
                }
            }
        }
        (source == .local ? localInvalidations : remoteInvalidations).increment(by: keys.count)
    }

    /// Empties the cache (it stays trusted): something may have been revoked that the cache
    /// cannot name.
    func clear(_ reason: ClearReason) {
        guard isEnabled else { return }
        state.withLock { $0.removeAll() }
        Counter(label: "gateway_token_cache_clears_total", dimensions: [("reason", reason.rawValue)]).increment()
    }

    /// Starts serving, empty: announcements published after the connection reached
    /// `changes` are known to arrive. False when the connection changed since (or the cache
    /// already trusts that state).
    @discardableResult
    func trust(connectionChanges changes: UInt64) -> Bool {
        guard isEnabled, connectionChanges() == changes else { return false }
        return state.withLock { s in
            guard s.trustedFor != changes else { return false }
            s.removeAll()
            s.trustedFor = changes
            return true
        }
    }

    /// Stops serving, and empties the cache (announcements may stop arriving).
    func distrust() {
        state.withLock { $0.distrust() }
    }

    /// Whether lookups are served from the cache now.
    var isTrusted: Bool {
        guard isEnabled else { return false }
        let changes = connectionChanges()
        return state.withLock { $0.trustedFor == changes }
    }

    /// Tokens held now (expired ones not yet removed included).
    var count: Int { state.withLock { $0.entries.count } }

    private func connectionChangedWhileTrusted() {
        Counter(label: "gateway_token_cache_clears_total", dimensions: [("reason", ClearReason.connectionChanged.rawValue)]).increment()
        logger.warning("NATS connection lost or re-established: token cache emptied and off until revocations are seen to arrive again")
    }

    // MARK: State

    private struct Entry {
        let principal: Principal
        let expires: ContinuousClock.Instant
        /// Matches the entry's place in `order`.
        let serial: UInt64
    }

    private struct State {
        var entries: [String: Entry] = [:]
        /// Frame id → hashes of its tokens held in `entries`, so `frame:<id>` needs no scan.
        var frames: [String: Set<String>] = [:]
        /// Token hashes in insertion order (≈ expiry order: every entry lives one TTL), from
        /// `head` on. A pair whose serial no longer matches its entry is a leftover of a removed
        /// or replaced entry and is skipped.
        var order: [(hash: String, serial: UInt64)] = []
        var head = 0
        var nextSerial: UInt64 = 0
        /// Advanced by every invalidation, clear and change of trust (see ``Ticket``).
        var epoch: UInt64 = 0
        /// The connection state (``NATSConnection/connectionChanges``) announcements are known
        /// to arrive in; nil: not trusted, lookups ask PostgreSQL.
        var trustedFor: UInt64?

        mutating func remove(_ hash: String) {
            guard let entry = entries.removeValue(forKey: hash) else { return }
            if case .frame(let id, _) = entry.principal {
                frames[id]?.remove(hash)
                if frames[id]?.isEmpty == true { frames[id] = nil }
            }
        }

        mutating func insert(_ hash: String, _ principal: Principal, expires: ContinuousClock.Instant,
                             now: ContinuousClock.Instant, capacity: Int) {
            remove(hash)
            // Oldest first: leftovers, expired entries, and live ones while full (or while
            // leftovers make `order` long).
            while head < order.count {
                let (oldest, serial) = order[head]
                if let entry = entries[oldest], entry.serial == serial,
                   now < entry.expires, entries.count < capacity, order.count - head < 2 * capacity {
                    break
                }
                if entries[oldest]?.serial == serial { remove(oldest) }
                head += 1
            }
            if head > 1024 && head * 2 > order.count {
                order.removeFirst(head)
                head = 0
            }
            let serial = nextSerial
            nextSerial &+= 1
            entries[hash] = Entry(principal: principal, expires: expires, serial: serial)
            order.append((hash, serial))
            if case .frame(let id, _) = principal { frames[id, default: []].insert(hash) }
        }

        mutating func removeAll() {
            entries = [:]
            frames = [:]
            order = []
            head = 0
            epoch &+= 1
        }

        mutating func distrust() {
            removeAll()
            trustedFor = nil
        }
    }
}

/// Announces token revocations to every gateway replica, and applies theirs, on the core NATS
/// subject `gateway.tokens.revoked` (every replica subscribes, no queue group). A message is
/// JSON: `{"origin": "<replica>", "keys": ["token:<sha256 hex>", "frame:<frame id>"]}`; a
/// frame's key covers all its tokens, so revoking them needs no list of hashes. A replica also
/// publishes probes (`"keys": [], "probe": "<nonce>"`) and trusts its cache only once one of
/// its own came back (see ``TokenCache``).
///
/// Runs as a service of the gateway's HTTP application, for as long as it serves.
final class TokenRevocations: Service, Sendable {
    static let subject = "gateway.tokens.revoked"

    let cache: TokenCache
    let nats: NATSConnection
    let logger: Logger
    /// This replica in announcements: it skips its own (applied before publishing) and knows
    /// its probes.
    let origin = UUID().uuidString.lowercased()
    /// Probes in flight: nonce → the connection state when it was sent.
    private let probes = Locked<[String: UInt64]>([:])
    private let publishFailures = Counter(label: "gateway_token_revocation_publish_failures_total")

    struct Message: Codable, Sendable {
        var origin: String
        var keys: [String]
        var probe: String?
    }

    init(cache: TokenCache, nats: NATSConnection, logger: Logger) {
        self.cache = cache
        self.nats = nats
        var logger = logger
        logger[metadataKey: "nats.subject"] = "\(Self.subject)"
        self.logger = logger
    }

    /// Called once a revocation is committed in PostgreSQL: empties the matching entries here,
    /// then tells the other replicas. A failed publish is logged (the other replicas then
    /// honour the revocation after at most the TTL); the revocation itself stands.
    func revoked(_ keys: [TokenCache.Key]) {
        cache.invalidate(keys, source: .local)
        guard cache.isEnabled else { return }
        do {
            try publish(Message(origin: origin, keys: keys.map(\.text)))
        } catch {
            publishFailures.increment()
            logger.error("could not announce a token revocation; other gateway replicas honour it within the token cache TTL",
                         metadata: ["error": "\(error)", "token_cache.ttl": "\(cache.ttl)"])
        }
    }

    private func publish(_ message: Message) throws {
        try nats.publish(Self.subject, payload: Array(try JSONEncoder().encode(message)))
    }

    // MARK: Service

    func run() async throws {
        guard cache.isEnabled else {
            // A service that returns would stop the application; this one has nothing to do.
            try? await gracefulShutdown()
            return
        }
        defer { cache.distrust() }
        await cancelWhenGracefulShutdown { [self] in await listenUntilCancelled() }
    }

    private func listenUntilCancelled() async {
        var pause = Duration.seconds(1)
        while !Task.isCancelled && !nats.isClosed {
            do {
                try await listen()
            } catch {
                if Task.isCancelled || nats.isClosed { break }
                logger.error("token revocations: subscription failed; the token cache is off until it works again",
                             metadata: ["error": "\(error)"])
            }
            cache.distrust()
            try? await Task.sleep(for: pause)
            pause = min(pause * 2, .seconds(30))
        }
    }

    private func listen() async throws {
        try await nats.subscribe(Self.subject, bufferSize: 65_536) { subscription in
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.probeWhileUntrusted() }
                var dropped = 0
                for await message in subscription {
                    handle(message)
                    let now = subscription.droppedMessages
                    if now != dropped {
                        dropped = now
                        cache.clear(.droppedMessages)
                        logger.warning("token revocations arrived faster than applied and some were dropped: token cache emptied",
                                       metadata: ["nats.dropped": "\(now)"])
                    }
                }
                group.cancelAll()
            }
        }
    }

    /// While the cache is not trusted (start, after a reconnect), publishes a probe every
    /// second; the subscription trusts the cache when one comes back.
    private func probeWhileUntrusted() async {
        var untrustedSince: ContinuousClock.Instant?
        var lastProbe: ContinuousClock.Instant?
        var warned = false
        while !Task.isCancelled {
            let now = ContinuousClock.now
            if cache.isTrusted {
                untrustedSince = nil
                warned = false
            } else if nats.isConnected {
                let since = untrustedSince ?? now
                untrustedSince = since
                if lastProbe.map({ now - $0 >= .seconds(1) }) ?? true {
                    lastProbe = now
                    let nonce = UUID().uuidString.lowercased()
                    let changes = nats.connectionChanges
                    probes.withLock { probes in
                        if probes.count >= 16 { probes.removeAll() }
                        probes[nonce] = changes
                    }
                    do {
                        try publish(Message(origin: origin, keys: [], probe: nonce))
                    } catch {
                        logger.debug("token revocations: probe not published", metadata: ["error": "\(error)"])
                    }
                }
                if !warned && now - since > .seconds(10) {
                    warned = true
                    logger.error("""
                        token revocations: no probe came back on \(Self.subject) for 10 s; the token cache stays off \
                        (check that this NATS user may publish and subscribe to it)
                        """)
                }
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    private func handle(_ message: NATSMessage) {
        guard let decoded = try? JSONDecoder().decode(Message.self, from: Data(message.payload)) else {
            cache.clear(.unreadableMessage)
            logger.warning("token revocations: unreadable message; token cache emptied", metadata: ["nats.bytes": "\(message.payload.count)"])
            return
        }
        if decoded.origin == origin {
            // Our own revocations were applied before they were published.
            if let nonce = decoded.probe, let changes = probes.withLock({ $0.removeValue(forKey: nonce) }),
               cache.trust(connectionChanges: changes) {
                probes.withLock { $0.removeAll() }
                logger.info("token cache on: revocations arrive", metadata: [
                    "token_cache.ttl": "\(cache.ttl)", "token_cache.capacity": "\(cache.capacity)",
                ])
            }
            return
        }
        var keys: [TokenCache.Key] = []
        for text in decoded.keys {
            guard let key = TokenCache.Key(text: text) else {
                // A newer replica names something this one cannot: forget everything instead.
                cache.clear(.unreadableMessage)
                logger.warning("token revocations: unknown key kind; token cache emptied",
                               metadata: ["revocation.key": "\(text.prefix(while: { $0 != ":" }))"])
                return
            }
            keys.append(key)
        }
        cache.invalidate(keys, source: .remote)
    }
}
