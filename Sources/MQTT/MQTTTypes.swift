internal import CMosquitto
import Foundation

/// MQTT quality of service.
public enum MQTTQoS: Int, Sendable, Hashable, Comparable {
    case atMostOnce = 0
    case atLeastOnce = 1
    case exactlyOnce = 2

    public static func < (a: MQTTQoS, b: MQTTQoS) -> Bool { a.rawValue < b.rawValue }
}

/// The MQTT protocol version spoken to the broker.
public enum MQTTProtocolVersion: Sendable, Hashable {
    case v311
    case v5

    var cValue: Int32 { self == .v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311 }
}

/// A message received from (or, as a will, left with) the broker.
public struct MQTTMessage: Sendable, Hashable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: MQTTQoS
    /// True when the broker sent it as a retained message (to a new subscription).
    public var retain: Bool

    public init(topic: String, payload: [UInt8], qos: MQTTQoS = .atMostOnce, retain: Bool = false) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
    }
}

/// The last will: published by the broker when the client goes away without DISCONNECT.
public struct MQTTWill: Sendable, Hashable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: MQTTQoS
    public var retain: Bool

    public init(topic: String, payload: [UInt8], qos: MQTTQoS = .atLeastOnce, retain: Bool = false) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
    }
}

/// How to reach the broker and how the session behaves. Plain values with documented defaults.
public struct MQTTConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// Unique per broker; with `cleanSession == false` it names the persistent session.
    public var clientID: String
    /// False: the broker keeps subscriptions and queues QoS 1/2 messages while we are away.
    public var cleanSession: Bool
    public var username: String?
    public var password: String?
    /// PINGREQ interval; the broker drops us (and publishes the will) after 1.5× this.
    public var keepAlive: Duration
    public var will: MQTTWill?
    /// Delay before the first reconnect attempt, growing linearly up to `reconnectDelayMax`.
    /// The network thread waits this long, times the attempt number, between reconnect attempts.
    public var reconnectDelay: Duration
    public var reconnectDelayMax: Duration
    public var protocolVersion: MQTTProtocolVersion
    /// How long `connect()` waits for the broker's CONNACK.
    public var connectTimeout: Duration
    /// How long publish/subscribe/unsubscribe wait for their acknowledgement.
    public var operationTimeout: Duration

    public init(
        host: String, port: Int = 1883, clientID: String, cleanSession: Bool = true,
        username: String? = nil, password: String? = nil, keepAlive: Duration = .seconds(30),
        will: MQTTWill? = nil, reconnectDelay: Duration = .milliseconds(500),
        reconnectDelayMax: Duration = .seconds(10), protocolVersion: MQTTProtocolVersion = .v311,
        connectTimeout: Duration = .seconds(5), operationTimeout: Duration = .seconds(10)
    ) {
        self.host = host
        self.port = port
        self.clientID = clientID
        self.cleanSession = cleanSession
        self.username = username
        self.password = password
        self.keepAlive = keepAlive
        self.will = will
        self.reconnectDelay = reconnectDelay
        self.reconnectDelayMax = reconnectDelayMax
        self.protocolVersion = protocolVersion
        self.connectTimeout = connectTimeout
        self.operationTimeout = operationTimeout
    }

    var context: [String: String] { ["mqtt.client_id": clientID, "mqtt.broker": "\(host):\(port)"] }

    func validate() throws {
        guard !host.isEmpty, !host.utf8.contains(0) else {
            throw MQTTError(.invalidArgument, "the broker host is empty or contains NUL", context: context)
        }
        guard (1...65535).contains(port) else {
            throw MQTTError(.invalidArgument, "port \(port) is outside 1...65535", context: context)
        }
        guard !clientID.utf8.contains(0), clientID.utf8.count <= 65535 else {
            throw MQTTError(.invalidArgument, "the client id contains NUL or is too long", context: context)
        }
        guard !clientID.isEmpty || cleanSession else {
            throw MQTTError(.invalidArgument, "a persistent session (cleanSession false) needs a client id", context: context)
        }
        let keep = wholeSeconds(keepAlive)
        guard keep >= 5, keep <= 65535 else {
            throw MQTTError(.invalidArgument, "keepAlive must be 5...65535 s (libmosquitto's range)", context: context)
        }
        if let will { try MQTTTopic.validate(will.topic) }
        for (name, value) in [("username", username), ("password", password)] where value?.utf8.contains(0) == true {
            throw MQTTError(.invalidArgument, "the \(name) contains NUL", context: context)
        }
    }
}

/// Whole seconds, rounded up (libmosquitto's timers count seconds).
func wholeSeconds(_ d: Duration) -> Int {
    let (s, atto) = d.components
    return Int(s) + (atto > 0 ? 1 : 0)
}

/// A change of the connection, in order, as the client sees it.
public enum MQTTConnectionEvent: Sendable {
    /// CONNACK accepted. `sessionPresent`: the broker still had our persistent session.
    case connected(sessionPresent: Bool)
    /// The connection ended: `reason` nil after `disconnect()`, else why it dropped.
    /// The client reconnects by itself unless `disconnect()` was called.
    case disconnected(reason: MQTTError?)
}

/// Topic checks done before anything reaches the broker.
public enum MQTTTopic {
    /// The longest topic MQTT can carry (a UTF-8 string with a 16-bit length).
    public static let maxLength = 65535

    /// Throws ``MQTTError/Code/invalidTopic`` unless `topic` can be published to: not empty,
    /// no `+` or `#` wildcard, no NUL, at most 65535 bytes of UTF-8.
    public static func validate(_ topic: String) throws {
        let bytes = topic.utf8
        let problem: String? =
            bytes.isEmpty ? "the topic is empty"
            : bytes.count > maxLength ? "the topic is \(bytes.count) bytes long (at most \(maxLength))"
            : bytes.contains(0) ? "the topic contains NUL"
            : bytes.contains(UInt8(ascii: "+")) || bytes.contains(UInt8(ascii: "#")) ? "a publish topic may not contain the wildcards + or #"
            : nil
        if let problem { throw MQTTError(.invalidTopic, problem, context: ["mqtt.topic": String(topic.prefix(200))]) }
    }

    /// Throws ``MQTTError/Code/invalidTopic`` unless `filter` is a valid subscription filter
    /// (`+` a whole level, `#` only last).
    public static func validateFilter(_ filter: String) throws {
        let bytes = filter.utf8
        guard !bytes.isEmpty, bytes.count <= maxLength, !bytes.contains(0) else {
            throw MQTTError(.invalidTopic, "the filter is empty, too long or contains NUL", context: ["mqtt.filter": String(filter.prefix(200))])
        }
        guard mosquitto_sub_topic_check(filter) == mosqSuccess else {
            throw MQTTError(.invalidTopic, "the filter misuses a wildcard (+ must be a whole level, # must be last)",
                            context: ["mqtt.filter": String(filter.prefix(200))])
        }
    }
}

/// libmosquitto's process-wide initialisation, done exactly once (never cleaned up: the
/// library may be used until the process exits).
enum MosquittoLibrary {
    static let initialized: Bool = {
        mosquitto_lib_init() == mosqSuccess
    }()

    static func initialize() throws {
        guard initialized else { throw MQTTError(.library, "mosquitto_lib_init failed") }
    }
}
