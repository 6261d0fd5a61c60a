//! The production backend: PostgreSQL through a deadpool connection pool.
//!
//! Everything lives in schema `egec`. An append is one transaction that first locks the
//! counter row `egec.log_head`; that lock serialises appenders across every pool and process
//! on the database, so positions are dense and in commit order, and a reader that sees
//! position `n` has already been able to see every position below it.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use super::plan::{Plan, command_ids, new_key_subjects, now_micros, plan_batch, stream_ids};
use super::{
    AppendOutcome, AppendRequest, Backend, ChainHead, Conflict, EventLog, RawRecordedEvent,
    ReadBound, RecordedEvent, StoreError, WrappedKey,
};

mod assumed;
mod blobs;
#[cfg(test)]
mod cached_plan;
mod keys;
mod log_state;
mod pipeline;
pub mod settings;
mod tls;

use log_state::LogState;
pub use pipeline::PipelineStats;
pub use settings::{PgSettings, QueryClass};
pub use tls::TlsChoice;

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

/// Takes the per-subject advisory lock (see `LOCK_SUBJECT` in `keys.rs`) of every subject whose first
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

/// Where one batch of [`PgLog::append_batch`] stands in this process's chain of appends.
struct Flight<'c> {
    /// The right to plan, held from the batch's start until it is planned, so that the next
    /// batch reads the log after it.
    planning: Option<tokio::sync::MutexGuard<'c, ()>>,
    /// The batch's delta (with the head it leaves if it commits), registered once it is
    /// planned, for the next batch to plan on.
    registered: Option<pipeline::Registered<'c>>,
}

impl<'c> Flight<'c> {
    /// Once planned, a batch is in flight: its delta is registered and the right to plan is
    /// handed on. Answers what the batch signals once it holds the counter row.
    fn planned(
        &mut self,
        chain: &'c pipeline::Chain,
        batch: &[AppendRequest],
        plan: &Plan<'_>,
    ) -> pipeline::LockSignal {
        let r = chain.register(pipeline::Delta::of(batch, plan));
        let signal = r.signal();
        self.registered = Some(r);
        self.planning = None;
        signal
    }
}

#[async_trait]
impl EventLog for PgLog {
    async fn append_batch(
        &self,
        batch: Vec<AppendRequest>,
    ) -> Result<Vec<Result<AppendOutcome, Conflict>>, StoreError> {
        let mut flight = Flight {
            planning: Some(self.chain.start().await),
            registered: None,
        };
        let overlay = self.chain.overlay();
        let conn = self.append.get().await?;
        let result = async {
            if self.chain.plan_ahead() {
                // First without reading the log, if the requests say enough (see `assumed`);
                // then, behind a batch in flight, reading it without the lock (see
                // `pipeline`).
                let mut attempt = assumed::append_assumed(
                    &conn,
                    &batch,
                    &overlay,
                    self.chain.committed_head(),
                    |stream| self.chain.known_version(stream),
                    |plan| flight.planned(&self.chain, &batch, plan),
                )
                .await?;
                if matches!(attempt, pipeline::Speculation::NotTried) && !overlay.is_empty() {
                    attempt = pipeline::append_speculative(&conn, &batch, &overlay, |plan| {
                        flight.planned(&self.chain, &batch, plan)
                    })
                    .await?;
                }
                self.chain.count(&attempt);
                match attempt {
                    pipeline::Speculation::Committed(answers) => return Ok(answers),
                    // Nothing was written: append the ordinary way. A later batch that
                    // planned on this one's delta fails its guard too.
                    pipeline::Speculation::Moved | pipeline::Speculation::Refused => {
                        flight.registered = None;
                        // Planned again, and in flight, like any batch: a batch planned while
                        // this one was unaccounted for would plan on a head it leaves behind.
                        flight.planning = Some(self.chain.start().await);
                    }
                    pipeline::Speculation::NotTried => {}
                }
            }
            append_pipelined(&conn, &batch, |plan| {
                // The ordinary way plans after it took the counter row.
                flight.planned(&self.chain, &batch, plan).locked();
            })
            .await
        }
        .await;
        // Before the delta is dropped, so that a batch planned next sees this one's head and
        // versions either in flight or as committed, never in neither.
        if let (Ok(answers), Some(registered)) = (&result, &flight.registered) {
            self.chain.committed(registered.head(), &batch, answers);
        }
        drop(flight);
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
