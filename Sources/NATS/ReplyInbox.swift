import Logging
import Threads
internal import CNats

/// The one reply subscription of a connection (`<inbox prefix>.<nuid>.*`, `_INBOX.<nuid>.*` by
/// default) and the table of requests waiting for a reply on `<inbox prefix>.<nuid>.<token>`.
final class ReplyInbox: Sendable {
    let prefix: String
    let table = Locked(Table())
    private let subscription = Locked<SubscriptionHandle?>(nil)

    struct Table {
        var nextToken: UInt64 = 1
        var slots: [UInt64: Slot] = [:]
        var closedError: NATSError?
    }

    enum Slot {
        case pending
        case waiting(CheckedContinuation<NATSMessage, Error>)
        case done(Result<NATSMessage, Error>)
    }

    /// `inboxPrefix`: the connection's (``NATSConfiguration/inboxPrefix``).
    init(connection: ConnectionHandle, inboxPrefix: String, logger: Logger) throws {
        prefix = try makeInbox(prefix: inboxPrefix) + "."

        let closure = Unmanaged.passRetained(self).toOpaque()
        var sub: OpaquePointer?
        let what = "subscribe to the reply inbox '\(prefix)*'"
        let status = natsConnection_Subscribe(&sub, connection.pointer, prefix + "*", inboxMessage, closure)
        guard status == NATS_OK, let sub else {
            Unmanaged<ReplyInbox>.fromOpaque(closure).release()
            throw NATSError.from(status, what)
        }
        let handle = SubscriptionHandle(sub, connection: connection)
        let completion = natsSubscription_SetOnCompleteCB(sub, inboxComplete, closure)
        guard completion == NATS_OK else {
            // See SubscriptionHandle.subscribe: leak rather than free while a callback may run.
            throw NATSError.from(completion, "\(what): set completion callback")
        }
        subscription.withLock { $0 = handle }
    }

    /// A fresh token and its reply subject. Throws once the connection closed.
    func reserve() throws -> (UInt64, String) {
        try table.withLock { t in
            if let error = t.closedError { throw error }
            let token = t.nextToken
            t.nextToken += 1
            t.slots[token] = .pending
            return (token, prefix + String(token))
        }
    }

    func remove(_ token: UInt64) {
        table.withLock { _ = $0.slots.removeValue(forKey: token) }
    }

    /// Waits for the reply to `token` (which must be reserved).
    func wait(_ token: UInt64) async throws -> NATSMessage {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<NATSMessage, Error>) in
                let ready = table.withLock { t -> Result<NATSMessage, Error>? in
                    switch t.slots[token] {
                    case .pending:
                        t.slots[token] = .waiting(continuation)
                        return nil
                    case .done(let result):
                        return result
                    case .waiting:
                        return .failure(NATSError(.other, "request token \(token) awaited twice"))
                    case nil:
                        return .failure(t.closedError ?? NATSError(.other, "request token \(token) is unknown"))
                    }
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            complete(token, .failure(CancellationError()))
        }
    }

    /// Delivers the outcome of `token` (the first one wins; unknown tokens are late replies).
    func complete(_ token: UInt64, _ result: Result<NATSMessage, Error>) {
        let waiter = table.withLock { t -> CheckedContinuation<NATSMessage, Error>? in
            switch t.slots[token] {
            case .pending:
                t.slots[token] = .done(result)
                return nil
            case .waiting(let continuation):
                t.slots[token] = .done(result)
                return continuation
            case .done, nil:
                return nil
            }
        }
        waiter?.resume(with: result)
    }

    /// Fails every waiting request, and every later one, with `error`.
    func failAll(_ error: NATSError) {
        let waiters = table.withLock { t -> [CheckedContinuation<NATSMessage, Error>] in
            if t.closedError == nil { t.closedError = error }
            var waiters: [CheckedContinuation<NATSMessage, Error>] = []
            for (token, slot) in t.slots {
                switch slot {
                case .pending: t.slots[token] = .done(.failure(error))
                case .waiting(let c): t.slots[token] = .done(.failure(error)); waiters.append(c)
                case .done: break
                }
            }
            return waiters
        }
        for w in waiters { w.resume(throwing: error) }
    }

    func received(_ msg: OpaquePointer) {
        let subject = String(cString: natsMsg_GetSubject(msg))
        guard subject.hasPrefix(prefix), let token = UInt64(subject.dropFirst(prefix.count)) else { return }
        if natsMsg_IsNoResponders(msg) {
            complete(token, .failure(NATSError(.noResponders, "no responders", status: "503")))
        } else {
            complete(token, .success(makeMessage(msg)))
        }
    }
}

/// `<prefix>.<nuid>`: a subject nobody else subscribes to (nats.c's unique id under `prefix`).
func makeInbox(prefix: String) throws -> String {
    var inbox: UnsafeMutablePointer<natsInbox>?
    try NATSError.check(natsInbox_Create(&inbox), "create an inbox")
    guard let inbox else { throw NATSError(.other, "create an inbox: none returned") }
    defer { natsInbox_Destroy(inbox) }
    // natsInbox_Create makes `_INBOX.<nuid>`: keep the nuid.
    let created = String(cString: inbox)
    guard let nuid = created.split(separator: ".").last, !nuid.isEmpty else {
        throw NATSError(.other, "create an inbox: unexpected '\(created)'")
    }
    return "\(prefix).\(nuid)"
}

private let inboxMessage: natsMsgHandler = { _, _, msg, closure in
    guard let msg else { return }
    defer { natsMsg_Destroy(msg) }
    guard let closure else { return }
    Unmanaged<ReplyInbox>.fromOpaque(closure).takeUnretainedValue().received(msg)
}

private let inboxComplete: natsOnCompleteCB = { closure in
    guard let closure else { return }
    Unmanaged<ReplyInbox>.fromOpaque(closure).takeRetainedValue()
        .failAll(NATSError(.connectionClosed, "the connection was closed"))
}
