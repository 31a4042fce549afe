import Foundation

/// A streaming multipart/form-data parser (RFC 7578): fed the request body chunk by chunk, it
/// reports each part's headers and its bytes as they arrive, never holding a whole part.
/// Only the last `delimiter.count - 1` bytes of a part are held back, in case the boundary
/// is split across chunks.
///
/// Public (with its events, ``ImageSniffer`` and nothing else of the gateway) so the fuzz
/// target `fuzz-multipart` (fuzz/, its own package) can drive it without `@testable`.
public struct MultipartParser {
    public enum Event: Equatable {
        case partStart(PartHeaders)
        case data([UInt8])
        case partEnd
    }

    public struct PartHeaders: Equatable {
        public var name: String
        public var fileName: String?
        public var contentType: String?
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    private enum State { case preamble, headers, body, epilogue }

    private let delimiter: [UInt8]
    private var buffer: [UInt8]
    private var state = State.preamble
    private static let maxHeaderBytes = 16 * 1024

    /// `boundary` from the Content-Type header (1…70 characters, RFC 2046).
    public init(boundary: String) throws {
        guard (1...70).contains(boundary.utf8.count), !boundary.utf8.contains(where: { $0 == 13 || $0 == 10 }) else {
            throw Failure(description: "invalid multipart boundary")
        }
        delimiter = Array("\r\n--\(boundary)".utf8)
        // The first boundary may open the body without a CRLF before it.
        buffer = [13, 10]
    }

    /// The boundary parameter of a `multipart/form-data` Content-Type, nil if there is none.
    public static func boundary(fromContentType contentType: String) -> String? {
        let parts = contentType.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
        guard let type = parts.first, type.lowercased() == "multipart/form-data" else { return nil }
        for parameter in parts.dropFirst() {
            let pair = parameter.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2, pair[0].lowercased() == "boundary" else { continue }
            var value = pair[1]
            if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 { value = String(value.dropFirst().dropLast()) }
            return value.isEmpty ? nil : value
        }
        return nil
    }

    public var isComplete: Bool { state == .epilogue }

    /// Consumes a chunk; returns what it completed.
    public mutating func feed(_ chunk: some Collection<UInt8>) throws -> [Event] {
        if state == .epilogue { return [] }
        buffer.append(contentsOf: chunk)
        var events: [Event] = []
        var position = 0
        loop: while true {
            switch state {
            case .preamble:
                guard let index = find(delimiter, from: position) else {
                    // Keep only what could still start a delimiter.
                    position = max(position, buffer.count - (delimiter.count - 1))
                    break loop
                }
                position = index + delimiter.count
                state = .headers
            case .headers:
                // After a delimiter: "--" ends the body, else the line must end with CRLF.
                if buffer.count - position < 2 { break loop }
                if buffer[position] == 45, buffer[position + 1] == 45 {
                    state = .epilogue
                    position = buffer.count
                    break loop
                }
                guard let end = find([13, 10, 13, 10], from: position) else {
                    if buffer.count - position > Self.maxHeaderBytes { throw Failure(description: "part headers are too long") }
                    break loop
                }
                // Skip transport padding and the CRLF after the boundary line.
                guard let lineEnd = find([13, 10], from: position) else { break loop }
                let headerBytes = lineEnd + 2 <= end ? Array(buffer[(lineEnd + 2)..<end]) : []
                events.append(.partStart(try Self.parseHeaders(headerBytes)))
                position = end + 4
                state = .body
            case .body:
                if let index = find(delimiter, from: position) {
                    if index > position { events.append(.data(Array(buffer[position..<index]))) }
                    events.append(.partEnd)
                    position = index + delimiter.count
                    state = .headers
                } else {
                    let safe = buffer.count - (delimiter.count - 1)
                    if safe > position {
                        events.append(.data(Array(buffer[position..<safe])))
                        position = safe
                    }
                    break loop
                }
            case .epilogue:
                break loop
            }
        }
        buffer.removeFirst(min(position, buffer.count))
        return events
    }

    /// Call after the last chunk: throws when the body ended before the closing boundary.
    public func finish() throws {
        guard state == .epilogue else { throw Failure(description: "the multipart body ended before its closing boundary") }
    }

    private func find(_ needle: [UInt8], from start: Int) -> Int? {
        guard needle.count <= buffer.count - start, let first = needle.first else { return nil }
        var i = start
        let last = buffer.count - needle.count
        return buffer.withUnsafeBufferPointer { hay -> Int? in
            while i <= last {
                if hay[i] == first {
                    var j = 1
                    while j < needle.count && hay[i + j] == needle[j] { j += 1 }
                    if j == needle.count { return i }
                }
                i += 1
            }
            return nil
        }
    }

    static func parseHeaders(_ bytes: [UInt8]) throws -> PartHeaders {
        let text = String(decoding: bytes, as: UTF8.self)
        var name: String?
        var fileName: String?
        var contentType: String?
        for line in text.components(separatedBy: "\r\n") where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { throw Failure(description: "malformed part header") }
            let field = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            switch field {
            case "content-disposition":
                let parameters = parseParameters(value)
                guard parameters.type.lowercased() == "form-data" else { throw Failure(description: "a part is not form-data") }
                name = parameters.values["name"]
                fileName = parameters.values["filename"]
            case "content-type":
                contentType = value
            default:
                continue
            }
        }
        guard let name, !name.isEmpty else { throw Failure(description: "a part has no name") }
        return PartHeaders(name: name, fileName: fileName, contentType: contentType)
    }

    /// `form-data; name="file"; filename="a b.jpg"` → type and parameters (quotes removed).
    static func parseParameters(_ value: String) -> (type: String, values: [String: String]) {
        var values: [String: String] = [:]
        var type = ""
        var current = ""
        var inQuotes = false
        var escaped = false
        var pieces: [String] = []
        for character in value {
            if escaped { current.append(character); escaped = false; continue }
            if inQuotes && character == "\\" { escaped = true; continue }
            if character == "\"" { inQuotes.toggle(); current.append(character); continue }
            if character == ";" && !inQuotes { pieces.append(current); current = ""; continue }
            current.append(character)
        }
        pieces.append(current)
        for (index, piece) in pieces.enumerated() {
            let trimmed = piece.trimmingCharacters(in: .whitespaces)
            if index == 0 { type = trimmed; continue }
            let pair = trimmed.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2 else { continue }
            var v = pair[1].trimmingCharacters(in: .whitespaces)
            if v.hasPrefix("\""), v.hasSuffix("\""), v.count >= 2 { v = String(v.dropFirst().dropLast()) }
            values[pair[0].trimmingCharacters(in: .whitespaces).lowercased()] = v
        }
        return (type, values)
    }
}

/// Which image format bytes are, from their first bytes (never from a name or a header).
public enum ImageSniffer {
    /// Bytes needed to decide.
    public static let prefixLength = 32

    /// The content type of a supported image, nil for anything else.
    public static func contentType(of bytes: some Collection<UInt8>) -> String? {
        let b = Array(bytes.prefix(prefixLength))
        func starts(_ signature: [UInt8], at offset: Int = 0) -> Bool {
            b.count >= offset + signature.count && Array(b[offset..<offset + signature.count]) == signature
        }
        if starts([0xFF, 0xD8, 0xFF]) { return "image/jpeg" }
        if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return "image/png" }
        if starts(Array("RIFF".utf8)), starts(Array("WEBP".utf8), at: 8) { return "image/webp" }
        if starts(Array("GIF87a".utf8)) || starts(Array("GIF89a".utf8)) { return "image/gif" }
        if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A]) { return "image/tiff" }
        if starts(Array("ftyp".utf8), at: 4), b.count >= 12 {
            let brand = String(decoding: b[8..<12], as: UTF8.self)
            switch brand {
            case "avif", "avis": return "image/avif"
            case "heic", "heix", "hevc", "hevx", "heim", "heis": return "image/heic"
            case "mif1", "msf1": return "image/heif"
            default: return nil
            }
        }
        return nil
    }
}
