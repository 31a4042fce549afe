import Dispatch
import Foundation

#if canImport(Glibc)
import Glibc
#endif

// MARK: Statistics

/// Order statistics of a sample (nearest-rank percentiles: the value at rank ⌈p·n⌉, so every
/// figure reported is one that was measured, never interpolated).
struct Summary: Codable, Sendable {
    var count: Int
    var min: Double
    var p50: Double
    var p95: Double
    var p99: Double
    var max: Double
    var mean: Double

    init?(_ values: [Double]) {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        func rank(_ p: Double) -> Double {
            let index = Int((p * Double(sorted.count)).rounded(.up)) - 1
            return sorted[Swift.max(0, Swift.min(sorted.count - 1, index))]
        }
        count = sorted.count
        min = sorted.first!
        p50 = rank(0.50)
        p95 = rank(0.95)
        p99 = rank(0.99)
        max = sorted.last!
        mean = sorted.reduce(0, +) / Double(sorted.count)
    }
}

extension Duration {
    var ms: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }
}

/// Fixed-precision text of a measured figure (no rounding up: `String(format:)` rounds half to
/// even on the printed digit only).
func fmt(_ value: Double?, _ digits: Int = 1) -> String {
    guard let value, value.isFinite else { return "–" }
    return String(format: "%.\(digits)f", value)
}

// MARK: Progress on stderr

/// One updating line on stderr (a terminal) or a line every few seconds (a log).
final class ProgressLine: @unchecked Sendable {
    // @unchecked Sendable: every var is read and written with `lock` held.
    private let lock = NSLock()
    private let title: String
    private let total: Int
    private var done = 0
    private var lastPrint = ContinuousClock.now - .seconds(10)
    private let start = ContinuousClock.now
    private let tty = isatty(2) != 0

    init(_ title: String, total: Int) {
        self.title = title
        self.total = total
        print(force: true)
    }

    func advance(_ note: String = "") {
        lock.withLock {
            done += 1
            print(note, force: done == total)
        }
    }

    private func print(_ note: String = "", force: Bool = false) {
        let now = ContinuousClock.now
        guard force || now - lastPrint >= (tty ? .milliseconds(200) : .seconds(5)) else { return }
        lastPrint = now
        let elapsed = (now - start).ms / 1000
        let line = "\(title): \(done)/\(total) \(fmt(elapsed, 0)) s \(note)"
        if tty {
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + line + (done == total ? "\n" : "")).utf8))
        } else {
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
    }
}

func note(_ text: String) {
    FileHandle.standardError.write(Data(("[bench] " + text + "\n").utf8))
}

// MARK: Child processes with their resource usage

struct ChildResult: Sendable {
    var status: Int32
    var wall: Duration
    /// Peak resident set of the child, in bytes (wait4's ru_maxrss).
    var peakRSS: Int
    var userCPU: Double
    var systemCPU: Double
}

struct ChildError: Error, CustomStringConvertible {
    var description: String
}

/// Runs `argv` (absolute path or found on PATH) with `environment` overrides, stdout to
/// `stdoutPath` (or /dev/null) and stderr to `stderrPath` (or /dev/null); waits with wait4 on
/// a dispatch thread, so the child's own peak RSS comes back.
func runChild(_ argv: [String], environment: [String: String] = [:], stdoutPath: String? = nil,
              stderrPath: String? = nil) async throws -> ChildResult {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ChildResult, Error>) in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try spawnAndWait(argv, environment: environment, stdoutPath: stdoutPath, stderrPath: stderrPath) })
        }
    }
}

private func spawnAndWait(_ argv: [String], environment: [String: String], stdoutPath: String?,
                          stderrPath: String?) throws -> ChildResult {
    var env = ProcessInfo.processInfo.environment
    for (key, value) in environment { env[key] = value }
    let cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    let cEnv: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
        for p in cArgs { free(p) }
        for p in cEnv { free(p) }
    }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, stdoutPath ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, stderrPath ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    var pid: pid_t = 0
    let start = ContinuousClock.now
    let rc = posix_spawnp(&pid, argv[0], &actions, nil, cArgs, cEnv)
    guard rc == 0 else { throw ChildError(description: "cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
    var status: Int32 = 0
    var usage = rusage()
    while wait4(pid, &status, 0, &usage) < 0 {
        if errno != EINTR { throw ChildError(description: "wait4 failed: \(String(cString: strerror(errno)))") }
    }
    let wall = ContinuousClock.now - start
    let exited = status & 0x7f == 0
    let code: Int32 = exited ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return ChildResult(status: code, wall: wall, peakRSS: Int(usage.ru_maxrss) * 1024,
                       userCPU: seconds(usage.ru_utime), systemCPU: seconds(usage.ru_stime))
}

/// Runs `body` for every element with at most `width` running at once; results in input order.
func concurrentMap<T: Sendable, R: Sendable>(_ items: [T], width: Int,
                                             _ body: @escaping @Sendable (T) async throws -> R) async throws -> [R] {
    try await withThrowingTaskGroup(of: (Int, R).self) { group in
        var results = [R?](repeating: nil, count: items.count)
        var next = 0
        while next < items.count && next < width {
            let (i, item) = (next, items[next])
            group.addTask { (i, try await body(item)) }
            next += 1
        }
        while let (i, result) = try await group.next() {
            results[i] = result
            if next < items.count {
                let (j, item) = (next, items[next])
                group.addTask { (j, try await body(item)) }
                next += 1
            }
        }
        return results.map { $0! }
    }
}

// MARK: The machine, for report headers

struct MachineInfo: Codable, Sendable {
    var date: String
    var host: String
    var cores: Int
    var loadAverageAtStart: String
    var loadAverageAtEnd: String?
    var uptime: String
    var libvips: String
    var imagemagick: String
    var pillow: String
    var swiftBuild: String

    static func capture() -> MachineInfo {
        let formatter = ISO8601DateFormatter()
        #if DEBUG
        let build = "debug"
        #else
        let build = "release"
        #endif
        return MachineInfo(
            date: formatter.string(from: Date()), host: ProcessInfo.processInfo.hostName,
            cores: ProcessInfo.processInfo.activeProcessorCount, loadAverageAtStart: loadAverage(),
            uptime: shell("uptime"), libvips: shell("vips --version"),
            imagemagick: shell("/usr/bin/convert -version | head -1"),
            pillow: shell("\(pythonPath) -c 'import PIL; print(PIL.__version__)'"), swiftBuild: build)
    }

    var markdown: String {
        """
        | | |
        |---|---|
        | date (UTC) | \(date) |
        | machine | \(cores) cores, shared with other engineers' builds |
        | load average at start (1/5/15 min) | \(loadAverageAtStart) |
        | load average at end | \(loadAverageAtEnd ?? "–") |
        | `uptime` at start | \(uptime) |
        | libvips | \(libvips) |
        | ImageMagick | \(imagemagick) |
        | Pillow | \(pillow) |
        | framecast-bench build | \(swiftBuild) |
        """
    }
}

func loadAverage() -> String {
    (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
}

let pythonPath = ProcessInfo.processInfo.environment["FRAMECAST_BENCH_PYTHON"] ?? "python3"

/// The first line of a shell command's output (for version strings), "?" when it fails.
func shell(_ command: String) -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", command]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    do { try process.run() } catch { return "?" }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? "?"
    return text.trimmingCharacters(in: .whitespaces)
}

func writeJSON<T: Encodable>(_ value: T, to path: String) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    try encoder.encode(value).write(to: URL(fileURLWithPath: path))
}

// MARK: SVG bar charts

/// A horizontal grouped bar chart: one group per category, one bar per series.
struct BarChart {
    var title: String
    var unit: String
    var categories: [String]
    var series: [(name: String, values: [Double?])]
    /// A vertical reference line (a target), drawn dashed.
    var reference: (label: String, value: Double)?

    private static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]

    func svg() -> String {
        let barHeight = 12.0, gap = 3.0, groupGap = 14.0, left = 150.0, width = 900.0, plotWidth = 600.0
        let top = 40.0
        let groupHeight = Double(series.count) * (barHeight + gap) + groupGap
        let legendHeight = Double(series.count) * 16 + 10
        let height = top + Double(categories.count) * groupHeight + legendHeight + 30
        let maxValue = Swift.max(series.flatMap { $0.values.compactMap { $0 } }.max() ?? 1, reference?.value ?? 0) * 1.08
        func x(_ v: Double) -> Double { left + v / maxValue * plotWidth }
        var out = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="11">
        <rect width="100%" height="100%" fill="white"/>
        <text x="10" y="20" font-size="14" font-weight="bold">\(escape(title))</text>

        """
        for (c, category) in categories.enumerated() {
            let y0 = top + Double(c) * groupHeight
            out += "<text x=\"\(left - 6)\" y=\"\(fmt(y0 + Double(series.count) * (barHeight + gap) / 2 + 4))\" text-anchor=\"end\">\(escape(category))</text>\n"
            for (s, serie) in series.enumerated() {
                let y = y0 + Double(s) * (barHeight + gap)
                let colour = Self.palette[s % Self.palette.count]
                if let value = serie.values[c] {
                    out += "<rect x=\"\(left)\" y=\"\(fmt(y))\" width=\"\(fmt(Swift.max(0.5, x(value) - left)))\" height=\"\(barHeight)\" fill=\"\(colour)\"/>\n"
                    out += "<text x=\"\(fmt(x(value) + 4))\" y=\"\(fmt(y + barHeight - 2))\">\(fmt(value))</text>\n"
                } else {
                    out += "<text x=\"\(left + 4)\" y=\"\(fmt(y + barHeight - 2))\" fill=\"#888\">n/a</text>\n"
                }
            }
        }
        let axisY = top + Double(categories.count) * groupHeight
        out += "<line x1=\"\(left)\" y1=\"\(top - 5)\" x2=\"\(left)\" y2=\"\(fmt(axisY))\" stroke=\"black\"/>\n"
        out += "<text x=\"\(left + plotWidth)\" y=\"\(fmt(axisY + 14))\" text-anchor=\"end\">\(escape(unit))</text>\n"
        if let reference {
            out += "<line x1=\"\(fmt(x(reference.value)))\" y1=\"\(top - 5)\" x2=\"\(fmt(x(reference.value)))\" y2=\"\(fmt(axisY))\" stroke=\"#d62728\" stroke-dasharray=\"4,3\"/>\n"
            out += "<text x=\"\(fmt(x(reference.value) + 3))\" y=\"\(top - 8)\" fill=\"#d62728\">\(escape(reference.label))</text>\n"
        }
        for (s, serie) in series.enumerated() {
            let y = axisY + 24 + Double(s) * 16
            out += "<rect x=\"\(left)\" y=\"\(fmt(y - 9))\" width=\"10\" height=\"10\" fill=\"\(Self.palette[s % Self.palette.count])\"/>"
            out += "<text x=\"\(left + 16)\" y=\"\(fmt(y))\">\(escape(serie.name))</text>\n"
        }
        out += "</svg>\n"
        return out
    }

    private func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
