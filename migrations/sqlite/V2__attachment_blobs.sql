-- Encrypted contents of customer attachments (SQLite backend).
-- Each row is sealed with AES-256-GCM under the customer's data key (version key_version),
-- with the attachment id and the customer's subject as associated data; destroying the
-- customer's key (erasure) leaves only undecryptable bytes. The customer's event stream
-- says what each attachment is (CustomerAttachmentAdded); a row no event names is an
-- orphan from a failed append and is never served.
CREATE TABLE IF NOT EXISTS attachment_blobs (
    id          TEXT    PRIMARY KEY,
    customer_id TEXT    NOT NULL,
    key_version INTEGER NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    -- Microseconds since the Unix epoch, UTC.
    created_at  INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS attachment_blobs_customer ON attachment_blobs (customer_id);
