import Wire

/// What a request handler throws to answer with a status other than ok.
///
/// The message goes back to the caller, so it must say what was wrong in words a client can
/// act on, and must not leak other users' data.
public struct ServiceError: Error, CustomStringConvertible, Sendable {
    public let status: WireStatus
    public let message: String

    public init(_ status: WireStatus, _ message: String) {
        self.status = status
        self.message = message
    }

    public static func notFound(_ message: String) -> ServiceError { .init(.notFound, message) }
    public static func invalid(_ message: String) -> ServiceError { .init(.invalid, message) }
    public static func conflict(_ message: String) -> ServiceError { .init(.conflict, message) }
    public static func unauthorized(_ message: String) -> ServiceError { .init(.unauthorized, message) }
    public static func unavailable(_ message: String) -> ServiceError { .init(.unavailable, message) }
    public static func `internal`(_ message: String) -> ServiceError { .init(.internal, message) }

    public var description: String { "\(status): \(message)" }
}
