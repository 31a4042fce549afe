internal import CNats

/// An error from the NATS wrapper: a stable ``Code`` to match on, a message that says what
/// failed (never payload bytes), and, where nats.c or JetStream gave one, the underlying status.
public struct NATSError: Error, CustomStringConvertible, Sendable {
    /// An extensible error code. Match with `==` (`error.code == .timeout`), never on the message.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public init(_ name: String) { self.name = name }
        public var description: String { name }

        /// An operation did not complete in time (request, flush, drain, JetStream API call).
        public static let timeout = Code("timeout")
        /// A request reached no subscriber: the server answered "503 no responders".
        public static let noResponders = Code("noResponders")
        /// The connection is (temporarily) not connected to a server.
        public static let notConnected = Code("notConnected")
        /// The connection or subscription is closed (or draining and takes no new work).
        public static let connectionClosed = Code("connectionClosed")
        /// The initial connect found no server that accepted the connection.
        public static let connectFailed = Code("connectFailed")
        /// The server refused the credentials, or the action is not permitted.
        public static let authorizationFailed = Code("authorizationFailed")
        /// A caller passed something invalid (empty subject, bad header name, batch ≤ 0…).
        public static let invalidArgument = Code("invalidArgument")
        /// The payload is larger than the server's max payload.
        public static let maxPayload = Code("maxPayload")
        /// JetStream refused the request; see ``NATSError/jetStreamErrorCode``.
        public static let jetStream = Code("jetStream")
        /// A JetStream stream or consumer does not exist.
        public static let notFound = Code("notFound")
        /// The subscriber could not keep up and messages were dropped.
        public static let slowConsumer = Code("slowConsumer")
        /// Anything else nats.c reported (I/O, protocol, system errors).
        public static let other = Code("other")
    }

    public let code: Code
    public let message: String
    /// The nats.c status name (`NATS_TIMEOUT`…) when the error came from nats.c.
    public let status: String?
    /// The JetStream API error code (e.g. 10059 stream not found) when JetStream gave one.
    public let jetStreamErrorCode: Int?

    public init(_ code: Code, _ message: String, status: String? = nil, jetStreamErrorCode: Int? = nil) {
        self.code = code
        self.message = message
        self.status = status
        self.jetStreamErrorCode = jetStreamErrorCode
    }

    public var description: String {
        var text = "NATSError.\(code): \(message)"
        if let status { text += " [\(status)]" }
        if let jetStreamErrorCode { text += " [JetStream \(jetStreamErrorCode)]" }
        return text
    }
}

extension NATSError {
    /// The one place that turns a nats.c status (and JetStream error code) into a ``NATSError``.
    /// `what` says what the wrapper was doing ("publish to 'a.b'"). Must be called on the thread
    /// that made the failing call, right after it, so nats.c's thread-local last error matches.
    static func from(_ status: natsStatus, _ what: String, jsErrorCode: jsErrCode = jsErrCode(0)) -> NATSError {
        let statusText = String(cString: natsStatus_GetText(status))
        var detail = ""
        if let last = nats_GetLastError(nil) {
            let text = String(cString: last)
            if !text.isEmpty && text != statusText { detail = ": \(text)" }
        }
        let js = Int(jsErrorCode.rawValue)
        let code: Code
        switch status {
        case NATS_TIMEOUT: code = .timeout
        case NATS_NO_RESPONDERS: code = .noResponders
        case NATS_CONNECTION_CLOSED, NATS_DRAINING, NATS_INVALID_SUBSCRIPTION: code = .connectionClosed
        case NATS_CONNECTION_DISCONNECTED, NATS_NOT_YET_CONNECTED: code = .notConnected
        case NATS_NO_SERVER: code = .connectFailed
        case NATS_CONNECTION_AUTH_FAILED, NATS_NOT_PERMITTED: code = .authorizationFailed
        case NATS_INVALID_ARG, NATS_INVALID_SUBJECT, NATS_INVALID_TIMEOUT, NATS_INVALID_QUEUE_NAME, NATS_ADDRESS_MISSING:
            code = .invalidArgument
        case NATS_MAX_PAYLOAD: code = .maxPayload
        case NATS_SLOW_CONSUMER: code = .slowConsumer
        case NATS_NOT_FOUND: code = .notFound
        default:
            if js == Int(JSStreamNotFoundErr.rawValue) || js == Int(JSConsumerNotFoundErr.rawValue) {
                code = .notFound
            } else if js != 0 {
                code = .jetStream
            } else {
                code = .other
            }
        }
        return NATSError(code, "\(what) failed: \(statusText)\(detail)",
                         status: natsStatusName(status), jetStreamErrorCode: js == 0 ? nil : js)
    }

    static func check(_ status: natsStatus, _ what: @autoclosure () -> String, jsErrorCode: jsErrCode = jsErrCode(0)) throws {
        if status != NATS_OK { throw from(status, what(), jsErrorCode: jsErrorCode) }
    }
}

private func natsStatusName(_ status: natsStatus) -> String {
    switch status {
    case NATS_OK: "NATS_OK"
    case NATS_ERR: "NATS_ERR"
    case NATS_PROTOCOL_ERROR: "NATS_PROTOCOL_ERROR"
    case NATS_IO_ERROR: "NATS_IO_ERROR"
    case NATS_CONNECTION_CLOSED: "NATS_CONNECTION_CLOSED"
    case NATS_NO_SERVER: "NATS_NO_SERVER"
    case NATS_STALE_CONNECTION: "NATS_STALE_CONNECTION"
    case NATS_CONNECTION_DISCONNECTED: "NATS_CONNECTION_DISCONNECTED"
    case NATS_CONNECTION_AUTH_FAILED: "NATS_CONNECTION_AUTH_FAILED"
    case NATS_NOT_PERMITTED: "NATS_NOT_PERMITTED"
    case NATS_NOT_FOUND: "NATS_NOT_FOUND"
    case NATS_INVALID_SUBJECT: "NATS_INVALID_SUBJECT"
    case NATS_INVALID_ARG: "NATS_INVALID_ARG"
    case NATS_INVALID_SUBSCRIPTION: "NATS_INVALID_SUBSCRIPTION"
    case NATS_INVALID_TIMEOUT: "NATS_INVALID_TIMEOUT"
    case NATS_ILLEGAL_STATE: "NATS_ILLEGAL_STATE"
    case NATS_SLOW_CONSUMER: "NATS_SLOW_CONSUMER"
    case NATS_MAX_PAYLOAD: "NATS_MAX_PAYLOAD"
    case NATS_TIMEOUT: "NATS_TIMEOUT"
    case NATS_NOT_YET_CONNECTED: "NATS_NOT_YET_CONNECTED"
    case NATS_DRAINING: "NATS_DRAINING"
    case NATS_NO_RESPONDERS: "NATS_NO_RESPONDERS"
    case NATS_MISMATCH: "NATS_MISMATCH"
    case NATS_MISSED_HEARTBEAT: "NATS_MISSED_HEARTBEAT"
    default: "natsStatus(\(status.rawValue))"
    }
}
