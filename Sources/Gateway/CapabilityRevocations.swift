import Foundation
import Logging
import Metrics
import NATS
import ServiceKit
import ServiceLifecycle
import Threads
import Wire

/// The files whose capability URLs this replica refuses (deleted photos), and whether it may
/// serve the others: a pure state, driven by ``CapabilityRevocations``.
///
/// A capability URL carries its own authorisation, so a replica refuses a deleted photo's URLs
/// only because it knows of the delete. It knows of every delete once both hold:
/// * its subscription to `file.deleted` is live in the current NATS connection (core NATS
///   delivers nothing published while a client is disconnected, and nothing it dropped), and
/// * a catch-up (storage's `ListDeletedFiles`) started after that, in the same connection
///   state, has completed: it covers every delete committed before it started, the
///   subscription every one committed after (storage publishes `file.deleted` after the commit).
///
/// Until the first catch-up completes the route answers 503. When either stops holding later (a
/// reconnect, dropped or unreadable messages, a failed subscription) the route keeps serving for
/// a short grace while the replica catches up again, then answers 503 until it has: so a delete
/// reaches the route within the grace (plus a catch-up) even when events are lost, and a short
/// reconnect does not make every frame's fetch fail.
struct RevokedFiles: Sendable {
    enum Check: Sendable, Equatable {
        case allowed
        case revoked
        /// Not known to have heard of every delete: 503.
        case catchingUp
    }

    /// File id (lower-case) → when it was deleted (unix ms).
    private(set) var deletedAt: [String: Int64] = [:]
    /// The connection state (``NATSConnection/connectionChanges``) the last completed catch-up
    /// covers; nil before the first one.
    private(set) var coveredFor: UInt64?
    /// Advanced when messages may have been missed within a connection state (dropped,
    /// unreadable, the subscription failed); a catch-up covers only the epoch it started in.
    private(set) var lossEpoch: UInt64 = 0
    private var coveredEpoch: UInt64 = 0
    /// When this replica was first seen not to be covered, after having been.
    private var uncoveredSince: ContinuousClock.Instant?
    /// Whether the route serves files not revoked.
    private(set) var serving = false

    func check(_ fileID: String) -> Check {
        if deletedAt[fileID] != nil { return .revoked }
        return serving ? .allowed : .catchingUp
    }

    var count: Int { deletedAt.count }

    mutating func revoke(_ fileID: String, at millis: Int64) {
        deletedAt[fileID] = max(deletedAt[fileID] ?? millis, millis)
    }

    /// Messages may have been missed: a catch-up is due.
    mutating func lost() {
        lossEpoch &+= 1
    }

    /// Whether everything deleted is known in connection state `changes`.
    func isCovered(_ changes: UInt64) -> Bool {
        coveredFor == changes && coveredEpoch == lossEpoch
    }

    /// Looks at the connection state now: returns whether a catch-up is due, and stops serving
    /// when this replica has not been covered for `grace`.
    mutating func observe(connectionChanges changes: UInt64, now: ContinuousClock.Instant, grace: Duration) -> Bool {
        if isCovered(changes) {
            uncoveredSince = nil
            serving = true
            return false
        }
        guard coveredFor != nil else {
            serving = false
            return true
        }
        let since = uncoveredSince ?? now
        uncoveredSince = since
        if now - since >= grace { serving = false }
        return true
    }

    /// A catch-up that started in connection state `changes` and loss epoch `epoch` completed.
    mutating func caughtUp(connectionChanges changes: UInt64, epoch: UInt64) {
        coveredFor = changes
        coveredEpoch = epoch
        if isCovered(changes) {
            uncoveredSince = nil
            serving = true
        }
    }

    /// Forgets deletes older than `cutoff` (unix ms): every URL of those files has expired.
    /// Returns how many went.
    @discardableResult
    mutating func prune(before cutoff: Int64) -> Int {
        let before = deletedAt.count
        deletedAt = deletedAt.filter { $0.value >= cutoff }
        return before - deletedAt.count
    }
}

/// Keeps this gateway replica's revoked capability URLs (``RevokedFiles``): a deleted photo's
/// URLs answer 404 within moments on every replica, however many run, restarts included.
///
/// * Subscribes (core NATS, no queue group: every replica hears every delete) to storage's
///   `file.deleted` events, which the outbox relay publishes to JetStream after the delete
///   commits; core subscribers on the subject receive them too.
/// * Once subscribed, and again after every NATS reconnect (``NATSConnection/connectionChanges``)
///   or lost message, catches up: asks storage (`ListDeletedFiles`, paged) for every file deleted
///   in the last ``horizon`` — as long as a URL can live — and revokes them. Failures are retried
///   with back-off and logged. Until the first catch-up the capability route answers 503
///   (`Retry-After: 1`).
/// * Forgets deletes older than the horizon (every URL of those files has expired).
/// * The replica that answered a `DELETE` revokes the file at once (``revoke(_:)``), before the
///   event comes back.
///
/// Runs as a service of the gateway's HTTP application, for as long as it serves.
final class CapabilityRevocations: Service, Sendable {
    let nats: NATSConnection
    let storage: ServiceClient
    /// How far back a catch-up asks, and how long a delete is remembered: the longest a
    /// capability URL can live.
    let horizon: Duration
    /// How long the route keeps serving after this replica stopped being sure it heard every
    /// delete (a reconnect, lost messages) while it catches up; then 503 until it has.
    let grace: Duration
    let logger: Logger
    private let state = Locked(RevokedFiles())

    private let caughtUpCounter = Counter(label: "gateway_capability_revocation_catchups_total", dimensions: [("outcome", "ok")])
    private let failedCounter = Counter(label: "gateway_capability_revocation_catchups_total", dimensions: [("outcome", "failed")])
    private let heard = Counter(label: "gateway_capability_revocations_total", dimensions: [("source", "event")])
    private let local = Counter(label: "gateway_capability_revocations_total", dimensions: [("source", "local")])
    private let revokedGauge = Gauge(label: "gateway_capability_revoked_files")

    init(nats: NATSConnection, storage: ServiceClient, horizon: Duration, grace: Duration = .seconds(4), logger: Logger) {
        self.nats = nats
        self.storage = storage
        self.horizon = horizon
        self.grace = grace
        var logger = logger
        logger[metadataKey: "nats.subject"] = "\(Subjects.fileDeleted)"
        self.logger = logger
    }

    /// What the capability route does for `fileID` (lower case, as verified paths carry it).
    func check(_ fileID: String) -> RevokedFiles.Check {
        state.withLock { $0.check(fileID) }
    }

    /// The file was deleted through this replica (storage committed it): its URLs answer 404
    /// here at once; the other replicas hear `file.deleted`.
    func revoke(_ fileID: String) {
        let now = EventTime.now()
        state.withLock { $0.revoke(fileID.lowercased(), at: now) }
        local.increment()
    }

    /// Whether the route serves (the first catch-up is done and nothing was lost since, or the
    /// grace after a loss has not run out).
    var isServing: Bool { state.withLock { $0.serving } }

    /// Files revoked now.
    var count: Int { state.withLock { $0.count } }

    // MARK: Service

    func run() async throws {
        await cancelWhenGracefulShutdown { [self] in await listenUntilCancelled() }
    }

    private func listenUntilCancelled() async {
        var pause = Duration.seconds(1)
        while !Task.isCancelled && !nats.isClosed {
            do {
                try await listen()
            } catch {
                if Task.isCancelled || nats.isClosed { break }
                logger.error("capability revocations: subscription failed; resubscribing, then catching up",
                             metadata: ["error": "\(error)"])
            }
            // Whatever was published while no subscription was live is missed.
            state.withLock { $0.lost() }
            try? await Task.sleep(for: pause)
            pause = min(pause * 2, .seconds(30))
        }
    }

    private func listen() async throws {
        try await nats.subscribe(Subjects.fileDeleted, bufferSize: 65_536) { subscription in
            // A new subscription proves nothing about what was published before it: catch up.
            state.withLock { $0.lost() }
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.watch() }
                group.addTask { await self.catchUpWhenDue() }
                var dropped = 0
                for await message in subscription {
                    handle(message)
                    let now = subscription.droppedMessages
                    if now != dropped {
                        dropped = now
                        state.withLock { $0.lost() }
                        logger.warning("file.deleted events arrived faster than applied and some were dropped; catching up",
                                       metadata: ["nats.dropped": "\(now)"])
                    }
                }
                group.cancelAll()
            }
        }
    }

    private func handle(_ message: NATSMessage) {
        guard let event = try? FileDeleted(wireBytes: message.payload), !event.fileID.isEmpty else {
            state.withLock { $0.lost() }
            logger.warning("unreadable file.deleted event; catching up", metadata: ["nats.bytes": "\(message.payload.count)"])
            return
        }
        let at = event.occurredAt > 0 ? event.occurredAt : EventTime.now()
        let count = state.withLock { s -> Int in
            s.revoke(event.fileID.lowercased(), at: at)
            return s.count
        }
        heard.increment()
        revokedGauge.record(count)
        logger.debug("capability URLs revoked", metadata: ["file.id": "\(event.fileID)"])
    }

    /// Every 100 ms: stops the route once this replica has not been sure for the grace (the
    /// catch-up runs beside it, so a slow one does not stretch the grace), and once an hour
    /// forgets deletes older than the horizon.
    private func watch() async {
        var nextPrune = ContinuousClock.now + .seconds(3600)
        while !Task.isCancelled {
            let now = ContinuousClock.now
            let changes = nats.connectionChanges
            let stopped = state.withLock { s -> Bool in
                let was = s.serving
                _ = s.observe(connectionChanges: changes, now: now, grace: grace)
                return was && !s.serving
            }
            if stopped {
                logger.warning("capability URLs answer 503 until this gateway has caught up with deleted photos", metadata: [
                    "capability.grace": "\(grace)"])
            }
            if now >= nextPrune {
                nextPrune = now + .seconds(3600)
                let cutoff = EventTime.now() - Self.millis(horizon)
                let (removed, left) = state.withLock { s in (s.prune(before: cutoff), s.count) }
                revokedGauge.record(left)
                if removed > 0 {
                    logger.info("forgot deletes older than every capability URL", metadata: [
                        "capability.forgotten": "\(removed)", "capability.revoked": "\(left)"])
                }
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Every 100 ms: catches up when this replica is not sure it heard every delete (the first
    /// time, after a reconnect or a lost message), with back-off after a failure.
    private func catchUpWhenDue() async {
        var backOff = Duration.milliseconds(250)
        var nextAttempt = ContinuousClock.now
        var failures = 0
        while !Task.isCancelled {
            let changes = nats.connectionChanges
            let (covered, wasServing) = state.withLock { s in (s.isCovered(changes), s.serving) }
            if !covered, ContinuousClock.now >= nextAttempt, nats.isConnected {
                do {
                    let found = try await catchUp(connectionChanges: changes)
                    caughtUpCounter.increment()
                    failures = 0
                    backOff = .milliseconds(250)
                    let serving = isServing
                    logger.log(level: wasServing && serving ? .debug : .info, "capability revocations caught up", metadata: [
                        "capability.deleted_files": "\(found)", "capability.revoked": "\(count)",
                        "capability.serving": "\(serving)"])
                } catch {
                    if Task.isCancelled { return }
                    failedCounter.increment()
                    failures += 1
                    nextAttempt = ContinuousClock.now + backOff
                    logger.log(level: failures == 1 || failures % 10 == 0 ? .error : .debug,
                               "capability revocations: catching up with storage failed; retrying", metadata: [
                                   "error": "\(error)", "retry.in": "\(backOff)", "retry.failures": "\(failures)"])
                    backOff = min(backOff * 2, .seconds(10))
                }
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Asks storage for every file deleted within the horizon, page by page, and revokes them;
    /// marks the state covered for `changes` (the connection state read before starting) if no
    /// message was lost meanwhile. Returns how many deletes storage listed.
    private func catchUp(connectionChanges changes: UInt64) async throws -> Int {
        let epoch = state.withLock { $0.lossEpoch }
        let since = EventTime.now() - Self.millis(horizon)
        var token = ""
        var found = 0
        var warned = false
        repeat {
            let reply = try await storage.call(StorageAPI.listDeletedFiles,
                                               ListDeletedFilesRequest(since: since, pageSize: 1000, pageToken: token))
            let count = state.withLock { s -> Int in
                for file in reply.files where !file.fileID.isEmpty {
                    s.revoke(file.fileID.lowercased(), at: file.deletedAt)
                }
                return s.count
            }
            revokedGauge.record(count)
            found += reply.files.count
            if !warned, reply.retainedSince > since {
                warned = true
                logger.error("""
                    storage keeps deleted files for less time than capability URLs live: a URL of a photo deleted \
                    before storage's retention could answer again; raise storage's retention or lower the URL lifetime
                    """, metadata: ["capability.since": "\(since)", "storage.retained_since": "\(reply.retainedSince)"])
            }
            token = reply.nextPageToken
        } while !token.isEmpty
        state.withLock { $0.caughtUp(connectionChanges: changes, epoch: epoch) }
        return found
    }

    static func millis(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
