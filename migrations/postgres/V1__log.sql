-- The append-only event log, its counter row, and the subject-key table (PostgreSQL backend).
-- Landed migrations are never edited; add a new numbered file instead.

CREATE SCHEMA IF NOT EXISTS egec;

CREATE TABLE egec.events (
    global_position bigint      PRIMARY KEY,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version >= 1),
    event_id        uuid        NOT NULL UNIQUE,
    command_id      uuid        NOT NULL,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL,
    prev_hash       bytea       NOT NULL,
    hash            bytea       NOT NULL,
    -- Also the index every stream read and every expected-version check uses.
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_command_id ON egec.events (command_id);

-- The one-row counter. Appenders lock this row (SELECT ... FOR UPDATE) for the length of
-- their transaction, which serialises them across processes and makes positions dense and
-- commit-ordered. It also anchors the end of the hash chain.
CREATE TABLE egec.log_head (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    position bigint  NOT NULL,
    hash     bytea   NOT NULL
);

INSERT INTO egec.log_head (id, position, hash) VALUES (true, 0, decode(repeat('00', 32), 'hex'));

-- Wrapped data-encryption keys, one row per subject and key version.
CREATE TABLE egec.subject_keys (
    subject     text        NOT NULL,
    key_version integer     NOT NULL,
    kek_id      text        NOT NULL,
    wrapped     bytea       NOT NULL,
    fingerprint text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, key_version)
);

-- Tombstones: a subject listed here was erased and never gets a key again.
CREATE TABLE egec.erased_subjects (
    subject   text        PRIMARY KEY,
    erased_at timestamptz NOT NULL DEFAULT now()
);
