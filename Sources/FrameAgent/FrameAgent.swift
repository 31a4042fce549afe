import Foundation
import Imaging
import Logging
import Metrics
import MQTT
import ServiceLifecycle
import Threads
import Wire

/// The smart-frame agent (`framecast frame`): a `Service` whose `run()` is the frame's life.
///
/// * MQTT with a persistent session (client id `frame-{id}`, clean session off: QoS 1/2
///   messages sent while the frame was away arrive when it returns), last will `offline`
///   (retained) on `frames/{id}/status`, `online` (retained) on every connect, a retained
///   QoS 0 heartbeat every `heartbeatInterval` (uptime, photo on screen, cache use).
/// * Subscribes to `frames/{id}/sync|command|config` and, for the albums in its sync,
///   `albums/{id}/photo_added|photo_removed|config` (changed when a sync changes them).
/// * sync: acted on once per sequence; the disk cache is reconciled with the list (missing
///   photos downloaded, removed ones dropped), then `cached` is reported. Its `album_seqs` are
///   the last sequence number heard per album.
///   photo_added / photo_removed: acted on once per album sequence number (``AgentCore/observe(album:seq:)``;
///   once per (album, file) from a service without numbers). A number that is not the last
///   one + 1 means notifications were missed: the frame asks for its sync (`sync_request` on
///   its status topic), as it does on every (re)connect. photo_added: when its `versions`
///   include this screen's (`frame:{W}x{H}`, in the preferred format, else JPEG), that
///   capability URL is downloaded directly, with no token and no metadata round trip (a sync's
///   versions are used the same way); otherwise, or when the URL is refused, the metadata
///   document is fetched and the version for this screen chosen. Downloads are conditional
///   GETs when a copy is cached; the photo is shown next, and `displayed` reported once it is
///   on screen. command: acted on once per id.
/// * Without the network it keeps showing what it has; downloads are retried with
///   exponential back-off and jitter, at once after the broker comes back.
/// * Graceful shutdown: stops its loops, publishes `offline` (retained), disconnects, and
///   saves its state (`state.json`) so a restart resumes where it was.
///
/// Status reports use ``FrameStatusMessage`` (QoS 1: the album service records them in
/// `album_sync_status`); reports made while disconnected are sent after the reconnect.
public final class FrameAgent: Service, Sendable {
    public let configuration: FrameAgentConfiguration
    let logger: Logger
    let imaging: Imaging
    let ownsImaging: Bool
    let mqtt: MQTTClient
    let gateway: GatewayClient
    let display: DisplayDriver
    let cache: DiskCache
    let core: AgentCore
    let subscriptions: SubscriptionManager
    let slideshowWake = WakeSignal()
    let catchUpWake = WakeSignal()
    let started = ContinuousClock.now
    /// Status reports waiting for the broker (latest per kind).
    let unsent = Locked<[String: FrameStatusMessage]>([:])
    let gatewayReachable = Locked(true)

    /// `imaging`: a shared libvips pool (default: one thread of the agent's own).
    public init(configuration: FrameAgentConfiguration, logger: Logger, imaging: Imaging? = nil) throws {
        var logger = logger
        logger[metadataKey: "frame.id"] = .string(configuration.frameID)
        self.configuration = configuration
        self.logger = logger
        self.imaging = imaging ?? Imaging(threads: 1, logger: logger)
        self.ownsImaging = imaging == nil
        let id = configuration.frameID
        let mqttConfiguration = MQTTConfiguration(
            host: configuration.mqttHost, port: configuration.mqttPort, clientID: "frame-\(id)", cleanSession: false,
            username: configuration.mqttUsername, password: configuration.mqttPassword, keepAlive: configuration.keepAlive,
            will: MQTTWill(topic: FrameTopics.status(frame: id), payload: FrameTopics.encode(FrameStatusMessage(status: "offline")),
                           qos: .atLeastOnce, retain: true),
            reconnectDelay: configuration.retryDelay, reconnectDelayMax: configuration.retryDelayMax)
        self.mqtt = try MQTTClient(configuration: mqttConfiguration, logger: logger)
        self.gateway = GatewayClient(base: configuration.gatewayURL, token: configuration.frameToken, timeout: configuration.httpTimeout)
        self.display = DisplayDriver(display: configuration.display, width: configuration.screenWidth, height: configuration.screenHeight)
        self.cache = DiskCache(directory: configuration.cacheDirectory, budget: configuration.cacheBytes)
        self.core = AgentCore(defaultInterval: configuration.defaultInterval, screenWidth: configuration.screenWidth,
                              screenHeight: configuration.screenHeight)
        self.subscriptions = SubscriptionManager(client: mqtt, logger: logger)
    }

    var id: String { configuration.frameID }
    var frameTopics: [(String, MQTTQoS)] {
        [(FrameTopics.sync(frame: id), .exactlyOnce), (FrameTopics.command(frame: id), .exactlyOnce),
         (FrameTopics.config(frame: id), .atLeastOnce)]
    }

    public func run() async throws {
        try await cache.open()
        let saved = await cache.readState().flatMap { try? JSONDecoder().decode(AgentState.self, from: $0) }
        await core.restore(saved, cached: await cache.fileIDs)
        let usage = await cache.usage
        logger.info("frame agent starting", metadata: [
            "mqtt.broker": "\(configuration.mqttHost):\(configuration.mqttPort)", "http.gateway": "\(configuration.gatewayURL)",
            "frame.display": "\(configuration.display)", "frame.screen": "\(configuration.screenWidth)x\(configuration.screenHeight)",
            "cache.files": "\(usage.files)", "cache.bytes": "\(usage.bytes)"])

        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.slideshowLoop() }
            group.addTask { await self.catchUpLoop() }
            group.addTask { await self.heartbeatLoop() }
            group.addTask { await self.mqttLoop() }
            try? await gracefulShutdown()
            group.cancelAll()
        }

        if mqtt.isConnected {
            do {
                try await mqtt.publish(FrameTopics.status(frame: id), payload: FrameTopics.encode(FrameStatusMessage(status: "offline")),
                                       qos: .atLeastOnce, retain: true)
            } catch {
                logger.warning("announcing offline failed", metadata: ["error": "\(error)"])
            }
        }
        await mqtt.disconnect()
        await saveState()
        if ownsImaging { imaging.shutdown() }
        logger.info("frame agent stopped")
    }

    // MARK: MQTT

    private func mqttLoop() async {
        await mqtt.withMessages { messages in
            await withTaskGroup(of: Void.self) { group in
                let events = mqtt.connectionEvents
                group.addTask {
                    for await event in events {
                        if Task.isCancelled { break }
                        switch event {
                        case .connected(let sessionPresent):
                            await self.connected(sessionPresent: sessionPresent)
                        case .disconnected(let reason):
                            if let reason { self.logger.warning("lost the MQTT broker; reconnecting", metadata: ["error": "\(reason)"]) }
                        }
                    }
                }
                group.addTask { await self.connectUntilUp() }
                for await message in messages {
                    if Task.isCancelled { break }
                    await self.handle(message)
                }
                group.cancelAll()
            }
        }
    }

    /// Connects, retrying with back-off and jitter until the broker answers (libmosquitto
    /// reconnects by itself after the first success).
    private func connectUntilUp() async {
        var backoff = Backoff(base: configuration.retryDelay, max: configuration.retryDelayMax)
        var attempt = 0
        while !Task.isCancelled {
            do {
                try await mqtt.connect()
                return
            } catch {
                attempt += 1
                let delay = backoff.delay(attempt: attempt)
                logger.warning("connecting to the MQTT broker failed; retrying", metadata: [
                    "error": "\(error)", "attempt": "\(attempt)", "retry.delay_ms": "\(Int(delay.seconds * 1000))"])
                try? await Task.sleep(for: delay)
            }
        }
    }

    private func connected(sessionPresent: Bool) async {
        logger.info("connected to the MQTT broker", metadata: ["mqtt.session_present": "\(sessionPresent)"])
        // A broker without our session (restarted, or it expired) has none of our subscriptions.
        if !sessionPresent { await subscriptions.reset() }
        do {
            try await mqtt.publish(FrameTopics.status(frame: id), payload: FrameTopics.encode(FrameStatusMessage(status: "online")),
                                   qos: .atLeastOnce, retain: true)
        } catch {
            logger.warning("announcing online failed", metadata: ["error": "\(error)"])
        }
        await updateSubscriptions()
        // Whatever happened while away (a lost session, notifications the broker dropped), a
        // fresh sync says where things stand; the retained one may be seconds old.
        await requestSync(reason: "connected")
        await flushReports()
        await publishHeartbeat()
        catchUpWake.signal()
    }

    /// Subscribes to the frame's topics and to the albums of its latest sync.
    func updateSubscriptions() async {
        var wanted = frameTopics
        for album in await core.albumIDs {
            wanted += [(FrameTopics.photoAdded(album: album), .atLeastOnce), (FrameTopics.photoRemoved(album: album), .atLeastOnce),
                       (FrameTopics.albumConfig(album: album), .atLeastOnce)]
        }
        await subscriptions.reconcile(wanted)
    }

    func handle(_ message: MQTTMessage) async {
        if message.payload.isEmpty { return }  // a cleared retained message
        let topic = message.topic
        var logger = self.logger
        logger[metadataKey: "mqtt.topic"] = "\(topic.prefix(200))"
        let kind: String
        do {
            if topic == FrameTopics.sync(frame: id) {
                kind = "sync"
                try await handleSync(FrameTopics.decode(FrameSyncMessage.self, from: message.payload), logger: logger)
            } else if topic == FrameTopics.command(frame: id) {
                kind = "command"
                try await handleCommand(FrameTopics.decode(FrameCommandMessage.self, from: message.payload), logger: logger)
            } else if topic == FrameTopics.config(frame: id) {
                kind = "config"
                let config = try FrameTopics.decode(FrameConfigMessage.self, from: message.payload)
                await core.configure(config)
                await saveState()
                slideshowWake.signal()
                logger.info("frame config applied", metadata: ["slideshow.interval_s": "\(config.intervalSeconds)",
                                                               "slideshow.shuffle": "\(config.shuffle)"])
            } else if case let (album, leaf)? = Self.albumTopic(topic) {
                kind = leaf
                guard await core.shows(album: album) else {
                    logger.debug("message for an album this frame does not show; ignored")
                    return
                }
                switch leaf {
                case "photo_added":
                    try await handlePhotoAdded(FrameTopics.decode(PhotoAddedMessage.self, from: message.payload), album: album, logger: logger)
                case "photo_removed":
                    try await handlePhotoRemoved(FrameTopics.decode(PhotoRemovedMessage.self, from: message.payload), album: album, logger: logger)
                default:
                    // Album settings: the frame's own config decides the slideshow; recorded for people.
                    let config = try FrameTopics.decode(AlbumConfigMessage.self, from: message.payload)
                    logger.debug("album config received", metadata: ["album.id": "\(album)", "slideshow.interval_s": "\(config.intervalSeconds)"])
                }
            } else {
                logger.debug("message on an unexpected topic; ignored")
                return
            }
        } catch let error as DecodingError {
            logger.warning("malformed message dropped", metadata: ["error": "\(Self.describe(error))"])
            Counter(label: "frame_agent_messages_dropped_total").increment()
            return
        } catch let error as FrameAgentError {
            logger.warning("message refused", metadata: ["error": "\(error)"])
            Counter(label: "frame_agent_messages_dropped_total").increment()
            return
        } catch {
            logger.warning("handling a message failed", metadata: ["error": "\(error)"])
            return
        }
        Counter(label: "frame_agent_messages_total", dimensions: [("kind", kind)]).increment()
    }

    /// `albums/{album}/{leaf}` → (album, leaf) for the three album leaves.
    static func albumTopic(_ topic: String) -> (String, String)? {
        let parts = topic.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "albums", ["photo_added", "photo_removed", "config"].contains(parts[2]),
              SafeID.isValid(String(parts[1])) else { return nil }
        return (String(parts[1]), String(parts[2]))
    }

    static func describe(_ error: DecodingError) -> String {
        switch error {
        case .dataCorrupted(let c), .keyNotFound(_, let c), .typeMismatch(_, let c), .valueNotFound(_, let c):
            return c.debugDescription
        @unknown default:
            return "undecodable"
        }
    }

    func handleSync(_ sync: FrameSyncMessage, logger: Logger) async throws {
        guard sync.frameID.lowercased() == id.lowercased() else {
            throw FrameAgentError(.invalidInput, "a sync for another frame")
        }
        guard let outcome = await core.applySync(sync) else {
            if sync.seq <= 0 || sync.seq > AgentCore.maxSeq {
                logger.warning("a sync with an implausible sequence number was dropped", metadata: ["sync.seq": "\(sync.seq)"])
                return
            }
            logger.debug("sync not newer than the last applied (or an impossible jump); ignored", metadata: ["sync.seq": "\(sync.seq)"])
            return
        }
        logger.info("sync applied", metadata: ["sync.seq": "\(sync.seq)", "sync.photos": "\(sync.photos.count)",
                                                "sync.albums": "\(sync.albumIDs.count)", "cache.dropped": "\(outcome.drop.count)",
                                                "sync.invalid_photos": "\(outcome.invalidPhotos)",
                                                "sync.behind_albums": "\(outcome.behind.count)"])
        do {
            try await cache.remove(outcome.drop)
        } catch {
            logger.warning("dropping photos from the cache failed", metadata: ["error": "\(error)"])
        }
        await saveState()
        await updateSubscriptions()
        slideshowWake.signal()
        catchUpWake.signal()
        if !outcome.behind.isEmpty {
            // Built before notifications this frame already acted on: ask for a newer one.
            await requestSync(reason: "the sync is older than notifications already received")
        }
    }

    /// What `photo_added` and `photo_removed` check first: the message names this album and a
    /// safe file id (else `invalidInput`); its sequence number's place in the album's order. An
    /// implausible number is dropped here, with a sync asked for (nil); otherwise the caller
    /// gets a logger with the photo's and the album's ids, and the order.
    private func admit(_ kind: String, fileID: String, albumID: String, seq: Int64?, album: String,
                       logger: Logger) async throws -> (Logger, AgentCore.AlbumSequence)? {
        guard albumID == album, SafeID.isValid(fileID) else {
            throw FrameAgentError(.invalidInput, "\(kind) with an unsafe file id or another album")
        }
        var logger = logger
        logger[metadataKey: "file.id"] = "\(fileID)"
        logger[metadataKey: "album.id"] = "\(album)"
        let order = await core.observe(album: album, seq: seq)
        if case .implausible = order {
            let last = await core.lastSeq(album: album)
            logger.warning("\(kind) with an implausible sequence number dropped; asking for a sync", metadata: [
                "album.seq": "\(seq ?? 0)", "album.last_seq": "\(last ?? 0)"])
            await requestSync(reason: "an implausible album sequence number")
            return nil
        }
        return (logger, order)
    }

    func handlePhotoAdded(_ message: PhotoAddedMessage, album: String, logger: Logger) async throws {
        guard let (logger, order) = try await admit("photo_added", fileID: message.fileID, albumID: message.albumID, seq: message.seq,
                                                     album: album, logger: logger) else { return }
        var missed: Int64 = 0
        switch order {
        case .implausible:
            return  // dropped by admit
        case .seen:
            if await core.holds(message.fileID, album: album) {
                // A repeat: at most the download is tried again, if the photo is still missing.
                await core.remember(message.fileID, versions: message.versions)
                if await core.retryIfMissing(message.fileID) { catchUpWake.signal() }
                logger.debug("photo_added already acted on", metadata: ["album.seq": "\(message.seq ?? 0)"])
            } else {
                // Older than what the frame has, yet it does not hold the photo: removed since,
                // or the frame's numbers are off. A sync settles it.
                logger.info("an old photo_added for a photo this frame does not hold; asking for a sync", metadata: [
                    "album.seq": "\(message.seq ?? 0)"])
                await requestSync(reason: "an old photo_added")
            }
            return
        case .gap(let count):
            missed = count
        case .unnumbered:
            guard await core.firstTime("added:\(album)/\(message.fileID)") else {
                logger.debug("photo_added already acted on; ignored")
                return
            }
        case .next:
            break
        }
        logger.info("photo added", metadata: ["album.seq": "\(message.seq.map { String($0) } ?? "-")"])
        await core.photoAdded(message.fileID, album: album)
        await core.remember(message.fileID, versions: message.versions)
        await saveState()
        // The fast path: fetch now (straight from the notification's URL when it has this
        // screen's version); on failure the catch-up loop retries. Woken either way, it also
        // reports the photo `cached`.
        _ = await fetch(message.fileID, showNext: true)
        catchUpWake.signal()
        if missed > 0 {
            logger.info("album notifications were missed; asking for a sync", metadata: [
                "album.seq": "\(message.seq ?? 0)", "album.missed": "\(missed)"])
            await requestSync(reason: "a gap in the album's sequence numbers")
        }
    }

    func handlePhotoRemoved(_ message: PhotoRemovedMessage, album: String, logger: Logger) async throws {
        guard let (logger, order) = try await admit("photo_removed", fileID: message.fileID, albumID: message.albumID, seq: message.seq,
                                                     album: album, logger: logger) else { return }
        var missed: Int64 = 0
        switch order {
        case .implausible:
            return  // dropped by admit
        case .seen:
            // Acting on it could drop a photo added back since. If the frame still holds the
            // photo, something is off: a sync settles it.
            if await core.holds(message.fileID, album: album) {
                logger.info("an old photo_removed for a photo this frame holds; asking for a sync", metadata: [
                    "album.seq": "\(message.seq ?? 0)"])
                await requestSync(reason: "an old photo_removed")
            } else {
                logger.debug("photo_removed already acted on", metadata: ["album.seq": "\(message.seq ?? 0)"])
            }
            return
        case .gap(let count):
            missed = count
        case .next, .unnumbered:
            // Not deduplicated by key when unnumbered: removing twice changes nothing, and a
            // photo added again later must be removable again.
            break
        }
        if await core.photoRemoved(message.fileID, album: album) {
            try? await cache.remove([message.fileID])
            logger.info("photo removed", metadata: ["album.seq": "\(message.seq.map { String($0) } ?? "-")"])
        }
        await saveState()
        slideshowWake.signal()
        if missed > 0 {
            logger.info("album notifications were missed; asking for a sync", metadata: [
                "album.seq": "\(message.seq ?? 0)", "album.missed": "\(missed)"])
            await requestSync(reason: "a gap in the album's sequence numbers")
        }
    }

    /// Asks the album service for a fresh sync: `{"status": "sync_request"}` on the frame's
    /// status topic (QoS 1, never retained: it is not a state of the frame). Only while
    /// connected: every (re)connect asks anyway. The service answers at most one per frame
    /// every few seconds and serves a request inside that window when it ends, so asking
    /// again is cheap.
    func requestSync(reason: String) async {
        guard mqtt.isConnected else { return }
        do {
            try await mqtt.publish(FrameTopics.status(frame: id),
                                   payload: FrameTopics.encode(FrameStatusMessage(status: FrameStatusMessage.syncRequest)),
                                   qos: .atLeastOnce, retain: false)
            Counter(label: "frame_agent_sync_requests_total").increment()
            logger.debug("asked for a sync", metadata: ["sync.reason": "\(reason)"])
        } catch {
            logger.debug("asking for a sync failed; the next reconnect asks again", metadata: ["error": "\(error)", "sync.reason": "\(reason)"])
        }
    }

    func handleCommand(_ command: FrameCommandMessage, logger: Logger) async throws {
        switch await core.command(command) {
        case .done:
            logger.info("command applied", metadata: ["command.id": "\(command.id)", "command": "\(command.command)"])
            await saveState()
            if command.command == "reload" { catchUpWake.signal() }
            slideshowWake.signal()
        case .repeated:
            logger.debug("command already applied; ignored", metadata: ["command.id": "\(command.id)"])
        case .refused(let reason):
            logger.warning("command refused", metadata: ["command.id": "\(command.id.prefix(128))", "reason": "\(reason)"])
            await report(FrameStatusMessage(status: "error", message: "command \(command.id.prefix(128)): \(reason)"))
        }
    }

    // MARK: Fetching

    enum FetchOutcome { case cached, busy, failedTransient, failed }

    /// Downloads the photo's version for this screen (conditional GET when a copy is cached)
    /// and stores it: straight from a capability URL when a notification or a sync gave one,
    /// else (or when that URL is refused) through the metadata document, choosing the version.
    /// Never throws: failures are logged and recorded.
    func fetch(_ file: String, showNext: Bool) async -> FetchOutcome {
        guard await core.beginFetch(file) else { return .busy }
        var logger = self.logger
        logger[metadataKey: "file.id"] = "\(file)"
        let start = ContinuousClock.now
        do {
            let existing = await cache.entry(file)
            var direct: (size: String, download: GatewayClient.Download)?
            if let link = await core.link(for: file) {
                do {
                    let etag = existing?.version == link.size ? existing?.etag : nil
                    let download = try await gateway.download(capability: link.url, etag: etag)
                    direct = (size: link.size, download: download)
                } catch let error as FrameAgentError where !error.isTransient {
                    // Expired, signed with a key the gateway no longer holds, malformed: the
                    // metadata document has current URLs (a deleted photo answers 404 there too).
                    await core.forgetLink(file)
                    logger.info("the capability URL was refused; asking the metadata document", metadata: ["error": "\(error)"])
                }
            }
            let chosen: (size: String, download: GatewayClient.Download)
            if let direct {
                chosen = direct
            } else {
                let document = try await gateway.metadata(fileID: file)
                guard let version = VersionChoice.pick(document.versions, width: configuration.screenWidth, height: configuration.screenHeight) else {
                    throw FrameAgentError(.badResponse, "the photo has no version to show")
                }
                let etag = existing?.version == version.size ? existing?.etag : nil
                // The document lists capability URLs (no token needed); an older gateway's
                // token-authenticated download URLs still work.
                let download = (try? gateway.capabilityURL(version.url)) != nil
                    ? try await gateway.download(capability: version.url, etag: etag)
                    : try await gateway.download(version.url, etag: etag)
                chosen = (size: version.size, download: download)
            }
            switch chosen.download {
            case .notModified:
                logger.debug("cached version still current (304)", metadata: ["photo.version": "\(chosen.size)"])
            case .fetched(let bytes, let newTag):
                let entry = CacheEntry(fileID: file, version: chosen.size, etag: newTag, bytes: Int64(bytes.count),
                                       lastShown: Int64(Date().timeIntervalSince1970 * 1000))
                let evicted = try await cache.store(entry, bytes: bytes, protecting: await core.protected)
                if !evicted.isEmpty {
                    await core.evicted(evicted)
                    logger.info("cache full: least recently shown photos evicted", metadata: ["cache.evicted": "\(evicted.count)"])
                }
                logger.info("photo downloaded", metadata: [
                    "photo.version": "\(chosen.size)", "photo.bytes": "\(bytes.count)", "photo.direct": "\(direct != nil)",
                    "duration_ms": "\(Int((ContinuousClock.now - start).seconds * 1000))"])
            }
            gatewayReachable.withLock { $0 = true }
            _ = await core.fetched(file, showNext: showNext)
            Counter(label: "frame_agent_downloads_total", dimensions: [("result", "ok")]).increment()
            Timer(label: "frame_agent_fetch_duration").recordNanoseconds(Int64((ContinuousClock.now - start).seconds * 1e9))
            slideshowWake.signal()
            return .cached
        } catch let error as FrameAgentError where error.isTransient {
            gatewayReachable.withLock { $0 = false }
            await core.fetchFailed(file, transient: true)
            logger.warning("fetching a photo failed; will retry", metadata: ["error": "\(error)"])
            Counter(label: "frame_agent_downloads_total", dimensions: [("result", "retry")]).increment()
            return .failedTransient
        } catch {
            await core.fetchFailed(file, transient: false)
            logger.warning("fetching a photo failed; skipped until the next sync", metadata: ["error": "\(error)"])
            Counter(label: "frame_agent_downloads_total", dimensions: [("result", "failed")]).increment()
            await report(FrameStatusMessage(status: "error", fileID: file, message: "cannot fetch the photo: \(Self.brief(error))"))
            return .failed
        }
    }

    static func brief(_ error: any Error) -> String {
        if let error = error as? FrameAgentError {
            return error.status.map { "\(error.code) \($0)" } ?? "\(error.code)"
        }
        return "\(type(of: error))"
    }

    /// Downloads what the sync wants and the cache lacks; on a transient failure waits with
    /// back-off and jitter (woken at once when the broker reconnects), and reports `cached`.
    private func catchUpLoop() async {
        var backoff = Backoff(base: configuration.retryDelay, max: configuration.retryDelayMax)
        var attempt = 0
        while !Task.isCancelled {
            var failedTransient = false
            for file in await core.duePending() {
                if Task.isCancelled { break }
                if await fetch(file, showNext: false) == .failedTransient {
                    failedTransient = true
                    break
                }
            }
            if let files = await core.takeCachedReport(), !files.isEmpty {
                await report(FrameStatusMessage(status: "cached", fileIDs: Array(files.prefix(10_000))))
            }
            await saveState()
            let delay: Duration
            if failedTransient {
                attempt += 1
                delay = backoff.delay(attempt: attempt)
            } else {
                attempt = 0
                delay = .seconds(300)
            }
            await catchUpWake.wait(upTo: delay)
        }
    }

    // MARK: Screen

    private func slideshowLoop() async {
        let black = ScreenImage(pixels: Pixels(width: configuration.screenWidth, height: configuration.screenHeight,
                                               rgb: [UInt8](repeating: 0, count: configuration.screenWidth * configuration.screenHeight * 3)),
                                png: [])
        while !Task.isCancelled {
            let (step, until) = await core.step(now: .now, date: Date())
            switch step {
            case .show(let file):
                await show(file)
            case .blank:
                do {
                    var screen = black
                    if display.wantsPNG { screen.png = try await imaging.png(black.pixels) }
                    try await display.blank(black: screen)
                    logger.info("screen off")
                    await publishHeartbeat()
                } catch {
                    logger.error("turning the screen off failed", metadata: ["error": "\(error)"])
                }
            case .idle:
                await slideshowWake.wait(upTo: max(.milliseconds(10), until - .now))
            }
        }
    }

    private func show(_ file: String) async {
        var logger = self.logger
        logger[metadataKey: "file.id"] = "\(file)"
        let screen: ScreenImage
        do {
            let bytes = try await cache.read(file)
            screen = try await imaging.screen(bytes, width: configuration.screenWidth, height: configuration.screenHeight,
                                              png: display.wantsPNG)
        } catch {
            logger.warning("a cached photo cannot be shown; fetching it again", metadata: ["error": "\(error)"])
            await core.unreadable(file)
            try? await cache.remove([file])
            catchUpWake.signal()
            return
        }
        do {
            try await display.show(screen, transition: await core.transition)
        } catch {
            logger.error("the display refused the screen", metadata: ["error": "\(error)"])
            await report(FrameStatusMessage(status: "error", fileID: file, message: "display: \(Self.brief(error))"))
            await core.shown(file)  // do not retry in a loop; the next change tries again
            return
        }
        await core.shown(file)
        await cache.touch(file, at: Int64(Date().timeIntervalSince1970 * 1000))
        logger.info("photo displayed")
        Counter(label: "frame_agent_photos_displayed_total").increment()
        await report(FrameStatusMessage(status: "displayed", fileID: file))
        // The retained heartbeat says what is on screen now, not only every N seconds.
        await publishHeartbeat()
    }

    // MARK: Reports

    /// Publishes a status report (QoS 1); while disconnected it waits (latest per kind).
    func report(_ status: FrameStatusMessage) async {
        let topic = FrameTopics.status(frame: id)
        if mqtt.isConnected {
            do {
                try await mqtt.publish(topic, payload: FrameTopics.encode(status), qos: .atLeastOnce)
                return
            } catch {
                logger.debug("status report not sent; kept for the reconnect", metadata: ["error": "\(error)"])
            }
        }
        unsent.withLock { $0[status.status] = status }
    }

    private func flushReports() async {
        let reports = unsent.withLock { reports -> [FrameStatusMessage] in
            defer { reports = [:] }
            // cached before displayed, the order they happen in.
            return reports.values.sorted { $0.status < $1.status }
        }
        for status in reports { await report(status) }
    }

    private func heartbeatLoop() async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: configuration.heartbeatInterval)
            } catch {
                return
            }
            await publishHeartbeat()
        }
    }

    func publishHeartbeat() async {
        guard mqtt.isConnected else { return }
        let usage = await cache.usage
        let heartbeat = FrameHeartbeatMessage(
            at: Int64(Date().timeIntervalSince1970 * 1000), uptimeSeconds: Int64((ContinuousClock.now - started).seconds),
            currentFileID: await core.displayed, state: await core.screenState, cacheBytes: usage.bytes, cacheFiles: usage.files,
            cacheBudgetBytes: configuration.cacheBytes, gatewayReachable: gatewayReachable.current)
        Gauge(label: "frame_agent_cache_bytes").record(usage.bytes)
        do {
            try await mqtt.publish(FrameTopics.heartbeat(frame: id), payload: FrameTopics.encode(heartbeat), qos: .atMostOnce, retain: true)
        } catch {
            logger.debug("heartbeat not sent", metadata: ["error": "\(error)"])
        }
    }

    private func saveState() async {
        do {
            let data = try JSONEncoder().encode(await core.state)
            try await cache.writeState(data)
        } catch {
            logger.warning("saving the agent state failed", metadata: ["error": "\(error)"])
        }
    }
}

/// The frame's MQTT subscriptions, changed one reconcile at a time.
actor SubscriptionManager {
    let client: MQTTClient
    let logger: Logger
    private(set) var current: Set<String> = []

    init(client: MQTTClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Subscribes to what is wanted and not yet subscribed, unsubscribes from the rest. A
    /// failure (broker away) is logged; the next connect reconciles again.
    func reconcile(_ wanted: [(String, MQTTQoS)]) async {
        guard client.isConnected else { return }
        let missing = wanted.filter { !current.contains($0.0) }
        let extra = current.subtracting(wanted.map(\.0))
        do {
            if !missing.isEmpty {
                let granted = try await client.subscribe(missing)
                for ((filter, _), qos) in zip(missing, granted) where qos != nil { current.insert(filter) }
            }
            if !extra.isEmpty {
                try await client.unsubscribe(Array(extra).sorted())
                current.subtract(extra)
            }
        } catch {
            logger.warning("updating MQTT subscriptions failed; retried on the next connect", metadata: ["error": "\(error)"])
        }
    }

    /// Forget what the broker has (its session was lost): everything is subscribed again.
    func reset() { current = [] }
}
