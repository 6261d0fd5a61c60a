-- Schema `analytics` and the read-only role `egec_analytics` for analysts (PostgreSQL backend).
--
-- The role may read schema `analytics` and nothing else: it gets no privilege on schema
-- `egec` (the log, its head and the subject keys) nor on schema `crm` (the read models, which
-- hold personal data), and a fresh schema grants nothing to PUBLIC, so both stay closed to it.
--
-- Roles are cluster-wide while this migration runs once per database, and the test suite
-- migrates many databases of one cluster at the same time: the role is created only when it
-- is missing, and a concurrent creation by another database's migration is not an error.
-- The role is NOLOGIN; an operator who wants analysts to connect as it gives it a password
-- (`ALTER ROLE egec_analytics WITH LOGIN PASSWORD '...'`) or grants it to a login role
-- (see docs/analytics.md). A migrating user without CREATEROLE leaves the role uncreated
-- (with a notice) instead of failing the start-up: the grants below are then skipped too.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'egec_analytics') THEN
        IF EXISTS (
            SELECT 1 FROM pg_roles
            WHERE rolname = current_user AND (rolcreaterole OR rolsuper)
        ) THEN
            BEGIN
                CREATE ROLE egec_analytics NOLOGIN;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        ELSE
            RAISE NOTICE 'egec_analytics not created: the migrating role lacks CREATEROLE';
        END IF;
    END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS analytics;

-- Default privileges cover the tables the migrating role (the owner of every projection
-- table) creates in `analytics` later, so a new analytics table needs no new grant.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'egec_analytics') THEN
        GRANT USAGE ON SCHEMA analytics TO egec_analytics;
        GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO egec_analytics;
        ALTER DEFAULT PRIVILEGES IN SCHEMA analytics GRANT SELECT ON TABLES TO egec_analytics;
    END IF;
END
$$;
