import Testing
import Wire

/// A small deterministic generator (SplitMix64), so a failure can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Decoders fed garbage return a value or throw WireError, never crash; what they return
/// re-encodes stably.
@Suite struct MalformedInputTests {
    /// Decodes `bytes` as `type`: true when it decoded, false when it threw a WireError
    /// (anything else fails the test). A decoded value must survive another round trip.
    @discardableResult
    static func probe(_ type: any WireMessage.Type, _ bytes: [UInt8]) -> Bool {
        do {
            let value = try type.init(wireBytes: bytes)
            let once = value.wireBytes()
            let again = try type.init(wireBytes: once).wireBytes()
            #expect(again == once, "\(type) re-encodes unstably from \(bytes)")
            return true
        } catch let error as WireError {
            #expect(error.code == .malformed)
            #expect(error.messageType == WireMessages.protoName(of: type))
            #expect(error.message.contains(error.messageType))
            return false
        } catch {
            Issue.record("\(type) threw \(error), not a WireError")
            return false
        }
    }

    @Test(arguments: WireMessages.all.map { WireMessages.protoName(of: $0) })
    func randomBytes(_ protoName: String) throws {
        let type = try #require(WireMessages.all.first { WireMessages.protoName(of: $0) == protoName })
        var rng = SplitMix64(state: protoName.utf8.reduce(0x5EED) { $0 &* 31 &+ UInt64($1) })
        var decoded = 0, rejected = 0
        for _ in 0..<2_000 {
            let count = Int.random(in: 0...48, using: &rng)
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if Self.probe(type, bytes) { decoded += 1 } else { rejected += 1 }
        }
        // Random bytes are mostly not valid protobuf: the decoder must notice.
        #expect(rejected > 0)
    }

    @Test(arguments: WireSamples.all.filter { $0.name.hasSuffix("/full") }.map(\.name))
    func truncationsAndBitFlips(_ name: String) throws {
        let sample = try #require(WireSamples.all.first { $0.name == name })
        let type = type(of: sample.message)
        let bytes = sample.message.wireBytes()
        var rejected = 0
        for length in 0..<bytes.count where !Self.probe(type, Array(bytes[..<length])) { rejected += 1 }
        // Cutting a length-delimited field short must be noticed at least once.
        if bytes.count > 2 { #expect(rejected > 0, "\(name): no truncation was rejected") }
        var rng = SplitMix64(state: UInt64(bytes.count))
        for _ in 0..<min(2_000, bytes.count * 8) {
            var flipped = bytes
            let i = Int.random(in: 0..<flipped.count, using: &rng)
            flipped[i] ^= UInt8(1) << UInt8.random(in: 0...7, using: &rng)
            Self.probe(type, flipped)
        }
    }

    @Test func garbageNamesTheMessageType() {
        #expect {
            try FileRecord(wireBytes: [0xFF, 0xFF, 0xFF])
        } throws: { error in
            guard let error = error as? WireError else { return false }
            return error.code == .malformed && error.messageType == "framecast.v1.FileRecord"
                && error.message.contains("framecast.v1.FileRecord")
        }
        // A string field whose length runs past the end.
        #expect(throws: WireError.self) { try Reply(wireBytes: [0x12, 0x05, 0x61]) }
    }

    @Test func emptyInputIsTheDefaultMessage() throws {
        for type in WireMessages.all {
            let value = try type.init(wireBytes: [UInt8]())
            #expect(value.wireBytes().isEmpty, "\(type)")
        }
    }
}
