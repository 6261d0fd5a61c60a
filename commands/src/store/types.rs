use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// Which storage backend serves the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// What a command expects of its stream before it appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check (used only for streams that are never contended, such as login activity).
    Any,
    /// The stream must have exactly this many events (0 = must not exist yet).
    Exact(i64),
}

/// One event ready to be stored: personal fields are already encrypted.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
    pub metadata: Value,
}

/// The events of one command, appended atomically to one stream.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub command_id: Uuid,
    pub events: Vec<NewEvent>,
    /// First keys of brand-new data subjects that the events are encrypted under, stored in
    /// the same transaction as the events. Creating a new subject's key inside the append
    /// saves a transaction of its own per new subject. The request is refused with a
    /// [`Conflict`] whose `actual` equals `expected` when one of these subjects already has a
    /// key or was erased; the events then were never written, and the caller encrypts again
    /// under the key the table holds. Empty for every other request.
    pub new_keys: Vec<(String, WrappedKey)>,
}

impl AppendRequest {
    /// A request that creates no subject key.
    pub fn new(
        stream_id: impl Into<String>,
        expected: ExpectedVersion,
        command_id: Uuid,
        events: Vec<NewEvent>,
    ) -> Self {
        Self {
            stream_id: stream_id.into(),
            expected,
            command_id,
            events,
            new_keys: Vec::new(),
        }
    }
}

/// The answer to a request that was appended (or had been appended before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Position of the command's first event.
    pub first_position: i64,
    /// Position of the command's last event; reads that wait for this see the write.
    pub last_position: i64,
    /// Stream version after the command's last event.
    pub stream_version: i64,
    /// True when the `command_id` had already been appended and nothing new was written.
    pub duplicate: bool,
}

/// The stream was not at the expected version, or (when `actual == expected`) a subject key
/// the request meant to create already exists or was erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stream expected at version {expected}, found at {actual}")]
pub struct Conflict {
    pub expected: i64,
    pub actual: i64,
}

/// An event as stored, with its place in the log and in the hash chain. Payloads here are as
/// stored (encrypted, possibly an old schema version); decoding and upcasting happen above.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub global_position: i64,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_id: Uuid,
    pub command_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
    pub metadata: Value,
    /// Truncated to whole microseconds, the precision both backends store.
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// A stored event as a fold reads it: the payload and metadata are the JSON text they are
/// stored as, which [`crate::codec::ParsedEvent::parse`] takes straight into the parts that
/// decoding needs instead of into `serde_json::Value` trees (a rebuild reads a million of
/// them). The hash-chain columns are left out: folds do not check the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecordedEvent {
    pub global_position: i64,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_id: Uuid,
    pub command_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: String,
    pub metadata: String,
    pub recorded_at: DateTime<Utc>,
}

impl RawRecordedEvent {
    /// The event with its JSON parsed into `payload` and `metadata` and the given links of
    /// the hash chain.
    pub fn with_values(
        self,
        payload: Value,
        metadata: Value,
        prev_hash: Vec<u8>,
        hash: Vec<u8>,
    ) -> RecordedEvent {
        RecordedEvent {
            global_position: self.global_position,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
            event_id: self.event_id,
            command_id: self.command_id,
            event_type: self.event_type,
            schema_version: self.schema_version,
            payload,
            metadata,
            recorded_at: self.recorded_at,
            prev_hash,
            hash,
        }
    }
}

impl From<RecordedEvent> for RawRecordedEvent {
    fn from(r: RecordedEvent) -> Self {
        RawRecordedEvent {
            global_position: r.global_position,
            stream_id: r.stream_id,
            stream_version: r.stream_version,
            event_id: r.event_id,
            command_id: r.command_id,
            event_type: r.event_type,
            schema_version: r.schema_version,
            payload: r.payload.to_string(),
            metadata: r.metadata.to_string(),
            recorded_at: r.recorded_at,
        }
    }
}

/// Upper bound of a stream read (inclusive), for time travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    None,
    Version(i64),
    Position(i64),
    Time(DateTime<Utc>),
}

/// The last link of the hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub position: i64,
    pub hash: Vec<u8>,
}

/// A data-encryption key wrapped by a key-encryption key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// 1 for the first key of a subject; kept for future per-subject key rotation.
    pub key_version: i32,
    /// Identifies the master key that wrapped it, so the master key can rotate.
    pub kek_id: String,
    /// nonce ‖ AES-256-GCM ciphertext of the 32-byte key.
    pub wrapped: Vec<u8>,
    /// Hex SHA-256 of the unwrapped key, printed on erasure certificates.
    pub fingerprint: String,
}

/// What the key table holds for a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectKeys {
    /// No key yet and never erased.
    None,
    /// Live key versions, oldest first.
    Active(Vec<WrappedKey>),
    /// Erased: the keys are gone for good.
    Erased,
}

/// Technical failures of a backend. Never shown to API clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Shown without its `DETAIL` and not exposed as the error's source (see
    /// [`pg_summary`]), so that no chain of causes (`{:#}`) can print a row's values.
    #[error("postgres: {}", pg_summary(.0))]
    Postgres(tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("migration: {0}")]
    Migration(#[from] refinery::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("background task failed: {0}")]
    Join(String),
}

impl StoreError {
    /// Whether the database gave up on a time limit rather than refusing the work: a
    /// statement or lock timeout, an idle transaction ended by the server, or no pooled
    /// connection free in time. Retrying later may succeed, so the API answers 503.
    pub fn is_timeout(&self) -> bool {
        match self {
            StoreError::Postgres(e) => pg_is_timeout(e),
            StoreError::Pool(e) => pool_is_timeout(e),
            _ => false,
        }
    }
}

/// See [`StoreError::is_timeout`]. `query_canceled` is what a `statement_timeout` raises
/// (nothing in this crate cancels queries otherwise).
pub fn pg_is_timeout(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|code| {
        [
            SqlState::QUERY_CANCELED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
        ]
        .contains(code)
    })
}

/// See [`StoreError::is_timeout`].
pub fn pool_is_timeout(e: &deadpool_postgres::PoolError) -> bool {
    match e {
        deadpool_postgres::PoolError::Timeout(_) => true,
        deadpool_postgres::PoolError::Backend(e) => pg_is_timeout(e),
        _ => false,
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(e)
    }
}

/// A PostgreSQL error without its `DETAIL`, `HINT` and `WHERE` parts: those may quote the
/// values of a row ("Failing row contains …", "Key (x)=(…) already exists"), which can be
/// personal data and must not reach the logs. The SQLSTATE and the primary message name the
/// problem and the constraint, which is what an operator needs.
pub fn pg_summary(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}
