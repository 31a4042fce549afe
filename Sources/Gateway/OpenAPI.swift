import Hummingbird

/// The OpenAPI description of the gateway's API, served at `GET /openapi.yaml`.
///
/// The document is a file of its own, `Sources/Gateway/openapi.yaml`, embedded in the binary
/// when it is built (Package.swift: `resources: [.embedInCode("openapi.yaml")]`, which SwiftPM
/// turns into `PackageResources.openapi_yaml`): the one `framecast` executable carries it, with
/// no resource bundle to install beside it (deploy/Containerfile and the systemd units ship the
/// executable alone), and a build without the file fails. Every route the gateway registers
/// must appear in it with its security (GatewayTests checks the router's route table against
/// it); scripts/api-check runs schemathesis against the served copy.
enum OpenAPI {
    /// The document's bytes, as in the file.
    static let bytes: [UInt8] = PackageResources.openapi_yaml

    /// The document's text.
    static let document = String(decoding: bytes, as: UTF8.self)

    /// The body of `GET /openapi.yaml`: the file, byte for byte.
    static let body = ByteBuffer(bytes: bytes)

    /// RFC 9512's media type for YAML.
    static let contentType = "application/yaml"

    /// A document the gateway refuses to start with.
    struct Invalid: Error, CustomStringConvertible {
        let description: String
    }

    /// Throws, saying why, when the embedded document is empty, not UTF-8 or not an OpenAPI 3
    /// document with paths (GatewayTests checks it; a missing file already fails the build).
    static func check() throws {
        guard !bytes.isEmpty else {
            throw Invalid(description: "the OpenAPI document (Sources/Gateway/openapi.yaml, embedded at build time) is empty")
        }
        guard !document.unicodeScalars.contains("\u{FFFD}") else {
            throw Invalid(description: "the OpenAPI document (Sources/Gateway/openapi.yaml) is not valid UTF-8")
        }
        guard document.hasPrefix("openapi: 3."), document.contains("\npaths:\n") else {
            throw Invalid(description: "the OpenAPI document (Sources/Gateway/openapi.yaml) must start with \"openapi: 3.\" and have paths")
        }
    }
}
