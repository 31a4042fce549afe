internal import CMalloc
import Foundation

/// How many malloc arenas the process may create.
///
/// glibc gives a thread its own arena when it finds the others busy, up to 8 per core, and an
/// arena keeps the memory freed into it. A Framecast process runs many threads that allocate
/// (event loops, the blocking pools of libpq/NATS/libvips calls, libvips' own workers), so under
/// steady load its resident size kept creeping up while its live heap stayed flat: in the soak
/// benchmark (`benchmarks/run soak`, 800 uploads after a 200-upload warm-up) `framecast all`
/// grew 15 % with glibc's default and at most 7.2 % with two arenas
/// (benchmarks/results/NOTES.md). Fewer arenas can mean more lock contention between
/// allocating threads; the soak report's upload latencies show that cost.
public enum MallocArenas {
    /// Limits the process to `count` arenas, unless the environment already chose
    /// (`MALLOC_ARENA_MAX`, or `GLIBC_TUNABLES` naming `glibc.malloc.arena_max`), which then
    /// wins. Call it first thing, before the threads that allocate start. Returns the limit it
    /// set, or nil when it left the environment's choice (or glibc refused).
    @discardableResult
    public static func limit(to count: Int32 = 2) -> Int32? {
        let environment = ProcessInfo.processInfo.environment
        if environment["MALLOC_ARENA_MAX"] != nil { return nil }
        if let tunables = environment["GLIBC_TUNABLES"], tunables.contains("glibc.malloc.arena_max") { return nil }
        // mallopt answers 1 on success, 0 on error.
        return mallopt(M_ARENA_MAX, count) == 1 ? count : nil
    }
}
