import Foundation

/// The address of an MQTT broker frames connect to (a leaf of the broker tree).
public struct FrameBroker: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// What a list like `"leaf-1:1883, leaf-2:1883, [::1]:1884"` failed on.
    public struct ParseError: Error, CustomStringConvertible {
        public let entry: String
        public let reason: String
        public var description: String { "frame broker '\(entry.prefix(100))': \(reason)" }
    }

    /// Parses comma-separated `host:port` entries (IPv6 hosts in brackets). Duplicates are
    /// dropped (the first occurrence keeps its place), so a broker is never weighted twice.
    public static func parseList(_ text: String) throws -> [FrameBroker] {
        var brokers: [FrameBroker] = []
        for raw in text.split(separator: ",") {
            let entry = raw.trimmingCharacters(in: .whitespaces)
            guard !entry.isEmpty else { continue }
            guard let colon = entry.lastIndex(of: ":") else { throw ParseError(entry: entry, reason: "expected host:port") }
            var host = String(entry[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard !host.isEmpty, !host.contains(where: { $0 == " " || $0 == "/" }) else {
                throw ParseError(entry: entry, reason: "bad host")
            }
            guard let port = Int(entry[entry.index(after: colon)...]), (1...65535).contains(port) else {
                throw ParseError(entry: entry, reason: "port must be 1…65535")
            }
            let broker = FrameBroker(host: host, port: port)
            if !brokers.contains(broker) { brokers.append(broker) }
        }
        guard !brokers.isEmpty else { throw ParseError(entry: text, reason: "no broker given") }
        return brokers
    }

    /// Rendezvous hashing: the broker with the highest hash of (broker, frame id) wins; nil
    /// for an empty list.
    static func pick(for frameID: String, among brokers: [FrameBroker]) -> FrameBroker? {
        guard var best = brokers.first else { return nil }
        if brokers.count == 1 { return best }
        let key = frameID.lowercased()
        var bestWeight: UInt64 = 0
        for (index, broker) in brokers.enumerated() {
            let weight = mix(fnv1a("\(broker.host):\(broker.port)\u{0}\(key)"))
            if index == 0 || weight > bestWeight {
                best = broker
                bestWeight = weight
            }
        }
        return best
    }

    /// FNV-1a, 64 bit: stable across processes and platforms (unlike `Hasher`, which is seeded
    /// per process), so every replica picks the same broker for a frame.
    static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return hash
    }

    /// A finalizer (splitmix64) so nearby inputs give unrelated weights.
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
