/// A frame agent failure: what went wrong (`code`), what was being done (`message`), and where
/// (`context`, e.g. `frame.id`, `http.url`). Tokens and photo bytes are never included.
public struct FrameAgentError: Error, CustomStringConvertible, Sendable {
    /// The kind of failure. Extensible: compare with the static members, never by string.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public init(_ name: String) { self.name = name }
        public var description: String { name }

        /// The configuration is incomplete or a value is out of range.
        public static let invalidConfiguration = Code("invalid_configuration")
        /// The gateway could not be reached (connection refused, DNS, timeout): retry later.
        public static let unreachable = Code("unreachable")
        /// The gateway answered with an HTTP status the agent cannot use (`status` says which).
        public static let httpStatus = Code("http_status")
        /// The gateway answered 2xx but the body is not what was expected.
        public static let badResponse = Code("bad_response")
        /// A file of the disk cache could not be read, written or removed.
        public static let io = Code("io")
        /// The display device (framebuffer, PNG file) could not be written.
        public static let display = Code("display")
        /// A payload or id from the broker was refused (malformed, unsafe).
        public static let invalidInput = Code("invalid_input")
        /// The disk cache budget cannot hold the photo.
        public static let noRoom = Code("no_room")
    }

    public var code: Code
    public var message: String
    public var context: [String: String]
    /// The HTTP status, for `httpStatus`.
    public var status: Int?

    public init(_ code: Code, _ message: String, context: [String: String] = [:], status: Int? = nil) {
        self.code = code
        self.message = message
        self.context = context
        self.status = status
    }

    /// Whether trying again later may succeed (the network, a 5xx, a 429), as opposed to an
    /// answer that will not change (404: the photo is gone or no longer visible to this frame).
    public var isTransient: Bool {
        switch code {
        case .unreachable, .io: return true
        case .httpStatus: return (status ?? 500) >= 500 || status == 429 || status == 408
        default: return false
        }
    }

    public var description: String {
        var text = "frame agent \(code): \(message)"
        if let status { text += " (HTTP \(status))" }
        if !context.isEmpty {
            text += " [" + context.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ") + "]"
        }
        return text
    }
}
