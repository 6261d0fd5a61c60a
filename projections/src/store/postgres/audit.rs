//! PostgreSQL table of the `audit` projection (schema `crm`) and its queries.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{CRM, Param, TableDef, prepare, refs};
use crate::error::StorageError;
use crate::fold::Touched;
use crate::rows::{AuditQuery, AuditRow};

pub(super) const AUDIT: TableDef = TableDef {
    schema: CRM,
    key: "id",
    live: "audit",
    columns: "id uuid NOT NULL, \
              position bigint NOT NULL, \
              occurred_at timestamptz NOT NULL, \
              action text NOT NULL, \
              entity_type text NOT NULL, \
              entity_id uuid NOT NULL, \
              actor_id uuid, \
              actor_role text, \
              description text NOT NULL",
    indexes: &[
        ("position_idx", "(position)"),
        ("occurred_idx", "(occurred_at, position)"),
        ("action_idx", "(action, position)"),
        ("entity_idx", "(entity_id, position)"),
        ("actor_idx", "(actor_id, position)"),
    ],
};

pub(super) const COLUMNS: &str =
    "id, position, occurred_at, action, entity_type, entity_id, actor_id, actor_role, description";

pub(super) fn from_row(row: &Row) -> Result<AuditRow, StorageError> {
    Ok(AuditRow {
        event_id: row.try_get(0)?,
        position: row.try_get(1)?,
        occurred_at: row.try_get(2)?,
        action: row.try_get(3)?,
        entity_type: row.try_get(4)?,
        entity_id: row.try_get(5)?,
        actor_id: row.try_get(6)?,
        actor_role: row.try_get(7)?,
        description: row.try_get(8)?,
    })
}

pub(super) async fn load(
    tx: &Transaction<'_>,
    table: &str,
    ids: &[Uuid],
    cached: bool,
) -> Result<Vec<AuditRow>, StorageError> {
    super::load_by_id(tx, COLUMNS, table, ids, cached, from_row).await
}

/// One multi-row statement per batch, like the other tables.
pub(super) async fn write(
    tx: &Transaction<'_>,
    table: &str,
    cached: bool,
    touched: &[Touched<AuditRow>],
) -> Result<(), StorageError> {
    if touched.is_empty() {
        return Ok(());
    }
    let rows = touched.iter().map(|t| &t.row);
    let id: Vec<Uuid> = rows.clone().map(|r| r.event_id).collect();
    let position: Vec<i64> = rows.clone().map(|r| r.position).collect();
    let occurred: Vec<DateTime<Utc>> = rows.clone().map(|r| r.occurred_at).collect();
    let action: Vec<&str> = rows.clone().map(|r| r.action.as_str()).collect();
    let entity_type: Vec<&str> = rows.clone().map(|r| r.entity_type.as_str()).collect();
    let entity_id: Vec<Uuid> = rows.clone().map(|r| r.entity_id).collect();
    let actor_id: Vec<Option<Uuid>> = rows.clone().map(|r| r.actor_id).collect();
    let actor_role: Vec<Option<&str>> = rows.clone().map(|r| r.actor_role.as_deref()).collect();
    let description: Vec<&str> = rows.map(|r| r.description.as_str()).collect();
    let sql = format!(
        "INSERT INTO crm.{table} ({COLUMNS}) \
             SELECT * FROM unnest($1::uuid[], $2::int8[], $3::timestamptz[], $4::text[], \
                                  $5::text[], $6::uuid[], $7::uuid[], $8::text[], $9::text[]) \
             ON CONFLICT (id) DO NOTHING"
    );
    let stmt = prepare(tx, &sql, cached).await?;
    tx.execute(
        &stmt,
        &[
            &id,
            &position,
            &occurred,
            &action,
            &entity_type,
            &entity_id,
            &actor_id,
            &actor_role,
            &description,
        ],
    )
    .await?;
    Ok(())
}

pub(super) fn filter(q: &AuditQuery, args: &mut Vec<Param>) -> Vec<String> {
    let mut clauses = Vec::new();
    if let Some(t) = q.from {
        args.push(Box::new(t));
        clauses.push(format!("occurred_at >= ${}", args.len()));
    }
    if let Some(t) = q.to {
        args.push(Box::new(t));
        clauses.push(format!("occurred_at < ${}", args.len()));
    }
    if let Some(a) = &q.action {
        args.push(Box::new(a.clone()));
        clauses.push(format!("action = ${}", args.len()));
    }
    if let Some(t) = &q.entity_type {
        args.push(Box::new(t.clone()));
        clauses.push(format!("entity_type = ${}", args.len()));
    }
    if let Some(id) = q.entity_id {
        args.push(Box::new(id));
        clauses.push(format!("entity_id = ${}", args.len()));
    }
    if let Some(id) = q.actor_id {
        args.push(Box::new(id));
        clauses.push(format!("actor_id = ${}", args.len()));
    }
    clauses
}

pub(super) fn where_sql(clauses: &[String]) -> String {
    if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    }
}

pub(super) async fn list(
    conn: &mut deadpool_postgres::Object,
    q: &AuditQuery,
    offset: u64,
    limit: u32,
) -> Result<(Vec<AuditRow>, u64), StorageError> {
    let mut args: Vec<Param> = Vec::new();
    let w = where_sql(&filter(q, &mut args));
    // One snapshot for the count and the page.
    let tx = conn
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let total: i64 = tx
        .query_one(&format!("SELECT count(*) FROM crm.audit {w}"), &refs(&args))
        .await?
        .try_get(0)?;
    args.push(Box::new(i64::from(limit)));
    let l = args.len();
    args.push(Box::new(i64::try_from(offset).unwrap_or(i64::MAX)));
    let o = args.len();
    let rows = tx
        .query(
            &format!(
                "SELECT {COLUMNS} FROM crm.audit {w} ORDER BY position DESC LIMIT ${l} OFFSET ${o}"
            ),
            &refs(&args),
        )
        .await?;
    tx.commit().await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok((items, u64::try_from(total).unwrap_or(0)))
}

pub(super) async fn after(
    conn: &deadpool_postgres::Object,
    q: &AuditQuery,
    after: i64,
    limit: u32,
) -> Result<Vec<AuditRow>, StorageError> {
    let mut args: Vec<Param> = Vec::new();
    let mut clauses = filter(q, &mut args);
    args.push(Box::new(after));
    clauses.push(format!("position > ${}", args.len()));
    args.push(Box::new(i64::from(limit)));
    let l = args.len();
    let w = where_sql(&clauses);
    let rows = conn
        .query(
            &format!("SELECT {COLUMNS} FROM crm.audit {w} ORDER BY position LIMIT ${l}"),
            &refs(&args),
        )
        .await?;
    rows.iter().map(from_row).collect()
}
