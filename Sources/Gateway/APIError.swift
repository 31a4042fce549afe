import Foundation
import Hummingbird
import ServiceKit
import Wire

/// An error answered as `{"error": {"code": "…", "message": "…"}}` with its HTTP status.
public struct APIError: Error, HTTPResponseError, CustomStringConvertible {
    public let status: HTTPResponse.Status
    public let code: String
    public let message: String
    public var headers: HTTPFields = [:]

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public static func badRequest(_ message: String) -> APIError { .init(.badRequest, "bad_request", message) }
    public static let unauthenticated = APIError(.unauthorized, "unauthorized", "a valid bearer token is required")
    public static func forbidden(_ message: String) -> APIError { .init(.forbidden, "forbidden", message) }
    public static func notFound(_ message: String = "not found") -> APIError { .init(.notFound, "not_found", message) }
    public static func conflict(_ message: String) -> APIError { .init(.conflict, "conflict", message) }
    public static func tooLarge(_ message: String) -> APIError { .init(.contentTooLarge, "too_large", message) }
    public static func unsupportedMedia(_ message: String) -> APIError { .init(.unsupportedMediaType, "unsupported_media_type", message) }
    public static func unavailable(_ message: String) -> APIError { .init(.serviceUnavailable, "unavailable", message) }
    /// 408: the client did not send its request in time; the connection is closed after it.
    public static func requestTimeout(_ message: String) -> APIError {
        var error = APIError(.requestTimeout, "request_timeout", message)
        error.headers[.connection] = "close"
        return error
    }
    /// 429 with `Retry-After` (whole seconds, at least 1).
    public static func tooManyRequests(_ message: String, retryAfter: Duration) -> APIError {
        let seconds = max(1, Int((retryAfter / .seconds(1)).rounded(.up)))
        var error = APIError(.tooManyRequests, "too_many_requests", "\(message); try again in \(seconds) s")
        error.headers[.retryAfter] = String(seconds)
        return error
    }
    public static let internalError = APIError(.internalServerError, "internal", "internal error")

    /// The HTTP face of a service's reply status.
    public init(_ error: ServiceError) {
        switch error.status {
        case .notFound: self = .notFound(error.message)
        case .invalid: self = .badRequest(error.message)
        case .conflict: self = .conflict(error.message)
        case .unauthorized: self = .forbidden(error.message)
        case .unavailable: self = .unavailable(error.message)
        case .unsupported: self = .unsupportedMedia(error.message)
        default: self = .internalError
        }
    }

    public var description: String { "\(status.code) \(code): \(message)" }

    struct Body: Encodable {
        struct Detail: Encodable {
            let code: String
            let message: String
        }
        let error: Detail
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(Body(error: .init(code: code, message: message)))
        var headers = self.headers
        headers[.contentType] = "application/json; charset=utf-8"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// Turns any error a route throws into an ``APIError`` response, so every error has the same
/// shape (Hummingbird's own HTTPErrors and unexpected errors included).
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            throw error
        } catch let error as ServiceError {
            throw APIError(error)
        } catch let error as HTTPError {
            var converted = APIError(error.status, Self.code(error.status), error.body ?? error.status.reasonPhrase)
            converted.headers = error.headers
            throw converted
        } catch let error as DecodingError {
            throw APIError.invalidJSON(error)
        } catch let error as any HTTPResponseError {
            // Other errors that know their status (NIO's "too many bytes" is 413): same shape,
            // a message of our own rather than the error's description.
            throw APIError(error.status, Self.code(error.status), error.status == .contentTooLarge
                           ? "the request body is too large" : error.status.reasonPhrase)
        } catch {
            context.logger.error("request failed", metadata: ["error": "\(error)"])
            throw APIError.internalError
        }
    }

    static func code(_ status: HTTPResponse.Status) -> String {
        switch status {
        case .badRequest: "bad_request"
        case .unauthorized: "unauthorized"
        case .forbidden: "forbidden"
        case .notFound: "not_found"
        case .methodNotAllowed: "method_not_allowed"
        case .requestTimeout: "request_timeout"
        case .contentTooLarge: "too_large"
        case .unsupportedMediaType: "unsupported_media_type"
        case .tooManyRequests: "too_many_requests"
        default: "http_\(status.code)"
        }
    }
}

extension APIError {
    /// 400 for a JSON body that does not decode: which field is wrong and how, never the
    /// decoder's own debug text (Swift type names, underlying errors).
    static func invalidJSON(_ error: DecodingError) -> APIError {
        func path(_ keys: [any CodingKey]) -> String {
            keys.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
        }
        func kind(_ type: Any.Type) -> String {
            if type == String.self { return "a string" }
            if type == Bool.self { return "true or false" }
            if type is any BinaryInteger.Type { return "a whole number" }
            if type is any BinaryFloatingPoint.Type { return "a number" }
            if type == [Any].self { return "an array" }  // what JSONDecoder reports for any array
            return "an object"
        }
        let message: String
        switch error {
        case .keyNotFound(let key, let context):
            message = "missing field \"\(path(context.codingPath + [key]))\""
        case .valueNotFound(_, let context) where !context.codingPath.isEmpty:
            message = "\"\(path(context.codingPath))\" must not be null"
        case .typeMismatch(let type, let context) where !context.codingPath.isEmpty:
            message = "\"\(path(context.codingPath))\" must be \(kind(type))"
        case .dataCorrupted(let context) where !context.codingPath.isEmpty:
            message = "\"\(path(context.codingPath))\" has a value out of range or of the wrong form"
        case .typeMismatch, .valueNotFound:
            message = "the body must be a JSON object"
        case .dataCorrupted:
            message = "the body is not valid JSON"
        @unknown default:
            message = "the body is not valid JSON"
        }
        return .badRequest("invalid JSON body: \(message)")
    }
}
