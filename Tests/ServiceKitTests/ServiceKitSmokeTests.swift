import Testing
@testable import ServiceKit

@Test func servicekitModuleLoads() {}
