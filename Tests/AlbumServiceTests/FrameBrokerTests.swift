import Foundation
import MQTT
import Testing
@testable import AlbumService

/// The list of leaf brokers handed to frames at registration: parsing and balance. Pure: no
/// servers needed.
@Suite struct FrameBrokerTests {
    @Test func parsesALists() throws {
        let brokers = try FrameBroker.parseList(" leaf-1:1883, leaf-2:1884 ,[::1]:1885,leaf-1:1883")
        #expect(brokers == [FrameBroker(host: "leaf-1", port: 1883), FrameBroker(host: "leaf-2", port: 1884),
                            FrameBroker(host: "::1", port: 1885)])
        #expect(brokers[2].description == "[::1]:1885")
        #expect(try FrameBroker.parseList("127.0.0.1:1883") == [FrameBroker(host: "127.0.0.1", port: 1883)])
    }

    @Test(arguments: ["", " , ", "leaf-1", "leaf-1:", "leaf-1:0", "leaf-1:70000", ":1883", "leaf 1:1883", "leaf-1:x"])
    func refusesBadEntries(_ text: String) {
        #expect(throws: FrameBroker.ParseError.self) { try FrameBroker.parseList(text) }
    }

    static func configuration(_ brokers: [FrameBroker]) throws -> AlbumConfiguration {
        try AlbumConfiguration(mqtt: MQTTConfiguration(host: "127.0.0.1", clientID: "album-test"),
                               publicGatewayURL: "http://127.0.0.1:8080", frameBrokers: brokers)
    }

    @Test func aConfigurationWithoutBrokersIsRefusedWhenMade() {
        #expect(throws: AlbumConfiguration.Invalid.self) { try Self.configuration([]) }
        #expect(FrameBroker.pick(for: UUID().uuidString, among: []) == nil, "no broker: no answer, no trap")
    }

    @Test func spreadsFramesEvenlyAndStably() throws {
        let brokers = try FrameBroker.parseList("leaf-1:1883,leaf-2:1883,leaf-3:1883")
        let configuration = try Self.configuration(brokers)
        let ids = (0..<9000).map { _ in UUID().uuidString.lowercased() }
        var counts: [FrameBroker: Int] = [:]
        for id in ids { counts[try configuration.frameBroker(for: id), default: 0] += 1 }
        // 3,000 expected each; ±10% is > 8 standard deviations for a fair split.
        for broker in brokers { #expect((2700...3300).contains(counts[broker] ?? 0), "\(broker): \(counts[broker] ?? 0)") }
        // Same answer every time, whatever the case of the id, and in another configuration value.
        let again = try Self.configuration(brokers)
        for id in ids.prefix(500) {
            #expect(try configuration.frameBroker(for: id) == again.frameBroker(for: id.uppercased()))
        }
    }

    @Test func addingABrokerMovesOnlyFramesToIt() throws {
        let three = try FrameBroker.parseList("leaf-1:1883,leaf-2:1883,leaf-3:1883")
        let four = three + [FrameBroker(host: "leaf-4", port: 1883)]
        let before = try Self.configuration(three), after = try Self.configuration(four)
        var moved = 0
        let ids = (0..<4000).map { _ in UUID().uuidString.lowercased() }
        for id in ids {
            let old = try before.frameBroker(for: id), new = try after.frameBroker(for: id)
            if old != new {
                moved += 1
                #expect(new == four[3], "a frame moved between two old brokers")
            }
        }
        // About a quarter move (to the new broker), nothing else.
        #expect((800...1200).contains(moved), "moved \(moved) of 4000")
    }

    @Test func oneBrokerKeepsTheSingleMachineFields() throws {
        var configuration = AlbumConfiguration(mqtt: MQTTConfiguration(host: "127.0.0.1", clientID: "album-test"),
                                               publicGatewayURL: "http://127.0.0.1:8080",
                                               frameMQTTHost: "mqtt.example", frameMQTTPort: 8883)
        #expect(try configuration.frameBroker(for: UUID().uuidString) == FrameBroker(host: "mqtt.example", port: 8883))
        configuration.frameMQTTPort = 1883
        #expect(configuration.frameBrokers == [FrameBroker(host: "mqtt.example", port: 1883)])
        configuration.frameBrokers = []  // refused: keeps the previous list
        #expect(configuration.frameBrokers.count == 1)
    }
}
