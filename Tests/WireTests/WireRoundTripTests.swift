import Testing
import Wire

/// `a == b` for two existential messages of possibly different types.
func same(_ a: any WireMessage, _ b: any WireMessage) -> Bool {
    func open<T: WireMessage>(_ a: T) -> Bool { (b as? T) == a }
    return open(a)
}

/// Decodes `bytes` as the dynamic type of `like`.
func decode(_ bytes: [UInt8], like sample: any WireMessage) throws -> any WireMessage {
    try type(of: sample).init(wireBytes: bytes)
}

@Suite struct WireRoundTripTests {
    @Test func everyMessageTypeHasAFullSample() {
        let sampled = Set(WireSamples.all.filter { $0.name.hasSuffix("/full") }.map(\.protoName))
        let all = WireMessages.all.map { WireMessages.protoName(of: $0) }
        #expect(all.count > 90)
        #expect(Set(all).count == all.count)
        for name in all { #expect(sampled.contains(name), "no full sample of \(name)") }
    }

    @Test(arguments: WireSamples.all.map(\.name))
    func roundTrip(_ name: String) throws {
        let sample = try #require(WireSamples.all.first { $0.name == name })
        let bytes = sample.message.wireBytes()
        let decoded = try decode(bytes, like: sample.message)
        #expect(same(decoded, sample.message), "\(name) changed in a round trip")
        // Deterministic: the same value encodes to the same bytes.
        #expect(decoded.wireBytes() == bytes)
        // Only a message protoc prints as nothing (all fields default) encodes to nothing.
        #expect(bytes.isEmpty == sample.text.isEmpty)
        // Decoding from another Collection type gives the same value.
        #expect(same(try type(of: sample.message).init(wireBytes: bytes[...]), sample.message))
    }

    @Test func knownEncodingIsStandardProtobuf() throws {
        // field 1 (string) "e", field 2 (varint) 1, field 4 (string) "f"
        let event = FileDeleted(eventID: "e", occurredAt: 1, fileID: "f")
        #expect(event.wireBytes() == [0x0A, 0x01, 0x65, 0x10, 0x01, 0x22, 0x01, 0x66])
        #expect(try FileDeleted(wireBytes: [0x22, 0x01, 0x66, 0x0A, 0x01, 0x65, 0x10, 0x01]) == event)
        // A negative int32 is a 10-byte varint.
        #expect(Face(x: -1).wireBytes() == [0x08] + [UInt8](repeating: 0xFF, count: 9) + [0x01])
        // Unknown fields are skipped: field 15 (varint) before the known field.
        #expect(try FileDeleted(wireBytes: [0x78, 0x05, 0x22, 0x01, 0x66]) == FileDeleted(fileID: "f"))
    }

    @Test func presenceWrappersTellAbsentFromZero() throws {
        let absent = PhotoAnalysis(takenAt: nil, gps: nil)
        let zero = PhotoAnalysis(takenAt: 0, gps: GeoPoint())
        #expect(absent.wireBytes().isEmpty)
        #expect(!zero.wireBytes().isEmpty)
        #expect(try PhotoAnalysis(wireBytes: absent.wireBytes()).takenAt == nil)
        #expect(try PhotoAnalysis(wireBytes: zero.wireBytes()).takenAt == 0)
        #expect(try PhotoAnalysis(wireBytes: zero.wireBytes()).gps == GeoPoint())
        let update = UpdateAlbumRequest(albumID: "a", name: "", description: nil)
        let back = try UpdateAlbumRequest(wireBytes: update.wireBytes())
        #expect(back.name == "")
        #expect(back.description == nil)
    }

    @Test func mapsAndRepeatedFields() throws {
        let request = RegisterUploadRequest(
            userID: "u", metadata: ["album_id": "a1", "": "", "ключ": "значение ✓"])
        #expect(try RegisterUploadRequest(wireBytes: request.wireBytes()) == request)
        // Map entries encode sorted by key, so equal maps encode equally.
        #expect(request.wireBytes() == RegisterUploadRequest(
            userID: "u", metadata: ["ключ": "значение ✓", "album_id": "a1", "": ""]).wireBytes())
        let schedule = SetScheduleRequest(entries: [
            ScheduleEntry(daysOfWeek: [0, 6, 3]), ScheduleEntry(), ScheduleEntry(albumID: "a"),
        ])
        #expect(try SetScheduleRequest(wireBytes: schedule.wireBytes()) == schedule)
        let ai = AIMetadata(labels: ["", "b", ""], faces: [Face(), Face(x: 1, y: 2, width: 3, height: 4)])
        #expect(try AIMetadata(wireBytes: ai.wireBytes()) == ai)
    }

    /// The documented limits of going through C strings.
    @Test func cStringLimits() throws {
        // An embedded NUL cuts the string (protobuf-c strings are NUL-terminated).
        #expect(try FileDeleted(wireBytes: FileDeleted(fileID: "a\u{0}b").wireBytes()).fileID == "a")
        // Invalid UTF-8 from the wire is repaired, not trusted.
        #expect(try FileDeleted(wireBytes: [0x22, 0x02, 0xFF, 0x41]).fileID == "\u{FFFD}A")
    }

    @Test func unrecognizedEnumValuesSurvive() throws {
        let member = Member(role: .unrecognized(42))
        let back = try Member(wireBytes: member.wireBytes())
        #expect(back.role == .unrecognized(42))
        #expect(back.role.wireValue == 42)
        #expect(Role(wireValue: 2) == .contributor)
    }

    @Test func concurrentEncodingAndDecoding() async throws {
        let samples = WireSamples.all.filter { $0.name.hasSuffix("/full") }
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    for sample in samples {
                        let back = try decode(sample.message.wireBytes(), like: sample.message)
                        if !same(back, sample.message) { return false }
                    }
                    return true
                }
            }
            for try await ok in group { #expect(ok) }
        }
    }
}
