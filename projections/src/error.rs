//! Errors of the read side. None of them carries personal data: database errors name
//! tables and constraints, decode errors name the position, the event type and the rule that
//! failed (value errors never echo their input).

use egec_commands::codec::CodecError;
use egec_commands::store::StoreError;

/// A failure of the read-model storage itself.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Not the error's source: a chain of causes (`{:#}`) would print the full PostgreSQL
    /// error, `DETAIL` included.
    #[error("postgres: {}", pg_summary(.0))]
    Postgres(tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("read model holds data this build cannot read: {0}")]
    Corrupt(String),
    #[error("cannot open the read models: {0}")]
    Open(String),
    #[error("background task failed: {0}")]
    Join(String),
}

impl From<tokio_postgres::Error> for StorageError {
    fn from(e: tokio_postgres::Error) -> Self {
        StorageError::Postgres(e)
    }
}

impl StorageError {
    /// Whether the database gave up on a time limit (see [`StoreError::is_timeout`]).
    pub fn is_timeout(&self) -> bool {
        match self {
            StorageError::Postgres(e) => egec_commands::store::pg_is_timeout(e),
            StorageError::Pool(e) => egec_commands::store::pool_is_timeout(e),
            _ => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("read models: {0}")]
    Storage(#[from] StorageError),
    #[error("event log: {0}")]
    Log(#[from] StoreError),
    #[error("cannot decode the event at position {position} ({event_type}): {source}")]
    Decode {
        position: i64,
        event_type: String,
        #[source]
        source: CodecError,
    },
    #[error("no projection is named {0:?}")]
    UnknownProjection(String),
    #[error("a rebuild of {0} is already running")]
    RebuildRunning(&'static str),
    #[error("the projection runner was shut down")]
    Stopped,
}

/// A PostgreSQL error without its `DETAIL`, `HINT` and `WHERE` parts: those may quote the
/// values of a row ("Failing row contains …"), and in these tables the values are personal
/// data, which must not reach the logs. The SQLSTATE and the primary message name the
/// problem and the constraint or column, which is what an operator needs.
fn pg_summary(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}
