@testable import MediaService
import ServiceKit
import Testing
import Wire

/// The rules a rotation-schedule slot must follow, checked without servers.
@Suite struct ScheduleValidationTests {
    static let playlist = "6F9619FF-8B86-D011-B42D-00C04FC964FF"

    @Test func aValidSlotIsNormalised() throws {
        let entry = try MediaService.validate(ScheduleEntry(
            playlistID: Self.playlist, daysOfWeek: [5, 1, 5, 0], startTime: "22:30", endTime: "06:00", intervalSeconds: 5))
        #expect(entry.daysOfWeek == [0, 1, 5], "each day once, in order")
        #expect(entry.playlistID == Self.playlist.lowercased())
        #expect((entry.startTime, entry.endTime) == ("22:30", "06:00"), "past midnight is allowed")
        #expect(try MediaService.validate(ScheduleEntry(intervalSeconds: 86_400)).daysOfWeek.isEmpty, "every day, all day")
    }

    @Test(arguments: [
        ScheduleEntry(intervalSeconds: 4),
        ScheduleEntry(intervalSeconds: 86_401),
        ScheduleEntry(daysOfWeek: [7], intervalSeconds: 60),
        ScheduleEntry(daysOfWeek: [-1], intervalSeconds: 60),
        ScheduleEntry(startTime: "24:00", endTime: "06:00", intervalSeconds: 60),
        ScheduleEntry(startTime: "07:60", endTime: "08:00", intervalSeconds: 60),
        ScheduleEntry(startTime: "7:00", endTime: "08:00", intervalSeconds: 60),
        ScheduleEntry(startTime: "07:00", intervalSeconds: 60),
        ScheduleEntry(startTime: "07:00", endTime: "07:00", intervalSeconds: 60),
        ScheduleEntry(playlistID: playlist, albumID: playlist, intervalSeconds: 60),
        ScheduleEntry(playlistID: "not-a-uuid", intervalSeconds: 60),
        ScheduleEntry(albumID: "a/b#", intervalSeconds: 60),
    ])
    func anInvalidSlotIsRefused(_ entry: ScheduleEntry) {
        #expect {
            try MediaService.validate(entry)
        } throws: { error in
            (error as? ServiceError)?.status == .invalid
        }
    }
}
