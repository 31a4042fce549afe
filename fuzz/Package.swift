// swift-tools-version:5.4
import PackageDescription

// framecast-fuzz: libFuzzer targets for every decoder of untrusted bytes (scripts/fuzz runs
// them). Its own package, like benchmarks/, so the root builds and tests without it; depends on
// the root by path.
//
// Each target defines `LLVMFuzzerTestOneInput` and no entry point: libFuzzer's `main` runs
// it. Build with
//
//   swift build -c debug -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
//
// Tools version 5.4 on purpose: from 5.5 on, SwiftPM compiles an executable's entry point as
// `<module>_main` and links it with `--defsym main=<module>_main` (for testable executables);
// with no Swift entry point that alias names a missing symbol and the link fails. Below 5.5
// SwiftPM links the executables as they are, and libFuzzer's `main` is the one.

let package = Package(
    name: "framecast-fuzz",
    platforms: [.macOS("14.0")],
    dependencies: [
        // The root package, named explicitly: its identity would otherwise be its folder's name.
        .package(name: "framecast", path: ".."),
    ],
    targets: [
        // Every protobuf message of the wire contract (Wire.WireMessages.all): decode, re-encode.
        .executableTarget(name: "fuzz-wire", dependencies: [
            .product(name: "Wire", package: "framecast"),
        ]),
        // The gateway's streaming multipart/form-data parser (uploads).
        .executableTarget(name: "fuzz-multipart", dependencies: [
            .product(name: "Gateway", package: "framecast"),
        ]),
        // The frame agent's decoding of every MQTT payload (and of the frames' own messages,
        // as the album service decodes them).
        .executableTarget(name: "fuzz-frame-payloads", dependencies: [
            .product(name: "Wire", package: "framecast"),
            .product(name: "FrameAgent", package: "framecast"),
        ]),
        // The resampler behind every version: every SIMD level and the row reader, byte for byte.
        .executableTarget(name: "fuzz-resample", dependencies: [
            .product(name: "CResample", package: "framecast"),
        ]),
    ]
)
