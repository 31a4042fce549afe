import Wire

// fuzz-wire: whatever bytes arrive on NATS, decoding them as a message of the wire contract
// never crashes, and what decodes re-encodes consistently.
//
// Input: the first byte chooses the message type, its index in `WireMessages.all` modulo the
// count (every type is reachable); the rest is the protobuf encoding. Decoding goes through
// `init(wireBytes:)`, the one entry point every service uses (protobuf-c's unpack, then the
// generated copy into Swift values). Bytes that decode are re-encoded (protobuf-c's pack and
// its size check); that encoding must decode again and encode to the same bytes, so what a
// service passes on is what it read. fuzz/make-corpus writes one seed per message type.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWire(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data = data, size > 0 else { return 0 }
    let types = WireMessages.all
    let type = types[Int(data[0]) % types.count]
    check(type, UnsafeBufferPointer(start: data + 1, count: size - 1))
    return 0
}

private func check<M: WireMessage>(_ type: M.Type, _ bytes: UnsafeBufferPointer<UInt8>) {
    guard let message = try? M(wireBytes: bytes) else { return }
    let encoded = message.wireBytes()
    guard let again = try? M(wireBytes: encoded) else {
        fatalError("\(WireMessages.protoName(of: M.self)): its own encoding (\(encoded.count) bytes) does not decode")
    }
    let reencoded = again.wireBytes()
    if reencoded != encoded {
        fatalError("\(WireMessages.protoName(of: M.self)): re-encoding changed \(encoded.count) bytes into \(reencoded.count)")
    }
}
