-- Least-privilege roles (PostgreSQL backend): `egec_app` for the nodes, `egec_backup` for
-- backups. `egec_analytics` (V3) stays read-only on schema `analytics`.
--
-- `egec_app` may append to the log and read it, but not change or remove a recorded event:
-- it has SELECT and INSERT on `egec.events` and no UPDATE, DELETE or TRUNCATE, so even a
-- compromised node cannot rewrite history (the hash chain would show it; the privileges
-- stop it). It may destroy subject keys (crypto-shredding is the point of them) but not
-- lift a tombstone. It owns schemas `crm` and `analytics`, because the read models are its
-- own to create, rebuild and swap; it gets no right to create schemas or anything in
-- `egec`, so the log's structure changes only through these migrations, run by the owner.
--
-- Deploying with it: run `egec migrate` as the database owner, create a login role that is
-- a member of `egec_app`, and start the nodes with that login and `EGEC_DB_ROLE=egec_app`
-- (README.md, "Point it at PostgreSQL").
--
-- As in V3, roles are cluster-wide while this migration runs once per database, concurrent
-- creation by another database's migration is not an error, and a migrating role without
-- CREATEROLE leaves the roles uncreated (with a notice) and the grants skipped.
DO $$
DECLARE
    can_create boolean := EXISTS (
        SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolcreaterole OR rolsuper)
    );
    wanted text;
BEGIN
    FOREACH wanted IN ARRAY ARRAY['egec_app', 'egec_backup'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = wanted) THEN
            IF can_create THEN
                BEGIN
                    EXECUTE format('CREATE ROLE %I NOLOGIN', wanted);
                EXCEPTION WHEN duplicate_object OR unique_violation THEN
                    NULL;
                END;
            ELSE
                RAISE NOTICE '% not created: the migrating role lacks CREATEROLE', wanted;
            END IF;
        END IF;
    END LOOP;
END
$$;

-- The trigram extension that customer search uses, created here by the owner so that a
-- node running as `egec_app` finds it (it could not create it). Optional: without it the
-- search scans, as before.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm not created (%): customer search will scan', SQLERRM;
END
$$;

CREATE SCHEMA IF NOT EXISTS crm;
CREATE SCHEMA IF NOT EXISTS analytics;

DO $$
DECLARE
    is_super boolean := EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND rolsuper);
    rel record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'egec_app') THEN
        RETURN;
    END IF;
    -- A non-superuser owner must be a member of `egec_app` to hand it the schemas, and
    -- stays one, so that it can still run the app itself and repair the read models.
    IF NOT is_super AND NOT pg_has_role(current_user, 'egec_app', 'MEMBER') THEN
        EXECUTE format('GRANT egec_app TO %I', current_user);
    END IF;

    GRANT USAGE ON SCHEMA egec TO egec_app;
    GRANT SELECT, INSERT ON egec.events TO egec_app;
    GRANT SELECT, UPDATE ON egec.log_head TO egec_app;
    GRANT SELECT, INSERT, UPDATE, DELETE ON egec.subject_keys TO egec_app;
    GRANT SELECT, INSERT ON egec.erased_subjects TO egec_app;
    GRANT SELECT, INSERT, DELETE ON egec.attachment_blobs TO egec_app;
    GRANT SELECT, INSERT, UPDATE ON egec.bus_checkpoints TO egec_app;
    -- Read to see that the database is up to date at start-up; never written by a node.
    IF to_regclass('refinery_schema_history') IS NOT NULL THEN
        GRANT SELECT ON refinery_schema_history TO egec_app;
    END IF;

    -- The read models: `egec_app` owns the schemas and whatever is already in them (tables
    -- made by nodes that ran as the owner before), so that it can rebuild and swap them.
    ALTER SCHEMA crm OWNER TO egec_app;
    ALTER SCHEMA analytics OWNER TO egec_app;
    FOR rel IN
        SELECT n.nspname, c.relname, c.relkind FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('crm', 'analytics') AND c.relkind IN ('r', 'v', 'm', 'p')
    LOOP
        EXECUTE format(
            'ALTER %s %I.%I OWNER TO egec_app',
            CASE rel.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
            rel.nspname, rel.relname
        );
    END LOOP;
END
$$;

-- `egec_backup` reads everything (pg_dump) and writes nothing. `pg_read_all_data` covers the
-- tables the nodes create later, too; granting it needs a superuser, so a lesser owner
-- leaves it to the operator with a notice.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'egec_backup')
       AND NOT pg_has_role('egec_backup', 'pg_read_all_data', 'MEMBER') THEN
        BEGIN
            GRANT pg_read_all_data TO egec_backup;
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'egec_backup not granted pg_read_all_data: a superuser must grant it';
            -- Another database's migration granting the same cluster-wide membership at the
            -- same moment: the membership is there either way.
            WHEN unique_violation OR internal_error THEN
                NULL;
        END;
    END IF;
END
$$;
