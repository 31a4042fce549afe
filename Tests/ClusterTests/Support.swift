import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// What `scripts/cluster --test` started: read from the `cluster.env` file it names in
/// `FRAMECAST_CLUSTER_ENV` (KEY=VALUE lines; the value runs to the end of the line).
struct ClusterEnvironment: Sendable {
    let values: [String: String]

    static func load() -> ClusterEnvironment? {
        guard let path = ProcessInfo.processInfo.environment["FRAMECAST_CLUSTER_ENV"], !path.isEmpty,
              let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        var values: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            values[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return ClusterEnvironment(values: values)
    }

    struct Missing: Error, CustomStringConvertible {
        let key: String
        var description: String { "cluster.env has no \(key) (is it the file scripts/cluster wrote?)" }
    }

    func value(_ key: String) throws -> String {
        guard let value = values[key], !value.isEmpty else { throw Missing(key: key) }
        return value
    }

    func list(_ key: String) throws -> [String] { try value(key).split(separator: ",").map(String.init) }

    var runDirectory: String { values["RUN_DIR"] ?? "" }

    /// The base URL of a framecast process's /healthz, /readyz and /metrics ("gateway-1"…).
    func endpoint(_ process: String) throws -> String { try value("OPS_\(process.replacingOccurrences(of: "-", with: "_"))") }

    /// The current PID of a supervised process.
    func pid(_ process: String) throws -> Int32 {
        let path = "\(runDirectory)/procs/\(process)/pid"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { throw Missing(key: path) }
        return pid
    }

    /// While this file exists the supervisor does not start the process again.
    func holdFile(_ process: String) -> String { "\(runDirectory)/procs/\(process)/hold" }
}

/// A small HTTP client for the gateways and the ops endpoints.
struct HTTP: Sendable {
    let session: URLSession

    init() {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = 30
        configuration.httpMaximumConnectionsPerHost = 4
        session = URLSession(configuration: configuration)
    }

    struct Failed: Error, CustomStringConvertible {
        let what: String
        let status: Int
        let body: String
        var description: String { "\(what): HTTP \(status) \(body.prefix(300))" }
    }

    func send(_ method: String, _ url: String, token: String? = nil, body: Data? = nil,
              contentType: String = "application/json") async throws -> (status: Int, body: Data) {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body {
            request.httpBody = body
            request.setValue(contentType, forHTTPHeaderField: "Content-Type")
        }
        let (data, response) = try await session.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
    }

    /// A JSON request that must answer 2xx; returns the decoded object.
    func json(_ method: String, _ url: String, token: String? = nil, _ object: [String: Any]? = nil) async throws -> [String: Any] {
        let body = try object.map { try JSONSerialization.data(withJSONObject: $0) }
        let (status, data) = try await send(method, url, token: token, body: body)
        guard (200..<300).contains(status) else {
            throw Failed(what: "\(method) \(url)", status: status, body: String(decoding: data, as: UTF8.self))
        }
        if data.isEmpty { return [:] }
        return (try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
    }

    func text(_ url: String) async throws -> String {
        let (status, data) = try await send("GET", url)
        guard status == 200 else { throw Failed(what: "GET \(url)", status: status, body: String(decoding: data, as: UTF8.self)) }
        return String(decoding: data, as: UTF8.self)
    }

    func isReady(_ base: String) async -> Bool {
        (try? await send("GET", "\(base)/readyz").status) == 200
    }
}

/// A multipart/form-data upload body: the photo and its metadata.
func uploadBody(photo: [UInt8], fileName: String, metadata: String) -> (contentType: String, body: Data) {
    let boundary = "framecast-\(UUID().uuidString)"
    var body = Data()
    body.append(Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\(fileName)\"\r\nContent-Type: image/jpeg\r\n\r\n".utf8))
    body.append(contentsOf: photo)
    body.append(Data("\r\n--\(boundary)\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n\(metadata)\r\n--\(boundary)--\r\n".utf8))
    return ("multipart/form-data; boundary=\(boundary)", body)
}

/// One sample of a Prometheus text exposition: `name{label="value",…} number`.
struct MetricSample: Sendable {
    let name: String
    let labels: [String: String]
    let value: Double

    static func parse(_ text: String) -> [MetricSample] {
        var samples: [MetricSample] = []
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            let head = line[..<space]
            var name = String(head), labels: [String: String] = [:]
            if let brace = head.firstIndex(of: "{"), head.hasSuffix("}") {
                name = String(head[..<brace])
                let inner = head[head.index(after: brace)..<head.index(before: head.endIndex)]
                // Label values here never hold `",` (they are routes, outcomes, names).
                for pair in inner.components(separatedBy: "\",") {
                    guard let equals = pair.firstIndex(of: "=") else { continue }
                    let key = pair[..<equals].trimmingCharacters(in: CharacterSet(charactersIn: ", "))
                    let raw = pair[pair.index(after: equals)...]
                    labels[key] = raw.trimmingCharacters(in: CharacterSet(charactersIn: "\""))
                }
            }
            samples.append(MetricSample(name: name, labels: labels, value: value))
        }
        return samples
    }
}

extension [MetricSample] {
    func sum(_ name: String, where matches: ([String: String]) -> Bool = { _ in true }) -> Int {
        Int(filter { $0.name == name && matches($0.labels) }.reduce(0) { $0 + $1.value })
    }
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    let rank = min(sorted.count - 1, max(0, Int((p * Double(sorted.count)).rounded(.up)) - 1))
    return sorted[rank]
}
