//! SQLite table of the `followups` projection and its queries.
//!
//! A follow-up is visible only with its customer, so the list joins the customers read
//! model (and its assignment table) at query time: reassigning or deleting a customer
//! changes who sees its follow-ups without touching this table.

use egec_domain::followup::FollowupStatus;
use egec_domain::permission::Visibility;
use egec_domain::personal::ERASED;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use uuid::Uuid;

use super::{TableDef, clamp_i64, time_at, uuid_at, uuid_text};
use crate::error::StorageError;
use crate::fold::Touched;
use crate::rows::{FollowupQuery, FollowupRow};

pub(super) const FOLLOWUPS: TableDef = TableDef {
    live: "followups",
    columns: "id TEXT PRIMARY KEY NOT NULL, \
              customer_id TEXT NOT NULL, \
              due_at INTEGER NOT NULL, \
              note TEXT NOT NULL, \
              assigned_to TEXT NOT NULL, \
              created_at INTEGER NOT NULL, \
              completed_at INTEGER, \
              completed_by TEXT, \
              version INTEGER NOT NULL, \
              last_position INTEGER NOT NULL",
    without_rowid: false,
    // The lists: one person's follow-ups by due time, one customer's, and everything
    // visible by due time.
    indexes: &[
        ("assignee", "assigned_to, due_at, id"),
        ("customer", "customer_id, due_at, id"),
        ("due", "due_at, id"),
    ],
};

const COLUMNS: &str = "id, customer_id, due_at, note, assigned_to, created_at, completed_at, \
     completed_by, version, last_position";

/// The same columns, qualified for the join with the customers table.
const F_COLUMNS: &str = "f.id, f.customer_id, f.due_at, f.note, f.assigned_to, f.created_at, \
     f.completed_at, f.completed_by, f.version, f.last_position";

fn from_row(row: &Row<'_>) -> rusqlite::Result<FollowupRow> {
    let completed_at = match row.get::<_, Option<i64>>(6)? {
        None => None,
        Some(_) => Some(time_at(row, 6)?),
    };
    let completed_by = match row.get::<_, Option<String>>(7)? {
        None => None,
        Some(_) => Some(uuid_at(row, 7)?),
    };
    Ok(FollowupRow {
        id: uuid_at(row, 0)?,
        customer_id: uuid_at(row, 1)?,
        due_at: time_at(row, 2)?,
        note: row.get(3)?,
        assigned_to: uuid_at(row, 4)?,
        created_at: time_at(row, 5)?,
        completed_at,
        completed_by,
        version: row.get(8)?,
        last_position: row.get(9)?,
    })
}

pub(super) fn load(
    tx: &Connection,
    table: &str,
    ids: &[Uuid],
) -> Result<Vec<FollowupRow>, StorageError> {
    super::load_by_id(tx, COLUMNS, table, ids, from_row)
}

/// Writes the folded rows, then erases the notes of the erased customers' follow-ups (in
/// that order, so a row folded in the same batch as its customer's erasure ends erased).
/// Answers whether it erased anything.
pub(super) fn write(
    tx: &Connection,
    table: &str,
    touched: &[Touched<FollowupRow>],
    erased_customers: &[Uuid],
) -> Result<bool, StorageError> {
    let mut upsert = tx.prepare_cached(&format!(
        "INSERT INTO {table} ({COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (id) DO UPDATE SET \
           customer_id = excluded.customer_id, due_at = excluded.due_at, \
           note = excluded.note, assigned_to = excluded.assigned_to, \
           created_at = excluded.created_at, completed_at = excluded.completed_at, \
           completed_by = excluded.completed_by, version = excluded.version, \
           last_position = excluded.last_position"
    ))?;
    for t in touched {
        let r = &t.row;
        upsert.execute(params![
            uuid_text(&r.id),
            uuid_text(&r.customer_id),
            r.due_at.timestamp_micros(),
            r.note,
            uuid_text(&r.assigned_to),
            r.created_at.timestamp_micros(),
            r.completed_at.map(|t| t.timestamp_micros()),
            r.completed_by.as_ref().map(uuid_text),
            r.version,
            r.last_position,
        ])?;
    }
    let mut erased = 0;
    if !erased_customers.is_empty() {
        let mut erase = tx.prepare_cached(&format!(
            "UPDATE {table} SET note = ?1 WHERE customer_id = ?2 AND note <> ?1"
        ))?;
        for c in erased_customers {
            erased += erase.execute(params![ERASED, uuid_text(c)])?;
        }
    }
    Ok(erased > 0)
}

pub(super) fn get(conn: &Connection, id: Uuid) -> Result<Option<FollowupRow>, StorageError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM followups WHERE id = ?1"))?;
    Ok(stmt.query_row([uuid_text(&id)], from_row).optional()?)
}

fn filter(q: &FollowupQuery) -> (String, Vec<SqlValue>) {
    let mut clauses: Vec<&str> = Vec::new();
    let mut args: Vec<SqlValue> = Vec::new();
    if !q.include_deleted {
        clauses.push("c.deleted = 0");
    }
    if let Visibility::AssignedTo(me) = q.visibility {
        clauses
            .push("f.customer_id IN (SELECT customer_id FROM customer_agents WHERE agent_id = ?)");
        args.push(SqlValue::Text(uuid_text(&me.as_uuid())));
    }
    if let Some(a) = &q.assigned_to {
        clauses.push("f.assigned_to = ?");
        args.push(SqlValue::Text(uuid_text(a)));
    }
    if let Some(c) = &q.customer_id {
        clauses.push("f.customer_id = ?");
        args.push(SqlValue::Text(uuid_text(c)));
    }
    if let Some(t) = q.due_before {
        clauses.push("f.due_at < ?");
        args.push(SqlValue::Integer(t.timestamp_micros()));
    }
    match q.status {
        None => {}
        Some(FollowupStatus::Done) => clauses.push("f.completed_at IS NOT NULL"),
        Some(FollowupStatus::Open) => {
            clauses.push("f.completed_at IS NULL AND f.due_at >= ?");
            args.push(SqlValue::Integer(q.now.timestamp_micros()));
        }
        Some(FollowupStatus::Overdue) => {
            clauses.push("f.completed_at IS NULL AND f.due_at < ?");
            args.push(SqlValue::Integer(q.now.timestamp_micros()));
        }
    }
    let w = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (w, args)
}

/// A page of the visible follow-ups matching the query, soonest due first, and the number
/// of matches, read in one transaction.
pub(super) fn list(
    conn: &mut Connection,
    q: &FollowupQuery,
    offset: u64,
    limit: u32,
) -> Result<(Vec<FollowupRow>, u64), StorageError> {
    let (w, args) = filter(q);
    let from = "FROM followups f JOIN customers c ON c.id = f.customer_id";
    let tx = conn.transaction()?;
    let total: i64 = tx
        .prepare_cached(&format!("SELECT count(*) {from} {w}"))?
        .query_row(params_from_iter(args.iter()), |r| r.get(0))?;
    let mut page_args = args;
    page_args.push(SqlValue::Integer(i64::from(limit)));
    page_args.push(SqlValue::Integer(clamp_i64(offset)));
    let items = tx
        .prepare_cached(&format!(
            "SELECT {F_COLUMNS} {from} {w} ORDER BY f.due_at, f.id LIMIT ? OFFSET ?"
        ))?
        .query_map(params_from_iter(page_args.iter()), from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    tx.commit()?;
    Ok((items, u64::try_from(total).unwrap_or(0)))
}
