import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A private nats-server or mosquitto started by a test on a free loopback port, for tests
/// that stop, kill or restart a server. It is stopped (by its PID) on `stop()` or deinit.
public final class ServerProcess: @unchecked Sendable {
    // @unchecked Sendable: `process` is only replaced under `lock`; the other stored
    // properties are immutable after init.
    public enum Kind: Sendable { case nats, mosquitto }

    public let kind: Kind
    public let port: Int
    public let directory: URL
    private let lock = NSLock()
    private var process: Process?

    /// `nats://127.0.0.1:PORT` (nats) or the plain port (mosquitto: use `host` and `port`).
    public var url: String { kind == .nats ? "nats://127.0.0.1:\(port)" : "mqtt://127.0.0.1:\(port)" }
    public let host = "127.0.0.1"

    /// Starts the server and waits until it accepts connections. Without a `port`, a free
    /// one is chosen; if another test took it in between, the next free one is tried.
    public convenience init(_ kind: Kind, jetStream: Bool = true, port: Int? = nil) throws {
        if let port {
            try self.init(kind, jetStream: jetStream, fixedPort: port)
            return
        }
        var lastError: Error?
        for _ in 0..<5 {
            do {
                try self.init(kind, jetStream: jetStream, fixedPort: try freeTCPPort())
                return
            } catch {
                lastError = error
            }
        }
        throw lastError!
    }

    private init(_ kind: Kind, jetStream: Bool, fixedPort: Int) throws {
        self.kind = kind
        self.port = fixedPort
        self.directory = try TestServers.scratchDirectory(kind == .nats ? "nats" : "mosquitto")
        self.jetStream = jetStream
        try start()
    }

    private let jetStream: Bool

    /// mosquitto: the album service's identity (administers frames' identities, publishes to
    /// frames) and the test's observer identity (every topic), as `scripts/test` gives its broker.
    public let mqttService = MQTTIdentity(user: "album", password: MQTTIdentity.randomPassword())
    public let mqttTester = MQTTIdentity(user: "tests", password: MQTTIdentity.randomPassword())

    /// (Re)starts the server on the same port with the same data folder.
    public func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        switch kind {
        case .nats:
            var args = ["nats-server", "-a", host, "-p", String(port), "-n", "test-\(port)"]
            if jetStream { args += ["-js", "-sd", directory.appendingPathComponent("js").path] }
            p.arguments = args
        case .mosquitto:
            let conf = directory.appendingPathComponent("mosquitto.conf")
            let data = directory.appendingPathComponent("data")
            try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
            let dynsec = data.appendingPathComponent("dynsec.json")
            try MQTTIdentities.initialize(dynsec, service: mqttService, tester: mqttTester)
            try """
            per_listener_settings false
            listener \(port) \(host)
            allow_anonymous false
            plugin \(MQTTIdentities.plugin)
            plugin_opt_config_file \(dynsec.path)
            persistence true
            persistence_location \(data.path)/
            log_dest none

            """.write(to: conf, atomically: true, encoding: .utf8)
            p.arguments = ["mosquitto", "-c", conf.path]
        }
        let log = directory.appendingPathComponent("server.log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        p.standardOutput = handle
        p.standardError = handle
        // A child inherits the spawning thread's signal mask; test threads may block SIGTERM,
        // and a server that ignores SIGTERM cannot be stopped gracefully. Unblock it for the spawn.
        var termSignals = sigset_t(), previous = sigset_t()
        sigemptyset(&termSignals)
        sigaddset(&termSignals, SIGTERM)
        sigaddset(&termSignals, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &termSignals, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        try p.run()
        lock.withLock { process = p }
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            // Ours, not another test's server that took the port: ours must still be running.
            if tcpPortAcceptsConnections(port) {
                usleep(100_000)
                if p.isRunning { return }
            }
            if !p.isRunning { break }
            usleep(20_000)
        }
        let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        stop()
        throw CommandFailed(command: "\(kind) on port \(port)", status: p.isRunning ? -1 : p.terminationStatus, output: output)
    }

    /// Stops the server gracefully (SIGTERM) and waits for it to exit; a server still running
    /// after 10 seconds is killed.
    public func stop() { signal(SIGTERM) }

    /// Kills the server (SIGKILL), as a crash would.
    public func kill() { signal(SIGKILL) }

    /// Freezes the server (SIGSTOP) without closing its sockets; `resume()` continues it.
    public func pause() { send(SIGSTOP) }
    public func resume() { send(SIGCONT) }

    private func send(_ sig: Int32) {
        if let p = lock.withLock({ process }), p.isRunning { Glibc.kill(p.processIdentifier, sig) }
    }

    private func signal(_ sig: Int32) {
        guard let p = lock.withLock({ () -> Process? in let p = process; process = nil; return p }) else { return }
        guard p.isRunning else { return }
        Glibc.kill(p.processIdentifier, SIGCONT)
        Glibc.kill(p.processIdentifier, sig)
        let deadline = Date().addingTimeInterval(10)
        while p.isRunning && Date() < deadline { usleep(10_000) }
        if p.isRunning { Glibc.kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
    }

    deinit { stop() }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
public func freeTCPPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw CommandFailed(command: "socket()", status: errno, output: "") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw CommandFailed(command: "bind()", status: errno, output: "") }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
public func tcpPortAcceptsConnections(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = UInt16(port).bigEndian
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
}

/// A user name and password on a test broker.
public struct MQTTIdentity: Sendable, Hashable {
    public let user: String
    public let password: String

    public init(user: String, password: String) {
        self.user = user
        self.password = password
    }

    static func randomPassword() -> String {
        "t" + (0..<24).map { _ in String(UInt8.random(in: 0...255), radix: 16) }.joined()
    }
}

/// Writes a broker's initial dynamic-security state with scripts/lib/mqtt-dynsec-init.py, the
/// one `scripts/test` and `scripts/run` use.
enum MQTTIdentities {
    static let plugin: String = {
        let dirs = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib")) ?? []
        for dir in dirs.sorted() {
            let path = "/usr/lib/\(dir)/mosquitto_dynamic_security.so"
            if FileManager.default.fileExists(atPath: path) { return path }
        }
        return "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
    }()

    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/lib/mqtt-dynsec-init.py").path

    static func initialize(_ file: URL, service: MQTTIdentity, tester: MQTTIdentity) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, file.path, "--tester", tester.user]
        var environment = ProcessInfo.processInfo.environment
        environment["FRAMECAST_MQTT_USER"] = service.user
        environment["FRAMECAST_MQTT_PASSWORD"] = service.password
        environment["FRAMECAST_MQTT_TESTER_PASSWORD"] = tester.password
        process.environment = environment
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CommandFailed(command: "mqtt-dynsec-init.py", status: process.terminationStatus, output: "")
        }
        // Run as root, mosquitto drops to its own user, which must read and rewrite the state.
        if getuid() == 0 {
            _ = try? Command.run("chown", ["-R", "mosquitto", file.deletingLastPathComponent().path])
        }
    }
}
