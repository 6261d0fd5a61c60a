-- The checkpoint of the log publisher (api/src/bus): the last log position JetStream acked
-- for each stream it publishes to (PostgreSQL backend). Written only by the node that holds
-- the publisher's advisory lock, on the connection that holds it, after the acks.
CREATE TABLE IF NOT EXISTS egec.bus_checkpoints (
    stream     text        PRIMARY KEY,
    position   bigint      NOT NULL CHECK (position >= 0),
    event_id   uuid,
    updated_at timestamptz NOT NULL DEFAULT now()
);
