//! PostgreSQL queries of the customer transfer: lookups by identifying field and keyset
//! pages.

use uuid::Uuid;

use super::{CUSTOMER_COLUMNS, PgReadStore, customer_filter, customer_from_row, refs};
use crate::error::StorageError;
use crate::lookup::CustomerKey;
use crate::rows::{CustomerQuery, CustomerRow};

pub(super) async fn find_customers_by(
    store: &PgReadStore,
    key: CustomerKey,
    values: Vec<String>,
) -> Result<Vec<CustomerRow>, StorageError> {
    let conn = store.pool.get().await?;
    let stmt = conn
        .prepare_cached(&format!(
            "SELECT {CUSTOMER_COLUMNS} FROM crm.customers \
             WHERE {} = ANY($1) AND NOT deleted AND NOT erased \
             ORDER BY created_at, id",
            key.column()
        ))
        .await?;
    conn.query(&stmt, &[&values])
        .await?
        .iter()
        .map(customer_from_row)
        .collect()
}

pub(super) async fn customers_after(
    store: &PgReadStore,
    query: &CustomerQuery,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<CustomerRow>, StorageError> {
    let (mut filter, mut args) = customer_filter(query, store.trigram.is_some());
    if let Some(after) = after {
        args.push(Box::new(after));
        filter.push_str(if filter.is_empty() { "WHERE " } else { " AND " });
        filter.push_str(&format!("id > ${}", args.len()));
    }
    args.push(Box::new(i64::from(limit)));
    let sql = format!(
        "SELECT {CUSTOMER_COLUMNS} FROM crm.customers {filter} ORDER BY id LIMIT ${}",
        args.len()
    );
    let conn = store.pool.get().await?;
    let stmt = conn.prepare_cached(&sql).await?;
    conn.query(&stmt, &refs(&args))
        .await?
        .iter()
        .map(customer_from_row)
        .collect()
}
