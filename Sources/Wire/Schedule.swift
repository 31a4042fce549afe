// Conveniences around rotation schedules: the day names phones and frames see.

extension ScheduleEntry {
    /// `days_of_week` as names: index 0 = Sunday … 6 = Saturday (the wire numbering).
    public static let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    /// The wire number of a day name (`"mon"` → 1), nil for anything else.
    public static func day(named name: String) -> Int32? {
        dayNames.firstIndex(of: name.lowercased()).map { Int32($0) }
    }

    /// The name of a wire day number, nil outside 0…6.
    public static func dayName(_ day: Int32) -> String? {
        dayNames.indices.contains(Int(day)) ? dayNames[Int(day)] : nil
    }
}
