//! The embedded backend: one SQLite file in the data directory.
//!
//! rusqlite is synchronous, so every database call runs on tokio's blocking pool. One writer
//! connection sits behind a mutex (SQLite has one writer at a time anyway); a few reader
//! connections serve reads concurrently, which WAL mode allows while a write commits.
//!
//! Another process may open the same file (the `egec user create` CLI runs beside a server),
//! so every write transaction starts with `BEGIN IMMEDIATE` (take the write lock before
//! reading, so the snapshot read inside is the one written on), re-reads the counter row
//! inside the transaction, and waits for the other process through `busy_timeout`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use super::plan::{command_ids, new_key_subjects, now_micros, plan_batch, stream_ids};
use super::{
    AppendOutcome, AppendRequest, Backend, ChainHead, Conflict, EventLog, KeyTable,
    RawRecordedEvent, ReadBound, RecordedEvent, StoreError, SubjectKeys, WrappedKey,
};

mod blobs;

mod embedded {
    refinery::embed_migrations!("../migrations/sqlite");
}

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "egec.db";

/// How many reader connections serve concurrent reads.
const READERS: usize = 4;

/// How long a connection waits for another connection's (or process's) lock before it
/// reports the database as busy.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

const EVENT_COLUMNS: &str = "global_position, stream_id, stream_version, event_id, command_id, \
     event_type, schema_version, payload, metadata, recorded_at, prev_hash, hash";

/// [`EVENT_COLUMNS`] with every event's metadata read as `{}`.
const EVENT_COLUMNS_WITHOUT_METADATA: &str = "global_position, stream_id, stream_version, \
     event_id, command_id, event_type, schema_version, payload, '{}', recorded_at, prev_hash, hash";

/// The SQLite event log and key table. Cloning shares the connections.
#[derive(Clone)]
pub struct SqliteLog {
    inner: Arc<Inner>,
}

/// The connections. They live behind an `Arc` because every call moves its work onto the
/// blocking pool, which needs an owned handle.
struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Wakes the checkpointer after a commit; dropping it stops the checkpointer.
    checkpoints: Checkpointer,
}

impl std::fmt::Debug for SqliteLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLog")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl SqliteLog {
    /// Opens (creating if needed) `<dir>/egec.db` and brings its schema up to date. This
    /// blocks on file I/O; from async code prefer [`SqliteLog::open_async`].
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Config(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(DB_FILE);

        let mut writer = open_connection(&path, false)?;
        migrate(&mut writer)?;
        // Commits never copy the write-ahead log back into the database file themselves;
        // the checkpointer does it on its own connection and thread (see `Checkpointer`).
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpoints = Checkpointer::start(open_connection(&path, false)?)?;

        let readers = (0..READERS)
            .map(|_| open_connection(&path, true).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                checkpoints,
            }),
        })
    }

    /// [`SqliteLog::open`] on the blocking pool, so the runtime's threads never wait on disk.
    pub async fn open_async(dir: &Path) -> Result<Self, StoreError> {
        let dir = dir.to_path_buf();
        blocking(move || Self::open(&dir)).await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Copies the whole write-ahead log back into the database file and truncates it to zero
    /// bytes, so pages that held erased keys do not linger in the WAL. Answers `true` when the
    /// checkpoint completed; `false` when a reader (possibly in another process) still needed
    /// old frames, in which case the caller may try again later.
    pub async fn checkpoint_wal(&self) -> Result<bool, StoreError> {
        self.write(|conn| {
            let busy: i64 =
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))?;
            Ok(busy == 0)
        })
        .await
    }

    /// Runs `f` on a reader connection, on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            // Take any idle reader; if all are busy, queue on one of them in turn.
            for reader in &inner.readers {
                if let Some(mut conn) = reader.try_lock() {
                    return f(&mut conn);
                }
            }
            let i = inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
            let mut conn = inner.readers[i].lock();
            f(&mut conn)
        })
        .await
    }

    /// Runs `f` on the writer connection, on the blocking pool.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let mut conn = inner.writer.lock();
            let result = f(&mut conn);
            drop(conn);
            inner.checkpoints.nudge();
            result
        })
        .await
    }
}

/// Keeps the write-ahead log short without making any commit wait for it.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses its threshold: that
/// commit, and every append queued behind it, waits while megabytes are copied into the
/// database file and synced. Here the writer never checkpoints; a thread of its own runs a
/// PASSIVE checkpoint (which neither takes nor waits for the write lock) once enough commits
/// have happened, or after a quiet moment, so the log is copied back while writing goes on.
/// SQLite restarts the log from its beginning at the next write after a complete checkpoint.
struct Checkpointer {
    wake: std::sync::mpsc::SyncSender<()>,
}

/// Commits between checkpoints under load (a commit is at least one page of the log).
const CHECKPOINT_EVERY_COMMITS: u32 = 64;
/// A checkpoint also runs this long after the last commit, so an idle log ends up short.
const CHECKPOINT_IDLE: Duration = Duration::from_millis(250);

impl Checkpointer {
    fn start(conn: Connection) -> Result<Self, StoreError> {
        let (wake, nudges) = std::sync::mpsc::sync_channel::<()>(1024);
        std::thread::Builder::new()
            .name("egec-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&conn, &nudges))
            .map_err(|e| StoreError::Config(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self { wake })
    }

    /// Tells the checkpointer a commit happened. Never blocks: when the checkpointer is
    /// behind, it will find the log long anyway.
    fn nudge(&self) {
        let _ = self.wake.try_send(());
    }
}

fn checkpoint_loop(conn: &Connection, nudges: &std::sync::mpsc::Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut pending = 0_u32;
    loop {
        match nudges.recv_timeout(CHECKPOINT_IDLE) {
            Ok(()) => {
                pending += 1;
                if pending < CHECKPOINT_EVERY_COMMITS {
                    continue;
                }
            }
            Err(RecvTimeoutError::Timeout) if pending > 0 => {}
            Err(RecvTimeoutError::Timeout) => continue,
            // The log was closed.
            Err(RecvTimeoutError::Disconnected) => return,
        }
        pending = 0;
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "write-ahead log checkpoint failed; will try again");
        }
    }
}

async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
}

fn open_connection(path: &Path, reader: bool) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Set first: switching to WAL itself needs a lock another process may hold.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Config(format!(
            "{} cannot use write-ahead logging (journal mode stays {mode})",
            path.display()
        )));
    }
    // FULL syncs the WAL on every commit: an answered append survives SIGKILL and power loss.
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Deleted content (destroyed keys above all) is overwritten, not left in free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if reader {
        // Readers never write; make a bug that tries fail loudly.
        conn.pragma_update(None, "query_only", "ON")?;
    }
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    match embedded::migrations::runner().run(conn) {
        Ok(_) => Ok(()),
        Err(first) => {
            // Two processes starting on a fresh file race to apply the same migration; the
            // loser's transaction rolls back. Once the winner committed, a second run finds
            // nothing left to apply.
            tracing::debug!(error = %first, "sqlite migration failed, retrying once");
            std::thread::sleep(Duration::from_millis(250));
            embedded::migrations::runner().run(conn)?;
            Ok(())
        }
    }
}

/// After a key is destroyed: a TRUNCATE checkpoint empties the WAL file of every page image
/// that held the key. A reader (possibly in another process) still using old frames makes it
/// answer busy; then a PASSIVE checkpoint copies back what it can, and the next checkpoint
/// finishes the job. Best effort: the key is already gone from the table either way.
fn checkpoint_after_erasure(conn: &Connection) {
    let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    });
    match busy {
        Ok(0) => {}
        Ok(_) => {
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "WAL checkpoint after a key destruction failed");
            }
        }
        Err(e) => tracing::warn!(error = %e, "WAL checkpoint after a key destruction failed"),
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn micros_to_time(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {micros} is out of range")))
}

/// A row as SQLite returns it, before the text columns are parsed.
struct RawEvent {
    global_position: i64,
    stream_id: String,
    stream_version: i64,
    event_id: String,
    command_id: String,
    event_type: String,
    schema_version: i32,
    payload: String,
    metadata: String,
    recorded_at: i64,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

impl RawEvent {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            global_position: row.get(0)?,
            stream_id: row.get(1)?,
            stream_version: row.get(2)?,
            event_id: row.get(3)?,
            command_id: row.get(4)?,
            event_type: row.get(5)?,
            schema_version: row.get(6)?,
            payload: row.get(7)?,
            metadata: row.get(8)?,
            recorded_at: row.get(9)?,
            prev_hash: row.get(10)?,
            hash: row.get(11)?,
        })
    }

    /// The row with its ids and time parsed and its JSON left as text.
    fn into_raw(self) -> Result<RawRecordedEvent, StoreError> {
        let at = self.global_position;
        Ok(RawRecordedEvent {
            global_position: self.global_position,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
            event_id: Uuid::parse_str(&self.event_id)
                .map_err(|e| corrupt(&format!("event_id at position {at}"), e))?,
            command_id: Uuid::parse_str(&self.command_id)
                .map_err(|e| corrupt(&format!("command_id at position {at}"), e))?,
            event_type: self.event_type,
            schema_version: self.schema_version,
            payload: self.payload,
            metadata: self.metadata,
            recorded_at: micros_to_time(self.recorded_at)?,
        })
    }

    fn parse(mut self) -> Result<RecordedEvent, StoreError> {
        let at = self.global_position;
        let links = (
            std::mem::take(&mut self.prev_hash),
            std::mem::take(&mut self.hash),
        );
        let raw = self.into_raw()?;
        let payload = serde_json::from_str(&raw.payload)
            .map_err(|e| corrupt(&format!("payload at position {at}"), e))?;
        let metadata = serde_json::from_str(&raw.metadata)
            .map_err(|e| corrupt(&format!("metadata at position {at}"), e))?;
        Ok(raw.with_values(payload, metadata, links.0, links.1))
    }
}

fn query_events(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let raw = stmt
        .query_map(params, RawEvent::from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    raw.into_iter().map(RawEvent::parse).collect()
}

fn read_head(conn: &Connection) -> Result<ChainHead, StoreError> {
    let (position, hash) = conn
        .query_row(
            "SELECT position, hash FROM log_head WHERE id = 1",
            [],
            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)),
        )
        .optional()?
        .ok_or_else(|| StoreError::Corrupt("log_head row is missing".into()))?;
    Ok(ChainHead { position, hash })
}

fn append_in_tx(
    conn: &mut Connection,
    batch: &[AppendRequest],
) -> Result<Vec<Result<AppendOutcome, Conflict>>, StoreError> {
    // IMMEDIATE takes the write lock now, so what we read below cannot change before we
    // write, even if another process shares the file.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let head = read_head(&tx)?;

    let mut prior = HashMap::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT min(global_position), max(global_position), max(stream_version) \
             FROM events WHERE command_id = ?1",
        )?;
        for id in command_ids(batch) {
            let found = stmt.query_row([id.hyphenated().to_string()], |row| {
                Ok((
                    row.get::<_, Option<i64>>(0)?,
                    row.get::<_, Option<i64>>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                ))
            })?;
            if let (Some(first_position), Some(last_position), Some(stream_version)) = found {
                prior.insert(
                    id,
                    AppendOutcome {
                        first_position,
                        last_position,
                        stream_version,
                        duplicate: true,
                    },
                );
            }
        }
    }

    let mut versions = HashMap::new();
    {
        let mut stmt =
            tx.prepare_cached("SELECT max(stream_version) FROM events WHERE stream_id = ?1")?;
        for stream in stream_ids(batch) {
            let v: Option<i64> = stmt.query_row([&stream], |row| row.get(0))?;
            if let Some(v) = v {
                versions.insert(stream, v);
            }
        }
    }

    // Subjects whose first key a request wants to create but which already have one or were
    // erased. The write lock taken by BEGIN IMMEDIATE also serialises this check with
    // `create` and `destroy`, so no erasure can slip in between the check and the insert.
    let mut taken = HashSet::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM erased_subjects WHERE subject = ?1) \
             OR EXISTS (SELECT 1 FROM subject_keys WHERE subject = ?1)",
        )?;
        for subject in new_key_subjects(batch) {
            let found: bool = stmt.query_row([&subject], |row| row.get(0))?;
            if found {
                taken.insert(subject);
            }
        }
    }

    let recorded_at = now_micros();
    let plan = plan_batch(batch, head, &prior, versions, &taken, recorded_at);
    if !plan.keys.is_empty() {
        let mut insert = tx.prepare_cached(
            "INSERT INTO subject_keys (subject, key_version, kek_id, wrapped, fingerprint, \
             created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (subject, key) in &plan.keys {
            insert.execute(params![
                subject,
                key.key_version,
                key.kek_id,
                key.wrapped,
                key.fingerprint,
                recorded_at.timestamp_micros(),
            ])?;
        }
    }
    if !plan.rows.is_empty() {
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (global_position, stream_id, stream_version, event_id, \
                 command_id, event_type, schema_version, payload, metadata, recorded_at, \
                 prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for row in &plan.rows {
                insert.execute(params![
                    row.global_position,
                    row.stream_id,
                    row.stream_version,
                    row.event.event_id.hyphenated().to_string(),
                    row.command_id.hyphenated().to_string(),
                    row.event.event_type,
                    row.event.schema_version,
                    row.payload,
                    row.metadata,
                    row.recorded_at_micros,
                    row.prev_hash,
                    row.hash,
                ])?;
            }
        }
        tx.execute(
            "UPDATE log_head SET position = ?1, hash = ?2 WHERE id = 1",
            params![plan.new_head.position, plan.new_head.hash],
        )?;
    }
    tx.commit()?;
    Ok(plan.answers)
}

fn load_keys(conn: &Connection, subject: &str) -> Result<Vec<WrappedKey>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT key_version, kek_id, wrapped, fingerprint FROM subject_keys \
         WHERE subject = ?1 ORDER BY key_version",
    )?;
    let keys = stmt
        .query_map([subject], |row| {
            Ok(WrappedKey {
                key_version: row.get(0)?,
                kek_id: row.get(1)?,
                wrapped: row.get(2)?,
                fingerprint: row.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(keys)
}

fn is_erased(conn: &Connection, subject: &str) -> Result<bool, StoreError> {
    let found: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM erased_subjects WHERE subject = ?1")?
        .query_row([subject], |row| row.get(0))
        .optional()?;
    Ok(found.is_some())
}

fn subject_keys(conn: &Connection, subject: &str) -> Result<SubjectKeys, StoreError> {
    if is_erased(conn, subject)? {
        return Ok(SubjectKeys::Erased);
    }
    let keys = load_keys(conn, subject)?;
    Ok(if keys.is_empty() {
        SubjectKeys::None
    } else {
        SubjectKeys::Active(keys)
    })
}

#[async_trait]
impl EventLog for SqliteLog {
    async fn append_batch(
        &self,
        batch: Vec<AppendRequest>,
    ) -> Result<Vec<Result<AppendOutcome, Conflict>>, StoreError> {
        self.write(move |conn| append_in_tx(conn, &batch)).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: i64,
        bound: ReadBound,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let stream_id = stream_id.to_owned();
        self.read(move |conn| {
            let base = format!(
                "SELECT {EVENT_COLUMNS} FROM events \
                     WHERE stream_id = ?1 AND stream_version >= ?2"
            );
            let order = " ORDER BY stream_version";
            match bound {
                ReadBound::None => query_events(
                    conn,
                    &format!("{base}{order}"),
                    params![stream_id, from_version],
                ),
                ReadBound::Version(v) => query_events(
                    conn,
                    &format!("{base} AND stream_version <= ?3{order}"),
                    params![stream_id, from_version, v],
                ),
                ReadBound::Position(p) => query_events(
                    conn,
                    &format!("{base} AND global_position <= ?3{order}"),
                    params![stream_id, from_version, p],
                ),
                ReadBound::Time(t) => query_events(
                    conn,
                    &format!("{base} AND recorded_at <= ?3{order}"),
                    params![stream_id, from_version, t.timestamp_micros()],
                ),
            }
        })
        .await
    }

    async fn read_all(&self, after: i64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            query_events(
                conn,
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE global_position > ?1 \
                         ORDER BY global_position LIMIT ?2"
                ),
                params![after, limit],
            )
        })
        .await
    }

    async fn read_all_raw(
        &self,
        after: i64,
        limit: usize,
        metadata: bool,
    ) -> Result<Vec<RawRecordedEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let columns = if metadata {
            EVENT_COLUMNS
        } else {
            EVENT_COLUMNS_WITHOUT_METADATA
        };
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {columns} FROM events WHERE global_position > ?1 \
                 ORDER BY global_position LIMIT ?2"
            ))?;
            let rows = stmt
                .query_map(params![after, limit], RawEvent::from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(RawEvent::into_raw).collect()
        })
        .await
    }

    async fn head(&self) -> Result<ChainHead, StoreError> {
        self.read(|conn| read_head(conn)).await
    }

    async fn stream_version(&self, stream_id: &str) -> Result<i64, StoreError> {
        let stream_id = stream_id.to_owned();
        self.read(move |conn| {
            let v: Option<i64> = conn
                .prepare_cached("SELECT max(stream_version) FROM events WHERE stream_id = ?1")?
                .query_row([stream_id], |row| row.get(0))?;
            Ok(v.unwrap_or(0))
        })
        .await
    }

    fn backend(&self) -> Backend {
        Backend::Sqlite
    }
}

#[async_trait]
impl KeyTable for SqliteLog {
    async fn load(&self, subject: &str) -> Result<SubjectKeys, StoreError> {
        let subject = subject.to_owned();
        self.read(move |conn| {
            // One read transaction, so the tombstone and the keys come from one snapshot.
            let tx = conn.transaction()?;
            let keys = subject_keys(&tx, &subject)?;
            tx.commit()?;
            Ok(keys)
        })
        .await
    }

    async fn load_many(
        &self,
        subjects: &[String],
    ) -> Result<HashMap<String, SubjectKeys>, StoreError> {
        if subjects.is_empty() {
            return Ok(HashMap::new());
        }
        let subjects = subjects.to_vec();
        self.read(move |conn| {
            // One read transaction, so every subject comes from one snapshot; the statements
            // are prepared once and run per subject, which costs no round trip in SQLite.
            let tx = conn.transaction()?;
            let mut out = HashMap::with_capacity(subjects.len());
            for subject in subjects {
                let keys = subject_keys(&tx, &subject)?;
                out.insert(subject, keys);
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn create(&self, subject: &str, key: WrappedKey) -> Result<SubjectKeys, StoreError> {
        let subject = subject.to_owned();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if is_erased(&tx, &subject)? {
                return Ok(SubjectKeys::Erased);
            }
            tx.execute(
                "INSERT INTO subject_keys (subject, key_version, kek_id, wrapped, \
                     fingerprint, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (subject, key_version) DO NOTHING",
                params![
                    subject,
                    key.key_version,
                    key.kek_id,
                    key.wrapped,
                    key.fingerprint,
                    now_micros().timestamp_micros(),
                ],
            )?;
            let keys = subject_keys(&tx, &subject)?;
            tx.commit()?;
            Ok(keys)
        })
        .await
    }

    async fn destroy(&self, subject: &str) -> Result<Vec<String>, StoreError> {
        let subject = subject.to_owned();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let fingerprints = {
                let mut stmt = tx.prepare_cached(
                    "DELETE FROM subject_keys WHERE subject = ?1 RETURNING fingerprint",
                )?;
                stmt.query_map([&subject], |row| row.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?
            };
            tx.execute(
                "INSERT INTO erased_subjects (subject, erased_at) VALUES (?1, ?2) \
                     ON CONFLICT (subject) DO NOTHING",
                params![subject, now_micros().timestamp_micros()],
            )?;
            tx.commit()?;
            // The deleted rows are zeroed in the database file (`secure_delete`), but the
            // WAL still holds page images with the wrapped keys: copy it back and truncate it.
            checkpoint_after_erasure(conn);
            Ok(fingerprints)
        })
        .await
    }

    async fn all_keys(&self) -> Result<Vec<(String, WrappedKey)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT subject, key_version, kek_id, wrapped, fingerprint FROM subject_keys \
                     ORDER BY subject, key_version",
            )?;
            let keys = stmt
                .query_map([], |row| {
                    Ok((
                        row.get(0)?,
                        WrappedKey {
                            key_version: row.get(1)?,
                            kek_id: row.get(2)?,
                            wrapped: row.get(3)?,
                            fingerprint: row.get(4)?,
                        },
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(keys)
        })
        .await
    }

    async fn live_subjects(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let prefix = prefix.to_owned();
        self.read(move |conn| {
            // `substr` rather than LIKE: a prefix holding `%` or `_` must match literally.
            let mut stmt = conn.prepare_cached(
                "SELECT DISTINCT subject FROM subject_keys \
                     WHERE substr(subject, 1, length(?1)) = ?1 ORDER BY subject",
            )?;
            let subjects = stmt
                .query_map([&prefix], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(subjects)
        })
        .await
    }

    async fn rewrap(&self, subject: &str, key: WrappedKey) -> Result<(), StoreError> {
        let subject = subject.to_owned();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored: Option<String> = tx
                .query_row(
                    "SELECT fingerprint FROM subject_keys \
                         WHERE subject = ?1 AND key_version = ?2",
                    params![subject, key.key_version],
                    |row| row.get(0),
                )
                .optional()?;
            match stored {
                // Erased since the caller listed it: nothing left to rewrap.
                None => {}
                Some(fp) if fp != key.fingerprint => {
                    return Err(StoreError::Corrupt(format!(
                        "rewrap of key version {} would change the key material",
                        key.key_version
                    )));
                }
                Some(_) => {
                    tx.execute(
                        "UPDATE subject_keys SET kek_id = ?3, wrapped = ?4 \
                             WHERE subject = ?1 AND key_version = ?2",
                        params![subject, key.key_version, key.kek_id, key.wrapped],
                    )?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;

    fn pragma(conn: &Connection, name: &str) -> String {
        conn.query_row(&format!("PRAGMA {name}"), [], |row| {
            let v: rusqlite::types::Value = row.get(0)?;
            Ok(match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
        })
        .expect("pragma")
    }

    #[test]
    fn every_connection_is_durable_and_overwrites_deleted_content() {
        let dir = crate::testing::fresh_sqlite_dir();
        let log = SqliteLog::open(dir.path()).expect("open");
        let writer = log.inner.writer.lock();
        assert_eq!(pragma(&writer, "journal_mode"), "wal");
        // 2 = FULL, 1 = ON.
        assert_eq!(pragma(&writer, "synchronous"), "2");
        assert_eq!(pragma(&writer, "secure_delete"), "1");
        assert_eq!(pragma(&writer, "foreign_keys"), "1");
        assert_eq!(pragma(&writer, "busy_timeout"), "5000");
        for reader in &log.inner.readers {
            let reader = reader.lock();
            assert_eq!(pragma(&reader, "synchronous"), "2");
            assert_eq!(pragma(&reader, "busy_timeout"), "5000");
            assert_eq!(pragma(&reader, "query_only"), "1");
        }
    }

    #[test]
    fn opening_twice_is_idempotent() {
        let dir = crate::testing::fresh_sqlite_dir();
        drop(SqliteLog::open(dir.path()).expect("first open"));
        let again = SqliteLog::open(dir.path()).expect("second open");
        assert_eq!(again.path(), dir.path().join(DB_FILE));
    }
}

#[cfg(all(test, feature = "testing"))]
mod checkpoint_tests {
    use super::*;

    #[tokio::test]
    async fn a_truncating_checkpoint_empties_the_write_ahead_log() {
        let dir = crate::testing::fresh_sqlite_dir();
        let log = SqliteLog::open_async(dir.path()).await.expect("open");
        log.create(
            "subject",
            WrappedKey {
                key_version: 1,
                kek_id: "k".into(),
                wrapped: vec![7; 60],
                fingerprint: "fp".into(),
            },
        )
        .await
        .expect("create");
        let wal = dir.path().join(format!("{DB_FILE}-wal"));
        assert!(std::fs::metadata(&wal).expect("wal exists").len() > 0);
        assert!(log.checkpoint_wal().await.expect("checkpoint"));
        assert_eq!(std::fs::metadata(&wal).expect("wal exists").len(), 0);
    }

    #[tokio::test]
    async fn a_destroyed_key_is_left_in_no_file_of_the_store() {
        let dir = crate::testing::fresh_sqlite_dir();
        let log = SqliteLog::open_async(dir.path()).await.expect("open");
        let wrapped: Vec<u8> = (0..60u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
        log.create(
            "subject",
            WrappedKey {
                key_version: 1,
                kek_id: "k".into(),
                wrapped: wrapped.clone(),
                fingerprint: "fp".into(),
            },
        )
        .await
        .expect("create");
        let found = || {
            std::fs::read_dir(dir.path())
                .expect("dir")
                .map(|e| std::fs::read(e.expect("entry").path()).expect("file"))
                .any(|bytes| bytes.windows(wrapped.len()).any(|w| w == wrapped))
        };
        assert!(found(), "the scan finds a key that is there");
        assert_eq!(log.destroy("subject").await.expect("destroy"), ["fp"]);
        let wal = dir.path().join(format!("{DB_FILE}-wal"));
        assert_eq!(std::fs::metadata(&wal).expect("wal exists").len(), 0);
        assert!(!found(), "the destroyed key is still in the store's files");
    }

    #[tokio::test]
    async fn commits_leave_checkpointing_to_the_checkpointer_which_copies_the_log_back() {
        let dir = crate::testing::fresh_sqlite_dir();
        let log = SqliteLog::open_async(dir.path()).await.expect("open");
        let autocheckpoint: i64 = log
            .write(|conn| Ok(conn.query_row("PRAGMA wal_autocheckpoint", [], |row| row.get(0))?))
            .await
            .expect("pragma");
        assert_eq!(
            autocheckpoint, 0,
            "a commit must never run a checkpoint itself"
        );

        let db = dir.path().join(DB_FILE);
        let before = std::fs::metadata(&db).expect("db file").len();
        for i in 0..200 {
            log.create(
                &format!("subject-{i}"),
                WrappedKey {
                    key_version: 1,
                    kek_id: "k".into(),
                    wrapped: vec![7; 600],
                    fingerprint: format!("fp-{i}"),
                },
            )
            .await
            .expect("create");
        }
        // Only a checkpoint moves committed pages from the log into the database file.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&db).expect("db file").len() <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "the checkpointer never copied the log back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
