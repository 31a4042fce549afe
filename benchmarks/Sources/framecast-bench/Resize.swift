import ArgumentParser
import Foundation
import Imaging
import Logging
import MediaService
import Wire

// MARK: What is rendered

/// The frame screens of the benchmark: two common photo-frame panels, so the media service's
/// version set is thumbnail + hd + two `frame:{W}x{H}` covers.
let benchScreens = [
    FrameScreen(frameID: "bench-a", width: 1024, height: 600, format: "jpeg"),
    FrameScreen(frameID: "bench-b", width: 1280, height: 800, format: "jpeg"),
]

/// The media service's own version list for those screens.
var benchVersions: [(size: String, spec: VersionSpec)] { MediaService.versionSpecs(screens: benchScreens) }

/// The service's hd spec (from the same list, not restated here).
var hdSpec: VersionSpec { benchVersions.first { $0.size == "hd" }!.spec }

// MARK: Peers

enum Peer: String, CaseIterable, Codable, Sendable {
    case framecast
    case vipsPerVersion = "libvips-per-version"
    case vipsthumbnail
    case magick = "convert-thumbnail"
    case magickHint = "convert-thumbnail-jpeg-size"
    case pillow = "pillow-draft"

    var inProcess: Bool { self == .framecast || self == .vipsPerVersion }

    var label: String {
        switch self {
        case .framecast: "Framecast (MediaService.renderVersions, one decode)"
        case .vipsPerVersion: "libvips in process, one vips_thumbnail per version"
        case .vipsthumbnail: "vipsthumbnail command, once per version"
        case .magick: "ImageMagick convert -thumbnail, once per version"
        case .magickHint: "ImageMagick convert -define jpeg:size=WxH -thumbnail, once per version"
        case .pillow: "Pillow (draft + resize), one python process per photo"
        }
    }
}

/// Environment of every job: one thread of pixel work each, so "1 worker" is one core and
/// "2 workers" two (libvips, ImageMagick/OpenMP; Pillow is single-threaded anyway).
let singleThreadEnvironment = ["VIPS_CONCURRENCY": "1", "MAGICK_THREAD_LIMIT": "1", "OMP_NUM_THREADS": "1"]

/// The commands a subprocess peer runs for one photo (one after the other).
func peerCommands(_ peer: Peer, input: String, outDir: String, script: String) -> [[String]] {
    let versions = benchVersions
    switch peer {
    case .framecast, .vipsPerVersion:
        return []
    case .vipsthumbnail:
        return versions.enumerated().map { i, v in
            var args = ["vipsthumbnail", input, "-s", "\(v.spec.width)x\(v.spec.height)"]
            if v.spec.mode == .cover { args += ["-m", "attention"] }
            return args + ["-o", "\(outDir)/vt-\(i).jpg[Q=82,strip,optimize_coding]"]
        }
    case .magick, .magickHint:
        return versions.enumerated().map { i, v in
            let box = "\(v.spec.width)x\(v.spec.height)"
            var args = ["/usr/bin/convert"]
            if peer == .magickHint { args += ["-define", "jpeg:size=\(box)"] }
            args += [input, "-auto-orient"]
            if v.spec.mode == .cover {
                args += ["-thumbnail", box + "^", "-gravity", "center", "-extent", box]
            } else {
                args += ["-thumbnail", box]
            }
            return args + ["-strip", "-quality", "82", "\(outDir)/im-\(i).jpg"]
        }
    case .pillow:
        let specs = versions.map { "\($0.spec.mode.rawValue):\($0.spec.width)x\($0.spec.height)" }
        return [[pythonPath, script, input, outDir] + specs]
    }
}

/// The Pillow peer: one decode with `draft` (JPEG DCT scaling to the smallest size still at
/// least what the largest version needs), upright by EXIF, then each version resized (LANCZOS;
/// covers centre-cropped) and encoded (quality 82, optimised Huffman tables, like the others).
let pillowScript = #"""
import sys, io
from PIL import Image, ImageOps
try:
    import pillow_heif
    pillow_heif.register_heif_opener()
except ImportError:
    pass

src, out_dir, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
boxes = []
for s in specs:
    mode, size = s.split(":")
    w, h = (int(x) for x in size.split("x"))
    boxes.append((mode, w, h))

im = Image.open(src)
W, H = im.size
orientation = im.getexif().get(0x0112, 1)
if orientation in (5, 6, 7, 8):
    W, H = H, W
need_w = need_h = 1
for mode, w, h in boxes:
    scale = max(w / W, h / H) if mode == "cover" else min(w / W, h / H)
    scale = min(scale, 1.0)
    need_w, need_h = max(need_w, int(W * scale + 0.999)), max(need_h, int(H * scale + 0.999))
if orientation in (5, 6, 7, 8):
    need_w, need_h = need_h, need_w
im.draft("RGB", (need_w, need_h))
im = ImageOps.exif_transpose(im).convert("RGB")
for i, (mode, w, h) in enumerate(boxes):
    if mode == "cover":
        v = ImageOps.fit(im, (w, h), Image.LANCZOS)
    else:
        v = im.copy()
        v.thumbnail((w, h), Image.LANCZOS)
    v.save(f"{out_dir}/pil-{i}.jpg", "JPEG", quality=82, optimize=True)
"""#

// MARK: Corpus

struct CorpusItem: Codable, Sendable {
    var name: String
    var format: String
    var path: String
    var width: Int
    var height: Int
    var bytes: Int
    var source: String
}

/// Real photographs from Debian packages: the plasma wallpapers whose JPEG carries camera EXIF
/// (largest file of each), and every mate-backgrounds nature photo.
func sourcePhotos(limit: Int?) -> [String] {
    var photos: [String] = []
    let fm = FileManager.default
    let wallpapers = (try? fm.contentsOfDirectory(atPath: "/usr/share/wallpapers"))?.sorted() ?? []
    for name in wallpapers {
        let dir = "/usr/share/wallpapers/\(name)/contents/images"
        let jpegs = ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".jpg") }
        let largest = jpegs.max { a, b in fileSize("\(dir)/\(a)") < fileSize("\(dir)/\(b)") }
        guard let largest else { continue }
        let path = "\(dir)/\(largest)"
        let model = shell("vipsheader -f exif-ifd0-Model '\(path)' 2>/dev/null")
        if model != "?" && !model.isEmpty { photos.append(path) }
    }
    let mate = "/usr/share/backgrounds/mate/nature"
    photos += ((try? fm.contentsOfDirectory(atPath: mate)) ?? []).filter { $0.hasSuffix(".jpg") }.sorted().map { "\(mate)/\($0)" }
    if let limit { photos = Array(photos.prefix(limit)) }
    return photos
}

/// The 12-megapixel baseline JPEG: no photograph in those packages has 12 MP (the largest
/// camera photos are 2560×1920), so it is a 4256×2832 (12.05 MP, a 12 MP DSLR's frame) crop
/// of the largest real (not upscaled) JPEG there, the 5120×2880 "SafeLanding" wallpaper,
/// a painted illustration, re-encoded as baseline JPEG quality 90.
let twelveMPSource = "/usr/share/wallpapers/SafeLanding/contents/images/5120x2880.jpg"

func vips(_ args: [String]) async throws {
    let result = try await runChild(["vips"] + args, stderrPath: "/dev/null")
    guard result.status == 0 else { throw ChildError(description: "vips \(args.joined(separator: " ")) failed (\(result.status))") }
}

func buildCorpus(sources: [String], dir: String, with12MP: Bool) async throws -> [CorpusItem] {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var jobs: [(name: String, format: String, source: String, out: String, args: [String])] = []
    for source in sources {
        let base = (source.split(separator: "/").dropLast(source.contains("/wallpapers/") ? 3 : 0).last.map(String.init) ?? "photo")
            .replacingOccurrences(of: ".jpg", with: "")
        let stem = "\(dir)/\(base)"
        jobs.append((base, "jpeg", source, stem + ".jpg", []))
        jobs.append((base, "jpeg-progressive", source, stem + "-progressive.jpg", ["copy", source, stem + "-progressive.jpg[Q=90,interlace]"]))
        jobs.append((base, "png", source, stem + ".png", ["copy", source, stem + ".png[compression=6]"]))
        jobs.append((base, "heic", source, stem + ".heic", ["heifsave", source, stem + ".heic", "--Q", "60"]))
    }
    if with12MP {
        jobs.append(("SafeLanding-crop", "jpeg-12mp", twelveMPSource, "\(dir)/12mp.jpg",
                     ["crop", twelveMPSource, "\(dir)/12mp.jpg[Q=90]", "432", "24", "4256", "2832"]))
    }
    let progress = ProgressLine("corpus", total: jobs.count)
    let items = try await concurrentMap(jobs, width: 2) { job -> CorpusItem in
        // Written under a temporary name and renamed, so a file that exists is complete.
        if !FileManager.default.fileExists(atPath: job.out) {
            let ext = (job.out as NSString).pathExtension
            let temporary = (job.out as NSString).deletingPathExtension + ".partial.\(ext)"
            try? FileManager.default.removeItem(atPath: temporary)
            if job.args.isEmpty {
                try FileManager.default.copyItem(atPath: job.source, toPath: temporary)
            } else {
                try await vips(job.args.map { $0.replacingOccurrences(of: job.out, with: temporary) })
            }
            try FileManager.default.moveItem(atPath: temporary, toPath: job.out)
        }
        let size = shell("vipsheader '\(job.out)' | sed 's/.* \\([0-9]*x[0-9]*\\) .*/\\1/'").split(separator: "x").compactMap { Int($0) }
        let bytes = (try FileManager.default.attributesOfItem(atPath: job.out)[.size] as? Int) ?? 0
        progress.advance(job.out)
        return CorpusItem(name: job.name, format: job.format, path: job.out, width: size.first ?? 0,
                          height: size.count > 1 ? size[1] : 0, bytes: bytes, source: job.source)
    }
    return items
}

/// CPU time (user + system) of this whole process so far, ms.
func processCPUms() -> Double {
    var usage = rusage()
    getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000 + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1000
}

func fileSize(_ path: String) -> Int {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
}

// MARK: resize-one (a child process: one job, so its peak RSS is the job's)

struct OneResult: Codable, Sendable {
    var timesMS: [Double]
    /// CPU time (user + system, whole process) of each timed job; only with one worker.
    var cpuMS: [Double] = []
    var elapsedMS: Double
    var count: Int
    var outputs: [String]
}

struct ResizeOne: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resize-one", abstract: "Internal: render inputs in this process and write timings as JSON.",
        shouldDisplay: false)

    @Option(help: "framecast | libvips-per-version | framecast-hd | vips-per-version-hd | none") var peer: String
    @Option(help: "Renders at once (Imaging pool threads).") var workers = 1
    @Option(help: "Timed passes over the inputs.") var repeats = 1
    @Flag(help: "Render the first input once, untimed, before timing.") var warmup = false
    @Option(help: "Where to write the JSON result.") var result: String
    @Argument var inputs: [String] = []

    func run() async throws {
        var logger = Logger(label: "framecast-bench")
        logger.logLevel = .error
        let imaging = Imaging(threads: workers, logger: logger)
        defer { imaging.shutdown() }
        let peer = self.peer
        let job: @Sendable (String) async throws -> [RenderedImage] = { path in
            switch peer {
            case "framecast":
                return try await MediaService.renderVersions(file: path, screens: benchScreens, imaging: imaging).map(\.image)
            case "libvips-per-version":
                let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
                return try await imaging.renderPerVersion(bytes, versions: benchVersions.map(\.spec))
            case "framecast-hd":
                return try await imaging.renderFile(path, versions: [hdSpec])
            case "vips-per-version-hd":
                let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
                return try await imaging.renderPerVersion(bytes, versions: [hdSpec])
            case "framecast-fit-only":
                // Diagnostics: the service's version code for frames without screens (thumbnail + hd).
                return try await MediaService.renderVersions(file: path, screens: [], imaging: imaging).map(\.image)
            case "vips-per-version-fit-only":
                let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
                return try await imaging.renderPerVersion(bytes, versions: MediaService.versionSpecs(screens: []).map(\.spec))
            case "none":
                return []
            default:
                throw ValidationError("unknown peer \(peer)")
            }
        }
        var outputs: [String] = []
        if warmup, let first = inputs.first { _ = try await job(first) }
        let work = Array(repeating: inputs, count: repeats).flatMap { $0 }
        let start = ContinuousClock.now
        let timed = try await concurrentMap(work, width: workers) { path -> (Double, [RenderedImage], Double) in
            let c0 = processCPUms()
            let t0 = ContinuousClock.now
            let images = try await job(path)
            return ((ContinuousClock.now - t0).ms, images, processCPUms() - c0)
        }
        let elapsed = (ContinuousClock.now - start).ms
        if let first = timed.first {
            outputs = first.1.map { "\($0.width)x\($0.height) \($0.bytes.count) B" }
        }
        try writeJSON(OneResult(timesMS: timed.map { $0.0 }, cpuMS: workers == 1 ? timed.map { $0.2 } : [], elapsedMS: elapsed, count: work.count, outputs: outputs), to: result)
    }
}

// MARK: resize

struct PeerFormatResult: Codable, Sendable {
    var peer: Peer
    var format: String
    var photos: Int
    var msPerPhoto: Summary?
    /// CPU time (user + system) per photo: the job's process(es), or the in-process job's delta.
    var cpuMSPerPhoto: Summary?
    var photosPerSecond1: Double?
    var photosPerSecond2: Double?
    var peakRSSMB: Summary?
    var failures: Int
    var failureNote: String?
}

struct HDTargets: Codable, Sendable {
    var input: String
    var inputSize: String
    var oneCoreMS: Summary?
    var oneCoreCPUMS: Summary?
    var oneCoreMSPerVersionLibvips: Summary?
    var twoCoreJobs: Int
    var twoCoreElapsedMS: Double
    var twoCoreHDPerSecond: Double
    var twoCorePeakRSSMB: Double
    /// The same number of hd renders with one pool thread: hd/s on one core.
    var oneCoreHDPerSecond: Double?
    /// hd/s on two cores ÷ hd/s on one core.
    var twoCoreScaling: Double?
    /// libjpeg-turbo's floor for the same hd of the same file, measured in the same run.
    var floor: JPEGFloor?
    /// hd on one core (median wall ms) ÷ the floor.
    var ratioToFloor: Double?
    /// The same in CPU time.
    var cpuRatioToFloor: Double?
}

/// What libjpeg-turbo alone needs for the hd of a JPEG: `djpeg -scale 1/N` (the DCT scaling
/// Framecast's decode uses) + `cjpeg -quality 82 -optimize` of an hd-sized image. Each the
/// median of its runs (process start included: a millisecond or two); the resize between
/// them is not counted, so the floor is below what any resizer can reach.
struct JPEGFloor: Codable, Sendable {
    var scale: String
    var hdSize: String
    var djpegMS: Summary?
    var djpegCPUMS: Summary?
    var cjpegMS: Summary?
    var cjpegCPUMS: Summary?
    /// djpeg median + cjpeg median.
    var floorMS: Double?
    var floorCPUMS: Double?
    /// Why there is no floor (djpeg/cjpeg missing, a run failed).
    var note: String?
}

struct ResizeReport: Codable, Sendable {
    var machine: MachineInfo
    var versions: [String]
    var corpus: [CorpusItem]
    var results: [PeerFormatResult]
    var hd: HDTargets?
    var processBaselineRSSMB: Double
    var inProcessRepeats: Int
    /// "format peer" → median ms of thumbnail + hd only (diagnostics).
    var fitOnlyMedianMS: [String: Double]
    /// Encoder settings and version PSNR (see ResizeQuality.swift).
    var quality: QualityReport?
}

struct Resize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resize",
        abstract: "The media resize hot path: Framecast's version rendering against libvips, vipsthumbnail, ImageMagick and Pillow.")

    @Flag(help: "CI smoke mode: 2 photos, no 12 MP targets, few repetitions; results go to --results (default .work/smoke).")
    var smoke = false
    @Option(help: "Use at most this many source photos.") var photos: Int?
    @Option(help: "Comma-separated peers (default: all): \(Peer.allCases.map(\.rawValue).joined(separator: ", "))")
    var peers: String?
    @Option(help: "Where the corpus and scratch files go.") var work = ".work"
    @Option(help: "Where the report goes (JSON, Markdown, SVG).") var results: String?
    @Option(help: "Timed renders per photo for in-process peers (their median is the photo's figure).") var inProcessRepeats = 3
    @Option(help: "hd renders of the 12 MP JPEG on one core (its median is the target figure).") var hdRepeats = 20
    @Option(help: "hd renders of the 12 MP JPEG for the 2-core throughput.") var hdJobs = 48

    func run() async throws {
        var machine = MachineInfo.capture()
        let resultsDir = results ?? (smoke ? "\(work)/smoke" : "results")
        let fm = FileManager.default
        try fm.createDirectory(atPath: resultsDir, withIntermediateDirectories: true)
        let outDir = "\(work)/out"
        try fm.createDirectory(atPath: outDir, withIntermediateDirectories: true)
        let script = "\(work)/pillow_versions.py"
        try pillowScript.write(toFile: script, atomically: true, encoding: .utf8)
        let selected: [Peer] = try peers.map { list in
            try list.split(separator: ",").map { name in
                guard let peer = Peer(rawValue: String(name)) else { throw ValidationError("unknown peer \(name)") }
                return peer
            }
        } ?? Peer.allCases
        let me = CommandLine.arguments[0].hasPrefix("/") ? CommandLine.arguments[0]
            : fm.currentDirectoryPath + "/" + CommandLine.arguments[0]

        let sources = sourcePhotos(limit: smoke ? 2 : photos)
        guard !sources.isEmpty else { throw ValidationError("no photos found: run benchmarks/setup (plasma-workspace-wallpapers, mate-backgrounds)") }
        note("\(sources.count) source photos; building the corpus in \(work)/corpus")
        let corpus = try await buildCorpus(sources: sources, dir: "\(work)/corpus", with12MP: !smoke)
        let formats = ["jpeg", "jpeg-progressive", "png", "heic", "jpeg-12mp"].filter { f in corpus.contains { $0.format == f } }

        // Peak RSS of a child that starts Imaging and renders nothing: the process floor.
        let baselineResult = "\(work)/baseline.json"
        let baseline = try await runChild([me, "resize-one", "--peer", "none", "--result", baselineResult],
                                          environment: singleThreadEnvironment, stderrPath: "\(work)/baseline.err")
        let baselineMB = Double(baseline.peakRSS) / 1_048_576

        var rows: [PeerFormatResult] = []
        for peer in selected {
            for format in formats {
                let items = corpus.filter { $0.format == format }
                rows.append(try await measure(peer, items: items, format: format, me: me, outDir: outDir, script: script))
            }
        }

        // Where the time goes: the same code for thumbnail + hd only (no frame covers).
        var breakdown: [String: Double] = [:]
        if !smoke {
            for format in ["jpeg", "png"] {
                let items = corpus.filter { $0.format == format }
                guard !items.isEmpty else { continue }
                for peer in ["framecast-fit-only", "vips-per-version-fit-only"] {
                    let resultPath = "\(work)/breakdown.json"
                    let child = try await runChild([me, "resize-one", "--peer", peer, "--warmup", "--repeats", "\(inProcessRepeats)",
                                                    "--result", resultPath] + items.map(\.path),
                                                   environment: singleThreadEnvironment, stderrPath: "\(work)/breakdown.err")
                    if child.status == 0, let data = fm.contents(atPath: resultPath),
                       let one = try? JSONDecoder().decode(OneResult.self, from: data) {
                        breakdown["\(format) \(peer)"] = Summary(one.timesMS)?.p50
                    }
                }
            }
        }

        var hd: HDTargets?
        if !smoke, let twelve = corpus.first(where: { $0.format == "jpeg-12mp" }) {
            hd = try await hdTargets(twelve, me: me)
        }

        // Encoder settings on the 12 MP hd (or the first photo in smoke mode), and every
        // version of the JPEG photos against the same version made alone.
        var quality: QualityReport?
        let jpegs = corpus.filter { $0.format == "jpeg" }
        if let settingsInput = corpus.first(where: { $0.format == "jpeg-12mp" }) ?? jpegs.first {
            let progress = ProgressLine("encode settings and PSNR", total: 1)
            let resultPath = "\(work)/quality.json"
            let child = try await runChild([me, "resize-quality", "--settings-input", settingsInput.path,
                                            "--repeats", "\(smoke ? 1 : 5)", "--result", resultPath] + jpegs.map(\.path),
                                           environment: singleThreadEnvironment, stderrPath: "\(work)/quality.err")
            if child.status == 0, let data = fm.contents(atPath: resultPath) {
                quality = try? JSONDecoder().decode(QualityReport.self, from: data)
            } else {
                note("encode settings and PSNR failed: \(firstLine("\(work)/quality.err") ?? "?")")
            }
            progress.advance()
        }
        machine.loadAverageAtEnd = loadAverage()
        let report = ResizeReport(
            machine: machine, versions: benchVersions.map { "\($0.size) (\($0.spec.mode.rawValue) \($0.spec.width)x\($0.spec.height))" },
            corpus: corpus, results: rows, hd: hd, processBaselineRSSMB: baselineMB, inProcessRepeats: inProcessRepeats,
            fitOnlyMedianMS: breakdown, quality: quality)
        try writeJSON(report, to: "\(resultsDir)/resize.json")
        let markdown = renderResizeMarkdown(report)
        try markdown.write(toFile: "\(resultsDir)/resize.md", atomically: true, encoding: .utf8)
        try resizeChart(report).write(toFile: "\(resultsDir)/resize.svg", atomically: true, encoding: .utf8)
        print(markdown)
        let failures = rows.filter { $0.peer == .framecast }.reduce(0) { $0 + $1.failures }
        if failures > 0 { throw ChildError(description: "Framecast failed on \(failures) photo(s)") }
        note("report: \(resultsDir)/resize.md")
    }

    /// One peer on one format: per-photo latency (1 worker, each job its own process, so
    /// its peak RSS is the job's), then photos per second with 1 and 2 workers.
    func measure(_ peer: Peer, items: [CorpusItem], format: String, me: String, outDir: String,
                 script: String) async throws -> PeerFormatResult {
        let progress = ProgressLine("\(peer.rawValue) \(format)", total: items.count + (peer.inProcess ? 2 : items.count + 1))
        var times: [Double] = [], cpu: [Double] = [], rss: [Double] = [], failures = 0, failureNote: String?
        let scratch = "\(outDir)/\(peer.rawValue)"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        // Latency and peak RSS, one job at a time.
        for item in items {
            if peer.inProcess {
                let resultPath = "\(scratch)/one.json"
                let child = try await runChild([me, "resize-one", "--peer", peer.rawValue, "--warmup", "--repeats", "\(inProcessRepeats)",
                                                "--result", resultPath, item.path],
                                               environment: singleThreadEnvironment, stderrPath: "\(scratch)/one.err")
                if child.status == 0, let data = FileManager.default.contents(atPath: resultPath),
                   let one = try? JSONDecoder().decode(OneResult.self, from: data), let t = Summary(one.timesMS)?.p50 {
                    times.append(t)
                    if let c = Summary(one.cpuMS)?.p50 { cpu.append(c) }
                    rss.append(Double(child.peakRSS) / 1_048_576)
                } else {
                    failures += 1
                    failureNote = failureNote ?? firstLine("\(scratch)/one.err")
                }
            } else {
                var total = Duration.zero, peak = 0, ok = true, cpuTotal = 0.0
                for command in peerCommands(peer, input: item.path, outDir: scratch, script: script) {
                    let child = try await runChild(command, environment: singleThreadEnvironment, stderrPath: "\(scratch)/cmd.err")
                    total += child.wall
                    cpuTotal += (child.userCPU + child.systemCPU) * 1000
                    peak = max(peak, child.peakRSS)
                    if child.status != 0 { ok = false; break }
                }
                if ok {
                    times.append(total.ms)
                    cpu.append(cpuTotal)
                    rss.append(Double(peak) / 1_048_576)
                } else {
                    failures += 1
                    failureNote = failureNote ?? firstLine("\(scratch)/cmd.err")
                }
            }
            progress.advance()
        }
        // Throughput: in-process peers render the whole format in one process with a pool of
        // 1 or 2 threads (as the service does); subprocess peers run 1 or 2 jobs at a time.
        var perSecond: [Int: Double] = [:]
        let ok = items.count > 0 && failures == 0
        for workers in [1, 2] where ok && !smoke {
            if peer.inProcess {
                let resultPath = "\(scratch)/many.json"
                let child = try await runChild([me, "resize-one", "--peer", peer.rawValue, "--warmup", "--workers", "\(workers)",
                                                "--result", resultPath] + items.map(\.path),
                                               environment: singleThreadEnvironment, stderrPath: "\(scratch)/many.err")
                if child.status == 0, let data = FileManager.default.contents(atPath: resultPath),
                   let many = try? JSONDecoder().decode(OneResult.self, from: data), many.elapsedMS > 0 {
                    perSecond[workers] = Double(many.count) / (many.elapsedMS / 1000)
                }
                progress.advance()
            } else if workers == 1 {
                progress.advance()
                // Sequential jobs: the latency pass above is exactly that.
                perSecond[1] = Double(times.count) / (times.reduce(0, +) / 1000)
            } else {
                let start = ContinuousClock.now
                let commands = items.map { item in peerCommands(peer, input: item.path, outDir: "\(scratch)/w\(item.name)", script: script) }
                for item in items { try FileManager.default.createDirectory(atPath: "\(scratch)/w\(item.name)", withIntermediateDirectories: true) }
                _ = try await concurrentMap(commands, width: workers) { list -> Bool in
                    for command in list {
                        let child = try await runChild(command, environment: singleThreadEnvironment)
                        if child.status != 0 { return false }
                    }
                    progress.advance()
                    return true
                }
                perSecond[2] = Double(items.count) / ((ContinuousClock.now - start).ms / 1000)
            }
        }
        if !ok || smoke { for _ in 0..<(peer.inProcess ? 2 : items.count + 1) { progress.advance("skipped") } }
        return PeerFormatResult(peer: peer, format: format, photos: items.count, msPerPhoto: Summary(times), cpuMSPerPhoto: Summary(cpu),
                                photosPerSecond1: perSecond[1], photosPerSecond2: perSecond[2], peakRSSMB: Summary(rss),
                                failures: failures, failureNote: failureNote)
    }

    /// The hd targets on the 12 MP JPEG: one core (VIPS_CONCURRENCY=1, one pool thread, warm
    /// process) and two (two pool threads, each single-threaded libvips), the same number of
    /// renders on one and on two pool threads (hd/s scaling), and libjpeg-turbo's floor.
    func hdTargets(_ item: CorpusItem, me: String) async throws -> HDTargets {
        let progress = ProgressLine("hd targets (12 MP)", total: 4)
        func one(_ peer: String, workers: Int, repeats: Int) async throws -> (OneResult, ChildResult) {
            let resultPath = "\(work)/hd-\(peer)-\(workers).json"
            let child = try await runChild([me, "resize-one", "--peer", peer, "--warmup", "--workers", "\(workers)",
                                            "--repeats", "\(repeats)", "--result", resultPath, item.path],
                                           environment: singleThreadEnvironment, stderrPath: "\(work)/hd.err")
            guard child.status == 0, let data = FileManager.default.contents(atPath: resultPath) else {
                throw ChildError(description: "hd run failed: \(firstLine("\(work)/hd.err") ?? "?")")
            }
            progress.advance()
            return (try JSONDecoder().decode(OneResult.self, from: data), child)
        }
        let (single, _) = try await one("framecast-hd", workers: 1, repeats: hdRepeats)
        let (perVersion, _) = try await one("vips-per-version-hd", workers: 1, repeats: hdRepeats)
        let (double, child) = try await one("framecast-hd", workers: 2, repeats: hdJobs)
        let (serial, _) = try await one("framecast-hd", workers: 1, repeats: hdJobs)
        let twoCore = Double(double.count) / (double.elapsedMS / 1000)
        let oneCore = serial.elapsedMS > 0 ? Double(serial.count) / (serial.elapsedMS / 1000) : nil
        let turbo = try await jpegFloor(item)
        let oneCoreMS = Summary(single.timesMS), oneCoreCPUMS = Summary(single.cpuMS)
        return HDTargets(input: item.path, inputSize: "\(item.width)x\(item.height)", oneCoreMS: oneCoreMS,
                         oneCoreCPUMS: oneCoreCPUMS,
                         oneCoreMSPerVersionLibvips: Summary(perVersion.timesMS), twoCoreJobs: double.count,
                         twoCoreElapsedMS: double.elapsedMS, twoCoreHDPerSecond: twoCore,
                         twoCorePeakRSSMB: Double(child.peakRSS) / 1_048_576,
                         oneCoreHDPerSecond: oneCore, twoCoreScaling: oneCore.map { twoCore / $0 },
                         floor: turbo, ratioToFloor: oneCoreMS.flatMap { ms in turbo.floorMS.map { ms.p50 / $0 } },
                         cpuRatioToFloor: oneCoreCPUMS.flatMap { ms in turbo.floorCPUMS.map { ms.p50 / $0 } })
    }

    /// libjpeg-turbo's floor for the hd of `item` (see ``JPEGFloor``), `hdRepeats` runs of each
    /// tool after one untimed run, single-threaded like every job here.
    func jpegFloor(_ item: CorpusItem) async throws -> JPEGFloor {
        let progress = ProgressLine("libjpeg-turbo floor (12 MP)", total: 2)
        // The hd size and the DCT scale Framecast's decode uses: the smallest 1/N (N = 8, 4, 2)
        // that still holds hd (Imaging's Geometry.jpegShrink).
        let box = hdSpec
        let hd: (width: Int, height: Int) = box.width * item.height <= box.height * item.width
            ? (box.width, (2 * item.height * box.width + item.width) / (2 * item.width))
            : ((2 * item.width * box.height + item.height) / (2 * item.height), box.height)
        let shrink = [8, 4, 2].first { item.width / $0 >= hd.width && item.height / $0 >= hd.height } ?? 1
        var result = JPEGFloor(scale: "1/\(shrink)", hdSize: "\(hd.width)x\(hd.height)")
        guard shell("command -v djpeg").hasPrefix("/"), shell("command -v cjpeg").hasPrefix("/") else {
            result.note = "djpeg/cjpeg not found (benchmarks/setup installs libjpeg-turbo-progs)"
            return result
        }
        // An hd-sized image for cjpeg, made once, untimed.
        let ppm = "\(work)/floor-hd.ppm"
        try await vips(["thumbnail", item.path, ppm, "\(hd.width)", "--height", "\(hd.height)", "--size", "force"])
        func runs(_ command: [String]) async throws -> (wall: [Double], cpu: [Double])? {
            var wall: [Double] = [], cpu: [Double] = []
            for attempt in 0...hdRepeats {
                let child = try await runChild(command, environment: singleThreadEnvironment, stderrPath: "\(work)/floor.err")
                guard child.status == 0 else { return nil }
                if attempt > 0 {  // the first run warms the page cache
                    wall.append(child.wall.ms)
                    cpu.append((child.userCPU + child.systemCPU) * 1000)
                }
            }
            progress.advance()
            return (wall, cpu)
        }
        guard let djpeg = try await runs(["djpeg", "-scale", "1/\(shrink)", "-outfile", "/dev/null", item.path]),
              let cjpeg = try await runs(["cjpeg", "-quality", "82", "-optimize", "-outfile", "/dev/null", ppm]) else {
            result.note = "a djpeg/cjpeg run failed: \(firstLine("\(work)/floor.err") ?? "?")"
            return result
        }
        result.djpegMS = Summary(djpeg.wall)
        result.djpegCPUMS = Summary(djpeg.cpu)
        result.cjpegMS = Summary(cjpeg.wall)
        result.cjpegCPUMS = Summary(cjpeg.cpu)
        if let d = result.djpegMS?.p50, let c = result.cjpegMS?.p50 { result.floorMS = d + c }
        if let d = result.djpegCPUMS?.p50, let c = result.cjpegCPUMS?.p50 { result.floorCPUMS = d + c }
        return result
    }
}

func firstLine(_ path: String) -> String? {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
    return text.split(separator: "\n").first { !$0.contains("WARNING") }.map { String($0.prefix(200)) }
}

// MARK: Report

func renderResizeMarkdown(_ r: ResizeReport) -> String {
    var md = "# Resize hot path: Framecast vs peers\n\n"
    md += r.machine.markdown + "\n\n"
    md += "Versions per photo (the media service's own list for two frame screens): \(r.versions.joined(separator: ", ")).\n\n"
    md += "Every job runs single-threaded (`VIPS_CONCURRENCY=1`, `MAGICK_THREAD_LIMIT=1`, `OMP_NUM_THREADS=1`), so 1 worker = 1 core, 2 workers = 2 cores.\n"
    md += "In-process peers (Framecast, libvips per version): median of \(r.inProcessRepeats) timed runs of one photo inside its own child process after one untimed warm-up of the same photo (a warm service); peak RSS is that child's `ru_maxrss` (process floor with libvips started and nothing rendered: \(fmt(r.processBaselineRSSMB)) MB). "
    md += "Subprocess peers: wall time of their processes (start-up included, as a service shelling out pays it); peak RSS is the largest child's `ru_maxrss`. "
    md += "Photos/s with 1 worker: in-process = one process rendering the format's photos with one pool thread; subprocess = the sequential latency pass. With 2 workers: two pool threads / two jobs at a time.\n"
    md += "Ratio = the peer's median ÷ Framecast's median on the same photos (above 1: slower than Framecast).\n\n"

    var corpusByFormat: [String: [CorpusItem]] = [:]
    for item in r.corpus { corpusByFormat[item.format, default: []].append(item) }
    let formats = ["jpeg", "jpeg-progressive", "png", "heic", "jpeg-12mp"].filter { corpusByFormat[$0] != nil }
    for format in formats {
        let items = corpusByFormat[format]!
        let mp = items.map { Double($0.width * $0.height) / 1e6 }
        md += "## \(format) — \(items.count) photo(s), \(fmt(mp.min(), 1))–\(fmt(mp.max(), 1)) MP\n\n"
        md += "| peer | median ms | p95 ms | CPU ms median | photos/s 1 worker | photos/s 2 workers | peak RSS median MB | peak RSS max MB | ratio to Framecast (median ms) | ratio (CPU ms) |\n"
        md += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        let base = r.results.first { $0.peer == .framecast && $0.format == format }?.msPerPhoto?.p50
        let baseCPU = r.results.first { $0.peer == .framecast && $0.format == format }?.cpuMSPerPhoto?.p50
        for row in r.results where row.format == format {
            let ratio = (row.msPerPhoto?.p50).flatMap { v in base.map { v / $0 } }
            var name = row.peer.label
            if row.failures > 0 { name += " (\(row.failures) failed: \(row.failureNote ?? "?"))" }
            let cpuRatio = (row.cpuMSPerPhoto?.p50).flatMap { v in baseCPU.map { v / $0 } }
            md += "| \(name) | \(fmt(row.msPerPhoto?.p50)) | \(fmt(row.msPerPhoto?.p95)) | \(fmt(row.cpuMSPerPhoto?.p50)) | \(fmt(row.photosPerSecond1, 2)) | \(fmt(row.photosPerSecond2, 2)) | \(fmt(row.peakRSSMB?.p50)) | \(fmt(row.peakRSSMB?.max)) | \(row.peer == .framecast ? "1.00" : fmt(ratio, 2)) | \(row.peer == .framecast ? "1.00" : fmt(cpuRatio, 2)) |\n"
        }
        md += "\n"
    }

    md += "## Targets\n\n| target | measured | met? |\n|---|---|---|\n"
    for format in formats {
        let fc = r.results.first { $0.peer == .framecast && $0.format == format }?.msPerPhoto?.p50
        let pv = r.results.first { $0.peer == .vipsPerVersion && $0.format == format }?.msPerPhoto?.p50
        if let fc, let pv {
            let ratio = fc / pv
            let fcCPU = r.results.first { $0.peer == .framecast && $0.format == format }?.cpuMSPerPhoto?.p50
            let pvCPU = r.results.first { $0.peer == .vipsPerVersion && $0.format == format }?.cpuMSPerPhoto?.p50
            let cpuRatio = fcCPU.flatMap { f in pvCPU.map { f / $0 } }
            md += "| full version set ≤ 0.5× per-version libvips (\(format), medians) | \(fmt(fc)) ms vs \(fmt(pv)) ms = \(fmt(ratio, 2))× (CPU: \(fmt(fcCPU)) vs \(fmt(pvCPU)) ms = \(fmt(cpuRatio, 2))×) | \(ratio <= 0.5 ? "yes" : "**no**") |\n"
        }
    }
    if let hd = r.hd {
        let p50 = hd.oneCoreMS?.p50
        md += "| 12 MP baseline JPEG → hd ≤ 80 ms on one core (median of \(hd.oneCoreMS?.count ?? 0); \(hd.inputSize)) | \(fmt(p50)) ms wall (p95 \(fmt(hd.oneCoreMS?.p95)), min \(fmt(hd.oneCoreMS?.min))); CPU \(fmt(hd.oneCoreCPUMS?.p50)) ms median, \(fmt(hd.oneCoreCPUMS?.min)) min; one vips_thumbnail: \(fmt(hd.oneCoreMSPerVersionLibvips?.p50)) ms wall | \((p50 ?? .infinity) <= 80 ? "yes" : "**no**") |\n"
        md += "| ≥ 24 hd/s on 2 cores (\(hd.twoCoreJobs) renders, 2 pool threads) | \(fmt(hd.twoCoreHDPerSecond, 1)) hd/s (\(fmt(hd.twoCoreElapsedMS, 0)) ms) | \(hd.twoCoreHDPerSecond >= 24 ? "yes" : "**no**") |\n"
        var floorText = "not measured"
        if let f = hd.floor {
            floorText = f.note ?? "\(fmt(f.floorMS)) ms (`djpeg -scale \(f.scale)` \(fmt(f.djpegMS?.p50)) + `cjpeg` \(fmt(f.cjpegMS?.p50)))"
        }
        md += "| 12 MP → hd ÷ libjpeg-turbo floor ≤ 1.25× (same file, same run) | \(fmt(p50)) ms ÷ \(floorText) = \(fmt(hd.ratioToFloor, 2))× (CPU \(fmt(hd.cpuRatioToFloor, 2))×) | \((hd.ratioToFloor ?? .infinity) <= 1.25 ? "yes" : "**no**") |\n"
        md += "| hd/s on two cores ÷ hd/s on one core ≥ 1.8 (\(hd.twoCoreJobs) renders each) | \(fmt(hd.twoCoreHDPerSecond, 1)) ÷ \(fmt(hd.oneCoreHDPerSecond, 1)) = \(fmt(hd.twoCoreScaling, 2)) | \((hd.twoCoreScaling ?? 0) >= 1.8 ? "yes" : "**no**") |\n"
    }
    let jpegRSS = r.results.first { $0.peer == .framecast && $0.format == "jpeg" }?.peakRSSMB?.max
    let jpegAbove = jpegRSS.map { $0 - r.processBaselineRSSMB }
    md += "| JPEG job peak RSS above the process floor ≤ 48 MB (largest over the JPEG photos) | \(fmt(jpegRSS)) − \(fmt(r.processBaselineRSSMB)) = \(fmt(jpegAbove)) MB | \((jpegAbove ?? .infinity) <= 48 ? "yes" : "**no**") |\n"
    let fcRows = r.results.filter { $0.peer == .framecast }
    let fcRSS = fcRows.compactMap { $0.peakRSSMB?.max }.max()
    let worst = fcRows.max { ($0.peakRSSMB?.max ?? 0) < ($1.peakRSSMB?.max ?? 0) }?.format ?? "?"
    md += "| ≤ 64 MB peak per job (Framecast, whole child process, largest over every photo: \(worst)) | \(fmt(fcRSS)) MB | \((fcRSS ?? .infinity) <= 64 ? "yes" : "**no**") |\n"
    md += "| ≤ 64 MB peak per job, counting only what the job adds to the process floor (\(fmt(r.processBaselineRSSMB)) MB: Swift runtime, Foundation, libvips and its loaders started, nothing rendered) | \(fmt(fcRSS.map { $0 - r.processBaselineRSSMB })) MB | \((fcRSS.map { $0 - r.processBaselineRSSMB } ?? .infinity) <= 64 ? "yes" : "**no**") |\n\n"

    if !r.fitOnlyMedianMS.isEmpty {
        md += "## Where the time goes\n\nMedian ms per photo (all runs of all photos of the format, one core) of the same in-process code with and without the two frame covers:\n\n"
        md += "| format | Framecast, 4 versions | Framecast, thumbnail + hd only | libvips per version, 4 versions | libvips per version, thumbnail + hd only |\n|---|---:|---:|---:|---:|\n"
        for format in ["jpeg", "png"] {
            let full = r.results.first { $0.peer == .framecast && $0.format == format }?.msPerPhoto?.p50
            let fullPV = r.results.first { $0.peer == .vipsPerVersion && $0.format == format }?.msPerPhoto?.p50
            md += "| \(format) | \(fmt(full)) | \(fmt(r.fitOnlyMedianMS["\(format) framecast-fit-only"])) | \(fmt(fullPV)) | \(fmt(r.fitOnlyMedianMS["\(format) vips-per-version-fit-only"])) |\n"
        }
        md += "\n"
    }
    if let hd = r.hd, let f = hd.floor {
        md += "## libjpeg-turbo floor (12 MP → hd)\n\n"
        md += "What libjpeg-turbo alone needs for the same hd of the same file in the same run: `djpeg -scale \(f.scale)` (the DCT scaling Framecast decodes with) plus `cjpeg -quality 82 -optimize` of an hd-sized (\(f.hdSize)) image; medians of \(f.djpegMS?.count ?? 0) runs each after one untimed run, process start included. The resize between them is not counted.\n\n"
        if let why = f.note { md += "No floor: \(why).\n\n" }
        md += "| step | median ms | CPU ms median |\n|---|---:|---:|\n"
        md += "| `djpeg -scale \(f.scale)` | \(fmt(f.djpegMS?.p50)) | \(fmt(f.djpegCPUMS?.p50)) |\n"
        md += "| `cjpeg -quality 82 -optimize` (\(f.hdSize)) | \(fmt(f.cjpegMS?.p50)) | \(fmt(f.cjpegCPUMS?.p50)) |\n"
        md += "| floor | \(fmt(f.floorMS)) | \(fmt(f.floorCPUMS)) |\n"
        md += "| Framecast hd, one core | \(fmt(hd.oneCoreMS?.p50)) | \(fmt(hd.oneCoreCPUMS?.p50)) |\n"
        md += "| ratio | \(fmt(hd.ratioToFloor, 2))× | \(fmt(hd.cpuRatioToFloor, 2))× |\n\n"
    }
    if let q = r.quality {
        md += "## Encode settings\n\n"
        md += "Each setting renders one version of \(q.settingsInput) on one core (decode, resize and this encoder; median of its runs after a warm-up), so the differences between rows are the encoder's. PSNR is against the same version encoded near-losslessly (JPEG Q100, 4:4:4). The default row is what the service uses.\n\n"
        md += "| setting | version | median ms | Δ ms vs default | bytes | Δ bytes vs default | PSNR dB |\n|---|---|---:|---:|---:|---:|---:|\n"
        for row in q.settings {
            let base = q.settings.first { $0.isDefault && $0.version == row.version }
            let dms = (row.msPerRender?.p50).flatMap { v in (base?.msPerRender?.p50).map { v - $0 } }
            let dbytes: String = base.map { b in row.bytes >= b.bytes ? "+\(row.bytes - b.bytes)" : "\(row.bytes - b.bytes)" } ?? "–"
            let name = row.isDefault ? row.setting + " (default)" : row.setting
            md += "| \(name) | \(row.version) | \(fmt(row.msPerRender?.p50)) | \(fmt(dms)) | \(row.bytes) | \(dbytes) | \(fmt(row.psnrDB, 2)) |\n"
        }
        md += "\n## Versions against the same version made alone\n\n"
        md += "PSNR (dB, min and median over the JPEG photos) of each version of the service's set, made from hd or the base in memory, against the same version rendered on its own from its own decode (how each `.fit` version was made before; a cover alone is placed on the same small attention copy, so its placement against a search on the full picture is checked by the crop tests in Tests/ImagingTests/DerivedVersionsTests.swift), and against libvips' own `vips_thumbnail` of that version (a cover there is resized before its crop, so it differs more).\n\n"
        md += "| version | against | photos | PSNR min | PSNR median |\n|---|---|---:|---:|---:|\n"
        for row in q.versions {
            md += "| \(row.version) | \(row.against) | \(row.photos) | \(fmt(row.psnrDB?.min, 2)) | \(fmt(row.psnrDB?.p50, 2)) |\n"
        }
        md += "\n"
    }
    md += "## Corpus\n\n| photo | format | size | bytes | source |\n|---|---|---|---:|---|\n"
    for item in r.corpus { md += "| \(item.name) | \(item.format) | \(item.width)x\(item.height) | \(item.bytes) | \(item.source) |\n" }
    md += "\nThe 12 MP input: no photograph in plasma-workspace-wallpapers or mate-backgrounds has 12 MP (the largest camera photos are 2560×1920); it is a 4256×2832 crop (no upscaling) of the 5120×2880 SafeLanding wallpaper, a painted illustration, saved as baseline JPEG Q90.\n"
    return md
}

func resizeChart(_ r: ResizeReport) -> String {
    let formats = ["jpeg", "jpeg-progressive", "png", "heic", "jpeg-12mp"].filter { f in r.results.contains { $0.format == f } }
    let peers = Peer.allCases.filter { p in r.results.contains { $0.peer == p } }
    let series = peers.map { peer in
        (name: peer.label, values: formats.map { f in r.results.first { $0.peer == peer && $0.format == f }?.msPerPhoto?.p50 })
    }
    return BarChart(title: "Median ms per photo (thumbnail + hd + 2 frame versions), 1 core", unit: "ms per photo",
                    categories: formats, series: series, reference: nil).svg()
}
