//! The embedded backend: the read models in their own SQLite file, `<data_dir>/read.db`,
//! apart from the log's file so that a rebuild or a burst of reads never contends with
//! appends for the log's write lock.
//!
//! rusqlite is synchronous, so every call runs on tokio's blocking pool. One writer
//! connection sits behind a mutex (SQLite has one writer at a time anyway); a few read-only
//! connections serve queries concurrently, which WAL mode allows while a write commits.
//! `secure_delete` is on so that a personal value overwritten by an erasure, or a dropped
//! table, does not linger in free pages of the file.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use egec_commands::store::Backend;
use egec_domain::customer::CustomerStatus;
use egec_domain::permission::Visibility;
use parking_lot::Mutex;
use rusqlite::types::{Type, Value as SqlValue};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior, params,
    params_from_iter,
};
use uuid::Uuid;

use super::{Applied, Checkpoint, Leadership, ReadStore, Shadow};
use crate::error::StorageError;
use crate::fold::{
    Changes, Rows, Touched, Work, fold_customers, fold_sessions, fold_users, search_needle,
    search_text,
};
use crate::kind::ProjectionKind;
use crate::rows::{
    ApiKeyRow, AuditQuery, AuditRow, CustomerQuery, CustomerRow, FollowupQuery, FollowupRow,
    SessionRow, SessionUser, UserRow,
};

mod analytics;
mod api_keys;
mod audit;
mod followups;
mod lookup;
mod search;
use api_keys::API_KEYS;
use audit::AUDIT;
use followups::FOLLOWUPS;

/// Name of the read-model database file inside the data directory.
pub const READ_DB_FILE: &str = "read.db";

/// How many read-only connections serve queries concurrently.
const READERS: usize = 3;

/// How long a connection waits for another connection's (or process's) lock before it
/// reports the database as busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One table of a projection: its columns and secondary indexes. Tables are created from
/// these definitions under their live name at start-up and under a shadow name by a rebuild,
/// so both always have the same shape.
struct TableDef {
    live: &'static str,
    columns: &'static str,
    without_rowid: bool,
    /// `(name suffix, indexed columns)`.
    indexes: &'static [(&'static str, &'static str)],
}

const CUSTOMERS: TableDef = TableDef {
    live: "customers",
    columns: "id TEXT PRIMARY KEY NOT NULL, \
              name TEXT NOT NULL, \
              email TEXT, \
              phone TEXT, \
              passport_number TEXT, \
              country TEXT, \
              source TEXT, \
              status TEXT NOT NULL, \
              notes TEXT, \
              assigned_agent_ids TEXT NOT NULL, \
              created_at INTEGER NOT NULL, \
              updated_at INTEGER NOT NULL, \
              version INTEGER NOT NULL, \
              deleted INTEGER NOT NULL, \
              erased INTEGER NOT NULL, \
              last_position INTEGER NOT NULL, \
              search_text TEXT NOT NULL",
    without_rowid: false,
    indexes: &[
        ("created", "created_at DESC, id"),
        ("status", "status, created_at DESC, id"),
        // Lookups of the import, which matches rows to customers by these fields.
        ("email", "email"),
        ("phone", "phone"),
        ("passport", "passport_number"),
    ],
};

/// Assignments, one row per (agent, customer): the agent filter of the list is an index
/// lookup here rather than a scan of every customer's JSON array.
const CUSTOMER_AGENTS: TableDef = TableDef {
    live: "customer_agents",
    columns: "agent_id TEXT NOT NULL, customer_id TEXT NOT NULL, \
              PRIMARY KEY (agent_id, customer_id)",
    without_rowid: true,
    indexes: &[],
};

const USERS: TableDef = TableDef {
    live: "users",
    columns: "id TEXT PRIMARY KEY NOT NULL, \
              email TEXT NOT NULL, \
              name TEXT NOT NULL, \
              role TEXT NOT NULL, \
              active INTEGER NOT NULL, \
              created_at INTEGER NOT NULL, \
              version INTEGER NOT NULL, \
              last_position INTEGER NOT NULL, \
              session_version INTEGER NOT NULL DEFAULT 1, \
              mfa_enabled INTEGER NOT NULL DEFAULT 0, \
              must_change_password INTEGER NOT NULL DEFAULT 0, \
              password_changed_at INTEGER NOT NULL DEFAULT 0",
    without_rowid: false,
    indexes: &[("email", "email"), ("created", "created_at, id")],
};

/// Sessions ended by a logout, by session id.
const SESSIONS: TableDef = TableDef {
    live: "sessions",
    columns: "id TEXT PRIMARY KEY NOT NULL, \
              user_id TEXT NOT NULL, \
              ended_at INTEGER NOT NULL, \
              last_position INTEGER NOT NULL",
    without_rowid: true,
    indexes: &[],
};

fn tables(kind: ProjectionKind) -> &'static [TableDef] {
    match kind {
        ProjectionKind::Customers => &[CUSTOMERS, CUSTOMER_AGENTS],
        ProjectionKind::Users => &[USERS],
        ProjectionKind::Sessions => &[SESSIONS],
        ProjectionKind::ApiKeys => &[API_KEYS],
        ProjectionKind::Audit => &[AUDIT],
        ProjectionKind::Followups => &[FOLLOWUPS],
        ProjectionKind::Analytics => &analytics::TABLES,
    }
}

const CUSTOMER_COLUMNS: &str = "id, name, email, phone, passport_number, country, source, \
     status, notes, assigned_agent_ids, created_at, updated_at, version, deleted, erased, \
     last_position";

const USER_COLUMNS: &str = "id, email, name, role, active, created_at, version, last_position, \
     session_version, mfa_enabled, must_change_password, password_changed_at";

const SESSION_COLUMNS: &str = "id, user_id, ended_at, last_position";

/// The SQLite read models. Cloning shares the connections.
#[derive(Clone)]
pub(crate) struct SqliteReadStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

impl SqliteReadStore {
    /// Opens (creating if needed) `<dir>/read.db` and creates missing tables. Blocks on file
    /// I/O; call it on the blocking pool.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StorageError::Open(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(READ_DB_FILE);
        let mut writer = open_connection(&path, false)?;
        ensure_schema(&mut writer)?;
        let readers = (0..READERS)
            .map(|_| open_connection(&path, true).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
            }),
        })
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || f(&mut inner.writer.lock())).await
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let i = inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
            f(&mut inner.readers[i].lock())
        })
        .await
    }
}

async fn blocking<T, F>(f: F) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StorageError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Join(e.to_string()))?
}

fn open_connection(path: &Path, read_only: bool) -> Result<Connection, StorageError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if !read_only {
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StorageError::Open(format!(
                "read.db refused WAL mode (journal mode is {mode})"
            )));
        }
    }
    // FULL: a committed checkpoint must survive a power cut, or rows would be applied twice
    // or not at all. A larger page cache keeps a rebuild's index pages in memory. A rebuild
    // writes hundreds of megabytes through the WAL; the size limit makes SQLite shrink the
    // file back after checkpoints instead of keeping it at its largest.
    conn.execute_batch(
        "PRAGMA synchronous=FULL; PRAGMA secure_delete=ON; PRAGMA cache_size=-32768; \
         PRAGMA temp_store=MEMORY; PRAGMA journal_size_limit=67108864;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn table_exists(tx: &Transaction<'_>, name: &str) -> Result<bool, StorageError> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Tables whose names match a GLOB pattern (GLOB, unlike LIKE, treats `_` literally).
fn tables_matching(tx: &Transaction<'_>, pattern: &str) -> Result<Vec<String>, StorageError> {
    let mut stmt =
        // The tables FTS5 keeps behind a search index (`…_fts_data` and the like) go with
        // their index, never on their own.
        tx.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB ?1 \
             AND name NOT GLOB '*_fts_*'",
        )?;
    let names = stmt
        .query_map([pattern], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names)
}

fn create_table(
    tx: &Transaction<'_>,
    def: &TableDef,
    name: &str,
    with_indexes: bool,
) -> Result<(), StorageError> {
    let suffix = if def.without_rowid {
        " WITHOUT ROWID"
    } else {
        ""
    };
    tx.execute_batch(&format!("CREATE TABLE {name} ({}){suffix}", def.columns))?;
    if with_indexes {
        create_indexes(tx, def, name)?;
    }
    Ok(())
}

/// Index names carry the name of the table they were created on. SQLite cannot rename an
/// index, so after a swap the live table keeps its shadow-era index names; the token in every
/// shadow name keeps them unique.
///
/// A customers table's search index is one of its indexes: built here from the rows already
/// in the table, and kept up to date by [`write_customers`] from then on.
fn create_indexes(tx: &Transaction<'_>, def: &TableDef, name: &str) -> Result<(), StorageError> {
    for (suffix, cols) in def.indexes {
        tx.execute_batch(&format!("CREATE INDEX {name}_{suffix} ON {name} ({cols})"))?;
    }
    if def.live == CUSTOMERS.live {
        search::build(tx, name)?;
    }
    Ok(())
}

fn drop_tables(tx: &Transaction<'_>, names: &[String]) -> Result<(), StorageError> {
    for name in names {
        // A customers table's search index goes with it (a no-op for the other tables).
        tx.execute_batch(&format!(
            "DROP TABLE IF EXISTS {fts}; DROP TABLE IF EXISTS {name}",
            fts = search::fts(name)
        ))?;
    }
    Ok(())
}

/// Creates what is missing. A projection with any table missing is recreated empty at
/// checkpoint 0, since rows without their sibling table (or a checkpoint without rows) would
/// be a read model that no longer matches the log. Retired tables an interrupted swap left
/// behind hold stale personal data and are dropped.
fn ensure_schema(conn: &mut Connection) -> Result<(), StorageError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS projection_checkpoints (\
             projection TEXT PRIMARY KEY NOT NULL, \
             position INTEGER NOT NULL, \
             version INTEGER NOT NULL)",
    )?;
    add_session_version_column(&tx)?;
    add_credential_columns(&tx)?;
    // The workload view reads analytics tables that may be recreated below; it is made
    // again once they all exist.
    tx.execute_batch(analytics::DROP_VIEW)?;
    for kind in ProjectionKind::ALL {
        let defs = tables(kind);
        let mut complete = true;
        for def in defs {
            complete &= table_exists(&tx, def.live)?;
            let retired = tables_matching(&tx, &format!("{}_retired_*", def.live))?;
            drop_tables(&tx, &retired)?;
        }
        if complete {
            tx.execute(
                "INSERT OR IGNORE INTO projection_checkpoints (projection, position, version) \
                 VALUES (?1, 0, ?2)",
                params![kind.name(), kind.version()],
            )?;
        } else {
            for def in defs {
                drop_tables(&tx, &[def.live.to_owned()])?;
                create_table(&tx, def, def.live, true)?;
            }
            tx.execute(
                "INSERT INTO projection_checkpoints (projection, position, version) \
                 VALUES (?1, 0, ?2) \
                 ON CONFLICT (projection) DO UPDATE SET position = 0, version = excluded.version",
                params![kind.name(), kind.version()],
            )?;
        }
    }
    search::ensure_live(&tx, CUSTOMERS.live)?;
    tx.execute_batch(analytics::CREATE_VIEW)?;
    tx.commit()?;
    Ok(())
}

/// Users tables created before sessions existed lack `session_version`. No event before it
/// could move a session version, so adding the column with its default (the first version)
/// gives exactly the rows a rebuild would.
fn add_session_version_column(tx: &Transaction<'_>) -> Result<(), StorageError> {
    if !table_exists(tx, USERS.live)? {
        return Ok(());
    }
    let has: bool = tx.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('users') WHERE name = 'session_version'",
        [],
        |r| r.get(0),
    )?;
    if !has {
        tx.execute_batch(
            "ALTER TABLE users ADD COLUMN session_version INTEGER NOT NULL DEFAULT 1",
        )?;
    }
    Ok(())
}

/// Users tables of projection version 1 lack the credential columns. They are added with
/// defaults so that reads work; the version bump rebuilds the rows with the right values.
fn add_credential_columns(tx: &Transaction<'_>) -> Result<(), StorageError> {
    if !table_exists(tx, USERS.live)? {
        return Ok(());
    }
    for (column, ddl) in [
        ("mfa_enabled", "mfa_enabled INTEGER NOT NULL DEFAULT 0"),
        (
            "must_change_password",
            "must_change_password INTEGER NOT NULL DEFAULT 0",
        ),
        (
            "password_changed_at",
            "password_changed_at INTEGER NOT NULL DEFAULT 0",
        ),
    ] {
        let has: bool = tx.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('users') WHERE name = ?1",
            [column],
            |r| r.get(0),
        )?;
        if !has {
            tx.execute_batch(&format!("ALTER TABLE users ADD COLUMN {ddl}"))?;
        }
    }
    Ok(())
}

fn read_checkpoint(
    conn: &Connection,
    kind: ProjectionKind,
) -> Result<Option<Checkpoint>, StorageError> {
    Ok(conn
        .query_row(
            "SELECT position, version FROM projection_checkpoints WHERE projection = ?1",
            [kind.name()],
            |r| {
                Ok(Checkpoint {
                    position: r.get(0)?,
                    version: r.get(1)?,
                })
            },
        )
        .optional()?)
}

// ---- row mapping ----------------------------------------------------------------------

#[derive(Debug)]
struct BadColumn(&'static str);

impl std::fmt::Display for BadColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for BadColumn {}

fn bad(i: usize, what: &'static str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(BadColumn(what)))
}

fn uuid_at(row: &Row<'_>, i: usize) -> rusqlite::Result<Uuid> {
    let s: String = row.get(i)?;
    Uuid::parse_str(&s).map_err(|_| bad(i, "not a uuid"))
}

fn time_at(row: &Row<'_>, i: usize) -> rusqlite::Result<DateTime<Utc>> {
    let v: i64 = row.get(i)?;
    DateTime::from_timestamp_micros(v).ok_or_else(|| bad(i, "time out of range"))
}

fn customer_from_row(row: &Row<'_>) -> rusqlite::Result<CustomerRow> {
    let status: String = row.get(7)?;
    let agents: String = row.get(9)?;
    Ok(CustomerRow {
        id: uuid_at(row, 0)?,
        name: row.get(1)?,
        email: row.get(2)?,
        phone: row.get(3)?,
        passport_number: row.get(4)?,
        country: row.get(5)?,
        source: row.get(6)?,
        status: status
            .parse::<CustomerStatus>()
            .map_err(|_| bad(7, "unknown status"))?,
        notes: row.get(8)?,
        assigned_agent_ids: serde_json::from_str(&agents)
            .map_err(|_| bad(9, "not a JSON array of uuids"))?,
        created_at: time_at(row, 10)?,
        updated_at: time_at(row, 11)?,
        version: row.get(12)?,
        deleted: row.get(13)?,
        erased: row.get(14)?,
        last_position: row.get(15)?,
    })
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserRow> {
    let role: String = row.get(3)?;
    Ok(UserRow {
        id: uuid_at(row, 0)?,
        email: row.get(1)?,
        name: row.get(2)?,
        role: role.parse().map_err(|_| bad(3, "unknown role"))?,
        active: row.get(4)?,
        created_at: time_at(row, 5)?,
        version: row.get(6)?,
        last_position: row.get(7)?,
        session_version: row.get(8)?,
        mfa_enabled: row.get(9)?,
        must_change_password: row.get(10)?,
        password_changed_at: time_at(row, 11)?,
    })
}

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: uuid_at(row, 0)?,
        user_id: uuid_at(row, 1)?,
        ended_at: time_at(row, 2)?,
        last_position: row.get(3)?,
    })
}

fn uuid_text(id: &Uuid) -> String {
    id.hyphenated().to_string()
}

// ---- batch application ----------------------------------------------------------------

fn table_for(live: &str, shadow: Option<&Shadow>) -> String {
    match shadow {
        Some(s) => s.table(live),
        None => live.to_owned(),
    }
}

/// The rows of `ids` from one of the batch path's tables (live or shadow), mapped by `map`.
/// One statement for any number of ids: the ids travel as one JSON array parameter.
fn load_by_id<T>(
    tx: &Connection,
    columns: &str,
    table: &str,
    ids: &[Uuid],
    map: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StorageError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = serde_json::to_string(ids).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {columns} FROM {table} WHERE id IN (SELECT value FROM json_each(?1))"
    ))?;
    let rows = stmt.query_map([ids], map)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn load_customers(
    tx: &Connection,
    table: &str,
    ids: &[Uuid],
) -> Result<Vec<CustomerRow>, StorageError> {
    load_by_id(tx, CUSTOMER_COLUMNS, table, ids, customer_from_row)
}

fn load_users(tx: &Connection, table: &str, ids: &[Uuid]) -> Result<Vec<UserRow>, StorageError> {
    load_by_id(tx, USER_COLUMNS, table, ids, user_from_row)
}

fn load_sessions(
    tx: &Connection,
    table: &str,
    ids: &[Uuid],
) -> Result<Vec<SessionRow>, StorageError> {
    load_by_id(tx, SESSION_COLUMNS, table, ids, session_from_row)
}

/// Whether [`write_customers`] keeps the search index of the table in step.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SearchIndex {
    /// The index exists: each row written replaces its entry.
    Sync,
    /// A rebuild's shadow table before its indexes are built: the index does not exist yet
    /// and is built from the finished rows (see [`create_indexes`]).
    NotYet,
}

/// Writes the changed customer rows and their assignment rows. Answers whether any row was
/// erased by this batch.
fn write_customers(
    tx: &Connection,
    table: &str,
    agents_table: &str,
    touched: &[Touched<CustomerRow>],
    search: SearchIndex,
) -> Result<bool, StorageError> {
    let mut upsert = tx.prepare_cached(&format!(
        "INSERT INTO {table} ({CUSTOMER_COLUMNS}, search_text) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
         ON CONFLICT (id) DO UPDATE SET \
           name = excluded.name, email = excluded.email, phone = excluded.phone, \
           passport_number = excluded.passport_number, country = excluded.country, \
           source = excluded.source, status = excluded.status, notes = excluded.notes, \
           assigned_agent_ids = excluded.assigned_agent_ids, \
           created_at = excluded.created_at, updated_at = excluded.updated_at, \
           version = excluded.version, deleted = excluded.deleted, erased = excluded.erased, \
           last_position = excluded.last_position, search_text = excluded.search_text \
         RETURNING rowid"
    ))?;
    let mut assign = tx.prepare_cached(&format!(
        "INSERT OR IGNORE INTO {agents_table} (agent_id, customer_id) VALUES (?1, ?2)"
    ))?;
    let mut unassign = tx.prepare_cached(&format!(
        "DELETE FROM {agents_table} WHERE agent_id = ?1 AND customer_id = ?2"
    ))?;
    let mut erased = false;
    for t in touched {
        let r = &t.row;
        let id = uuid_text(&r.id);
        let agents = serde_json::to_string(&r.assigned_agent_ids)
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let text = search_text(r);
        let rowid: i64 = upsert.query_row(
            params![
                id,
                r.name,
                r.email,
                r.phone,
                r.passport_number,
                r.country,
                r.source,
                r.status.as_str(),
                r.notes,
                agents,
                r.created_at.timestamp_micros(),
                r.updated_at.timestamp_micros(),
                r.version,
                r.deleted,
                r.erased,
                r.last_position,
                text,
            ],
            |row| row.get(0),
        )?;
        if search == SearchIndex::Sync {
            search::sync(tx, table, rowid, &text)?;
        }
        let old: &[Uuid] = t
            .before
            .as_ref()
            .map(|b| b.assigned_agent_ids.as_slice())
            .unwrap_or(&[]);
        if old != r.assigned_agent_ids.as_slice() {
            for a in old.iter().filter(|a| !r.assigned_agent_ids.contains(a)) {
                unassign.execute(params![uuid_text(a), id])?;
            }
            for a in r.assigned_agent_ids.iter().filter(|a| !old.contains(a)) {
                assign.execute(params![uuid_text(a), id])?;
            }
        }
        erased |= r.erased && !t.before.as_ref().is_some_and(|b| b.erased);
    }
    Ok(erased)
}

fn write_users(
    tx: &Connection,
    table: &str,
    touched: &[Touched<UserRow>],
) -> Result<(), StorageError> {
    let mut upsert = tx.prepare_cached(&format!(
        "INSERT INTO {table} ({USER_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
         ON CONFLICT (id) DO UPDATE SET \
           email = excluded.email, name = excluded.name, role = excluded.role, \
           active = excluded.active, created_at = excluded.created_at, \
           version = excluded.version, last_position = excluded.last_position, \
           session_version = excluded.session_version, \
           mfa_enabled = excluded.mfa_enabled, \
           must_change_password = excluded.must_change_password, \
           password_changed_at = excluded.password_changed_at"
    ))?;
    for t in touched {
        let r = &t.row;
        upsert.execute(params![
            uuid_text(&r.id),
            r.email,
            r.name,
            r.role.as_str(),
            r.active,
            r.created_at.timestamp_micros(),
            r.version,
            r.last_position,
            r.session_version,
            r.mfa_enabled,
            r.must_change_password,
            r.password_changed_at.timestamp_micros(),
        ])?;
    }
    Ok(())
}

fn write_sessions(
    tx: &Connection,
    table: &str,
    touched: &[Touched<SessionRow>],
) -> Result<(), StorageError> {
    let mut upsert = tx.prepare_cached(&format!(
        "INSERT INTO {table} ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (id) DO UPDATE SET \
           user_id = excluded.user_id, ended_at = excluded.ended_at, \
           last_position = excluded.last_position"
    ))?;
    for t in touched {
        let r = &t.row;
        upsert.execute(params![
            uuid_text(&r.id),
            uuid_text(&r.user_id),
            r.ended_at.timestamp_micros(),
            r.last_position,
        ])?;
    }
    Ok(())
}

/// Loads, folds and writes one batch inside `tx`. Answers whether it erased anyone.
fn apply_work(
    tx: &Transaction<'_>,
    shadow: Option<&Shadow>,
    work: &Work,
) -> Result<bool, StorageError> {
    match work {
        Work::Customers(plan) => {
            let table = table_for(CUSTOMERS.live, shadow);
            let agents = table_for(CUSTOMER_AGENTS.live, shadow);
            let loaded = load_customers(tx, &table, &plan.load)?;
            let touched = fold_customers(plan, loaded);
            write_customers(tx, &table, &agents, &touched, SearchIndex::Sync)
        }
        Work::Users(plan) => {
            let table = table_for(USERS.live, shadow);
            let loaded = load_users(tx, &table, &plan.load)?;
            let touched = fold_users(plan, loaded);
            write_users(tx, &table, &touched)?;
            Ok(false)
        }
        Work::Sessions(plan) => {
            let table = table_for(SESSIONS.live, shadow);
            let loaded = load_sessions(tx, &table, &plan.load)?;
            let touched = fold_sessions(plan, loaded);
            write_sessions(tx, &table, &touched)?;
            Ok(false)
        }
        Work::ApiKeys(plan) => {
            let table = table_for(API_KEYS.live, shadow);
            let loaded = api_keys::load(tx, &table, &plan.load)?;
            let touched = crate::fold::fold_api_keys(plan, loaded);
            api_keys::write(tx, &table, &touched)?;
            Ok(false)
        }
        Work::Audit(plan) => {
            let table = table_for(AUDIT.live, shadow);
            let loaded = audit::load(tx, &table, &plan.load)?;
            let touched = crate::fold::fold_audit(plan, loaded);
            audit::write(tx, &table, &touched)?;
            Ok(false)
        }
        Work::Followups(w) => {
            let table = table_for(FOLLOWUPS.live, shadow);
            let loaded = followups::load(tx, &table, &w.plan.load)?;
            let touched = crate::fold::fold_followups(&w.plan, loaded);
            followups::write(tx, &table, &touched, &w.erased_customers)
        }
        Work::Analytics(w) => {
            analytics::apply(tx, shadow, w)?;
            Ok(false)
        }
    }
}

/// After an erasure (or a swap) the write-ahead log still holds page images with personal
/// data that is gone from the tables; copying it back and truncating it removes them. Best
/// effort: a reader holding old frames makes it a no-op, and the next erasure (or SQLite's
/// own checkpoints) retries.
fn checkpoint_wal_after_erasure(conn: &Connection) {
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(0) => {}
        Ok(_) => {
            // A reader still needs old frames: copy back what can be copied now.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "read.db WAL checkpoint after an erasure failed");
            }
            tracing::debug!("read.db WAL checkpoint after an erasure was busy; will retry");
        }
        Err(e) => tracing::warn!(error = %e, "read.db WAL checkpoint after an erasure failed"),
    }
}

// ---- queries ----------------------------------------------------------------------------

/// The WHERE clause and its parameters for a customer query.
fn customer_filter(q: &CustomerQuery) -> (String, Vec<SqlValue>) {
    let mut clauses: Vec<&str> = Vec::new();
    let mut args: Vec<SqlValue> = Vec::new();
    if !q.include_deleted {
        clauses.push("deleted = 0");
    }
    if let Some(s) = q.status {
        clauses.push("status = ?");
        args.push(SqlValue::Text(s.as_str().to_owned()));
    }
    if let Some(needle) = q.q.as_deref().and_then(search_needle) {
        match search::clause(&needle) {
            Some((clause, phrase)) => {
                clauses.push(clause);
                args.push(SqlValue::Text(phrase));
            }
            // Fewer than three characters: no trigram to look up, so a scan.
            None => {
                clauses.push("instr(search_text, ?) > 0");
                args.push(SqlValue::Text(needle));
            }
        }
    }
    let assigned = match q.visibility {
        Visibility::All => None,
        Visibility::AssignedTo(me) => Some(me),
    };
    for agent in [q.agent_id, assigned].into_iter().flatten() {
        clauses.push("id IN (SELECT customer_id FROM customer_agents WHERE agent_id = ?)");
        args.push(SqlValue::Text(uuid_text(&agent.as_uuid())));
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (sql, args)
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl ReadStore for SqliteReadStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn checkpoint(&self, kind: ProjectionKind) -> Result<Checkpoint, StorageError> {
        self.read(move |conn| {
            Ok(read_checkpoint(conn, kind)?.unwrap_or(Checkpoint {
                position: 0,
                version: kind.version(),
            }))
        })
        .await
    }

    async fn apply_live(
        &self,
        kind: ProjectionKind,
        work: Work,
        from: i64,
        to: i64,
    ) -> Result<Applied, StorageError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored = tx
                .query_row(
                    "SELECT position FROM projection_checkpoints WHERE projection = ?1",
                    [kind.name()],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                .unwrap_or(0);
            if stored != from {
                return Ok(Applied::Moved(stored));
            }
            let erased = apply_work(&tx, None, &work)?;
            tx.execute(
                "INSERT INTO projection_checkpoints (projection, position, version) \
                 VALUES (?1, ?2, ?3) \
                 ON CONFLICT (projection) DO UPDATE SET position = excluded.position",
                params![kind.name(), to, kind.version()],
            )?;
            tx.commit()?;
            if erased {
                checkpoint_wal_after_erasure(conn);
            }
            Ok(Applied::Done)
        })
        .await
    }

    async fn create_shadow(&self, kind: ProjectionKind) -> Result<Shadow, StorageError> {
        let shadow = Shadow::new(kind);
        let s = shadow.clone();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for def in tables(kind) {
                let stale = tables_matching(&tx, &format!("{}_rebuild_*", def.live))?;
                drop_tables(&tx, &stale)?;
                create_table(&tx, def, &s.table(def.live), false)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await?;
        Ok(shadow)
    }

    async fn apply_shadow(&self, shadow: &Shadow, work: Work) -> Result<(), StorageError> {
        let shadow = shadow.clone();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            apply_work(&tx, Some(&shadow), &work)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn load_shadow(&self, shadow: &Shadow, ids: Vec<Uuid>) -> Result<Rows, StorageError> {
        let shadow = shadow.clone();
        // A reader connection: shadow rows are committed, and reading them must not wait
        // for the writer.
        self.read(move |conn| {
            Ok(match shadow.kind {
                ProjectionKind::Customers => {
                    Rows::Customers(load_customers(conn, &shadow.table(CUSTOMERS.live), &ids)?)
                }
                ProjectionKind::Users => {
                    Rows::Users(load_users(conn, &shadow.table(USERS.live), &ids)?)
                }
                ProjectionKind::Sessions => {
                    Rows::Sessions(load_sessions(conn, &shadow.table(SESSIONS.live), &ids)?)
                }
                ProjectionKind::ApiKeys => {
                    Rows::ApiKeys(api_keys::load(conn, &shadow.table(API_KEYS.live), &ids)?)
                }
                ProjectionKind::Audit => {
                    Rows::Audit(audit::load(conn, &shadow.table(AUDIT.live), &ids)?)
                }
                ProjectionKind::Followups => {
                    Rows::Followups(followups::load(conn, &shadow.table(FOLLOWUPS.live), &ids)?)
                }
                ProjectionKind::Analytics => Rows::Analytics(analytics::load_state(
                    conn,
                    &shadow.table(analytics::STATE.live),
                    &ids,
                )?),
            })
        })
        .await
    }

    async fn write_shadow(&self, shadow: &Shadow, changes: Changes) -> Result<(), StorageError> {
        let shadow = shadow.clone();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            match &changes {
                Changes::Customers(rows) => {
                    write_customers(
                        &tx,
                        &shadow.table(CUSTOMERS.live),
                        &shadow.table(CUSTOMER_AGENTS.live),
                        rows,
                        SearchIndex::NotYet,
                    )?;
                }
                Changes::Users(rows) => write_users(&tx, &shadow.table(USERS.live), rows)?,
                Changes::Sessions(rows) => write_sessions(&tx, &shadow.table(SESSIONS.live), rows)?,
                Changes::ApiKeys(rows) => api_keys::write(&tx, &shadow.table(API_KEYS.live), rows)?,
                Changes::Audit(rows) => audit::write(&tx, &shadow.table(AUDIT.live), rows)?,
                Changes::Followups(rows, erased) => {
                    followups::write(&tx, &shadow.table(FOLLOWUPS.live), rows, erased)?;
                }
                Changes::Analytics(c) => analytics::write(&tx, Some(&shadow), c)?,
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn index_shadow(&self, shadow: &Shadow) -> Result<(), StorageError> {
        let shadow = shadow.clone();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for def in tables(shadow.kind) {
                create_indexes(&tx, def, &shadow.table(def.live))?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn swap(&self, shadow: &Shadow, tail: Work, to: i64) -> Result<(), StorageError> {
        let shadow = shadow.clone();
        self.write(move |conn| {
            let kind = shadow.kind;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // An erasure in the tail is taken care of by `drop_retired`, which truncates the
            // WAL right after the live runner is released.
            apply_work(&tx, Some(&shadow), &tail)?;
            if kind == ProjectionKind::Analytics {
                tx.execute_batch(analytics::DROP_VIEW)?;
            }
            for def in tables(kind) {
                tx.execute_batch(&format!(
                    "ALTER TABLE {live} RENAME TO {retired}; \
                     ALTER TABLE {shadow_table} RENAME TO {live};",
                    live = def.live,
                    retired = shadow.retired(def.live),
                    shadow_table = shadow.table(def.live),
                ))?;
                if def.live == CUSTOMERS.live {
                    tx.execute_batch(&format!(
                        "ALTER TABLE {live} RENAME TO {retired}; \
                         ALTER TABLE {shadow_table} RENAME TO {live};",
                        live = search::fts(def.live),
                        retired = search::fts(&shadow.retired(def.live)),
                        shadow_table = search::fts(&shadow.table(def.live)),
                    ))?;
                }
            }
            tx.execute(
                "INSERT INTO projection_checkpoints (projection, position, version) \
                 VALUES (?1, ?2, ?3) \
                 ON CONFLICT (projection) DO UPDATE \
                 SET position = excluded.position, version = excluded.version",
                params![kind.name(), to, kind.version()],
            )?;
            if kind == ProjectionKind::Analytics {
                tx.execute_batch(analytics::CREATE_VIEW)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn drop_retired(&self, shadow: &Shadow) -> Result<(), StorageError> {
        let shadow = shadow.clone();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let retired: Vec<String> = tables(shadow.kind)
                .iter()
                .map(|def| shadow.retired(def.live))
                .collect();
            drop_tables(&tx, &retired)?;
            tx.commit()?;
            // A rebuild pushed the whole projection through the WAL, next to page images
            // of the retired tables; copy it back and truncate it.
            checkpoint_wal_after_erasure(conn);
            Ok(())
        })
        .await
    }

    async fn discard_shadow(&self, shadow: &Shadow) -> Result<(), StorageError> {
        let shadow = shadow.clone();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let names: Vec<String> = tables(shadow.kind)
                .iter()
                .map(|def| shadow.table(def.live))
                .collect();
            drop_tables(&tx, &names)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn try_lead(&self, _kind: ProjectionKind) -> Result<Option<Leadership>, StorageError> {
        Ok(Some(Leadership::Local))
    }

    async fn get_customer(&self, id: Uuid) -> Result<Option<CustomerRow>, StorageError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = ?1"
            ))?;
            Ok(stmt
                .query_row([uuid_text(&id)], customer_from_row)
                .optional()?)
        })
        .await
    }

    async fn list_customers(
        &self,
        query: &CustomerQuery,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<CustomerRow>, u64), StorageError> {
        let (filter, args) = customer_filter(query);
        self.read(move |conn| {
            // One read transaction, so the total and the page come from the same snapshot.
            let tx = conn.transaction()?;
            let total: i64 = {
                let mut stmt =
                    tx.prepare_cached(&format!("SELECT count(*) FROM customers {filter}"))?;
                stmt.query_row(params_from_iter(args.iter()), |r| r.get(0))?
            };
            let mut page_args = args;
            page_args.push(SqlValue::Integer(i64::from(limit)));
            page_args.push(SqlValue::Integer(clamp_i64(offset)));
            let items = {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {CUSTOMER_COLUMNS} FROM customers {filter} \
                     ORDER BY created_at DESC, id LIMIT ? OFFSET ?"
                ))?;
                stmt.query_map(params_from_iter(page_args.iter()), customer_from_row)?
                    .collect::<Result<Vec<_>, _>>()?
            };
            tx.commit()?;
            Ok((items, u64::try_from(total).unwrap_or(0)))
        })
        .await
    }

    async fn all_customers(&self) -> Result<Vec<CustomerRow>, StorageError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {CUSTOMER_COLUMNS} FROM customers ORDER BY id"
            ))?;
            let rows = stmt
                .query_map([], customer_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn get_user(&self, id: Uuid) -> Result<Option<UserRow>, StorageError> {
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))?;
            Ok(stmt.query_row([uuid_text(&id)], user_from_row).optional()?)
        })
        .await
    }

    async fn find_user_by_email(&self, email: &str) -> Result<Option<UserRow>, StorageError> {
        let email = email.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE email = ?1 ORDER BY created_at, id LIMIT 1"
            ))?;
            Ok(stmt.query_row([email], user_from_row).optional()?)
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<UserRow>, StorageError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id"
            ))?;
            let rows = stmt
                .query_map([], user_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn count_active_superadmins(&self) -> Result<u32, StorageError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT count(*) FROM users WHERE role = 'superadmin' AND active <> 0",
            )?;
            let n: i64 = stmt.query_row([], |r| r.get(0))?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        })
        .await
    }

    async fn session_user(
        &self,
        user: Uuid,
        session: Uuid,
    ) -> Result<Option<SessionUser>, StorageError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {USER_COLUMNS}, \
                   EXISTS (SELECT 1 FROM sessions s WHERE s.id = ?2 AND s.user_id = ?1) \
                 FROM users WHERE id = ?1"
            ))?;
            Ok(stmt
                .query_row([uuid_text(&user), uuid_text(&session)], |row| {
                    Ok(SessionUser {
                        user: user_from_row(row)?,
                        ended: row.get(12)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn find_api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRow>, StorageError> {
        let hash = hash.to_owned();
        self.read(move |conn| api_keys::find_by_hash(conn, &hash))
            .await
    }

    async fn get_api_key(&self, id: Uuid) -> Result<Option<ApiKeyRow>, StorageError> {
        self.read(move |conn| api_keys::get(conn, id)).await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>, StorageError> {
        self.read(|conn| api_keys::list(conn)).await
    }

    async fn list_audit(
        &self,
        query: &AuditQuery,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<AuditRow>, u64), StorageError> {
        let query = query.clone();
        self.read(move |conn| audit::list(conn, &query, offset, limit))
            .await
    }

    async fn audit_after(
        &self,
        query: &AuditQuery,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StorageError> {
        let query = query.clone();
        self.read(move |conn| audit::after(conn, &query, after, limit))
            .await
    }

    async fn get_followup(&self, id: Uuid) -> Result<Option<FollowupRow>, StorageError> {
        self.read(move |conn| followups::get(conn, id)).await
    }

    async fn list_followups(
        &self,
        query: &FollowupQuery,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<FollowupRow>, u64), StorageError> {
        let query = query.clone();
        self.read(move |conn| followups::list(conn, &query, offset, limit))
            .await
    }

    async fn find_customers_by(
        &self,
        key: crate::lookup::CustomerKey,
        values: Vec<String>,
    ) -> Result<Vec<CustomerRow>, StorageError> {
        lookup::find_customers_by(self, key, values).await
    }

    async fn customers_after(
        &self,
        query: &CustomerQuery,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<CustomerRow>, StorageError> {
        lookup::customers_after(self, query, after, limit).await
    }
}
