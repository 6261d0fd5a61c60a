//! SQLite queries of the customer transfer: lookups by identifying field and keyset pages.

use rusqlite::params_from_iter;
use rusqlite::types::Value as SqlValue;
use uuid::Uuid;

use super::{CUSTOMER_COLUMNS, SqliteReadStore, customer_filter, customer_from_row, uuid_text};
use crate::error::StorageError;
use crate::lookup::CustomerKey;
use crate::rows::{CustomerQuery, CustomerRow};

pub(super) async fn find_customers_by(
    store: &SqliteReadStore,
    key: CustomerKey,
    values: Vec<String>,
) -> Result<Vec<CustomerRow>, StorageError> {
    let column = key.column();
    // One statement for any number of values: they travel as one JSON array parameter.
    let values =
        serde_json::to_string(&values).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    store
        .read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {CUSTOMER_COLUMNS} FROM customers \
                 WHERE {column} IN (SELECT value FROM json_each(?1)) \
                 AND deleted = 0 AND erased = 0 \
                 ORDER BY created_at, id"
            ))?;
            let rows = stmt
                .query_map([values], customer_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
}

pub(super) async fn customers_after(
    store: &SqliteReadStore,
    query: &CustomerQuery,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<CustomerRow>, StorageError> {
    let (filter, mut args) = customer_filter(query);
    let mut filter = filter;
    if let Some(after) = after {
        filter.push_str(if filter.is_empty() { "WHERE " } else { " AND " });
        filter.push_str("id > ?");
        args.push(SqlValue::Text(uuid_text(&after)));
    }
    args.push(SqlValue::Integer(i64::from(limit)));
    store
        .read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {CUSTOMER_COLUMNS} FROM customers {filter} ORDER BY id LIMIT ?"
            ))?;
            let rows = stmt
                .query_map(params_from_iter(args.iter()), customer_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
}
