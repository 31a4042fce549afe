import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// A small keep-alive HTTP/1.1 client on SwiftNIO (already in the dependency graph through
/// Hummingbird): a pool of at most `connections` connections to one host, one request at a
/// time on each. The fan-out benchmark uses it to play thousands of frames fetching at once
/// without a connection (or a thread) per frame.
struct HTTPRequest: Sendable {
    var method: HTTPMethod = .GET
    var path: String
    var headers: [(String, String)] = []
    var body: [UInt8] = []
}

struct HTTPReply: Sendable {
    var status: Int
    var body: ByteBuffer

    var bytes: [UInt8] { Array(body.readableBytesView) }
    func json<T: Decodable>(_ type: T.Type) throws -> T { try JSONDecoder().decode(type, from: Data(body.readableBytesView)) }
}

struct HTTPClientError: Error, CustomStringConvertible {
    var description: String
}

/// Collects one full response per request written, in order.
private final class ExchangeHandler: ChannelDuplexHandler {
    typealias InboundIn = NIOHTTPClientResponseFull
    typealias OutboundIn = Exchange
    typealias OutboundOut = HTTPClientRequestPart

    struct Exchange: Sendable {
        var request: HTTPRequest
        var host: String
        var promise: EventLoopPromise<HTTPReply>
    }

    private var waiting = CircularBuffer<EventLoopPromise<HTTPReply>>()

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let exchange = unwrapOutboundIn(data)
        waiting.append(exchange.promise)
        var head = HTTPRequestHead(version: .http1_1, method: exchange.request.method, uri: exchange.request.path)
        head.headers.add(name: "Host", value: exchange.host)
        for (name, value) in exchange.request.headers { head.headers.add(name: name, value: value) }
        if !exchange.request.body.isEmpty || exchange.request.method == .POST || exchange.request.method == .PUT {
            head.headers.add(name: "Content-Length", value: "\(exchange.request.body.count)")
        }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if !exchange.request.body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: exchange.request.body)))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let response = unwrapInboundIn(data)
        guard let promise = waiting.popFirst() else { return }
        promise.succeed(HTTPReply(status: Int(response.head.status.code), body: response.body ?? ByteBuffer()))
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        failAll(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(HTTPClientError(description: "connection closed"))
        context.fireChannelInactive()
    }

    private func failAll(_ error: Error) {
        while let promise = waiting.popFirst() { promise.fail(error) }
    }
}

actor HTTPPool {
    let host: String
    let port: Int
    let limit: Int
    let group: EventLoopGroup
    private var idle: [Channel] = []
    private var open = 0
    private var waiters: [CheckedContinuation<Channel?, Never>] = []
    private(set) var requests = 0

    init(host: String, port: Int, connections: Int, group: EventLoopGroup) {
        self.host = host
        self.port = port
        self.limit = connections
        self.group = group
    }

    /// Sends one request on a pooled connection (a new one if none is idle and the pool is
    /// not full; otherwise waits for one). A connection that failed is dropped.
    nonisolated func send(_ request: HTTPRequest) async throws -> HTTPReply {
        var attempts = 0
        while true {
            let (channel, reused) = try await checkout()
            do {
                let promise = channel.eventLoop.makePromise(of: HTTPReply.self)
                // A connection the server closed while it sat idle fails the write before the
                // exchange reaches the handler: the reply promise then fails with it (a second
                // completion of a promise is ignored), instead of waiting forever.
                let written = channel.eventLoop.makePromise(of: Void.self)
                written.futureResult.whenFailure { promise.fail($0) }
                channel.writeAndFlush(ExchangeHandler.Exchange(request: request, host: "\(host):\(port)", promise: promise),
                                      promise: written)
                let reply = try await promise.futureResult.get()
                await checkin(channel)
                return reply
            } catch {
                await discard(channel)
                attempts += 1
                // A kept-alive connection the server closed under the request: once more, on a
                // fresh one (the request got no answer, so the server did not take it).
                if reused && attempts == 1 { continue }
                throw error
            }
        }
    }

    /// A connection, and whether it served requests before.
    private func checkout() async throws -> (Channel, Bool) {
        requests += 1
        while let channel = idle.popLast() {
            if channel.isActive { return (channel, true) }
            // Closed by the server while idle (e.g. its keep-alive timeout): its slot is reused.
            channel.close(promise: nil)
            open -= 1
        }
        if open < limit {
            open += 1
            do {
                return (try await connect(), false)
            } catch {
                open -= 1
                throw error
            }
        }
        let channel = await withCheckedContinuation { waiters.append($0) }
        if let channel { return (channel, true) }
        // A connection was dropped: its slot is ours.
        do {
            return (try await connect(), false)
        } catch {
            open -= 1
            throw error
        }
    }

    private func checkin(_ channel: Channel) {
        if !channel.isActive { discard(channel); return }
        if !waiters.isEmpty { waiters.removeFirst().resume(returning: channel) } else { idle.append(channel) }
    }

    private func discard(_ channel: Channel) {
        channel.close(promise: nil)
        if !waiters.isEmpty { waiters.removeFirst().resume(returning: nil) } else { open -= 1 }
    }

    private func connect() async throws -> Channel {
        try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture(withResultOf: {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(NIOHTTPClientResponseAggregator(maxContentLength: 64 << 20))
                    try channel.pipeline.syncOperations.addHandler(ExchangeHandler())
                })
            }
            .connect(host: host, port: port).get()
    }

    func close() {
        for channel in idle { channel.close(promise: nil) }
        idle = []
    }
}

/// A multipart/form-data body with a `file` part and an optional `metadata` text part.
func multipartBody(file: [UInt8], fileName: String, contentType: String, metadata: String?) -> (body: [UInt8], contentType: String) {
    let boundary = "framecast-bench-\(UUID().uuidString)"
    var body: [UInt8] = []
    if let metadata {
        body += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n\(metadata)\r\n".utf8)
    }
    body += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\(fileName)\"\r\nContent-Type: \(contentType)\r\n\r\n".utf8)
    body += file
    body += Array("\r\n--\(boundary)--\r\n".utf8)
    return (body, "multipart/form-data; boundary=\(boundary)")
}
