import Foundation

/// How many login, sign-up and pairing attempts the gateway takes, as token buckets: `burst`
/// at once, then one more every `refill`.
public struct ThrottleConfiguration: Sendable {
    public struct Limit: Sendable, Equatable {
        /// Attempts allowed at once.
        public var burst: Int
        /// One more attempt is allowed every `refill`.
        public var refill: Duration

        public init(burst: Int, refill: Duration) {
            self.burst = burst
            self.refill = refill
        }
    }

    /// Wrong passwords for one account (its normalized e-mail), from anywhere.
    public var loginFailuresPerAccount = Limit(burst: 5, refill: .seconds(60))
    /// Wrong passwords from one client address, whatever the account.
    public var loginFailuresPerAddress = Limit(burst: 20, refill: .seconds(30))
    /// Sign-up attempts from one client address.
    public var signUpsPerAddress = Limit(burst: 20, refill: .seconds(60))
    /// Wrong pairing codes (`POST /api/v1/frames/pair`) per account: with ~887 million codes
    /// and a code living 10 minutes, a few tries a minute leave a guesser no chance.
    public var pairFailuresPerAccount = Limit(burst: 10, refill: .seconds(60))
    /// Wrong pairing codes from one client address, whatever the account.
    public var pairFailuresPerAddress = Limit(burst: 30, refill: .seconds(30))
    /// Pairing codes asked for (`POST /api/v1/frames/pairings`, no token) from one client address.
    public var pairingsPerAddress = Limit(burst: 30, refill: .seconds(20))
    /// Most accounts and addresses remembered at once; beyond it the least recently used go.
    public var maxTrackedKeys = 10_000

    public init() {}
}

/// Token buckets keyed by text, in memory, bounded. Pure state: the caller passes the time
/// and keeps it behind a lock; a key with a full bucket is the same as a key not tracked.
struct TokenBuckets {
    typealias Limit = ThrottleConfiguration.Limit

    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
    }

    private var buckets: [String: Bucket] = [:]
    let capacity: Int

    init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    var count: Int { buckets.count }

    /// Tokens in `key`'s bucket at `now` (`limit.burst` for a key not tracked).
    func tokens(_ key: String, _ limit: Limit, now: ContinuousClock.Instant) -> Double {
        guard let bucket = buckets[key] else { return Double(limit.burst) }
        let refilled = limit.refill > .zero ? (now - bucket.updated) / limit.refill : Double(limit.burst)
        return min(Double(limit.burst), bucket.tokens + max(0, refilled))
    }

    /// How long until `key` has a whole token; nil when it has one now.
    func wait(_ key: String, _ limit: Limit, now: ContinuousClock.Instant) -> Duration? {
        let tokens = tokens(key, limit, now: now)
        return tokens >= 1 ? nil : limit.refill * (1 - tokens)
    }

    /// Takes one token (the caller checked ``wait(_:_:now:)``).
    mutating func take(_ key: String, _ limit: Limit, now: ContinuousClock.Instant) {
        set(key, tokens: tokens(key, limit, now: now) - 1, limit, now: now)
    }

    /// Gives one token back (an attempt that turned out not to count).
    mutating func give(_ key: String, _ limit: Limit, now: ContinuousClock.Instant) {
        set(key, tokens: tokens(key, limit, now: now) + 1, limit, now: now)
    }

    /// Fills `key`'s bucket.
    mutating func reset(_ key: String) {
        buckets[key] = nil
    }

    private mutating func set(_ key: String, tokens: Double, _ limit: Limit, now: ContinuousClock.Instant) {
        if tokens >= Double(limit.burst) {
            buckets[key] = nil
            return
        }
        if buckets[key] == nil, buckets.count >= capacity { evict(now: now) }
        buckets[key] = Bucket(tokens: max(0, tokens), updated: now)
    }

    /// Makes room: the least recently used tenth goes (their buckets refill as if new).
    private mutating func evict(now: ContinuousClock.Instant) {
        let oldest = buckets.sorted { $0.value.updated < $1.value.updated }.prefix(max(1, capacity / 10))
        for (key, _) in oldest { buckets[key] = nil }
    }
}

/// Login, sign-up and pairing throttling: wrong passwords per account and per client address,
/// sign-ups per client address, wrong pairing codes per account and per address, pairing codes
/// asked for per address. An attempt takes its tokens before the password is checked (so
/// parallel attempts cannot overspend); a correct password refills the account and gives the
/// address its token back.
struct LoginThrottle {
    let configuration: ThrottleConfiguration
    private var buckets: TokenBuckets

    init(_ configuration: ThrottleConfiguration) {
        self.configuration = configuration
        self.buckets = TokenBuckets(capacity: configuration.maxTrackedKeys)
    }

    /// Bucket keys of a login attempt: the account and, when known, the client address.
    struct Login: Sendable, Equatable {
        let account: String
        let address: String?
    }

    /// The account key of an e-mail as typed: normalized when it is an address, else the raw
    /// text lower-cased and bounded (so junk spellings still share a bucket).
    static func login(email: String, address: String?) -> Login {
        let account = Accounts.normalizeEmail(email)
            ?? String(email.trimmingCharacters(in: .whitespacesAndNewlines).lowercased().prefix(254))
        return Login(account: "account:" + account, address: address.map { "address:" + $0 })
    }

    /// Spends one attempt of `login`; when the account or the address has none left, nothing
    /// is spent and the answer is how long until it has.
    mutating func begin(_ login: Login, now: ContinuousClock.Instant) -> Duration? {
        let waits = [buckets.wait(login.account, configuration.loginFailuresPerAccount, now: now),
                     login.address.flatMap { buckets.wait($0, configuration.loginFailuresPerAddress, now: now) }]
        if let wait = waits.compactMap({ $0 }).max() { return wait }
        buckets.take(login.account, configuration.loginFailuresPerAccount, now: now)
        if let address = login.address { buckets.take(address, configuration.loginFailuresPerAddress, now: now) }
        return nil
    }

    /// The password was right: the account's failures are forgiven, the address gets its
    /// token back (its other failures stay).
    mutating func succeeded(_ login: Login, now: ContinuousClock.Instant) {
        buckets.reset(login.account)
        if let address = login.address { buckets.give(address, configuration.loginFailuresPerAddress, now: now) }
    }

    /// The attempt was not judged (a database error…): both get their token back.
    mutating func undecided(_ login: Login, now: ContinuousClock.Instant) {
        buckets.give(login.account, configuration.loginFailuresPerAccount, now: now)
        if let address = login.address { buckets.give(address, configuration.loginFailuresPerAddress, now: now) }
    }

    /// Spends one sign-up attempt of `address` (none without an address); the wait when it
    /// has none left.
    mutating func beginSignUp(address: String?, now: ContinuousClock.Instant) -> Duration? {
        guard let address else { return nil }
        let key = "signup:" + address
        if let wait = buckets.wait(key, configuration.signUpsPerAddress, now: now) { return wait }
        buckets.take(key, configuration.signUpsPerAddress, now: now)
        return nil
    }

    /// Spends one pairing attempt (`POST /api/v1/frames/pair`) of `user` and of the client
    /// address; the wait when either has none left (nothing is spent then). A right code gives
    /// the attempt back (``pairingSucceeded(user:address:now:)``), so only wrong codes count.
    mutating func beginPairing(user: String, address: String?, now: ContinuousClock.Instant) -> Duration? {
        let account = "pair-account:" + user
        let addressKey = address.map { "pair-address:" + $0 }
        let waits = [buckets.wait(account, configuration.pairFailuresPerAccount, now: now),
                     addressKey.flatMap { buckets.wait($0, configuration.pairFailuresPerAddress, now: now) }]
        if let wait = waits.compactMap({ $0 }).max() { return wait }
        buckets.take(account, configuration.pairFailuresPerAccount, now: now)
        if let addressKey { buckets.take(addressKey, configuration.pairFailuresPerAddress, now: now) }
        return nil
    }

    /// The code was right (or the attempt was not judged): its token goes back. Earlier wrong
    /// codes stay counted: hitting a code at last proves nothing about the guesses before it.
    mutating func pairingSucceeded(user: String, address: String?, now: ContinuousClock.Instant) {
        buckets.give("pair-account:" + user, configuration.pairFailuresPerAccount, now: now)
        if let address { buckets.give("pair-address:" + address, configuration.pairFailuresPerAddress, now: now) }
    }

    /// Spends one pairing request (a browser frame asking for a code) of `address` (none without
    /// an address); the wait when it has none left.
    mutating func beginPairingRequest(address: String?, now: ContinuousClock.Instant) -> Duration? {
        guard let address else { return nil }
        let key = "pairing:" + address
        if let wait = buckets.wait(key, configuration.pairingsPerAddress, now: now) { return wait }
        buckets.take(key, configuration.pairingsPerAddress, now: now)
        return nil
    }

    var trackedKeys: Int { buckets.count }
}
