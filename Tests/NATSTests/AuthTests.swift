import Foundation
import Testing
import FramecastTesting
import NATS

/// The shared nats-server of `scripts/test` runs deploy/nats/cluster/accounts.conf, as every
/// deployment the scripts start does: no anonymous client, and each service role may publish
/// and subscribe only what it needs. Each role connects as `framecast` does
/// (``TestServers/natsConfiguration(role:)``: its password, replies under `_INBOX.<role>`).
///
/// Serialized: two of the tests count what the EVENTS stream stores.
@Suite("NATS users and permissions (accounts.conf)", .serialized) struct AuthTests {
    func connect(role: String) async throws -> NATSConnection {
        try await NATSConnection.connect(try TestServers.natsConfiguration(role: role), logger: testLogger)
    }

    @Test func anonymousClientsAndWrongPasswordsAreRefused() async throws {
        let anonymous = NATSConfiguration(servers: [try TestServers.natsURL()], name: "anonymous")
        await expectNATSError(.authorizationFailed, "a client without user and password") {
            try await NATSConnection.connect(anonymous, logger: testLogger)
        }
        var wrong = try TestServers.natsConfiguration(role: "storage")
        wrong.password = "k\(uniqueToken())"
        await expectNATSError(.authorizationFailed, "storage with a wrong password") {
            try await NATSConnection.connect(wrong, logger: testLogger)
        }
        // The role's own password works (so the refusals above are about the credentials).
        let storage = try await connect(role: "storage")
        defer { storage.close() }
        try await storage.flush()
    }

    @Test func requestsAreAnsweredUnderTheCallersOwnInbox() async throws {
        let storage = try await connect(role: "storage")
        let gateway = try await connect(role: "gateway")
        defer { storage.close(); gateway.close() }
        let subject = "svc.storage.v1.Probe\(uniqueToken())"
        let replySubject = Box<String?>(nil)
        try await serving(storage, subject, queue: "storage", handler: { message in
            replySubject.update { $0 = message.reply }
            // allow_responses: storage may answer the requests it received, on their reply subject.
            try storage.respond(to: message, payload: message.payload)
        }) {
            let reply = try await gateway.request(subject, payload: [7], timeout: .seconds(10))
            #expect(reply.payload == [7])
        }
        #expect(replySubject.get?.hasPrefix("_INBOX.gateway.") == true, "\(replySubject.get ?? "no reply subject")")
    }

    /// Whether what `publisher` publishes on `subject` reaches `observer` (a role allowed to
    /// subscribe to it). `control` (a role allowed to publish there) publishes after it, so the
    /// first message the observer gets answers at once: the publisher's, or the control's.
    func reaches(_ subject: String, from publisher: String, observer: String, control: String = "gateway") async throws -> Bool {
        let watching = try await connect(role: observer)
        let sending = try await connect(role: publisher)
        let allowed = try await connect(role: control)
        defer { watching.close(); sending.close(); allowed.close() }
        return try await watching.subscribe(subject) { subscription in
            try await watching.flush()
            try sending.publish(subject, payload: Array(publisher.utf8))
            // Once the server answered this flush it has handled (delivered or refused) the publish.
            try await sending.flush()
            try allowed.publish(subject, payload: Array("control".utf8))
            try await allowed.flush()
            guard let first = try await next(subscription) else { throw TestTimeout(what: "a message on \(subject)") }
            return first.payload == Array(publisher.utf8)
        }
    }

    @Test func onlyTheGatewayCallsServicesBesidesOneNamedLookup() async throws {
        #expect(try await reaches("svc.storage.v1.DeleteFile", from: "gateway", observer: "storage", control: "gateway"))
        #expect(try await reaches("svc.storage.v1.DeleteFile", from: "media", observer: "storage") == false,
                "media must not call storage")
        #expect(try await reaches("svc.album.v1.Probe\(uniqueToken())", from: "storage", observer: "album") == false,
                "storage must not call album")
        #expect(try await reaches("svc.media.v1.Probe\(uniqueToken())", from: "ops", observer: "media") == false,
                "ops discovers services but does not call them")
        // The one lookup between services: album → storage GetFile. Media asks album nothing (it
        // keeps its own copy of album's state from events), so it may not.
        #expect(try await reaches("svc.storage.v1.GetFile", from: "album", observer: "storage"))
        #expect(try await reaches("svc.storage.v1.DeleteFile", from: "album", observer: "storage") == false,
                "album may look files up, not delete them")
        for method in ["CanViewPhoto", "CanViewAlbum", "ListAlbumPhotos", "GetFrame", "DeleteAlbum"] {
            #expect(try await reaches("svc.album.v1.\(method)", from: "media", observer: "album") == false, "media → album \(method)")
        }
    }

    /// Gateway replicas tell each other which tokens were revoked (their token caches drop
    /// them); no other role may announce a revocation, or listen to them.
    @Test func onlyGatewaysAnnounceTokenRevocations() async throws {
        #expect(try await reaches("gateway.tokens.revoked", from: "gateway", observer: "gateway"))
        for role in ["storage", "album", "media", "ops"] {
            #expect(try await reaches("gateway.tokens.revoked", from: role, observer: "gateway") == false,
                    "\(role) must not announce token revocations")
        }
        let storage = try await connect(role: "storage")
        let gateway = try await connect(role: "gateway")
        defer { storage.close(); gateway.close() }
        let heard = try await storage.subscribe("gateway.tokens.revoked") { subscription -> Bool in
            try await storage.flush()
            try gateway.publish("gateway.tokens.revoked", payload: [1])
            try await gateway.flush()
            do {
                return try await next(subscription, timeout: .seconds(1)) != nil
            } catch is TestTimeout {
                return false
            }
        }
        #expect(!heard, "storage must not listen to token revocations")
    }

    /// Every gateway replica hears storage's `file.deleted` (a deleted photo's capability URLs
    /// answer 404 on all of them): core NATS, on the event's own subject.
    @Test func gatewaysHearDeletedFiles() async throws {
        #expect(try await reaches("file.deleted", from: "storage", observer: "gateway", control: "storage"))
    }

    /// The EVENTS stream as ServiceKit's EventStream.ensure declares it (Subjects.streamName,
    /// Subjects.streamSubjects; this target does not depend on Wire).
    static let events = StreamConfiguration(name: "EVENTS", subjects: ["file.>", "album.>", "media.>", "device.>"])

    @Test func eachServicePublishesOnlyItsOwnEvents() async throws {
        let storage = try await connect(role: "storage")
        defer { storage.close() }
        let js = try storage.jetStream()
        try await js.addOrUpdateStream(Self.events)
        let before = try await js.publish("file.deleted", payload: [1], messageID: "auth-\(uniqueToken())")

        // Forgeries, published without waiting for an acknowledgement that would never come.
        let forgeries: [(role: String, subject: String)] = [
            ("gateway", "file.deleted"), ("album", "file.uploaded"), ("media", "file.deleted"),
            ("storage", "album.photo_added"), ("storage", "device.deleted"), ("album", "media.cache_ready"),
            ("media", "album.photo_added"), ("ops", "file.deleted"),
        ]
        for forgery in forgeries {
            let connection: NATSConnection
            if forgery.role == "storage" {
                connection = storage
            } else {
                connection = try await connect(role: forgery.role)
            }
            try connection.publish(forgery.subject, payload: Array("forged by \(forgery.role)".utf8))
            // Once the server answered this flush it has handled (refused) the publish.
            try await connection.flush()
            if connection !== storage { connection.close() }
        }

        let after = try await js.publish("file.deleted", payload: [2], messageID: "auth-\(uniqueToken())")
        #expect(after.stream == "EVENTS")
        #expect(after.sequence == before.sequence + 1,
                "the stream stored \(Int64(after.sequence) - Int64(before.sequence) - 1) forged event(s)")
    }

    @Test func eachServiceConsumesWithItsOwnDurablesOnly() async throws {
        let storage = try await connect(role: "storage")
        let album = try await connect(role: "album")
        let media = try await connect(role: "media")
        defer { storage.close(); album.close(); media.close() }
        try await storage.jetStream().addOrUpdateStream(Self.events)
        let marker = Array("deleted-\(uniqueToken())".utf8)
        _ = try await storage.jetStream().publish("file.deleted", payload: marker, messageID: "auth-\(uniqueToken())")

        // album's own durable (ServiceKit names it <service>_<subject>): create, fetch, ack.
        let consumer = try await album.jetStream().pullConsumer(
            stream: "EVENTS", durable: "album_file_deleted", configuration: ConsumerConfiguration(filterSubject: "file.deleted"))
        defer { consumer.close() }
        var found = false
        try await eventually("album fetching its file.deleted") {
            for message in try await consumer.fetch(batch: 100, expires: .milliseconds(500)) {
                try await message.ack()
                if message.payload == marker { found = true }
            }
            return found
        }

        // media may not bind album's durable, nor create one under album's name.
        await #expect(throws: NATSError.self, "media using album's durable") {
            let stolen = try await media.jetStream(timeout: .seconds(1)).pullConsumer(
                stream: "EVENTS", durable: "album_file_deleted", configuration: ConsumerConfiguration(filterSubject: "file.deleted"))
            stolen.close()
        }
        // Nor may a service delete the stream (only ops manages it).
        await #expect(throws: NATSError.self, "storage deleting EVENTS") {
            try await storage.jetStream(timeout: .seconds(1)).deleteStream("EVENTS")
        }
    }
}
