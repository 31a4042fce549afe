import ArgumentParser
import Foundation
import Imaging
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

// How the soak benchmark is put together
//
// * benchmarks/run starts nats-server, mosquitto, PostgreSQL and a release `framecast all` (as
//   for fanout) and passes its PID and executable: `--framecast-pid`, `--framecast`. Settings for
//   that process only (MALLOC_ARENA_MAX, VIPS_*…) go in FRAMECAST_BENCH_APP_ENV; the caller's
//   own environment is inherited by it too. The report lists the allocator and libvips
//   variables the process really started with (read from /proc/<pid>/environ, nothing else).
// * The photos: `--uploads` distinct 1200×800 JPEGs made before the measurement with libvips
//   (the Imaging module): real photographs (mate-backgrounds) cropped at a different offset
//   each time, with the upload's number drawn into a corner as 24 black/white blocks, so every
//   upload is a new photo with new bytes, never a duplicate.
// * Through the REST API, as an app would: a user, an album, `--frames` frames registered and
//   subscribed to it; each frame is a real `framecast frame` process (the product's agent) with
//   the registration answer as its configuration file, its own cache folder and
//   `--display none` (decode, no drawing: the cheapest) or `png`.
// * Uploads go one at a time at fixed instants (start + i / rate), not "sleep after each", so
//   the rate holds whatever an upload takes. Every `--sample-every` uploads, just before the next
//   upload (the previous one has had its interval to be processed), VmRSS (and RssAnon,
//   RssFile, threads) of `framecast all` and the sum of the agents' VmRSS are read from
//   /proc/<pid>/status. MB here is MiB (2^20 bytes), as in the resize report.
// * After the last upload: up to `--settle` s for every frame to hold every photo (its cache
//   folder's photos/ and index.json) and to have shown it (`displayed_photos` of the album in
//   `GET /api/v1/frames/{id}`, which counts the agents' `displayed` reports), then one more RSS
//   sample, and the agents are stopped (SIGTERM, by PID).
// * The reference is the first sample at or after `--warmup` uploads; min, max and the
//   least-squares slope are over the samples from there on.

// MARK: /proc

/// Memory figures of one process from /proc/<pid>/status (MiB = kB / 1024).
struct SoakProcessMemory: Codable, Sendable {
    var rssMB: Double
    var rssAnonMB: Double?
    var rssFileMB: Double?
    var rssShmemMB: Double?
    /// Peak RSS so far (VmHWM).
    var hwmMB: Double?
    var threads: Int?

    /// Nil when the process is gone (or a zombie: no VmRSS).
    static func read(pid: pid_t) -> SoakProcessMemory? {
        guard let text = soakReadProcFile("/proc/\(pid)/status") else { return nil }
        var fields: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = String(line[line.startIndex..<colon])
            let words = line[line.index(after: colon)...].split(whereSeparator: { $0 == " " || $0 == "\t" })
            if let first = words.first, let value = Int(first) { fields[key] = value }
        }
        guard let rss = fields["VmRSS"] else { return nil }
        func mb(_ key: String) -> Double? { fields[key].map { Double($0) / 1024 } }
        return SoakProcessMemory(rssMB: Double(rss) / 1024, rssAnonMB: mb("RssAnon"), rssFileMB: mb("RssFile"),
                                 rssShmemMB: mb("RssShmem"), hwmMB: mb("VmHWM"), threads: fields["Threads"])
    }
}

/// A /proc file's text (they report size 0, so read to the end rather than by size).
func soakReadProcFile(_ path: String) -> String? {
    guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
    defer { try? handle.close() }
    return String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
}

/// The process's command line, arguments separated by spaces.
func soakCommandLine(pid: pid_t) -> String? {
    guard let handle = FileHandle(forReadingAtPath: "/proc/\(pid)/cmdline") else { return nil }
    defer { try? handle.close() }
    let parts = handle.readDataToEndOfFile().split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    return parts.isEmpty ? nil : parts.joined(separator: " ")
}

/// The memory-related settings a process started with: only variables with these names or
/// prefixes are read out of /proc/<pid>/environ (never credentials).
func soakMemorySettings(pid: pid_t) -> [String: String] {
    let prefixes = ["MALLOC_", "VIPS_", "GLIBC_TUNABLES", "G_SLICE", "G_DEBUG", "LD_PRELOAD", "JEMALLOC_", "MIMALLOC_", "TCMALLOC_"]
    let names: Set<String> = ["FRAMECAST_IMAGING_THREADS", "FRAMECAST_LOG_LEVEL"]
    guard let handle = FileHandle(forReadingAtPath: "/proc/\(pid)/environ") else { return [:] }
    defer { try? handle.close() }
    var settings: [String: String] = [:]
    for entry in handle.readDataToEndOfFile().split(separator: 0) {
        let text = String(decoding: entry, as: UTF8.self)
        guard let equals = text.firstIndex(of: "=") else { continue }
        let name = String(text[text.startIndex..<equals])
        guard names.contains(name) || prefixes.contains(where: { name.hasPrefix($0) }) else { continue }
        settings[name] = String(text[text.index(after: equals)...])
    }
    return settings
}

func soakLoadAverage1m() -> Double? {
    loadAverage().split(separator: " ").first.flatMap { Double($0) }
}

// MARK: The photos

struct SoakPhoto: Sendable {
    var path: String
    var bytes: Int
}

/// Real photographs to cut the uploads from (mate-backgrounds' nature photos; the camera
/// photos of plasma-workspace-wallpapers if those are missing).
func soakSourcePhotos() -> [String] {
    let mate = "/usr/share/backgrounds/mate/nature"
    let names = ((try? FileManager.default.contentsOfDirectory(atPath: mate)) ?? []).filter { $0.hasSuffix(".jpg") }.sorted()
    if names.count >= 2 { return names.map { "\(mate)/\($0)" } }
    return sourcePhotos(limit: 8)
}

/// Upload `index`'s pixels: a `width`×`height` window of one base image (the bases in turn;
/// each time round at another offset) with `index` drawn as 24 black/white 16×16 blocks at
/// the top left, so no two uploads have the same pixels.
func soakPixels(index: Int, bases: [Pixels], width: Int, height: Int) -> Pixels {
    let base = bases[index % bases.count]
    let round = index / bases.count
    let spareX = base.width - width, spareY = base.height - height
    let ox = spareX > 0 ? (round * 37) % (spareX + 1) : 0
    let oy = spareY > 0 ? (round * 23) % (spareY + 1) : 0
    let row = width * 3
    var rgb = [UInt8](repeating: 0, count: width * height * 3)
    rgb.withUnsafeMutableBufferPointer { out in
        base.rgb.withUnsafeBufferPointer { source in
            guard let to = out.baseAddress, let from = source.baseAddress else { return }
            for y in 0..<height {
                (to + y * row).update(from: from + ((y + oy) * base.width + ox) * 3, count: row)
            }
        }
    }
    for bit in 0..<24 {
        let value: UInt8 = (index >> bit) & 1 == 1 ? 255 : 0
        let x0 = 8 + bit * 16
        guard x0 + 16 <= width, 24 <= height else { break }
        for y in 8..<24 {
            for x in x0..<(x0 + 16) {
                let p = (y * width + x) * 3
                rgb[p] = value
                rgb[p + 1] = value
                rgb[p + 2] = value
            }
        }
    }
    return Pixels(width: width, height: height, rgb: rgb)
}

/// Writes `count` distinct 1200×800 JPEGs (quality 88) to `dir` with libvips: each source
/// photo is filled (attention crop) into 1360×896 once, then every upload is its own window
/// of one of them plus its number (``soakPixels(index:bases:width:height:)``), PNG → JPEG.
func makeSoakPhotos(count: Int, dir: String, sources: [String]) async throws -> [SoakPhoto] {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var logger = Logger(label: "framecast-bench")
    logger.logLevel = .warning
    let imaging = Imaging(threads: 2, logger: logger)
    defer { imaging.shutdown() }
    let (width, height) = (1200, 800)
    var bases: [Pixels] = []
    for source in sources {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: source)))
        bases.append(try await imaging.screen(bytes, width: width + 160, height: height + 96, png: false).pixels)
    }
    let frozen = bases
    let progress = ProgressLine("make \(count) distinct \(width)x\(height) JPEGs", total: count)
    return try await concurrentMap(Array(0..<count), width: 2) { i -> SoakPhoto in
        let png = try await imaging.png(soakPixels(index: i, bases: frozen, width: width, height: height))
        let jpeg = try await imaging.convert(png, to: .jpeg(quality: 88, progressive: false))
        let number = String(i)
        let path = "\(dir)/soak-\(String(repeating: "0", count: Swift.max(0, 5 - number.count)))\(number).jpg"
        try Data(jpeg).write(to: URL(fileURLWithPath: path), options: .atomic)
        progress.advance()
        return SoakPhoto(path: path, bytes: jpeg.count)
    }
}

// MARK: The frame agents

/// The `framecast frame` processes of one run, stopped by PID (SIGTERM, then SIGKILL after 20 s).
final class SoakFleet {
    struct Agent {
        var id: String
        var screen: String
        var dir: String
        var logPath: String
        var process: Process
    }

    private(set) var agents: [Agent] = []
    private var stopped = false

    func start(app: String, arguments: [String], id: String, screen: String, dir: String, logPath: String) throws {
        guard FileManager.default.createFile(atPath: logPath, contents: nil), let log = FileHandle(forWritingAtPath: logPath) else {
            throw ChildError(description: "cannot create the agent log \(logPath)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: app)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        try process.run()
        agents.append(Agent(id: id, screen: screen, dir: dir, logPath: logPath, process: process))
    }

    var pids: [pid_t] { agents.map { $0.process.processIdentifier } }

    func stopAll() {
        guard !stopped else { return }
        stopped = true
        for agent in agents where agent.process.isRunning { agent.process.terminate() }
        let deadline = Date().addingTimeInterval(20)
        while agents.contains(where: { $0.process.isRunning }) && Date() < deadline { usleep(100_000) }
        for agent in agents where agent.process.isRunning { kill(agent.process.processIdentifier, SIGKILL) }
    }
}

/// `GET /api/v1/frames/{id}`, the parts the soak reads.
struct SoakFrameView: Decodable {
    struct Sync: Decodable {
        let album_id: String
        let total_photos: Int
        let displayed_photos: Int
    }
    let online: Bool
    let sync_status: [Sync]
}

// MARK: Report types

struct SoakSample: Codable, Sendable {
    /// Uploads sent before this sample.
    var uploads: Int
    /// Seconds since the first upload.
    var seconds: Double
    var framecast: SoakProcessMemory
    /// The sum of the agents' VmRSS (those still running).
    var agentsRSSMB: Double?
    var agentsRunning: Int
    var loadAverage1m: Double?
}

struct SoakRSSStats: Codable, Sendable {
    /// The reference: the first sample at or after the warm-up.
    var referenceUploads: Int
    var referenceMB: Double
    var minMB: Double
    var maxMB: Double
    var minDeviationPercent: Double
    var maxDeviationPercent: Double
    /// Least-squares slope over the samples from the reference on, MB per 100 uploads.
    var slopeMBPer100Uploads: Double?
    var samples: Int
    var spanUploads: Int
    var withinTolerance: Bool

    init?(_ points: [(uploads: Int, mb: Double)], warmup: Int, tolerancePercent: Double) {
        let after = points.filter { $0.uploads >= warmup }
        guard let first = after.first, let last = after.last, first.mb > 0 else { return nil }
        let values = after.map { $0.mb }
        let low = values.min() ?? first.mb, high = values.max() ?? first.mb
        let lowPercent = (low / first.mb - 1) * 100, highPercent = (high / first.mb - 1) * 100
        var slope: Double?
        if after.count >= 2 {
            let n = Double(after.count)
            let meanX = after.reduce(0.0) { $0 + Double($1.uploads) } / n
            let meanY = values.reduce(0, +) / n
            var sxy = 0.0, sxx = 0.0
            for point in after {
                let dx = Double(point.uploads) - meanX
                sxy += dx * (point.mb - meanY)
                sxx += dx * dx
            }
            if sxx > 0 { slope = sxy / sxx * 100 }
        }
        referenceUploads = first.uploads
        referenceMB = first.mb
        minMB = low
        maxMB = high
        minDeviationPercent = lowPercent
        maxDeviationPercent = highPercent
        slopeMBPer100Uploads = slope
        samples = after.count
        spanUploads = last.uploads - first.uploads
        withinTolerance = lowPercent >= -tolerancePercent && highPercent <= tolerancePercent
    }
}

struct SoakFrameResult: Codable, Sendable {
    var id: String
    var screen: String
    var pid: Int32
    /// Uploaded photos present in the agent's cache folder (`photos/{file_id}`).
    var onDisk: Int
    /// Uploaded photos in its cache index (`index.json`); nil when unreadable.
    var inIndex: Int?
    /// The album's `displayed_photos` / `total_photos` in `GET /api/v1/frames/{id}`.
    var displayed: Int?
    var albumPhotos: Int?
    var online: Bool?
    /// Up to five uploaded file ids missing from the cache folder.
    var missing: [String]
    var peakRSSMB: Double?
    var running: Bool
}

struct SoakReport: Codable, Sendable {
    var machine: MachineInfo
    var smoke: Bool
    var framecastPID: Int32
    var framecastCommand: String
    /// Allocator and libvips variables `framecast all` started with (/proc/<pid>/environ).
    var framecastSettings: [String: String]
    /// FRAMECAST_BENCH_APP_ENV as given to benchmarks/run.
    var requestedSettings: String?
    var agentCommand: String
    var agentDisplay: String
    var frames: Int
    var ratePerSecond: Double
    var uploadsPlanned: Int
    var uploadsSent: Int
    var accepted: Int
    var rejected: Int
    var rejectionSamples: [String]
    /// Uploads that started more than one interval after their instant.
    var startedLate: Int
    var durationSeconds: Double
    var uploadMS: Summary?
    var photoBytes: Summary?
    var photoSources: [String]
    var warmupUploads: Int
    var sampleEvery: Int
    var tolerancePercent: Double
    var samples: [SoakSample]
    var framecastRSS: SoakRSSStats?
    var agentsRSS: SoakRSSStats?
    /// `framecast all` once every frame held and showed every photo (or the settle time ran out).
    var afterSettle: SoakProcessMemory?
    var settleSeconds: Double
    var frameResults: [SoakFrameResult]
    var allAccepted: Bool
    var allDelivered: Bool
    var allDisplayed: Bool
    var flat: Bool
    var problems: [String]
}

// MARK: The command

struct Soak: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak",
        abstract: "Memory under steady load: distinct photos uploaded at a fixed rate into an album shown by real frame agents; RSS of `framecast all` sampled, slope reported.",
        discussion: """
            Needs a running `framecast all` (its PID: --framecast-pid) and the framecast executable for the agents \
            (--framecast); benchmarks/run soak starts everything and passes both. Settings for the framecast process \
            only: FRAMECAST_BENCH_APP_ENV="MALLOC_ARENA_MAX=2 VIPS_…=…" benchmarks/run soak.
            """)

    @Option(help: "Photos to upload (default 600; 30 with --smoke).") var uploads: Int?
    @Option(help: "Uploads per second.") var rate: Double = 1
    @Option(help: "Uploads before the reference RSS (default 100; 10 with --smoke).") var warmup: Int?
    @Option(help: "Frame agents (`framecast frame` processes) showing the album.") var frames = 3
    @Option(help: "Sample RSS every N uploads.") var sampleEvery = 10
    @Option(help: "Allowed RSS deviation from the reference after warm-up, percent.") var tolerance: Double = 10
    @Option(help: "The gateway (default $FRAMECAST_BENCH_GATEWAY or http://127.0.0.1:8080).") var gateway: String?
    @Option(help: "PID of the `framecast all` to sample (default $FRAMECAST_BENCH_PID).") var framecastPid: Int?
    @Option(help: "The framecast executable the agents run (default $FRAMECAST_BENCH_APP).") var framecast: String?
    @Option(help: "The agents' display: none (decode only, the cheapest) or png (also writes a PNG screen).")
    var agentDisplay = "none"
    @Option(help: "Seconds to wait after the last upload for every frame to hold and show every photo.") var settle = 180
    @Option(help: "Where the report goes (default results, or .work/smoke with --smoke).") var results: String?
    @Flag(help: "Smoke mode for scripts: 30 uploads, warm-up 10, report to .work/smoke; RSS is reported, not judged.")
    var smoke = false
    @Flag(help: "Exit non-zero when RSS leaves the tolerance after warm-up (ignored with --smoke).") var failOnGrowth = false

    func run() async throws {
        var machine = MachineInfo.capture()
        let env = ProcessInfo.processInfo.environment
        let fm = FileManager.default
        let uploadCount = uploads ?? (smoke ? 30 : 600)
        let warmupCount = warmup ?? (smoke ? 10 : 100)
        guard uploadCount > 0 else { throw ValidationError("--uploads must be at least 1") }
        guard (0..<uploadCount).contains(warmupCount) else { throw ValidationError("--warmup must be 0...uploads-1") }
        guard rate > 0, rate.isFinite else { throw ValidationError("--rate must be a positive number of uploads per second") }
        guard frames > 0 else { throw ValidationError("--frames must be at least 1") }
        guard sampleEvery > 0 else { throw ValidationError("--sample-every must be at least 1") }
        guard agentDisplay == "none" || agentDisplay == "png" else { throw ValidationError("--agent-display must be none or png") }
        let gatewayURL = gateway ?? env["FRAMECAST_BENCH_GATEWAY"] ?? "http://127.0.0.1:8080"
        guard let url = URLComponents(string: gatewayURL), let host = url.host else { throw ValidationError("bad gateway URL \(gatewayURL)") }
        let port = url.port ?? 80
        guard let pidNumber = framecastPid ?? env["FRAMECAST_BENCH_PID"].flatMap({ Int($0) }), pidNumber > 0 else {
            throw ValidationError("the PID of `framecast all` is needed: --framecast-pid (benchmarks/run soak passes it)")
        }
        let pid = pid_t(pidNumber)
        guard let app = framecast ?? env["FRAMECAST_BENCH_APP"], fm.isExecutableFile(atPath: app) else {
            throw ValidationError("the framecast executable is needed for the agents: --framecast PATH (benchmarks/run soak passes it)")
        }
        guard SoakProcessMemory.read(pid: pid) != nil else { throw ValidationError("no running process \(pid) (--framecast-pid)") }
        let command = soakCommandLine(pid: pid) ?? "?"
        if !command.contains("framecast") { note("warning: process \(pid) is `\(command)`, not framecast") }
        let settings = soakMemorySettings(pid: pid)
        let resultsDir = results ?? (smoke ? ".work/smoke" : "results")
        try fm.createDirectory(atPath: resultsDir, withIntermediateDirectories: true)
        let run = UUID().uuidString.prefix(8).lowercased()
        let work = fm.currentDirectoryPath + "/.work/soak"
        try fm.createDirectory(atPath: work, withIntermediateDirectories: true)
        // The agents' folders under benchmarks/run's run folder when there is one: removed with
        // it, and an agent left behind by a crash is stopped with its servers (its command line
        // names that folder).
        let runDir = env["FRAMECAST_RUN_DIR"].map { "\($0)/soak-\(run)" } ?? "\(work)/run-\(run)"
        try fm.createDirectory(atPath: runDir, withIntermediateDirectories: true)
        let settingsText = settings.keys.sorted().map { "\($0)=\(settings[$0] ?? "")" }.joined(separator: " ")
        note("soak \(run): \(uploadCount) uploads at \(fmt(rate, 2))/s, \(frames) frame agent(s), framecast all pid \(pid)"
             + (settingsText.isEmpty ? "" : ", " + settingsText))

        // 1. The photos, before anything is measured.
        let sources = soakSourcePhotos()
        guard !sources.isEmpty else { throw ValidationError("no source photos: run benchmarks/setup (mate-backgrounds)") }
        let photos = try await makeSoakPhotos(count: uploadCount, dir: "\(runDir)/photos", sources: sources)

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let api = HTTPPool(host: host, port: port, connections: 4, group: group)
        let fleet = SoakFleet()
        // Whatever happens, the agents are stopped (by PID) before this returns.
        defer { fleet.stopAll() }
        let report: SoakReport
        do {
            report = try await soak(run: run, runDir: runDir, work: work, app: app, gatewayURL: gatewayURL, api: api, pid: pid,
                                    uploadCount: uploadCount, warmupCount: warmupCount, photos: photos, fleet: fleet,
                                    machine: &machine, command: command, settings: settings, sources: sources)
        } catch {
            fleet.stopAll()
            await api.close()
            try? await group.shutdownGracefully()
            throw error
        }
        fleet.stopAll()
        await api.close()
        try? await group.shutdownGracefully()
        try writeJSON(report, to: "\(resultsDir)/soak.json")
        let markdown = renderSoakMarkdown(report)
        try markdown.write(toFile: "\(resultsDir)/soak.md", atomically: true, encoding: .utf8)
        try soakChart(report).write(toFile: "\(resultsDir)/soak.svg", atomically: true, encoding: .utf8)
        print(markdown)
        note("report: \(resultsDir)/soak.md")
        if !report.problems.isEmpty {
            throw ChildError(description: "soak: " + report.problems.joined(separator: "; "))
        }
        if failOnGrowth && !smoke && !report.flat {
            throw ChildError(description: "soak: RSS of framecast all left ±\(fmt(tolerance, 0)) % of its post-warm-up value")
        }
    }

    func soak(run: String, runDir: String, work: String, app: String, gatewayURL: String, api: HTTPPool, pid: pid_t,
              uploadCount: Int, warmupCount: Int, photos: [SoakPhoto], fleet: SoakFleet, machine: inout MachineInfo,
              command: String, settings: [String: String], sources: [String]) async throws -> SoakReport {
        // 2. A user, an album, the frames: through the REST API.
        let signup = try await api.send(jsonRequest(.POST, "/api/v1/auth/signup", token: nil,
            ["email": "soak-\(run)@example.com", "password": "soak benchmark password \(run)", "name": "Soak \(run)"]))
        guard signup.status == 201 else { throw ChildError(description: "signup: HTTP \(signup.status) \(String(decoding: signup.bytes, as: UTF8.self))") }
        let token = try signup.json(Session.self).token
        let auth = [("Authorization", "Bearer \(token)")]
        let albumReply = try await api.send(jsonRequest(.POST, "/api/v1/albums", token: token, ["name": "Soak \(run)"]))
        guard albumReply.status == 201 else { throw ChildError(description: "album: HTTP \(albumReply.status)") }
        let album = try albumReply.json(AlbumCreated.self).album_id.lowercased()
        let screens = [(1024, 600), (1280, 800), (800, 480)]
        let display = agentDisplay
        var agentArguments: [String] = []
        for i in 0..<frames {
            let (w, h) = screens[i % screens.count]
            let reply = try await api.send(jsonRequest(.POST, "/api/v1/frames", token: token,
                ["name": "soak frame \(i)", "width": w, "height": h, "orientation": "landscape"]))
            guard reply.status == 201 else { throw ChildError(description: "register frame: HTTP \(reply.status) \(String(decoding: reply.bytes, as: UTF8.self))") }
            let frame = try reply.json(FrameRegistered.self)
            let put = try await api.send(jsonRequest(.PUT, "/api/v1/frames/\(frame.frame_id)/albums", token: token, ["album_ids": [album]]))
            guard put.status == 200 else { throw ChildError(description: "subscribe frame: HTTP \(put.status)") }
            // The agent's configuration file: the registration answer as is, plus where it lives.
            let dir = "\(runDir)/frame-\(i)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            guard var file = try JSONSerialization.jsonObject(with: Data(reply.bytes)) as? [String: Any] else {
                throw ChildError(description: "the registration answer is not a JSON object")
            }
            file["cache_dir"] = dir
            file["cache_bytes"] = 8 << 30  // a budget, not an allocation: nothing is evicted during the run
            let configPath = "\(dir)/frame.json"
            let configBytes = try JSONSerialization.data(withJSONObject: file, options: [.sortedKeys])
            // It holds the frame's token and MQTT password: readable by this user only.
            guard FileManager.default.createFile(atPath: configPath, contents: configBytes, attributes: [.posixPermissions: 0o600]) else {
                throw ChildError(description: "cannot write \(configPath)")
            }
            let displayArgument = display == "png" ? "png:\(dir)/screen.png" : "none"
            agentArguments = ["frame", "--config", configPath, "--gateway", gatewayURL, "--display", displayArgument]
            try fleet.start(app: app, arguments: agentArguments, id: frame.frame_id.lowercased(), screen: "\(w)x\(h)", dir: dir,
                            logPath: "\(work)/agent-\(run)-\(i).log")
        }
        note("album \(album); \(frames) agent(s) started (logs \(work)/agent-\(run)-*.log)")

        // 3. Every agent online (its retained `online` reached the album service), then subscribed
        //    to the album (its state.json lists it once the sync is applied; soft: a photo_added
        //    missed before that still arrives through the next sync).
        let onlineDeadline = ContinuousClock.now + .seconds(120)
        var offline = Set(fleet.agents.map(\.id))
        while !offline.isEmpty {
            for agent in fleet.agents where !agent.process.isRunning {
                throw ChildError(description: "frame agent \(agent.id) exited (status \(agent.process.terminationStatus)); see \(agent.logPath)")
            }
            for id in offline {
                let reply = try await api.send(HTTPRequest(path: "/api/v1/frames/\(id)", headers: auth))
                if reply.status == 200, let view = try? reply.json(SoakFrameView.self), view.online { offline.remove(id) }
            }
            if offline.isEmpty { break }
            guard ContinuousClock.now < onlineDeadline else { throw ChildError(description: "frames not online after 120 s: \(offline.sorted())") }
            try await Task.sleep(for: .milliseconds(250))
        }
        let subscribedDeadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < subscribedDeadline {
            let subscribed = fleet.agents.allSatisfy { agent in
                guard let data = FileManager.default.contents(atPath: "\(agent.dir)/state.json"),
                      let state = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                      let albums = state["albumIDs"] as? [String] else { return false }
                return albums.contains { $0.lowercased() == album }
            }
            if subscribed { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        try await Task.sleep(for: .seconds(1))

        // 4. The soak: one upload per interval at fixed instants; RSS every `sampleEvery` uploads.
        var problems: [String] = []
        var samples: [SoakSample] = []
        var uploadMS: [Double] = []
        var accepted: [String] = []
        var rejected = 0
        var rejectionSamples: [String] = []
        var late = 0
        var consecutiveFailures = 0
        var exitedAgents = Set<String>()
        let interval = Duration.seconds(1 / rate)
        let start = ContinuousClock.now
        func sample(_ count: Int) throws -> SoakSample {
            guard let memory = SoakProcessMemory.read(pid: pid) else {
                throw ChildError(description: "framecast all (pid \(pid)) is gone after \(count) uploads")
            }
            let agents = fleet.pids.compactMap { SoakProcessMemory.read(pid: $0) }
            for agent in fleet.agents where !agent.process.isRunning && !exitedAgents.contains(agent.id) {
                exitedAgents.insert(agent.id)
                problems.append("frame agent \(agent.id) exited after \(count) uploads (status \(agent.process.terminationStatus)); see \(agent.logPath)")
            }
            return SoakSample(uploads: count, seconds: (ContinuousClock.now - start).ms / 1000, framecast: memory,
                              agentsRSSMB: agents.isEmpty ? nil : agents.reduce(0) { $0 + $1.rssMB }, agentsRunning: agents.count,
                              loadAverage1m: soakLoadAverage1m())
        }
        let progress = ProgressLine("soak: \(uploadCount) uploads at \(fmt(rate, 2))/s", total: uploadCount)
        var rssNote = ""
        for i in 0..<uploadCount {
            let due = start + interval * i
            let now = ContinuousClock.now
            if due > now {
                try await Task.sleep(for: due - now)
            } else if now - due > interval {
                late += 1
            }
            if i % sampleEvery == 0 {
                let s = try sample(i)
                samples.append(s)
                rssNote = "framecast all \(fmt(s.framecast.rssMB)) MB"
            }
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: photos[i].path)))
            let multipart = multipartBody(file: bytes, fileName: "soak-\(run)-\(i).jpg", contentType: "image/jpeg",
                                          metadata: "{\"album_id\": \"\(album)\"}")
            let sent = ContinuousClock.now
            var failure: String?
            do {
                let reply = try await api.send(HTTPRequest(method: .POST, path: "/api/v1/storage/photos/upload",
                    headers: auth + [("Content-Type", multipart.contentType)], body: multipart.body))
                uploadMS.append((ContinuousClock.now - sent).ms)
                if reply.status == 201, let uploaded = try? reply.json(Uploaded.self) {
                    accepted.append(uploaded.file_id.lowercased())
                } else {
                    failure = "upload \(i): HTTP \(reply.status) \(String(decoding: reply.bytes.prefix(300), as: UTF8.self))"
                }
            } catch {
                failure = "upload \(i): \(error)"
            }
            if let failure {
                rejected += 1
                consecutiveFailures += 1
                if rejectionSamples.count < 5 { rejectionSamples.append(failure) }
                progress.advance("\(rssNote); \(failure.prefix(120))")
                if consecutiveFailures >= 10 { throw ChildError(description: "10 uploads in a row failed; last: \(failure)") }
            } else {
                consecutiveFailures = 0
                progress.advance(rssNote)
            }
        }
        let end = start + interval * uploadCount
        if end > ContinuousClock.now { try await Task.sleep(for: end - ContinuousClock.now) }
        samples.append(try sample(uploadCount))
        let duration = (ContinuousClock.now - start).ms / 1000

        // 5. Every frame holds and has shown every accepted photo (or the settle time is over).
        func inspect(_ agent: SoakFleet.Agent) async -> SoakFrameResult {
            let fm = FileManager.default
            let files = Set(((try? fm.contentsOfDirectory(atPath: "\(agent.dir)/photos")) ?? []).map { $0.lowercased() })
            let missing = accepted.filter { !files.contains($0) }
            var inIndex: Int?
            if let data = fm.contents(atPath: "\(agent.dir)/index.json"),
               let index = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
               let entries = index["entries"] as? [String: Any] {
                let keys = Set(entries.keys.map { $0.lowercased() })
                inIndex = accepted.filter { keys.contains($0) }.count
            }
            var result = SoakFrameResult(id: agent.id, screen: agent.screen, pid: agent.process.processIdentifier,
                                         onDisk: accepted.count - missing.count, inIndex: inIndex, displayed: nil, albumPhotos: nil,
                                         online: nil, missing: Array(missing.prefix(5)), peakRSSMB: nil,
                                         running: agent.process.isRunning)
            if let reply = try? await api.send(HTTPRequest(path: "/api/v1/frames/\(agent.id)", headers: auth)), reply.status == 200,
               let view = try? reply.json(SoakFrameView.self) {
                result.online = view.online
                if let sync = view.sync_status.first(where: { $0.album_id.lowercased() == album }) {
                    result.displayed = sync.displayed_photos
                    result.albumPhotos = sync.total_photos
                }
            }
            return result
        }
        func delivered(_ r: SoakFrameResult) -> Bool { r.onDisk == accepted.count && (r.inIndex ?? r.onDisk) == accepted.count }
        func displayed(_ r: SoakFrameResult) -> Bool { r.displayed == accepted.count && r.albumPhotos == accepted.count }
        let settleStart = ContinuousClock.now
        var frameResults: [SoakFrameResult] = []
        while true {
            frameResults = []
            for agent in fleet.agents { frameResults.append(await inspect(agent)) }
            if frameResults.allSatisfy({ delivered($0) && displayed($0) }) { break }
            if ContinuousClock.now - settleStart >= .seconds(settle) || !fleet.agents.contains(where: { $0.process.isRunning }) { break }
            try await Task.sleep(for: .seconds(1))
        }
        let settleSeconds = (ContinuousClock.now - settleStart).ms / 1000
        let afterSettle = SoakProcessMemory.read(pid: pid)
        for i in frameResults.indices {
            frameResults[i].peakRSSMB = SoakProcessMemory.read(pid: frameResults[i].pid)?.hwmMB
        }
        machine.loadAverageAtEnd = loadAverage()

        // 6. The figures.
        let tolerancePercent = tolerance
        let framecastRSS = SoakRSSStats(samples.map { (uploads: $0.uploads, mb: $0.framecast.rssMB) }, warmup: warmupCount,
                                        tolerancePercent: tolerancePercent)
        let agentsRSS = SoakRSSStats(samples.compactMap { s in s.agentsRSSMB.map { (uploads: s.uploads, mb: $0) } }, warmup: warmupCount,
                                     tolerancePercent: tolerancePercent)
        let allAccepted = rejected == 0 && accepted.count == uploadCount
        let allDelivered = !frameResults.isEmpty && frameResults.allSatisfy(delivered)
        let allDisplayed = !frameResults.isEmpty && frameResults.allSatisfy(displayed)
        if !allAccepted { problems.append("\(rejected) of \(uploadCount) uploads not answered 201") }
        for r in frameResults where !delivered(r) {
            problems.append("frame \(r.id) holds \(r.onDisk) of \(accepted.count) photos (index: \(r.inIndex.map(String.init) ?? "unreadable"))")
        }
        for r in frameResults where delivered(r) && !displayed(r) {
            problems.append("frame \(r.id) displayed \(r.displayed.map(String.init) ?? "?") of \(r.albumPhotos.map(String.init) ?? "?") album photos (\(accepted.count) uploaded) after \(fmt(settleSeconds, 0)) s")
        }
        return SoakReport(
            machine: machine, smoke: smoke, framecastPID: pid, framecastCommand: command, framecastSettings: settings,
            requestedSettings: ProcessInfo.processInfo.environment["FRAMECAST_BENCH_APP_ENV"].flatMap { $0.isEmpty ? nil : $0 },
            agentCommand: "framecast " + agentArguments.map { $0.hasPrefix("/") ? ($0 as NSString).lastPathComponent : $0 }.joined(separator: " "),
            agentDisplay: display, frames: frames, ratePerSecond: rate, uploadsPlanned: uploadCount, uploadsSent: uploadCount,
            accepted: accepted.count, rejected: rejected, rejectionSamples: rejectionSamples, startedLate: late,
            durationSeconds: duration, uploadMS: Summary(uploadMS), photoBytes: Summary(photos.map { Double($0.bytes) }),
            photoSources: sources, warmupUploads: warmupCount, sampleEvery: sampleEvery, tolerancePercent: tolerancePercent,
            samples: samples, framecastRSS: framecastRSS, agentsRSS: agentsRSS, afterSettle: afterSettle, settleSeconds: settleSeconds,
            frameResults: frameResults, allAccepted: allAccepted, allDelivered: allDelivered, allDisplayed: allDisplayed,
            flat: framecastRSS?.withinTolerance ?? false, problems: problems)
    }
}

// MARK: Report

func soakSigned(_ value: Double?, _ digits: Int = 1) -> String {
    guard let value, value.isFinite else { return "–" }
    return (value >= 0 ? "+" : "") + fmt(value, digits)
}

func renderSoakMarkdown(_ r: SoakReport) -> String {
    var md = "# Soak: memory of `framecast all` under steady load\n\n" + r.machine.markdown + "\n\n"
    if r.smoke { md += "**Smoke run** (\(r.uploadsPlanned) uploads): the RSS figures are printed, not judged.\n\n" }
    md += "`framecast all` (pid \(r.framecastPID): `\(r.framecastCommand)`) with its own nats-server, mosquitto and PostgreSQL (benchmarks/run); "
    md += "\(r.frames) real frame agents (`\(r.agentCommand)`, one process each, screens \(r.frameResults.map(\.screen).joined(separator: ", "))) registered through the REST API and subscribed to one album; "
    md += "\(r.uploadsPlanned) distinct 1200×800 JPEGs (\(fmt(r.photoBytes.map { $0.p50 / 1024 }, 0)) KiB median; windows of \(r.photoSources.count) real photographs at a different offset each, with the upload's number drawn in) uploaded one at a time into the album at \(fmt(r.ratePerSecond, 2))/s, each at a fixed instant. "
    md += "RSS = VmRSS of /proc/<pid>/status, MB = MiB, sampled every \(r.sampleEvery) uploads just before the next upload; the agents' figure is the sum of their VmRSS. "
    md += "Reference: the first sample at or after the warm-up of \(r.warmupUploads) uploads; min, max and the least-squares slope are over the samples from there on.\n\n"
    let settings = r.framecastSettings.keys.sorted().map { "`\($0)=\(r.framecastSettings[$0] ?? "")`" }
    md += "Allocator and libvips settings `framecast all` started with: \(settings.isEmpty ? "none (defaults)" : settings.joined(separator: " "))"
    if let requested = r.requestedSettings { md += " (FRAMECAST_BENCH_APP_ENV: `\(requested)`)" }
    md += ".\n\n## Memory\n\n"
    let f = r.framecastRSS, a = r.agentsRSS
    md += "| | framecast all | frame agents (sum of \(r.frames)) |\n|---|---:|---:|\n"
    md += "| RSS at 0 uploads (after sign-up, \(r.frames) frames registered and online) | \(fmt(r.samples.first?.framecast.rssMB)) MB | \(fmt(r.samples.first?.agentsRSSMB)) MB |\n"
    md += "| RSS after warm-up (\(f.map { "\($0.referenceUploads)" } ?? "–") uploads) | \(fmt(f?.referenceMB)) MB | \(fmt(a?.referenceMB)) MB |\n"
    md += "| min after warm-up | \(fmt(f?.minMB)) MB (\(soakSigned(f?.minDeviationPercent)) %) | \(fmt(a?.minMB)) MB (\(soakSigned(a?.minDeviationPercent)) %) |\n"
    md += "| max after warm-up | \(fmt(f?.maxMB)) MB (\(soakSigned(f?.maxDeviationPercent)) %) | \(fmt(a?.maxMB)) MB (\(soakSigned(a?.maxDeviationPercent)) %) |\n"
    md += "| least-squares slope after warm-up | \(soakSigned(f?.slopeMBPer100Uploads, 2)) MB per 100 uploads | \(soakSigned(a?.slopeMBPer100Uploads, 2)) MB per 100 uploads |\n"
    md += "| RSS at the end (\(r.samples.last?.uploads ?? 0) uploads) | \(fmt(r.samples.last?.framecast.rssMB)) MB | \(fmt(r.samples.last?.agentsRSSMB)) MB |\n"
    md += "| peak RSS (VmHWM) | \(fmt(r.afterSettle?.hwmMB ?? r.samples.last?.framecast.hwmMB)) MB | \(r.frameResults.map { fmt($0.peakRSSMB) }.joined(separator: " / ")) MB each |\n"
    md += "| RSS after the frames caught up (\(fmt(r.settleSeconds, 0)) s after the last upload) | \(fmt(r.afterSettle?.rssMB)) MB | |\n"
    md += "| within ±\(fmt(r.tolerancePercent, 0)) % of the post-warm-up value | \(f.map { $0.withinTolerance ? "yes" : "**no**" } ?? "–") | \(a.map { $0.withinTolerance ? "yes" : "no" } ?? "–") |\n\n"
    md += "Uploads: \(r.accepted) of \(r.uploadsPlanned) answered 201 (\(r.rejected) did not) in \(fmt(r.durationSeconds, 0)) s; "
    md += "upload request p50 / p95 / p99 / max \(fmt(r.uploadMS?.p50)) / \(fmt(r.uploadMS?.p95)) / \(fmt(r.uploadMS?.p99)) / \(fmt(r.uploadMS?.max)) ms; "
    md += "\(r.startedLate) started more than one interval late.\n"
    if !r.rejectionSamples.isEmpty { md += "\nRejected (first): \(r.rejectionSamples.joined(separator: "; "))\n" }
    md += "\n## Frames\n\n| frame | screen | uploaded photos in its cache folder | in its cache index | displayed (API) | photos in the album (API) | online | peak RSS MB |\n"
    md += "|---|---|---:|---:|---:|---:|---|---:|\n"
    for frame in r.frameResults {
        md += "| \(frame.id) | \(frame.screen) | \(frame.onDisk) / \(r.accepted) | \(frame.inIndex.map(String.init) ?? "–") | \(frame.displayed.map(String.init) ?? "–") | \(frame.albumPhotos.map(String.init) ?? "–") | \(frame.online.map { $0 ? "yes" : "no" } ?? "–") | \(fmt(frame.peakRSSMB)) |\n"
    }
    md += "\nChecked \(fmt(r.settleSeconds, 0)) s after the last upload (cache folders `photos/` and `index.json`; `displayed_photos` / `total_photos` of the album in `GET /api/v1/frames/{id}`).\n"
    md += "\n## RSS series\n\n| uploads | s | framecast all RSS MB | anon MB | file MB | threads | agents RSS MB | load (1 min) |\n"
    md += "|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    for s in r.samples {
        md += "| \(s.uploads) | \(fmt(s.seconds, 0)) | \(fmt(s.framecast.rssMB)) | \(fmt(s.framecast.rssAnonMB)) | \(fmt(s.framecast.rssFileMB)) | \(s.framecast.threads.map(String.init) ?? "–") | \(fmt(s.agentsRSSMB)) | \(fmt(s.loadAverage1m, 2)) |\n"
    }
    md += "\n## Targets\n\n| target | measured | met? |\n|---|---|---|\n"
    let span = "\(r.uploadsPlanned) uploads, reference at \(f.map { "\($0.referenceUploads)" } ?? "–")"
    let flatMet = r.flat && r.uploadsPlanned >= 600
    md += "| RSS of `framecast all` within ±\(fmt(r.tolerancePercent, 0)) % of its post-warm-up value over at least 600 uploads | \(fmt(f?.minMB)) … \(fmt(f?.maxMB)) MB vs \(fmt(f?.referenceMB)) MB (\(soakSigned(f?.minDeviationPercent)) % … \(soakSigned(f?.maxDeviationPercent)) %), slope \(soakSigned(f?.slopeMBPer100Uploads, 2)) MB / 100 uploads; \(span) | \(r.smoke ? "not judged (smoke)" : flatMet ? "yes" : "**no**") |\n"
    md += "| every upload answered 201 | \(r.accepted) of \(r.uploadsPlanned) | \(r.allAccepted ? "yes" : "**no**") |\n"
    md += "| every frame holds every photo | \(r.frameResults.map { "\($0.onDisk)" }.joined(separator: " / ")) of \(r.accepted) | \(r.allDelivered ? "yes" : "**no**") |\n"
    md += "| every frame displayed every photo | \(r.frameResults.map { $0.displayed.map(String.init) ?? "?" }.joined(separator: " / ")) of \(r.accepted) | \(r.allDisplayed ? "yes" : "**no**") |\n"
    if !r.problems.isEmpty { md += "\nProblems: \(r.problems.joined(separator: "; "))\n" }
    return md
}

/// RSS against uploads: framecast all and the agents' sum, with the reference band dashed.
func soakChart(_ r: SoakReport) -> String {
    let width = 900.0, height = 440.0, left = 70.0, right = 30.0, top = 40.0, bottom = 80.0
    let plotWidth = width - left - right, plotHeight = height - top - bottom
    let series: [(name: String, colour: String, points: [(Double, Double)])] = [
        ("framecast all", "#1f77b4", r.samples.map { (Double($0.uploads), $0.framecast.rssMB) }),
        ("frame agents (sum)", "#ff7f0e", r.samples.compactMap { s in s.agentsRSSMB.map { (Double(s.uploads), $0) } }),
    ]
    let maxX = Swift.max(1, Double(r.samples.last?.uploads ?? 1))
    var maxY = series.flatMap { serie in serie.points.map { $0.1 } }.max() ?? 1
    if let f = r.framecastRSS { maxY = Swift.max(maxY, f.referenceMB * (1 + r.tolerancePercent / 100)) }
    maxY = Swift.max(1, maxY * 1.1)
    func x(_ v: Double) -> Double { left + v / maxX * plotWidth }
    func y(_ v: Double) -> Double { top + plotHeight - v / maxY * plotHeight }
    var out = """
    <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="11">
    <rect width="100%" height="100%" fill="white"/>
    <text x="10" y="20" font-size="14" font-weight="bold">RSS (MiB) against uploads, \(fmt(r.ratePerSecond, 2))/s, \(r.frames) frame agents</text>

    """
    out += "<line x1=\"\(fmt(left))\" y1=\"\(fmt(top))\" x2=\"\(fmt(left))\" y2=\"\(fmt(top + plotHeight))\" stroke=\"black\"/>\n"
    out += "<line x1=\"\(fmt(left))\" y1=\"\(fmt(top + plotHeight))\" x2=\"\(fmt(left + plotWidth))\" y2=\"\(fmt(top + plotHeight))\" stroke=\"black\"/>\n"
    for step in 0...5 {
        let value = maxY * Double(step) / 5
        out += "<text x=\"\(fmt(left - 6))\" y=\"\(fmt(y(value) + 4))\" text-anchor=\"end\">\(fmt(value, 0))</text>\n"
        let upload = maxX * Double(step) / 5
        out += "<text x=\"\(fmt(x(upload)))\" y=\"\(fmt(top + plotHeight + 16))\" text-anchor=\"middle\">\(fmt(upload, 0))</text>\n"
    }
    out += "<text x=\"\(fmt(left + plotWidth))\" y=\"\(fmt(top + plotHeight + 32))\" text-anchor=\"end\">uploads</text>\n"
    out += "<line x1=\"\(fmt(x(Double(r.warmupUploads))))\" y1=\"\(fmt(top))\" x2=\"\(fmt(x(Double(r.warmupUploads))))\" y2=\"\(fmt(top + plotHeight))\" stroke=\"#888\" stroke-dasharray=\"2,3\"/>\n"
    out += "<text x=\"\(fmt(x(Double(r.warmupUploads)) + 3))\" y=\"\(fmt(top + 10))\" fill=\"#888\">end of warm-up</text>\n"
    if let f = r.framecastRSS {
        for factor in [1 - r.tolerancePercent / 100, 1 + r.tolerancePercent / 100] {
            let v = f.referenceMB * factor
            out += "<line x1=\"\(fmt(x(Double(f.referenceUploads))))\" y1=\"\(fmt(y(v)))\" x2=\"\(fmt(left + plotWidth))\" y2=\"\(fmt(y(v)))\" stroke=\"#d62728\" stroke-dasharray=\"4,3\"/>\n"
        }
        out += "<text x=\"\(fmt(left + plotWidth))\" y=\"\(fmt(y(f.referenceMB * (1 + r.tolerancePercent / 100)) - 4))\" text-anchor=\"end\" fill=\"#d62728\">±\(fmt(r.tolerancePercent, 0)) % of \(fmt(f.referenceMB)) MiB</text>\n"
    }
    for (s, serie) in series.enumerated() {
        guard !serie.points.isEmpty else { continue }
        let points = serie.points.map { "\(fmt(x($0.0))),\(fmt(y($0.1)))" }.joined(separator: " ")
        out += "<polyline fill=\"none\" stroke=\"\(serie.colour)\" stroke-width=\"1.5\" points=\"\(points)\"/>\n"
        let legendY = top + plotHeight + 50 + Double(s) * 14
        out += "<rect x=\"\(fmt(left))\" y=\"\(fmt(legendY - 9))\" width=\"10\" height=\"10\" fill=\"\(serie.colour)\"/>"
        out += "<text x=\"\(fmt(left + 16))\" y=\"\(fmt(legendY))\">\(serie.name)</text>\n"
    }
    out += "</svg>\n"
    return out
}
