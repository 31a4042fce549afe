import Testing
import Wire

@Suite struct ReplyTests {
    static let statuses: [(WireStatus, Int32, String)] = [
        (.unspecified, 0, "unspecified"), (.ok, 1, "ok"), (.notFound, 2, "not_found"),
        (.invalid, 3, "invalid"), (.conflict, 4, "conflict"), (.unauthorized, 5, "unauthorized"),
        (.unavailable, 6, "unavailable"), (.internal, 7, "internal"), (.unsupported, 8, "unsupported"),
    ]

    @Test func statusMapping() throws {
        for (status, number, name) in Self.statuses {
            #expect(status.wireValue == number)
            #expect(WireStatus(wireValue: number) == status)
            #expect(status.description == name)
            // On the wire: field 1 varint = the proto enum number.
            let reply = Reply(status: status, message: "m")
            let bytes = reply.wireBytes()
            if number != 0 { #expect(Array(bytes.prefix(2)) == [0x08, UInt8(number)]) }
            #expect(try Reply(wireBytes: bytes) == reply)
        }
        #expect(WireStatus(wireValue: 99) == .unrecognized(99))
        #expect(try Reply(wireBytes: [0x08, 99]).status == .unrecognized(99))
        #expect(WireStatus.ok.isOK && !WireStatus.notFound.isOK)
    }

    @Test func envelopeCarriesTheBody() throws {
        let file = FileRecord(fileID: "f1", userID: "u1", size: 12, metadata: ["album_id": "a"])
        let reply = Reply.ok(GetFileReply(file: file))
        let back = try Reply(wireBytes: reply.wireBytes())
        #expect(back.status == .ok)
        #expect(back.message == "")
        #expect(try back.decodeBody(as: GetFileReply.self).file == file)
        let empty = Reply.ok(Empty())
        #expect(empty.body.isEmpty)
        #expect(try Reply(wireBytes: empty.wireBytes()).decodeBody(as: Empty.self) == Empty())
    }

    @Test func failedReplyThrowsNotOK() throws {
        let reply = Reply.failure(.notFound, "no such file")
        let back = try Reply(wireBytes: reply.wireBytes())
        #expect(back == reply)
        #expect(back.body.isEmpty)
        #expect {
            try back.decodeBody(as: GetFileReply.self)
        } throws: { error in
            guard let error = error as? WireError else { return false }
            return error.code == .notOK && error.message.contains("not_found")
                && error.message.contains("no such file") && error.messageType == "framecast.v1.GetFileReply"
        }
        let garbage = Reply(status: .ok, body: [0xFF, 0xFF])
        #expect(throws: WireError.self) { try garbage.decodeBody(as: GetFileReply.self) }
    }
}

@Suite struct SubjectTests {
    @Test func requestSubjects() {
        #expect(Subjects.request(service: "storage", method: "RegisterUpload") == "svc.storage.v1.RegisterUpload")
        #expect(StorageAPI.registerUpload.subject == "svc.storage.v1.RegisterUpload")
        #expect(StorageAPI.service == "storage")
        #expect(AlbumAPI.canViewPhoto.subject == "svc.album.v1.CanViewPhoto")
        #expect(MediaAPI.renderOnDemand.subject == "svc.media.v1.RenderOnDemand")
        let all = StorageAPI.allSubjects + AlbumAPI.allSubjects + MediaAPI.allSubjects
        #expect(Set(all).count == all.count)
        for subject in all { #expect(subject.hasPrefix("svc.") && subject.split(separator: ".").count == 4) }
        // The method types tie requests to replies.
        let method: WireMethod<ListFilesRequest, ListFilesReply> = StorageAPI.listFiles
        #expect(method.method == "ListFiles")
    }

    @Test func everyEventOfTheDesignHasOneType() throws {
        let design = [
            "file.uploaded", "file.uploaded.with_ai", "file.deleted",
            "album.created", "album.photo_added", "album.photo_removed",
            "album.members_changed", "album.deleted",  // album → media: its copy of members (issue 12 item 3)
            "media.version_created", "media.version_failed", "media.cache_ready",
            "media.schedule_changed",  // media → album: a frame's rotation schedule (issue 5 item 6)
            "device.deleted",
            "device.albums_changed",  // album → media: a frame's screen and photos (issue 5 item 2)
            "device.cache_reported",  // album → media: what a frame reported cached (issue 5 items 4, 6)
        ]
        #expect(Subjects.allEvents.sorted() == design.sorted())
        #expect(Subjects.fileUploadedWithAI == "file.uploaded.with_ai")
        #expect(FileUploadedWithAI.subject == Subjects.fileUploadedWithAI)
        #expect(WireEvents.all.count == design.count)
        for subject in design {
            let type = try #require(WireEvents.type(forSubject: subject), "\(subject)")
            #expect(type.subject == subject)
            // Every event subject is captured by the EVENTS stream.
            let captured = Subjects.streamSubjects.contains { subject.hasPrefix($0.dropLast()) }
            #expect(captured, "\(subject) is outside \(Subjects.streamSubjects)")
        }
        #expect(WireEvents.type(forSubject: "file.nope") == nil)
        #expect(Subjects.streamName == "EVENTS")
    }

    @Test func eventsCarryIdTimeAndUser() throws {
        for type in WireEvents.all {
            func check<E: WireEvent>(_ type: E.Type) throws {
                var event = try E(wireBytes: [UInt8]())
                event.eventID = "6f1c…-uuid"
                event.occurredAt = 1_764_000_000_000
                event.userID = "user-1"
                let back = try E(wireBytes: event.wireBytes())
                #expect(back.eventID == "6f1c…-uuid" && back.occurredAt == 1_764_000_000_000 && back.userID == "user-1")
            }
            try check(type)
        }
    }
}
