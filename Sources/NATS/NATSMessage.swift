/// NATS message headers: names map to one or more values.
///
/// Names are case-sensitive, as in nats.c 3.x and nats-server (`Nats-Msg-Id` ≠ `nats-msg-id`).
/// The order of values under one name is kept; the order of names is not.
/// Received status messages carry the server's status in the `Status` (and `Description`) header.
public struct NATSHeaders: Sendable, Equatable, ExpressibleByDictionaryLiteral, CustomStringConvertible {
    var storage: [String: [String]] = [:]

    public init() {}

    public init(dictionaryLiteral elements: (String, String)...) {
        for (name, value) in elements { add(value, for: name) }
    }

    /// The first value under `name`; setting replaces all values (nil removes the name).
    public subscript(name: String) -> String? {
        get { storage[name]?.first }
        set {
            if let newValue { storage[name] = [newValue] } else { storage[name] = nil }
        }
    }

    /// All values under `name`, in the order they were added ([] if none).
    public func values(for name: String) -> [String] { storage[name] ?? [] }

    /// Appends a value under `name`, keeping the existing ones.
    public mutating func add(_ value: String, for name: String) { storage[name, default: []].append(value) }

    /// Removes every value under `name`.
    public mutating func remove(_ name: String) { storage[name] = nil }

    /// The header names, sorted.
    public var names: [String] { storage.keys.sorted() }

    public var isEmpty: Bool { storage.isEmpty }

    public var description: String {
        "[" + storage.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value.joined(separator: ", "))" }.joined(separator: "; ") + "]"
    }
}

/// A message received on a subscription or as a reply. Its bytes are copied out of nats.c.
public struct NATSMessage: Sendable {
    public let subject: String
    /// Where to send a response (set by requests), nil when none.
    public let reply: String?
    public let payload: [UInt8]
    public let headers: NATSHeaders

    public init(subject: String, reply: String? = nil, payload: [UInt8], headers: NATSHeaders = NATSHeaders()) {
        self.subject = subject
        self.reply = reply
        self.payload = payload
        self.headers = headers
    }
}
