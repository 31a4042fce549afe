/// How to reach NATS. Plain values with defaults; the executable fills them from its options.
public struct NATSConfiguration: Sendable {
    /// Server URLs (`nats://host:port`, optionally `nats://user:pass@host:port`). The client
    /// connects to one of them (randomized) and fails over to the others on reconnect.
    public var servers: [String]
    /// The connection name the server shows in monitoring.
    public var name: String
    /// User and password, for servers that ask for them (used when the URL carries none).
    public var user: String?
    public var password: String?
    /// A token, for servers configured with token authentication.
    public var token: String?
    /// The first tokens of this connection's reply subjects (its requests' replies, JetStream
    /// API answers and pull-consumer deliveries). Default `_INBOX`. A server that gives each
    /// user only its own replies (`subscribe: allow: ["_INBOX.<user>.>"]`) needs the user's
    /// prefix here: ``inboxPrefix(user:)``. A valid subject without wildcards.
    public var inboxPrefix: String
    /// How long one connect attempt to one server may take. Default 2 s.
    public var connectTimeout: Duration
    /// The pause between reconnect attempts to the same server. Default 250 ms.
    public var reconnectWait: Duration
    /// Up to this much random delay is added to `reconnectWait`, so many clients do not all
    /// reconnect at once after a server restart. Default 100 ms.
    public var reconnectJitter: Duration
    /// Reconnect attempts per server before giving up and closing; -1 (default) = forever.
    public var maxReconnects: Int
    /// Bytes of outgoing messages buffered while reconnecting (publishes fail beyond). Default 8 MiB.
    public var reconnectBufferSize: Int
    /// How often the client pings the server to detect a dead connection. Default 20 s.
    public var pingInterval: Duration

    public init(servers: [String], name: String = "framecast") {
        self.servers = servers
        self.name = name
        self.inboxPrefix = Self.defaultInboxPrefix
        self.connectTimeout = .seconds(2)
        self.reconnectWait = .milliseconds(250)
        self.reconnectJitter = .milliseconds(100)
        self.maxReconnects = -1
        self.reconnectBufferSize = 8 << 20
        self.pingInterval = .seconds(20)
    }

    /// NATS's own inbox prefix.
    public static let defaultInboxPrefix = "_INBOX"

    /// `_INBOX.<user>`: the reply subjects of `user` when its server grants each user only its
    /// own (as deploy/nats/cluster/accounts.conf does).
    public static func inboxPrefix(user: String) -> String { "\(defaultInboxPrefix).\(user)" }
}
