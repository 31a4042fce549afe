import ArgumentParser

/// The Framecast benchmark harness: `framecast-bench resize` (the media resize hot path against
/// its peers) and `framecast-bench fanout` (one photo to thousands of MQTT frames). Results go
/// to benchmarks/results/ as JSON, Markdown and SVG; progress goes to stderr.
@main
struct FramecastBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "framecast-bench",
        abstract: "Framecast benchmarks: resize hot path and fan-out to frames.",
        subcommands: [Resize.self, Fanout.self, ResizeOne.self, FanoutShard.self])
}
