import Foundation
import Logging
import Threads
internal import CNats

/// JetStream on one ``NATSConnection``: streams, publishing with acknowledgement, durable pull
/// consumers.
///
/// Stream and consumer management calls nats.c (blocking requests) on the connection's
/// blocking pool. Publishing and acknowledging use the connection's asynchronous requests, so
/// they never hold a thread while waiting for the server.
public final class JetStream: Sendable {
    public let connection: NATSConnection
    /// How long API calls, publish acknowledgements and message acks wait for the server.
    public let timeout: Duration
    let context: JetStreamContext

    init(connection: NATSConnection, timeout: Duration) throws {
        var options = jsOptions()
        try NATSError.check(jsOptions_Init(&options), "JetStream: init options")
        options.Wait = max(1, timeout.natsMilliseconds)
        var js: OpaquePointer?
        try NATSError.check(natsConnection_JetStream(&js, connection.handle.pointer, &options), "create a JetStream context")
        guard let js else { throw NATSError(.other, "create a JetStream context: none returned") }
        self.connection = connection
        self.timeout = timeout
        self.context = JetStreamContext(js, connection: connection.handle)
    }

    // MARK: Streams

    /// Creates the stream, or updates it when it exists with another configuration.
    /// Idempotent: the same configuration twice is fine. Throws `jetStream` when the server
    /// refuses (e.g. subjects overlapping another stream, or a change that cannot be made).
    public func addOrUpdateStream(_ config: StreamConfiguration) async throws {
        try Validate.name(config.name, "add stream")
        guard !config.subjects.isEmpty else { throw NATSError(.invalidArgument, "add stream '\(config.name)': no subjects") }
        for s in config.subjects { try Validate.subject(s, wildcards: true, "add stream '\(config.name)'") }
        guard config.replicas >= 1 else { throw NATSError(.invalidArgument, "add stream '\(config.name)': replicas must be ≥ 1") }
        let context = self.context
        try await NATSConnection.blockingPool.run {
            let strings = CStrings()
            var cfg = jsStreamConfig()
            try NATSError.check(jsStreamConfig_Init(&cfg), "add stream '\(config.name)': init config")
            cfg.Name = strings.make(config.name)
            cfg.Subjects = strings.makeArray(config.subjects)
            cfg.SubjectsLen = Int32(config.subjects.count)
            cfg.Replicas = Int64(config.replicas)
            cfg.MaxAge = config.maxAge?.natsNanoseconds ?? 0
            cfg.Duplicates = config.duplicateWindow.natsNanoseconds
            cfg.MaxMsgs = config.maxMessages.map(Int64.init) ?? -1
            cfg.MaxBytes = config.maxBytes.map(Int64.init) ?? -1
            switch config.storage {
            case .file: cfg.Storage = js_FileStorage
            case .memory: cfg.Storage = js_MemoryStorage
            }
            switch config.retention {
            case .limits: cfg.Retention = js_LimitsPolicy
            case .interest: cfg.Retention = js_InterestPolicy
            case .workQueue: cfg.Retention = js_WorkQueuePolicy
            }
            var error = jsErrCode(0)
            var what = "add stream '\(config.name)'"
            var status = js_AddStream(nil, context.pointer, &cfg, nil, &error)
            if status != NATS_OK && error == JSStreamNameExistErr {
                what = "update stream '\(config.name)'"
                error = jsErrCode(0)
                status = js_UpdateStream(nil, context.pointer, &cfg, nil, &error)
            }
            try NATSError.check(status, what, jsErrorCode: error)
            withExtendedLifetime(strings) {}
        }
    }

    /// Deletes a stream and its messages; throws `notFound` when there is no such stream.
    public func deleteStream(_ name: String) async throws {
        try Validate.name(name, "delete stream")
        let context = self.context
        try await NATSConnection.blockingPool.run {
            var error = jsErrCode(0)
            let status = js_DeleteStream(context.pointer, name, nil, &error)
            try NATSError.check(status, "delete stream '\(name)'", jsErrorCode: error)
        }
    }

    /// The number of messages and the last sequence of a stream.
    public func streamState(_ name: String) async throws -> StreamState {
        try Validate.name(name, "stream info")
        let context = self.context
        return try await NATSConnection.blockingPool.run {
            var info: UnsafeMutablePointer<jsStreamInfo>?
            var error = jsErrCode(0)
            try NATSError.check(js_GetStreamInfo(&info, context.pointer, name, nil, &error), "stream info '\(name)'", jsErrorCode: error)
            defer { jsStreamInfo_Destroy(info) }
            guard let info else { throw NATSError(.other, "stream info '\(name)': nats.c reported success but returned no info") }
            let state = info.pointee.State
            return StreamState(messages: state.Msgs, bytes: state.Bytes, firstSequence: state.FirstSeq,
                               lastSequence: state.LastSeq, consumers: Int(state.Consumers))
        }
    }

    // MARK: Publish

    /// Publishes to a stream and waits for its acknowledgement.
    ///
    /// `messageID` goes into the `Nats-Msg-Id` header: within the stream's duplicate window a
    /// second message with the same id is not stored, and its ack has `duplicate == true`.
    /// Throws `noResponders` when no stream captures `subject`, `jetStream` when the stream
    /// refuses the message, `timeout` when no ack came within ``timeout``.
    public func publish(_ subject: String, payload: [UInt8], messageID: String? = nil, headers: NATSHeaders = NATSHeaders()) async throws -> PublishAck {
        var headers = headers
        if let messageID {
            guard !messageID.isEmpty else { throw NATSError(.invalidArgument, "JetStream publish to '\(subject)': empty message id") }
            headers["Nats-Msg-Id"] = messageID
        }
        let reply: NATSMessage
        do {
            reply = try await connection.request(subject, payload: payload, headers: headers, timeout: timeout)
        } catch let error as NATSError where error.code == .noResponders {
            throw NATSError(.noResponders, "JetStream publish to '\(subject)': no stream captures this subject")
        } catch let error as NATSError where error.code == .timeout {
            throw NATSError(.timeout, "JetStream publish to '\(subject)': no acknowledgement within \(timeout)")
        }
        let ack: APIPubAck
        do {
            ack = try JSONDecoder().decode(APIPubAck.self, from: Data(reply.payload))
        } catch {
            throw NATSError(.jetStream, "JetStream publish to '\(subject)': unreadable acknowledgement (\(reply.payload.count) bytes)")
        }
        if let apiError = ack.error {
            throw NATSError(.jetStream, "JetStream publish to '\(subject)' failed: \(apiError.description ?? "error \(apiError.code)")",
                            jetStreamErrorCode: apiError.err_code)
        }
        guard let stream = ack.stream, let sequence = ack.seq else {
            throw NATSError(.jetStream, "JetStream publish to '\(subject)': acknowledgement without stream or sequence")
        }
        return PublishAck(stream: stream, sequence: sequence, duplicate: ack.duplicate ?? false)
    }

    // MARK: Consumers

    /// Creates the durable pull consumer `durable` on `stream` (or updates it to
    /// `configuration` when it exists), then binds to it. Several `PullConsumer`s — in this or
    /// other processes — bound to the same durable share its messages.
    public func pullConsumer(stream: String, durable: String, configuration: ConsumerConfiguration) async throws -> PullConsumer {
        let what = "pull consumer '\(durable)' on stream '\(stream)'"
        try Validate.name(stream, what)
        try Validate.name(durable, what)
        if let filter = configuration.filterSubject { try Validate.subject(filter, wildcards: true, what) }
        guard configuration.maxAckPending != 0, configuration.maxDeliver != 0, configuration.ackWait > .zero else {
            throw NATSError(.invalidArgument, "\(what): ackWait must be positive, maxDeliver and maxAckPending non-zero")
        }
        let context = self.context
        let sub = try await NATSConnection.blockingPool.run { () -> SubscriptionHandle in
            let strings = CStrings()
            var cc = jsConsumerConfig()
            try NATSError.check(jsConsumerConfig_Init(&cc), "\(what): init config")
            cc.Durable = strings.make(durable)
            cc.AckPolicy = js_AckExplicit
            cc.AckWait = configuration.ackWait.natsNanoseconds
            cc.MaxDeliver = Int64(configuration.maxDeliver)
            cc.MaxAckPending = Int64(configuration.maxAckPending)
            cc.FilterSubject = strings.make(configuration.filterSubject)
            switch configuration.deliverPolicy {
            case .all: cc.DeliverPolicy = js_DeliverAll
            case .new: cc.DeliverPolicy = js_DeliverNew
            case .last: cc.DeliverPolicy = js_DeliverLast
            }
            var error = jsErrCode(0)
            var info: UnsafeMutablePointer<jsConsumerInfo>?
            try NATSError.check(js_AddConsumer(&info, context.pointer, stream, &cc, nil, &error), "create \(what)", jsErrorCode: error)
            jsConsumerInfo_Destroy(info)

            var options = jsSubOptions()
            try NATSError.check(jsSubOptions_Init(&options), "\(what): init subscribe options")
            options.Stream = strings.make(stream)
            options.Consumer = strings.make(durable)
            options.ManualAck = true
            var sub: OpaquePointer?
            error = jsErrCode(0)
            try NATSError.check(js_PullSubscribe(&sub, context.pointer, configuration.filterSubject, durable, nil, &options, &error),
                                "bind \(what)", jsErrorCode: error)
            withExtendedLifetime(strings) {}
            guard let sub else { throw NATSError(.other, "bind \(what): nats.c reported success but returned no subscription") }
            return SubscriptionHandle(sub, connection: context.connection)
        }
        return PullConsumer(jetStream: self, stream: stream, durable: durable, subscription: sub)
    }

    /// Deletes a durable consumer from the server (its position is lost).
    public func deleteConsumer(stream: String, durable: String) async throws {
        let what = "delete consumer '\(durable)' on stream '\(stream)'"
        try Validate.name(stream, what)
        try Validate.name(durable, what)
        let context = self.context
        try await NATSConnection.blockingPool.run {
            var error = jsErrCode(0)
            try NATSError.check(js_DeleteConsumer(context.pointer, stream, durable, nil, &error), what, jsErrorCode: error)
        }
    }
}

extension NATSConnection {
    /// A JetStream context whose API calls and acks wait up to `timeout` for the server.
    public func jetStream(timeout: Duration = .seconds(5)) throws -> JetStream {
        try JetStream(connection: self, timeout: timeout)
    }
}

/// Owns a `jsCtx*`; destroys it exactly once.
final class JetStreamContext: @unchecked Sendable {
    // @unchecked Sendable: nats.c's JetStream context is safe to use from several threads (it is
    // immutable after creation except for its own locked state); `pointer` never changes and is
    // destroyed only in deinit.
    let pointer: OpaquePointer
    let connection: ConnectionHandle
    init(_ pointer: OpaquePointer, connection: ConnectionHandle) {
        self.pointer = pointer
        self.connection = connection
    }
    deinit { jsCtx_Destroy(pointer) }
}

private struct APIPubAck: Decodable {
    struct APIError: Decodable {
        let code: Int
        let err_code: Int?
        let description: String?
    }
    let stream: String?
    let seq: UInt64?
    let duplicate: Bool?
    let error: APIError?
}

extension Validate {
    /// A stream or consumer name: non-empty, no `.`, `*`, `>`, whitespace or path separators.
    static func name(_ name: String, _ what: String) throws {
        if name.isEmpty || name.utf8.count > 255
            || name.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7f || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "*")
                || $0 == UInt8(ascii: ">") || $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "\\") }) {
            throw NATSError(.invalidArgument, "\(what): invalid name '\(name.prefix(100))'")
        }
    }
}

// MARK: - Configuration and results

/// A JetStream stream. Defaults: 1 replica, no age limit, 2-minute duplicate window, file storage.
public struct StreamConfiguration: Sendable, Equatable {
    public enum Storage: Sendable, Equatable { case file, memory }
    public enum Retention: Sendable, Equatable { case limits, interest, workQueue }

    public var name: String
    public var subjects: [String]
    public var replicas: Int
    /// Messages older than this are removed; nil keeps them (until other limits apply).
    public var maxAge: Duration?
    /// Window in which a repeated `Nats-Msg-Id` is recognised as a duplicate.
    public var duplicateWindow: Duration
    public var storage: Storage
    public var retention: Retention
    public var maxMessages: Int?
    public var maxBytes: Int?

    public init(name: String, subjects: [String], replicas: Int = 1, maxAge: Duration? = nil,
                duplicateWindow: Duration = .seconds(120), storage: Storage = .file,
                retention: Retention = .limits, maxMessages: Int? = nil, maxBytes: Int? = nil) {
        self.name = name
        self.subjects = subjects
        self.replicas = replicas
        self.maxAge = maxAge
        self.duplicateWindow = duplicateWindow
        self.storage = storage
        self.retention = retention
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
    }
}

public struct StreamState: Sendable, Equatable {
    public let messages: UInt64
    public let bytes: UInt64
    public let firstSequence: UInt64
    public let lastSequence: UInt64
    public let consumers: Int
}

public struct PublishAck: Sendable, Equatable {
    public let stream: String
    public let sequence: UInt64
    /// True when the stream already held a message with the same `Nats-Msg-Id` (not stored again).
    public let duplicate: Bool
}

/// A durable pull consumer with explicit acks. Defaults: deliver all, ack wait 30 s, unlimited
/// deliveries (-1), at most 1000 unacknowledged messages.
public struct ConsumerConfiguration: Sendable, Equatable {
    public enum DeliverPolicy: Sendable, Equatable { case all, new, last }

    public var filterSubject: String?
    /// Unacknowledged messages are redelivered after this long.
    public var ackWait: Duration
    /// How often a message is delivered at most; -1 = no limit.
    public var maxDeliver: Int
    /// Unacknowledged messages allowed in flight; -1 = no limit.
    public var maxAckPending: Int
    public var deliverPolicy: DeliverPolicy

    public init(filterSubject: String? = nil, ackWait: Duration = .seconds(30), maxDeliver: Int = -1,
                maxAckPending: Int = 1000, deliverPolicy: DeliverPolicy = .all) {
        self.filterSubject = filterSubject
        self.ackWait = ackWait
        self.maxDeliver = maxDeliver
        self.maxAckPending = maxAckPending
        self.deliverPolicy = deliverPolicy
    }
}
