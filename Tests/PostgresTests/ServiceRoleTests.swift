import BlobStore
import FramecastTesting
import Foundation
import Logging
import Postgres
import Testing

/// A PostgreSQL role per service, with rights on its own schema only (deploy/postgres/roles.sql,
/// which scripts/test's start_postgres runs on the database `framecast`; FRAMECAST_TEST_PG_ROLES=1
/// says so). The roles log in with their own passwords (PGPASSFILE), through
/// ``PostgresConfiguration/user`` as `framecast all` does.
@Suite struct ServiceRoleTests {
    static let roles = ["framecast_gateway", "framecast_storage", "framecast_album", "framecast_media"]
    let logger = Logger(label: "postgres-tests")

    struct MissingRoles: Error, CustomStringConvertible {
        let variable: String
        var description: String {
            "\(variable) is not set: the service-role tests need the PostgreSQL server scripts/test starts, with the roles of "
                + "deploy/postgres/roles.sql (run `scripts/test`)"
        }
    }

    /// The administrator's conninfo of the database that has the roles (scripts/test's).
    static func rolesDatabase() throws -> String {
        let environment = ProcessInfo.processInfo.environment
        guard environment["FRAMECAST_TEST_PG_ROLES"] == "1" else { throw MissingRoles(variable: "FRAMECAST_TEST_PG_ROLES") }
        guard let passwords = environment["PGPASSFILE"], !passwords.isEmpty else { throw MissingRoles(variable: "PGPASSFILE") }
        return try TestServers.postgresConnInfo()
    }

    /// Runs `body` with a pool on `connInfo` as `user` (nil: the conninfo's, the administrator).
    func withRolePool<T>(_ connInfo: String, as user: String?, _ body: (PostgresPool) async throws -> T) async throws -> T {
        let pool = PostgresPool(configuration: PostgresConfiguration(connInfo: connInfo, maxConnections: 1, user: user), logger: logger)
        do {
            let result = try await body(pool)
            await pool.close()
            return result
        } catch {
            await pool.close()
            throw error
        }
    }

    /// Expects `body` to be refused for lack of privilege (SQLSTATE 42501, insufficient_privilege).
    func expectDenied(_ what: String, saying message: String = "permission denied", sourceLocation: SourceLocation = #_sourceLocation,
                      _ body: () async throws -> Void) async {
        let error = await expectPostgresError(sourceLocation: sourceLocation, body)
        #expect(error?.sqlState == "42501", "\(what): \(String(describing: error))", sourceLocation: sourceLocation)
        #expect(error?.message.contains(message) == true, "\(what): \(String(describing: error))", sourceLocation: sourceLocation)
    }

    static func probeName() -> String { "role_probe_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased())" }

    @Test func eachServiceLogsInAsItsOwnRoleAndOwnsItsSchema() async throws {
        let database = try Self.rolesDatabase()
        for role in Self.roles {
            try await withRolePool(database, as: role) { pool in
                let row = try #require(try await pool.query("""
                    SELECT current_user::text AS me, (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1) AS owner,
                           has_database_privilege(current_database(), 'CREATE') AS may_create_schemas
                    """, [.text(String(role.dropFirst("framecast_".count)))]).first)
                #expect(try row.decode("me", as: String.self) == role)
                #expect(try row.decode("owner", as: String?.self) == role, "\(role) owns its schema")
                #expect(try row.decode("may_create_schemas", as: Bool.self) == false, "\(role) may not create schemas")
            }
        }
        // The blob store's schema is no service's.
        try await withRolePool(database, as: nil) { pool in
            let owner = try #require(try await pool.query("SELECT nspowner::regrole::text AS owner FROM pg_namespace WHERE nspname = 'blobs'").first)
            #expect(try owner.decode("owner", as: String.self) == "framecast_blobs")
        }
    }

    @Test func mediaCannotReadStorageFilesButUsesItsOwnSchema() async throws {
        let database = try Self.rolesDatabase()
        // storage.files as the storage service creates it, as its own role (it owns the schema).
        try await withRolePool(database, as: "framecast_storage") { storage in
            try await storage.execute("CREATE TABLE IF NOT EXISTS storage.files (file_id uuid PRIMARY KEY, blob_key text NOT NULL)")
            _ = try await storage.query("SELECT count(*) AS n FROM storage.files")
        }
        try await withRolePool(database, as: "framecast_media") { media in
            await expectDenied("media reads storage.files") { _ = try await media.query("SELECT count(*) AS n FROM storage.files") }
            await expectDenied("media deletes from storage.files") { _ = try await media.execute("DELETE FROM storage.files") }

            // Its own schema: create, write, read, drop.
            let table = "media.\(Self.probeName())"
            try await media.execute("CREATE TABLE \(table) (id int PRIMARY KEY, note text NOT NULL)")
            try await media.execute("INSERT INTO \(table) VALUES (1, 'mine')")
            let rows = try await media.query("SELECT note FROM \(table)")
            #expect(try rows.map { try $0.decode("note", as: String.self) } == ["mine"])
            try await media.execute("DROP TABLE \(table)")
        }
    }

    @Test func storageCannotReadAlbumTablesNorCreateOutsideItsSchema() async throws {
        let database = try Self.rolesDatabase()
        let table = "album.\(Self.probeName())"
        try await withRolePool(database, as: "framecast_album") { album in
            _ = try await album.execute("CREATE TABLE \(table) (album_id uuid PRIMARY KEY)")
        }
        try await withRolePool(database, as: "framecast_storage") { storage in
            await expectDenied("storage reads an album table") { _ = try await storage.query("SELECT * FROM \(table)") }
            await expectDenied("storage writes an album table") {
                _ = try await storage.execute("INSERT INTO \(table) VALUES ('00000000-0000-0000-0000-000000000001')")
            }
            await expectDenied("storage creates a table in album") { _ = try await storage.execute("CREATE TABLE album.\(Self.probeName()) (x int)") }
            await expectDenied("storage creates a schema") { _ = try await storage.execute("CREATE SCHEMA \(Self.probeName())") }
            await expectDenied("storage creates a table in public") { _ = try await storage.execute("CREATE TABLE public.\(Self.probeName()) (x int)") }
            await expectDenied("storage creates a temporary table") { _ = try await storage.execute("CREATE TEMPORARY TABLE \(Self.probeName()) (x int)") }
        }
        try await withRolePool(database, as: "framecast_album") { album in
            _ = try await album.execute("DROP TABLE \(table)")
        }
    }

    /// The blob store's references: the administrator migrates `blobs` (its tables then belong to
    /// framecast_blobs); storage and media add and release references, the gateway only reads
    /// them, album has no business there. Each service checks at start that `blobs` is migrated.
    @Test func blobReferencesAreSharedAsGranted() async throws {
        let database = try Self.rolesDatabase()
        try await withRolePool(database, as: nil) { admin in
            try await BlobReferences.migrate(on: admin, logger: logger)
            let owner = try #require(try await admin.query("SELECT tableowner::text AS owner FROM pg_tables WHERE schemaname = 'blobs' AND tablename = 'refs'").first)
            #expect(try owner.decode("owner", as: String.self) == "framecast_blobs", "migrated as the schema's owner")
        }
        let key = String(repeating: "ab", count: 32)
        for (role, owner) in [("framecast_storage", "storage"), ("framecast_media", "media")] {
            try await withRolePool(database, as: role) { pool in
                #expect(try await BlobReferences.migrate(on: pool, logger: logger) == [], "\(role): nothing left to apply")
                let ref = Self.probeName()
                try await pool.execute("INSERT INTO blobs.refs (blob_key, owner, ref) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                                       [.text(key), .text(owner), .text(ref)])
                #expect(try await pool.query("SELECT 1 FROM blobs.refs WHERE ref = $1", [.text(ref)]).count == 1)
                #expect(try await pool.execute("DELETE FROM blobs.refs WHERE blob_key = $1 AND owner = $2 AND ref = $3",
                                               [.text(key), .text(owner), .text(ref)]) == 1)
                await expectDenied("\(role) drops blobs.refs", saying: "must be owner") { _ = try await pool.execute("DROP TABLE blobs.refs") }
            }
        }
        try await withRolePool(database, as: "framecast_gateway") { gateway in
            #expect(try await BlobReferences.migrate(on: gateway, logger: logger) == [])
            _ = try await gateway.query("SELECT 1 FROM blobs.refs WHERE blob_key = $1 LIMIT 1", [.text(key)])
            await expectDenied("gateway adds a reference") {
                _ = try await gateway.execute("INSERT INTO blobs.refs (blob_key, owner, ref) VALUES ($1, 'storage', 'x')", [.text(key)])
            }
            await expectDenied("gateway releases references") { _ = try await gateway.execute("DELETE FROM blobs.refs") }
        }
        try await withRolePool(database, as: "framecast_album") { album in
            await expectDenied("album reads blobs.refs") { _ = try await album.query("SELECT 1 FROM blobs.refs LIMIT 1") }
        }
    }

    /// Migrations.apply with a role per service: a role migrates the schema it owns without any
    /// right on the database; an administrator's migrations create objects that belong to the
    /// schema's owner; a role that only reads a schema sees what is applied, and is told to ask
    /// an administrator for what is not.
    @Test func migrationsRunAsTheSchemasOwner() async throws {
        _ = try Self.rolesDatabase()
        let database = try await TestServers.makeDatabase(prefix: "pg")
        try await withRolePool(database, as: nil) { admin in
            try await admin.withConnection { c in
                try c.executeScript("""
                    REVOKE ALL ON DATABASE \(Self.databaseName(database)) FROM PUBLIC;
                    GRANT CONNECT ON DATABASE \(Self.databaseName(database)) TO framecast_media;
                    CREATE SCHEMA own AUTHORIZATION framecast_media;
                    CREATE SCHEMA shared AUTHORIZATION framecast_album;
                    GRANT USAGE ON SCHEMA shared TO framecast_media;
                    ALTER DEFAULT PRIVILEGES FOR ROLE framecast_album IN SCHEMA shared GRANT SELECT ON TABLES TO framecast_media;
                    """)
            }
        }
        let first = [Migration(version: 1, name: "items", sql: "CREATE TABLE items (id int PRIMARY KEY)"),
                     Migration(version: 2, name: "seed", sql: "INSERT INTO items VALUES (1)")]
        let second = first + [Migration(version: 3, name: "more", sql: "CREATE TABLE more_items (id int PRIMARY KEY)")]
        try await withRolePool(database, as: "framecast_media") { media in
            let applied = try await Migrations.apply(schema: "own", first, on: media, logger: logger)
            #expect(applied == [1, 2], "a role migrates the schema it owns, with no right on the database")
        }
        try await withRolePool(database, as: nil) { admin in
            #expect(try await Migrations.apply(schema: "own", second, on: admin, logger: logger) == [3])
            #expect(try await Migrations.apply(schema: "shared", first, on: admin, logger: logger) == [1, 2])
            let owners = try await admin.query("""
                SELECT schemaname || '.' || tablename AS name, tableowner::text AS owner FROM pg_tables
                WHERE schemaname IN ('own', 'shared') ORDER BY 1
                """).map { (try $0.decode("name", as: String.self), try $0.decode("owner", as: String.self)) }
            #expect(owners.map { $0.0 } == ["own.items", "own.more_items", "own.schema_migrations", "shared.items", "shared.schema_migrations"])
            #expect(owners.allSatisfy { $0.1 == ($0.0.hasPrefix("own.") ? "framecast_media" : "framecast_album") }, "\(owners)")
        }
        try await withRolePool(database, as: "framecast_media") { media in
            #expect(try await Migrations.apply(schema: "own", second, on: media, logger: logger) == [])
            try await media.execute("INSERT INTO own.more_items VALUES (1)")
            // What the owner applied is seen; what it has not is refused with a hint.
            #expect(try await Migrations.apply(schema: "shared", first, on: media, logger: logger) == [])
            let error = await expectPostgresError { _ = try await Migrations.apply(schema: "shared", second, on: media, logger: logger) }
            #expect(error?.code == .migration)
            #expect(error?.sqlState == "42501")
            #expect(error?.message.contains("migration 3 (more) of schema shared") == true, "\(String(describing: error))")
            #expect(error?.message.contains("framecast migrate") == true, "\(String(describing: error))")
        }
    }

    static func databaseName(_ connInfo: String) -> String {
        connInfo.split(separator: " ").first { $0.hasPrefix("dbname=") }.map { String($0.dropFirst("dbname=".count)) } ?? ""
    }
}
