import Foundation
import FramecastTesting
@testable import AlbumService
import NATS
import Postgres
import ServiceKit
import Testing
import Wire

extension AlbumHarness {
    func events<E: WireEvent>(_ type: E.Type) async throws -> [E] {
        try await eventsInStream(type, jetStream: runtime.jetStream)
    }

    /// The `album.republish` steps still due.
    func republishSteps() async throws -> [String] {
        try await runtime.postgres.query("SELECT step FROM album.republish ORDER BY step").map { try $0.decode("step") }
    }
}

extension AlbumServiceSuite {
    /// What album tells media so that media never asks it (issue 12, item 3): the members of
    /// each album with their roles, deletions, the albums of each photo and each frame's
    /// albums, each with a revision; and the whole state once more when it is due.
    @Suite struct MediaStateTests {
        @Test func membersPhotosAndDeletionsCarryTheStateWithRevisions() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            try await h.running { _ in
                let owner = "owner-\(UUID().uuidString.prefix(8))", member = "member-\(UUID().uuidString.prefix(8))"
                let album = try await h.createAlbum(owner).albumID
                #expect(try await h.republishSteps().isEmpty, "a new database has nothing to republish")
                _ = try await h.client.call(AlbumAPI.addMember, AddMemberRequest(userID: owner, albumID: album, memberUserID: member,
                                                                                 role: .contributor))
                _ = try await h.client.call(AlbumAPI.addMember, AddMemberRequest(userID: owner, albumID: album, memberUserID: member,
                                                                                 role: .viewer))
                _ = try await h.client.call(AlbumAPI.removeMember, RemoveMemberRequest(userID: owner, albumID: album, memberUserID: member))
                var members: [AlbumMembersChanged] = []
                #expect(try await eventually {
                    members = try await h.events(AlbumMembersChanged.self).filter { $0.albumID == album }
                    return members.count == 4
                })
                members.sort { $0.revision < $1.revision }
                #expect(members.map(\.revision) == [1, 2, 3, 4])
                #expect(members.map(\.members.count) == [1, 2, 2, 1])
                #expect(members[1].members.last == AlbumMemberRole(userID: member, role: .contributor))
                #expect(members[2].members.last == AlbumMemberRole(userID: member, role: .viewer))
                #expect(members[3].members == [AlbumMemberRole(userID: owner, role: .owner)])
                #expect(members.allSatisfy { $0.ownerID == owner })

                // A photo in, out, in again: revisions grow in that order.
                let file = try await h.upload(user: owner, albumID: album)
                #expect(try await eventually { try await h.photos(owner, album).count == 1 })
                _ = try await h.client.call(AlbumAPI.removeAlbumPhoto, RemoveAlbumPhotoRequest(userID: owner, albumID: album, fileID: file))
                _ = try await h.client.call(AlbumAPI.addAlbumPhoto, AddAlbumPhotoRequest(userID: owner, albumID: album, fileID: file))
                let frame = try await h.registerFrame(owner).frame!.frameID
                _ = try await h.client.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: owner, frameID: frame, albumIDs: [album]))

                // The album goes: album.deleted, its photo leaves it after its last add, and the
                // frame that showed it shows nothing now.
                _ = try await h.client.call(AlbumAPI.deleteAlbum, DeleteAlbumRequest(userID: owner, albumID: album))
                #expect(try await eventually { try await h.events(AlbumDeleted.self).contains { $0.albumID == album && $0.userID == owner } })
                let added = try await h.events(AlbumPhotoAdded.self).filter { $0.photo?.fileID == file }.map(\.revision)
                var removed: [AlbumPhotoRemoved] = []
                #expect(try await eventually {
                    removed = try await h.events(AlbumPhotoRemoved.self).filter { $0.fileID == file }
                    return removed.count == 2
                })
                #expect(added.count == 2)
                let byUser = try #require(removed.first { $0.reason == "removed" })
                let byDeletion = try #require(removed.first { $0.reason == "album_deleted" })
                let (first, again) = (added.min() ?? 0, added.max() ?? 0)
                #expect(first > 0)
                #expect(first < byUser.revision && byUser.revision < again && again < byDeletion.revision)
                var frames: [DeviceAlbumsChanged] = []
                #expect(try await eventually {
                    frames = try await h.events(DeviceAlbumsChanged.self).filter { $0.frameID == frame }
                    return frames.count == 3
                })
                let last = try #require(frames.max { $0.revision < $1.revision })
                #expect(last.albumIDs.isEmpty && last.fileIDs.isEmpty, "the deleted album's frame shows nothing")
                #expect(last.userID == owner)
            }
        }

        /// The state is republished once when the `republish` table says so (the migration queues
        /// it for a database that held data before media kept its copy): every album's members,
        /// every album photo, every frame, each with a revision above the ones published before;
        /// then the steps are gone and a restart republishes nothing.
        @Test func theStateIsRepublishedOnceWhenDue() async throws {
            let h = try await AlbumHarness.make()
            defer { Task { await h.close() } }
            let owner = "owner-\(UUID().uuidString.prefix(8))", viewer = "viewer-\(UUID().uuidString.prefix(8))"
            let (album, file, frame): (String, String, String) = try await h.running { _ in
                let album = try await h.createAlbum(owner).albumID
                _ = try await h.client.call(AlbumAPI.addMember, AddMemberRequest(userID: owner, albumID: album, memberUserID: viewer,
                                                                                 role: .viewer))
                let file = try await h.upload(user: owner, albumID: album)
                #expect(try await eventually { try await h.photos(owner, album).count == 1 })
                let frame = try await h.registerFrame(owner).frame!.frameID
                _ = try await h.client.call(AlbumAPI.setFrameAlbums, SetFrameAlbumsRequest(userID: owner, frameID: frame, albumIDs: [album]))
                #expect(try await eventually {
                    try await h.events(DeviceAlbumsChanged.self).filter { $0.frameID == frame }.count == 2
                })
                return (album, file, frame)
            }
            let before = (members: try await h.events(AlbumMembersChanged.self).filter { $0.albumID == album },
                          photos: try await h.events(AlbumPhotoAdded.self).filter { $0.photo?.fileID == file },
                          frames: try await h.events(DeviceAlbumsChanged.self).filter { $0.frameID == frame })
            #expect(before.members.count == 2 && before.photos.count == 1 && before.frames.count == 2)
            // Queue the three steps as an operator would (or the migration, for older data).
            _ = try await h.runtime.postgres.execute(
                "INSERT INTO album.republish (step) VALUES ('members'), ('photos'), ('frames') ON CONFLICT DO NOTHING")

            try await h.running { _ in
                #expect(try await eventually { try await h.republishSteps().isEmpty }, "every step done")
                var members: [AlbumMembersChanged] = [], photos: [AlbumPhotoAdded] = [], frames: [DeviceAlbumsChanged] = []
                #expect(try await eventually {
                    members = try await h.events(AlbumMembersChanged.self).filter { $0.albumID == album }
                    photos = try await h.events(AlbumPhotoAdded.self).filter { $0.photo?.fileID == file }
                    frames = try await h.events(DeviceAlbumsChanged.self).filter { $0.frameID == frame }
                    return members.count == 3 && photos.count == 2 && frames.count == 3
                })
                let republished = (members: try #require(members.max { $0.revision < $1.revision }),
                                   photo: try #require(photos.max { $0.revision < $1.revision }),
                                   frame: try #require(frames.max { $0.revision < $1.revision }))
                #expect(republished.members.revision > before.members.map(\.revision).max() ?? 0)
                #expect(republished.members.members == [AlbumMemberRole(userID: owner, role: .owner),
                                                        AlbumMemberRole(userID: viewer, role: .viewer)])
                #expect(republished.photo.revision > before.photos.map(\.revision).max() ?? 0)
                #expect(republished.photo.photo?.albumID == album)
                #expect(republished.frame.revision > before.frames.map(\.revision).max() ?? 0)
                #expect(republished.frame.albumIDs == [album] && republished.frame.fileIDs == [file])
            }
            // Done once: another start republishes nothing.
            try await h.running { _ in
                try await Task.sleep(for: .seconds(1))
                #expect(try await h.events(AlbumMembersChanged.self).filter { $0.albumID == album }.count == 3)
                #expect(try await h.events(AlbumPhotoAdded.self).filter { $0.photo?.fileID == file }.count == 2)
                #expect(try await h.events(DeviceAlbumsChanged.self).filter { $0.frameID == frame }.count == 3)
            }
        }
    }
}
