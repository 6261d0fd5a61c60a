//! SQLite table of the `audit` projection and its queries.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Row, params, params_from_iter};
use uuid::Uuid;

use super::{TableDef, clamp_i64, time_at, uuid_at, uuid_text};
use crate::error::StorageError;
use crate::fold::Touched;
use crate::rows::{AuditQuery, AuditRow};

pub(super) const AUDIT: TableDef = TableDef {
    live: "audit",
    columns: "id TEXT PRIMARY KEY NOT NULL, \
              position INTEGER NOT NULL, \
              occurred_at INTEGER NOT NULL, \
              action TEXT NOT NULL, \
              entity_type TEXT NOT NULL, \
              entity_id TEXT NOT NULL, \
              actor_id TEXT, \
              actor_role TEXT, \
              description TEXT NOT NULL",
    without_rowid: false,
    indexes: &[
        ("position", "position"),
        ("occurred", "occurred_at, position"),
        ("action", "action, position"),
        ("entity", "entity_id, position"),
        ("actor", "actor_id, position"),
    ],
};

const COLUMNS: &str =
    "id, position, occurred_at, action, entity_type, entity_id, actor_id, actor_role, description";

fn from_row(row: &Row<'_>) -> rusqlite::Result<AuditRow> {
    let actor: Option<String> = row.get(6)?;
    Ok(AuditRow {
        event_id: uuid_at(row, 0)?,
        position: row.get(1)?,
        occurred_at: time_at(row, 2)?,
        action: row.get(3)?,
        entity_type: row.get(4)?,
        entity_id: uuid_at(row, 5)?,
        actor_id: match actor {
            None => None,
            Some(_) => Some(uuid_at(row, 6)?),
        },
        actor_role: row.get(7)?,
        description: row.get(8)?,
    })
}

pub(super) fn load(
    tx: &Connection,
    table: &str,
    ids: &[Uuid],
) -> Result<Vec<AuditRow>, StorageError> {
    super::load_by_id(tx, COLUMNS, table, ids, from_row)
}

pub(super) fn write(
    tx: &Connection,
    table: &str,
    touched: &[Touched<AuditRow>],
) -> Result<(), StorageError> {
    let mut insert = tx.prepare_cached(&format!(
        "INSERT INTO {table} ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (id) DO NOTHING"
    ))?;
    for t in touched {
        let r = &t.row;
        insert.execute(params![
            uuid_text(&r.event_id),
            r.position,
            r.occurred_at.timestamp_micros(),
            r.action,
            r.entity_type,
            uuid_text(&r.entity_id),
            r.actor_id.as_ref().map(uuid_text),
            r.actor_role,
            r.description,
        ])?;
    }
    Ok(())
}

fn filter(q: &AuditQuery) -> (Vec<&'static str>, Vec<SqlValue>) {
    let mut clauses = Vec::new();
    let mut args = Vec::new();
    if let Some(t) = q.from {
        clauses.push("occurred_at >= ?");
        args.push(SqlValue::Integer(t.timestamp_micros()));
    }
    if let Some(t) = q.to {
        clauses.push("occurred_at < ?");
        args.push(SqlValue::Integer(t.timestamp_micros()));
    }
    if let Some(a) = &q.action {
        clauses.push("action = ?");
        args.push(SqlValue::Text(a.clone()));
    }
    if let Some(t) = &q.entity_type {
        clauses.push("entity_type = ?");
        args.push(SqlValue::Text(t.clone()));
    }
    if let Some(id) = &q.entity_id {
        clauses.push("entity_id = ?");
        args.push(SqlValue::Text(uuid_text(id)));
    }
    if let Some(id) = &q.actor_id {
        clauses.push("actor_id = ?");
        args.push(SqlValue::Text(uuid_text(id)));
    }
    (clauses, args)
}

fn where_sql(clauses: &[&str]) -> String {
    if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    }
}

/// A page, newest first (by log position), and the number of matches.
pub(super) fn list(
    conn: &mut Connection,
    q: &AuditQuery,
    offset: u64,
    limit: u32,
) -> Result<(Vec<AuditRow>, u64), StorageError> {
    let (clauses, args) = filter(q);
    let w = where_sql(&clauses);
    let tx = conn.transaction()?;
    let total: i64 = tx
        .prepare_cached(&format!("SELECT count(*) FROM audit {w}"))?
        .query_row(params_from_iter(args.iter()), |r| r.get(0))?;
    let mut page_args = args;
    page_args.push(SqlValue::Integer(i64::from(limit)));
    page_args.push(SqlValue::Integer(clamp_i64(offset)));
    let items = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM audit {w} ORDER BY position DESC LIMIT ? OFFSET ?"
        ))?
        .query_map(params_from_iter(page_args.iter()), from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    tx.commit()?;
    Ok((items, u64::try_from(total).unwrap_or(0)))
}

/// Up to `limit` matches after a position, oldest first: the export's keyset pagination.
pub(super) fn after(
    conn: &Connection,
    q: &AuditQuery,
    after: i64,
    limit: u32,
) -> Result<Vec<AuditRow>, StorageError> {
    let (mut clauses, mut args) = filter(q);
    clauses.push("position > ?");
    args.push(SqlValue::Integer(after));
    args.push(SqlValue::Integer(i64::from(limit)));
    let w = where_sql(&clauses);
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM audit {w} ORDER BY position LIMIT ?"
        ))?
        .query_map(params_from_iter(args.iter()), from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
