//! The production backend: schema `crm` in the log's database, through the log's pool.
//!
//! The tables are created here, idempotently, at start-up rather than by a numbered
//! migration: a rebuild must create the very same tables under a shadow name, so the
//! definition has to live in code anyway, and keeping it in one place means the live and the
//! shadow tables can never drift apart.
//!
//! Batches are written with one multi-row `INSERT … SELECT FROM unnest(…) ON CONFLICT`
//! statement per table, so a batch of thousands of rows costs a handful of round trips.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Pool, Transaction};
use egec_commands::store::Backend;
use egec_domain::permission::Visibility;
use futures::{StreamExt, TryStreamExt};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{Applied, Checkpoint, Leadership, ReadStore, Shadow};
use crate::error::StorageError;
use crate::fold::{
    Changes, Rows, Touched, Work, fold_customers, fold_sessions, fold_users, search_needle,
    search_text,
};
use crate::kind::ProjectionKind;
use crate::rows::{
    ApiKeyRow, AuditQuery, AuditRow, CustomerQuery, CustomerRow, FollowupQuery, FollowupRow,
    SessionRow, SessionUser, UserRow,
};

mod analytics;
mod api_keys;
mod audit;
mod followups;
mod lookup;
use api_keys::API_KEYS;
use audit::AUDIT;
use followups::FOLLOWUPS;

/// First key of the two-key advisory locks ("EGEC" in ASCII), shared with the log's module
/// so that everything Egec locks is recognisable in `pg_locks`.
const LOCK_CLASS: i32 = 0x4547_4543;
/// Second key of the lock held while the read-model schema is created.
const SCHEMA_LOCK: i32 = 0x5052_0000;
/// Second keys of the per-projection leader locks are this plus the projection's index.
const LEADER_LOCK_BASE: i32 = 0x5052_0100;

/// The schema of the operational read models (they hold personal data).
const CRM: &str = "crm";
/// The schema analysts read: no personal data (see `docs/analytics.md`).
const ANALYTICS: &str = "analytics";

struct TableDef {
    /// `crm` or `analytics`: the schema decides who may read the table.
    schema: &'static str,
    live: &'static str,
    /// The primary key's columns.
    key: &'static str,
    columns: &'static str,
    /// `(name suffix, index definition after ON <table>)`.
    indexes: &'static [(&'static str, &'static str)],
}

const CUSTOMERS: TableDef = TableDef {
    schema: CRM,
    key: "id",
    live: "customers",
    columns: "id uuid NOT NULL, \
              name text NOT NULL, \
              email text, \
              phone text, \
              passport_number text, \
              country text, \
              source text, \
              status text NOT NULL, \
              notes text, \
              assigned_agent_ids uuid[] NOT NULL, \
              created_at timestamptz NOT NULL, \
              updated_at timestamptz NOT NULL, \
              version bigint NOT NULL, \
              deleted boolean NOT NULL, \
              erased boolean NOT NULL, \
              last_position bigint NOT NULL, \
              search_text text NOT NULL",
    indexes: &[
        ("created_idx", "(created_at DESC, id)"),
        ("status_idx", "(status, created_at DESC, id)"),
        ("agents_idx", "USING gin (assigned_agent_ids)"),
        // Lookups of the import, which matches rows to customers by these fields.
        ("email_idx", "(email)"),
        ("phone_idx", "(phone)"),
        ("passport_idx", "(passport_number)"),
    ],
};

const USERS: TableDef = TableDef {
    schema: CRM,
    key: "id",
    live: "users",
    columns: "id uuid NOT NULL, \
              email text NOT NULL, \
              name text NOT NULL, \
              role text NOT NULL, \
              active boolean NOT NULL, \
              created_at timestamptz NOT NULL, \
              version bigint NOT NULL, \
              last_position bigint NOT NULL, \
              session_version bigint NOT NULL DEFAULT 1, \
              mfa_enabled boolean NOT NULL DEFAULT false, \
              must_change_password boolean NOT NULL DEFAULT false, \
              password_changed_at timestamptz NOT NULL DEFAULT 'epoch'",
    indexes: &[
        ("email_idx", "(email)"),
        ("created_idx", "(created_at, id)"),
    ],
};

/// Sessions ended by a logout, by session id.
const SESSIONS: TableDef = TableDef {
    schema: CRM,
    key: "id",
    live: "sessions",
    columns: "id uuid NOT NULL, \
              user_id uuid NOT NULL, \
              ended_at timestamptz NOT NULL, \
              last_position bigint NOT NULL",
    indexes: &[],
};

fn tables(kind: ProjectionKind) -> &'static [TableDef] {
    match kind {
        ProjectionKind::Customers => &[CUSTOMERS],
        ProjectionKind::Users => &[USERS],
        ProjectionKind::Sessions => &[SESSIONS],
        ProjectionKind::ApiKeys => &[API_KEYS],
        ProjectionKind::Audit => &[AUDIT],
        ProjectionKind::Followups => &[FOLLOWUPS],
        ProjectionKind::Analytics => &analytics::TABLES,
    }
}

fn leader_lock(kind: ProjectionKind) -> i32 {
    let index = ProjectionKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(0);
    LEADER_LOCK_BASE + index as i32
}

/// Rows per multi-row statement when a rebuild writes its in-memory fold.
const WRITE_CHUNK: usize = 10_000;

const CUSTOMER_COLUMNS: &str = "id, name, email, phone, passport_number, country, source, \
     status, notes, assigned_agent_ids, created_at, updated_at, version, deleted, erased, \
     last_position";

const USER_COLUMNS: &str = "id, email, name, role, active, created_at, version, last_position, \
     session_version, mfa_enabled, must_change_password, password_changed_at";

const SESSION_COLUMNS: &str = "id, user_id, ended_at, last_position";

fn create_table_sql(def: &TableDef, name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.{name} ({}, CONSTRAINT {name}_pkey PRIMARY KEY ({}))",
        def.schema, def.columns, def.key
    )
}

/// Name suffix of the trigram index on `customers.search_text`, which exists only where
/// `pg_trgm` could be created (see [`PgReadStore::ensure_trigram`]), so it is kept apart from
/// the fixed `TableDef.indexes`.
const SEARCH_INDEX: &str = "search_idx";

/// One `CREATE INDEX` statement per secondary index of a table, the trigram index (by far
/// the biggest to build) first.
fn index_statements(def: &TableDef, name: &str, trigram: Option<&str>) -> Vec<String> {
    let search = match (trigram, def.live == CUSTOMERS.live) {
        (Some(opclass), true) => Some(format!(
            "CREATE INDEX IF NOT EXISTS {name}_{SEARCH_INDEX} ON crm.{name} \
             USING gin (search_text {opclass});"
        )),
        _ => None,
    };
    search
        .into_iter()
        .chain(def.indexes.iter().map(|(suffix, body)| {
            format!(
                "CREATE INDEX IF NOT EXISTS {name}_{suffix} ON {}.{name} {body};",
                def.schema
            )
        }))
        .collect()
}

fn create_indexes_sql(def: &TableDef, name: &str, trigram: Option<&str>) -> String {
    index_statements(def, name, trigram).concat()
}

/// Writes a rebuild's changes into the shadow tables, in the caller's transaction. Chunks
/// keep each statement's parameter arrays to a sensible size.
async fn write_changes(
    tx: &Transaction<'_>,
    shadow: &Shadow,
    changes: &Changes,
) -> Result<(), StorageError> {
    match changes {
        Changes::Customers(rows) => {
            for chunk in rows.chunks(WRITE_CHUNK) {
                write_customers(tx, &shadow.table(CUSTOMERS.live), false, chunk).await?;
            }
        }
        Changes::Users(rows) => {
            for chunk in rows.chunks(WRITE_CHUNK) {
                write_users(tx, &shadow.table(USERS.live), false, chunk).await?;
            }
        }
        Changes::Sessions(rows) => {
            for chunk in rows.chunks(WRITE_CHUNK) {
                write_sessions(tx, &shadow.table(SESSIONS.live), false, chunk).await?;
            }
        }
        Changes::ApiKeys(rows) => {
            api_keys::write(tx, &shadow.table(API_KEYS.live), false, rows).await?;
        }
        Changes::Audit(rows) => {
            for chunk in rows.chunks(WRITE_CHUNK) {
                audit::write(tx, &shadow.table(AUDIT.live), false, chunk).await?;
            }
        }
        Changes::Followups(rows, erased) => {
            for chunk in rows.chunks(WRITE_CHUNK) {
                followups::write(tx, &shadow.table(FOLLOWUPS.live), false, chunk, &[]).await?;
            }
            followups::write(tx, &shadow.table(FOLLOWUPS.live), false, &[], erased).await?;
        }
        Changes::Analytics(c) => analytics::write(tx, Some(shadow), false, c).await?,
    }
    Ok(())
}

/// Whether the read store tries to index customer search with `pg_trgm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SearchIndex {
    /// Create the extension if possible, else fall back to a scan with one warning.
    Trigram,
    /// Never use it: the scan fallback, forced (tests of that path).
    Scan,
}

/// The PostgreSQL read models.
#[derive(Clone)]
pub(crate) struct PgReadStore {
    /// Interactive queries: live projection batches and reads.
    pool: Pool,
    /// Schema set-up and blue/green rebuilds, which may run past the interactive
    /// statement timeout (see `egec_commands::store::postgres::settings`).
    maintenance: Pool,
    /// The schema-qualified `gin_trgm_ops` operator class when `pg_trgm` is available: the
    /// customers table then carries a trigram index and search queries with `LIKE`, which
    /// the index answers; without it search stays a `strpos` scan with the same results.
    trigram: Option<String>,
}

impl PgReadStore {
    /// Creates schema `crm` and whatever tables are missing.
    pub async fn open(
        pool: Pool,
        maintenance: Pool,
        search: SearchIndex,
    ) -> Result<Self, StorageError> {
        let mut store = Self {
            pool,
            maintenance,
            trigram: None,
        };
        store.trigram = store.ensure_schema(search).await?;
        Ok(store)
    }

    /// Creates `pg_trgm` if it is missing, inside the schema transaction but behind a
    /// savepoint, so that a server without the extension or a role without the privilege
    /// leaves the rest of the set-up intact. Answers the operator class to index with,
    /// qualified by the extension's schema so that it resolves whatever the search path.
    async fn ensure_trigram(tx: &Transaction<'_>) -> Result<Option<String>, StorageError> {
        tx.batch_execute("SAVEPOINT egec_trgm").await?;
        if let Err(e) = tx
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            .await
        {
            tx.batch_execute("ROLLBACK TO SAVEPOINT egec_trgm").await?;
            // The error names only the extension and the privilege, never personal data.
            tracing::warn!(
                error = %e,
                "pg_trgm is unavailable: customer search scans the table instead of using \
                 a trigram index"
            );
            return Ok(None);
        }
        tx.batch_execute("RELEASE SAVEPOINT egec_trgm").await?;
        let schema: String = tx
            .query_one(
                "SELECT quote_ident(n.nspname) FROM pg_extension e \
                 JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'",
                &[],
            )
            .await?
            .try_get(0)?;
        Ok(Some(format!("{schema}.gin_trgm_ops")))
    }

    /// Idempotent, and serialised by an advisory lock so that several processes starting at
    /// once do not race on `CREATE … IF NOT EXISTS` (which is not atomic in PostgreSQL). A
    /// projection with a table missing restarts empty at checkpoint 0.
    async fn ensure_schema(&self, search: SearchIndex) -> Result<Option<String>, StorageError> {
        let mut conn = self.maintenance.get().await?;
        let tx = conn.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[&LOCK_CLASS, &SCHEMA_LOCK],
        )
        .await?;
        // Schema `analytics` comes from migration V3 with its grants; creating it here too
        // only matters for a database migrated without it, where no analyst can read it.
        // The workload view depends on the analytics tables, so it goes first and comes back
        // once they exist.
        // `CREATE SCHEMA IF NOT EXISTS` checks the right to create schemas before it looks
        // for the schema, which a node running as `egec_app` (owner of both schemas, from
        // migration V5, but with no right to create schemas) would fail: look first.
        tx.batch_execute(&format!(
            "DO $$ BEGIN \
               IF to_regnamespace('analytics') IS NULL THEN CREATE SCHEMA analytics; END IF; \
               IF to_regnamespace('crm') IS NULL THEN CREATE SCHEMA crm; END IF; \
             END $$; {}",
            analytics::DROP_VIEW
        ))
        .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS crm.projection_checkpoints (\
                 projection text PRIMARY KEY, \
                 position bigint NOT NULL, \
                 version integer NOT NULL)",
        )
        .await?;
        let trigram = match search {
            SearchIndex::Trigram => Self::ensure_trigram(&tx).await?,
            SearchIndex::Scan => None,
        };
        // Users tables created before sessions existed lack `session_version`. No event
        // before it could move a session version, so the column's default (the first
        // version) gives exactly the rows a rebuild would.
        tx.batch_execute(
            "ALTER TABLE IF EXISTS crm.users \
             ADD COLUMN IF NOT EXISTS session_version bigint NOT NULL DEFAULT 1",
        )
        .await?;
        // Users tables of projection version 1 lack the credential columns: added with
        // defaults so reads work; the version bump rebuilds the rows with the right values.
        tx.batch_execute(
            "ALTER TABLE IF EXISTS crm.users \
             ADD COLUMN IF NOT EXISTS mfa_enabled boolean NOT NULL DEFAULT false, \
             ADD COLUMN IF NOT EXISTS must_change_password boolean NOT NULL DEFAULT false, \
             ADD COLUMN IF NOT EXISTS password_changed_at timestamptz NOT NULL DEFAULT 'epoch'",
        )
        .await?;
        for kind in ProjectionKind::ALL {
            let mut complete = true;
            for def in tables(kind) {
                let exists: bool = tx
                    .query_one(
                        "SELECT to_regclass($1) IS NOT NULL",
                        &[&format!("{}.{}", def.schema, def.live)],
                    )
                    .await?
                    .try_get(0)?;
                complete &= exists;
                for stale in
                    list_tables(&tx, def.schema, &format!("{}_retired_%", def.live)).await?
                {
                    tx.batch_execute(&format!("DROP TABLE IF EXISTS {}.{stale}", def.schema))
                        .await?;
                }
            }
            if !complete {
                for def in tables(kind) {
                    tx.batch_execute(&format!("DROP TABLE IF EXISTS {}.{}", def.schema, def.live))
                        .await?;
                }
            }
            for def in tables(kind) {
                tx.batch_execute(&create_table_sql(def, def.live)).await?;
                tx.batch_execute(&create_indexes_sql(def, def.live, trigram.as_deref()))
                    .await?;
            }
            let reset = if complete {
                "ON CONFLICT (projection) DO NOTHING"
            } else {
                "ON CONFLICT (projection) DO UPDATE SET position = 0, version = EXCLUDED.version"
            };
            tx.execute(
                &format!(
                    "INSERT INTO crm.projection_checkpoints (projection, position, version) \
                     VALUES ($1, 0, $2) {reset}"
                ),
                &[&kind.name(), &kind.version()],
            )
            .await?;
        }
        tx.batch_execute(analytics::CREATE_VIEW).await?;
        tx.batch_execute(&analytics::grant_sql()).await?;
        tx.commit().await?;
        Ok(trigram)
    }
}

/// Tables of a schema whose names match a LIKE pattern (with `_` escaped, so that it
/// matches only itself).
async fn list_tables(
    tx: &Transaction<'_>,
    schema: &str,
    pattern: &str,
) -> Result<Vec<String>, StorageError> {
    let escaped = pattern.replace('_', "\\_");
    let rows = tx
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename LIKE $2",
            &[&schema, &escaped],
        )
        .await?;
    rows.iter()
        .map(|r| r.try_get::<_, String>(0).map_err(StorageError::from))
        .collect()
}

// ---- row mapping ----------------------------------------------------------------------

fn customer_from_row(row: &Row) -> Result<CustomerRow, StorageError> {
    let status: String = row.try_get(7)?;
    Ok(CustomerRow {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        email: row.try_get(2)?,
        phone: row.try_get(3)?,
        passport_number: row.try_get(4)?,
        country: row.try_get(5)?,
        source: row.try_get(6)?,
        status: status
            .parse()
            .map_err(|_| StorageError::Corrupt("crm.customers: unknown status".into()))?,
        notes: row.try_get(8)?,
        assigned_agent_ids: row.try_get(9)?,
        created_at: row.try_get(10)?,
        updated_at: row.try_get(11)?,
        version: row.try_get(12)?,
        deleted: row.try_get(13)?,
        erased: row.try_get(14)?,
        last_position: row.try_get(15)?,
    })
}

fn user_from_row(row: &Row) -> Result<UserRow, StorageError> {
    let role: String = row.try_get(3)?;
    Ok(UserRow {
        id: row.try_get(0)?,
        email: row.try_get(1)?,
        name: row.try_get(2)?,
        role: role
            .parse()
            .map_err(|_| StorageError::Corrupt("crm.users: unknown role".into()))?,
        active: row.try_get(4)?,
        created_at: row.try_get(5)?,
        version: row.try_get(6)?,
        last_position: row.try_get(7)?,
        session_version: row.try_get(8)?,
        mfa_enabled: row.try_get(9)?,
        must_change_password: row.try_get(10)?,
        password_changed_at: row.try_get(11)?,
    })
}

fn session_from_row(row: &Row) -> Result<SessionRow, StorageError> {
    Ok(SessionRow {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        ended_at: row.try_get(2)?,
        last_position: row.try_get(3)?,
    })
}

// ---- batch application ----------------------------------------------------------------

fn table_for(live: &str, shadow: Option<&Shadow>) -> String {
    match shadow {
        Some(s) => s.table(live),
        None => live.to_owned(),
    }
}

/// Prepares a statement of the batch path. Statements on live tables are cached per
/// connection; statements on shadow tables are not, since each rebuild's tables have new
/// names and cached statements for them would only pile up.
async fn prepare(
    tx: &Transaction<'_>,
    sql: &str,
    cached: bool,
) -> Result<tokio_postgres::Statement, StorageError> {
    Ok(if cached {
        tx.prepare_cached(sql).await?
    } else {
        tx.prepare(sql).await?
    })
}

/// The rows of `ids` from one of the batch path's tables (live or shadow), mapped by `map`.
async fn load_by_id<T>(
    tx: &Transaction<'_>,
    columns: &str,
    table: &str,
    ids: &[Uuid],
    cached: bool,
    map: fn(&Row) -> Result<T, StorageError>,
) -> Result<Vec<T>, StorageError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("SELECT {columns} FROM crm.{table} WHERE id = ANY($1)");
    let stmt = prepare(tx, &sql, cached).await?;
    let rows = tx.query(&stmt, &[&ids]).await?;
    rows.iter().map(map).collect()
}

async fn load_customers(
    tx: &Transaction<'_>,
    table: &str,
    ids: &[Uuid],
    cached: bool,
) -> Result<Vec<CustomerRow>, StorageError> {
    load_by_id(tx, CUSTOMER_COLUMNS, table, ids, cached, customer_from_row).await
}

async fn load_users(
    tx: &Transaction<'_>,
    table: &str,
    ids: &[Uuid],
    cached: bool,
) -> Result<Vec<UserRow>, StorageError> {
    load_by_id(tx, USER_COLUMNS, table, ids, cached, user_from_row).await
}

async fn load_sessions(
    tx: &Transaction<'_>,
    table: &str,
    ids: &[Uuid],
    cached: bool,
) -> Result<Vec<SessionRow>, StorageError> {
    load_by_id(tx, SESSION_COLUMNS, table, ids, cached, session_from_row).await
}

/// A uuid list as a PostgreSQL array literal, cast to `uuid[]` in SQL: `unnest` flattens
/// nested arrays, so per-row arrays travel as text.
fn uuid_array_literal(ids: &[Uuid]) -> String {
    let mut s = String::with_capacity(2 + ids.len() * 37);
    s.push('{');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&id.hyphenated().to_string());
    }
    s.push('}');
    s
}

async fn write_customers(
    tx: &Transaction<'_>,
    table: &str,
    cached: bool,
    touched: &[Touched<CustomerRow>],
) -> Result<(), StorageError> {
    if touched.is_empty() {
        return Ok(());
    }
    let n = touched.len();
    let mut id = Vec::with_capacity(n);
    let mut name = Vec::with_capacity(n);
    let mut email = Vec::with_capacity(n);
    let mut phone = Vec::with_capacity(n);
    let mut passport = Vec::with_capacity(n);
    let mut country = Vec::with_capacity(n);
    let mut source = Vec::with_capacity(n);
    let mut status = Vec::with_capacity(n);
    let mut notes = Vec::with_capacity(n);
    let mut agents = Vec::with_capacity(n);
    let mut created: Vec<DateTime<Utc>> = Vec::with_capacity(n);
    let mut updated: Vec<DateTime<Utc>> = Vec::with_capacity(n);
    let mut version = Vec::with_capacity(n);
    let mut deleted = Vec::with_capacity(n);
    let mut erased = Vec::with_capacity(n);
    let mut last = Vec::with_capacity(n);
    let mut search = Vec::with_capacity(n);
    for t in touched {
        let r = &t.row;
        id.push(r.id);
        name.push(r.name.as_str());
        email.push(r.email.as_deref());
        phone.push(r.phone.as_deref());
        passport.push(r.passport_number.as_deref());
        country.push(r.country.as_deref());
        source.push(r.source.as_deref());
        status.push(r.status.as_str());
        notes.push(r.notes.as_deref());
        agents.push(uuid_array_literal(&r.assigned_agent_ids));
        created.push(r.created_at);
        updated.push(r.updated_at);
        version.push(r.version);
        deleted.push(r.deleted);
        erased.push(r.erased);
        last.push(r.last_position);
        search.push(search_text(r));
    }
    let sql = format!(
        "INSERT INTO crm.{table} ({CUSTOMER_COLUMNS}, search_text) \
             SELECT id, name, email, phone, passport_number, country, source, status, notes, \
                    agents::uuid[], created_at, updated_at, version, deleted, erased, \
                    last_position, search_text \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
                         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], \
                         $11::timestamptz[], $12::timestamptz[], $13::int8[], $14::bool[], \
                         $15::bool[], $16::int8[], $17::text[]) \
                  AS u(id, name, email, phone, passport_number, country, source, status, \
                       notes, agents, created_at, updated_at, version, deleted, erased, \
                       last_position, search_text) \
             ON CONFLICT (id) DO UPDATE SET \
               name = EXCLUDED.name, email = EXCLUDED.email, phone = EXCLUDED.phone, \
               passport_number = EXCLUDED.passport_number, country = EXCLUDED.country, \
               source = EXCLUDED.source, status = EXCLUDED.status, notes = EXCLUDED.notes, \
               assigned_agent_ids = EXCLUDED.assigned_agent_ids, \
               created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, \
               version = EXCLUDED.version, deleted = EXCLUDED.deleted, \
               erased = EXCLUDED.erased, last_position = EXCLUDED.last_position, \
               search_text = EXCLUDED.search_text"
    );
    let stmt = prepare(tx, &sql, cached).await?;
    tx.execute(
        &stmt,
        &[
            &id, &name, &email, &phone, &passport, &country, &source, &status, &notes, &agents,
            &created, &updated, &version, &deleted, &erased, &last, &search,
        ],
    )
    .await?;
    Ok(())
}

async fn write_users(
    tx: &Transaction<'_>,
    table: &str,
    cached: bool,
    touched: &[Touched<UserRow>],
) -> Result<(), StorageError> {
    if touched.is_empty() {
        return Ok(());
    }
    let rows = touched.iter().map(|t| &t.row);
    let id: Vec<Uuid> = rows.clone().map(|r| r.id).collect();
    let email: Vec<&str> = rows.clone().map(|r| r.email.as_str()).collect();
    let name: Vec<&str> = rows.clone().map(|r| r.name.as_str()).collect();
    let role: Vec<&str> = rows.clone().map(|r| r.role.as_str()).collect();
    let active: Vec<bool> = rows.clone().map(|r| r.active).collect();
    let created: Vec<DateTime<Utc>> = rows.clone().map(|r| r.created_at).collect();
    let version: Vec<i64> = rows.clone().map(|r| r.version).collect();
    let last: Vec<i64> = rows.clone().map(|r| r.last_position).collect();
    let session_version: Vec<i64> = rows.clone().map(|r| r.session_version).collect();
    let mfa_enabled: Vec<bool> = rows.clone().map(|r| r.mfa_enabled).collect();
    let must_change: Vec<bool> = rows.clone().map(|r| r.must_change_password).collect();
    let changed_at: Vec<DateTime<Utc>> = rows.map(|r| r.password_changed_at).collect();
    let sql = format!(
        "INSERT INTO crm.{table} ({USER_COLUMNS}) \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], \
                                  $5::bool[], $6::timestamptz[], $7::int8[], $8::int8[], \
                                  $9::int8[], $10::bool[], $11::bool[], \
                                  $12::timestamptz[]) \
             ON CONFLICT (id) DO UPDATE SET \
               email = EXCLUDED.email, name = EXCLUDED.name, role = EXCLUDED.role, \
               active = EXCLUDED.active, created_at = EXCLUDED.created_at, \
               version = EXCLUDED.version, last_position = EXCLUDED.last_position, \
               session_version = EXCLUDED.session_version, \
               mfa_enabled = EXCLUDED.mfa_enabled, \
               must_change_password = EXCLUDED.must_change_password, \
               password_changed_at = EXCLUDED.password_changed_at"
    );
    let stmt = prepare(tx, &sql, cached).await?;
    tx.execute(
        &stmt,
        &[
            &id,
            &email,
            &name,
            &role,
            &active,
            &created,
            &version,
            &last,
            &session_version,
            &mfa_enabled,
            &must_change,
            &changed_at,
        ],
    )
    .await?;
    Ok(())
}

async fn write_sessions(
    tx: &Transaction<'_>,
    table: &str,
    cached: bool,
    touched: &[Touched<SessionRow>],
) -> Result<(), StorageError> {
    if touched.is_empty() {
        return Ok(());
    }
    let rows = touched.iter().map(|t| &t.row);
    let id: Vec<Uuid> = rows.clone().map(|r| r.id).collect();
    let user: Vec<Uuid> = rows.clone().map(|r| r.user_id).collect();
    let ended: Vec<DateTime<Utc>> = rows.clone().map(|r| r.ended_at).collect();
    let last: Vec<i64> = rows.map(|r| r.last_position).collect();
    let sql = format!(
        "INSERT INTO crm.{table} ({SESSION_COLUMNS}) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::int8[]) \
             ON CONFLICT (id) DO UPDATE SET \
               user_id = EXCLUDED.user_id, ended_at = EXCLUDED.ended_at, \
               last_position = EXCLUDED.last_position"
    );
    let stmt = prepare(tx, &sql, cached).await?;
    tx.execute(&stmt, &[&id, &user, &ended, &last]).await?;
    Ok(())
}

async fn apply_work(
    tx: &Transaction<'_>,
    shadow: Option<&Shadow>,
    work: &Work,
) -> Result<(), StorageError> {
    let cached = shadow.is_none();
    match work {
        Work::Customers(plan) => {
            let table = table_for(CUSTOMERS.live, shadow);
            let loaded = load_customers(tx, &table, &plan.load, cached).await?;
            let touched = fold_customers(plan, loaded);
            write_customers(tx, &table, cached, &touched).await
        }
        Work::Users(plan) => {
            let table = table_for(USERS.live, shadow);
            let loaded = load_users(tx, &table, &plan.load, cached).await?;
            let touched = fold_users(plan, loaded);
            write_users(tx, &table, cached, &touched).await
        }
        Work::Sessions(plan) => {
            let table = table_for(SESSIONS.live, shadow);
            let loaded = load_sessions(tx, &table, &plan.load, cached).await?;
            let touched = fold_sessions(plan, loaded);
            write_sessions(tx, &table, cached, &touched).await
        }
        Work::ApiKeys(plan) => {
            let table = table_for(API_KEYS.live, shadow);
            let loaded = api_keys::load(tx, &table, &plan.load, cached).await?;
            let touched = crate::fold::fold_api_keys(plan, loaded);
            api_keys::write(tx, &table, cached, &touched).await
        }
        Work::Audit(plan) => {
            let table = table_for(AUDIT.live, shadow);
            let loaded = audit::load(tx, &table, &plan.load, cached).await?;
            let touched = crate::fold::fold_audit(plan, loaded);
            audit::write(tx, &table, cached, &touched).await
        }
        Work::Followups(w) => {
            let table = table_for(FOLLOWUPS.live, shadow);
            let loaded = followups::load(tx, &table, &w.plan.load, cached).await?;
            let touched = crate::fold::fold_followups(&w.plan, loaded);
            followups::write(tx, &table, cached, &touched, &w.erased_customers).await
        }
        Work::Analytics(w) => analytics::apply(tx, shadow, cached, w).await,
    }
}

/// Locks the checkpoint row for the rest of the transaction and answers its position. Every
/// writer of a projection's live tables takes this lock first, so they never deadlock on
/// each other and a swap waits for an apply that already started (and vice versa).
async fn lock_checkpoint(tx: &Transaction<'_>, kind: ProjectionKind) -> Result<i64, StorageError> {
    let stmt = tx
        .prepare_cached(
            "SELECT position FROM crm.projection_checkpoints WHERE projection = $1 FOR UPDATE",
        )
        .await?;
    Ok(match tx.query_opt(&stmt, &[&kind.name()]).await? {
        Some(row) => row.try_get(0)?,
        None => 0,
    })
}

async fn set_checkpoint(
    tx: &Transaction<'_>,
    kind: ProjectionKind,
    to: i64,
) -> Result<(), StorageError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO crm.projection_checkpoints (projection, position, version) \
             VALUES ($1, $2, $3) \
             ON CONFLICT (projection) DO UPDATE \
             SET position = EXCLUDED.position, version = EXCLUDED.version",
        )
        .await?;
    tx.execute(&stmt, &[&kind.name(), &to, &kind.version()])
        .await?;
    Ok(())
}

// ---- queries ----------------------------------------------------------------------------

type Param = Box<dyn ToSql + Sync + Send>;

/// The needle as a `LIKE` pattern matching it anywhere, with the pattern's own characters
/// (`%`, `_` and the escape `\`) escaped so that they match only themselves.
fn like_pattern(needle: &str) -> String {
    let mut out = String::with_capacity(needle.len() + 2);
    out.push('%');
    for c in needle.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

fn customer_filter(q: &CustomerQuery, trigram: bool) -> (String, Vec<Param>) {
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<Param> = Vec::new();
    if !q.include_deleted {
        clauses.push("NOT deleted".into());
    }
    if let Some(s) = q.status {
        args.push(Box::new(s.as_str().to_owned()));
        clauses.push(format!("status = ${}", args.len()));
    }
    if let Some(needle) = q.q.as_deref().and_then(search_needle) {
        if trigram {
            // Both sides are lower-cased already (see `search_text`), so a case-sensitive
            // LIKE keeps today's case-insensitive results, and the trigram index answers it
            // (for needles of fewer than 3 characters the planner scans by itself).
            args.push(Box::new(like_pattern(&needle)));
            clauses.push(format!("search_text LIKE ${} ESCAPE '\\'", args.len()));
        } else {
            args.push(Box::new(needle));
            clauses.push(format!("strpos(search_text, ${}) > 0", args.len()));
        }
    }
    let assigned = match q.visibility {
        Visibility::All => None,
        Visibility::AssignedTo(me) => Some(me),
    };
    for agent in [q.agent_id, assigned].into_iter().flatten() {
        args.push(Box::new(vec![agent.as_uuid()]));
        // `@>` rather than `= ANY`, so the GIN index on the array can answer it.
        clauses.push(format!("assigned_agent_ids @> ${}::uuid[]", args.len()));
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (sql, args)
}

fn refs(args: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

#[async_trait]
impl ReadStore for PgReadStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn checkpoint(&self, kind: ProjectionKind) -> Result<Checkpoint, StorageError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT position, version FROM crm.projection_checkpoints WHERE projection = $1",
            )
            .await?;
        Ok(match conn.query_opt(&stmt, &[&kind.name()]).await? {
            Some(row) => Checkpoint {
                position: row.try_get(0)?,
                version: row.try_get(1)?,
            },
            None => Checkpoint {
                position: 0,
                version: kind.version(),
            },
        })
    }

    async fn apply_live(
        &self,
        kind: ProjectionKind,
        work: Work,
        from: i64,
        to: i64,
    ) -> Result<Applied, StorageError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        let stored = lock_checkpoint(&tx, kind).await?;
        if stored != from {
            tx.rollback().await?;
            return Ok(Applied::Moved(stored));
        }
        apply_work(&tx, None, &work).await?;
        let stmt = tx
            .prepare_cached(
                "UPDATE crm.projection_checkpoints SET position = $2 WHERE projection = $1",
            )
            .await?;
        tx.execute(&stmt, &[&kind.name(), &to]).await?;
        tx.commit().await?;
        Ok(Applied::Done)
    }

    async fn create_shadow(&self, kind: ProjectionKind) -> Result<Shadow, StorageError> {
        let shadow = Shadow::new(kind);
        let mut conn = self.maintenance.get().await?;
        let tx = conn.transaction().await?;
        for def in tables(kind) {
            for stale in list_tables(&tx, def.schema, &format!("{}_rebuild_%", def.live)).await? {
                tx.batch_execute(&format!("DROP TABLE IF EXISTS {}.{stale}", def.schema))
                    .await?;
            }
            tx.batch_execute(&create_table_sql(def, &shadow.table(def.live)))
                .await?;
        }
        tx.commit().await?;
        Ok(shadow)
    }

    async fn apply_shadow(&self, shadow: &Shadow, work: Work) -> Result<(), StorageError> {
        let mut conn = self.maintenance.get().await?;
        let tx = conn.transaction().await?;
        apply_work(&tx, Some(shadow), &work).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn load_shadow(&self, shadow: &Shadow, ids: Vec<Uuid>) -> Result<Rows, StorageError> {
        let mut conn = self.maintenance.get().await?;
        let tx = conn.transaction().await?;
        let rows = match shadow.kind {
            ProjectionKind::Customers => Rows::Customers(
                load_customers(&tx, &shadow.table(CUSTOMERS.live), &ids, false).await?,
            ),
            ProjectionKind::Users => {
                Rows::Users(load_users(&tx, &shadow.table(USERS.live), &ids, false).await?)
            }
            ProjectionKind::Sessions => {
                Rows::Sessions(load_sessions(&tx, &shadow.table(SESSIONS.live), &ids, false).await?)
            }
            ProjectionKind::ApiKeys => {
                Rows::ApiKeys(api_keys::load(&tx, &shadow.table(API_KEYS.live), &ids, false).await?)
            }
            ProjectionKind::Audit => {
                Rows::Audit(audit::load(&tx, &shadow.table(AUDIT.live), &ids, false).await?)
            }
            ProjectionKind::Followups => Rows::Followups(
                followups::load(&tx, &shadow.table(FOLLOWUPS.live), &ids, false).await?,
            ),
            ProjectionKind::Analytics => Rows::Analytics(
                analytics::load_state(&tx, &shadow.table(analytics::STATE.live), &ids, false)
                    .await?,
            ),
        };
        tx.commit().await?;
        Ok(rows)
    }

    async fn write_shadow(&self, shadow: &Shadow, changes: Changes) -> Result<(), StorageError> {
        // Nobody reads the shadow tables until the swap, and a failed rebuild drops them, so
        // the rows may go in through several transactions at once: one per maintenance
        // connection, each keeping a core of PostgreSQL busy.
        let parts = changes.split(self.maintenance.status().max_size);
        futures::future::try_join_all(parts.into_iter().map(|part| async move {
            let mut conn = self.maintenance.get().await?;
            let tx = conn.transaction().await?;
            write_changes(&tx, shadow, &part).await?;
            tx.commit().await?;
            Ok::<_, StorageError>(())
        }))
        .await?;
        Ok(())
    }

    async fn index_shadow(&self, shadow: &Shadow) -> Result<(), StorageError> {
        // Each index is built by its own statement, as many at once as there are maintenance
        // connections (PostgreSQL builds indexes of one table side by side, each on a core).
        // The trigram index comes first in its table's list, so the others are built beside it.
        let statements: Vec<String> = tables(shadow.kind)
            .iter()
            .flat_map(|def| index_statements(def, &shadow.table(def.live), self.trigram.as_deref()))
            .collect();
        let pool = &self.maintenance;
        futures::stream::iter(statements.into_iter().map(|sql| async move {
            let conn = pool.get().await?;
            conn.batch_execute(&sql).await?;
            Ok::<_, StorageError>(())
        }))
        .buffer_unordered(pool.status().max_size.max(1))
        .try_collect::<Vec<()>>()
        .await?;
        let conn = pool.get().await?;
        for def in tables(shadow.kind) {
            // Fresh statistics, so the planner uses the new indexes from the first query.
            conn.batch_execute(&format!(
                "ANALYZE {}.{}",
                def.schema,
                shadow.table(def.live)
            ))
            .await?;
        }
        Ok(())
    }

    async fn swap(&self, shadow: &Shadow, tail: Work, to: i64) -> Result<(), StorageError> {
        let kind = shadow.kind;
        let mut conn = self.maintenance.get().await?;
        let tx = conn.transaction().await?;
        lock_checkpoint(&tx, kind).await?;
        apply_work(&tx, Some(shadow), &tail).await?;
        // A view holds on to the tables it reads: the workload view is dropped with the
        // analytics tables and made again over the new ones.
        if kind == ProjectionKind::Analytics {
            tx.batch_execute(analytics::DROP_VIEW).await?;
        }
        for def in tables(kind) {
            let live = def.live;
            let schema = def.schema;
            let from = shadow.table(live);
            let mut sql = format!(
                "DROP TABLE {schema}.{live}; \
                 ALTER TABLE {schema}.{from} RENAME TO {live}; \
                 ALTER INDEX {schema}.{from}_pkey RENAME TO {live}_pkey;"
            );
            for (suffix, _) in def.indexes {
                sql.push_str(&format!(
                    "ALTER INDEX {schema}.{from}_{suffix} RENAME TO {live}_{suffix};"
                ));
            }
            // The trigram index exists only where `pg_trgm` is available.
            sql.push_str(&format!(
                "ALTER INDEX IF EXISTS {schema}.{from}_{SEARCH_INDEX} \
                 RENAME TO {live}_{SEARCH_INDEX};"
            ));
            tx.batch_execute(&sql).await?;
        }
        if kind == ProjectionKind::Analytics {
            tx.batch_execute(analytics::CREATE_VIEW).await?;
            tx.batch_execute(&analytics::grant_sql()).await?;
        }
        set_checkpoint(&tx, kind, to).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn drop_retired(&self, _shadow: &Shadow) -> Result<(), StorageError> {
        // The swap dropped the old tables in its own transaction: in PostgreSQL that only
        // unlinks their files at commit, so it costs nothing while the live runner waits.
        Ok(())
    }

    async fn discard_shadow(&self, shadow: &Shadow) -> Result<(), StorageError> {
        let conn = self.maintenance.get().await?;
        for def in tables(shadow.kind) {
            conn.batch_execute(&format!(
                "DROP TABLE IF EXISTS {}.{}",
                def.schema,
                shadow.table(def.live)
            ))
            .await?;
        }
        Ok(())
    }

    async fn try_lead(&self, kind: ProjectionKind) -> Result<Option<Leadership>, StorageError> {
        let conn = self.pool.get().await?;
        let got: bool = conn
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&LOCK_CLASS, &leader_lock(kind)],
            )
            .await?
            .try_get(0)?;
        if !got {
            // Not granted, so this connection holds nothing and goes back to the pool.
            return Ok(None);
        }
        // A session lock lives as long as its connection, so the connection leaves the pool
        // for good: it is closed (and the lock released) when the leadership is dropped, and
        // never handed to anyone else while it holds the lock.
        Ok(Some(Leadership::Postgres(Object::take(conn))))
    }

    async fn get_customer(&self, id: Uuid) -> Result<Option<CustomerRow>, StorageError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {CUSTOMER_COLUMNS} FROM crm.customers WHERE id = $1"
            ))
            .await?;
        conn.query_opt(&stmt, &[&id])
            .await?
            .as_ref()
            .map(customer_from_row)
            .transpose()
    }

    async fn list_customers(
        &self,
        query: &CustomerQuery,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<CustomerRow>, u64), StorageError> {
        let (filter, mut args) = customer_filter(query, self.trigram.is_some());
        let mut conn = self.pool.get().await?;
        // One snapshot for the total and the page.
        let tx = conn
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let count = tx
            .prepare_cached(&format!("SELECT count(*) FROM crm.customers {filter}"))
            .await?;
        let total: i64 = tx.query_one(&count, &refs(&args)).await?.try_get(0)?;
        let n = args.len();
        args.push(Box::new(i64::from(limit)));
        args.push(Box::new(i64::try_from(offset).unwrap_or(i64::MAX)));
        let page = tx
            .prepare_cached(&format!(
                "SELECT {CUSTOMER_COLUMNS} FROM crm.customers {filter} \
                 ORDER BY created_at DESC, id LIMIT ${} OFFSET ${}",
                n + 1,
                n + 2
            ))
            .await?;
        let rows = tx.query(&page, &refs(&args)).await?;
        tx.commit().await?;
        let items = rows
            .iter()
            .map(customer_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((items, u64::try_from(total).unwrap_or(0)))
    }

    async fn all_customers(&self) -> Result<Vec<CustomerRow>, StorageError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                &format!("SELECT {CUSTOMER_COLUMNS} FROM crm.customers ORDER BY id"),
                &[],
            )
            .await?;
        rows.iter().map(customer_from_row).collect()
    }

    async fn get_user(&self, id: Uuid) -> Result<Option<UserRow>, StorageError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM crm.users WHERE id = $1"
            ))
            .await?;
        conn.query_opt(&stmt, &[&id])
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn find_user_by_email(&self, email: &str) -> Result<Option<UserRow>, StorageError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM crm.users WHERE email = $1 \
                 ORDER BY created_at, id LIMIT 1"
            ))
            .await?;
        conn.query_opt(&stmt, &[&email])
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn list_users(&self) -> Result<Vec<UserRow>, StorageError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM crm.users ORDER BY created_at, id"
            ))
            .await?;
        let rows = conn.query(&stmt, &[]).await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn count_active_superadmins(&self) -> Result<u32, StorageError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached("SELECT count(*) FROM crm.users WHERE role = 'superadmin' AND active")
            .await?;
        let n: i64 = conn.query_one(&stmt, &[]).await?.try_get(0)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn session_user(
        &self,
        user: Uuid,
        session: Uuid,
    ) -> Result<Option<SessionUser>, StorageError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS}, \
                   EXISTS (SELECT 1 FROM crm.sessions s WHERE s.id = $2 AND s.user_id = $1) \
                 FROM crm.users WHERE id = $1"
            ))
            .await?;
        match conn.query_opt(&stmt, &[&user, &session]).await? {
            None => Ok(None),
            Some(row) => Ok(Some(SessionUser {
                user: user_from_row(&row)?,
                ended: row.try_get(12)?,
            })),
        }
    }

    async fn find_api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRow>, StorageError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {c} FROM crm.api_keys WHERE secret_hash = $1 \
                 UNION ALL \
                 SELECT {c} FROM crm.api_keys WHERE previous_hash = $1 \
                 LIMIT 1",
                c = api_keys::COLUMNS
            ))
            .await?;
        conn.query_opt(&stmt, &[&hash])
            .await?
            .as_ref()
            .map(api_keys::from_row)
            .transpose()
    }

    async fn get_api_key(&self, id: Uuid) -> Result<Option<ApiKeyRow>, StorageError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {} FROM crm.api_keys WHERE id = $1",
                api_keys::COLUMNS
            ))
            .await?;
        conn.query_opt(&stmt, &[&id])
            .await?
            .as_ref()
            .map(api_keys::from_row)
            .transpose()
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>, StorageError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {} FROM crm.api_keys ORDER BY created_at, id",
                api_keys::COLUMNS
            ))
            .await?;
        conn.query(&stmt, &[])
            .await?
            .iter()
            .map(api_keys::from_row)
            .collect()
    }

    async fn list_audit(
        &self,
        query: &AuditQuery,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<AuditRow>, u64), StorageError> {
        let mut conn = self.pool.get().await?;
        audit::list(&mut conn, query, offset, limit).await
    }

    async fn audit_after(
        &self,
        query: &AuditQuery,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StorageError> {
        let conn = self.pool.get().await?;
        audit::after(&conn, query, after, limit).await
    }

    async fn get_followup(&self, id: Uuid) -> Result<Option<FollowupRow>, StorageError> {
        let conn = self.pool.get().await?;
        followups::get(&conn, id).await
    }

    async fn list_followups(
        &self,
        query: &FollowupQuery,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<FollowupRow>, u64), StorageError> {
        let mut conn = self.pool.get().await?;
        followups::list(&mut conn, query, offset, limit).await
    }

    async fn find_customers_by(
        &self,
        key: crate::lookup::CustomerKey,
        values: Vec<String>,
    ) -> Result<Vec<CustomerRow>, StorageError> {
        lookup::find_customers_by(self, key, values).await
    }

    async fn customers_after(
        &self,
        query: &CustomerQuery,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<CustomerRow>, StorageError> {
        lookup::customers_after(self, query, after, limit).await
    }
}
