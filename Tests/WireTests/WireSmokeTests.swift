import Testing
@testable import Wire

@Test func wireModuleLoads() {}
