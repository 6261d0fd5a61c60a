//! PostgreSQL table of the `api_keys` projection (schema `crm`) and its queries.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{CRM, TableDef, prepare};
use crate::error::StorageError;
use crate::fold::Touched;
use crate::rows::ApiKeyRow;

pub(super) const API_KEYS: TableDef = TableDef {
    schema: CRM,
    key: "id",
    live: "api_keys",
    columns: "id uuid NOT NULL, \
              name text NOT NULL, \
              permissions text[] NOT NULL, \
              prefix text NOT NULL, \
              secret_hash text NOT NULL, \
              previous_hash text, \
              grace_until timestamptz, \
              expires_at timestamptz, \
              revoked_at timestamptz, \
              created_at timestamptz NOT NULL, \
              last_used_at timestamptz, \
              version bigint NOT NULL, \
              last_position bigint NOT NULL",
    indexes: &[
        ("secret_idx", "(secret_hash)"),
        ("previous_idx", "(previous_hash)"),
        ("created_idx", "(created_at, id)"),
    ],
};

pub(super) const COLUMNS: &str = "id, name, permissions, prefix, secret_hash, previous_hash, \
     grace_until, expires_at, revoked_at, created_at, last_used_at, version, last_position";

pub(super) fn from_row(row: &Row) -> Result<ApiKeyRow, StorageError> {
    Ok(ApiKeyRow {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        permissions: row.try_get(2)?,
        prefix: row.try_get(3)?,
        secret_hash: row.try_get(4)?,
        previous_hash: row.try_get(5)?,
        grace_until: row.try_get(6)?,
        expires_at: row.try_get(7)?,
        revoked_at: row.try_get(8)?,
        created_at: row.try_get(9)?,
        last_used_at: row.try_get(10)?,
        version: row.try_get(11)?,
        last_position: row.try_get(12)?,
    })
}

pub(super) async fn load(
    tx: &Transaction<'_>,
    table: &str,
    ids: &[Uuid],
    cached: bool,
) -> Result<Vec<ApiKeyRow>, StorageError> {
    super::load_by_id(tx, COLUMNS, table, ids, cached, from_row).await
}

/// Few keys exist and few change per batch: one upsert per row keeps the arrays of
/// permissions out of `unnest`, which would flatten them.
pub(super) async fn write(
    tx: &Transaction<'_>,
    table: &str,
    cached: bool,
    touched: &[Touched<ApiKeyRow>],
) -> Result<(), StorageError> {
    if touched.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO crm.{table} ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (id) DO UPDATE SET \
           name = EXCLUDED.name, permissions = EXCLUDED.permissions, \
           prefix = EXCLUDED.prefix, secret_hash = EXCLUDED.secret_hash, \
           previous_hash = EXCLUDED.previous_hash, grace_until = EXCLUDED.grace_until, \
           expires_at = EXCLUDED.expires_at, revoked_at = EXCLUDED.revoked_at, \
           created_at = EXCLUDED.created_at, last_used_at = EXCLUDED.last_used_at, \
           version = EXCLUDED.version, last_position = EXCLUDED.last_position"
    );
    let stmt = prepare(tx, &sql, cached).await?;
    for t in touched {
        let r = &t.row;
        let times: [&Option<DateTime<Utc>>; 3] = [&r.grace_until, &r.expires_at, &r.revoked_at];
        tx.execute(
            &stmt,
            &[
                &r.id,
                &r.name,
                &r.permissions,
                &r.prefix,
                &r.secret_hash,
                &r.previous_hash,
                times[0],
                times[1],
                times[2],
                &r.created_at,
                &r.last_used_at,
                &r.version,
                &r.last_position,
            ],
        )
        .await?;
    }
    Ok(())
}
