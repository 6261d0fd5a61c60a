//! Who publishes, and where the publisher's checkpoint is kept.
//!
//! PostgreSQL: the node holding the session advisory lock `(0x45474543, 0x4255_0001)` on a
//! connection taken out of the pool for the purpose publishes; the others try again every
//! second. The checkpoint is written on that same connection, so a node whose lock
//! connection died can commit nothing, and it stops publishing as soon as the connection is
//! seen closed. SQLite serves one process, which simply publishes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use deadpool_postgres::{ClientWrapper, Object, Pool};
use uuid::Uuid;

/// First key of the project's two-key advisory locks ("EGEC").
const LOCK_CLASS: i32 = 0x4547_4543;
/// Second key: the log publisher ("BU" 1), distinct from the migration lock (1) and the
/// projections' locks (0x5052_….).
const PUBLISHER_LOCK: i32 = 0x4255_0001;

/// A call on the lock's connection that takes longer than this counts as a lost lock: a node
/// cut off from PostgreSQL stops publishing within seconds, while the server, which frees
/// the lock only once it notices the dead connection (TCP keepalives), lets another node
/// take over.
const LOCK_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the lock's connection is closed")]
    Lost,
    #[error("{0}")]
    Other(String),
}

/// Where leadership is asked for.
#[derive(Clone)]
pub enum Leadership {
    Postgres(Pool),
    /// The log's database file (`egec.db`).
    Sqlite(PathBuf),
}

/// Held leadership: publishing is allowed while [`Lease::is_held`].
pub enum Lease {
    Postgres(ClientWrapper),
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
}

/// The last position JetStream acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    pub position: i64,
    pub event_id: Option<Uuid>,
}

impl Leadership {
    /// Takes the lead if no other node holds it.
    pub async fn try_lead(&self) -> Result<Option<Lease>, LeaseError> {
        match self {
            Leadership::Postgres(pool) => {
                let conn = pool.get().await?;
                let got: bool = conn
                    .query_one(
                        "SELECT pg_try_advisory_lock($1, $2)",
                        &[&LOCK_CLASS, &PUBLISHER_LOCK],
                    )
                    .await?
                    .try_get(0)?;
                if !got {
                    return Ok(None);
                }
                // A session lock lives as long as its connection, which therefore leaves the
                // pool for good: closed (lock released) when the lease is dropped.
                Ok(Some(Lease::Postgres(Object::take(conn))))
            }
            Leadership::Sqlite(path) => {
                let path = path.clone();
                let conn = tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open(path)?;
                    conn.busy_timeout(std::time::Duration::from_secs(5))?;
                    Ok::<_, rusqlite::Error>(conn)
                })
                .await
                .map_err(|e| LeaseError::Other(e.to_string()))??;
                Ok(Some(Lease::Sqlite(Arc::new(Mutex::new(conn)))))
            }
        }
    }
}

impl Lease {
    /// False once the lock's connection is gone, and with it the lock.
    pub fn is_held(&self) -> bool {
        match self {
            Lease::Postgres(c) => !c.is_closed(),
            Lease::Sqlite(_) => true,
        }
    }

    /// A round trip on the lock's connection, so that a silently dead one is noticed while
    /// there is nothing to publish.
    pub async fn check(&self) -> Result<(), LeaseError> {
        match self {
            Lease::Postgres(c) => {
                tokio::time::timeout(LOCK_CALL_TIMEOUT, c.simple_query(""))
                    .await
                    .map_err(|_| LeaseError::Lost)??;
                if c.is_closed() {
                    return Err(LeaseError::Lost);
                }
                Ok(())
            }
            Lease::Sqlite(_) => Ok(()),
        }
    }

    pub async fn load(&self, stream: &str) -> Result<Checkpoint, LeaseError> {
        match self {
            Lease::Postgres(c) => {
                let row = c
                    .query_opt(
                        "SELECT position, event_id FROM egec.bus_checkpoints WHERE stream = $1",
                        &[&stream],
                    )
                    .await?;
                Ok(match row {
                    Some(r) => Checkpoint {
                        position: r.try_get(0)?,
                        event_id: r.try_get(1)?,
                    },
                    None => Checkpoint::default(),
                })
            }
            Lease::Sqlite(conn) => {
                let conn = conn.clone();
                let stream = stream.to_owned();
                tokio::task::spawn_blocking(move || {
                    let conn = conn.lock().unwrap_or_else(|e| e.into_inner());
                    let row: Option<(i64, Option<String>)> = conn
                        .query_row(
                            "SELECT position, event_id FROM bus_checkpoints WHERE stream = ?1",
                            [&stream],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .map(Some)
                        .or_else(|e| match e {
                            rusqlite::Error::QueryReturnedNoRows => Ok(None),
                            e => Err(e),
                        })?;
                    Ok(match row {
                        Some((position, id)) => Checkpoint {
                            position,
                            event_id: id.and_then(|s| Uuid::parse_str(&s).ok()),
                        },
                        None => Checkpoint::default(),
                    })
                })
                .await
                .map_err(|e| LeaseError::Other(e.to_string()))?
            }
        }
    }

    /// Commits the checkpoint (only ever forwards).
    pub async fn save(&self, stream: &str, cp: Checkpoint) -> Result<(), LeaseError> {
        match self {
            Lease::Postgres(c) => {
                if c.is_closed() {
                    return Err(LeaseError::Lost);
                }
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                    [&stream, &cp.position, &cp.event_id];
                let write = c.execute(
                    "INSERT INTO egec.bus_checkpoints (stream, position, event_id, updated_at) \
                     VALUES ($1, $2, $3, now()) \
                     ON CONFLICT (stream) DO UPDATE SET position = EXCLUDED.position, \
                     event_id = EXCLUDED.event_id, updated_at = now() \
                     WHERE egec.bus_checkpoints.position < EXCLUDED.position",
                    &params,
                );
                tokio::time::timeout(LOCK_CALL_TIMEOUT, write)
                    .await
                    .map_err(|_| LeaseError::Lost)??;
                Ok(())
            }
            Lease::Sqlite(conn) => {
                let conn = conn.clone();
                let stream = stream.to_owned();
                let now = chrono::Utc::now().timestamp_micros();
                tokio::task::spawn_blocking(move || {
                    let conn = conn.lock().unwrap_or_else(|e| e.into_inner());
                    conn.execute(
                        "INSERT INTO bus_checkpoints (stream, position, event_id, updated_at) \
                         VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT (stream) DO UPDATE SET position = excluded.position, \
                         event_id = excluded.event_id, updated_at = excluded.updated_at \
                         WHERE bus_checkpoints.position < excluded.position",
                        rusqlite::params![
                            stream,
                            cp.position,
                            cp.event_id.map(|u| u.to_string()),
                            now
                        ],
                    )?;
                    Ok(())
                })
                .await
                .map_err(|e| LeaseError::Other(e.to_string()))?
            }
        }
    }
}
