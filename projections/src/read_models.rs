//! The query side the API uses: one handle over whichever backend is open.

use std::path::Path;
use std::sync::Arc;

use egec_commands::store::Backend;
use egec_commands::store::open::Stores;
use egec_domain::values::Email;
use egec_domain::{CustomerId, UserId};

use crate::error::{ProjectionError, StorageError};
use crate::kind::ProjectionKind;
use crate::rows::{
    ApiKeyRow, AuditQuery, AuditRow, CustomerQuery, CustomerRow, SessionUser, UserRow,
};
use crate::store::ReadStore;
use crate::store::postgres::{PgReadStore, SearchIndex};
use crate::store::sqlite::SqliteReadStore;

/// The largest page the list query serves, whatever the caller asks for.
pub const MAX_PER_PAGE: u32 = 500;

/// The read models. Cheap to clone; every clone shares the connections.
#[derive(Clone)]
pub struct ReadModels {
    store: Arc<dyn ReadStore>,
}

impl std::fmt::Debug for ReadModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadModels")
            .field("backend", &self.store.backend())
            .finish()
    }
}

impl ReadModels {
    /// Opens (creating if needed) `<data_dir>/read.db`.
    pub async fn open_sqlite(data_dir: &Path) -> Result<Self, ProjectionError> {
        let dir = data_dir.to_path_buf();
        let store = tokio::task::spawn_blocking(move || SqliteReadStore::open(&dir))
            .await
            .map_err(|e| StorageError::Join(e.to_string()))??;
        Ok(Self {
            store: Arc::new(store),
        })
    }

    /// Uses schema `crm` of the log's database, creating its tables if needed, with one
    /// pool for everything (tests and tools; the server uses [`Self::open`]).
    pub async fn open_postgres(pool: deadpool_postgres::Pool) -> Result<Self, ProjectionError> {
        Self::open_postgres_with(pool.clone(), pool).await
    }

    /// As [`Self::open_postgres`], with schema set-up and rebuilds on the `maintenance` pool
    /// and everything else on `pool`.
    pub async fn open_postgres_with(
        pool: deadpool_postgres::Pool,
        maintenance: deadpool_postgres::Pool,
    ) -> Result<Self, ProjectionError> {
        Ok(Self {
            store: Arc::new(PgReadStore::open(pool, maintenance, SearchIndex::Trigram).await?),
        })
    }

    /// As [`Self::open_postgres`], but never using `pg_trgm`: customer search takes the
    /// fallback a server without the extension takes. For tests of that path.
    #[doc(hidden)]
    pub async fn open_postgres_without_trigram(
        pool: deadpool_postgres::Pool,
    ) -> Result<Self, ProjectionError> {
        Ok(Self {
            store: Arc::new(PgReadStore::open(pool.clone(), pool, SearchIndex::Scan).await?),
        })
    }

    /// Opens the read models beside the opened log: schema `crm` in the same PostgreSQL
    /// database, or `read.db` next to the log's SQLite file in `data_dir`.
    pub async fn open(stores: &Stores, data_dir: &Path) -> Result<Self, ProjectionError> {
        match &stores.postgres {
            Some(pg) => Self::open_postgres_with(pg.pool(), pg.maintenance_pool()).await,
            None => Self::open_sqlite(data_dir).await,
        }
    }

    pub fn backend(&self) -> Backend {
        self.store.backend()
    }

    pub(crate) fn store(&self) -> &Arc<dyn ReadStore> {
        &self.store
    }

    pub async fn get_customer(
        &self,
        id: CustomerId,
    ) -> Result<Option<CustomerRow>, ProjectionError> {
        Ok(self.store.get_customer(id.as_uuid()).await?)
    }

    /// One page (1-based; `per_page` is clamped to 1..=[`MAX_PER_PAGE`]) of the customers
    /// matching `query`, newest first (ties by id), and the total number of matches.
    pub async fn list_customers(
        &self,
        query: &CustomerQuery,
        page: u32,
        per_page: u32,
    ) -> Result<(Vec<CustomerRow>, u64), ProjectionError> {
        let per_page = per_page.clamp(1, MAX_PER_PAGE);
        let offset = u64::from(page.max(1) - 1) * u64::from(per_page);
        Ok(self.store.list_customers(query, offset, per_page).await?)
    }

    /// Every customer row, deleted and erased ones included, ordered by id: for exports,
    /// comparisons after a replay, and tests.
    pub async fn all_customers(&self) -> Result<Vec<CustomerRow>, ProjectionError> {
        Ok(self.store.all_customers().await?)
    }

    pub async fn get_user(&self, id: UserId) -> Result<Option<UserRow>, ProjectionError> {
        Ok(self.store.get_user(id.as_uuid()).await?)
    }

    /// The user with this email (emails are stored normalised, as `Email` normalises them).
    pub async fn find_user_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<UserRow>, ProjectionError> {
        Ok(self.store.find_user_by_email(email.as_str()).await?)
    }

    /// Every user, oldest first.
    pub async fn list_users(&self) -> Result<Vec<UserRow>, ProjectionError> {
        Ok(self.store.list_users().await?)
    }

    /// Active users holding the superadmin role (a fact for the last-superadmin rule).
    pub async fn count_active_superadmins(&self) -> Result<u32, ProjectionError> {
        Ok(self.store.count_active_superadmins().await?)
    }

    /// The user of a session and whether that session was logged out: what authenticating a
    /// request reads, in one query.
    pub async fn session_user(
        &self,
        user: UserId,
        session: uuid::Uuid,
    ) -> Result<Option<SessionUser>, ProjectionError> {
        Ok(self.store.session_user(user.as_uuid(), session).await?)
    }

    /// The API key whose current secret (or, during a rotation's grace period, previous
    /// secret) has this SHA-256, as lower-case hex.
    pub async fn find_api_key_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<ApiKeyRow>, ProjectionError> {
        Ok(self.store.find_api_key_by_hash(hash).await?)
    }

    pub async fn get_api_key(
        &self,
        id: egec_domain::ids::ApiKeyId,
    ) -> Result<Option<ApiKeyRow>, ProjectionError> {
        Ok(self.store.get_api_key(id.as_uuid()).await?)
    }

    /// Every API key, revoked ones included, oldest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>, ProjectionError> {
        Ok(self.store.list_api_keys().await?)
    }

    /// One page (1-based; `per_page` clamped to 1..=[`MAX_PER_PAGE`]) of the audit log,
    /// newest first by log position, and the number of matches.
    pub async fn list_audit(
        &self,
        query: &AuditQuery,
        page: u32,
        per_page: u32,
    ) -> Result<(Vec<AuditRow>, u64), ProjectionError> {
        let per_page = per_page.clamp(1, MAX_PER_PAGE);
        let offset = u64::from(page.max(1) - 1) * u64::from(per_page);
        Ok(self.store.list_audit(query, offset, per_page).await?)
    }

    /// Up to `limit` audit rows after log position `after`, oldest first: walk the whole
    /// log in constant memory (exports).
    pub async fn audit_after(
        &self,
        query: &AuditQuery,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditRow>, ProjectionError> {
        Ok(self.store.audit_after(query, after, limit).await?)
    }

    /// One follow-up, whoever may see it: visibility goes with the customer, which the
    /// caller checks.
    pub async fn get_followup(
        &self,
        id: egec_domain::ids::FollowupId,
    ) -> Result<Option<crate::rows::FollowupRow>, ProjectionError> {
        Ok(self.store.get_followup(id.as_uuid()).await?)
    }

    /// One page (1-based; `per_page` clamped to 1..=[`MAX_PER_PAGE`]) of the follow-ups
    /// matching `query` whose customers the query's visibility allows, soonest due first,
    /// and the total number of matches.
    pub async fn list_followups(
        &self,
        query: &crate::rows::FollowupQuery,
        page: u32,
        per_page: u32,
    ) -> Result<(Vec<crate::rows::FollowupRow>, u64), ProjectionError> {
        let per_page = per_page.clamp(1, MAX_PER_PAGE);
        let offset = u64::from(page.max(1) - 1) * u64::from(per_page);
        Ok(self.store.list_followups(query, offset, per_page).await?)
    }

    /// The stored checkpoint (last applied position) of a projection.
    pub async fn checkpoint(&self, name: &str) -> Result<i64, ProjectionError> {
        let kind = ProjectionKind::from_name(name)
            .ok_or_else(|| ProjectionError::UnknownProjection(name.to_owned()))?;
        Ok(self.store.checkpoint(kind).await?.position)
    }
}
