/// An error from ``Imaging``: a stable ``Code`` to branch on and a message that says what
/// failed (libvips' own message appended; it never contains the image bytes).
public struct ImagingError: Error, Sendable, CustomStringConvertible {
    /// Extensible error codes: compare with the static members.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// Not an image, or a format Framecast does not accept (SVG, PDF, text…). HTTP 415.
        public static let unsupportedFormat = Code("unsupportedFormat")
        /// Over ``ImagingLimits``: too many bytes or declared pixels. HTTP 413.
        public static let tooLarge = Code("tooLarge")
        /// A supported format whose data is broken or truncated.
        public static let corrupt = Code("corrupt")
        /// Processing (colour, resize, crop) failed.
        public static let processingFailed = Code("processingFailed")
        /// Encoding an output failed.
        public static let encodeFailed = Code("encodeFailed")
        /// A caller's argument is out of range (empty version list, zero-sized box…).
        public static let invalidArgument = Code("invalidArgument")
        /// A file could not be read.
        public static let io = Code("io")
        /// ``Imaging/shutdown()`` was called, or libvips could not start.
        public static let unavailable = Code("unavailable")
    }

    public var code: Code
    public var message: String
    /// Structured context (format, sizes, operation), safe to log.
    public var context: [String: String]

    public init(_ code: Code, _ message: String, context: [String: String] = [:]) {
        self.code = code
        self.message = message
        self.context = context
    }

    public var description: String {
        let extra = context.isEmpty ? "" : " (" + context.sorted { $0.key < $1.key }
            .map { "\($0.key)=\($0.value)" }.joined(separator: ", ") + ")"
        return "ImagingError.\(code): \(message)\(extra)"
    }
}
