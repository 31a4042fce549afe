// swift-tools-version:6.0
import PackageDescription

// framecast-bench: the benchmark harness (resize hot path, fan-out to thousands of frames).
// Its own package so the root builds and tests without it; depends on the root by path and
// only on packages already in the root's dependency graph.

let package = Package(
    name: "framecast-benchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        // The root package, named explicitly: its identity would otherwise be its folder's name.
        .package(name: "framecast", path: ".."),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
    ],
    targets: [
        .executableTarget(name: "framecast-bench", dependencies: [
            .product(name: "Imaging", package: "framecast"),
            .product(name: "MediaService", package: "framecast"),
            .product(name: "MQTT", package: "framecast"),
            .product(name: "Wire", package: "framecast"),
            .product(name: "Threads", package: "framecast"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ], swiftSettings: [.swiftLanguageMode(.v6)]),
    ]
)
