import Foundation

/// The slideshow's order, as a pure value (no clock, no I/O): which photo is on screen, which
/// comes next, which came before. The agent decides *when* to move; this decides *where to*.
public struct Slideshow: Sendable, Hashable, Codable {
    /// The photos that can be shown (cached and wanted), in the sync's order (newest first).
    public private(set) var photos: [String] = []
    /// The photo on screen (or that would be, while asleep).
    public private(set) var current: String?
    /// Shown next, before the normal order resumes (new photos, the photo left by `previous`).
    public private(set) var upNext: [String] = []
    /// Photos shown before `current`, most recent last (bounded).
    public private(set) var history: [String] = []
    public var shuffle = false
    var random = SplitMix64(seed: 0x5EED)

    static let historyLimit = 100

    public init(shuffle: Bool = false, seed: UInt64 = 0x5EED) {
        self.shuffle = shuffle
        self.random = SplitMix64(seed: seed)
    }

    /// Replaces the photo list (a sync, or the cache changed). Photos no longer listed leave
    /// the queue and the history; if `current` left, it becomes nil (the caller shows another).
    public mutating func setPhotos(_ list: [String]) {
        var seen = Set<String>()
        photos = list.filter { seen.insert($0).inserted }
        upNext.removeAll { !seen.contains($0) }
        history.removeAll { !seen.contains($0) }
        if let current, !seen.contains(current) { self.current = nil }
    }

    /// Adds a photo (at the front, the newest) and, with `showNext`, queues it first.
    public mutating func add(_ file: String, showNext: Bool) {
        if !photos.contains(file) { photos.insert(file, at: 0) }
        if showNext {
            upNext.removeAll { $0 == file }
            upNext.insert(file, at: 0)
        }
    }

    /// Removes a photo everywhere; returns true if it was on screen (now nil).
    @discardableResult
    public mutating func remove(_ file: String) -> Bool {
        photos.removeAll { $0 == file }
        upNext.removeAll { $0 == file }
        history.removeAll { $0 == file }
        if current == file {
            current = nil
            return true
        }
        return false
    }

    /// Moves to the next photo: the first queued one, else the one after `current` in order
    /// (shuffle: another one at random). Returns the new current (nil when there is none).
    @discardableResult
    public mutating func advance() -> String? {
        guard !photos.isEmpty else {
            current = nil
            return nil
        }
        let next: String
        if !upNext.isEmpty {
            next = upNext.removeFirst()
        } else if shuffle, photos.count > 1 {
            let others = photos.filter { $0 != current }
            next = others[Int(random.next() % UInt64(others.count))]
        } else if let current, let index = photos.firstIndex(of: current) {
            next = photos[(index + 1) % photos.count]
        } else {
            next = photos[0]
        }
        if let current, current != next {
            history.append(current)
            if history.count > Self.historyLimit { history.removeFirst(history.count - Self.historyLimit) }
        }
        current = next
        return next
    }

    /// Goes back to the photo shown before (the one left is queued to come next). Returns the
    /// new current, or nil (and nothing changes) when there is no earlier photo.
    @discardableResult
    public mutating func back() -> String? {
        guard let previous = history.popLast() else { return nil }
        if let current, current != previous {
            upNext.removeAll { $0 == current }
            upNext.insert(current, at: 0)
        }
        current = previous
        return previous
    }

    /// Puts `file` on screen directly (restoring what was shown before a restart).
    public mutating func restore(current file: String) {
        if photos.contains(file) { current = file }
    }
}

/// A small, seedable, Sendable random generator (SplitMix64): slideshow shuffles and retry
/// jitter need no cryptographic quality, and tests need repeatable sequences.
public struct SplitMix64: RandomNumberGenerator, Sendable, Hashable, Codable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Retry delays: `base × 2^(attempt-1)`, capped at `max`, each scaled by a random factor in
/// [0.5, 1.5) so many frames coming back at once do not retry in step.
public struct Backoff: Sendable {
    public var base: Duration
    public var max: Duration
    var random: SplitMix64

    public init(base: Duration, max: Duration, seed: UInt64 = UInt64.random(in: 0...UInt64.max)) {
        self.base = base
        self.max = max
        self.random = SplitMix64(seed: seed)
    }

    /// The delay before retry number `attempt` (1 = the first retry).
    public mutating func delay(attempt: Int) -> Duration {
        let exponent = Swift.min(Swift.max(attempt - 1, 0), 20)
        let nominal = Swift.min(base * (1 << exponent), max)
        let jitter = 0.5 + Double(random.next() % 1_000_000) / 1_000_000
        return .nanoseconds(Int64(nominal.seconds * jitter * 1e9))
    }
}

/// The ids seen most recently, bounded, in order: acts-once filters for command ids and
/// photo notifications (QoS 2 is asked for but never relied on).
public struct RecentIDs: Sendable, Hashable, Codable {
    public private(set) var ids: [String] = []
    private var set: Set<String> = []
    public let capacity: Int

    public init(capacity: Int = 512) {
        self.capacity = Swift.max(1, capacity)
    }

    /// Records `id`; returns false if it was already there (a repeat: do not act again).
    public mutating func insert(_ id: String) -> Bool {
        guard set.insert(id).inserted else { return false }
        ids.append(id)
        if ids.count > capacity {
            let dropped = ids.removeFirst()
            set.remove(dropped)
        }
        return true
    }

    public func contains(_ id: String) -> Bool { set.contains(id) }

    /// Forgets `id` (so a later repeat is acted on, e.g. after the action failed for good).
    public mutating func remove(_ id: String) {
        guard set.remove(id) != nil else { return }
        ids.removeAll { $0 == id }
    }

    enum CodingKeys: String, CodingKey { case ids, capacity }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        capacity = Swift.max(1, try c.decode(Int.self, forKey: .capacity))
        for id in try c.decode([String].self, forKey: .ids) { _ = insert(id) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(ids, forKey: .ids)
        try c.encode(capacity, forKey: .capacity)
    }
}

extension Duration {
    /// The duration in seconds, as a Double.
    var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}
