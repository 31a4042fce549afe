import Foundation
internal import CNats

/// C strings that live as long as this object (for config structs holding `const char *`).
final class CStrings {
    private var pointers: [UnsafeMutablePointer<CChar>] = []

    /// A C copy of `string`, freed with this object.
    func make(_ string: String) -> UnsafePointer<CChar> {
        let p = strdup(string)!
        pointers.append(p)
        return UnsafePointer(p)
    }

    func make(_ string: String?) -> UnsafePointer<CChar>? { string.map { make($0) } }

    /// A C array of C strings (`const char **`), freed with this object.
    func makeArray(_ strings: [String]) -> UnsafeMutablePointer<UnsafePointer<CChar>?> {
        let array = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: max(strings.count, 1))
        for (i, s) in strings.enumerated() { array[i] = make(s) }
        arrays.append(array)
        return array
    }

    private var arrays: [UnsafeMutablePointer<UnsafePointer<CChar>?>] = []

    deinit {
        for p in pointers { free(p) }
        for a in arrays { a.deallocate() }
    }
}

extension Duration {
    /// Whole milliseconds (rounded up so a short positive duration never becomes 0).
    var natsMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        let rest = attoseconds % 1_000_000_000_000_000
        return rest > 0 ? ms + 1 : ms
    }

    var natsNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

enum Validate {
    /// A subject to publish to: non-empty tokens, no whitespace or control characters, and
    /// (unless `wildcards`) no `*` or `>` tokens.
    static func subject(_ subject: String, wildcards: Bool, _ what: String) throws {
        let bad = { (why: String) in NATSError(.invalidArgument, "\(what): invalid subject '\(subject.prefix(200))': \(why)") }
        if subject.isEmpty { throw bad("empty") }
        if subject.utf8.count > 4096 { throw bad("longer than 4096 bytes") }
        for b in subject.utf8 where b <= 0x20 || b == 0x7f { _ = b; throw bad("contains whitespace or a control character") }
        let tokens = subject.split(separator: ".", omittingEmptySubsequences: false)
        for (i, token) in tokens.enumerated() {
            if token.isEmpty { throw bad("empty token") }
            if token == ">" {
                if !wildcards { throw bad("wildcard '>' not allowed here") }
                if i != tokens.count - 1 { throw bad("'>' must be the last token") }
            } else if token == "*" {
                if !wildcards { throw bad("wildcard '*' not allowed here") }
            }
        }
    }

    static func queue(_ queue: String, _ what: String) throws {
        if queue.isEmpty || queue.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7f }) {
            throw NATSError(.invalidArgument, "\(what): invalid queue group name '\(queue.prefix(200))'")
        }
    }

    static func headers(_ headers: NATSHeaders, _ what: String) throws {
        for (name, values) in headers.storage {
            if name.isEmpty || name.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7f || $0 == UInt8(ascii: ":") }) {
                throw NATSError(.invalidArgument, "\(what): invalid header name '\(name.prefix(100))'")
            }
            for v in values where v.utf8.contains(where: { $0 == 0x0a || $0 == 0x0d || $0 == 0 }) {
                _ = v
                throw NATSError(.invalidArgument, "\(what): the value of header '\(name)' contains CR, LF or NUL")
            }
        }
    }
}

/// Copies everything out of a C message (the caller still owns and destroys `msg`).
func makeMessage(_ msg: OpaquePointer) -> NATSMessage {
    let subject = String(cString: natsMsg_GetSubject(msg))
    let reply = natsMsg_GetReply(msg).flatMap { $0.pointee == 0 ? nil : String(cString: $0) }
    let length = Int(natsMsg_GetDataLength(msg))
    var payload: [UInt8] = []
    if length > 0, let data = natsMsg_GetData(msg) {
        payload = Array(UnsafeRawBufferPointer(start: data, count: length))
    }
    return NATSMessage(subject: subject, reply: reply, payload: payload, headers: readHeaders(msg))
}

func readHeaders(_ msg: OpaquePointer) -> NATSHeaders {
    var headers = NATSHeaders()
    var keys: UnsafeMutablePointer<UnsafePointer<CChar>?>?
    var count: Int32 = 0
    guard natsMsgHeader_Keys(msg, &keys, &count) == NATS_OK, let keys else { return headers }
    defer { free(keys) }
    for i in 0..<Int(count) {
        guard let key = keys[i] else { continue }
        var values: UnsafeMutablePointer<UnsafePointer<CChar>?>?
        var valueCount: Int32 = 0
        guard natsMsgHeader_Values(msg, key, &values, &valueCount) == NATS_OK, let values else { continue }
        let name = String(cString: key)
        for j in 0..<Int(valueCount) {
            headers.add(values[j].map { String(cString: $0) } ?? "", for: name)
        }
        free(values)
    }
    return headers
}

/// Runs `body` with a C message carrying `payload` and `headers`; destroys it afterwards.
func withCMessage<R>(subject: String, reply: String?, payload: [UInt8], headers: NATSHeaders,
                     _ what: String, _ body: (OpaquePointer) throws -> R) throws -> R {
    var msg: OpaquePointer?
    let status = payload.withUnsafeBytes { bytes in
        natsMsg_Create(&msg, subject, reply, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(bytes.count))
    }
    try NATSError.check(status, what)
    guard let msg else { throw NATSError(.other, "\(what): natsMsg_Create returned no message") }
    defer { natsMsg_Destroy(msg) }
    for (name, values) in headers.storage {
        for value in values {
            try NATSError.check(natsMsgHeader_Add(msg, name, value), "\(what): add header '\(name)'")
        }
    }
    return try body(msg)
}
