import Foundation
import Testing
import Threads

@Suite struct BlockingPoolTests {
    @Test func runsOnPoolThreadsAndReturnsResults() async throws {
        let pool = BlockingPool(name: "test", threadCount: 2)
        defer { pool.shutdown() }
        let results = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for i in 0..<50 {
                group.addTask { try await pool.run { (i * 2, Thread.current.name ?? "") } }
            }
            return try await group.reduce(into: [(Int, String)]()) { $0.append($1) }
        }
        #expect(results.map(\.0).sorted() == (0..<50).map { $0 * 2 })
        #expect(results.allSatisfy { $0.1.hasPrefix("test-") })
    }

    @Test func errorsPropagate() async {
        struct Boom: Error {}
        let pool = BlockingPool(name: "err", threadCount: 1)
        defer { pool.shutdown() }
        await #expect(throws: Boom.self) { try await pool.run { throw Boom() } }
    }

    /// A finished job keeps nothing alive: what its closure captured (a render's encoded
    /// bytes, a query's parameters) is released when it returns, not after a thousand more
    /// jobs (that was a steady memory climb of ≈ 0.3 MB per upload under load).
    @Test func aFinishedJobReleasesWhatItCaptured() async throws {
        final class Payload: Sendable { let bytes = [UInt8](repeating: 7, count: 1 << 16) }
        let pool = BlockingPool(name: "release", threadCount: 2)
        defer { pool.shutdown() }
        var watchers: [Weak] = []
        for _ in 0..<20 {
            let payload = Payload()
            watchers.append(Weak(payload))
            _ = try await pool.run { payload.bytes.count }
        }
        // The last job's slot may still be read by its thread for an instant.
        let deadline = ContinuousClock.now + .seconds(5)
        while watchers.contains(where: { $0.object != nil }) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(watchers.filter { $0.object != nil }.count == 0)
    }

    final class Weak: @unchecked Sendable {
        // @unchecked Sendable: `object` is a weak reference written once, in init, and only read after.
        weak var object: AnyObject?
        init(_ object: AnyObject) { self.object = object }
    }

    @Test func refusesWorkAfterShutdown() async {
        let pool = BlockingPool(name: "down", threadCount: 1)
        pool.shutdown()
        await #expect(throws: BlockingPool.ShutDown.self) { try await pool.run { 1 } }
    }
}

@Suite struct BlockingPoolNamingTests {
    /// Linux Foundation drops a Thread.name set before start() has stored the thread handle;
    /// every pool thread must still carry its pool's name (logs and tests rely on it).
    @Test func everyThreadOfManyPoolsCarriesItsName() async throws {
        for round in 0..<40 {
            let pool = BlockingPool(name: "named\(round)", threadCount: 4)
            defer { pool.shutdown() }
            let names = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<8 {
                    group.addTask { try await pool.run { usleep(1000); return Thread.current.name ?? "" } }
                }
                return try await group.reduce(into: [String]()) { $0.append($1) }
            }
            #expect(names.allSatisfy { $0.hasPrefix("named\(round)-") }, "\(names)")
        }
    }
}
