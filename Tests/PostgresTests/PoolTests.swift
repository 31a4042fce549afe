import FramecastTesting
import Foundation
import Logging
import Postgres
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Counts closures running at once, and remembers the most seen.
final class Concurrency: @unchecked Sendable {
    // @unchecked Sendable: all fields are only touched under `lock`.
    private let lock = NSLock()
    private var now = 0
    private(set) var most = 0
    private var names: Set<String> = []
    private var poolThreads: Set<UInt> = []
    private var callerThreads: Set<UInt> = []

    func enter(thread: String) {
        lock.withLock {
            now += 1
            most = max(most, now)
            names.insert(thread)
            poolThreads.insert(UInt(bitPattern: Int(bitPattern: pthread_self())))
        }
    }
    func leave() { lock.withLock { now -= 1 } }
    /// Called from the async caller, i.e. on a cooperative-pool thread.
    func caller() { lock.withLock { _ = callerThreads.insert(UInt(bitPattern: Int(bitPattern: pthread_self()))) } }
    var threadNames: Set<String> { lock.withLock { names } }
    var threads: (pool: Set<UInt>, callers: Set<UInt>) { lock.withLock { (poolThreads, callerThreads) } }
    var maximum: Int { lock.withLock { most } }
}

struct SocketFailed: Error {
    let call: String
    let errno: Int32
}

/// A loopback TCP port nothing listens on (bound, then released).
func unusedPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SocketFailed(call: "socket", errno: errno) }
    defer { close(fd) }
    return try bindLoopback(fd)
}

/// A loopback listener that completes TCP handshakes (the kernel does) but never answers:
/// a server that hangs during connection start-up.
final class SilentListener {
    let fd: Int32
    let port: Int

    init() throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SocketFailed(call: "socket", errno: errno) }
        do {
            port = try bindLoopback(fd)
        } catch {
            close(fd)
            throw error
        }
        guard listen(fd, 16) == 0 else {
            close(fd)
            throw SocketFailed(call: "listen", errno: errno)
        }
    }

    deinit { close(fd) }
}

/// Binds `fd` to 127.0.0.1 on a port the kernel picks, and returns that port.
func bindLoopback(_ fd: Int32) throws -> Int {    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw SocketFailed(call: "bind", errno: errno) }
    return Int(UInt16(bigEndian: address.sin_port))
}

@Suite struct PoolTests {
    @Test func moreCallersThanConnectionsAllCompleteOnPoolThreads() async throws {
        let concurrency = Concurrency()
        try await withPool(maxConnections: 4) { pool in
            let pids = try await withThrowingTaskGroup(of: Int32.self) { group in
                for i in 0..<50 {
                    group.addTask {
                        concurrency.caller()
                        return try await pool.withConnection { c in
                            concurrency.enter(thread: Thread.current.name ?? "")
                            defer { concurrency.leave() }
                            let row = try c.query("SELECT $1::int AS i, pg_backend_pid() AS pid, pg_sleep(0.01) AS s", [.int(Int64(i))])[0]
                            #expect(try row.decode("i", as: Int.self) == i)
                            return try row.decode("pid", as: Int32.self)
                        }
                    }
                }
                var all: [Int32] = []
                for try await pid in group { all.append(pid) }
                return all
            }
            #expect(pids.count == 50)
            #expect(Set(pids).count <= 4)
        }
        #expect(concurrency.maximum <= 4)
        // The closures ran on at most 4 threads, none of them a thread the async callers ran on.
        let threads = concurrency.threads
        #expect(threads.pool.count <= 4)
        #expect(!threads.callers.isEmpty)
        #expect(threads.pool.isDisjoint(with: threads.callers))
        // ...and those threads are the pool's, named postgres-N.
        #expect(concurrency.threadNames.allSatisfy { $0.hasPrefix("postgres-") }, "\(concurrency.threadNames)")
    }

    @Test func unreachableServerFailsWithConnectionFailedQuickly() async throws {
        let port = try unusedPort()
        var configuration = PostgresConfiguration(connInfo: "host=127.0.0.1 port=\(port) user=postgres dbname=framecast")
        configuration.connectTimeout = .seconds(2)
        let pool = PostgresPool(configuration: configuration, logger: Logger(label: "postgres-tests"))
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<2 {  // a failed connect is retried by the next caller, and fails again
            let error = await expectPostgresError { _ = try await pool.query("SELECT 1") }
            #expect(error?.code == .connectionFailed)
            #expect(error?.description.contains("\(port)") == true)
        }
        // Refused at once; the bound is generous for a loaded machine, it only rules out a hang.
        #expect(clock.now - start < .seconds(60))
        await pool.close()
    }

    @Test func aServerThatNeverAnswersFailsAfterTheConnectTimeout() async throws {
        let listener = try SilentListener()
        var configuration = PostgresConfiguration(connInfo: "host=127.0.0.1 port=\(listener.port) user=postgres dbname=framecast")
        configuration.connectTimeout = .seconds(2)
        let pool = PostgresPool(configuration: configuration, logger: Logger(label: "postgres-tests"))
        let clock = ContinuousClock()
        let start = clock.now
        let error = await expectPostgresError { _ = try await pool.query("SELECT 1") }
        let elapsed = clock.now - start
        #expect(error?.code == .connectionFailed)
        #expect(elapsed >= .milliseconds(1500), "gave up before the 2 s connect timeout: \(elapsed)")
        #expect(elapsed < .seconds(60), "did not honour the connect timeout: \(elapsed)")
        await pool.close()
        withExtendedLifetime(listener) {}
    }

    @Test func aBrokenConnectionIsReplacedOnTheNextUse() async throws {
        try await withPool(maxConnections: 1) { pool in
            let before = try await pool.query("SELECT pg_backend_pid() AS pid")[0].decode("pid", as: Int32.self)
            // Another session terminates ours (waiting up to 5 s for it to exit).
            let killer = PostgresPool(configuration: pool.configuration, logger: Logger(label: "postgres-tests"))
            let killed = try await killer.query("SELECT pg_terminate_backend($1::int, 5000) AS ok", [.int(Int64(before))])
            await killer.close()
            #expect(try killed[0].decode("ok", as: Bool.self))

            let error = await expectPostgresError { _ = try await pool.query("SELECT 1") }
            #expect(error?.code == .connectionClosed)
            let after = try await pool.query("SELECT pg_backend_pid() AS pid")[0].decode("pid", as: Int32.self)
            #expect(after != before)
        }
    }

    @Test func closeWaitsForInFlightWorkAndLaterCallsThrowPoolClosed() async throws {
        let connInfo = try await TestServers.makeDatabase(prefix: "pg")
        let pool = PostgresPool(configuration: PostgresConfiguration(connInfo: connInfo, maxConnections: 2), logger: Logger(label: "postgres-tests"))
        let started = AsyncStream<Void>.makeStream()
        let inFlight = Task {
            try await pool.withConnection { c in
                started.continuation.yield()
                return try c.query("SELECT pg_sleep(0.3), 42 AS answer")[0].decode("answer", as: Int.self)
            }
        }
        var iterator = started.stream.makeAsyncIterator()
        await iterator.next()
        await pool.close()
        // The closure that was running when close() began finished normally.
        #expect(try await inFlight.value == 42)

        let query = await expectPostgresError { _ = try await pool.query("SELECT 1") }
        #expect(query?.code == .poolClosed)
        let transaction = await expectPostgresError { _ = try await pool.withTransaction { _ in 1 } }
        #expect(transaction?.code == .poolClosed)
        await pool.close()  // idempotent
    }
}
