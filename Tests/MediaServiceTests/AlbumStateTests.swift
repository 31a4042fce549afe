import BlobStore
import Foundation
import FramecastTesting
import Imaging
@testable import MediaService
import NATS
import Postgres
import ServiceKit
import Testing
import Wire

extension MediaHarness {
    /// Album's `device.albums_changed` for `frame` (applied when this returns).
    func frame(_ frame: String, owner: String, shows albums: [String], _ width: Int32 = 1024, _ height: Int32 = 600,
               revision: Int64 = 0) async throws {
        try await deliver(DeviceAlbumsChanged(eventID: UUID().uuidString.lowercased(), occurredAt: EventTime.now(), userID: owner,
                                              frameID: frame, width: width, height: height, format: "jpeg", albumIDs: albums,
                                              revision: revision))
    }

    func metadataStatus(_ fileID: String, _ kind: PrincipalKind, _ id: String) async throws -> WireStatus {
        try await status(MediaAPI.getPhotoMetadata, GetPhotoMetadataRequest(fileID: fileID), as: Principal(kind: kind, id: id))
    }
}

extension MediaServiceTests {
    /// Issue 12, item 3: media renders frame versions and answers metadata with no album
    /// service running at all — it only hears the events album published (its members, the
    /// frame showing the album, where the photo went). A photo whose placement comes late (album
    /// stopped while it was uploaded) gets thumbnail and hd at once, and its frame versions and
    /// `media.cache_ready` as soon as album's `album.photo_added` arrives.
    @Test func withTheAlbumServiceStoppedUploadsGetTheirFrameVersionsAndMetadata() async throws {
        let h = try await MediaHarness.make()
        let owner = user(), member = user(), stranger = user()
        let (shown, other) = (UUID().uuidString.lowercased(), UUID().uuidString.lowercased())
        try await h.running {
            let nats = h.backend.nats
            #expect((try? await nats.request("$SRV.PING.album", payload: [], timeout: .milliseconds(500))) == nil, "no album service")
            #expect((try? await nats.request(Subjects.request(service: "album", method: "CanViewPhoto"), payload: [],
                                             timeout: .milliseconds(500))) == nil, "nobody answers for album")
            // What album published before it stopped.
            try await h.members(h.album, owner: owner, viewers: [member], revision: 1)
            try await h.frame(shown, owner: owner, shows: [h.album], revision: 1)
            try await h.frame(other, owner: owner, shows: [UUID().uuidString.lowercased()], 800, 480, revision: 1)

            // Placed before media renders (the usual order): one decode, every version.
            let upload = try await h.upload(try Photos.bytes(try Photos.plasma("FallenLeaf")), user: owner)
            let fileID = try #require(upload.file?.fileID)
            let ready = try #require(try await h.waitCacheReady(fileID))
            #expect(Set(ready.versions.map(\.size)) == ["thumbnail", "hd", "frame:1024x600"])
            #expect(ready.frameIDs == [shown])
            #expect(ready.albumIDs == [h.album])
            #expect(h.service.renderCount.current == 1, "one decode")
            #expect(try await h.metadataStatus(fileID, .user, owner) == .ok)
            #expect(try await h.metadataStatus(fileID, .user, member) == .ok)
            #expect(try await h.metadataStatus(fileID, .frame, shown) == .ok)
            #expect(try await h.metadataStatus(fileID, .user, stranger) == .notFound)
            #expect(try await h.metadataStatus(fileID, .frame, other) == .notFound)
            let version = try #require(try await h.client.call(
                MediaAPI.getVersion, GetVersionRequest(fileID: fileID, size: "frame:1024x600"),
                headers: MediaService.headers(for: Principal(kind: .frame, id: shown))).version)
            #expect((version.width, version.height) == (1024, 600))

            // Placed only after the upload was rendered (album was down then): thumbnail and hd
            // now, nothing announced, nobody but the owner sees it...
            let late = try await h.upload(try Photos.bytes(try Photos.plasma("Kite")), user: owner, placed: false)
            let lateID = try #require(late.file?.fileID)
            #expect(try await eventually(timeout: .seconds(60)) { try await h.processed(late.eventID) })
            #expect(Set(try await h.versionRows(lateID).map(\.size)) == ["thumbnail", "hd"])
            #expect(try await h.events(MediaCacheReady.self).filter { $0.fileID == lateID }.isEmpty, "not announced yet")
            #expect(try await h.metadataStatus(lateID, .user, owner) == .ok)
            #expect(try await h.metadataStatus(lateID, .frame, shown) == .notFound)
            #expect(try await h.metadataStatus(lateID, .user, member) == .notFound)
            // ...until album's photo_added: the frame's version is rendered, then announced.
            try await h.place(lateID, by: owner, revision: 7)
            let lateReady = try #require(try await h.waitCacheReady(lateID))
            #expect(Set(lateReady.versions.map(\.size)) == ["thumbnail", "hd", "frame:1024x600"])
            #expect(lateReady.frameIDs == [shown] && lateReady.albumIDs == [h.album])
            #expect(try await h.metadataStatus(lateID, .frame, shown) == .ok)
            #expect(try await h.metadataStatus(lateID, .user, member) == .ok)
            #expect(try await h.events(MediaCacheReady.self).filter { $0.fileID == lateID }.count == 1)
            #expect(try await h.runtime.postgres.query("SELECT 1 FROM media.render_jobs").isEmpty)
        }
        await h.close()
    }

    /// Access follows media's copy of album's state, newest revision first whatever the order
    /// the events arrive in: a non-member gets not_found and a member the photo; a frame reads
    /// the photos of the albums it shows now and not after they changed; a removed member or
    /// photo, or a deleted album, grants nothing any more; older events change none of it.
    @Test func accessFollowsMembersFramesAndAlbumPhotos() async throws {
        let h = try await MediaHarness.make()
        let owner = user(), member = user()
        let frame = UUID().uuidString.lowercased()
        try await h.running {
            try await h.members(h.album, owner: owner, viewers: [], revision: 1)
            let upload = try await h.upload(try Photos.bytes(try Photos.plasma("BytheWater")), user: owner)
            let file = try #require(upload.file?.fileID)
            _ = try #require(try await h.waitCacheReady(file))
            let asOwner = Principal(kind: .user, id: owner)

            // Not a member yet: not found (metadata and versions alike); a member: the photo.
            #expect(try await h.metadataStatus(file, .user, member) == .notFound)
            #expect(try await h.status(MediaAPI.getVersion, GetVersionRequest(fileID: file, size: "hd"),
                                       as: Principal(kind: .user, id: member)) == .notFound)
            try await h.members(h.album, owner: owner, viewers: [member], revision: 2)
            #expect(try await h.metadataStatus(file, .user, member) == .ok)
            #expect(try await h.status(MediaAPI.getVersion, GetVersionRequest(fileID: file, size: "hd"),
                                       as: Principal(kind: .user, id: member)) == .ok)

            // A frame showing the album reads it; after device.albums_changed without the album
            // it cannot, and an older albums_changed arriving late changes nothing.
            #expect(try await h.metadataStatus(file, .frame, frame) == .notFound)
            try await h.frame(frame, owner: owner, shows: [h.album], revision: 1)
            #expect(try await h.metadataStatus(file, .frame, frame) == .ok)
            try await h.frame(frame, owner: owner, shows: [], revision: 2)
            #expect(try await h.metadataStatus(file, .frame, frame) == .notFound)
            try await h.frame(frame, owner: owner, shows: [h.album], revision: 1)
            #expect(try await h.metadataStatus(file, .frame, frame) == .notFound, "an older event changes nothing")
            try await h.frame(frame, owner: owner, shows: [h.album], revision: 3)
            #expect(try await h.metadataStatus(file, .frame, frame) == .ok)

            // The member is removed: access gone; the older list arriving late does not bring it back.
            try await h.members(h.album, owner: owner, viewers: [], revision: 3)
            #expect(try await h.metadataStatus(file, .user, member) == .notFound)
            try await h.members(h.album, owner: owner, viewers: [member], revision: 2)
            #expect(try await h.metadataStatus(file, .user, member) == .notFound, "an older member list changes nothing")
            try await h.members(h.album, owner: owner, viewers: [member], revision: 4)
            #expect(try await h.metadataStatus(file, .user, member) == .ok)

            // The photo leaves the album: neither the member nor the frame sees it; the owner does.
            try await h.unplace(file, by: owner, revision: 10)
            #expect(try await h.metadataStatus(file, .user, member) == .notFound)
            #expect(try await h.metadataStatus(file, .frame, frame) == .notFound)
            #expect(try await h.metadataStatus(file, .user, owner) == .ok)
            try await h.place(file, by: owner, revision: 9)
            #expect(try await h.metadataStatus(file, .frame, frame) == .notFound, "an older add changes nothing")
            try await h.place(file, by: owner, revision: 11)
            #expect(try await h.metadataStatus(file, .frame, frame) == .ok)
            #expect(try await h.metadataStatus(file, .user, member) == .ok)

            // The album is deleted: nobody sees the photo through it, whatever arrives late.
            try await h.deliver(AlbumDeleted(eventID: UUID().uuidString.lowercased(), occurredAt: EventTime.now(), userID: owner,
                                             albumID: h.album))
            #expect(try await h.metadataStatus(file, .user, member) == .notFound)
            #expect(try await h.metadataStatus(file, .frame, frame) == .notFound)
            try await h.members(h.album, owner: owner, viewers: [member], revision: 5)
            try await h.place(file, by: owner, revision: 12)
            #expect(try await h.metadataStatus(file, .user, member) == .notFound)
            #expect(try await h.metadataStatus(file, .frame, frame) == .notFound)
            #expect(try await h.client.call(MediaAPI.getPhotoMetadata, GetPhotoMetadataRequest(fileID: file),
                                            headers: MediaService.headers(for: asOwner)).metadata?.ownerID == owner)
        }
        await h.close()
    }

    /// Playlists and schedules check albums and frames against media's copy too: a member's
    /// playlist plays the album's photos, a stranger's is refused; the frame's owner (from
    /// device.albums_changed) sets its schedule, nobody else.
    @Test func playlistsAndSchedulesUseMediasCopyOfAlbumsState() async throws {
        let h = try await MediaHarness.make()
        let owner = user(), member = user(), stranger = user()
        let frame = UUID().uuidString.lowercased()
        try await h.running {
            try await h.members(h.album, owner: owner, viewers: [member], revision: 1)
            let upload = try await h.upload(try Photos.bytes(try Photos.plasma("ColorfulCups")), user: owner)
            let file = try #require(upload.file?.fileID)
            _ = try #require(try await h.waitCacheReady(file))

            let playlist = try #require(try await h.client.call(MediaAPI.createPlaylist, CreatePlaylistRequest(
                userID: member, name: "Family", albumIDs: [h.album])).playlist)
            let resolved = try await h.client.call(MediaAPI.getPlaylist, GetPlaylistRequest(userID: member, playlistID: playlist.playlistID))
            #expect(resolved.playlist?.photoIDs == [file])
            #expect(try await h.status(MediaAPI.createPlaylist, CreatePlaylistRequest(userID: stranger, name: "x", albumIDs: [h.album]),
                                       as: nil) == .notFound)
            #expect(try await h.status(MediaAPI.createPlaylist, CreatePlaylistRequest(userID: stranger, name: "x", fileIDs: [file]),
                                       as: nil) == .notFound)
            // The member leaves: the playlist plays nothing of the album any more.
            try await h.members(h.album, owner: owner, viewers: [], revision: 2)
            let after = try await h.client.call(MediaAPI.getPlaylist, GetPlaylistRequest(userID: member, playlistID: playlist.playlistID))
            #expect(after.playlist?.photoIDs.isEmpty == true)

            try await h.frame(frame, owner: owner, shows: [h.album], revision: 1)
            let entries = [ScheduleEntry(albumID: h.album, intervalSeconds: 60)]
            let schedule = try await h.client.call(MediaAPI.setSchedule, SetScheduleRequest(userID: owner, frameID: frame, entries: entries))
            #expect(schedule.schedule?.entries.count == 1)
            #expect(try await h.status(MediaAPI.setSchedule, SetScheduleRequest(userID: stranger, frameID: frame, entries: entries),
                                       as: nil) == .notFound)
            #expect(try await h.status(MediaAPI.getSchedule, GetScheduleRequest(userID: stranger, frameID: frame), as: nil) == .notFound)
            #expect(try await eventually {
                try await h.events(MediaScheduleChanged.self).contains { $0.frameID == frame && $0.userID == owner }
            })
        }
        await h.close()
    }
}
