-- Encrypted contents of customer attachments (PostgreSQL backend).
-- Each row is sealed with AES-256-GCM under the customer's data key (version key_version),
-- with the attachment id and the customer's subject as associated data; destroying the
-- customer's key (erasure) leaves only undecryptable bytes. The customer's event stream
-- says what each attachment is (CustomerAttachmentAdded); a row no event names is an
-- orphan from a failed append and is never served.
CREATE TABLE egec.attachment_blobs (
    id          uuid        PRIMARY KEY,
    customer_id uuid        NOT NULL,
    key_version integer     NOT NULL,
    nonce       bytea       NOT NULL,
    ciphertext  bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX attachment_blobs_customer ON egec.attachment_blobs (customer_id);
