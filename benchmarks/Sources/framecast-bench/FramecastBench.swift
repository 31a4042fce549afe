import ArgumentParser

/// The Framecast benchmark harness: `framecast-bench resize` (the media resize hot path against
/// its peers), `framecast-bench fanout` (one photo to thousands of MQTT frames),
/// `framecast-bench serve` (a frame's version through its capability URL against nginx serving
/// the same bytes) and `framecast-bench soak` (a running system's memory over many uploads).
/// Results go to benchmarks/results/ as JSON, Markdown and SVG; progress goes to stderr.
@main
struct FramecastBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "framecast-bench",
        abstract: "Framecast benchmarks: resize hot path, fan-out to frames, serving a version.",
        subcommands: [Resize.self, Fanout.self, Serve.self, Soak.self, ResizeOne.self, ResizeQuality.self, FanoutShard.self])
}
