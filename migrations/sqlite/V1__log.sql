-- The append-only event log, its counter row, and the subject-key table (SQLite backend).
-- Landed migrations are never edited; add a new numbered file instead.

-- global_position is the rowid alias, so reads by position are B-tree lookups and the
-- position can never be NULL or repeated. Positions are assigned by the appender from
-- log_head, never by SQLite's rowid allocation.
CREATE TABLE IF NOT EXISTS events (
    global_position INTEGER PRIMARY KEY,
    stream_id       TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL CHECK (stream_version >= 1),
    event_id        TEXT    NOT NULL UNIQUE,
    command_id      TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    -- Microseconds since the Unix epoch, UTC.
    recorded_at     INTEGER NOT NULL,
    prev_hash       BLOB    NOT NULL,
    hash            BLOB    NOT NULL,
    UNIQUE (stream_id, stream_version)
);

CREATE INDEX IF NOT EXISTS events_command_id ON events (command_id);

-- The one-row counter: the last position and the hash at it. Every append updates it in the
-- same transaction as its inserts, so it is the anchor the chain verification ends on.
CREATE TABLE IF NOT EXISTS log_head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL,
    hash     BLOB    NOT NULL
);

INSERT OR IGNORE INTO log_head (id, position, hash) VALUES (1, 0, zeroblob(32));

-- Wrapped data-encryption keys, one row per subject and key version.
CREATE TABLE IF NOT EXISTS subject_keys (
    subject     TEXT    NOT NULL,
    key_version INTEGER NOT NULL,
    kek_id      TEXT    NOT NULL,
    wrapped     BLOB    NOT NULL,
    fingerprint TEXT    NOT NULL,
    -- Microseconds since the Unix epoch, UTC.
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (subject, key_version)
);

-- Tombstones: a subject listed here was erased and never gets a key again.
CREATE TABLE IF NOT EXISTS erased_subjects (
    subject   TEXT    PRIMARY KEY,
    -- Microseconds since the Unix epoch, UTC.
    erased_at INTEGER NOT NULL
);
