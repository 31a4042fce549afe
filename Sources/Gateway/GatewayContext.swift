import Foundation
import Hummingbird
import Logging
import Secrets

/// Who is calling: a person (user token) or a frame (frame token).
public enum Principal: Sendable, Equatable {
    case user(id: String)
    case frame(id: String, ownerID: String)

    /// The user id a user is, or the owner a frame acts for.
    public var userID: String {
        switch self {
        case .user(let id): id
        case .frame(_, let owner): owner
        }
    }
}

/// The request context of the gateway: Hummingbird's core context plus the request id and the
/// authenticated caller.
public struct GatewayContext: RequestContext {
    public typealias Decoder = JSONBodyDecoder

    public var coreContext: CoreRequestContextStorage
    public var requestID = ""
    public var principal: Principal?
    /// The token's hash, for logout.
    public var tokenHash: String?
    /// The client's IP address (the TCP peer), nil when the channel has none (tests in process).
    public let clientAddress: String?
    /// How long the client may take to send a JSON body (``GatewayConfiguration/readTimeout``,
    /// set by the route wrapper).
    public var readTimeout: Duration = .seconds(15)

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        clientAddress = source.channel.remoteAddress?.ipAddress
    }

    /// The largest JSON body of an API request; a larger one is 413. Uploads stream and have
    /// their own limit (``GatewayConfiguration/maxUploadBytes``).
    public static let maxJSONBodyBytes = 256 * 1024

    /// Hummingbird's name for the JSON body limit.
    public var maxUploadSize: Int { Self.maxJSONBodyBytes }

    public var requestDecoder: JSONBodyDecoder { JSONBodyDecoder(limit: Self.maxJSONBodyBytes, timeout: readTimeout) }

    public var responseEncoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    /// The authenticated user, or 401.
    public func requireUser() throws -> String {
        guard case .user(let id) = principal else { throw APIError.unauthenticated }
        return id
    }
}

/// Gives every request an id: the client's `X-Request-Id` when it is sane, else a new one.
/// It goes into the request's logger metadata (`request.id`), the response header, and the
/// NATS headers of service calls.
/// (Capability paths never get here: ``EdgeResponder`` answers them before the router.)
struct RequestIDMiddleware: RouterMiddleware {
    typealias Context = GatewayContext

    /// Made once: building a field name validates it. (HTTPTypes' documented idiom for a custom
    /// name: the initializer fails only for characters a field name may not hold, none here.)
    static let header: HTTPFields.Element.Name = .requestID

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let incoming = request.headers[Self.header].flatMap { Self.isSane($0) ? $0 : nil }
        let id: String
        if let incoming {
            id = incoming
            context.logger[metadataKey: "request.id"] = "\(id)"
        } else {
            id = UUID().uuidString.lowercased()
            context.logger[metadataKey: "request.id"] = "\(id)"
        }
        context.requestID = id
        do {
            var response = try await next(request, context)
            response.headers[Self.header] = id
            return response
        } catch var error as APIError {
            error.headers[Self.header] = id
            throw error
        }
    }

    /// At most 128 letters, digits, `-`, `_` and `.`.
    static func isSane(_ id: String) -> Bool {
        !id.isEmpty && id.count <= 128 && id.allSatisfy { $0.isLetter || $0.isNumber || "-_.".contains($0) }
    }
}

extension HTTPFields.Element.Name {
    /// `X-Request-Id`. (A literal of valid token characters: the failable initializer cannot
    /// fail for it; the fallback only keeps the compiler from needing a force unwrap.)
    static let requestID = HTTPFields.Element.Name("X-Request-Id") ?? .via
}
