//! The production backend: PostgreSQL through a deadpool connection pool.
//!
//! Everything lives in schema `egec`. An append is one transaction that first locks the
//! counter row `egec.log_head`; that lock serialises appenders across every pool and process
//! on the database, so positions are dense and in commit order, and a reader that sees
//! position `n` has already been able to see every position below it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use super::plan::{Plan, command_ids, new_key_subjects, now_micros, plan_batch, stream_ids};
use super::{
    AppendOutcome, AppendRequest, Backend, ChainHead, Conflict, EventLog, KeyTable,
    RawRecordedEvent, ReadBound, RecordedEvent, StoreError, SubjectKeys, WrappedKey,
};

mod blobs;
mod log_state;
mod pipeline;
pub mod settings;

use log_state::LogState;
pub use pipeline::PipelineStats;
pub use settings::{PgSettings, QueryClass};

mod embedded {
    refinery::embed_migrations!("../migrations/postgres");
}

/// First key of the two-key advisory locks this module takes ("EGEC" in ASCII), so they do
/// not collide with locks other software on the same database takes.
const LOCK_CLASS: i32 = 0x4547_4543;
/// Second key of the advisory lock held while migrations run.
const MIGRATION_LOCK: i32 = 1;

const EVENT_COLUMNS: &str = "global_position, stream_id, stream_version, event_id, command_id, \
     event_type, schema_version, payload, metadata, recorded_at, prev_hash, hash";

/// The PostgreSQL event log and key table. Cloning shares the pools.
#[derive(Clone)]
pub struct PgLog {
    /// Interactive queries: reads, key look-ups (see [`settings`]).
    pool: Pool,
    /// Appends (see [`settings`]).
    append: Pool,
    /// Maintenance: migrations, schema set-up, rebuilds (see [`settings`]).
    maintenance: Pool,
    /// This process's appends in flight, for the second one to plan on the first
    /// (see [`pipeline`]).
    chain: Arc<pipeline::Chain>,
}

impl std::fmt::Debug for PgLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLog")
            .field("pool", &self.pool.status())
            .field("append", &self.append.status())
            .field("maintenance", &self.maintenance.status())
            .finish()
    }
}

impl PgLog {
    /// Connects with the default settings and an interactive pool of at most `pool_size`
    /// connections, and brings the schema up to date.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        Self::connect_with(url, &PgSettings::with_pool_size(pool_size)).await
    }

    /// Connects with a pool per query class and brings the schema up to date. TLS (rustls)
    /// is used when the URL asks for `sslmode=require`, `verify-ca` or `verify-full`; see
    /// [`TlsChoice`] for how those modes are honoured.
    pub async fn connect_with(url: &str, settings: &PgSettings) -> Result<Self, StoreError> {
        let (url, tls) = TlsChoice::from_url(url)?;
        let pg_config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
        let build = |class: QueryClass| -> Result<Pool, StoreError> {
            let mut pg_config = pg_config.clone();
            settings.configure(&mut pg_config, class)?;
            let manager_config = ManagerConfig {
                // Fast: a broken connection surfaces as an error on its next use, which the
                // caller sees as a storage error and retries; checking every checkout would
                // cost one round trip per append.
                recycling_method: RecyclingMethod::Fast,
            };
            let manager = match &tls {
                TlsChoice::None => Manager::from_config(pg_config, NoTls, manager_config),
                TlsChoice::Rustls(config) => Manager::from_config(
                    pg_config,
                    tokio_postgres_rustls::MakeRustlsConnect::new((**config).clone()),
                    manager_config,
                ),
            };
            settings.build_pool(manager, class)
        };
        let pool = build(QueryClass::Interactive)?;
        let append = build(QueryClass::Append)?;
        let maintenance = build(QueryClass::Maintenance)?;
        // Fail here, with the whole chain of causes (the pool's own message stops at "error
        // performing tls handshake"), rather than on the first request.
        drop(pool.get().await.map_err(|e| {
            StoreError::Config(format!("cannot connect to PostgreSQL: {}", error_chain(&e)))
        })?);
        let log = Self {
            pool,
            append,
            maintenance,
            chain: Arc::default(),
        };
        log.migrate().await?;
        Ok(log)
    }

    /// How this process's batches planned on a predecessor in flight ended (see
    /// [`pipeline`]).
    pub fn pipeline_stats(&self) -> PipelineStats {
        self.chain.stats()
    }

    /// The interactive connection pool, for read models that live in the same database.
    pub fn pool(&self) -> Pool {
        self.pool.clone()
    }

    /// The append connection pool, for its gauges at `/metrics`.
    pub fn append_pool(&self) -> Pool {
        self.append.clone()
    }

    /// The maintenance connection pool, for schema set-up and rebuilds of the read models.
    pub fn maintenance_pool(&self) -> Pool {
        self.maintenance.clone()
    }

    /// Applies pending migrations. Idempotent; several processes may call it at once, since
    /// a session advisory lock lets only one of them migrate at a time. A database already
    /// up to date is left alone without touching the migration table's DDL, so that a node
    /// running as a role with no right to create tables (`egec_app`) starts on a database
    /// the owner migrated.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.maintenance.get().await?;
        let current = up_to_date(&conn).await.map_err(|e| match &e {
            // A role that may not even read the migration history predates V5's grants.
            StoreError::Postgres(pg)
                if pg.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                needs_owner()
            }
            _ => e,
        })?;
        if current {
            return Ok(());
        }
        conn.execute(
            "SELECT pg_advisory_lock($1, $2)",
            &[&LOCK_CLASS, &MIGRATION_LOCK],
        )
        .await?;
        let client: &mut tokio_postgres::Client = &mut conn;
        let result = embedded::migrations::runner().run_async(client).await;
        let unlocked = conn
            .execute(
                "SELECT pg_advisory_unlock($1, $2)",
                &[&LOCK_CLASS, &MIGRATION_LOCK],
            )
            .await;
        if result.is_err() || unlocked.is_err() {
            // A session lock lives as long as its connection: close this one rather than hand
            // a connection that may still hold the lock back to the pool.
            drop(Object::take(conn));
        }
        result.map_err(|e| match e.kind() {
            refinery::error::Kind::Connection(_, cause)
                if cause
                    .downcast_ref::<tokio_postgres::Error>()
                    .and_then(|e| e.code())
                    == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                needs_owner()
            }
            _ => StoreError::Migration(e),
        })?;
        unlocked?;
        Ok(())
    }
}

fn needs_owner() -> StoreError {
    StoreError::Config(
        "the database needs migrations this role may not apply: run `egec migrate` as the \
         database owner first"
            .into(),
    )
}

/// Whether every embedded migration is already recorded as applied with the same checksum
/// (a read-only check). Anything else, a divergent checksum included, is left to refinery,
/// which applies what is pending and refuses a database whose history differs. A database
/// holding a migration this build does not know is refused here, with a message that says so.
async fn up_to_date(conn: &Object) -> Result<bool, StoreError> {
    let table: bool = conn
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )
        .await?
        .try_get(0)?;
    if !table {
        return Ok(false);
    }
    let applied: HashMap<i64, String> = conn
        .query(
            "SELECT version::bigint, checksum FROM refinery_schema_history",
            &[],
        )
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()?;
    let runner = embedded::migrations::runner();
    let known = runner.get_migrations();
    // A database migrated by a newer build: refinery would refuse it too, but only after
    // trying to create its table, which a role without DDL rights would misreport.
    if let Some(unknown) = applied
        .keys()
        .filter(|v| !known.iter().any(|m| i64::from(m.version()) == **v))
        .max()
    {
        return Err(StoreError::Config(format!(
            "the database was migrated by a newer version of egec (migration V{unknown} is \
             unknown to this build): run that version or a later one"
        )));
    }
    Ok(known
        .iter()
        .all(|m| applied.get(&i64::from(m.version())) == Some(&m.checksum().to_string())))
}

/// How to secure the connection, decided from the URL's `sslmode`.
///
/// tokio-postgres knows only `disable`, `prefer` and `require`, so `verify-ca` and
/// `verify-full` are taken out of the URL here and replaced by `require`. Every mode that
/// asks for TLS verifies the server certificate and its host name with rustls against the
/// Mozilla roots (webpki-roots), or against the PEM file named by `sslrootcert` if given:
/// this is stricter than libpq's `require` and `verify-ca`, on purpose, since an unverified
/// TLS connection protects against nothing but a passive eavesdropper.
pub enum TlsChoice {
    /// No TLS (`sslmode` absent, `disable`, `allow` or `prefer`).
    None,
    /// TLS with this client configuration.
    Rustls(Box<rustls::ClientConfig>),
}

impl TlsChoice {
    /// Splits the TLS options off a connection string (URL or `key=value` form) and returns
    /// the string tokio-postgres will accept together with the TLS choice.
    pub fn from_url(url: &str) -> Result<(String, TlsChoice), StoreError> {
        let (rest, opts) = take_tls_options(url)?;
        let choice = match opts.mode.as_deref() {
            None | Some("disable" | "allow" | "prefer") => TlsChoice::None,
            Some("require" | "verify-ca" | "verify-full") => {
                TlsChoice::Rustls(Box::new(rustls_config(opts.root_cert)?))
            }
            Some(other) => {
                return Err(StoreError::Config(format!(
                    "unsupported sslmode `{other}` (use disable, prefer, require, verify-ca or \
                     verify-full)"
                )));
            }
        };
        Ok((rest, choice))
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct TlsOptions {
    mode: Option<String>,
    root_cert: Option<PathBuf>,
}

/// Removes `sslmode` and `sslrootcert` from the connection string and puts back an `sslmode`
/// tokio-postgres understands.
fn take_tls_options(url: &str) -> Result<(String, TlsOptions), StoreError> {
    let mut opts = TlsOptions::default();
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let (base, params, sep): (&str, Vec<&str>, &str) = if is_url {
        match url.split_once('?') {
            Some((base, query)) => (base, query.split('&').collect(), "&"),
            None => (url, Vec::new(), "&"),
        }
    } else {
        ("", url.split_whitespace().collect(), " ")
    };
    let mut kept: Vec<String> = Vec::new();
    for param in params {
        match param.split_once('=') {
            Some(("sslmode", v)) => opts.mode = Some(percent_decode(v)?),
            Some(("sslrootcert", v)) => opts.root_cert = Some(PathBuf::from(percent_decode(v)?)),
            _ if param.is_empty() => {}
            _ => kept.push(param.to_owned()),
        }
    }
    let pg_mode = match opts.mode.as_deref() {
        None => None,
        Some("disable") => Some("disable"),
        // With no TLS connector, `prefer` and `allow` can only ever connect in clear text.
        Some("allow" | "prefer") => Some("disable"),
        Some(_) => Some("require"),
    };
    if let Some(mode) = pg_mode {
        kept.push(format!("sslmode={mode}"));
    }
    let rest = if is_url {
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join(sep))
        }
    } else {
        kept.join(sep)
    };
    Ok((rest, opts))
}

/// An error and its causes, one after the other. Connection errors carry no secrets (the
/// password is never part of them), so this is safe to log.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn percent_decode(s: &str) -> Result<String, StoreError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| StoreError::Config("bad percent-encoding in the URL".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| StoreError::Config("URL parameter is not UTF-8".into()))
}

fn rustls_config(root_cert: Option<PathBuf>) -> Result<rustls::ClientConfig, StoreError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        // Like libpq: a named root file replaces the default trust store.
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(&path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    StoreError::Config(format!("cannot read sslrootcert {}: {e}", path.display()))
                })?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(StoreError::Config(format!(
                    "sslrootcert {} holds no usable certificate",
                    path.display()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

fn event_from_row(row: &Row) -> Result<RecordedEvent, StoreError> {
    Ok(RecordedEvent {
        global_position: row.try_get(0)?,
        stream_id: row.try_get(1)?,
        stream_version: row.try_get(2)?,
        event_id: row.try_get(3)?,
        command_id: row.try_get(4)?,
        event_type: row.try_get(5)?,
        schema_version: row.try_get(6)?,
        payload: row.try_get(7)?,
        metadata: row.try_get(8)?,
        recorded_at: row.try_get(9)?,
        prev_hash: row.try_get(10)?,
        hash: row.try_get(11)?,
    })
}

/// The columns of [`RawRecordedEvent`], in its order; the metadata is the tenth.
const RAW_EVENT_COLUMNS: [&str; 2] = [
    "global_position, stream_id, stream_version, event_id, command_id, event_type, \
     schema_version, payload, metadata, recorded_at",
    "global_position, stream_id, stream_version, event_id, command_id, event_type, \
     schema_version, payload, '{}'::json, recorded_at",
];

/// A `json` column as the text it is stored as (its binary form is that text), unparsed.
struct JsonText(String);

impl<'a> tokio_postgres::types::FromSql<'a> for JsonText {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(JsonText(std::str::from_utf8(raw)?.to_owned()))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON
    }
}

/// JSON text already serialised, sent as a `json` parameter (whose binary form is the
/// text), so that an event's payload is serialised once for its hash and its insert.
#[derive(Debug)]
struct JsonRef<'a>(&'a str);

impl tokio_postgres::types::ToSql for JsonRef<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON
    }

    tokio_postgres::types::to_sql_checked!();
}

fn raw_event_from_row(row: &Row) -> Result<RawRecordedEvent, StoreError> {
    Ok(RawRecordedEvent {
        global_position: row.try_get(0)?,
        stream_id: row.try_get(1)?,
        stream_version: row.try_get(2)?,
        event_id: row.try_get(3)?,
        command_id: row.try_get(4)?,
        event_type: row.try_get(5)?,
        schema_version: row.try_get(6)?,
        payload: row.try_get::<_, JsonText>(7)?.0,
        metadata: row.try_get::<_, JsonText>(8)?.0,
        recorded_at: row.try_get(9)?,
    })
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl PgLog {
    async fn query_events(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn.prepare_cached(sql).await?;
        let rows = conn.query(&stmt, params).await?;
        rows.iter().map(event_from_row).collect()
    }
}

/// Takes the per-subject advisory lock (see [`LOCK_SUBJECT`]) of every subject whose first
/// key the batch creates, so that the key check that follows cannot race `create` or
/// `destroy`. Only the appender holding the counter row takes several of these locks at once,
/// and `create` and `destroy` each take one, so there is no lock-order cycle.
const LOCK_SUBJECTS: &str =
    "SELECT pg_advisory_xact_lock($1, hashtext(u.s)) FROM unnest($2::text[]) AS u(s)";

/// Inserts the first keys of new subjects in one statement ([`INSERT_KEYS`], prepared by
/// the caller: a statement still being prepared would let the statements queued behind it,
/// COMMIT included, overtake it in the pipeline). A plain INSERT: the key check ran
/// under the subjects' locks, so a duplicate here would be a bug and must fail the batch.
async fn insert_new_keys(
    tx: &ClientWrapper,
    stmt: &tokio_postgres::Statement,
    keys: &[(&str, &WrappedKey)],
) -> Result<u64, tokio_postgres::Error> {
    let k = KeyColumns::of(keys);
    tx.execute(
        stmt,
        &[
            &k.subjects,
            &k.versions,
            &k.kek_ids,
            &k.wrapped,
            &k.fingerprints,
        ],
    )
    .await
}

/// The first keys a batch stores as one array per column, the parameters of the `unnest`
/// key inserts.
struct KeyColumns<'a> {
    subjects: Vec<&'a str>,
    versions: Vec<i32>,
    kek_ids: Vec<&'a str>,
    wrapped: Vec<&'a [u8]>,
    fingerprints: Vec<&'a str>,
}

impl<'a> KeyColumns<'a> {
    fn of(keys: &[(&'a str, &'a WrappedKey)]) -> Self {
        KeyColumns {
            subjects: keys.iter().map(|(s, _)| *s).collect(),
            versions: keys.iter().map(|(_, k)| k.key_version).collect(),
            kek_ids: keys.iter().map(|(_, k)| k.kek_id.as_str()).collect(),
            wrapped: keys.iter().map(|(_, k)| k.wrapped.as_slice()).collect(),
            fingerprints: keys.iter().map(|(_, k)| k.fingerprint.as_str()).collect(),
        }
    }
}

const INSERT_KEYS: &str = "INSERT INTO egec.subject_keys (subject, key_version, kek_id, wrapped, fingerprint) \
     SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::bytea[], $5::text[])";

/// The planned rows of a batch as one array per column, the parameters of the `unnest`
/// inserts.
struct EventColumns<'a> {
    positions: Vec<i64>,
    stream_ids: Vec<&'a str>,
    stream_versions: Vec<i64>,
    event_ids: Vec<Uuid>,
    command_ids: Vec<Uuid>,
    event_types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    payloads: Vec<JsonRef<'a>>,
    metadata: Vec<JsonRef<'a>>,
    prev_hashes: Vec<&'a [u8]>,
    hashes: Vec<&'a [u8]>,
}

impl<'a> EventColumns<'a> {
    fn of(plan: &'a Plan<'a>) -> Self {
        let n = plan.rows.len();
        let mut c = EventColumns {
            positions: Vec::with_capacity(n),
            stream_ids: Vec::with_capacity(n),
            stream_versions: Vec::with_capacity(n),
            event_ids: Vec::with_capacity(n),
            command_ids: Vec::with_capacity(n),
            event_types: Vec::with_capacity(n),
            schema_versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            prev_hashes: Vec::with_capacity(n),
            hashes: Vec::with_capacity(n),
        };
        for row in &plan.rows {
            c.positions.push(row.global_position);
            c.stream_ids.push(row.stream_id);
            c.stream_versions.push(row.stream_version);
            c.event_ids.push(row.event.event_id);
            c.command_ids.push(row.command_id);
            c.event_types.push(row.event.event_type.as_str());
            c.schema_versions.push(row.event.schema_version);
            c.payloads.push(JsonRef(&row.payload));
            c.metadata.push(JsonRef(&row.metadata));
            c.prev_hashes.push(row.prev_hash.as_slice());
            c.hashes.push(row.hash.as_slice());
        }
        c
    }
}

/// One append transaction in two round trips: BEGIN, the counter lock and every read go out
/// together, then the inserts, the counter update and COMMIT. The transaction is opened and
/// closed by hand rather than through `Transaction` so that BEGIN and COMMIT ride along with
/// the other statements; on any error the caller discards the connection, which ends the
/// transaction on the server.
async fn append_pipelined<'a>(
    tx: &ClientWrapper,
    batch: &'a [AppendRequest],
    planned: impl FnOnce(&Plan<'a>),
) -> Result<Vec<Result<AppendOutcome, Conflict>>, StoreError> {
    // Prepared once per connection and cached by deadpool, so later batches send only
    // Bind/Execute. The statements below are pipelined: tokio-postgres sends them all
    // before reading any answer, and PostgreSQL runs them in order, so the whole read
    // phase costs one round trip.
    let lock = tx
        .prepare_cached("SELECT position, hash FROM egec.log_head FOR UPDATE")
        .await?;
    let new_subjects = new_key_subjects(batch);
    let lock_subjects = if new_subjects.is_empty() {
        None
    } else {
        Some(tx.prepare_cached(LOCK_SUBJECTS).await?)
    };

    let ids = command_ids(batch);
    let streams = stream_ids(batch);
    // The lock on the counter row is the serialisation point of all appenders. Every
    // statement after it runs once the lock was granted, so under READ COMMITTED each one
    // sees every append committed before ours. The subject locks come next and the look-up
    // after them, in a statement of its own, so that its key check sees a `create` or
    // `destroy` that committed while we waited for their locks. The look-up is sent right
    // behind the locks, not after their answers: the server runs the statements of a
    // pipeline one after the other, and each takes its own snapshot when it starts.
    let (_, head, _, state) = futures::try_join!(
        async { tx.batch_execute("BEGIN").await.map_err(StoreError::from) },
        async { tx.query_opt(&lock, &[]).await.map_err(StoreError::from) },
        async {
            match &lock_subjects {
                None => Ok(Vec::new()),
                Some(lock_subjects) => tx
                    .query(lock_subjects, &[&LOCK_CLASS, &new_subjects])
                    .await
                    .map_err(StoreError::from),
            }
        },
        LogState::read(tx, &ids, &streams, &new_subjects),
    )?;
    let head = head.ok_or_else(|| StoreError::Corrupt("egec.log_head row is missing".into()))?;
    let head = ChainHead {
        position: head.try_get(0)?,
        hash: head.try_get(1)?,
    };
    let LogState {
        prior,
        versions,
        taken,
    } = state;

    let recorded_at = now_micros();
    let plan = plan_batch(batch, head, &prior, versions, &taken, recorded_at);
    planned(&plan);
    // Every statement of the write phase is prepared before any of it is sent: a statement
    // still waiting for its preparation would let the ones behind it, COMMIT included,
    // overtake it and run outside the transaction.
    let insert_keys_stmt = if plan.keys.is_empty() {
        None
    } else {
        Some(tx.prepare_cached(INSERT_KEYS).await?)
    };

    if !plan.rows.is_empty() {
        let columns = EventColumns::of(&plan);
        let insert = tx
            .prepare_cached(
                "INSERT INTO egec.events (global_position, stream_id, stream_version, \
                 event_id, command_id, event_type, schema_version, payload, metadata, \
                 recorded_at, prev_hash, hash) \
                 SELECT p, s, v, e, c, t, sv, pl, md, $10, ph, h FROM unnest(\
                 $1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::uuid[], \
                 $6::text[], $7::int4[], $8::json[], $9::json[], $11::bytea[], \
                 $12::bytea[]) AS u(p, s, v, e, c, t, sv, pl, md, ph, h)",
            )
            .await?;
        let update = tx
            .prepare_cached("UPDATE egec.log_head SET position = $1, hash = $2")
            .await?;
        // Events, keys and counter in one pipelined round trip.
        let insert_events = async {
            tx.execute(
                &insert,
                &[
                    &columns.positions,
                    &columns.stream_ids,
                    &columns.stream_versions,
                    &columns.event_ids,
                    &columns.command_ids,
                    &columns.event_types,
                    &columns.schema_versions,
                    &columns.payloads,
                    &columns.metadata,
                    &recorded_at,
                    &columns.prev_hashes,
                    &columns.hashes,
                ],
            )
            .await
        };
        let insert_keys = async {
            match &insert_keys_stmt {
                Some(stmt) => insert_new_keys(tx, stmt, &plan.keys).await,
                None => Ok(0),
            }
        };
        let update_head = async {
            tx.execute(&update, &[&plan.new_head.position, &plan.new_head.hash])
                .await
        };
        // Should a statement fail, PostgreSQL turns the COMMIT sent behind it into a
        // rollback, and the error of that statement is what we report.
        futures::try_join!(
            insert_events,
            insert_keys,
            update_head,
            tx.batch_execute("COMMIT")
        )?;
    } else {
        if let Some(stmt) = &insert_keys_stmt {
            insert_new_keys(tx, stmt, &plan.keys).await?;
        }
        tx.batch_execute("COMMIT").await?;
    }
    Ok(plan.answers)
}

#[async_trait]
impl EventLog for PgLog {
    async fn append_batch(
        &self,
        batch: Vec<AppendRequest>,
    ) -> Result<Vec<Result<AppendOutcome, Conflict>>, StoreError> {
        // Held until this batch is planned, so the next one reads the log after it.
        let mut planning = Some(self.chain.start().await);
        let overlay = self.chain.overlay();
        let mut registered = None;
        let conn = self.append.get().await?;
        let result = async {
            if !overlay.is_empty() && self.chain.plan_ahead() {
                let attempt = pipeline::append_speculative(&conn, &batch, &overlay, |plan| {
                    registered = Some(self.chain.register(pipeline::Delta::of(&batch, plan)));
                    planning = None;
                })
                .await?;
                match attempt {
                    pipeline::Speculation::Committed(answers) => {
                        self.chain.count(true);
                        return Ok(answers);
                    }
                    // The log was not where the batches in flight said: append the ordinary
                    // way. A later batch that planned on this one's delta fails its guard too.
                    pipeline::Speculation::Moved => self.chain.count(false),
                    pipeline::Speculation::NothingToWrite => {}
                }
                registered = None;
            }
            append_pipelined(&conn, &batch, |plan| {
                if planning.take().is_some() {
                    registered = Some(self.chain.register(pipeline::Delta::of(&batch, plan)));
                }
            })
            .await
        }
        .await;
        drop(registered);
        match result {
            Ok(answers) => Ok(answers),
            Err(e) => {
                // The transaction may still be open on this connection: close the connection
                // instead of handing it back to the pool, which aborts the transaction.
                drop(Object::take(conn));
                Err(e)
            }
        }
    }

    fn pipeline_depth(&self) -> usize {
        2
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: i64,
        bound: ReadBound,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let base = format!(
            "SELECT {EVENT_COLUMNS} FROM egec.events WHERE stream_id = $1 AND stream_version >= $2"
        );
        let order = "ORDER BY stream_version";
        match bound {
            ReadBound::None => {
                self.query_events(&format!("{base} {order}"), &[&stream_id, &from_version])
                    .await
            }
            ReadBound::Version(v) => {
                self.query_events(
                    &format!("{base} AND stream_version <= $3 {order}"),
                    &[&stream_id, &from_version, &v],
                )
                .await
            }
            ReadBound::Position(p) => {
                self.query_events(
                    &format!("{base} AND global_position <= $3 {order}"),
                    &[&stream_id, &from_version, &p],
                )
                .await
            }
            ReadBound::Time(t) => {
                self.query_events(
                    &format!("{base} AND recorded_at <= $3 {order}"),
                    &[&stream_id, &from_version, &t],
                )
                .await
            }
        }
    }

    async fn read_all(&self, after: i64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.query_events(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM egec.events WHERE global_position > $1 \
                 ORDER BY global_position LIMIT $2"
            ),
            &[&after, &limit_of(limit)],
        )
        .await
    }

    async fn read_all_raw(
        &self,
        after: i64,
        limit: usize,
        metadata: bool,
    ) -> Result<Vec<RawRecordedEvent>, StoreError> {
        let conn = self.pool.get().await?;
        let columns = RAW_EVENT_COLUMNS[usize::from(!metadata)];
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {columns} FROM egec.events WHERE global_position > $1 \
                 ORDER BY global_position LIMIT $2"
            ))
            .await?;
        let rows = conn.query(&stmt, &[&after, &limit_of(limit)]).await?;
        rows.iter().map(raw_event_from_row).collect()
    }

    async fn head(&self) -> Result<ChainHead, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached("SELECT position, hash FROM egec.log_head")
            .await?;
        let row = conn
            .query_opt(&stmt, &[])
            .await?
            .ok_or_else(|| StoreError::Corrupt("egec.log_head row is missing".into()))?;
        Ok(ChainHead {
            position: row.try_get(0)?,
            hash: row.try_get(1)?,
        })
    }

    async fn stream_version(&self, stream_id: &str) -> Result<i64, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached("SELECT max(stream_version) FROM egec.events WHERE stream_id = $1")
            .await?;
        let row = conn.query_one(&stmt, &[&stream_id]).await?;
        let version: Option<i64> = row.try_get(0)?;
        Ok(version.unwrap_or(0))
    }

    fn backend(&self) -> Backend {
        Backend::Postgres
    }
}

fn key_from_row(row: &Row, offset: usize) -> Result<WrappedKey, StoreError> {
    Ok(WrappedKey {
        key_version: row.try_get(offset)?,
        kek_id: row.try_get(offset + 1)?,
        wrapped: row.try_get(offset + 2)?,
        fingerprint: row.try_get(offset + 3)?,
    })
}

/// Reads tombstone and keys in one statement, hence from one snapshot: a concurrent erasure
/// is seen either entirely or not at all. Sent unprepared, so planned on every call: the key
/// table starts empty, and a generic plan cached then scans the whole table on every look-up
/// until autovacuum next analyses it.
const LOAD_SUBJECT: &str = "SELECT EXISTS (SELECT 1 FROM egec.erased_subjects WHERE subject = $1), \
     k.key_version, k.kek_id, k.wrapped, k.fingerprint \
     FROM (SELECT 1) AS one LEFT JOIN egec.subject_keys k ON k.subject = $1 \
     ORDER BY k.key_version";

/// [`LOAD_SUBJECT`] for many subjects at once: one row per key, or one all-NULL key row for a
/// subject without keys, ordered so that each subject's keys come oldest first.
const LOAD_SUBJECTS: &str = "SELECT u.s, \
     EXISTS (SELECT 1 FROM egec.erased_subjects e WHERE e.subject = u.s), \
     k.key_version, k.kek_id, k.wrapped, k.fingerprint \
     FROM (SELECT DISTINCT s FROM unnest($1::text[]) AS x(s)) AS u \
     LEFT JOIN egec.subject_keys k ON k.subject = u.s \
     ORDER BY u.s, k.key_version";

fn subject_keys_from_rows(rows: &[Row]) -> Result<SubjectKeys, StoreError> {
    let Some(first) = rows.first() else {
        return Ok(SubjectKeys::None);
    };
    if first.try_get::<_, bool>(0)? {
        return Ok(SubjectKeys::Erased);
    }
    let mut keys = Vec::with_capacity(rows.len());
    for row in rows {
        // The left join yields one all-NULL key row when the subject has no key.
        if row.try_get::<_, Option<i32>>(1)?.is_some() {
            keys.push(key_from_row(row, 1)?);
        }
    }
    Ok(if keys.is_empty() {
        SubjectKeys::None
    } else {
        SubjectKeys::Active(keys)
    })
}

/// Serialises `create` and `destroy` of one subject. Without it, a create could check for
/// the tombstone before a concurrent destroy commits and insert its key after the destroy
/// deleted the others, leaving a live key beside a tombstone. A hash collision between two
/// subjects only makes them wait for each other.
const LOCK_SUBJECT: &str = "SELECT pg_advisory_xact_lock($1, hashtext($2))";

#[async_trait]
impl KeyTable for PgLog {
    async fn load(&self, subject: &str) -> Result<SubjectKeys, StoreError> {
        let conn = self.pool.get().await?;
        // Planned per call (see [`LOAD_SUBJECT`]).
        let rows = conn
            .query_typed(LOAD_SUBJECT, &[(&subject, Type::TEXT)])
            .await?;
        subject_keys_from_rows(&rows)
    }

    async fn load_many(
        &self,
        subjects: &[String],
    ) -> Result<HashMap<String, SubjectKeys>, StoreError> {
        if subjects.is_empty() {
            return Ok(HashMap::new());
        }
        let conn = self.pool.get().await?;
        // Planned per call (see [`LOAD_SUBJECT`]).
        let rows = conn
            .query_typed(LOAD_SUBJECTS, &[(&subjects, Type::TEXT_ARRAY)])
            .await?;
        let mut out: HashMap<String, SubjectKeys> = HashMap::with_capacity(subjects.len());
        for row in &rows {
            let subject: String = row.try_get(0)?;
            let entry = out.entry(subject).or_insert(SubjectKeys::None);
            if row.try_get::<_, bool>(1)? {
                *entry = SubjectKeys::Erased;
                continue;
            }
            // The left join yields one all-NULL key row when the subject has no key.
            if row.try_get::<_, Option<i32>>(2)?.is_some() {
                let key = key_from_row(row, 2)?;
                match entry {
                    SubjectKeys::Active(keys) => keys.push(key),
                    SubjectKeys::None => *entry = SubjectKeys::Active(vec![key]),
                    SubjectKeys::Erased => {}
                }
            }
        }
        Ok(out)
    }

    async fn create(&self, subject: &str, key: WrappedKey) -> Result<SubjectKeys, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        let lock = tx.prepare_cached(LOCK_SUBJECT).await?;
        let erased_stmt = tx
            .prepare_cached("SELECT 1 FROM egec.erased_subjects WHERE subject = $1")
            .await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO egec.subject_keys (subject, key_version, kek_id, wrapped, \
                 fingerprint) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (subject, key_version) DO NOTHING",
            )
            .await?;
        // The tombstone check must run after the lock was granted, in a statement of its own,
        // so that it sees a destroy that committed while we waited.
        let (_, erased) = futures::try_join!(
            async { tx.execute(&lock, &[&LOCK_CLASS, &subject]).await },
            async { tx.query_opt(&erased_stmt, &[&subject]).await },
        )?;
        if erased.is_some() {
            tx.commit().await?;
            return Ok(SubjectKeys::Erased);
        }
        let (_, rows) = futures::try_join!(
            async {
                tx.execute(
                    &insert,
                    &[
                        &subject,
                        &key.key_version,
                        &key.kek_id,
                        &key.wrapped,
                        &key.fingerprint,
                    ],
                )
                .await
            },
            async {
                tx.query_typed(LOAD_SUBJECT, &[(&subject, Type::TEXT)])
                    .await
            },
        )?;
        let keys = subject_keys_from_rows(&rows)?;
        tx.commit().await?;
        Ok(keys)
    }

    async fn destroy(&self, subject: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        // The same per-subject lock as `create` and as an append that creates the subject's
        // first key: whichever comes second sees what the first one committed, so a key is
        // never left beside a tombstone.
        let lock = tx.prepare_cached(LOCK_SUBJECT).await?;
        let delete = tx
            .prepare_cached(
                "DELETE FROM egec.subject_keys WHERE subject = $1 RETURNING fingerprint",
            )
            .await?;
        let tombstone = tx
            .prepare_cached(
                "INSERT INTO egec.erased_subjects (subject) VALUES ($1) \
                 ON CONFLICT (subject) DO NOTHING",
            )
            .await?;
        let (_, rows, _) = futures::try_join!(
            async { tx.execute(&lock, &[&LOCK_CLASS, &subject]).await },
            async { tx.query(&delete, &[&subject]).await },
            async { tx.execute(&tombstone, &[&subject]).await },
        )?;
        let fingerprints = rows
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await?;
        Ok(fingerprints)
    }

    async fn all_keys(&self) -> Result<Vec<(String, WrappedKey)>, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT subject, key_version, kek_id, wrapped, fingerprint \
                 FROM egec.subject_keys ORDER BY subject, key_version",
            )
            .await?;
        let rows = conn.query(&stmt, &[]).await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, key_from_row(row, 1)?)))
            .collect()
    }

    async fn live_subjects(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.pool.get().await?;
        // `starts_with` rather than LIKE: a prefix holding `%` or `_` must match literally.
        let stmt = conn
            .prepare_cached(
                "SELECT DISTINCT subject FROM egec.subject_keys \
                 WHERE starts_with(subject, $1) ORDER BY subject",
            )
            .await?;
        let rows = conn.query(&stmt, &[&prefix]).await?;
        rows.iter()
            .map(|row| Ok(row.try_get::<_, String>(0)?))
            .collect()
    }

    async fn rewrap(&self, subject: &str, key: WrappedKey) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        let update = conn
            .prepare_cached(
                "UPDATE egec.subject_keys SET kek_id = $3, wrapped = $4 \
                 WHERE subject = $1 AND key_version = $2 AND fingerprint = $5",
            )
            .await?;
        let updated = conn
            .execute(
                &update,
                &[
                    &subject,
                    &key.key_version,
                    &key.kek_id,
                    &key.wrapped,
                    &key.fingerprint,
                ],
            )
            .await?;
        if updated == 0 {
            // Either the subject was erased since the caller listed its key (nothing left to
            // rewrap), or the fingerprint differs, which would mean new key material.
            let stored = conn
                .query_opt(
                    "SELECT 1 FROM egec.subject_keys WHERE subject = $1 AND key_version = $2",
                    &[&subject, &key.key_version],
                )
                .await?;
            if stored.is_some() {
                return Err(StoreError::Corrupt(format!(
                    "rewrap of key version {} would change the key material",
                    key.key_version
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_full_becomes_require_and_turns_tls_on() {
        let (rest, opts) = take_tls_options(
            "postgres://u@db.example.com/egec?sslmode=verify-full&application_name=x",
        )
        .expect("parses");
        assert_eq!(
            rest,
            "postgres://u@db.example.com/egec?application_name=x&sslmode=require"
        );
        assert_eq!(opts.mode.as_deref(), Some("verify-full"));
        let (_, choice) = TlsChoice::from_url("postgres://u@h/egec?sslmode=verify-ca").expect("ok");
        assert!(matches!(choice, TlsChoice::Rustls(_)));
    }

    #[test]
    fn no_sslmode_means_no_tls_and_an_untouched_url() {
        let (rest, choice) = TlsChoice::from_url("postgres://u@h:5432/egec").expect("ok");
        assert_eq!(rest, "postgres://u@h:5432/egec");
        assert!(matches!(choice, TlsChoice::None));
    }

    #[test]
    fn key_value_connection_strings_are_understood() {
        let (rest, opts) =
            take_tls_options("host=h user=u sslmode=verify-full sslrootcert=/tmp/ca.pem")
                .expect("parses");
        assert_eq!(rest, "host=h user=u sslmode=require");
        assert_eq!(opts.root_cert, Some(PathBuf::from("/tmp/ca.pem")));
    }

    #[test]
    fn an_unknown_sslmode_is_refused() {
        assert!(TlsChoice::from_url("postgres://u@h/egec?sslmode=sometimes").is_err());
    }

    #[test]
    fn a_missing_root_certificate_file_is_a_configuration_error() {
        let err = TlsChoice::from_url(
            "postgres://u@h/egec?sslmode=verify-full&sslrootcert=%2Fnonexistent%2Fca.pem",
        )
        .err()
        .expect("must fail");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
