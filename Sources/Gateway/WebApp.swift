import Hummingbird
import Secrets

/// The family web app, served at `GET /` (its page) and `GET /app/{file}` (its modules,
/// stylesheet, manifest and icons): plain HTML, CSS and ES modules from `Sources/Gateway/Web/`,
/// no build step.
///
/// Like the OpenAPI document, every file is compiled into the binary (Package.swift lists each
/// one as `.embedInCode("Web/NAME")`, which SwiftPM turns into `PackageResources.NAME` with the
/// dots and dashes of the file's name made underscores), so the one `framecast` executable
/// serves the app with no folder to install beside it. A file added to `Web/` must be added to
/// Package.swift and to ``files`` (GatewayTests checks that the three agree).
///
/// Caching: every answer carries an `ETag` (the SHA-256 of the bytes, computed once) and
/// `Cache-Control: no-cache`, so a browser revalidates each file on each load (a 304 when it
/// has it) and never runs yesterday's modules against today's API. The app has no service worker.
enum WebApp {
    struct File: Sendable {
        let body: ByteBuffer
        let contentType: String
        let etag: String

        init(_ bytes: [UInt8], contentType: String) {
            var hasher = SHA256()
            hasher.update(bytes)
            self.body = ByteBuffer(bytes: bytes)
            self.contentType = contentType
            self.etag = "\"\(hasher.finalizeHex())\""
        }
    }

    /// The page `GET /` answers (also served as `/app/index.html`).
    static let page = "index.html"

    /// Every file of the app by its name under `/app/`, with its media type.
    static let files: [String: File] = [
        "index.html": File(PackageResources.index_html, contentType: "text/html; charset=utf-8"),
        "styles.css": File(PackageResources.styles_css, contentType: "text/css; charset=utf-8"),
        "app.js": File(PackageResources.app_js, contentType: "text/javascript; charset=utf-8"),
        "api.js": File(PackageResources.api_js, contentType: "text/javascript; charset=utf-8"),
        "ui.js": File(PackageResources.ui_js, contentType: "text/javascript; charset=utf-8"),
        "thumbs.js": File(PackageResources.thumbs_js, contentType: "text/javascript; charset=utf-8"),
        "upload.js": File(PackageResources.upload_js, contentType: "text/javascript; charset=utf-8"),
        "photos.js": File(PackageResources.photos_js, contentType: "text/javascript; charset=utf-8"),
        "albums.js": File(PackageResources.albums_js, contentType: "text/javascript; charset=utf-8"),
        "frames.js": File(PackageResources.frames_js, contentType: "text/javascript; charset=utf-8"),
        "manifest.webmanifest": File(PackageResources.manifest_webmanifest, contentType: "application/manifest+json"),
        "icon.svg": File(PackageResources.icon_svg, contentType: "image/svg+xml"),
        "icon192.png": File(PackageResources.icon192_png, contentType: "image/png"),
        "icon512.png": File(PackageResources.icon512_png, contentType: "image/png"),
    ]

    /// What the page may load: its own files and API, photos from capability URLs (the gateway's
    /// public URL, which may be another host than the page's, or a CDN), and blob: URLs (a
    /// version fetched with the token, a configuration file to download). No inline script or style.
    static let contentSecurityPolicy = "default-src 'self'; img-src 'self' http: https: data: blob:; script-src 'self'; "
        + "style-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

    /// The file named `name`, 304 when `If-None-Match` names its ETag, 404 for a name that is
    /// not one of the app's files.
    static func response(_ name: String, _ request: Request) throws -> Response {
        guard let file = files[name] else { throw APIError.notFound("no such file in the web app") }
        var headers: HTTPFields = [
            .eTag: file.etag,
            .cacheControl: "no-cache",
            .contentSecurityPolicy: contentSecurityPolicy,
            .xContentTypeOptions: "nosniff",
        ]
        if let match = request.headers[.ifNoneMatch], HTTPConditions.matches(ifNoneMatch: match, etag: file.etag) {
            return Response(status: .notModified, headers: headers)
        }
        headers[.contentType] = file.contentType
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: file.body))
    }
}

extension Gateway {
    /// `GET /` and `GET /app/{file}`: public (the app asks for the token itself), in the route
    /// table and the OpenAPI document like every other route.
    func registerWebAppRoutes(_ router: Router<GatewayContext>) {
        // Hash every file now, at start, rather than on the first request.
        _ = WebApp.files.count
        add(router, .get, "/", auth: false) { request, _ in try WebApp.response(WebApp.page, request) }
        add(router, .get, "/app/:file", auth: false) { request, context in
            try WebApp.response(try context.parameters.require("file"), request)
        }
    }
}
