//! The database's own limits with the log's row shape, measured in the same run as the
//! commands: single-row autocommit INSERTs, and 500-row transactions.
//!
//! The scratch tables copy the events table exactly (PostgreSQL: `LIKE egec.events
//! INCLUDING ALL`; SQLite: the same DDL as the migration), and every row carries a real
//! encoded event (ciphertext included), so the only difference to the log is everything the
//! write path adds on top: loading, deciding, encrypting, the counter row and the hash chain.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use egec_commands::store::NewEvent;
use serde_json::Value;
use tokio_postgres::NoTls;
use uuid::Uuid;

use crate::cpu::{CpuUse, Snapshot, database_of};

/// Rows per transaction in the batch measurement.
pub const BATCH_ROWS: usize = 500;

/// One scratch row, with fresh ids so the unique indexes do real work.
struct Row {
    position: i64,
    stream_id: String,
    event_id: Uuid,
    command_id: Uuid,
    recorded_at: DateTime<Utc>,
}

impl Row {
    fn next(counter: &AtomicI64) -> Self {
        Self {
            position: counter.fetch_add(1, Ordering::Relaxed),
            stream_id: format!("customer-{}", Uuid::now_v7()),
            event_id: Uuid::now_v7(),
            command_id: Uuid::now_v7(),
            recorded_at: Utc::now(),
        }
    }
}

/// The measured window: only work that completes inside it counts.
#[derive(Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    pub fn after(warmup: Duration, measure: Duration) -> Self {
        let start = Instant::now() + warmup;
        Self {
            start,
            end: start + measure,
        }
    }

    fn contains(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }

    fn seconds(&self) -> f64 {
        (self.end - self.start).as_secs_f64()
    }
}

/// The sample event's stored columns that do not vary per row.
#[derive(Clone)]
pub struct Shape {
    event_type: String,
    schema_version: i32,
    payload: Value,
    metadata: Value,
    hash: Vec<u8>,
}

impl Shape {
    pub fn from_event(e: &NewEvent) -> Self {
        Self {
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            payload: e.payload.clone(),
            metadata: e.metadata.clone(),
            // SHA-256 sized, like the log's prev_hash and hash columns.
            hash: vec![0xAB; 32],
        }
    }

    /// Bytes of payload plus metadata as JSON text, for the report.
    pub fn json_bytes(&self) -> usize {
        self.payload.to_string().len() + self.metadata.to_string().len()
    }
}

const PG_SINGLE: &str = "INSERT INTO bench.single_events (global_position, stream_id, \
     stream_version, event_id, command_id, event_type, schema_version, payload, metadata, \
     recorded_at, prev_hash, hash) VALUES ($1, $2, 1, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

const PG_BATCH: &str = "INSERT INTO bench.batch_events (global_position, stream_id, \
     stream_version, event_id, command_id, event_type, schema_version, payload, metadata, \
     recorded_at, prev_hash, hash) \
     SELECT p, s, 1, e, c, $5, $6, pl, $8, $9, $10, $10 FROM unnest($1::bigint[], \
     $2::text[], $3::uuid[], $4::uuid[], $7::json[]) AS u(p, s, e, c, pl)";

async fn pg_connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("cannot connect to the benchmark database")?;
    tokio::spawn(connection);
    Ok(client)
}

/// Creates the scratch tables as exact copies of `egec.events` (the log must be migrated).
pub async fn pg_prepare(url: &str) -> anyhow::Result<()> {
    let client = pg_connect(url).await?;
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS bench; \
             CREATE TABLE IF NOT EXISTS bench.single_events (LIKE egec.events INCLUDING ALL); \
             CREATE TABLE IF NOT EXISTS bench.batch_events (LIKE egec.events INCLUDING ALL);",
        )
        .await
        .context("cannot create the scratch tables")?;
    Ok(())
}

/// Vacuums the log and checkpoints, right before a limit is measured.
///
/// The command runs before a limit wrote tens of thousands of events: vacuum and checkpoint
/// now, so that neither autovacuum nor a checkpoint falls into the limit's window and lowers
/// the figure the commands are compared with. It is not called before the first command
/// run, since a real log is not analysed while it holds a single event. Session 13 found that
/// doing so made the guarded write's plan scan the whole stream index (fixed in the
/// statement since; `cached_plan::Start` in the commands crate).
pub async fn pg_settle(url: &str) -> anyhow::Result<()> {
    let client = pg_connect(url).await?;
    client
        .batch_execute("VACUUM (ANALYZE) egec.events")
        .await
        .context("cannot vacuum the log before the limits")?;
    client
        .batch_execute("CHECKPOINT")
        .await
        .context("cannot checkpoint before the limits")?;
    Ok(())
}

/// Single-row autocommit INSERTs from `clients` connections at once: rows per second, and
/// where the machine's CPU went in the window.
pub async fn pg_single_inserts(
    url: &str,
    clients: usize,
    shape: &Shape,
    counter: &Arc<AtomicI64>,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<(f64, CpuUse)> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(pg_connect(url).await?);
    }
    // Connections are opened before the clock starts, so connecting is not measured.
    let window = Window::after(warmup, measure);
    let mut tasks = Vec::with_capacity(clients);
    for client in conns {
        let shape = shape.clone();
        let counter = Arc::clone(counter);
        tasks.push(tokio::spawn(async move {
            let stmt = client.prepare(PG_SINGLE).await?;
            let mut done = 0_u64;
            while Instant::now() < window.end {
                let r = Row::next(&counter);
                client
                    .execute(
                        &stmt,
                        &[
                            &r.position,
                            &r.stream_id,
                            &r.event_id,
                            &r.command_id,
                            &shape.event_type,
                            &shape.schema_version,
                            &shape.payload,
                            &shape.metadata,
                            &r.recorded_at,
                            &shape.hash,
                            &shape.hash,
                        ],
                    )
                    .await?;
                if window.contains(Instant::now()) {
                    done += 1;
                }
            }
            anyhow::Ok(done)
        }));
    }
    tokio::time::sleep_until(window.start.into()).await;
    let cpu = Snapshot::take(&database_of(url), &[]);
    tokio::time::sleep_until(window.end.into()).await;
    let cpu = cpu.since();
    let mut rows = 0;
    for task in tasks {
        rows += task.await.context("an insert client panicked")??;
    }
    Ok((rows as f64 / window.seconds(), cpu))
}

/// Back-to-back 500-row transactions (one `INSERT … SELECT FROM unnest`) on one connection,
/// like the appender's single writer; rows per second.
pub async fn pg_batch_inserts(
    url: &str,
    shape: &Shape,
    counter: &Arc<AtomicI64>,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<f64> {
    let mut client = pg_connect(url).await?;
    let stmt = client.prepare(PG_BATCH).await?;
    let window = Window::after(warmup, measure);
    let mut rows = 0_u64;
    while Instant::now() < window.end {
        let batch: Vec<Row> = (0..BATCH_ROWS).map(|_| Row::next(counter)).collect();
        let positions: Vec<i64> = batch.iter().map(|r| r.position).collect();
        let streams: Vec<&str> = batch.iter().map(|r| r.stream_id.as_str()).collect();
        let events: Vec<Uuid> = batch.iter().map(|r| r.event_id).collect();
        let commands: Vec<Uuid> = batch.iter().map(|r| r.command_id).collect();
        let payloads: Vec<&Value> = batch.iter().map(|_| &shape.payload).collect();
        let recorded_at = Utc::now();
        let tx = client.transaction().await?;
        tx.execute(
            &stmt,
            &[
                &positions,
                &streams,
                &events,
                &commands,
                &shape.event_type,
                &shape.schema_version,
                &payloads,
                &shape.metadata,
                &recorded_at,
                &shape.hash,
            ],
        )
        .await?;
        tx.commit().await?;
        if window.contains(Instant::now()) {
            rows += BATCH_ROWS as u64;
        }
    }
    Ok(rows as f64 / window.seconds())
}

/// The events table of `migrations/sqlite/V1__log.sql`, under another name.
const SQLITE_DDL: &str = "CREATE TABLE IF NOT EXISTS events (
    global_position INTEGER PRIMARY KEY,
    stream_id       TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL CHECK (stream_version >= 1),
    event_id        TEXT    NOT NULL UNIQUE,
    command_id      TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    recorded_at     INTEGER NOT NULL,
    prev_hash       BLOB    NOT NULL,
    hash            BLOB    NOT NULL,
    UNIQUE (stream_id, stream_version)
);
CREATE INDEX IF NOT EXISTS events_command_id ON events (command_id);";

const SQLITE_INSERT: &str = "INSERT INTO events (global_position, stream_id, stream_version, \
     event_id, command_id, event_type, schema_version, payload, metadata, recorded_at, \
     prev_hash, hash) VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)";

/// Opens a scratch database with the same durability settings as the SQLite backend (WAL,
/// `synchronous = FULL`, `secure_delete`), so a commit costs what a log commit costs.
fn sqlite_open(path: &Path) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.execute_batch(SQLITE_DDL)?;
    Ok(conn)
}

fn sqlite_insert(
    stmt: &mut rusqlite::CachedStatement<'_>,
    shape: &Shape,
    payload: &str,
    metadata: &str,
    r: &Row,
) -> rusqlite::Result<usize> {
    stmt.execute(rusqlite::params![
        r.position,
        r.stream_id,
        r.event_id.hyphenated().to_string(),
        r.command_id.hyphenated().to_string(),
        shape.event_type,
        shape.schema_version,
        payload,
        metadata,
        r.recorded_at.timestamp_micros(),
        shape.hash,
    ])
}

/// SQLite's limits: one writer connection (SQLite has one writer at a time), single-row
/// autocommit INSERTs, then 500-row transactions. Answers (single rows/s, where the CPU went
/// while they ran, batch rows/s).
pub async fn sqlite_limits(
    path: &Path,
    shape: &Shape,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<(f64, CpuUse, f64)> {
    let path = path.to_path_buf();
    let shape = shape.clone();
    tokio::task::spawn_blocking(move || {
        let conn = sqlite_open(&path)?;
        // The JSON text is what the backend stores; serialise it per row as the backend does.
        let counter = AtomicI64::new(1);

        let window = Window::after(warmup, measure);
        let mut single = 0_u64;
        // Taken when the first row lands inside the window.
        let mut cpu = None;
        {
            let mut stmt = conn.prepare_cached(SQLITE_INSERT)?;
            while Instant::now() < window.end {
                let r = Row::next(&counter);
                let payload = shape.payload.to_string();
                let metadata = shape.metadata.to_string();
                sqlite_insert(&mut stmt, &shape, &payload, &metadata, &r)?;
                if window.contains(Instant::now()) {
                    single += 1;
                    cpu.get_or_insert_with(|| Snapshot::take("", &[]));
                }
            }
        }
        let single_per_s = single as f64 / window.seconds();
        let cpu = cpu.map(|c| c.since()).unwrap_or_default();

        let window = Window::after(warmup, measure);
        let mut batched = 0_u64;
        while Instant::now() < window.end {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            {
                let mut stmt = conn.prepare_cached(SQLITE_INSERT)?;
                for _ in 0..BATCH_ROWS {
                    let r = Row::next(&counter);
                    let payload = shape.payload.to_string();
                    let metadata = shape.metadata.to_string();
                    sqlite_insert(&mut stmt, &shape, &payload, &metadata, &r)?;
                }
            }
            conn.execute_batch("COMMIT")?;
            if window.contains(Instant::now()) {
                batched += BATCH_ROWS as u64;
            }
        }
        Ok((single_per_s, cpu, batched as f64 / window.seconds()))
    })
    .await
    .context("the SQLite measurement panicked")?
}
