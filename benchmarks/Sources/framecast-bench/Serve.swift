import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

// How the serve benchmark is put together
//
// * Through the REST API, as an app and a frame would: a user, an album, one frame of the
//   chosen screen (default 1024×600) showing it, one real photo uploaded to it. The frame reads
//   the photo's metadata document until its `frame:{W}x{H}` version is listed; that version's
//   `url` is its capability URL (`/c/{kid}/{expires}/{sig}/{file_id}/{blob_key}.{jpg|webp}`).
// * Three endpoints serve those very bytes: the capability URL (no Authorization), the old
//   token-authenticated download (`/api/v1/files/download/{id}?size=…&format=…`, the frame's
//   token) and nginx (Debian's nginx-light: 1 worker, `sendfile on`, `access_log off`), which
//   serves a copy of the capability URL's bytes from a folder of its own, on a free loopback
//   port; this process starts it and stops it, by its PID. Before any timing, each endpoint
//   answers 200 with byte-identical bodies (SHA-256 of each, by coreutils' sha256sum).
// * wrk (`-t2 -c64 -d8s --latency` by default) runs against each in turn, R rounds, the order
//   rotated every round (nginx, capability, token; capability, token, nginx; token, nginx,
//   capability; …) so drift in the machine's load hits every endpoint alike; an untimed
//   warm-up per endpoint comes first. wrk's text output is parsed (Requests/sec, the Latency
//   Distribution, non-2xx responses, socket errors) and kept in .work/serve/.
// * The frame token reaches wrk through its environment (a two-line Lua script sets the
//   header), not its command line, where `ps` would show it.

/// The three ways of fetching the same version.
enum ServeEndpoint: String, Codable, Sendable, CaseIterable {
    case nginx, capability, token

    var title: String {
        switch self {
        case .nginx: "nginx (same bytes, static file)"
        case .capability: "capability URL (no Authorization)"
        case .token: "token download (Bearer frame token)"
        }
    }
}

// MARK: wrk

/// What one wrk run printed (`--latency`), times in milliseconds.
struct WrkFigures: Codable, Sendable {
    struct SocketErrors: Codable, Sendable {
        var connect = 0
        var read = 0
        var write = 0
        var timeout = 0
        var total: Int { connect + read + write + timeout }
    }

    var requests: Int
    var seconds: Double
    var requestsPerSecond: Double
    var latencyMeanMS: Double
    var latencyMaxMS: Double
    var latencyP50MS: Double
    var latencyP75MS: Double
    var latencyP90MS: Double
    var latencyP99MS: Double
    /// "Non-2xx or 3xx responses" (absent from wrk's output when there are none).
    var non2xx: Int
    var socketErrors: SocketErrors

    /// Parses wrk 4.1's report, e.g.
    ///
    /// ```
    ///   Thread Stats   Avg      Stdev     Max   +/- Stdev
    ///     Latency     1.25ms    1.14ms  11.26ms   88.05%
    ///   Latency Distribution
    ///      50%    0.87ms
    ///      …
    ///      99%    5.13ms
    ///   263535 requests in 5.02s, 10.62GB read
    ///   Socket errors: connect 0, read 0, write 0, timeout 3
    ///   Non-2xx or 3xx responses: 12
    /// Requests/sec:  52485.77
    /// ```
    static func parse(_ text: String) throws -> WrkFigures {
        var requestCount: Int?, duration: Double?, rate: Double?, mean: Double?, maximum: Double?
        var percentiles: [Int: Double] = [:]
        var non2xx = 0
        var errors = SocketErrors()
        var inDistribution = false
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            let words = line.split(separator: " ").map(String.init)
            guard let first = words.first else { continue }
            if line == "Latency Distribution" { inDistribution = true; continue }
            if inDistribution, first.hasSuffix("%"), words.count >= 2, let p = Int(first.dropLast()) {
                percentiles[p] = milliseconds(words[1])
                continue
            }
            inDistribution = false
            if first == "Latency", words.count >= 4 {
                mean = milliseconds(words[1])
                maximum = milliseconds(words[3])
            } else if words.count >= 4, words[1] == "requests", words[2] == "in" {
                requestCount = Int(first)
                duration = milliseconds(words[3].hasSuffix(",") ? String(words[3].dropLast()) : words[3]).map { $0 / 1000 }
            } else if first == "Requests/sec:", words.count >= 2 {
                rate = Double(words[1])
            } else if line.hasPrefix("Non-2xx or 3xx responses:") {
                non2xx = words.last.flatMap { Int($0) } ?? 0
            } else if line.hasPrefix("Socket errors:") {
                // "Socket errors: connect 0, read 0, write 0, timeout 0"
                let pairs = line.dropFirst("Socket errors:".count).replacingOccurrences(of: ",", with: "")
                    .split(separator: " ").map(String.init)
                var i = 0
                while i + 1 < pairs.count {
                    let count = Int(pairs[i + 1]) ?? 0
                    switch pairs[i] {
                    case "connect": errors.connect = count
                    case "read": errors.read = count
                    case "write": errors.write = count
                    case "timeout": errors.timeout = count
                    default: break
                    }
                    i += 2
                }
            }
        }
        guard let requests = requestCount, let seconds = duration, let requestsPerSecond = rate, let latencyMean = mean,
              let latencyMax = maximum, let p50 = percentiles[50], let p75 = percentiles[75], let p90 = percentiles[90],
              let p99 = percentiles[99] else {
            throw ChildError(description: "cannot read wrk's output:\n\(text)")
        }
        return WrkFigures(requests: requests, seconds: seconds, requestsPerSecond: requestsPerSecond, latencyMeanMS: latencyMean,
                          latencyMaxMS: latencyMax,
                          latencyP50MS: p50, latencyP75MS: p75, latencyP90MS: p90, latencyP99MS: p99, non2xx: non2xx,
                          socketErrors: errors)
    }

    /// A wrk duration ("812.00us", "2.07ms", "1.02s", "1.50m", "1.00h") in milliseconds.
    static func milliseconds(_ text: String) -> Double? {
        // "us" and "ms" before "s", "ms" before "m".
        let units: [(suffix: String, scale: Double)] = [("us", 0.001), ("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        for unit in units where text.hasSuffix(unit.suffix) {
            return Double(text.dropLast(unit.suffix.count)).map { $0 * unit.scale }
        }
        return nil
    }
}

// MARK: nginx, the peer

/// nginx serving one folder on a free loopback port: Debian's nginx-light, 1 worker,
/// `sendfile on`, `access_log off`, and no limit on requests per keep-alive connection (wrk's
/// connections stay open for the whole run, as they do against the gateway; nginx's default
/// closes one every 1,000 requests). Its configuration, pid file, error log and temporary
/// folders are its own; it runs in the foreground (`daemon off`) as this process's child and is
/// stopped by its PID (`stop()`).
final class NginxPeer {
    let binary: String
    /// Configuration, pid file, error log: under $FRAMECAST_RUN_DIR when benchmarks/run set it,
    /// so that its sweep of stray processes finds an nginx a crash left behind (the path is on
    /// the master's command line).
    let home: String
    /// The served files: in the system's temporary folder and world-readable, as nginx's worker
    /// drops to `nobody` when it is started as root.
    let root: String
    private(set) var port = 0
    private var process: Process?

    init(binary: String) throws {
        self.binary = binary
        let fm = FileManager.default
        let tag = UUID().uuidString.prefix(8).lowercased()
        let runDir = ProcessInfo.processInfo.environment["FRAMECAST_RUN_DIR"].flatMap { $0.isEmpty ? nil : $0 }
        let temporary = NSTemporaryDirectory().hasSuffix("/") ? NSTemporaryDirectory() : NSTemporaryDirectory() + "/"
        home = (runDir.map { $0 + "/" } ?? temporary) + "nginx-serve-\(tag)"
        root = temporary + "framecast-serve-\(tag)"
        try fm.createDirectory(atPath: home, withIntermediateDirectories: true)
        try fm.createDirectory(atPath: root, withIntermediateDirectories: true)
        try fm.setAttributes([.posixPermissions: 0o755], ofItemAtPath: root)
    }

    /// Puts `bytes` in the served folder as `name` (mode 0644).
    func serve(_ bytes: [UInt8], as name: String) throws {
        let path = "\(root)/\(name)"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
    }

    /// Starts nginx on a free loopback port and waits (≤ 10 s) until it answers `probePath`
    /// with 200. A port taken between choosing and binding it costs a retry (5 at most).
    func start(probePath: String, group: EventLoopGroup) async throws {
        var failure = ""
        for _ in 0..<5 {
            let port = try await freeLoopbackPort(group: group)
            try configuration(port: port).write(toFile: "\(home)/nginx.conf", atomically: true, encoding: .utf8)
            let stderrPath = "\(home)/stderr.log"
            guard FileManager.default.createFile(atPath: stderrPath, contents: nil) else {
                throw ChildError(description: "cannot create \(stderrPath)")
            }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = ["-p", "\(home)/", "-c", "\(home)/nginx.conf", "-e", "\(home)/error.log"]
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle(forWritingAtPath: stderrPath)
            try process.run()
            self.process = process
            self.port = port
            let pool = HTTPPool(host: "127.0.0.1", port: port, connections: 1, group: group)
            var answered = false
            for _ in 0..<100 where process.isRunning {
                if let reply = try? await pool.send(HTTPRequest(path: probePath)), reply.status == 200 {
                    answered = true
                    break
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            await pool.close()
            if answered {
                note("nginx (pid \(process.processIdentifier)): http://127.0.0.1:\(port), configuration \(home)/nginx.conf")
                return
            }
            failure = logTail()
            await stop()
        }
        throw ChildError(description: "nginx did not start: \(failure)")
    }

    /// Stops nginx by its PID: SIGTERM (nginx's fast shutdown), SIGKILL after 10 s.
    func stop() async {
        guard let process else { return }
        self.process = nil
        guard process.isRunning else { return }
        let pid = process.processIdentifier
        kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + .seconds(10)
        while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(50)) }
        if process.isRunning { kill(pid, SIGKILL) }
    }

    /// Removes both folders (after `stop()`).
    func removeFiles() {
        try? FileManager.default.removeItem(atPath: root)
        try? FileManager.default.removeItem(atPath: home)
    }

    /// The last lines nginx wrote (error log, then stderr).
    func logTail() -> String {
        let text = ["error.log", "stderr.log"].compactMap { try? String(contentsOfFile: "\(home)/\($0)", encoding: .utf8) }.joined()
        return text.split(separator: "\n").suffix(10).joined(separator: "\n")
    }

    var version: String { shell("'\(binary)' -v 2>&1") }

    private func configuration(port: Int) -> String {
        """
        # Written by framecast-bench serve: the static-file peer of the capability URL.
        daemon off;
        master_process on;
        worker_processes 1;
        pid \(home)/nginx.pid;
        error_log \(home)/error.log warn;
        events {
            worker_connections 1024;
        }
        http {
            access_log off;
            sendfile on;
            tcp_nopush on;
            keepalive_requests 1000000000;
            client_body_temp_path \(home)/client_body;
            proxy_temp_path \(home)/proxy;
            fastcgi_temp_path \(home)/fastcgi;
            uwsgi_temp_path \(home)/uwsgi;
            scgi_temp_path \(home)/scgi;
            types {
                image/jpeg jpg;
                image/webp webp;
            }
            server {
                listen 127.0.0.1:\(port);
                root \(root);
            }
        }

        """
    }

    deinit {
        // A benchmark that failed before stop(): never leave nginx running.
        if let process, process.isRunning { kill(process.processIdentifier, SIGTERM) }
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on now (the kernel's choice; whoever uses it
/// retries if it is taken in between).
func freeLoopbackPort(group: EventLoopGroup) async throws -> Int {
    let channel = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
    let port = channel.localAddress?.port
    try await channel.close().get()
    guard let port else { throw ChildError(description: "the kernel gave no loopback port") }
    return port
}

/// SHA-256 of a file, lower-case hex (coreutils' sha256sum).
func sha256Hex(file path: String) throws -> String {
    let line = shell("sha256sum '\(path)'")
    let digest = line.split(separator: " ").first.map(String.init) ?? ""
    guard digest.count == 64 else { throw ChildError(description: "sha256sum \(path): \(line)") }
    return digest
}

// MARK: Report

struct ServeRun: Codable, Sendable {
    var round: Int
    /// 0, 1, 2: when in its round this endpoint ran.
    var position: Int
    var endpoint: ServeEndpoint
    var loadAverageBefore: String
    var wrk: WrkFigures
}

struct ServeEndpointFigures: Codable, Sendable {
    var endpoint: ServeEndpoint
    /// The path wrk asked for (the capability URL's signature left out).
    var path: String
    var requestsPerSecond: Summary?
    var p50MS: Summary?
    var p99MS: Summary?
    /// Median requests/s ÷ nginx's median requests/s (same run).
    var ratioToNginx: Double?
    /// The same ratio round by round (each against nginx's run of the same round).
    var ratioToNginxPerRound: [Double]
    var non2xx: Int
    var socketErrors: Int
}

struct ServeReport: Codable, Sendable {
    var machine: MachineInfo
    var nginx: String
    var wrk: String
    var wrkArguments: String
    var durationSeconds: Int
    var warmupSeconds: Int
    var rounds: Int
    var photo: String
    var size: String
    var format: String
    /// Bytes per response (every endpoint).
    var bytes: Int
    /// Endpoint → SHA-256 of the body it answered before the timing (all equal).
    var sha256: [String: String]
    /// The capability URL's blob key is the SHA-256 of the bytes it serves.
    var blobKeyIsSHA256: Bool
    var endpoints: [ServeEndpointFigures]
    var runs: [ServeRun]
    /// Non-2xx responses during the timed runs (any makes the benchmark fail).
    var errors: Int
}

struct ServeMetadata: Decodable {
    struct Version: Decodable {
        let size: String
        let format: String
        let bytes: Int64
        let url: String
    }
    let versions: [Version]
}

// MARK: serve

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "A frame's version through its capability URL, nginx serving the same bytes, and the token download, under wrk.")

    @Option(help: "The gateway (default $FRAMECAST_BENCH_GATEWAY or http://127.0.0.1:8080).") var gateway: String?
    @Option(help: "The frame's screen, WxH: the version measured is frame:{W}x{H}.") var screen = "1024x600"
    @Option(help: "The photo to upload (default: the first JPEG of /usr/share/backgrounds/mate/nature).") var photo: String?
    @Option(help: "Seconds per timed wrk run.") var duration = 8
    @Option(help: "wrk connections.") var connections = 64
    @Option(help: "wrk threads.") var threads = 2
    @Option(help: "Rounds; each runs every endpoint once, the order rotated per round.") var rounds = 3
    @Option(help: "Untimed wrk seconds per endpoint before the rounds (0: none).") var warmup = 2
    @Option(help: "The nginx binary (Debian's nginx-light).") var nginx = "/usr/sbin/nginx"
    @Option(help: "The wrk binary (found on PATH unless a path).") var wrk = "wrk"
    @Option(help: "Where the report goes (default results, or .work/smoke with --smoke).") var results: String?
    @Flag(help: "CI smoke mode: one round of 1 s runs, no warm-up; results to .work/smoke.") var smoke = false

    func run() async throws {
        var machine = MachineInfo.capture()
        let env = ProcessInfo.processInfo.environment
        let gatewayURL = gateway ?? env["FRAMECAST_BENCH_GATEWAY"] ?? "http://127.0.0.1:8080"
        guard let url = URLComponents(string: gatewayURL), let host = url.host else { throw ValidationError("bad gateway URL \(gatewayURL)") }
        let port = url.port ?? 80
        let dimensions = screen.split(separator: "x").compactMap { Int($0) }
        guard dimensions.count == 2, dimensions.allSatisfy({ $0 > 0 }) else { throw ValidationError("--screen needs WxH, e.g. 1024x600") }
        let seconds = smoke ? 1 : duration
        let roundCount = smoke ? 1 : rounds
        let warmupSeconds = smoke ? 0 : warmup
        guard seconds > 0, roundCount > 0, warmupSeconds >= 0, threads > 0, connections >= threads else {
            throw ValidationError("--duration and --rounds must be positive, --warmup not negative, --connections ≥ --threads > 0")
        }
        guard FileManager.default.isExecutableFile(atPath: nginx) else {
            throw ValidationError("no nginx at \(nginx) (benchmarks/setup installs nginx-light)")
        }
        guard let photoPath = photo ?? defaultPhoto() else {
            throw ValidationError("no JPEG in /usr/share/backgrounds/mate/nature (run benchmarks/setup) and no --photo")
        }
        let resultsDir = results ?? (smoke ? ".work/smoke" : "results")
        try FileManager.default.createDirectory(atPath: resultsDir, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: ".work/serve", withIntermediateDirectories: true)

        let peer = try NginxPeer(binary: nginx)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let api = HTTPPool(host: host, port: port, connections: 4, group: group)
        let outcome: Result<ServeReport, any Error>
        do {
            outcome = .success(try await measure(api: api, host: host, port: port, width: dimensions[0], height: dimensions[1],
                                                 photo: photoPath, seconds: seconds, rounds: roundCount, warmup: warmupSeconds,
                                                 peer: peer, group: group, machine: machine))
        } catch {
            if !peer.logTail().isEmpty { note("nginx's log (last lines):\n\(peer.logTail())") }
            outcome = .failure(error)
        }
        await peer.stop()
        peer.removeFiles()
        await api.close()
        try? await group.shutdownGracefully()

        var report = try outcome.get()
        machine.loadAverageAtEnd = loadAverage()
        report.machine = machine
        try writeJSON(report, to: "\(resultsDir)/serve.json")
        let markdown = renderServeMarkdown(report)
        try markdown.write(toFile: "\(resultsDir)/serve.md", atomically: true, encoding: .utf8)
        print(markdown)
        if report.errors > 0 { throw ChildError(description: "\(report.errors) non-2xx response(s) during the timed runs") }
        note("report: \(resultsDir)/serve.md")
    }

    func defaultPhoto() -> String? {
        let dir = "/usr/share/backgrounds/mate/nature"
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".jpg") }.sorted()
        return names.first.map { "\(dir)/\($0)" }
    }

    func measure(api: HTTPPool, host: String, port: Int, width: Int, height: Int, photo: String, seconds: Int, rounds: Int,
                 warmup: Int, peer: NginxPeer, group: EventLoopGroup, machine: MachineInfo) async throws -> ServeReport {
        let run = UUID().uuidString.prefix(8).lowercased()
        let size = "frame:\(width)x\(height)"
        note("serve: \(size) of \((photo as NSString).lastPathComponent) (run \(run))")

        // 1. A user, an album, a frame of that screen showing it, the photo uploaded to it.
        let signup = try await api.send(jsonRequest(.POST, "/api/v1/auth/signup", token: nil,
            ["email": "serve-\(run)@example.com", "password": "benchmark password \(run)", "name": "Serve \(run)"]))
        guard signup.status == 201 else { throw ChildError(description: "signup: HTTP \(signup.status) \(String(decoding: signup.bytes, as: UTF8.self))") }
        let userToken = try signup.json(Session.self).token
        let albumReply = try await api.send(jsonRequest(.POST, "/api/v1/albums", token: userToken, ["name": "Serve \(run)"]))
        guard albumReply.status == 201 else { throw ChildError(description: "album: HTTP \(albumReply.status)") }
        let album = try albumReply.json(AlbumCreated.self).album_id
        let frameReply = try await api.send(jsonRequest(.POST, "/api/v1/frames", token: userToken,
            ["name": "serve \(run)", "width": width, "height": height, "orientation": width >= height ? "landscape" : "portrait"]))
        guard frameReply.status == 201 else { throw ChildError(description: "register frame: HTTP \(frameReply.status)") }
        let frame = try frameReply.json(FrameRegistered.self)
        let put = try await api.send(jsonRequest(.PUT, "/api/v1/frames/\(frame.frame_id)/albums", token: userToken, ["album_ids": [album]]))
        guard put.status == 200 else { throw ChildError(description: "subscribe frame: HTTP \(put.status)") }
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: photo)))
        let multipart = multipartBody(file: bytes, fileName: (photo as NSString).lastPathComponent, contentType: "image/jpeg",
                                      metadata: "{\"album_id\": \"\(album)\"}")
        let upload = try await api.send(HTTPRequest(method: .POST, path: "/api/v1/storage/photos/upload",
            headers: [("Authorization", "Bearer \(userToken)"), ("Content-Type", multipart.contentType)], body: multipart.body))
        guard upload.status == 201 || upload.status == 200 else {
            throw ChildError(description: "upload: HTTP \(upload.status) \(String(decoding: upload.bytes, as: UTF8.self))")
        }
        let fileID = try upload.json(Uploaded.self).file_id

        // 2. The frame reads the metadata document until its screen's version is listed.
        let frameAuth = [("Authorization", "Bearer \(frame.frame_token)")]
        let version = try await waitForVersion(api: api, fileID: fileID, size: size, auth: frameAuth)
        guard let capabilityURL = URLComponents(string: version.url), capabilityURL.percentEncodedPath.hasPrefix("/c/") else {
            throw ChildError(description: "the \(size) version's url is not a capability URL (/c/…): \(version.url)")
        }
        let capabilityPath = capabilityURL.percentEncodedPath
        let tokenPath = "/api/v1/files/download/\(fileID)?size=\(size)&format=\(version.format)"
        let fileName = String(capabilityPath.split(separator: "/").last ?? "version.jpg")

        // 3. Every endpoint answers 200 with the same bytes.
        // 503: the gateway has not yet caught up with deletes (just started); it says so briefly.
        var capability = try await api.send(HTTPRequest(path: capabilityPath))
        let catchUp = ContinuousClock.now + .seconds(30)
        while capability.status == 503 && ContinuousClock.now < catchUp {
            try await Task.sleep(for: .milliseconds(200))
            capability = try await api.send(HTTPRequest(path: capabilityPath))
        }
        guard capability.status == 200 else { throw ChildError(description: "capability URL: HTTP \(capability.status) without Authorization") }
        let token = try await api.send(HTTPRequest(path: tokenPath, headers: frameAuth))
        guard token.status == 200 else { throw ChildError(description: "token download: HTTP \(token.status)") }
        let body = capability.bytes
        guard body.count == Int(version.bytes) else {
            throw ChildError(description: "the capability URL answered \(body.count) bytes, the metadata says \(version.bytes)")
        }
        try peer.serve(body, as: fileName)
        try await peer.start(probePath: "/\(fileName)", group: group)
        let nginxPool = HTTPPool(host: "127.0.0.1", port: peer.port, connections: 1, group: group)
        let fromNginx = try await nginxPool.send(HTTPRequest(path: "/\(fileName)"))
        await nginxPool.close()
        guard fromNginx.status == 200 else { throw ChildError(description: "nginx: HTTP \(fromNginx.status)") }
        try Data(token.bytes).write(to: URL(fileURLWithPath: "\(peer.home)/token.body"))
        try Data(fromNginx.bytes).write(to: URL(fileURLWithPath: "\(peer.home)/nginx.body"))
        let capabilityDigest = try sha256Hex(file: "\(peer.root)/\(fileName)")
        let tokenDigest = try sha256Hex(file: "\(peer.home)/token.body")
        let nginxDigest = try sha256Hex(file: "\(peer.home)/nginx.body")
        let digests: [String: String] = [
            ServeEndpoint.capability.rawValue: capabilityDigest, ServeEndpoint.token.rawValue: tokenDigest,
            ServeEndpoint.nginx.rawValue: nginxDigest,
        ]
        guard Set(digests.values).count == 1, token.bytes == body, fromNginx.bytes == body else {
            throw ChildError(description: "the endpoints answered different bytes: \(digests)")
        }
        let digest = capabilityDigest
        let blobKey = fileName.split(separator: ".").first.map(String.init) ?? ""
        note("\(body.count) bytes, SHA-256 \(digest), identical from nginx, the capability URL and the token download")

        // 4. wrk: warm-up, then rounds in rotated order.
        let base = "http://\(host):\(port)"
        let urls: [ServeEndpoint: String] = [
            .nginx: "http://127.0.0.1:\(peer.port)/\(fileName)", .capability: base + capabilityPath, .token: base + tokenPath,
        ]
        let tokenScript = "\(peer.home)/token.lua"
        try """
        -- The frame token comes from the environment, not wrk's command line (visible in ps).
        local token = os.getenv("FRAMECAST_BENCH_TOKEN")
        if token and token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end

        """.write(toFile: tokenScript, atomically: true, encoding: .utf8)
        let wrkOptions = ["-t\(threads)", "-c\(connections)", "--latency", "--timeout", "10s"]
        func runWrk(_ endpoint: ServeEndpoint, seconds: Int, log: String) async throws -> WrkFigures {
            var argv = [wrk] + wrkOptions + ["-d\(seconds)s"]
            var environment: [String: String] = [:]
            if endpoint == .token {
                argv += ["-s", tokenScript]
                environment["FRAMECAST_BENCH_TOKEN"] = frame.frame_token
            }
            argv.append(urls[endpoint] ?? "")
            let result = try await runChild(argv, environment: environment, stdoutPath: log, stderrPath: log + ".err")
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            guard result.status == 0 else {
                let errors = (try? String(contentsOfFile: log + ".err", encoding: .utf8)) ?? ""
                throw ChildError(description: "wrk against \(endpoint.rawValue) exited with status \(result.status): \(errors)\(text)")
            }
            return try WrkFigures.parse(text)
        }
        let endpoints = ServeEndpoint.allCases
        if warmup > 0 {
            for endpoint in endpoints {
                let figures = try await runWrk(endpoint, seconds: warmup, log: ".work/serve/\(run)-warmup-\(endpoint.rawValue).txt")
                note("warm-up \(endpoint.rawValue): \(fmt(figures.requestsPerSecond, 0)) requests/s")
            }
        }
        var runs: [ServeRun] = []
        for round in 0..<rounds {
            for position in endpoints.indices {
                let endpoint = endpoints[(round + position) % endpoints.count]
                let load = loadAverage()
                let figures = try await runWrk(endpoint, seconds: seconds, log: ".work/serve/\(run)-round\(round)-\(endpoint.rawValue).txt")
                note("round \(round + 1)/\(rounds) \(endpoint.rawValue): \(fmt(figures.requestsPerSecond, 0)) requests/s, p50 \(fmt(figures.latencyP50MS, 2)) ms, p99 \(fmt(figures.latencyP99MS, 2)) ms (load \(load))")
                runs.append(ServeRun(round: round, position: position, endpoint: endpoint, loadAverageBefore: load, wrk: figures))
            }
        }

        let paths: [ServeEndpoint: String] = [.nginx: "/\(fileName)", .capability: redacted(capabilityPath), .token: tokenPath]
        let figures = endpoints.map { endpointFigures($0, path: paths[$0] ?? "", runs: runs, rounds: rounds) }
        return ServeReport(
            machine: machine, nginx: peer.version, wrk: shell("'\(wrk)' --version 2>&1 | head -1"),
            wrkArguments: (["wrk"] + wrkOptions + ["-d\(seconds)s"]).joined(separator: " "), durationSeconds: seconds,
            warmupSeconds: warmup, rounds: rounds, photo: photo, size: size, format: version.format, bytes: body.count,
            sha256: digests, blobKeyIsSHA256: blobKey == digest, endpoints: figures, runs: runs,
            errors: runs.reduce(0) { $0 + $1.wrk.non2xx })
    }

    /// Polls the photo's metadata document as the frame (≤ 120 s) until it lists `size`; a JPEG
    /// when there are several formats. If it is not there after 5 s, asks for it once through
    /// the token route (media renders a frame's own screen on request).
    func waitForVersion(api: HTTPPool, fileID: String, size: String, auth: [(String, String)]) async throws -> ServeMetadata.Version {
        let start = ContinuousClock.now
        var asked = false
        var last = ""
        while ContinuousClock.now - start < .seconds(120) {
            let reply = try await api.send(HTTPRequest(path: "/api/v1/photos/\(fileID)", headers: auth))
            if reply.status == 200 {
                let candidates = try reply.json(ServeMetadata.self).versions.filter { $0.size == size }
                if let version = candidates.first(where: { $0.format == "jpeg" }) ?? candidates.first { return version }
                last = "no \(size) version listed"
            } else {
                last = "HTTP \(reply.status)"
            }
            if !asked && ContinuousClock.now - start > .seconds(5) {
                asked = true
                _ = try? await api.send(HTTPRequest(path: "/api/v1/files/download/\(fileID)?size=\(size)", headers: auth))
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw ChildError(description: "the metadata document of \(fileID) lists no \(size) version after 120 s (\(last))")
    }

    /// A capability path without its signature: `/c/{kid}/{expires}/…/{file_id}/{blob}.{ext}`.
    func redacted(_ path: String) -> String {
        var parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if parts.count == 7 { parts[4] = "…" }
        return parts.joined(separator: "/")
    }

    func endpointFigures(_ endpoint: ServeEndpoint, path: String, runs: [ServeRun], rounds: Int) -> ServeEndpointFigures {
        let mine = runs.filter { $0.endpoint == endpoint }
        let nginxRuns = runs.filter { $0.endpoint == .nginx }
        let rate = Summary(mine.map(\.wrk.requestsPerSecond))
        let nginxRate = Summary(nginxRuns.map(\.wrk.requestsPerSecond))
        var perRound: [Double] = []
        for round in 0..<rounds {
            if let a = mine.first(where: { $0.round == round }), let b = nginxRuns.first(where: { $0.round == round }),
               b.wrk.requestsPerSecond > 0 {
                perRound.append(a.wrk.requestsPerSecond / b.wrk.requestsPerSecond)
            }
        }
        return ServeEndpointFigures(
            endpoint: endpoint, path: path, requestsPerSecond: rate, p50MS: Summary(mine.map(\.wrk.latencyP50MS)),
            p99MS: Summary(mine.map(\.wrk.latencyP99MS)),
            ratioToNginx: rate.flatMap { r in nginxRate.map { r.p50 / $0.p50 } }, ratioToNginxPerRound: perRound,
            non2xx: mine.reduce(0) { $0 + $1.wrk.non2xx }, socketErrors: mine.reduce(0) { $0 + $1.wrk.socketErrors.total })
    }
}

func renderServeMarkdown(_ r: ServeReport) -> String {
    var md = "# Serving a frame's version: capability URL vs nginx vs token download\n\n" + r.machine.markdown + "\n"
    md += "| nginx | \(r.nginx) |\n| wrk | \(r.wrk) |\n\n"
    md += "One real photo (`\((r.photo as NSString).lastPathComponent)`) uploaded through the gateway to an album shown by one frame; its `\(r.size)` version (\(r.format), **\(r.bytes) bytes per response**, SHA-256 `\(r.sha256[ServeEndpoint.capability.rawValue] ?? "?")`; blob key = SHA-256 of the bytes: \(r.blobKeyIsSHA256 ? "yes" : "no")) "
    md += "fetched three ways, each checked before timing to answer 200 with byte-identical bodies: the capability URL from the photo's metadata document (no `Authorization`), "
    md += "the token download with the frame's token, and nginx (Debian's nginx-light: 1 worker, `sendfile on`, `access_log off`, no per-connection request limit) serving a copy of the same bytes from a temporary folder. "
    md += "`\(r.wrkArguments)` on loopback, \(r.rounds) round(s), every endpoint once per round, the order rotated each round so load drift hits each alike"
    md += r.warmupSeconds > 0 ? "; an untimed \(r.warmupSeconds) s warm-up per endpoint first. " : ". "
    md += "Ratios compare requests/s of this run only: medians over rounds, and round by round against nginx's run of the same round.\n\n"
    md += "| endpoint | path | requests/s median (min–max) | p50 ms | p99 ms | ÷ nginx (medians) | ÷ nginx, round by round | non-2xx | socket errors |\n"
    md += "|---|---|---:|---:|---:|---:|---|---:|---:|\n"
    for e in r.endpoints {
        let rate = e.requestsPerSecond
        let perRound = e.ratioToNginxPerRound.map { fmt($0, 3) }.joined(separator: ", ")
        md += "| \(e.endpoint.title) | `\(e.path)` | \(fmt(rate?.p50, 0)) (\(fmt(rate?.min, 0))–\(fmt(rate?.max, 0))) | \(fmt(e.p50MS?.p50, 2)) | \(fmt(e.p99MS?.p50, 2)) | \(fmt(e.ratioToNginx, 3))× | \(perRound) | \(e.non2xx) | \(e.socketErrors) |\n"
    }
    md += "\n## Runs\n\n"
    md += "| round | order | endpoint | load average before | requests | requests/s | p50 ms | p75 ms | p90 ms | p99 ms | max ms | non-2xx | socket errors (connect/read/write/timeout) |\n"
    md += "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    for run in r.runs {
        let w = run.wrk, s = run.wrk.socketErrors
        md += "| \(run.round) | \(run.position + 1) | \(run.endpoint.rawValue) | \(run.loadAverageBefore) | \(w.requests) | \(fmt(w.requestsPerSecond, 0)) | \(fmt(w.latencyP50MS, 2)) | \(fmt(w.latencyP75MS, 2)) | \(fmt(w.latencyP90MS, 2)) | \(fmt(w.latencyP99MS, 2)) | \(fmt(w.latencyMaxMS, 2)) | \(w.non2xx) | \(s.connect)/\(s.read)/\(s.write)/\(s.timeout) |\n"
    }
    md += "\n## Targets\n\n| target | measured | met? |\n|---|---|---|\n"
    if let capability = r.endpoints.first(where: { $0.endpoint == .capability }), let ratio = capability.ratioToNginx {
        let perRound = capability.ratioToNginxPerRound.map { fmt($0, 3) }.joined(separator: ", ")
        md += "| capability URL requests/s ÷ nginx, same bytes, same run ≥ 0.5× (aim 0.8×) | \(fmt(ratio, 3))× (rounds: \(perRound)) | \(ratio >= 0.5 ? (ratio >= 0.8 ? "yes (aim met)" : "yes") : "**no**") |\n"
    }
    if let token = r.endpoints.first(where: { $0.endpoint == .token }), let ratio = token.ratioToNginx {
        md += "| token download ÷ nginx (for comparison, no target) | \(fmt(ratio, 3))× | – |\n"
    }
    md += "| every timed response 2xx | \(r.errors) non-2xx | \(r.errors == 0 ? "yes" : "**no**") |\n"
    return md
}
