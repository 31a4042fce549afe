import Gateway

// fuzz-multipart: whatever an uploader sends, the gateway's streaming multipart/form-data
// parser never crashes, and what it reports does not depend on how the body is cut into
// chunks (the network decides that).
//
// Input: byte 0 seeds the chunk sizes; then the Content-Type header value up to the first
// "\n"; then the body. As the gateway does (Gateway/Files.swift): the boundary from the
// Content-Type, the parser, every chunk fed, `finish()`, and the first bytes of the `file` part
// sniffed. The body is parsed twice, whole and in chunks of 1…64 bytes: both must fail with
// the same error or report the same parts (headers, and the same bytes however split).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMultipart(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data = data, size > 1 else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    let rest = input[1...]
    let newline = rest.firstIndex(of: 10) ?? rest.endIndex
    let contentType = String(decoding: rest[..<newline], as: UTF8.self)
    let body = newline < rest.endIndex ? Array(rest[(newline + 1)...]) : []
    guard let boundary = MultipartParser.boundary(fromContentType: contentType) else { return 0 }

    let whole = parse(boundary: boundary, body: body, chunkSeed: nil)
    let chunked = parse(boundary: boundary, body: body, chunkSeed: input[0])
    // Headers longer than the parser's limit (16 KiB) fail in chunks but not whole: only bodies
    // below it are compared (scripts/fuzz passes -max_len=8192).
    if body.count <= 16 * 1024, whole != chunked {
        fatalError("the parts depend on the chunking: whole \(whole), in chunks \(chunked)")
    }
    return 0
}

/// What one parse reported: the parts (adjacent data merged), or the error; and whether the
/// closing boundary came.
private struct Outcome: Equatable, CustomStringConvertible {
    var events: [MultipartParser.Event] = []
    var failure: String?
    var complete = false
    var sniffed: [String?] = []

    var description: String {
        "\(events.count) events, failure \(failure ?? "none"), complete \(complete), sniffed \(sniffed)"
    }
}

private func parse(boundary: String, body: [UInt8], chunkSeed: UInt8?) -> Outcome {
    var outcome = Outcome()
    var parser: MultipartParser
    do {
        parser = try MultipartParser(boundary: boundary)
    } catch {
        outcome.failure = "\(error)"
        return outcome
    }
    // A small linear congruential generator: the same chunk sizes for the same input.
    var state = UInt32(chunkSeed ?? 0) &* 2_654_435_761 &+ 1
    var position = 0
    var inFile = false
    var prefix: [UInt8] = []
    do {
        while position < body.count {
            var length = body.count - position
            if chunkSeed != nil {
                state = state &* 1_103_515_245 &+ 12_345
                length = min(length, Int((state >> 16) % 64) + 1)
            }
            for event in try parser.feed(body[position..<(position + length)]) {
                switch event {
                case .partStart(let headers):
                    inFile = headers.name == "file"
                    prefix = []
                    outcome.events.append(event)
                case .data(let bytes):
                    if inFile, prefix.count < ImageSniffer.prefixLength {
                        prefix += bytes.prefix(ImageSniffer.prefixLength - prefix.count)
                    }
                    if case .data(let previous)? = outcome.events.last {
                        outcome.events[outcome.events.count - 1] = .data(previous + bytes)
                    } else {
                        outcome.events.append(event)
                    }
                case .partEnd:
                    if inFile { outcome.sniffed.append(ImageSniffer.contentType(of: prefix)) }
                    inFile = false
                    outcome.events.append(event)
                }
            }
            position += length
        }
        try parser.finish()
    } catch {
        // The events of the chunk that failed are lost (the gateway answers 400): only the
        // error is compared.
        return Outcome(events: [], failure: "\(error)", complete: false, sniffed: [])
    }
    outcome.complete = parser.isComplete
    return outcome
}
