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
        encoder.outputFormatting = [.sortedKeys]
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
            let code = switch error.status {
            case .badRequest: "bad_request"
            case .unauthorized: "unauthorized"
            case .forbidden: "forbidden"
            case .notFound: "not_found"
            case .methodNotAllowed: "method_not_allowed"
            case .contentTooLarge: "too_large"
            case .unsupportedMediaType: "unsupported_media_type"
            default: "http_\(error.status.code)"
            }
            var converted = APIError(error.status, code, error.body ?? error.status.reasonPhrase)
            converted.headers = error.headers
            throw converted
        } catch let error as DecodingError {
            throw APIError.badRequest("invalid JSON body: \(Self.describe(error))")
        } catch {
            context.logger.error("request failed", metadata: ["error": "\(error)"])
            throw APIError.internalError
        }
    }

    static func describe(_ error: DecodingError) -> String {
        switch error {
        case .keyNotFound(let key, _): "missing field \"\(key.stringValue)\""
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            "wrong type at \"\(context.codingPath.map(\.stringValue).joined(separator: "."))\""
        case .dataCorrupted: "not valid JSON"
        @unknown default: "not valid JSON"
        }
    }
}
