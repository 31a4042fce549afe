// The bridge between the generated Swift values and protobuf-c's C structs.
//
// Encoding builds a C struct tree whose every allocation (C strings, byte buffers, repeated
// arrays, nested and map-entry messages) is recorded in a `WireArena` and freed when the
// encode returns. Decoding unpacks with protobuf-c, copies everything into Swift values and
// frees the unpacked tree with `…__free_unpacked` at once. No C memory outlives a call.

internal import CProtobufC
internal import FramecastProto

/// Implemented by every generated message (see scripts/gen-wire-swift.py).
protocol CMessage: WireMessage {
    associatedtype CStruct
    /// "framecast.v1.FileRecord".
    static var wireName: String { get }
    /// The generated `…__init`: sets the descriptor and the defaults.
    static func cInit(_ m: UnsafeMutablePointer<CStruct>)
    static func cPackedSize(_ m: UnsafePointer<CStruct>) -> Int
    static func cPack(_ m: UnsafePointer<CStruct>, _ out: UnsafeMutablePointer<UInt8>) -> Int
    /// NULL for bytes that are not an encoding of the message.
    static func cUnpack(_ count: Int, _ data: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>?
    static func cFree(_ m: UnsafeMutablePointer<CStruct>)
    /// Copies a C struct into a Swift value.
    init(c m: UnsafePointer<CStruct>)
    /// Fills an initialised C struct; everything it allocates comes from `arena`.
    func fill(_ m: UnsafeMutablePointer<CStruct>, _ arena: WireArena)
}

/// The allocations of one encode; `release()` frees them all.
final class WireArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    init() {}

    func release() {
        for block in blocks { block.deallocate() }
        blocks.removeAll()
    }

    deinit { release() }

    /// Uninitialised memory for `count` values of `T`.
    func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let raw = UnsafeMutableRawPointer.allocate(
            byteCount: Swift.max(1, MemoryLayout<T>.stride * count),
            alignment: MemoryLayout<T>.alignment)
        blocks.append(raw)
        return raw.bindMemory(to: T.self, capacity: count)
    }

    /// A NUL-terminated copy of `s` (cut at an embedded NUL by C's reading of it).
    func string(_ s: String) -> UnsafeMutablePointer<CChar> {
        var utf8 = Array(s.utf8)
        utf8.append(0)
        let p = allocate(CChar.self, count: utf8.count)
        utf8.withUnsafeBytes { UnsafeMutableRawPointer(p).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return p
    }

    func bytes(_ b: [UInt8]) -> ProtobufCBinaryData {
        guard !b.isEmpty else { return ProtobufCBinaryData(len: 0, data: nil) }
        let p = allocate(UInt8.self, count: b.count)
        p.initialize(from: b, count: b.count)
        return ProtobufCBinaryData(len: b.count, data: p)
    }

    /// A C array of `values` converted by `convert`; nil when empty.
    func array<V, T>(_ values: [V], _ convert: (V) -> T) -> UnsafeMutablePointer<T>? {
        guard !values.isEmpty else { return nil }
        let p = allocate(T.self, count: values.count)
        for (i, v) in values.enumerated() { (p + i).initialize(to: convert(v)) }
        return p
    }

    /// An initialised and filled C struct for `value`.
    func message<M: CMessage>(_ value: M) -> UnsafeMutablePointer<M.CStruct> {
        let p = allocate(M.CStruct.self, count: 1)
        M.cInit(p)
        value.fill(p, self)
        return p
    }
}

func wireEncode<M: CMessage>(_ value: M) -> [UInt8] {
    let arena = WireArena()
    defer { arena.release() }
    let m = arena.message(value)
    let size = M.cPackedSize(m)
    guard size > 0 else { return [] }
    return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
        count = M.cPack(m, buffer.baseAddress!)
        precondition(count == size, "protobuf-c packed \(count) bytes of \(size) for \(M.wireName)")
    }
}

func wireDecode<M: CMessage>(_ type: M.Type, _ bytes: some Collection<UInt8>) throws -> M {
    let decoded: M? = bytes.withContiguousStorageIfAvailable { decode(M.self, $0) }
        ?? Array(bytes).withUnsafeBufferPointer { decode(M.self, $0) }
    guard let decoded else {
        throw WireError(
            code: .malformed,
            message: "\(M.wireName): \(bytes.count) bytes are not a valid encoding",
            messageType: M.wireName)
    }
    return decoded
}

private func decode<M: CMessage>(_ type: M.Type, _ buffer: UnsafeBufferPointer<UInt8>) -> M? {
    // protobuf-c reads nothing for zero bytes, but wants a pointer.
    var empty: UInt8 = 0
    let unpacked = withUnsafePointer(to: &empty) { M.cUnpack(buffer.count, buffer.baseAddress ?? $0) }
    guard let unpacked else { return nil }
    defer { M.cFree(unpacked) }
    return M(c: unpacked)
}

// MARK: Reading C values (used by the generated code)

func cString(_ p: UnsafePointer<CChar>?) -> String {
    guard let p else { return "" }
    return String(cString: p)
}

func cBytes(_ b: ProtobufCBinaryData) -> [UInt8] {
    guard b.len > 0, let data = b.data else { return [] }
    return [UInt8](UnsafeBufferPointer(start: data, count: b.len))
}

func cArray<T, V>(_ p: UnsafeMutablePointer<T>?, _ count: Int, _ convert: (T) -> V) -> [V] {
    guard let p, count > 0 else { return [] }
    return (0..<count).map { convert(p[$0]) }
}

/// A map<string, string> from its entries; a repeated key keeps the last value (protobuf rule).
func cMap<E: CMapEntry>(_ p: UnsafeMutablePointer<UnsafeMutablePointer<E>?>?, _ count: Int) -> [String: String] {
    guard let p, count > 0 else { return [:] }
    var map: [String: String] = [:]
    map.reserveCapacity(count)
    for i in 0..<count {
        guard let entry = p[i] else { continue }
        map[cString(entry.pointee.key)] = cString(entry.pointee.value)
    }
    return map
}

/// The C struct of a map<string, string> entry (generated conformances in Generated/).
protocol CMapEntry {
    var key: UnsafeMutablePointer<CChar>! { get }
    var value: UnsafeMutablePointer<CChar>! { get }
}
