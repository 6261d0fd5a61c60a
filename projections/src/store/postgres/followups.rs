//! PostgreSQL table of the `followups` projection (schema `crm`) and its queries.
//!
//! A follow-up is visible only with its customer, so the list joins the customers read
//! model at query time: reassigning or deleting a customer changes who sees its follow-ups
//! without touching this table.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use egec_domain::followup::FollowupStatus;
use egec_domain::permission::Visibility;
use egec_domain::personal::ERASED;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{CRM, Param, TableDef, prepare, refs};
use crate::error::StorageError;
use crate::fold::Touched;
use crate::rows::{FollowupQuery, FollowupRow};

pub(super) const FOLLOWUPS: TableDef = TableDef {
    schema: CRM,
    key: "id",
    live: "followups",
    columns: "id uuid NOT NULL, \
              customer_id uuid NOT NULL, \
              due_at timestamptz NOT NULL, \
              note text NOT NULL, \
              assigned_to uuid NOT NULL, \
              created_at timestamptz NOT NULL, \
              completed_at timestamptz, \
              completed_by uuid, \
              version bigint NOT NULL, \
              last_position bigint NOT NULL",
    // The lists: one person's follow-ups by due time, one customer's, and everything
    // visible by due time.
    indexes: &[
        ("assignee_idx", "(assigned_to, due_at, id)"),
        ("customer_idx", "(customer_id, due_at, id)"),
        ("due_idx", "(due_at, id)"),
    ],
};

pub(super) const COLUMNS: &str = "id, customer_id, due_at, note, assigned_to, created_at, \
     completed_at, completed_by, version, last_position";

/// The same columns, qualified for the join with the customers table.
const F_COLUMNS: &str = "f.id, f.customer_id, f.due_at, f.note, f.assigned_to, f.created_at, \
     f.completed_at, f.completed_by, f.version, f.last_position";

pub(super) fn from_row(row: &Row) -> Result<FollowupRow, StorageError> {
    Ok(FollowupRow {
        id: row.try_get(0)?,
        customer_id: row.try_get(1)?,
        due_at: row.try_get(2)?,
        note: row.try_get(3)?,
        assigned_to: row.try_get(4)?,
        created_at: row.try_get(5)?,
        completed_at: row.try_get(6)?,
        completed_by: row.try_get(7)?,
        version: row.try_get(8)?,
        last_position: row.try_get(9)?,
    })
}

pub(super) async fn load(
    tx: &Transaction<'_>,
    table: &str,
    ids: &[Uuid],
    cached: bool,
) -> Result<Vec<FollowupRow>, StorageError> {
    super::load_by_id(tx, COLUMNS, table, ids, cached, from_row).await
}

/// Writes the folded rows, then erases the notes of the erased customers' follow-ups (in
/// that order, so a row folded in the same batch as its customer's erasure ends erased).
pub(super) async fn write(
    tx: &Transaction<'_>,
    table: &str,
    cached: bool,
    touched: &[Touched<FollowupRow>],
    erased_customers: &[Uuid],
) -> Result<(), StorageError> {
    if !touched.is_empty() {
        let rows = touched.iter().map(|t| &t.row);
        let id: Vec<Uuid> = rows.clone().map(|r| r.id).collect();
        let customer: Vec<Uuid> = rows.clone().map(|r| r.customer_id).collect();
        let due: Vec<DateTime<Utc>> = rows.clone().map(|r| r.due_at).collect();
        let note: Vec<&str> = rows.clone().map(|r| r.note.as_str()).collect();
        let assigned: Vec<Uuid> = rows.clone().map(|r| r.assigned_to).collect();
        let created: Vec<DateTime<Utc>> = rows.clone().map(|r| r.created_at).collect();
        let completed: Vec<Option<DateTime<Utc>>> = rows.clone().map(|r| r.completed_at).collect();
        let completed_by: Vec<Option<Uuid>> = rows.clone().map(|r| r.completed_by).collect();
        let version: Vec<i64> = rows.clone().map(|r| r.version).collect();
        let last: Vec<i64> = rows.map(|r| r.last_position).collect();
        let sql = format!(
            "INSERT INTO crm.{table} ({COLUMNS}) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[], \
               $5::uuid[], $6::timestamptz[], $7::timestamptz[], $8::uuid[], $9::int8[], \
               $10::int8[]) \
             ON CONFLICT (id) DO UPDATE SET \
               customer_id = EXCLUDED.customer_id, due_at = EXCLUDED.due_at, \
               note = EXCLUDED.note, assigned_to = EXCLUDED.assigned_to, \
               created_at = EXCLUDED.created_at, completed_at = EXCLUDED.completed_at, \
               completed_by = EXCLUDED.completed_by, version = EXCLUDED.version, \
               last_position = EXCLUDED.last_position"
        );
        let stmt = prepare(tx, &sql, cached).await?;
        tx.execute(
            &stmt,
            &[
                &id,
                &customer,
                &due,
                &note,
                &assigned,
                &created,
                &completed,
                &completed_by,
                &version,
                &last,
            ],
        )
        .await?;
    }
    if !erased_customers.is_empty() {
        let sql =
            format!("UPDATE crm.{table} SET note = $1 WHERE customer_id = ANY($2) AND note <> $1");
        let stmt = prepare(tx, &sql, cached).await?;
        tx.execute(&stmt, &[&ERASED, &erased_customers]).await?;
    }
    Ok(())
}

pub(super) async fn get(
    conn: &deadpool_postgres::Object,
    id: Uuid,
) -> Result<Option<FollowupRow>, StorageError> {
    let stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM crm.followups WHERE id = $1"
        ))
        .await?;
    conn.query_opt(&stmt, &[&id])
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

fn filter(q: &FollowupQuery, args: &mut Vec<Param>) -> String {
    let mut clauses: Vec<String> = Vec::new();
    if !q.include_deleted {
        clauses.push("NOT c.deleted".into());
    }
    if let Visibility::AssignedTo(me) = q.visibility {
        args.push(Box::new(vec![me.as_uuid()]));
        // `@>` rather than `= ANY`, so the GIN index on the array can answer it.
        clauses.push(format!("c.assigned_agent_ids @> ${}::uuid[]", args.len()));
    }
    if let Some(a) = q.assigned_to {
        args.push(Box::new(a));
        clauses.push(format!("f.assigned_to = ${}", args.len()));
    }
    if let Some(c) = q.customer_id {
        args.push(Box::new(c));
        clauses.push(format!("f.customer_id = ${}", args.len()));
    }
    if let Some(t) = q.due_before {
        args.push(Box::new(t));
        clauses.push(format!("f.due_at < ${}", args.len()));
    }
    match q.status {
        None => {}
        Some(FollowupStatus::Done) => clauses.push("f.completed_at IS NOT NULL".into()),
        Some(FollowupStatus::Open) => {
            args.push(Box::new(q.now));
            clauses.push(format!(
                "f.completed_at IS NULL AND f.due_at >= ${}",
                args.len()
            ));
        }
        Some(FollowupStatus::Overdue) => {
            args.push(Box::new(q.now));
            clauses.push(format!(
                "f.completed_at IS NULL AND f.due_at < ${}",
                args.len()
            ));
        }
    }
    if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    }
}

/// A page of the visible follow-ups matching the query, soonest due first, and the number
/// of matches, from one snapshot.
pub(super) async fn list(
    conn: &mut deadpool_postgres::Object,
    q: &FollowupQuery,
    offset: u64,
    limit: u32,
) -> Result<(Vec<FollowupRow>, u64), StorageError> {
    let mut args: Vec<Param> = Vec::new();
    let w = filter(q, &mut args);
    let from = "FROM crm.followups f JOIN crm.customers c ON c.id = f.customer_id";
    let tx = conn
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let total: i64 = tx
        .query_one(&format!("SELECT count(*) {from} {w}"), &refs(&args))
        .await?
        .try_get(0)?;
    args.push(Box::new(i64::from(limit)));
    let l = args.len();
    args.push(Box::new(i64::try_from(offset).unwrap_or(i64::MAX)));
    let o = args.len();
    let rows = tx
        .query(
            &format!(
                "SELECT {F_COLUMNS} {from} {w} ORDER BY f.due_at, f.id LIMIT ${l} OFFSET ${o}"
            ),
            &refs(&args),
        )
        .await?;
    tx.commit().await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok((items, u64::try_from(total).unwrap_or(0)))
}
