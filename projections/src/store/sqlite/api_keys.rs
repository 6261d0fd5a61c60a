//! SQLite table of the `api_keys` projection and its queries.

use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

use super::{TableDef, bad, time_at, uuid_at, uuid_text};
use crate::error::StorageError;
use crate::fold::Touched;
use crate::rows::ApiKeyRow;

pub(super) const API_KEYS: TableDef = TableDef {
    live: "api_keys",
    columns: "id TEXT PRIMARY KEY NOT NULL, \
              name TEXT NOT NULL, \
              permissions TEXT NOT NULL, \
              prefix TEXT NOT NULL, \
              secret_hash TEXT NOT NULL, \
              previous_hash TEXT, \
              grace_until INTEGER, \
              expires_at INTEGER, \
              revoked_at INTEGER, \
              created_at INTEGER NOT NULL, \
              last_used_at INTEGER, \
              version INTEGER NOT NULL, \
              last_position INTEGER NOT NULL",
    without_rowid: false,
    indexes: &[
        ("secret", "secret_hash"),
        ("previous", "previous_hash"),
        ("created", "created_at, id"),
    ],
};

const COLUMNS: &str = "id, name, permissions, prefix, secret_hash, previous_hash, grace_until, \
     expires_at, revoked_at, created_at, last_used_at, version, last_position";

fn opt_time_at(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<chrono::DateTime<chrono::Utc>>> {
    match row.get::<_, Option<i64>>(i)? {
        None => Ok(None),
        Some(_) => time_at(row, i).map(Some),
    }
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<ApiKeyRow> {
    let permissions: String = row.get(2)?;
    Ok(ApiKeyRow {
        id: uuid_at(row, 0)?,
        name: row.get(1)?,
        permissions: serde_json::from_str(&permissions)
            .map_err(|_| bad(2, "not a JSON array of names"))?,
        prefix: row.get(3)?,
        secret_hash: row.get(4)?,
        previous_hash: row.get(5)?,
        grace_until: opt_time_at(row, 6)?,
        expires_at: opt_time_at(row, 7)?,
        revoked_at: opt_time_at(row, 8)?,
        created_at: time_at(row, 9)?,
        last_used_at: opt_time_at(row, 10)?,
        version: row.get(11)?,
        last_position: row.get(12)?,
    })
}

pub(super) fn load(
    tx: &Connection,
    table: &str,
    ids: &[Uuid],
) -> Result<Vec<ApiKeyRow>, StorageError> {
    super::load_by_id(tx, COLUMNS, table, ids, from_row)
}

pub(super) fn write(
    tx: &Connection,
    table: &str,
    touched: &[Touched<ApiKeyRow>],
) -> Result<(), StorageError> {
    let mut upsert = tx.prepare_cached(&format!(
        "INSERT INTO {table} ({COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (id) DO UPDATE SET \
           name = excluded.name, permissions = excluded.permissions, \
           prefix = excluded.prefix, secret_hash = excluded.secret_hash, \
           previous_hash = excluded.previous_hash, grace_until = excluded.grace_until, \
           expires_at = excluded.expires_at, revoked_at = excluded.revoked_at, \
           created_at = excluded.created_at, last_used_at = excluded.last_used_at, \
           version = excluded.version, last_position = excluded.last_position"
    ))?;
    for t in touched {
        let r = &t.row;
        let permissions = serde_json::to_string(&r.permissions)
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        upsert.execute(params![
            uuid_text(&r.id),
            r.name,
            permissions,
            r.prefix,
            r.secret_hash,
            r.previous_hash,
            r.grace_until.map(|t| t.timestamp_micros()),
            r.expires_at.map(|t| t.timestamp_micros()),
            r.revoked_at.map(|t| t.timestamp_micros()),
            r.created_at.timestamp_micros(),
            r.last_used_at.map(|t| t.timestamp_micros()),
            r.version,
            r.last_position,
        ])?;
    }
    Ok(())
}

/// The key whose current or previous secret has this hash.
pub(super) fn find_by_hash(
    conn: &Connection,
    hash: &str,
) -> Result<Option<ApiKeyRow>, StorageError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE secret_hash = ?1 \
         UNION ALL \
         SELECT {COLUMNS} FROM api_keys WHERE previous_hash = ?1 \
         LIMIT 1"
    ))?;
    Ok(stmt.query_row([hash], from_row).optional()?)
}

pub(super) fn get(conn: &Connection, id: Uuid) -> Result<Option<ApiKeyRow>, StorageError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"))?;
    Ok(stmt.query_row([uuid_text(&id)], from_row).optional()?)
}

pub(super) fn list(conn: &Connection) -> Result<Vec<ApiKeyRow>, StorageError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id"
    ))?;
    let rows = stmt
        .query_map([], from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
