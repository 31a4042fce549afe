import FramecastTesting
import Foundation
import Testing

/// The PostgreSQL server of `scripts/test` is started like every script's (start_postgres):
/// every connection needs the password (scram-sha-256), which clients read from PGPASSFILE;
/// the conninfo carries none.
@Suite struct AuthenticationTests {
    @Test func connectionsWithoutThePasswordAreRefused() async throws {
        let connInfo = try TestServers.postgresConnInfo()
        #expect(!connInfo.contains("password"), "the conninfo carries no password")
        // With the run's password file (inherited from scripts/test): accepted.
        let allowed = try await Command.runOffPool("psql", [connInfo, "-X", "-w", "-tAc", "SELECT 1"])
        #expect(allowed.status == 0, "\(allowed.output)")

        // No password: PGPASSFILE names a file that does not exist (so ~/.pgpass is not read
        // either) and PGPASSWORD is unset. -w: fail instead of prompting.
        let nowhere = try TestServers.scratchDirectory("no-pgpass").appendingPathComponent("pgpass").path
        let without = try await Command.runOffPool("env", [
            "-u", "PGPASSWORD", "PGPASSFILE=\(nowhere)", "psql", connInfo, "-X", "-w", "-tAc", "SELECT 1",
        ])
        #expect(without.status != 0, "psql without a password connected: \(without.output)")
        #expect(without.output.contains("no password supplied"), "\(without.output)")

        // A wrong password.
        let wrong = try await Command.runOffPool("env", [
            "PGPASSWORD=wrong-\(UUID().uuidString)", "PGPASSFILE=\(nowhere)", "psql", connInfo, "-X", "-w", "-tAc", "SELECT 1",
        ])
        #expect(wrong.status != 0, "psql with a wrong password connected: \(wrong.output)")
        #expect(wrong.output.contains("password authentication failed"), "\(wrong.output)")
    }
}
