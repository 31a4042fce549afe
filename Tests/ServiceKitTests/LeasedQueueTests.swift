import Foundation
import FramecastTesting
import Postgres
import ServiceKit
import Testing

/// ServiceKit's leased work queue against a real PostgreSQL (a fresh database per test): the
/// guarantees the outbox relay, album's pushes and media's render jobs rely on.
@Suite struct LeasedQueueTests {
    /// A fresh database with `work.jobs`: rows 1…`rows`, in groups `g0`…`g{groups-1}` (row id
    /// modulo `groups`). Done rows get `done_at`.
    static func makeJobs(rows: Int, groups: Int = 1, connections: Int = 4) async throws -> PostgresPool {
        let configuration = PostgresConfiguration(connInfo: try await TestServers.makeDatabase(), maxConnections: connections)
        let pool = PostgresPool(configuration: configuration, logger: testLogger)
        try await pool.withConnection { c in
            try c.executeScript("""
                CREATE SCHEMA work;
                CREATE TABLE work.jobs (
                    id            bigint PRIMARY KEY,
                    grp           text NOT NULL,
                    claimed_until timestamptz,
                    attempts      integer NOT NULL DEFAULT 0,
                    not_before    timestamptz,
                    last_error    text,
                    done_at       timestamptz
                );
                """)
            _ = try c.execute("INSERT INTO work.jobs (id, grp) SELECT g, 'g' || (g % $2) FROM generate_series(1, $1) g",
                              [.int(Int64(rows)), .int(Int64(groups))])
        }
        return pool
    }

    static func queue(_ pool: PostgresPool, lease: Duration = .seconds(30), backOff: LeasedQueue.BackOff = .init(),
                      grouped: Bool = false) -> LeasedQueue {
        var configuration = LeasedQueue.Configuration(schema: "work", table: "jobs", key: ["id"], order: "id")
        configuration.pending = "done_at IS NULL"
        configuration.completion = .update("done_at = clock_timestamp()")
        configuration.lease = lease
        configuration.backOff = backOff
        if grouped { configuration.group = ["grp"] }
        return LeasedQueue(configuration, postgres: pool)
    }

    static func ids(_ claims: [LeasedQueue.Claimed]) throws -> [Int64] {
        try claims.map { try $0.row.decode("id", as: Int64.self) }
    }

    /// The row's lease, error, back-off and completion as the database holds them.
    struct Stored {
        var claimedUntil: Date?
        var attempts: Int
        var notBefore: Date?
        var lastError: String?
        var done: Bool
    }

    static func stored(_ pool: PostgresPool, _ id: Int64) async throws -> Stored? {
        try await pool.query("SELECT claimed_until, attempts, not_before, last_error, done_at IS NOT NULL AS done FROM work.jobs WHERE id = $1",
                             [.int(id)]).first.map { row in
            Stored(claimedUntil: try row.decode("claimed_until"), attempts: try row.decode("attempts"),
                   notBefore: try row.decode("not_before"), lastError: try row.decode("last_error"), done: try row.decode("done"))
        }
    }

    /// The database's clock.
    static func now(_ pool: PostgresPool) async throws -> Date {
        guard let row = try await pool.query("SELECT clock_timestamp() AS now").first else { throw PostgresError(code: .decoding, message: "no row") }
        return try row.decode("now")
    }

    /// Claims until the claim comes back empty.
    static func drain(_ queue: LeasedQueue, limit: Int) async throws -> [[Int64]] {
        var batches: [[Int64]] = []
        while true {
            let batch = try ids(try await queue.claim(limit: limit, returning: "id"))
            if batch.isEmpty { return batches }
            batches.append(batch)
        }
    }

    // MARK: Claiming

    @Test func concurrentClaimersNeverGetTheSameRow() async throws {
        let pool = try await Self.makeJobs(rows: 300)
        let queue = Self.queue(pool)
        let batches = try await withThrowingTaskGroup(of: [[Int64]].self) { group in
            for _ in 0..<4 { group.addTask { try await Self.drain(queue, limit: 7) } }
            var all: [[Int64]] = []
            for try await batches in group { all += batches }
            return all
        }
        let claimed = batches.flatMap { $0 }
        #expect(claimed.count == 300, "every row claimed once")
        #expect(Set(claimed).count == claimed.count, "no row claimed twice")
        #expect(Set(claimed) == Set(1...300))
        #expect(batches.allSatisfy { $0 == $0.sorted() && $0.count <= 7 }, "each batch in order, at most the limit")
        #expect(try await pool.query("SELECT 1 FROM work.jobs WHERE attempts <> 1 OR claimed_until IS NULL").isEmpty)
        #expect(try await queue.claim(limit: 10).isEmpty, "all leased")
        await pool.close()
    }

    /// Grouped claims (media's render jobs: every job of one photo together) under concurrency:
    /// no row twice, a batch never mixes groups when one seed is asked for.
    @Test func concurrentGroupedClaimsTakeWholeGroupsOnce() async throws {
        let pool = try await Self.makeJobs(rows: 300, groups: 30)
        let queue = Self.queue(pool, grouped: true)
        let first = try await queue.claim(limit: 1, returning: "id, grp")
        #expect(try Self.ids(first) == Array(stride(from: 1, through: 291, by: 30)), "the seed's whole group, in order")
        #expect(try Set(first.map { try $0.row.decode("grp", as: String.self) }) == ["g1"])

        let batches = try await withThrowingTaskGroup(of: [[Int64]].self) { group in
            for _ in 0..<4 { group.addTask { try await Self.drain(queue, limit: 1) } }
            var all: [[Int64]] = []
            for try await batches in group { all += batches }
            return all
        }
        let claimed = batches.flatMap { $0 }
        #expect(claimed.count == 290 && Set(claimed).count == 290, "the other 290 rows, each once")
        #expect(batches.allSatisfy { batch in Set(batch.map { $0 % 30 }).count == 1 }, "one group per batch")
        await pool.close()
    }

    @Test func anExpiredLeaseIsClaimableAgain() async throws {
        let pool = try await Self.makeJobs(rows: 1)
        let queue = Self.queue(pool, lease: .seconds(3))  // long enough for the checks in between under load
        let first = try #require(try await queue.claim(limit: 5).first)
        #expect(first.attempts == 1)
        #expect(try await queue.claim(limit: 5).isEmpty, "leased")

        var again: LeasedQueue.Claimed?
        #expect(try await eventually(timeout: .seconds(20)) {
            again = try await queue.claim(limit: 5).first
            return again != nil
        })
        let second = try #require(again)
        #expect(second.key == first.key)
        #expect(second.attempts == 2)
        #expect(second.token != first.token)
        #expect(second.token.leasedUntil > first.token.leasedUntil)
        await pool.close()
    }

    // MARK: Fencing

    /// A worker whose lease ran out and whose row another worker claimed can neither renew,
    /// complete, fail nor release it; a renewal makes the renewed claim's old token stale too.
    @Test func aStaleTokenChangesNothing() async throws {
        let pool = try await Self.makeJobs(rows: 1)
        let queue = Self.queue(pool, lease: .seconds(3))  // long enough for the checks in between under load
        let a = try #require(try await queue.claim(limit: 1).first)
        var taken: LeasedQueue.Claimed?
        #expect(try await eventually(timeout: .seconds(20)) {
            taken = try await queue.claim(limit: 1).first
            return taken != nil
        })
        let b = try #require(taken)

        #expect(try await queue.renew(a) == nil)
        #expect(try await queue.done(a) == false)
        #expect(try await queue.failed(a, error: "stale") == nil)
        #expect(try await queue.release([a]) == [false])
        var row = try #require(try await Self.stored(pool, 1))
        #expect(row.claimedUntil == b.token.leasedUntil, "still b's claim")
        #expect(!row.done && row.lastError == nil && row.notBefore == nil)

        // b renews: its old token is stale from then on.
        let renewed = try #require(try await pool.withConnection { c in try queue.renew(b, on: c) })
        #expect(renewed.token.leasedUntil > b.token.leasedUntil)
        #expect(try await queue.done(b) == false)
        #expect(try await Self.stored(pool, 1)?.done == false)
        #expect(try await queue.done(renewed))
        row = try #require(try await Self.stored(pool, 1))
        #expect(row.done && row.claimedUntil == nil)
        #expect(row.attempts == 2, "a renewal is not an attempt")
        #expect(try await queue.claim(limit: 1).isEmpty, "done rows are not work")
        await pool.close()
    }

    /// Completing inside the caller's transaction: rolled back with it.
    @Test func doneInARolledBackTransactionLeavesTheClaim() async throws {
        let pool = try await Self.makeJobs(rows: 1)
        let queue = Self.queue(pool)
        let claim = try #require(try await queue.claim(limit: 1).first)
        struct Rollback: Error {}
        await #expect(throws: Rollback.self) {
            try await pool.withTransaction { c in
                guard try queue.done(claim, on: c) else { return }
                throw Rollback()
            }
        }
        #expect(try await Self.stored(pool, 1)?.claimedUntil == claim.token.leasedUntil)
        #expect(try await queue.done(claim))
        await pool.close()
    }

    // MARK: Failure and back-off

    @Test func failedBacksOffExponentiallyUpToTheCapAndKeepsTheError() async throws {
        let pool = try await Self.makeJobs(rows: 1)
        // Seconds, not milliseconds: the checks between a failure and its re-claim take a few
        // hundred ms when the whole suite loads the 2 cores.
        let backOff = LeasedQueue.BackOff(base: .seconds(2), cap: .seconds(5))
        let queue = Self.queue(pool, backOff: backOff)

        // First failure (attempt 1): 2 s · 2¹ = 4 s from the moment it was recorded.
        let first = try #require(try await queue.claim(limit: 1).first)
        var before = try await Self.now(pool)
        let retry = try #require(try await queue.failed(first, error: "boom\u{0} one"))
        var after = try await Self.now(pool)
        #expect(retry.timeIntervalSince(before) >= 4 - 1e-6 && retry.timeIntervalSince(after) <= 4 + 1e-6)
        var row = try #require(try await Self.stored(pool, 1))
        #expect(row.claimedUntil == nil, "the lease is cleared")
        #expect(row.notBefore == retry)
        #expect(row.lastError == "boom one", "stored without the NUL")
        #expect(try await queue.claim(limit: 1).isEmpty, "not claimable before not_before")
        #expect(try await queue.failed(first, error: "twice") == nil, "a failed claim is no longer ours")

        var again: LeasedQueue.Claimed?
        #expect(try await eventually(timeout: .seconds(10)) {
            again = try await queue.claim(limit: 1).first
            return again != nil
        })
        let second = try #require(again)
        #expect(second.attempts == 2)
        #expect(try await Self.now(pool) >= retry, "claimed again only once not_before had passed")

        // Second failure: 2 s · 2² = 8 s, capped at 5 s.
        before = try await Self.now(pool)
        let capped = try #require(try await queue.failed(second, error: "boom two"))
        after = try await Self.now(pool)
        #expect(capped.timeIntervalSince(before) >= 5 - 1e-6 && capped.timeIntervalSince(after) <= 5 + 1e-6)
        row = try #require(try await Self.stored(pool, 1))
        #expect(row.lastError == "boom two")
        #expect(row.attempts == 2)
        #expect(try await queue.claim(limit: 1).isEmpty)
        await pool.close()
    }

    @Test func backOffDoublesPerAttemptUpToTheCap() {
        let backOff = LeasedQueue.BackOff(base: .seconds(1), cap: .seconds(300))
        #expect(backOff.delay(afterAttempts: 0) == .seconds(1))
        #expect(backOff.delay(afterAttempts: 1) == .seconds(2))
        #expect(backOff.delay(afterAttempts: 3) == .seconds(8))
        #expect(backOff.delay(afterAttempts: 8) == .seconds(256))
        #expect(backOff.delay(afterAttempts: 9) == .seconds(300), "512 s capped")
        #expect(backOff.delay(afterAttempts: Int.max) == .seconds(300), "no overflow")
        #expect(backOff.delay(afterAttempts: -1) == .seconds(1))
    }

    /// Releasing gives rows back at once, without error or back-off.
    @Test func releasedRowsAreClaimableAtOnce() async throws {
        let pool = try await Self.makeJobs(rows: 3)
        let queue = Self.queue(pool)
        let claims = try await queue.claim(limit: 3)
        #expect(try await queue.release(Array(claims.dropFirst())) == [true, true])
        #expect(try Self.ids(try await queue.claim(limit: 3)) == [2, 3])
        #expect(try await Self.stored(pool, 2)?.attempts == 2)
        await pool.close()
    }

    // MARK: Claiming by key

    /// What an on-demand request does (media): claim named rows now, a row backing off
    /// included when asked, never one another worker holds.
    @Test func claimingByKeyRespectsLeasesAndOptionallyBackOff() async throws {
        let pool = try await Self.makeJobs(rows: 3)
        let queue = Self.queue(pool, backOff: LeasedQueue.BackOff(base: .seconds(60), cap: .seconds(60)))
        let held = try #require(try await queue.claim(limit: 1).first)  // row 1: leased
        let failing = try #require(try await queue.claim(keys: [[.int(2)]]).first)
        #expect(try await queue.failed(failing, error: "busy") != nil)  // row 2: backing off

        let keys: [[PostgresValue]] = [[.int(1)], [.int(2)], [.int(3)]]
        #expect(try Self.ids(try await queue.claim(keys: keys, returning: "id")) == [3])
        #expect(try Self.ids(try await queue.claim(keys: keys, evenIfBackingOff: true, returning: "id")) == [2])
        #expect(try await Self.stored(pool, 1)?.claimedUntil == held.token.leasedUntil)
        await pool.close()
    }

    @Test func anInvalidConfigurationThrowsInsteadOfCrashing() async throws {
        let pool = try await Self.makeJobs(rows: 1)
        let queue = LeasedQueue(LeasedQueue.Configuration(schema: "work", table: "jobs; DROP TABLE work.jobs", key: ["id"], order: "id"),
                                postgres: pool)
        let error = await #expect(throws: PostgresError.self) { try await queue.claim(limit: 1) }
        #expect(error?.code == .invalidArgument)
        #expect(try await Self.stored(pool, 1) != nil)
        await pool.close()
    }
}
