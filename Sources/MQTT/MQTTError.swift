internal import CMosquitto
import Foundation

/// An MQTT failure: what went wrong (`code`), what was being done (`message`), and where
/// (`context`, e.g. `mqtt.client_id`, `mqtt.broker`). Payloads are never included.
public struct MQTTError: Error, CustomStringConvertible, Sendable {
    /// The kind of failure. Extensible: compare with the static members, never by string.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public init(_ name: String) { self.name = name }
        public var description: String { name }

        /// A topic or filter is not valid MQTT (wildcard in a publish topic, NUL, too long…).
        public static let invalidTopic = Code("invalid_topic")
        /// A configuration value or argument was refused (by this library or libmosquitto).
        public static let invalidArgument = Code("invalid_argument")
        /// The operation needs a connection and the client is not connected right now.
        public static let notConnected = Code("not_connected")
        /// The broker could not be reached (connection refused at TCP level, DNS, no route).
        public static let unreachable = Code("unreachable")
        /// The broker answered CONNACK with a refusal (bad credentials, not authorised, …).
        public static let connectionRefused = Code("connection_refused")
        /// The connection dropped while the operation was waiting for its acknowledgement.
        /// A QoS 1/2 message may still be delivered after the reconnect (at-least-once).
        public static let connectionLost = Code("connection_lost")
        /// No answer within the configured time.
        public static let timeout = Code("timeout")
        /// The client was disconnected by `disconnect()` (or shut down) while waiting.
        public static let closed = Code("closed")
        /// The broker broke the protocol, or refused a subscription.
        public static let protocolError = Code("protocol_error")
        /// The payload is larger than MQTT (or the broker) allows.
        public static let payloadTooLarge = Code("payload_too_large")
        /// The broker or protocol version does not support what was asked (e.g. QoS 2).
        public static let notSupported = Code("not_supported")
        /// Any other libmosquitto or system failure.
        public static let library = Code("library")
    }

    public var code: Code
    public var message: String
    public var context: [String: String]
    /// The libmosquitto status (`mosq_err_t`) or CONNACK reason, when one caused this error.
    public var status: Int?

    public init(_ code: Code, _ message: String, context: [String: String] = [:], status: Int? = nil) {
        self.code = code
        self.message = message
        self.context = context
        self.status = status
    }

    public var description: String {
        var text = "MQTT \(code): \(message)"
        if !context.isEmpty {
            text += " [" + context.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ") + "]"
        }
        return text
    }
}

let mosqSuccess = Int32(MOSQ_ERR_SUCCESS.rawValue)

extension MQTTError {
    /// The one place that turns a libmosquitto status into an error. `what` says what failed
    /// ("publish", "connect to 127.0.0.1:1883"); `savedErrno` is errno read right after the call.
    static func status(_ rc: Int32, _ what: String, savedErrno: Int32 = errno, context: [String: String] = [:]) -> MQTTError {
        let code: Code
        var reason = String(cString: mosquitto_strerror(rc))
        switch mosq_err_t(rawValue: rc) {
        case MOSQ_ERR_NO_CONN: code = .notConnected
        case MOSQ_ERR_CONN_REFUSED: code = .connectionRefused
        case MOSQ_ERR_CONN_LOST, MOSQ_ERR_KEEPALIVE: code = .connectionLost
        case MOSQ_ERR_EAI, MOSQ_ERR_LOOKUP: code = .unreachable
        case MOSQ_ERR_INVAL, MOSQ_ERR_MALFORMED_UTF8: code = .invalidArgument
        case MOSQ_ERR_PAYLOAD_SIZE, MOSQ_ERR_OVERSIZE_PACKET: code = .payloadTooLarge
        case MOSQ_ERR_PROTOCOL, MOSQ_ERR_MALFORMED_PACKET, MOSQ_ERR_DUPLICATE_PROPERTY:
            code = .protocolError
        case MOSQ_ERR_NOT_SUPPORTED, MOSQ_ERR_QOS_NOT_SUPPORTED, MOSQ_ERR_RETAIN_NOT_SUPPORTED:
            code = .notSupported
        case MOSQ_ERR_TIMEOUT: code = .timeout
        case MOSQ_ERR_ERRNO:
            reason = String(cString: strerror(savedErrno))
            switch savedErrno {
            case ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, ETIMEDOUT, EADDRNOTAVAIL: code = .unreachable
            case ECONNRESET, EPIPE: code = .connectionLost
            default: code = .library
            }
        default: code = .library
        }
        return MQTTError(code, "\(what) failed: \(reason)", context: context, status: Int(rc))
    }

    /// A CONNACK refusal (`rc` is the MQTT 3.1.1 return code or the MQTT 5 reason code).
    static func refused(_ rc: Int32, version: MQTTProtocolVersion, context: [String: String]) -> MQTTError {
        let reason = version == .v5 ? String(cString: mosquitto_reason_string(rc)) : String(cString: mosquitto_connack_string(rc))
        return MQTTError(.connectionRefused, "the broker refused the connection: \(reason)", context: context, status: Int(rc))
    }
}

/// Runs `body` and throws ``MQTTError/timeout`` if it has not finished after `timeout`;
/// `body` is cancelled then (the waiters in this module answer cancellation at once).
func withDeadline<T: Sendable>(
    _ timeout: Duration, _ what: @autoclosure () -> String, context: [String: String] = [:],
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let message = "\(what()) timed out after \(timeout)"
    return try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw MQTTError(.timeout, message, context: context)
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}
