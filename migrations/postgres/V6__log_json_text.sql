-- The log's `payload` and `metadata` become `json` (the text as the appender wrote it)
-- instead of `jsonb`.
--
-- Nothing queries inside these columns in SQL: every reader decodes them in the app, and the
-- hash chain covers their canonical form (serde_json's `Value`, keys sorted), not the stored
-- text, so the chain verifies the same before and after. What changes is cost: `jsonb` is
-- parsed into its binary form on every insert and printed back to text on every read,
-- which made PostgreSQL's own CPU the limit of appends and rebuilds on a small machine;
-- `json` is only checked on insert and sent as it is (bench/README figures, 2026-11-30).
--
-- On an existing database this rewrites `egec.events` once (with its indexes), under an
-- exclusive lock. Stop every node, run `egec migrate`, then start the new version: a node
-- still running the old one holds statements prepared for `jsonb`, which PostgreSQL then
-- refuses ("cached plan must not change result type") until that node restarts.
ALTER TABLE egec.events
    ALTER COLUMN payload TYPE json USING payload::json,
    ALTER COLUMN metadata TYPE json USING metadata::json;
