// Conveniences around the reply envelope `Reply { status, message, body }`.

extension Reply {
    /// An ok reply carrying `body`.
    public static func ok(_ body: some WireMessage) -> Reply {
        Reply(status: .ok, message: "", body: body.wireBytes())
    }

    /// A failed reply: the body stays empty.
    public static func failure(_ status: WireStatus, _ message: String) -> Reply {
        Reply(status: status, message: message, body: [])
    }

    /// Decodes the body as `type` when the status is ok; throws `WireError` (`.notOK`, with
    /// the status and message) otherwise, or `.malformed` when the body does not decode.
    public func decodeBody<M: WireMessage>(as type: M.Type = M.self) throws -> M {
        guard status == .ok else {
            throw WireError(
                code: .notOK,
                message: "reply status \(status): \(message)",
                messageType: WireMessages.protoName(of: M.self))
        }
        return try M(wireBytes: body)
    }
}

extension WireStatus: CustomStringConvertible {
    /// The proto name without prefix, lower case: "ok", "not_found"…
    public var description: String {
        switch self {
        case .unspecified: "unspecified"
        case .ok: "ok"
        case .notFound: "not_found"
        case .invalid: "invalid"
        case .conflict: "conflict"
        case .unauthorized: "unauthorized"
        case .unavailable: "unavailable"
        case .internal: "internal"
        case .unsupported: "unsupported"
        case .unrecognized(let value): "unrecognized(\(value))"
        }
    }

    /// True only for `.ok`.
    public var isOK: Bool { self == .ok }
}
