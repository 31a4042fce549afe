import Foundation

/// A fixed set of threads for blocking C calls (libpq, blocking nats.c calls, libvips),
/// so they never run on Swift's cooperative pool or an event loop.
///
/// `run` suspends the calling task and resumes it with the closure's result once a pool
/// thread has executed it. Jobs run in submission order; at most `threadCount` at a time.
/// `shutdown()` lets queued jobs finish, then stops the threads.
public final class BlockingPool: @unchecked Sendable {
    // @unchecked Sendable: every mutable field (`jobs`, `stopping`, `threads`) is read and
    // written only while holding `condition`'s lock.
    public struct ShutDown: Error, CustomStringConvertible {
        public let pool: String
        public var description: String { "blocking pool '\(pool)' is shut down" }
    }

    public let name: String
    public let threadCount: Int
    private let condition = NSCondition()
    private var jobs: [() -> Void] = []
    private var head = 0
    private var stopping = false
    private var threads: [Thread] = []
    /// What a dequeued job's slot holds until the queue is compacted.
    private static let taken: @Sendable () -> Void = {}

    /// Starts `threadCount` threads named `name-N`.
    public init(name: String, threadCount: Int) {
        precondition(threadCount > 0, "a blocking pool needs at least one thread")
        self.name = name
        self.threadCount = threadCount
        for i in 0..<threadCount {
            let threadName = "\(name)-\(i)"
            // Linux Foundation ignores a name set before `start()` has stored the thread's
            // handle, so the thread names itself once `start()` has returned.
            let started = DispatchSemaphore(value: 0)
            let thread = Thread { [self] in
                started.wait()
                Thread.current.name = threadName
                self.work()
            }
            thread.stackSize = 8 << 20
            threads.append(thread)
            thread.start()
            started.signal()
        }
    }

    /// The number of jobs waiting for a thread (not counting the ones running).
    public var queued: Int { condition.withLock { jobs.count - head } }

    /// Runs `body` on a pool thread and returns its result.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
            let accepted = condition.withLock { () -> Bool in
                if stopping { return false }
                jobs.append { continuation.resume(with: Result { try body() }) }
                condition.signal()
                return true
            }
            if !accepted { continuation.resume(throwing: ShutDown(pool: name)) }
        }
    }

    /// Finishes the queued jobs, then stops the threads. Later `run` calls throw ``ShutDown``.
    public func shutdown() {
        condition.withLock {
            stopping = true
            condition.broadcast()
        }
    }

    private func work() {
        while true {
            condition.lock()
            while head == jobs.count && !stopping { condition.wait() }
            if head == jobs.count {
                condition.unlock()
                return
            }
            let job = jobs[head]
            // The slot lets go of the job at once: a finished job's closure holds whatever
            // it captured (a render's encoded versions, a query's parameters), and a slot
            // kept until the next compaction kept all of that alive — up to hundreds of
            // megabytes across a thousand jobs.
            jobs[head] = BlockingPool.taken
            head += 1
            if head == jobs.count {
                jobs.removeAll(keepingCapacity: true)
                head = 0
            } else if head > 64 && head * 2 > jobs.count {
                jobs.removeFirst(head)
                head = 0
            }
            condition.unlock()
            job()
        }
    }

    deinit {
        condition.withLock {
            stopping = true
            condition.broadcast()
        }
    }
}
