-- A PostgreSQL role per Framecast service, with rights on its own schema only (DESIGN.md,
-- "Security model"). Run as an administrator (a superuser: `postgres` on one machine,
-- `framecast` in the Kubernetes manifests) connected to the Framecast database, before
-- `framecast migrate`, with the services' passwords in the environment:
--
--   FRAMECAST_POSTGRES_GATEWAY_PASSWORD=… FRAMECAST_POSTGRES_STORAGE_PASSWORD=… \
--   FRAMECAST_POSTGRES_ALBUM_PASSWORD=… FRAMECAST_POSTGRES_MEDIA_PASSWORD=… \
--     psql -X -v ON_ERROR_STOP=1 -d framecast -f deploy/postgres/roles.sql
--
-- Idempotent: scripts/lib/common.sh (start_postgres) runs it at every start, the Kubernetes
-- migrate Job before every rollout. It also converts a database made before there were roles
-- (schemas and tables owned by the administrator).
--
--   role               login  owns schema  other rights
--   framecast_gateway  yes    gateway      blobs: USAGE; SELECT on its tables
--   framecast_storage  yes    storage      blobs: USAGE; SELECT, INSERT, DELETE on its tables
--   framecast_album    yes    album        -
--   framecast_media    yes    media        blobs: USAGE; SELECT, INSERT, DELETE on its tables
--   framecast_blobs    no     blobs        - (the blob store's references, blobs.refs)
--
-- Nobody else has any right on these schemas; the service roles may CONNECT to this database
-- and create nothing outside their own schema (no CREATE on the database, nothing at all on
-- schema public). The blob store's schema belongs to no service: its migrations are applied
-- by `framecast migrate` run as the administrator (Migrations.apply runs each schema's
-- migrations as the schema's owner, so what they create is framecast_blobs's and the default
-- privileges below apply); the services only read blobs.schema_migrations at start.

\set ON_ERROR_STOP 1
\getenv gateway_password FRAMECAST_POSTGRES_GATEWAY_PASSWORD
\getenv storage_password FRAMECAST_POSTGRES_STORAGE_PASSWORD
\getenv album_password FRAMECAST_POSTGRES_ALBUM_PASSWORD
\getenv media_password FRAMECAST_POSTGRES_MEDIA_PASSWORD
SELECT :{?gateway_password} AND :{?storage_password} AND :{?album_password} AND :{?media_password} AS have_passwords \gset
\if :have_passwords
\else
DO $$ BEGIN
  RAISE EXCEPTION 'roles.sql needs FRAMECAST_POSTGRES_GATEWAY_PASSWORD, _STORAGE_, _ALBUM_ and _MEDIA_PASSWORD in its environment';
END $$;
\endif

BEGIN;
SET LOCAL client_min_messages = warning;

-- The roles. Every run sets their attributes and passwords again (a rotated secret takes
-- effect at the next start).
SELECT format('CREATE ROLE %I', name)
FROM unnest(ARRAY['framecast_gateway', 'framecast_storage', 'framecast_album', 'framecast_media', 'framecast_blobs']) AS name
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) \gexec
SET LOCAL password_encryption = 'scram-sha-256';
ALTER ROLE framecast_gateway LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'gateway_password';
ALTER ROLE framecast_storage LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'storage_password';
ALTER ROLE framecast_album LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'album_password';
ALTER ROLE framecast_media LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'media_password';
ALTER ROLE framecast_blobs NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD NULL;

-- The database: the services may connect, nothing more (no CREATE: no schemas of their own
-- making; no TEMPORARY); nobody else may connect but administrators.
REVOKE ALL ON DATABASE :"DBNAME" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"DBNAME" TO framecast_gateway, framecast_storage, framecast_album, framecast_media;
-- PostgreSQL 15 already refuses CREATE on schema public to PUBLIC; USAGE goes too.
REVOKE ALL ON SCHEMA public FROM PUBLIC;

-- Each schema, owned by its role (the service migrates it as that role), and what an older
-- database has in it handed to that role too.
CREATE SCHEMA IF NOT EXISTS gateway AUTHORIZATION framecast_gateway;
CREATE SCHEMA IF NOT EXISTS storage AUTHORIZATION framecast_storage;
CREATE SCHEMA IF NOT EXISTS album AUTHORIZATION framecast_album;
CREATE SCHEMA IF NOT EXISTS media AUTHORIZATION framecast_media;
CREATE SCHEMA IF NOT EXISTS blobs AUTHORIZATION framecast_blobs;
DO $$
DECLARE
  owners CONSTANT text[] := ARRAY[
    ['gateway', 'framecast_gateway'], ['storage', 'framecast_storage'], ['album', 'framecast_album'],
    ['media', 'framecast_media'], ['blobs', 'framecast_blobs']];
  schema_name text;
  owner_name text;
  object record;
BEGIN
  FOR i IN 1 .. array_length(owners, 1) LOOP
    schema_name := owners[i][1];
    owner_name := owners[i][2];
    EXECUTE format('ALTER SCHEMA %I OWNER TO %I', schema_name, owner_name);
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', schema_name);
    -- Tables (their indexes, and the sequences their columns own, follow), views, and
    -- sequences of their own.
    FOR object IN
      SELECT c.relname, c.relkind FROM pg_class c
      WHERE c.relnamespace = schema_name::regnamespace AND c.relowner <> owner_name::regrole
        AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
        AND NOT (c.relkind = 'S' AND EXISTS (
          SELECT FROM pg_depend d
          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')))
    LOOP
      EXECUTE format('ALTER %s %I.%I OWNER TO %I',
        CASE object.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                            WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
        schema_name, object.relname, owner_name);
    END LOOP;
    FOR object IN
      SELECT p.oid::regprocedure AS signature FROM pg_proc p
      WHERE p.pronamespace = schema_name::regnamespace AND p.proowner <> owner_name::regrole
    LOOP
      EXECUTE format('ALTER ROUTINE %s OWNER TO %I', object.signature, owner_name);
    END LOOP;
    -- Types of their own: domains, enums, ranges, composite types (a table's row type follows the table).
    FOR object IN
      SELECT t.oid::regtype AS name FROM pg_type t
      WHERE t.typnamespace = schema_name::regnamespace AND t.typowner <> owner_name::regrole
        AND (t.typtype IN ('d', 'e', 'r')
             OR (t.typtype = 'c' AND (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c'))
    LOOP
      EXECUTE format('ALTER TYPE %s OWNER TO %I', object.name, owner_name);
    END LOOP;
  END LOOP;
END $$;

-- The blob store's references: storage (a reference per file) and media (per version) add and
-- release theirs; the gateway reads them (an upload nobody registered is removed only when
-- unreferenced); every one of them reads blobs.schema_migrations at start. Default privileges
-- for what `framecast migrate` creates there later, grants for what is there already.
GRANT USAGE ON SCHEMA blobs TO framecast_gateway, framecast_storage, framecast_media;
ALTER DEFAULT PRIVILEGES FOR ROLE framecast_blobs IN SCHEMA blobs GRANT SELECT ON TABLES TO framecast_gateway;
ALTER DEFAULT PRIVILEGES FOR ROLE framecast_blobs IN SCHEMA blobs
  GRANT SELECT, INSERT, DELETE ON TABLES TO framecast_storage, framecast_media;
GRANT SELECT ON ALL TABLES IN SCHEMA blobs TO framecast_gateway;
GRANT SELECT, INSERT, DELETE ON ALL TABLES IN SCHEMA blobs TO framecast_storage, framecast_media;

COMMIT;
