import Foundation
import NATS

/// What a test needs to reach the real servers `scripts/test` started.
///
/// Every accessor throws a ``TestServers/Missing`` error that says which variable is unset
/// and how to get it, so an integration test run without its servers fails loudly.
public enum TestServers {
    public struct Missing: Error, CustomStringConvertible {
        public let variable: String
        public var description: String {
            "\(variable) is not set: integration tests need the real servers that scripts/test starts (run `scripts/test`)"
        }
    }

    static func value(_ name: String) throws -> String {
        guard let v = ProcessInfo.processInfo.environment[name], !v.isEmpty else { throw Missing(variable: name) }
        return v
    }

    /// `nats://127.0.0.1:PORT` of the shared nats-server (JetStream enabled). It refuses
    /// anonymous clients: connect with ``natsConfiguration(name:)`` or ``natsConfiguration(role:)``.
    public static func natsURL() throws -> String { try value("FRAMECAST_TEST_NATS_URL") }

    /// The test suite's own identity on the shared nats-server: user FRAMECAST_TEST_NATS_USER,
    /// in an account of its own (`start_nats --test-account`) where it may use any subject and
    /// stream, and from which it reaches none of the services' subjects or streams.
    public static func natsConfiguration(name: String = "tests") throws -> NATSConfiguration {
        var configuration = NATSConfiguration(servers: [try natsURL()], name: name)
        configuration.user = try value("FRAMECAST_TEST_NATS_USER")
        configuration.password = try value("FRAMECAST_TEST_NATS_PASSWORD")
        return configuration
    }

    /// A service role's identity on the shared nats-server, as deploy/nats/cluster/accounts.conf
    /// defines it (`gateway`, `storage`, `album`, `media`, `ops`): password
    /// FRAMECAST_NATS_<ROLE>_PASSWORD, replies under `_INBOX.<role>`, as `framecast` connects.
    public static func natsConfiguration(role: String) throws -> NATSConfiguration {
        var configuration = NATSConfiguration(servers: [try natsURL()], name: "tests-\(role)")
        configuration.user = role
        configuration.password = try value("FRAMECAST_NATS_\(role.uppercased())_PASSWORD")
        configuration.inboxPrefix = NATSConfiguration.inboxPrefix(user: role)
        return configuration
    }

    /// Host and port of the shared mosquitto broker.
    public static func mqtt() throws -> (host: String, port: Int) {
        let host = try value("FRAMECAST_TEST_MQTT_HOST")
        guard let port = Int(try value("FRAMECAST_TEST_MQTT_PORT")) else { throw Missing(variable: "FRAMECAST_TEST_MQTT_PORT") }
        return (host, port)
    }

    /// The album service's identity on the shared broker (it administers frames' identities).
    public static func mqttService() throws -> MQTTIdentity {
        MQTTIdentity(user: try value("FRAMECAST_TEST_MQTT_USER"), password: try value("FRAMECAST_TEST_MQTT_PASSWORD"))
    }

    /// The test suite's observer identity on the shared broker (every topic).
    public static func mqttTester() throws -> MQTTIdentity {
        MQTTIdentity(user: try value("FRAMECAST_TEST_MQTT_TESTER_USER"), password: try value("FRAMECAST_TEST_MQTT_TESTER_PASSWORD"))
    }

    /// libpq conninfo of the shared PostgreSQL server's `framecast` database.
    public static func postgresConnInfo() throws -> String { try value("FRAMECAST_TEST_POSTGRES") }

    /// A folder for a test's files under the test run's folder (or the system temp dir).
    public static func scratchDirectory(_ name: String = "scratch") throws -> URL {
        let base = ProcessInfo.processInfo.environment["FRAMECAST_TEST_RUN_DIR"].map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.temporaryDirectory
        let dir = base.appendingPathComponent("\(name)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Creates a fresh, empty database on the shared PostgreSQL server and returns its conninfo,
    /// so tests never see each other's rows.
    public static func makeDatabase(prefix: String = "t") async throws -> String {
        let base = try postgresConnInfo()
        let name = "\(prefix)_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased())"
        // -w: never prompt; the password comes from PGPASSFILE (scripts/test exports it).
        let result = try await Command.runOffPool("psql", [base, "-w", "-v", "ON_ERROR_STOP=1", "-qc", "CREATE DATABASE \(name)"])
        guard result.status == 0 else {
            throw CommandFailed(command: "psql CREATE DATABASE", status: result.status, output: result.output)
        }
        return replacingDatabase(in: base, with: name)
    }

    static func replacingDatabase(in conninfo: String, with name: String) -> String {
        var parts = conninfo.split(separator: " ").map(String.init).filter { !$0.hasPrefix("dbname=") }
        parts.append("dbname=\(name)")
        return parts.joined(separator: " ")
    }
}

public struct CommandFailed: Error, CustomStringConvertible {
    public let command: String
    public let status: Int32
    public let output: String
    public var description: String { "\(command) exited with \(status): \(output)" }
}

/// Runs a program from PATH and collects its output (stdout and stderr together).
public enum Command {
    /// ``run(_:_:)`` on a thread of its own, so waiting for the program never holds one of the
    /// (two, on this machine) cooperative threads every parallel test shares.
    public static func runOffPool(_ program: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try run(program, arguments) })
            }
        }
    }

    public static func run(_ program: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [program] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
