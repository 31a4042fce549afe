import Foundation
import Wire

/// Everything a frame agent needs, as plain values with documented defaults.
///
/// Usually built by ``load(file:settings:)`` from the JSON the gateway answered at
/// registration (`POST /api/v1/frames`), completed or overridden by settings named like the
/// environment variables (`FRAMECAST_FRAME_ID`…); only the executable reads the environment.
public struct FrameAgentConfiguration: Sendable, Hashable {
    /// Where the agent shows photos.
    public enum Display: Sendable, Hashable, CustomStringConvertible {
        /// Writes the current screen to a PNG file at the frame's exact resolution (atomically
        /// replaced on every change; black while asleep).
        case png(path: String)
        /// A Linux framebuffer device (`/dev/fb0`): 32 bpp (BGRX) or 16 bpp (RGB565).
        case framebuffer(device: String)
        /// Nothing is drawn (the agent still fetches, caches and reports).
        case none

        /// `png:PATH`, `fb:/dev/fbN` or `none`.
        public init(parsing text: String) throws {
            if text == "none" {
                self = .none
            } else if text.hasPrefix("png:"), text.count > 4 {
                self = .png(path: String(text.dropFirst(4)))
            } else if text.hasPrefix("fb:"), text.count > 3 {
                self = .framebuffer(device: String(text.dropFirst(3)))
            } else {
                throw FrameAgentError(.invalidConfiguration, "display must be png:PATH, fb:/dev/fbN or none, not \(text.prefix(100))")
            }
        }

        public var description: String {
            switch self {
            case .png(let path): "png:\(path)"
            case .framebuffer(let device): "fb:\(device)"
            case .none: "none"
            }
        }
    }

    public var frameID: String
    /// The frame's bearer token for the gateway (metadata and downloads).
    public var frameToken: String
    public var mqttHost: String
    public var mqttPort: Int = 1883
    public var mqttUsername: String?
    public var mqttPassword: String?
    /// The gateway's base URL, e.g. `http://127.0.0.1:8080`. Every HTTP request goes here (the
    /// token is never sent to a host named in an MQTT message).
    public var gatewayURL: String
    /// The disk cache folder (photos, `index.json`, `state.json`). Default `.run/frames/{id}`.
    public var cacheDirectory: String
    /// The disk cache budget in bytes; the least recently shown photos go first. Default 512 MiB.
    public var cacheBytes: Int64 = 512 << 20
    public var display: Display = .none
    public var screenWidth: Int
    public var screenHeight: Int
    /// Heartbeat period (retained QoS 0 on `frames/{id}/heartbeat`). Default 30 s.
    public var heartbeatInterval: Duration = .seconds(30)
    /// MQTT keep-alive: the broker publishes the `offline` will after 1.5× this. Default 15 s.
    public var keepAlive: Duration = .seconds(15)
    /// Retry back-off (broker connect, downloads): starts here, doubles, capped, ±50 % jitter.
    public var retryDelay: Duration = .milliseconds(500)
    public var retryDelayMax: Duration = .seconds(30)
    /// One HTTP request's time limit.
    public var httpTimeout: Duration = .seconds(30)
    /// Slideshow interval until the frame's config says otherwise.
    public var defaultInterval: Duration = .seconds(30)

    public init(frameID: String, frameToken: String, mqttHost: String, mqttPort: Int = 1883, gatewayURL: String,
                cacheDirectory: String, screenWidth: Int, screenHeight: Int, display: Display = .none) {
        self.frameID = frameID
        self.frameToken = frameToken
        self.mqttHost = mqttHost
        self.mqttPort = mqttPort
        self.gatewayURL = gatewayURL
        self.cacheDirectory = cacheDirectory
        self.screenWidth = screenWidth
        self.screenHeight = screenHeight
        self.display = display
    }

    /// The setting names (also the environment variables the executable reads).
    public enum Setting {
        public static let configFile = "FRAMECAST_FRAME_CONFIG"
        public static let frameID = "FRAMECAST_FRAME_ID"
        public static let frameToken = "FRAMECAST_FRAME_TOKEN"
        public static let mqttHost = "FRAMECAST_FRAME_MQTT_HOST"
        public static let mqttPort = "FRAMECAST_FRAME_MQTT_PORT"
        public static let mqttUsername = "FRAMECAST_FRAME_MQTT_USERNAME"
        public static let mqttPassword = "FRAMECAST_FRAME_MQTT_PASSWORD"
        public static let gatewayURL = "FRAMECAST_GATEWAY_URL"
        public static let cacheDirectory = "FRAMECAST_FRAME_CACHE_DIR"
        public static let cacheBytes = "FRAMECAST_FRAME_CACHE_BYTES"
        public static let display = "FRAMECAST_FRAME_DISPLAY"
        public static let screen = "FRAMECAST_FRAME_SCREEN"
        public static let heartbeatSeconds = "FRAMECAST_FRAME_HEARTBEAT_SECONDS"
        public static let all = [configFile, frameID, frameToken, mqttHost, mqttPort, mqttUsername, mqttPassword, gatewayURL,
                                 cacheDirectory, cacheBytes, display, screen, heartbeatSeconds]
    }

    /// The configuration file: the gateway's registration answer as is, plus optional keys.
    struct File: Decodable {
        struct MQTT: Decodable { var host: String?; var port: Int?; var username: String?; var password: String? }
        struct Frame: Decodable { var width: Int?; var height: Int? }
        var frame_id: String?
        var frame_token: String?
        var mqtt: MQTT?
        var frame: Frame?
        var gateway_url: String?
        var cache_dir: String?
        var cache_bytes: Int64?
        var display: String?
        var screen: String?
        var heartbeat_seconds: Int?
    }

    /// Builds the configuration from a JSON file's bytes (optional) and settings (which win over
    /// the file; keys from ``Setting``). Throws `invalidConfiguration` naming what is missing
    /// or wrong.
    public static func load(file: [UInt8]?, settings: [String: String]) throws -> FrameAgentConfiguration {
        var f = File()
        if let file {
            do {
                f = try JSONDecoder().decode(File.self, from: Data(file))
            } catch {
                throw FrameAgentError(.invalidConfiguration, "the configuration file is not the expected JSON object")
            }
        }
        func setting(_ name: String) -> String? {
            guard let value = settings[name]?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
            return value
        }
        func require(_ value: String?, _ what: String, _ name: String) throws -> String {
            guard let value, !value.isEmpty else {
                throw FrameAgentError(.invalidConfiguration, "\(what) is missing (\(name), or the configuration file)")
            }
            return value
        }
        let frameID = try require(setting(Setting.frameID) ?? f.frame_id, "the frame id", Setting.frameID)
        guard TopicID.isValid(frameID), SafeID.isValid(frameID) else {
            throw FrameAgentError(.invalidConfiguration, "the frame id must be 1...64 letters, digits, - or _ (it names MQTT topics and the cache folder)")
        }
        let token = try require(setting(Setting.frameToken) ?? f.frame_token, "the frame token", Setting.frameToken)
        let host = try require(setting(Setting.mqttHost) ?? f.mqtt?.host, "the MQTT broker host", Setting.mqttHost)
        let portText = setting(Setting.mqttPort) ?? f.mqtt?.port.map(String.init) ?? "1883"
        guard let port = Int(portText), (1...65535).contains(port) else {
            throw FrameAgentError(.invalidConfiguration, "the MQTT port must be 1...65535, not \(portText.prefix(20))")
        }
        let gateway = try require(setting(Setting.gatewayURL) ?? f.gateway_url, "the gateway URL", Setting.gatewayURL)
        guard let url = URLComponents(string: gateway), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
              let gatewayHost = url.host, !gatewayHost.isEmpty, url.query == nil else {
            throw FrameAgentError(.invalidConfiguration, "the gateway URL must be http(s)://HOST[:PORT][/PATH], not \(gateway.prefix(200))")
        }
        var (width, height) = (f.frame?.width ?? 0, f.frame?.height ?? 0)
        if let screen = setting(Setting.screen) ?? f.screen {
            (width, height) = try parseScreen(screen)
        }
        guard (1...16_384).contains(width), (1...16_384).contains(height) else {
            throw FrameAgentError(.invalidConfiguration, "the screen size is missing or not 1...16384 on each side (\(Setting.screen)=WxH, or frame.width/height in the file)")
        }
        let cacheDirectory = setting(Setting.cacheDirectory) ?? f.cache_dir ?? ".run/frames/\(frameID)"
        var configuration = FrameAgentConfiguration(
            frameID: frameID, frameToken: token, mqttHost: host, mqttPort: port,
            gatewayURL: gateway.hasSuffix("/") ? String(gateway.dropLast()) : gateway,
            cacheDirectory: cacheDirectory, screenWidth: width, screenHeight: height)
        configuration.mqttUsername = setting(Setting.mqttUsername) ?? f.mqtt?.username
        configuration.mqttPassword = setting(Setting.mqttPassword) ?? f.mqtt?.password
        if let bytes = setting(Setting.cacheBytes).map({ Int64($0) }) ?? f.cache_bytes.map(Optional.some) {
            guard let bytes, bytes >= 1 << 20 else {
                throw FrameAgentError(.invalidConfiguration, "the cache size must be a number of bytes, at least 1048576")
            }
            configuration.cacheBytes = bytes
        }
        if let display = setting(Setting.display) ?? f.display {
            configuration.display = try Display(parsing: display)
        }
        if let heartbeat = setting(Setting.heartbeatSeconds).map({ Int($0) }) ?? f.heartbeat_seconds.map(Optional.some) {
            guard let heartbeat, (1...3600).contains(heartbeat) else {
                throw FrameAgentError(.invalidConfiguration, "the heartbeat period must be 1...3600 seconds")
            }
            configuration.heartbeatInterval = .seconds(heartbeat)
        }
        return configuration
    }

    /// `WxH` (e.g. `1024x600`) → (width, height).
    public static func parseScreen(_ text: String) throws -> (Int, Int) {
        let parts = text.lowercased().split(separator: "x", omittingEmptySubsequences: false)
        guard parts.count == 2, let w = Int(parts[0]), let h = Int(parts[1]), (1...16_384).contains(w), (1...16_384).contains(h) else {
            throw FrameAgentError(.invalidConfiguration, "the screen must be WxH with each side 1...16384, not \(text.prefix(40))")
        }
        return (w, h)
    }
}
