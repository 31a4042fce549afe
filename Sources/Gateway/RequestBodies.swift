import Foundation
import Hummingbird

/// Reads and decodes the JSON body of an API request (``GatewayContext/requestDecoder``, used by
/// `request.decode(as:context:)`): at most `limit` bytes (413), all of it within `timeout`
/// (408), 400 for a body that is malformed or cut short (bad chunked encoding), that does not
/// decode (naming the field, never the decoder's debug text) or that has a NUL in a string
/// (the wire cuts strings at a NUL, so it would be silently truncated).
public struct JSONBodyDecoder: RequestDecoder {
    let limit: Int
    let timeout: Duration

    public func decode<T: Decodable>(_ type: T.Type, from request: Request, context: some RequestContext) async throws -> T {
        let body = try await RequestBodies.collect(request, limit: limit, timeout: timeout)
        let data = Data(body.readableBytesView)
        let value: T
        do {
            value = try JSONDecoder().decode(T.self, from: data)
        } catch let error as DecodingError {
            throw APIError.invalidJSON(error)
        }
        if RequestBodies.hasEscapedNUL(data) {
            let field = RequestBodies.pathOfNUL(data).map { "\"\($0)\"" } ?? "a text field"
            throw APIError.badRequest("\(field) contains a NUL character (U+0000)")
        }
        return value
    }
}

/// Request bodies read in bounded size and time.
enum RequestBodies {
    /// The whole body, at most `limit` bytes, within `timeout`: 413 when it is announced or
    /// sent larger, 408 (and the connection closes) when the client is slower, 400 when it is
    /// malformed or ends early.
    static func collect(_ request: Request, limit: Int, timeout: Duration) async throws -> ByteBuffer {
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit {
            throw tooLarge(limit)
        }
        let body = request.body
        return try await withDeadline(timeout, orThrow: .requestTimeout("the request body did not arrive within \(seconds(timeout)) s")) {
            var collected = ByteBuffer()
            var iterator = body.makeAsyncIterator()
            while var chunk = try await RequestBodies.next(&iterator) {
                guard collected.readableBytes + chunk.readableBytes <= limit else { throw RequestBodies.tooLarge(limit) }
                collected.writeBuffer(&chunk)
            }
            return collected
        }
    }

    /// The next chunk of a streamed body; a failure to read it (a malformed chunked encoding,
    /// a connection closed before the announced length) is the client's: 400.
    static func next(_ iterator: inout RequestBody.AsyncIterator) async throws -> ByteBuffer? {
        do {
            return try await iterator.next()
        } catch let error as CancellationError {
            throw error
        } catch {
            throw APIError.badRequest("the request body is malformed or ended before its announced length")
        }
    }

    /// `operation`'s result, or `error` once `timeout` has passed (the operation is cancelled).
    static func withDeadline<T: Sendable>(_ timeout: Duration, orThrow error: APIError,
                                          _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await operation() }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else { throw error }
            return value
        }
    }

    static func tooLarge(_ limit: Int) -> APIError {
        .tooLarge("the request body is larger than \(limit) bytes")
    }

    static func seconds(_ duration: Duration) -> String {
        let value = duration / .seconds(1)
        return value == value.rounded() ? String(Int(value)) : String(format: "%.1f", value)
    }

    // MARK: NUL in JSON strings

    /// Whether the JSON text has a `\u0000` escape (the only way a JSON string holds a NUL).
    static func hasEscapedNUL(_ data: Data) -> Bool {
        let bytes = [UInt8](data)
        var i = 0
        while i < bytes.count {
            guard bytes[i] == UInt8(ascii: "\\"), i + 1 < bytes.count else { i += 1; continue }
            if bytes[i + 1] == UInt8(ascii: "u"), i + 5 < bytes.count,
               bytes[(i + 2)...(i + 5)].allSatisfy({ $0 == UInt8(ascii: "0") }) {
                return true
            }
            i += 2  // an escape: the next byte is never the start of another one
        }
        return false
    }

    /// The dotted path of the first key or string value holding a NUL (`entries.0.album_id`).
    static func pathOfNUL(_ data: Data) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) else { return nil }
        func hasNUL(_ text: String) -> Bool { text.unicodeScalars.contains { $0.value == 0 } }
        func find(_ value: Any, _ path: [String]) -> [String]? {
            switch value {
            case let text as String:
                return hasNUL(text) ? path : nil
            case let object as [String: Any]:
                for key in object.keys.sorted() {
                    if hasNUL(key) { return path + [key.replacingOccurrences(of: "\0", with: "\\u0000")] }
                    if let found = object[key].flatMap({ find($0, path + [key]) }) { return found }
                }
                return nil
            case let array as [Any]:
                for (index, element) in array.enumerated() {
                    if let found = find(element, path + [String(index)]) { return found }
                }
                return nil
            default:
                return nil
            }
        }
        return find(object, []).map { $0.isEmpty ? "the body" : $0.joined(separator: ".") }
    }
}

/// Text fields that reach frames and other people's screens.
enum TextInput {
    /// A name (album, frame, playlist, person): no control characters at all (NUL, BEL,
    /// newline, DEL, C1…). nil is "not given" and passes.
    static func name(_ value: String?, _ field: String) throws {
        guard let value else { return }
        if let scalar = value.unicodeScalars.first(where: { $0.properties.generalCategory == .control }) {
            throw APIError.badRequest("\(field) must not contain control characters (found \(codePoint(scalar)))")
        }
    }

    /// Free text (a description): newlines and tabs allowed, other control characters not.
    static func text(_ value: String?, _ field: String) throws {
        guard let value else { return }
        if let scalar = value.unicodeScalars.first(where: {
            $0.properties.generalCategory == .control && $0 != "\n" && $0 != "\t"
        }) {
            throw APIError.badRequest("\(field) must not contain control characters other than newlines and tabs (found \(codePoint(scalar)))")
        }
    }

    static func codePoint(_ scalar: Unicode.Scalar) -> String { String(format: "U+%04X", scalar.value) }
}
