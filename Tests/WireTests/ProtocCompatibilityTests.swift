import Foundation
import FramecastTesting
import Testing
import Wire

/// Wire compatibility with Debian's protoc, both ways, for every sample of every message:
/// what Swift encodes, protoc decodes to the text python3-protobuf printed for the same values
/// at generation time; and the bytes protoc encodes from that text, Swift decodes to the sample.
@Suite struct ProtocCompatibilityTests {
    static let protoRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("proto")

    static var protoFiles: [String] {
        let dir = protoRoot.appendingPathComponent("framecast/v1")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0.hasSuffix(".proto") }.sorted().map { "framecast/v1/\($0)" }
    }

    /// Runs protoc with stdin from `input` and stdout to `output` (stderr into the result).
    static func protoc(_ mode: String, _ type: String, input: URL, output: URL) throws -> (status: Int32, output: String) {
        func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let args = ["protoc", "--proto_path=\(protoRoot.path)", "--\(mode)=\(type)"] + protoFiles
        let script = "cd \(quote(protoRoot.path)) && " + args.map(quote).joined(separator: " ")
            + " < \(quote(input.path)) > \(quote(output.path))"
        return try Command.run("sh", ["-c", script])
    }

    /// Text without indentation and without empty map-entry fields: protobuf-c writes a map
    /// entry's empty key or value explicitly and protoc then prints `key: ""`, where
    /// python3-protobuf (which made the expected text) leaves it out. Both mean the same.
    static func normalized(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: true)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { $0 != #"key: """# && $0 != #"value: """# }
            .joined(separator: "\n")
    }

    static let samples = WireSamples.all.filter { !$0.name.hasSuffix("/default") }.map(\.name)

    @Test func protoFilesAreFound() {
        #expect(Self.protoFiles.contains("framecast/v1/common.proto"))
        #expect(Self.protoFiles.count >= 4)
    }

    @Test(arguments: samples)
    func swiftEncodingDecodesInProtoc(_ name: String) throws {
        let sample = try #require(WireSamples.all.first { $0.name == name })
        let dir = try TestServers.scratchDirectory("wire-protoc")
        defer { try? FileManager.default.removeItem(at: dir) }
        let bin = dir.appendingPathComponent("in.bin"), text = dir.appendingPathComponent("out.txt")
        try Data(sample.message.wireBytes()).write(to: bin)
        let result = try Self.protoc("decode", sample.protoName, input: bin, output: text)
        #expect(result.status == 0, "protoc --decode=\(sample.protoName): \(result.output)")
        let decoded = try String(contentsOf: text, encoding: .utf8)
        #expect(Self.normalized(decoded) == Self.normalized(sample.text), "\(name): protoc read other values")
    }

    @Test(arguments: samples)
    func protocEncodingDecodesInSwift(_ name: String) throws {
        let sample = try #require(WireSamples.all.first { $0.name == name })
        let dir = try TestServers.scratchDirectory("wire-protoc")
        defer { try? FileManager.default.removeItem(at: dir) }
        let text = dir.appendingPathComponent("in.txt"), bin = dir.appendingPathComponent("out.bin")
        try sample.text.write(to: text, atomically: true, encoding: .utf8)
        let result = try Self.protoc("encode", sample.protoName, input: text, output: bin)
        #expect(result.status == 0, "protoc --encode=\(sample.protoName): \(result.output)")
        let bytes = [UInt8](try Data(contentsOf: bin))
        let decoded = try decode(bytes, like: sample.message)
        #expect(same(decoded, sample.message), "\(name): Swift read other values from protoc's bytes")
    }

    /// The test above would pass vacuously if protoc and the samples agreed on nothing: make
    /// sure a sample's text really names values.
    @Test func samplesTextsAreNotEmpty() throws {
        let sample = try #require(WireSamples.all.first { $0.name == "FileRecord/full" })
        #expect(sample.text.contains("file_id: "))
        #expect(sample.text.contains("metadata {"))
        #expect(sample.text.contains("taken_at {"))
    }
}
