/// When to answer the syncs frames ask for (`{"status": "sync_request"}` on their status
/// topic): at most one sync per frame per `interval`. A request inside a frame's window is
/// served when the window ends — once, however many came meanwhile — and never dropped: the
/// frame asked because it knows it missed something, and the sync it gets must be built after
/// its request.
///
/// A pure state machine: ``FramePublisher`` owns the clock, the waiting and the publishing.
/// Memory stays bounded by the frames asking within one interval (served windows are forgotten
/// once they end).
struct SyncRequestSchedule: Sendable {
    let interval: Duration
    /// When each frame's last requested sync was taken for serving (kept while its window lasts).
    private var served: [String: ContinuousClock.Instant] = [:]
    /// Frames waiting, each with the instant it may be served.
    private var waiting: [String: ContinuousClock.Instant] = [:]

    init(interval: Duration) {
        self.interval = interval
    }

    /// Frames waiting to be served.
    var waitingCount: Int { waiting.count }

    /// Records a request from `frame`; returns when it will be served: now, or when the
    /// frame's window ends. A frame already waiting keeps its turn (one sync answers both).
    @discardableResult
    mutating func request(_ frame: String, now: ContinuousClock.Instant) -> ContinuousClock.Instant {
        if let at = waiting[frame] { return at }
        var at = now
        if let last = served[frame], last + interval > now { at = last + interval }
        waiting[frame] = at
        return at
    }

    /// Takes up to `limit` frames whose turn has come, earliest first, and starts their windows
    /// at `now`; also says when the next frame still waiting is due (nil: none waits).
    mutating func take(now: ContinuousClock.Instant, limit: Int) -> (frames: [String], next: ContinuousClock.Instant?) {
        let window = interval
        served = served.filter { $0.value + window > now }
        let due = waiting.filter { $0.value <= now }.sorted { ($0.value, $0.key) < ($1.value, $1.key) }.prefix(max(0, limit))
        var frames: [String] = []
        for (frame, _) in due {
            waiting[frame] = nil
            served[frame] = now
            frames.append(frame)
        }
        return (frames, waiting.values.min())
    }
}
