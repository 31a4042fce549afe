import Testing
@testable import NATS

@Test func natsModuleLoads() {}
