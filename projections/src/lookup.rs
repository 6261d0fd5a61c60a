//! Queries of the customer transfer (import and export): finding a customer by one of its
//! identifying fields, and reading customers page by page in a stable order.

use uuid::Uuid;

use crate::error::ProjectionError;
use crate::read_models::ReadModels;
use crate::rows::{CustomerQuery, CustomerRow};

/// A field that identifies a customer on import. Each is indexed on both backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomerKey {
    /// Lower-cased, as `Email` stores it.
    Email,
    /// E.164, as `PhoneE164` stores it.
    Phone,
    /// As `PassportNumber` stores it.
    Passport,
}

impl CustomerKey {
    /// The read model's column for the key (a fixed name, never caller input).
    pub(crate) fn column(self) -> &'static str {
        match self {
            CustomerKey::Email => "email",
            CustomerKey::Phone => "phone",
            CustomerKey::Passport => "passport_number",
        }
    }
}

impl ReadModels {
    /// The live (neither deleted nor erased) customers whose `key` is one of `values`, in
    /// one indexed query, oldest first: of several sharing a value, the first is the match.
    pub async fn find_customers_by(
        &self,
        key: CustomerKey,
        values: Vec<String>,
    ) -> Result<Vec<CustomerRow>, ProjectionError> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.store().find_customers_by(key, values).await?)
    }

    /// Up to `limit` customers matching `query` whose id is greater than `after`, by id:
    /// keyset pagination, so an export reads any number of customers one page at a time and
    /// rows created meanwhile neither shift nor repeat a page.
    pub async fn customers_after(
        &self,
        query: &CustomerQuery,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<CustomerRow>, ProjectionError> {
        Ok(self.store().customers_after(query, after, limit).await?)
    }
}
