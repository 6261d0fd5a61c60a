-- The checkpoint of the log publisher (api/src/bus): the last log position JetStream acked
-- for each stream it publishes to (SQLite backend).
CREATE TABLE IF NOT EXISTS bus_checkpoints (
    stream     TEXT    PRIMARY KEY,
    position   INTEGER NOT NULL CHECK (position >= 0),
    event_id   TEXT,
    -- Microseconds since the Unix epoch, UTC.
    updated_at INTEGER NOT NULL
);
