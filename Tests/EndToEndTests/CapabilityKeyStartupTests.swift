import Foundation
import FramecastTesting
import Testing

/// A gateway or album process alone must be given the capability key file: with keys of its
/// own every URL the album signs would answer 403 at the gateway. It refuses to start, saying
/// why, before it connects to anything (`framecast` child processes; `all` without a file uses
/// one random ring for both, which the other suites run).
@Suite struct CapabilityKeyStartupTests {
    /// Runs `framecast <arguments>` until it exits (at most 30 s); returns its status and output.
    static func runUntilExit(_ arguments: [String], environment: [String: String], log: URL) async throws -> (status: Int32, output: String) {
        let child = try ChildProcess(arguments: arguments, environment: environment, log: log)
        let deadline = ContinuousClock.now + .seconds(30)
        while child.process.isRunning && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        guard !child.process.isRunning else {
            child.kill()
            throw Failure("framecast \(arguments.joined(separator: " ")) did not exit: \(child.output)")
        }
        return (child.process.terminationStatus, child.output)
    }

    @Test func aGatewayOrAlbumAloneRefusesToStartWithoutTheKeyFile() async throws {
        let scratch = try TestServers.scratchDirectory("capability-startup")
        // An empty value is unset for framecast (scripts/test exports a key file for `all`).
        for role in ["gateway", "album"] {
            let (status, output) = try await Self.runUntilExit([role], environment: ["FRAMECAST_CAPABILITY_KEYS": ""],
                                                       log: scratch.appendingPathComponent("\(role).log"))
            #expect(status != 0, "\(role)")
            #expect(output.contains("FRAMECAST_CAPABILITY_KEYS") && output.contains("required"), "\(role): \(output)")
        }
        // A file that holds no usable key: refused too, saying what is wrong with it.
        let short = scratch.appendingPathComponent("short-keys")
        try Data("# a comment\nshort\n".utf8).write(to: short)
        let (status, output) = try await Self.runUntilExit(["gateway"], environment: ["FRAMECAST_CAPABILITY_KEYS": short.path],
                                                   log: scratch.appendingPathComponent("short.log"))
        #expect(status != 0)
        #expect(output.contains("shorter than 16 bytes"), "\(output)")
    }
}
