import Foundation
import Wire

/// What a frame remembers across restarts (`state.json` in its cache folder).
struct AgentState: Codable, Sendable {
    struct Wanted: Codable, Sendable, Hashable {
        var fileID: String
        var albumIDs: [String]
    }
    /// The last sync applied: a sync with a sequence not above it is a repeat.
    var lastSyncSeq: Int64 = 0
    var albumIDs: [String] = []
    /// The last sequence number heard per album shown (a sync's `album_seqs`, then each
    /// photo_added / photo_removed): the next notification should carry it + 1. Optional so a
    /// state saved by an older agent still decodes.
    var albumSeqs: [String: Int64]?
    /// The photos the frame should hold, in the sync's order (newest first).
    var wanted: [Wanted] = []
    var commandIDs = RecentIDs(capacity: 256)
    /// `added:{album}/{file}` and `removed:{album}/{file}` already acted on.
    var notifications = RecentIDs(capacity: 2048)
    var config: FrameConfigMessage?
    var intervalSeconds: Int?
    var paused = false
    /// Set by the sleep/wake commands (nil: follow the sleep window).
    var manualSleep: Bool?
    var slideshow = Slideshow()
}

/// The frame agent's state and decisions, one actor: what to hold, what to show, what was
/// already done. No network or display I/O happens here; the agent asks and then acts.
actor AgentCore {
    private(set) var state = AgentState()
    /// The screen, to pick the version made for it from a notification's or a sync's versions.
    let screenWidth: Int
    let screenHeight: Int
    /// The capability URL of the version made for this screen, per photo (from photo_added and
    /// syncs). Not saved: after a restart the frame asks for a sync, which brings them again.
    private var links: [String: PhotoVersionLink] = [:]
    /// Albums a sync was behind on and the frame asked about since (see ``applySync(_:)``).
    private var askedBehind: Set<String> = []
    /// Photos wanted but not cached (or to re-check): `showNext` when a photo_added asked.
    private(set) var pending: [String: Bool] = [:]
    private var inFlight: Set<String> = []
    private var cached: Set<String> = []
    /// On screen now (nil: nothing, or blank).
    private(set) var displayed: String?
    private var blanked = false
    private var advanceRequested = false
    private var renderRequested = false
    private var nextChangeAt = ContinuousClock.now
    private var needsCachedReport = false
    let defaultInterval: Duration

    /// `screenWidth`/`screenHeight`: the frame's screen (0: no direct download is chosen from
    /// notifications, every photo goes through the metadata document).
    init(defaultInterval: Duration, screenWidth: Int = 0, screenHeight: Int = 0) {
        self.defaultInterval = defaultInterval
        self.screenWidth = screenWidth
        self.screenHeight = screenHeight
    }

    // MARK: Start

    /// Restores the saved state against what the cache holds.
    func restore(_ saved: AgentState?, cached: Set<String>) {
        if let saved { state = saved }
        self.cached = cached
        pending = [:]
        links = [:]
        askedBehind = []
        for w in state.wanted where !cached.contains(w.fileID) { pending[w.fileID] = false }
        refreshPlaylist()
        state.slideshow.shuffle = state.config?.shuffle ?? false
    }

    var albumIDs: [String] { state.albumIDs }
    var wantedIDs: [String] { state.wanted.map(\.fileID) }

    // MARK: Sync

    struct SyncOutcome: Sendable {
        var drop: [String]
        var invalidPhotos: Int
        /// Albums whose number in the sync is below one a notification already brought: their
        /// photos were left as they were, and the frame should ask for a newer sync.
        var behind: [String] = []
    }

    /// The album service numbers a frame's syncs one by one: a sequence number far beyond the
    /// last one applied (or beyond 2^40 at all) cannot be one of its syncs, and adopting it would
    /// make the frame ignore every real sync after it. Such a sync is dropped.
    static let maxSeqJump: Int64 = 1 << 32
    static let maxSeq: Int64 = 1 << 40
    static func plausible(_ seq: Int64, after last: Int64) -> Bool {
        seq > 0 && seq <= maxSeq && seq - last <= maxSeqJump
    }

    /// Applies a sync once (nil for a repeat or an older sequence): the wanted list and the
    /// albums, what to drop from the cache, what to download, the albums' sequence numbers and
    /// the capability URLs of this screen's versions.
    ///
    /// A sync is built at some instant; notifications published after it may arrive before it
    /// (a retained sync delivered on subscribe, after a persistent session's queued
    /// notifications). For an album whose number in the sync is below the last one the frame
    /// heard, the sync says nothing new: the frame keeps that album's photos as it has them and
    /// asks for a newer sync (``SyncOutcome/behind``). Once only: a second sync behind on the
    /// same album is believed (the service's numbers went back), so the frame never keeps asking.
    func applySync(_ sync: FrameSyncMessage) -> SyncOutcome? {
        guard sync.seq > state.lastSyncSeq, Self.plausible(sync.seq, after: state.lastSyncSeq) else { return nil }
        let hadSync = state.lastSyncSeq > 0
        let previousWanted = state.wanted
        let previous = Set(previousWanted.map(\.fileID))
        state.lastSyncSeq = sync.seq
        state.albumIDs = sync.albumIDs.filter { TopicID.isValid($0) && SafeID.isValid($0) }
        let behind = applyAlbumSeqs(sync.albumSeqs)
        var order: [String] = []
        var albums: [String: [String]] = [:]
        var invalid = 0
        for w in previousWanted {
            let kept = w.albumIDs.filter { behind.contains($0) }
            guard !kept.isEmpty else { continue }
            order.append(w.fileID)
            albums[w.fileID] = kept
        }
        for photo in sync.photos {
            guard SafeID.isValid(photo.fileID), SafeID.isValid(photo.albumID) else {
                invalid += 1
                continue
            }
            if behind.contains(photo.albumID) { continue }
            if albums[photo.fileID] == nil { order.append(photo.fileID) }
            if albums[photo.fileID]?.contains(photo.albumID) != true { albums[photo.fileID, default: []].append(photo.albumID) }
            remember(photo.fileID, versions: photo.versions)
        }
        state.wanted = order.map { AgentState.Wanted(fileID: $0, albumIDs: albums[$0] ?? []) }
        let wanted = Set(order)
        let drop = cached.filter { !wanted.contains($0) }.sorted()
        cached.subtract(drop)
        pending = pending.filter { wanted.contains($0.key) }
        links = links.filter { wanted.contains($0.key) }
        for file in order where !cached.contains(file) && pending[file] == nil { pending[file] = false }
        // The newest photo this frame had not heard of (its photo_added was lost, e.g. with a
        // broker that lost the session) is shown next, as photo_added would have.
        if hadSync, let newest = order.first(where: { !previous.contains($0) }), !cached.contains(newest) {
            pending[newest] = true
        }
        refreshPlaylist()
        needsCachedReport = true
        return SyncOutcome(drop: drop, invalidPhotos: invalid, behind: behind.sorted())
    }

    /// Takes a sync's album numbers as the last ones heard (for the albums it shows); returns
    /// the albums it is behind on (see ``applySync(_:)``). A number that fails the plausibility
    /// check is ignored, like an implausible sync.
    private func applyAlbumSeqs(_ albumSeqs: [String: Int64]?) -> Set<String> {
        let shown = Set(state.albumIDs)
        var seqs = (state.albumSeqs ?? [:]).filter { shown.contains($0.key) }
        var behind: Set<String> = []
        for (album, seq) in albumSeqs ?? [:] where shown.contains(album) {
            guard seq == 0 || Self.plausible(seq, after: seqs[album] ?? 0) else { continue }
            if let last = seqs[album], seq < last, !askedBehind.contains(album) {
                behind.insert(album)
            } else {
                seqs[album] = seq
            }
        }
        askedBehind = behind
        state.albumSeqs = seqs
        return behind
    }

    // MARK: Album sequence numbers

    /// What an album notification's sequence number says, against the last one the frame heard
    /// for that album (a sync's `album_seqs`, or an earlier notification).
    enum AlbumSequence: Sendable, Equatable {
        /// No number (an older album service): acted on as before, once per (album, file).
        case unnumbered
        /// The next one, or the first the frame has for the album: act on it.
        case next
        /// Beyond the next one: `missed` notifications never arrived. Act on it and ask for a sync.
        case gap(missed: Int64)
        /// At or below the last one: a repeat, or a change a sync already brought. The photo list
        /// must not change (an old photo_removed could drop a photo added back since); a
        /// photo_added of a photo still wanted may retry its download.
        case seen
        /// Not a number the album service hands out (≤ 0, beyond ``maxSeq``, a jump no real
        /// history makes): dropped, so it cannot make the frame ignore the real ones; ask for a
        /// sync.
        case implausible
    }

    /// Checks a notification's number for `album` (one the frame shows) and records it as the
    /// last one heard, unless it is seen already or implausible.
    func observe(album: String, seq: Int64?) -> AlbumSequence {
        guard let seq else { return .unnumbered }
        let last = state.albumSeqs?[album]
        guard Self.plausible(seq, after: last ?? 0) else { return .implausible }
        if let last, seq <= last { return .seen }
        var seqs = state.albumSeqs ?? [:]
        seqs[album] = seq
        state.albumSeqs = seqs
        guard let last else { return .next }
        return seq == last + 1 ? .next : .gap(missed: seq - last - 1)
    }

    /// The last number heard for `album` (nil: none yet).
    func lastSeq(album: String) -> Int64? { state.albumSeqs?[album] }

    // MARK: Photo notifications

    /// Whether an album is one the frame shows.
    func shows(album: String) -> Bool { state.albumIDs.contains(album) }

    /// Records a notification key; false if it was already acted on.
    func firstTime(_ key: String) -> Bool { state.notifications.insert(key) }

    /// Whether `file` is wanted for `album` (nil: for any album).
    func holds(_ file: String, album: String? = nil) -> Bool {
        state.wanted.contains { w in w.fileID == file && (album == nil || w.albumIDs.contains(album ?? "")) }
    }

    /// A repeated photo_added of a photo still wanted: fetched again if it is not cached (the
    /// first download may have failed for good).
    func retryIfMissing(_ file: String) -> Bool {
        guard holds(file), !cached.contains(file), !inFlight.contains(file) else { return false }
        if pending[file] == nil { pending[file] = false }
        return true
    }

    // MARK: Capability URLs

    /// Remembers the version made for this screen among `versions`, if there is one.
    func remember(_ file: String, versions: [PhotoVersionLink]?) {
        guard let versions, screenWidth > 0, screenHeight > 0,
              let link = DirectVersion.pick(versions, width: screenWidth, height: screenHeight,
                                            preferredFormat: state.config?.preferredFormat) else { return }
        links[file] = link
    }

    /// The capability URL to download `file` from, if a notification or a sync gave one.
    func link(for file: String) -> PhotoVersionLink? { links[file] }

    /// The URL was refused (expired, unknown key): the metadata document is asked from now on.
    func forgetLink(_ file: String) { links[file] = nil }

    /// A photo_added: wanted from now on (newest first), to be fetched and shown next.
    func photoAdded(_ file: String, album: String) {
        if let i = state.wanted.firstIndex(where: { $0.fileID == file }) {
            if !state.wanted[i].albumIDs.contains(album) { state.wanted[i].albumIDs.append(album) }
        } else {
            state.wanted.insert(AgentState.Wanted(fileID: file, albumIDs: [album]), at: 0)
        }
        pending[file] = true
    }

    /// A photo_removed: returns whether the file should leave the cache (no other album has it).
    func photoRemoved(_ file: String, album: String) -> Bool {
        // A later photo_added of the same photo (without a number) is acted on again.
        state.notifications.remove("added:\(album)/\(file)")
        guard let i = state.wanted.firstIndex(where: { $0.fileID == file }) else { return false }
        state.wanted[i].albumIDs.removeAll { $0 == album }
        guard state.wanted[i].albumIDs.isEmpty else { return false }
        state.wanted.remove(at: i)
        pending[file] = nil
        links[file] = nil
        cached.remove(file)
        if state.slideshow.remove(file) { advanceRequested = true }
        return true
    }

    // MARK: Fetching

    /// Claims a photo for download; false if another task is fetching it or it is not wanted.
    func beginFetch(_ file: String) -> Bool {
        guard state.wanted.contains(where: { $0.fileID == file }), !inFlight.contains(file) else { return false }
        inFlight.insert(file)
        return true
    }

    /// The photos to fetch now: those to show next first, then in the wanted order.
    func duePending() -> [String] {
        let order = state.wanted.map(\.fileID)
        let due = order.filter { pending[$0] != nil && !inFlight.contains($0) }
        return due.filter { pending[$0] == true } + due.filter { pending[$0] == false }
    }

    /// The photo is in the cache: it joins the playlist (first in the queue if a photo_added
    /// asked for it). Returns whether it is still wanted.
    func fetched(_ file: String, showNext: Bool) -> Bool {
        inFlight.remove(file)
        let next = (pending.removeValue(forKey: file) ?? false) || showNext
        guard state.wanted.contains(where: { $0.fileID == file }) else { return false }
        let isNew = cached.insert(file).inserted
        refreshPlaylist()
        if next {
            state.slideshow.add(file, showNext: true)
            advanceRequested = true
        }
        if isNew { needsCachedReport = true }
        return true
    }

    /// A fetch failed: a transient failure keeps it pending (retried with back-off), a
    /// permanent one drops it until the next sync.
    func fetchFailed(_ file: String, transient: Bool) {
        inFlight.remove(file)
        if !transient { pending[file] = nil }
    }

    /// Photos the cache let go to make room.
    func evicted(_ files: [String]) {
        for file in files {
            cached.remove(file)
            if state.slideshow.remove(file) { advanceRequested = true }
        }
        refreshPlaylist()
    }

    /// Photos that must not be evicted now: on screen and queued.
    var protected: Set<String> {
        var set = Set(state.slideshow.upNext)
        if let current = state.slideshow.current { set.insert(current) }
        if let displayed { set.insert(displayed) }
        return set
    }

    /// A cached photo could not be shown (unreadable): out of the cache, fetched again.
    func unreadable(_ file: String) {
        cached.remove(file)
        if state.slideshow.remove(file) { advanceRequested = true }
        if state.wanted.contains(where: { $0.fileID == file }) { pending[file] = false }
        if displayed == file { displayed = nil }
    }

    /// The cached, wanted photos to report as `cached`, once after each change.
    func takeCachedReport() -> [String]? {
        guard needsCachedReport else { return nil }
        needsCachedReport = false
        return state.wanted.map(\.fileID).filter { cached.contains($0) }
    }

    /// Reload: every wanted photo is checked again (conditional GET), the screen redrawn.
    func reload() {
        for w in state.wanted { pending[w.fileID] = pending[w.fileID] ?? false }
        renderRequested = true
    }

    private func refreshPlaylist() {
        state.slideshow.setPhotos(state.wanted.map(\.fileID).filter { cached.contains($0) })
    }

    // MARK: Commands and config

    enum CommandOutcome: Sendable, Equatable {
        case done
        case repeated
        case refused(String)
    }

    /// Applies a command once per id.
    func command(_ command: FrameCommandMessage) -> CommandOutcome {
        guard !command.id.isEmpty, command.id.utf8.count <= 128 else { return .refused("a command needs an id") }
        guard state.commandIDs.insert(command.id) else { return .repeated }
        switch command.command {
        case "next":
            advanceRequested = true
        case "previous":
            if state.slideshow.back() != nil { renderRequested = true }
        case "pause":
            state.paused = true
        case "resume":
            state.paused = false
            nextChangeAt = ContinuousClock.now + interval
        case "reload":
            reload()
        case "sleep":
            state.manualSleep = true
        case "wake":
            state.manualSleep = false
        case "set_interval":
            guard let seconds = command.args["seconds"].flatMap(Int.init), (1...86_400).contains(seconds) else {
                return .refused("set_interval needs args.seconds in 1...86400")
            }
            state.intervalSeconds = seconds
            nextChangeAt = ContinuousClock.now + interval
        default:
            return .refused("unknown command \(command.command.prefix(40))")
        }
        return .done
    }

    /// The frame's settings (retained `frames/{id}/config`).
    func configure(_ config: FrameConfigMessage) {
        // The preferred format changed: URLs picked for the old one go (the next sync brings
        // the new ones; meanwhile the metadata document is asked). The first config changes
        // nothing: URLs picked without one are JPEG, which every frame shows.
        if let old = state.config, old.preferredFormat != config.preferredFormat { links = [:] }
        state.config = config
        state.intervalSeconds = config.intervalSeconds > 0 ? Int(min(config.intervalSeconds, 86_400)) : nil
        state.slideshow.shuffle = config.shuffle
        // A schedule change ends a manual sleep/wake.
        state.manualSleep = nil
        nextChangeAt = min(nextChangeAt, ContinuousClock.now + interval)
    }

    var interval: Duration { state.intervalSeconds.map { .seconds($0) } ?? defaultInterval }
    var transition: String { state.config?.transition ?? "none" }

    var sleepWindow: SleepWindow? {
        guard let c = state.config else { return nil }
        return SleepWindow(start: c.sleepStart, end: c.sleepEnd, timeZone: c.timeZone)
    }

    // MARK: The slideshow clock

    enum Step: Sendable, Equatable {
        case show(String)
        case blank
        case idle
    }

    /// What the screen should do now, and when to ask again at the latest.
    func step(now: ContinuousClock.Instant, date: Date) -> (Step, ContinuousClock.Instant) {
        let asleep = state.manualSleep ?? (sleepWindow?.contains(date) ?? false)
        if asleep {
            if !blanked {
                blanked = true
                displayed = nil
                return (.blank, now + .seconds(30))
            }
            return (.idle, now + .seconds(30))
        }
        if blanked {
            blanked = false
            renderRequested = true
        }
        let show = state.slideshow
        var moved = false
        if advanceRequested {
            advanceRequested = false
            state.slideshow.advance()
            moved = true
        } else if show.current == nil, !show.photos.isEmpty {
            state.slideshow.advance()
            moved = true
        } else if !state.paused, now >= nextChangeAt, show.photos.count > 1 {
            state.slideshow.advance()
            moved = true
        }
        if let current = state.slideshow.current, current != displayed || renderRequested {
            renderRequested = false
            nextChangeAt = now + interval
            return (.show(current), nextChangeAt)
        }
        if moved || nextChangeAt <= now { nextChangeAt = now + interval }
        if state.slideshow.current == nil, displayed != nil {
            displayed = nil
            return (.blank, nextChangeAt)
        }
        return (.idle, state.paused ? now + .seconds(60) : nextChangeAt)
    }

    /// The screen shows `file` now.
    func shown(_ file: String) {
        displayed = file
    }

    /// "showing", "paused", "asleep", "empty".
    var screenState: String {
        if blanked { return "asleep" }
        if displayed == nil { return "empty" }
        return state.paused ? "paused" : "showing"
    }
}
