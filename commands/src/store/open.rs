//! Choosing and opening the backend from configuration.

use std::path::Path;
use std::sync::Arc;

use super::blobs::BlobStore;
use super::postgres::{PgLog, PgSettings};
use super::sqlite::SqliteLog;
use super::{Backend, EventLog, KeyTable, StoreError};

/// The opened storage: the two traits everyone uses, plus the concrete backend for the few
/// callers that need backend-specific operations (WAL checkpoints, the PostgreSQL pool).
#[derive(Clone)]
pub struct Stores {
    pub log: Arc<dyn EventLog>,
    pub keys: Arc<dyn KeyTable>,
    /// Encrypted attachment contents, in the log's database.
    pub blobs: Arc<dyn BlobStore>,
    pub sqlite: Option<Arc<SqliteLog>>,
    pub postgres: Option<Arc<PgLog>>,
}

impl Stores {
    /// Which backend is open.
    pub fn backend(&self) -> Backend {
        self.log.backend()
    }

    /// Wraps an opened SQLite log.
    pub fn from_sqlite(log: SqliteLog) -> Self {
        let log = Arc::new(log);
        Self {
            log: log.clone(),
            keys: log.clone(),
            blobs: log.clone(),
            sqlite: Some(log),
            postgres: None,
        }
    }

    /// Wraps a connected PostgreSQL log.
    pub fn from_postgres(log: PgLog) -> Self {
        let log = Arc::new(log);
        Self {
            log: log.clone(),
            keys: log.clone(),
            blobs: log.clone(),
            sqlite: None,
            postgres: Some(log),
        }
    }
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("backend", &self.backend())
            .finish()
    }
}

/// Opens PostgreSQL when `database_url` is given, else SQLite in `data_dir`, and applies
/// pending migrations either way. `pool_size` only matters for PostgreSQL.
pub async fn open(
    database_url: Option<&str>,
    data_dir: &Path,
    pool_size: usize,
) -> Result<Stores, StoreError> {
    open_with(
        database_url,
        data_dir,
        &PgSettings::with_pool_size(pool_size),
    )
    .await
}

/// As [`open`], with every PostgreSQL connection setting given.
pub async fn open_with(
    database_url: Option<&str>,
    data_dir: &Path,
    settings: &PgSettings,
) -> Result<Stores, StoreError> {
    match database_url {
        Some(url) => Ok(Stores::from_postgres(
            PgLog::connect_with(url, settings).await?,
        )),
        None => Ok(Stores::from_sqlite(SqliteLog::open_async(data_dir).await?)),
    }
}

/// Applies pending migrations and closes the connections again (for `egec migrate`).
pub async fn migrate_only(database_url: Option<&str>, data_dir: &Path) -> Result<(), StoreError> {
    let stores = open(database_url, data_dir, 1).await?;
    drop(stores);
    Ok(())
}
