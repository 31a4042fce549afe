import Foundation
import FrameAgent
import Wire

// fuzz-frame-payloads: whatever arrives on a frame's MQTT topics (or from a frame, on the album
// service's), decoding it never crashes, nor does what the agent does at once with what decoded.
//
// Input: the first byte chooses the kind (`Kind`, modulo the count); the rest is the payload.
// Payloads are decoded with `FrameTopics.decode`, the function the frame agent
// (FrameAgent.handle) and the album service use, and the decoded values go through the pure
// checks the agent applies next (ids, the sleep window, a command's arguments, the version to
// download). fuzz/make-corpus writes seeds with the same kind numbers: keep both in this order.

private enum Kind: UInt8, CaseIterable {
    /// frames/{id}/sync (retained): what the frame should show.
    case sync
    /// albums/{id}/photo_added.
    case photoAdded
    /// albums/{id}/photo_removed.
    case photoRemoved
    /// frames/{id}/command.
    case command
    /// frames/{id}/config (retained): interval, shuffle, sleep window, schedule.
    case frameConfig
    /// albums/{id}/config (retained).
    case albumConfig
    /// frames/{id}/status, from a frame (the album service decodes it).
    case status
    /// frames/{id}/heartbeat, from a frame (the album service decodes it).
    case heartbeat
    /// The topic a message came on (the album service takes the frame id from it).
    case topic
    /// The photo document the agent fetches after a photo_added (GET /api/v1/photos/{id}):
    /// decoded, then the version for its screen chosen.
    case photoDocument
}

/// A fixed instant, so a run depends on its input only.
private let instant = Date(timeIntervalSince1970: 1_700_000_000)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFramePayloads(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data = data, size > 0 else { return 0 }
    let kinds = Kind.allCases
    let kind = kinds[Int(data[0]) % kinds.count]
    let payload = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    // The agent ignores an empty payload (a cleared retained message) before decoding.
    guard !payload.isEmpty else { return 0 }
    switch kind {
    case .sync:
        guard let sync = try? FrameTopics.decode(FrameSyncMessage.self, from: payload) else { return 0 }
        _ = sync.frameID.lowercased()
        for album in sync.albumIDs where TopicID.isValid(album) && SafeID.isValid(album) {
            // The topics the agent subscribes to for the albums of a sync.
            _ = [FrameTopics.photoAdded(album: album), FrameTopics.photoRemoved(album: album), FrameTopics.albumConfig(album: album)]
        }
        for photo in sync.photos {
            _ = SafeID.isValid(photo.fileID) && SafeID.isValid(photo.albumID)
        }
    case .photoAdded:
        guard let message = try? FrameTopics.decode(PhotoAddedMessage.self, from: payload) else { return 0 }
        _ = SafeID.isValid(message.fileID) && SafeID.isValid(message.albumID)
        _ = "added:\(message.albumID)/\(message.fileID)"
    case .photoRemoved:
        guard let message = try? FrameTopics.decode(PhotoRemovedMessage.self, from: payload) else { return 0 }
        _ = SafeID.isValid(message.fileID) && SafeID.isValid(message.albumID)
    case .command:
        guard let command = try? FrameTopics.decode(FrameCommandMessage.self, from: payload) else { return 0 }
        _ = !command.id.isEmpty && command.id.utf8.count <= 128
        _ = FrameCommandMessage.known.contains(command.command)
        // set_interval: args.seconds in 1...86400.
        if let seconds = command.args["seconds"].flatMap(Int.init) { _ = (1...86_400).contains(seconds) }
        _ = "command \(command.id.prefix(128)): unknown command \(command.command.prefix(40))"
    case .frameConfig:
        guard let config = try? FrameTopics.decode(FrameConfigMessage.self, from: payload) else { return 0 }
        let interval: Int? = config.intervalSeconds > 0 ? Int(min(config.intervalSeconds, 86_400)) : nil
        _ = interval
        if let window = SleepWindow(start: config.sleepStart, end: config.sleepEnd, timeZone: config.timeZone) {
            _ = window.contains(instant)
        }
        for slot in config.schedule ?? [] {
            for day in slot.days { _ = ScheduleEntry.day(named: day) }
        }
    case .albumConfig:
        _ = try? FrameTopics.decode(AlbumConfigMessage.self, from: payload)
    case .status:
        _ = try? FrameTopics.decode(FrameStatusMessage.self, from: payload)
    case .heartbeat:
        _ = try? FrameTopics.decode(FrameHeartbeatMessage.self, from: payload)
    case .topic:
        let topic = String(decoding: payload, as: UTF8.self)
        _ = FrameTopics.frameID(in: topic, leaf: "status")
        _ = FrameTopics.frameID(in: topic, leaf: "heartbeat")
        _ = TopicID.isValid(topic)
    case .photoDocument:
        // As GatewayClient.metadata decodes it.
        guard let document = try? JSONDecoder().decode(PhotoDocument.self, from: Data(payload)) else { return 0 }
        _ = SafeID.isValid(document.fileID)
        _ = VersionChoice.pick(document.versions, width: 1024, height: 600)
        _ = VersionChoice.pick(document.versions, width: 600, height: 1024)
    }
    return 0
}
