//! Read-model storage: one contract, two backends. All SQL of the read side lives in the
//! submodules; the runner, the rebuild and the queries above see only [`ReadStore`].

pub(crate) mod postgres;
pub(crate) mod sqlite;

use async_trait::async_trait;
use egec_commands::store::Backend;
use uuid::Uuid;

use crate::error::StorageError;
use crate::fold::{Changes, Rows, Work};
use crate::kind::ProjectionKind;
use crate::lookup::CustomerKey;
use crate::rows::{
    ApiKeyRow, AuditQuery, AuditRow, CustomerQuery, CustomerRow, FollowupQuery, FollowupRow,
    SessionUser, UserRow,
};

/// The stored checkpoint of a projection: the last position applied, and the projection
/// version the live tables were built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub position: i64,
    pub version: i32,
}

/// Outcome of applying a batch to the live tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Rows and checkpoint were committed together.
    Done,
    /// The checkpoint was not where the batch expected it (another process applied, or a
    /// rebuild swapped in); nothing was written. Carries the stored position.
    Moved(i64),
}

/// A set of shadow tables a rebuild fills beside the live ones. The token makes the names
/// unique, so an interrupted rebuild never collides with the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shadow {
    pub kind: ProjectionKind,
    pub token: String,
}

impl Shadow {
    pub fn new(kind: ProjectionKind) -> Self {
        // The millisecond timestamp and 32 random bits of a UUIDv7: unique, and short
        // enough that the longest index name stays well within PostgreSQL's 63 bytes.
        let id = Uuid::now_v7().simple().to_string();
        Self {
            kind,
            token: format!("{}{}", &id[..12], &id[24..]),
        }
    }

    /// The shadow name of a live table.
    pub fn table(&self, live: &str) -> String {
        format!("{live}_rebuild_{}", self.token)
    }

    /// The name a live table is renamed to while the shadow takes its place.
    pub fn retired(&self, live: &str) -> String {
        format!("{live}_retired_{}", self.token)
    }
}

/// Whether this process may apply a projection. Held for as long as the runner applies; on
/// PostgreSQL it owns the connection that holds the session advisory lock.
pub(crate) enum Leadership {
    /// SQLite serves one process; the checkpoint check inside each transaction is enough.
    Local,
    Postgres(deadpool_postgres::ClientWrapper),
}

impl Leadership {
    /// False once the lock's connection is gone, and with it the lock.
    pub fn is_held(&self) -> bool {
        match self {
            Leadership::Local => true,
            Leadership::Postgres(c) => !c.is_closed(),
        }
    }
}

#[async_trait]
pub(crate) trait ReadStore: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// The checkpoint of a projection (position 0 at the current version when none is
    /// stored yet).
    async fn checkpoint(&self, kind: ProjectionKind) -> Result<Checkpoint, StorageError>;

    /// In one transaction: checks that the checkpoint is at `from`, folds the batch over the
    /// rows it touches, writes each changed row once and moves the checkpoint to `to`.
    async fn apply_live(
        &self,
        kind: ProjectionKind,
        work: Work,
        from: i64,
        to: i64,
    ) -> Result<Applied, StorageError>;

    /// Drops shadow tables left by interrupted rebuilds of `kind` and creates fresh, empty
    /// ones (without secondary indexes, which are cheaper to build once at the end).
    async fn create_shadow(&self, kind: ProjectionKind) -> Result<Shadow, StorageError>;

    /// Folds a batch into the shadow tables (no checkpoint: a rebuild that stops half-way is
    /// thrown away and started again).
    async fn apply_shadow(&self, shadow: &Shadow, work: Work) -> Result<(), StorageError>;

    /// Loads rows of the shadow tables by id (ids not found are left out).
    async fn load_shadow(&self, shadow: &Shadow, ids: Vec<Uuid>) -> Result<Rows, StorageError>;

    /// Writes rows folded in memory into the shadow tables, in one transaction. Called only
    /// before [`ProjectionStore::index_shadow`], which builds every index (the search index
    /// included) from the rows written here.
    async fn write_shadow(&self, shadow: &Shadow, changes: Changes) -> Result<(), StorageError>;

    /// Builds the shadow tables' secondary indexes, the search index included. Rows applied
    /// afterwards ([`ProjectionStore::apply_shadow`]) keep them up to date.
    async fn index_shadow(&self, shadow: &Shadow) -> Result<(), StorageError>;

    /// In one transaction: folds the tail into the shadow tables, puts them in place of the
    /// live ones and sets the checkpoint to `to` at the projection's current version.
    async fn swap(&self, shadow: &Shadow, tail: Work, to: i64) -> Result<(), StorageError>;

    /// Drops the tables a swap retired, where that is slow enough to be worth doing after
    /// the live runner was released (SQLite's `secure_delete` rewrites every freed page).
    async fn drop_retired(&self, shadow: &Shadow) -> Result<(), StorageError>;

    /// Drops a shadow that will not be swapped in (a failed rebuild).
    async fn discard_shadow(&self, shadow: &Shadow) -> Result<(), StorageError>;

    /// Takes the lock that lets exactly one process apply `kind`; `None` when another
    /// process holds it.
    async fn try_lead(&self, kind: ProjectionKind) -> Result<Option<Leadership>, StorageError>;

    async fn get_customer(&self, id: Uuid) -> Result<Option<CustomerRow>, StorageError>;
    async fn list_customers(
        &self,
        query: &CustomerQuery,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<CustomerRow>, u64), StorageError>;
    /// Every customer row, deleted and erased ones included, ordered by id.
    async fn all_customers(&self) -> Result<Vec<CustomerRow>, StorageError>;

    async fn get_user(&self, id: Uuid) -> Result<Option<UserRow>, StorageError>;
    async fn find_user_by_email(&self, email: &str) -> Result<Option<UserRow>, StorageError>;
    /// Every user, oldest first.
    async fn list_users(&self) -> Result<Vec<UserRow>, StorageError>;
    /// Active users holding the superadmin role.
    async fn count_active_superadmins(&self) -> Result<u32, StorageError>;

    /// The user and whether this session of theirs was logged out, in one query.
    async fn session_user(
        &self,
        user: Uuid,
        session: Uuid,
    ) -> Result<Option<SessionUser>, StorageError>;

    /// The API key whose current secret, or previous secret during a rotation's grace
    /// period, has this SHA-256 (hex).
    async fn find_api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRow>, StorageError>;
    async fn get_api_key(&self, id: Uuid) -> Result<Option<ApiKeyRow>, StorageError>;
    /// Every API key, revoked ones included, oldest first.
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>, StorageError>;

    /// A page of the audit log, newest first (by log position), and the number of matches.
    async fn list_audit(
        &self,
        query: &AuditQuery,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<AuditRow>, u64), StorageError>;
    /// Up to `limit` audit rows after a log position, oldest first (keyset pagination).
    async fn audit_after(
        &self,
        query: &AuditQuery,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StorageError>;

    async fn get_followup(&self, id: Uuid) -> Result<Option<FollowupRow>, StorageError>;
    /// A page of the follow-ups matching the query whose customers it may see, soonest due
    /// first (ties by id), and the number of matches.
    async fn list_followups(
        &self,
        query: &FollowupQuery,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<FollowupRow>, u64), StorageError>;
    /// The live customers whose `key` column is one of `values` (oldest first), by index.
    async fn find_customers_by(
        &self,
        key: CustomerKey,
        values: Vec<String>,
    ) -> Result<Vec<CustomerRow>, StorageError>;
    /// Up to `limit` customers matching `query` with an id above `after`, ordered by id.
    async fn customers_after(
        &self,
        query: &CustomerQuery,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<CustomerRow>, StorageError>;
}
