import Hummingbird
import Secrets

/// The family web app, served at `GET /` (its page) and `GET /app/{file}` (its modules,
/// stylesheet, manifest and icons), and the browser frame, served at `GET /frame` (its page,
/// `frame.html`), `GET /frame-sw.js` (its service worker, at the root so that its scope may be
/// `/frame`) and `GET /app/frame*` (its modules): plain HTML, CSS and ES modules from
/// `Sources/Gateway/Web/`, no build step.
///
/// Like the OpenAPI document, every file is compiled into the binary (Package.swift lists each
/// one as `.embedInCode("Web/NAME")`, which SwiftPM turns into `PackageResources.NAME` with the
/// dots and dashes of the file's name made underscores), so the one `framecast` executable
/// serves the app with no folder to install beside it. A file added to `Web/` must be added to
/// Package.swift and to ``files`` (GatewayTests checks that the three agree).
///
/// Caching: every answer carries an `ETag` (the SHA-256 of the bytes, computed once) and
/// `Cache-Control: no-cache`, so a browser revalidates each file on each load (a 304 when it
/// has it) and never runs yesterday's modules against today's API. The family app has no
/// service worker; the browser frame's (`frame-sw.js`) keeps the frame's page and modules for
/// a reload without network, asking the network first (so it too runs today's files).
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
    /// The browser frame's page, `GET /frame` (also `/app/frame.html`).
    static let framePage = "frame.html"
    /// The browser frame's service worker, `GET /frame-sw.js` (also `/app/frame-sw.js`, where
    /// its scope could not reach `/frame`).
    static let frameServiceWorker = "frame-sw.js"

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
        "frame.html": File(PackageResources.frame_html, contentType: "text/html; charset=utf-8"),
        "frame.css": File(PackageResources.frame_css, contentType: "text/css; charset=utf-8"),
        "frame.js": File(PackageResources.frame_js, contentType: "text/javascript; charset=utf-8"),
        "frame-core.js": File(PackageResources.frame_core_js, contentType: "text/javascript; charset=utf-8"),
        "frame-mqtt.js": File(PackageResources.frame_mqtt_js, contentType: "text/javascript; charset=utf-8"),
        "frame-store.js": File(PackageResources.frame_store_js, contentType: "text/javascript; charset=utf-8"),
        "frame-sw.js": File(PackageResources.frame_sw_js, contentType: "text/javascript; charset=utf-8"),
        "frame.webmanifest": File(PackageResources.frame_webmanifest, contentType: "application/manifest+json"),
    ]

    /// What the page may load: its own files and API, photos from capability URLs (the gateway's
    /// public URL, which may be another host than the page's, or a CDN), and blob: URLs (a
    /// version fetched with the token, a configuration file to download). No inline script or style.
    static let contentSecurityPolicy = "default-src 'self'; img-src 'self' http: https: data: blob:; script-src 'self'; "
        + "style-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

    /// What the browser frame's page (and its service worker) may load: its own files and API
    /// (capability URLs are fetched from the page's own origin, which serves them too), the
    /// MQTT broker's WebSocket origin, blob: URLs of the photos it keeps. No inline script or style.
    static func frameContentSecurityPolicy(webSocketURL: String?) -> String {
        let broker = webSocketURL.flatMap(GatewayConfiguration.webSocketOrigin).map { " \($0)" } ?? ""
        return "default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; connect-src 'self'\(broker); "
            + "worker-src 'self'; manifest-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    }

    /// Whether `name` belongs to the browser frame (it is served with the frame's policy).
    static func isFrameFile(_ name: String) -> Bool { name.hasPrefix("frame") }

    /// The file named `name`, 304 when `If-None-Match` names its ETag, 404 for a name that is
    /// not one of the app's files.
    static func response(_ name: String, _ request: Request, contentSecurityPolicy policy: String = WebApp.contentSecurityPolicy) throws -> Response {
        guard let file = files[name] else { throw APIError.notFound("no such file in the web app") }
        var headers: HTTPFields = [
            .eTag: file.etag,
            .cacheControl: "no-cache",
            .contentSecurityPolicy: policy,
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
    /// `GET /`, `GET /frame`, `GET /frame-sw.js` and `GET /app/{file}`: public (the family app
    /// asks for the token itself, the frame pairs by code), in the route table and the OpenAPI
    /// document like every other route.
    func registerWebAppRoutes(_ router: Router<GatewayContext>) {
        // Hash every file now, at start, rather than on the first request.
        _ = WebApp.files.count
        let framePolicy = WebApp.frameContentSecurityPolicy(webSocketURL: configuration.frameWebSocketURL)
        add(router, .get, "/", auth: false) { request, _ in try WebApp.response(WebApp.page, request) }
        add(router, .get, "/frame", auth: false) { request, _ in
            try WebApp.response(WebApp.framePage, request, contentSecurityPolicy: framePolicy)
        }
        add(router, .get, "/frame-sw.js", auth: false) { request, _ in
            try WebApp.response(WebApp.frameServiceWorker, request, contentSecurityPolicy: framePolicy)
        }
        add(router, .get, "/app/:file", auth: false) { request, context in
            let name = try context.parameters.require("file")
            return try WebApp.response(name, request, contentSecurityPolicy: WebApp.isFrameFile(name) ? framePolicy : WebApp.contentSecurityPolicy)
        }
    }
}
