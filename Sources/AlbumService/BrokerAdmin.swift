import Foundation
import Logging
import Metrics
import MQTT
import Postgres
import ServiceKit
import ServiceLifecycle
import Threads
import Wire

/// Frame identities on the brokers frames connect to, administered over mosquitto's
/// dynamic-security plugin (`$CONTROL/dynamic-security/v1`, JSON commands; the answers come
/// on `…/response` with the `correlationData` each command carried).
///
/// Every frame is a broker client `frame-{id}` (its client id must be the same, so no other
/// identity can take over its session) holding one role `frame-{id}` that allows exactly:
/// subscribe to and receive `frames/{id}/sync|command|config` and `albums/{album}/#` for the
/// albums it shows now; publish `frames/{id}/status` and `frames/{id}/heartbeat`. The brokers
/// deny everything else (the scripts set `defaultACLAccess` to deny, receiving included, so a
/// frame's subscription to an album it no longer shows stops delivering at once).
///
/// The broker keeps only the salted hash of a frame's password; the database keeps nothing it
/// could give back. So a frame's password is set only at registration and at rotation; when a
/// broker lost its state, the frame's client is recreated without a password (the owner
/// rotates the credentials) — the reconciliation logs it.
///
/// One ``Connection`` per frame broker (on one machine the album service's own broker; in a
/// cluster every leaf). Each reconnect reconciles its broker with the database
/// (``AlbumService/reconcileBroker``), so broker and database never drift for long.
final class BrokerAdmin: Service, Sendable {
    let connections: [Connection]
    let postgres: PostgresPool
    let schema: String
    let logger: Logger

    init(configuration: AlbumConfiguration, postgres: PostgresPool, schema: String, logger: Logger) throws {
        self.postgres = postgres
        self.schema = schema
        var connections: [Connection] = []
        for (index, broker) in configuration.frameBrokers.enumerated() {
            var mqtt = configuration.mqtt
            mqtt.host = broker.host
            mqtt.port = broker.port
            mqtt.clientID = "\(configuration.mqtt.clientID)-admin-\(index)"
            mqtt.cleanSession = true
            mqtt.will = nil
            connections.append(Connection(broker: broker, client: try MQTTClient(configuration: mqtt, logger: logger), logger: logger))
        }
        self.connections = connections
        self.logger = logger
    }

    static func username(frame: String) -> String { "frame-\(frame)" }

    /// Runs every admin connection until graceful shutdown; each reconciles its broker after
    /// every (re)connect.
    func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            for connection in connections {
                group.addTask { await connection.run { [self] connection in await self.reconcile(connection) } }
            }
        }
    }

    /// Brings one broker in line with the database: every frame's role allows exactly its
    /// albums, and the client and role of a frame that no longer exists are deleted. The
    /// broker's clients are listed before the database is read, so a frame registered in
    /// between (its row commits before its client is created) is never taken for a stale one.
    func reconcile(_ connection: Connection) async {
        let started = ContinuousClock.now
        do {
            let clients = try await connection.frameClients()
            let roles = try await connection.frameRoles()
            let schema = self.schema
            let rows = try await postgres.query("""
                SELECT f.frame_id::text AS id, coalesce(string_agg(fa.album_id::text, ',' ORDER BY fa.album_id), '') AS albums
                FROM \(schema).frames f LEFT JOIN \(schema).frame_albums fa ON fa.frame_id = f.frame_id
                GROUP BY f.frame_id
                """)
            var frames: [String: [String]] = [:]
            for row in rows {
                let albums: String = try row.decode("albums")
                frames[try row.decode("id")] = albums.split(separator: ",").map(String.init)
            }
            let known = Set(frames.keys.map(Self.username(frame:)))
            let stale = clients.union(roles).subtracting(known).sorted()
            for chunk in stride(from: 0, to: stale.count, by: 100) {
                var commands: [[String: Any]] = []
                for name in stale[chunk..<min(stale.count, chunk + 100)] {
                    if clients.contains(name) { commands.append(["command": "deleteClient", "username": name]) }
                    if roles.contains(name) { commands.append(["command": "deleteRole", "rolename": name]) }
                }
                try await connection.run(commands, tolerating: ["not found"])
            }
            var recreated = 0
            for (frame, albums) in frames.sorted(by: { $0.key < $1.key }) {
                if !clients.contains(Self.username(frame: frame)) { recreated += 1 }
                try await connection.ensureRole(frame: frame, albums: albums)
            }
            logger.info("frame broker reconciled with the database", metadata: [
                "mqtt.broker": "\(connection.broker)", "frames": "\(frames.count)", "removed": "\(stale.count)",
                "recreated_without_password": "\(recreated)", "duration": "\(ContinuousClock.now - started)"])
        } catch {
            logger.warning("reconciling a frame broker with the database failed; retried on its next connect", metadata: [
                "mqtt.broker": "\(connection.broker)", "error": "\(error)"])
        }
    }

    /// The role's ACLs for a frame showing `albums`, as the plugin lists them.
    static func acls(frame: String, albums: [String]) -> Set<ACL> {
        var acls: Set<ACL> = []
        for topic in [FrameTopics.sync(frame: frame), FrameTopics.command(frame: frame), FrameTopics.config(frame: frame)] {
            acls.insert(ACL(type: "subscribeLiteral", topic: topic))
            acls.insert(ACL(type: "publishClientReceive", topic: topic))
        }
        for topic in [FrameTopics.status(frame: frame), FrameTopics.heartbeat(frame: frame)] {
            acls.insert(ACL(type: "publishClientSend", topic: topic))
        }
        for album in albums {
            acls.insert(ACL(type: "subscribePattern", topic: "albums/\(album)/#"))
            acls.insert(ACL(type: "publishClientReceive", topic: "albums/\(album)/#"))
        }
        return acls
    }

    /// One message that gives a frame its identity, keeping what exists: its role (with the ACLs
    /// for `albums` when created) and its client, bound to its own client id and holding the
    /// role, with `password` when given (without one a new client cannot log in until the owner
    /// rotates its credentials). Run it tolerating "already" (exists); when the client existed,
    /// ``Connection/createIdentity`` sets the password on it. Every command is one rewrite
    /// of the broker's whole state file (mosquitto 2.0's plugin saves after each), so a new frame
    /// costs two, not more.
    static func identityCommands(frame: String, password: String?, albums: [String]) -> [[String: Any]] {
        let user = username(frame: frame)
        var client: [String: Any] = ["command": "createClient", "username": user, "clientid": user, "roles": [["rolename": user]]]
        if let password { client["password"] = password }
        return [
            ["command": "createRole", "rolename": user, "acls": acls(frame: frame, albums: albums).sorted().map(\.json)],
            client,
        ]
    }

    struct ACL: Hashable, Sendable, Comparable {
        let type: String
        let topic: String
        var json: [String: Any] { ["acltype": type, "topic": topic, "allow": true] }
        static func < (a: ACL, b: ACL) -> Bool { (a.type, a.topic) < (b.type, b.topic) }
    }

    /// The connection to the broker a frame is told to use, then the others.
    private func ordered(for frame: String) -> [Connection] {
        guard connections.count > 1 else { return connections }
        let mine = FrameBroker.pick(for: frame, among: connections.map(\.broker))
        return connections.filter { $0.broker == mine } + connections.filter { $0.broker != mine }
    }

    /// Creates the frame's client and role on every frame broker. The frame's own broker must
    /// take it (else `unavailable`, after removing what was created); the others are best
    /// effort (logged: the frame can connect only to its own broker anyway).
    func createFrame(_ frame: String, password: String, albums: [String]) async throws {
        let user = Self.username(frame: frame)
        // A reconciliation running between the frame's commit and this call may have created
        // the client already (without a password): the password is set in any case.
        for (index, connection) in ordered(for: frame).enumerated() {
            do {
                try await connection.createIdentity(frame: frame, password: password, albums: albums)
                connection.remember(frame, albums: albums)
            } catch {
                if index == 0 {
                    _ = try? await connection.run([["command": "deleteClient", "username": user],
                                               ["command": "deleteRole", "rolename": user]], tolerating: ["not found"])
                    throw ServiceError.unavailable("the frame's MQTT broker \(connection.broker) did not register it: \(error)")
                }
                logger.warning("registering a frame on another frame broker failed", metadata: [
                    "frame.id": "\(frame)", "mqtt.broker": "\(connection.broker)", "error": "\(error)"])
            }
        }
        Counter(label: "album_broker_frames_created_total").increment()
    }

    /// Sets the frame's password on every frame broker: the broker drops its connection, so the
    /// old password stops working at once. The frame's own broker must take it.
    func setPassword(_ frame: String, password: String, albums: [String]) async throws {
        for (index, connection) in ordered(for: frame).enumerated() {
            do {
                try await connection.ensureRole(frame: frame, albums: albums)
                // A broker that lost the client (or never had it) gets it again, with the new password.
                try await connection.createIdentity(frame: frame, password: password, albums: albums)
            } catch {
                if index == 0 { throw ServiceError.unavailable("the frame's MQTT broker \(connection.broker) did not take the new password: \(error)") }
                logger.warning("rotating a frame's password on another frame broker failed", metadata: [
                    "frame.id": "\(frame)", "mqtt.broker": "\(connection.broker)", "error": "\(error)"])
            }
        }
    }

    /// Makes the frame's role allow exactly `albums` on every frame broker (a no-op where this
    /// process last set the same list). Throws `unavailable` when a broker cannot be reached:
    /// callers publish the frame's sync only after this returned.
    func ensureAlbums(_ frame: String, albums: [String]) async throws {
        for connection in connections {
            do {
                try await connection.ensureRole(frame: frame, albums: albums)
            } catch {
                throw ServiceError.unavailable("the MQTT broker \(connection.broker) did not update the frame's topics: \(error)")
            }
        }
    }

    /// Deletes the frame's client (the broker drops its connection) and role everywhere.
    /// Failures are logged; the next reconciliation removes what is left.
    func deleteFrame(_ frame: String) async {
        let user = Self.username(frame: frame)
        for connection in connections {
            do {
                try await connection.run([["command": "deleteClient", "username": user],
                                          ["command": "deleteRole", "rolename": user]], tolerating: ["not found"])
                connection.forget(frame)
            } catch {
                logger.warning("deleting a frame's broker identity failed; the next reconciliation removes it", metadata: [
                    "frame.id": "\(frame)", "mqtt.broker": "\(connection.broker)", "error": "\(error)"])
            }
        }
    }

    // MARK: One broker

    /// One admin connection: commands out, answers matched by correlation data.
    final class Connection: Sendable {
        let broker: FrameBroker
        let client: MQTTClient
        let logger: Logger
        private let state = Locked(AdminState())

        static let commandTopic = "$CONTROL/dynamic-security/v1"
        static let responseTopic = "$CONTROL/dynamic-security/v1/response"
        static let timeout: Duration = .seconds(10)
        /// The key of a tolerated error's entry in ``run(_:tolerating:)``'s answer.
        static let toleratedKey = "tolerated error"

        init(broker: FrameBroker, client: MQTTClient, logger: Logger) {
            self.broker = broker
            self.client = client
            var logger = logger
            logger[metadataKey: "mqtt.broker"] = "\(broker)"
            self.logger = logger
        }

        struct Failure: Error, CustomStringConvertible {
            let command: String
            let reason: String
            var description: String { "\(command): \(reason)" }
        }

        func remember(_ frame: String, albums: [String]) { state.withLock { $0.applied[frame] = Set(albums) } }
        func forget(_ frame: String) { state.withLock { _ = $0.applied.removeValue(forKey: frame) } }
        func forgetAll() { state.withLock { $0.applied = [:] } }

        /// Sends the commands in one message and returns each one's `data` (in order). A
        /// command that answers an error throws, unless the error contains one of `tolerating`
        /// (case-insensitive), e.g. "not found" for a delete: its entry is then
        /// `[toleratedKey: error]`.
        @discardableResult
        func run(_ commands: [[String: Any]], tolerating: [String]) async throws -> [[String: Any]] {
            guard client.isConnected else { throw Failure(command: "connect", reason: "not connected") }
            let batch = UUID().uuidString.lowercased()
            var tagged: [[String: Any]] = []
            for (index, var command) in commands.enumerated() {
                command["correlationData"] = "\(batch):\(index)"
                tagged.append(command)
            }
            let payload = try JSONSerialization.data(withJSONObject: ["commands": tagged])
            state.withLock { $0.slots[batch] = .waiting(nil) }
            do {
                try await client.publish(Self.commandTopic, payload: Array(payload), qos: .atLeastOnce)
            } catch {
                state.withLock { _ = $0.slots.removeValue(forKey: batch) }
                throw error
            }
            let answers: [Data] = try await withThrowingTaskGroup(of: [Data]?.self) { group in
                group.addTask { try await self.answers(to: batch) }
                group.addTask {
                    try? await Task.sleep(for: Self.timeout)
                    return nil
                }
                let first = try await group.next() ?? nil
                group.cancelAll()
                guard let first else {
                    // Ends the waiting child too.
                    fail(batch, Failure(command: commands.first?["command"] as? String ?? "?", reason: "no answer within \(Self.timeout)"))
                    throw Failure(command: commands.first?["command"] as? String ?? "?", reason: "no answer within \(Self.timeout)")
                }
                return first
            }
            let responses = answers.compactMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
            var data: [[String: Any]] = []
            for (index, command) in commands.enumerated() {
                let name = command["command"] as? String ?? "?"
                guard let response = responses.first(where: { $0["correlationData"] as? String == "\(batch):\(index)" }) else {
                    throw Failure(command: name, reason: "no response")
                }
                if let error = response["error"] as? String, !error.isEmpty {
                    if tolerating.contains(where: { error.lowercased().contains($0) }) {
                        data.append([Self.toleratedKey: error])
                        continue
                    }
                    throw Failure(command: name, reason: error)
                }
                data.append(response["data"] as? [String: Any] ?? [:])
            }
            return data
        }

        /// Gives the frame's role exactly the ACLs for `albums`: adds what is missing and removes
        /// what is extra (so a frame never loses its own topics in between). Creates the role
        /// (and the client, without a password) if the broker lost them.
        func ensureRole(frame: String, albums: [String]) async throws {
            let wanted = Set(albums)
            if state.withLock({ $0.applied[frame] }) == wanted { return }
            let user = BrokerAdmin.username(frame: frame)
            let target = BrokerAdmin.acls(frame: frame, albums: albums)
            let answer = try await run([["command": "getRole", "rolename": user]], tolerating: ["not found"])
            if let role = answer.first?["role"] as? [String: Any] {
                let current = Set((role["acls"] as? [[String: Any]] ?? []).compactMap { acl -> ACL? in
                    guard let type = acl["acltype"] as? String, let topic = acl["topic"] as? String else { return nil }
                    return ACL(type: type, topic: topic)
                })
                var commands: [[String: Any]] = []
                for acl in target.subtracting(current).sorted() {
                    commands.append(["command": "addRoleACL", "rolename": user, "acltype": acl.type, "topic": acl.topic, "allow": true])
                }
                for acl in current.subtracting(target).sorted() {
                    commands.append(["command": "removeRoleACL", "rolename": user, "acltype": acl.type, "topic": acl.topic])
                }
                if !commands.isEmpty { try await run(commands, tolerating: []) }
            } else {
                logger.warning("the broker had no role for a frame; recreated (the frame needs new credentials if its client was lost too)",
                               metadata: ["frame.id": "\(frame)"])
                try await createIdentity(frame: frame, password: nil, albums: albums)
            }
            remember(frame, albums: albums)
        }

        /// Creates the frame's role and client where missing (``BrokerAdmin/identityCommands``);
        /// a client that existed gets `password` (when given) and its role, if it lost it.
        func createIdentity(frame: String, password: String?, albums: [String]) async throws {
            let answers = try await run(BrokerAdmin.identityCommands(frame: frame, password: password, albums: albums),
                                        tolerating: ["already"])
            guard answers.last?[Self.toleratedKey] != nil else { return }
            let user = BrokerAdmin.username(frame: frame)
            let client = try await run([["command": "getClient", "username": user]], tolerating: []).first?["client"] as? [String: Any]
            let roles = (client?["roles"] as? [[String: Any]] ?? []).compactMap { $0["rolename"] as? String }
            var commands: [[String: Any]] = []
            if !roles.contains(user) { commands.append(["command": "addClientRole", "username": user, "rolename": user]) }
            if let password { commands.append(["command": "setClientPassword", "username": user, "password": password]) }
            if !commands.isEmpty { try await run(commands, tolerating: []) }
        }

        /// The `frame-…` client names the broker knows.
        func frameClients() async throws -> Set<String> {
            let data = try await run([["command": "listClients", "verbose": false, "count": -1, "offset": 0]], tolerating: [])
            let names = data.first?["clients"] as? [Any] ?? []
            return Set(names.compactMap { ($0 as? String) ?? (($0 as? [String: Any])?["username"] as? String) }
                .filter { $0.hasPrefix("frame-") })
        }

        /// The `frame-…` role names the broker knows.
        func frameRoles() async throws -> Set<String> {
            let data = try await run([["command": "listRoles", "verbose": false, "count": -1, "offset": 0]], tolerating: [])
            let names = data.first?["roles"] as? [Any] ?? []
            return Set(names.compactMap { ($0 as? String) ?? (($0 as? [String: Any])?["rolename"] as? String) }
                .filter { $0.hasPrefix("frame-") })
        }

        /// Connects (retrying until shutdown), reads answers, and calls `reconcile` after every
        /// (re)connect. Returns on graceful shutdown, after disconnecting.
        func run(reconcile: @escaping @Sendable (Connection) async -> Void) async {
            await withTaskGroup(of: Void.self) { group in
                let events = client.connectionEvents
                group.addTask {
                    await self.client.withMessages { messages in
                        do {
                            try await self.connectUntilUp()
                        } catch {
                            return
                        }
                        for await message in messages {
                            if Task.isCancelled { break }
                            if message.topic == Self.responseTopic { self.deliver(message.payload) }
                        }
                    }
                }
                group.addTask {
                    for await event in events {
                        if Task.isCancelled { break }
                        guard case .connected = event else { continue }
                        // A fresh (clean) session: subscribe again, then bring the broker in line.
                        self.forgetAll()
                        do {
                            try await self.client.subscribe([(Self.responseTopic, .atLeastOnce)])
                        } catch {
                            self.logger.error("subscribing to the dynamic-security answers failed", metadata: ["error": "\(error)"])
                            continue
                        }
                        await reconcile(self)
                    }
                }
                try? await gracefulShutdown()
                group.cancelAll()
                await client.disconnect()
            }
        }

        private func connectUntilUp() async throws {
            var attempt = 0
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                do {
                    try await client.connect()
                    return
                } catch {
                    attempt += 1
                    logger.warning("connecting to the frame broker as its administrator failed; retrying", metadata: [
                        "error": "\(error)", "attempt": "\(attempt)"])
                    let delay = Duration.milliseconds(min(5000, 250 * attempt))
                    try await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
                }
            }
            throw CancellationError()
        }

        private func deliver(_ payload: [UInt8]) {
            guard let object = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any],
                  let responses = object["responses"] as? [[String: Any]] else {
                logger.warning("an unreadable dynamic-security answer was dropped")
                return
            }
            var batches: [String: [Data]] = [:]
            for response in responses {
                guard let tag = response["correlationData"] as? String, let colon = tag.firstIndex(of: ":"),
                      let data = try? JSONSerialization.data(withJSONObject: response) else { continue }
                batches[String(tag[..<colon]), default: []].append(data)
            }
            for (batch, answers) in batches {
                // Another replica's commands share the topic: only our batches have slots.
                state.withLock { state in
                    switch state.slots[batch] {
                    case .waiting(nil): state.slots[batch] = .answered(answers)
                    case .waiting(let continuation?):
                        state.slots[batch] = nil
                        continuation.resume(returning: answers)
                    case .answered, nil: break
                    }
                }
            }
        }

        /// Waits for the answers to `batch` (already there, or delivered later).
        private func answers(to batch: String) async throws -> [Data] {
            try await withCheckedThrowingContinuation { continuation in
                state.withLock { state in
                    switch state.slots[batch] {
                    case .answered(let answers):
                        state.slots[batch] = nil
                        continuation.resume(returning: answers)
                    case .waiting:
                        state.slots[batch] = .waiting(continuation)
                    case nil:
                        continuation.resume(throwing: Failure(command: "wait", reason: "gave up"))
                    }
                }
            }
        }

        private func fail(_ batch: String, _ error: any Error) {
            state.withLock { state in
                if case .waiting(let continuation?) = state.slots[batch] { continuation.resume(throwing: error) }
                state.slots[batch] = nil
            }
        }
    }
}

/// The admin connection's mutable state (behind a `Locked`): the answer slot of each batch in
/// flight, and the album lists this process last applied per frame.
struct AdminState {
    enum Slot {
        /// Sent; the continuation once someone waits.
        case waiting(CheckedContinuation<[Data], any Error>?)
        /// Answered before anyone waited.
        case answered([Data])
    }
    var slots: [String: Slot] = [:]
    var applied: [String: Set<String>] = [:]
}
