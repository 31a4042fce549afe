extension Subjects {
    /// NATS header naming who a request is made for — `user:<id>` or `frame:<id>` — when the
    /// service itself decides access (media's photo metadata and versions). Set by the gateway
    /// after it authenticated the caller.
    public static let principalHeader = "Framecast-Principal"
}
