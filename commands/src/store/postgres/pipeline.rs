//! Two append transactions in flight at once.
//!
//! An append holds the counter row from its first statement to its commit, and everything it
//! does in between (reading what the log holds about the batch, planning positions and hashes
//! in the client, two round trips, the inserts, the flush of the commit) is serial across all
//! appenders. Most of that need not be: while batch A is committing, this process already
//! knows what A will leave behind if it commits (its [`Delta`]), so batch B can read the log
//! without the lock, lay A's delta over what it read, and plan on the head A will leave.
//! B then sends its whole write phase in one pipeline, once A holds the counter row (so that
//! B's request for the row cannot reach the server first and find the head where A has not
//! yet moved it):
//!
//! 1. `SELECT … FROM egec.log_head FOR UPDATE`, which waits for A's commit;
//! 2. the advisory locks of the subjects whose first key B stores (after the counter row, the
//!    same order as every other appender, so no lock cycle is possible);
//! 3. one guarded statement that inserts the keys, moves the counter and inserts the events
//!    only if the counter still holds the head B planned on and none of B's new subjects
//!    has a tombstone. It takes its snapshot after 1 and 2 were granted, so it sees A's
//!    commit and any subject erased meanwhile; a first key stored meanwhile makes its key
//!    insert fail on the key table's primary key, which rolls B back;
//! 4. `COMMIT`.
//!
//! If A failed, or another process appended between A's commit and B's lock, the guard finds
//! another head, B writes nothing, and B is appended again the ordinary way (lock first, then
//! read); the next few batches then do not plan ahead, since another process appending all
//! the time would make that a wasted round trip nearly every time. Every append still takes
//! the counter row before it writes, so positions stay dense and in commit order; planning
//! ahead only moves B's reads and planning out of the serial section.
//!
//! A batch whose requests say where their streams are needs no read at all: it is planned on
//! those versions and written by the same guarded statement, which then also checks them
//! (see [`super::assumed`]). That is tried first, for every batch, also when none is in
//! flight; the read without the lock is for batches it cannot plan.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use deadpool_postgres::ClientWrapper;
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use super::assumed::Assumptions;
use super::{EventColumns, KeyColumns, LOCK_CLASS, LOCK_SUBJECTS, LogState};
use crate::store::plan::{Plan, command_ids, new_key_subjects, now_micros, plan_batch, stream_ids};
use crate::store::{AppendOutcome, AppendRequest, ChainHead, Conflict, StoreError};

/// What a batch in flight leaves in the log if it commits.
pub(super) struct Delta {
    head: ChainHead,
    /// Each stream it writes, with the version it leaves the stream at.
    versions: HashMap<String, i64>,
    /// Each command it appends, with its outcome.
    commands: HashMap<Uuid, AppendOutcome>,
    /// Each subject whose first key it stores.
    subjects: HashSet<String>,
}

impl Delta {
    pub(super) fn of(batch: &[AppendRequest], plan: &Plan<'_>) -> Delta {
        let mut delta = Delta {
            head: plan.new_head.clone(),
            versions: HashMap::new(),
            commands: HashMap::new(),
            subjects: plan.keys.iter().map(|(s, _)| (*s).to_owned()).collect(),
        };
        for (req, answer) in batch.iter().zip(&plan.answers) {
            // Duplicates are in the log already, and a request without events is remembered
            // nowhere: only appended events change what a later batch reads.
            if let Ok(outcome) = answer
                && !outcome.duplicate
                && !req.events.is_empty()
            {
                delta
                    .versions
                    .insert(req.stream_id.clone(), outcome.stream_version);
                delta.commands.insert(req.command_id, outcome.clone());
            }
        }
        delta
    }
}

/// The deltas of this process's batches in flight, oldest first, as a later batch saw them
/// before reading the log.
#[derive(Default)]
pub(super) struct Overlay {
    deltas: Vec<Arc<Delta>>,
    /// Turns true once the newest of them holds the counter row.
    predecessor: Option<watch::Receiver<bool>>,
}

impl Overlay {
    pub(super) fn is_empty(&self) -> bool {
        self.deltas.is_empty()
    }

    /// Waits until the newest batch in flight holds the counter row (or has ended).
    async fn predecessor_locked(&self) {
        if let Some(mut locked) = self.predecessor.clone() {
            // An error means the batch is gone, which is as good.
            let _ = locked.wait_for(|l| *l).await;
        }
    }

    /// The version the batches in flight leave `stream` at, if one of them writes it.
    pub(super) fn version_of(&self, stream: &str) -> Option<i64> {
        self.deltas
            .iter()
            .rev()
            .find_map(|delta| delta.versions.get(stream).copied())
    }

    /// Lays the deltas over what was read, oldest first, and answers the head they leave.
    pub(super) fn apply(&self, state: &mut LogState) -> Option<ChainHead> {
        for delta in &self.deltas {
            for (stream, version) in &delta.versions {
                state.versions.insert(stream.clone(), *version);
            }
            for (id, outcome) in &delta.commands {
                state.prior.insert(
                    *id,
                    AppendOutcome {
                        duplicate: true,
                        ..outcome.clone()
                    },
                );
            }
            state.taken.extend(delta.subjects.iter().cloned());
        }
        self.deltas.last().map(|d| d.head.clone())
    }
}

/// After a batch found the log moved, this many of the following batches are appended the
/// ordinary way before planning ahead is tried again. With another process appending all
/// the time, a batch planned ahead nearly always loses the counter row to it and then costs
/// a wasted round trip; a process that appends alone almost never finds the log moved.
const PAUSE_AFTER_MOVED: u32 = 16;

/// The batches of one process that are planned and not yet finished.
#[derive(Default)]
pub(super) struct Chain {
    /// Held from a batch's start until its delta is registered, so that each batch reads the
    /// log after its predecessor planned and lays exactly the predecessors' deltas over it.
    planning: tokio::sync::Mutex<()>,
    inflight: parking_lot::Mutex<VecDeque<InFlight>>,
    tickets: AtomicU64,
    committed: AtomicU64,
    retried: AtomicU64,
    /// Batches still to append the ordinary way (see [`PAUSE_AFTER_MOVED`]).
    paused: AtomicU32,
    /// The head of the chain after this process's latest committed append: what a batch
    /// with no predecessor in flight plans on (see [`super::assumed`]). Only ever moves
    /// forward; stale once another process appends, which the guarded write detects.
    committed_head: parking_lot::Mutex<Option<ChainHead>>,
    /// The version this process's answers last put each stream at (a lower bound of the
    /// stream's version: streams only grow), so that a request decided on an older version
    /// is answered as a conflict in the plan rather than making the guarded write fail.
    /// Forgotten whole at [`KNOWN_STREAMS`] entries.
    known: parking_lot::Mutex<HashMap<String, i64>>,
}

/// How many streams' versions [`Chain`] remembers before it forgets them all. A forgotten
/// stream costs nothing but a possibly refused batch.
const KNOWN_STREAMS: usize = 65_536;

/// A batch of this process that is planned and not yet finished.
struct InFlight {
    ticket: u64,
    delta: Arc<Delta>,
    /// Turns true once the batch holds the counter row (or has ended).
    locked: Arc<watch::Sender<bool>>,
}

/// Tells the batch planned next that this one holds the counter row. A batch planned on a
/// predecessor's delta sends nothing before then: its request for the row could otherwise
/// reach the server first, find the head where the predecessor has not yet moved it, and be
/// sent round again for nothing.
pub(super) struct LockSignal(Arc<watch::Sender<bool>>);

impl LockSignal {
    pub(super) fn locked(&self) {
        self.0.send_replace(true);
    }
}

/// How the batches planned without the ordinary locked read (on a predecessor in flight, or
/// on their own requests) ended, since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Written by the guarded statement.
    pub committed: u64,
    /// Found the log elsewhere than planned, wrote nothing, and were appended the ordinary
    /// way.
    pub retried: u64,
}

impl Chain {
    pub(super) async fn start(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.planning.lock().await
    }

    /// Counts how a batch planned ahead ended. Only a log moved by another append pauses
    /// planning ahead: a refused assumption is about the batch's own requests.
    pub(super) fn count(&self, ended: &Speculation) {
        let (counter, outcome) = match ended {
            Speculation::Committed(_) => (&self.committed, "committed"),
            Speculation::Moved | Speculation::Refused => (&self.retried, "retried"),
            Speculation::NotTried => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if matches!(ended, Speculation::Moved) {
            self.paused.store(PAUSE_AFTER_MOVED, Ordering::Relaxed);
        }
        metrics::counter!("egec_append_pipelined_total", "outcome" => outcome).increment(1);
    }

    /// Whether a batch with a predecessor in flight should be planned on it, or appended the
    /// ordinary way because planning ahead failed recently.
    pub(super) fn plan_ahead(&self) -> bool {
        self.paused
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_sub(1))
            .is_err()
    }

    /// Records what a committed batch of this process left: the head it moved the chain to
    /// (see [`Registered::head`]) and the versions its answers put its streams at.
    pub(super) fn committed(
        &self,
        head: &ChainHead,
        batch: &[AppendRequest],
        answers: &[Result<AppendOutcome, Conflict>],
    ) {
        {
            let mut latest = self.committed_head.lock();
            if latest.as_ref().is_none_or(|l| l.position < head.position) {
                *latest = Some(head.clone());
            }
        }
        let mut known = self.known.lock();
        if known.len() >= KNOWN_STREAMS {
            known.clear();
        }
        for (req, answer) in batch.iter().zip(answers) {
            let version = match answer {
                Ok(outcome) if !outcome.duplicate && !req.events.is_empty() => {
                    outcome.stream_version
                }
                // A conflict reports the version the stream was at when the batch committed.
                Err(conflict) => conflict.actual,
                Ok(_) => continue,
            };
            let entry = known.entry(req.stream_id.clone()).or_insert(version);
            *entry = (*entry).max(version);
        }
    }

    /// The version this process last saw `stream` at, if it remembers one.
    pub(super) fn known_version(&self, stream: &str) -> Option<i64> {
        self.known.lock().get(stream).copied()
    }

    pub(super) fn committed_head(&self) -> Option<ChainHead> {
        self.committed_head.lock().clone()
    }

    pub(super) fn stats(&self) -> PipelineStats {
        PipelineStats {
            committed: self.committed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
        }
    }

    /// The deltas of the batches in flight. A batch's answer can reach its task after its
    /// successor's, so a delta may still be registered when a later batch has committed and
    /// recorded its head: such a delta is left out, since the committed head and versions
    /// are newer than what it says.
    pub(super) fn overlay(&self) -> Overlay {
        let committed = self.committed_head.lock().as_ref().map(|h| h.position);
        let inflight = self.inflight.lock();
        let live: Vec<&InFlight> = inflight
            .iter()
            .filter(|f| committed.is_none_or(|c| f.delta.head.position > c))
            .collect();
        Overlay {
            deltas: live.iter().map(|f| Arc::clone(&f.delta)).collect(),
            predecessor: live.last().map(|f| f.locked.subscribe()),
        }
    }

    /// Registers a planned batch; its delta is dropped with the returned guard, however the
    /// batch ends.
    pub(super) fn register(&self, delta: Delta) -> Registered<'_> {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let locked = Arc::new(watch::channel(false).0);
        let delta = Arc::new(delta);
        self.inflight.lock().push_back(InFlight {
            ticket,
            delta: Arc::clone(&delta),
            locked: Arc::clone(&locked),
        });
        Registered {
            chain: self,
            ticket,
            delta,
            locked,
        }
    }
}

pub(super) struct Registered<'a> {
    chain: &'a Chain,
    ticket: u64,
    delta: Arc<Delta>,
    locked: Arc<watch::Sender<bool>>,
}

impl Registered<'_> {
    /// The head the batch leaves if it commits.
    pub(super) fn head(&self) -> &ChainHead {
        &self.delta.head
    }

    /// What the batch signals once it holds the counter row.
    pub(super) fn signal(&self) -> LockSignal {
        LockSignal(Arc::clone(&self.locked))
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.chain
            .inflight
            .lock()
            .retain(|f| f.ticket != self.ticket);
        // However it ended, it no longer stands in its successor's way.
        self.locked.send_replace(true);
    }
}

/// The guarded write of step 3 (see the module comment). Prepared once per connection, so
/// it must stay cheap under any plan, whatever the tables' statistics were when it was
/// planned: the tombstone check reads a table that only erasures fill, and a subject that got
/// its first key meanwhile is caught by the key table's primary key (the insert fails, the
/// transaction rolls back, see [`write_guarded`]) rather than by a look-up.
///
/// The last three conditions check what a batch planned without reading the log assumed
/// (see [`super::assumed`]): no command id of its rows is in the log (`$22`); each stream
/// holds at least the version the batch planned on (`$23`, `$24`; streams planned at version
/// 0 are not listed); and a stream the batch writes nothing to holds no more (`$25`, `$26`:
/// the version after it must not exist; for a stream it writes, its first row's insert
/// fails on the unique index instead). Each is a probe of one index per entry, a lateral
/// subquery with `LIMIT 1`, which no plan can turn into a hash or a scan of a whole table; a
/// batch planned on a look-up passes them empty. The stream check was once an anti-join
/// (`WHERE NOT EXISTS (SELECT … WHERE e.stream_id = b.s …)`), which PostgreSQL planned as a
/// materialised scan of the whole stream index when the log had been analysed with one row
/// in it, and kept as the log grew (see `cached_plan::Start`).
///
/// It answers how many events it inserted and whether the head was the one planned on, which
/// tells a log moved by another append from a refused assumption.
const GUARDED_WRITE: &str = "WITH ok AS (\
       SELECT 1 FROM egec.log_head WHERE position = $13 AND hash = $14 \
       AND NOT EXISTS (SELECT 1 FROM egec.erased_subjects e WHERE e.subject = ANY($15)) \
       AND NOT EXISTS (SELECT 1 FROM unnest($22::uuid[]) AS n(c) CROSS JOIN LATERAL (\
         SELECT 1 FROM egec.events e WHERE e.command_id = n.c LIMIT 1) AS seen) \
       AND NOT EXISTS (SELECT 1 FROM unnest($23::text[], $24::int8[]) AS b(s, v) \
         LEFT JOIN LATERAL (SELECT true AS held FROM egec.events e \
           WHERE e.stream_id = b.s AND e.stream_version = b.v LIMIT 1) AS reached ON true \
         WHERE reached.held IS NULL) \
       AND NOT EXISTS (SELECT 1 FROM unnest($25::text[], $26::int8[]) AS f(s, v) \
         CROSS JOIN LATERAL (SELECT 1 FROM egec.events e \
           WHERE e.stream_id = f.s AND e.stream_version = f.v LIMIT 1) AS further)), \
     new_keys AS (INSERT INTO egec.subject_keys (subject, key_version, kek_id, wrapped, \
       fingerprint) SELECT * FROM unnest($15::text[], $16::int4[], $17::text[], \
       $18::bytea[], $19::text[]) WHERE EXISTS (SELECT 1 FROM ok)), \
     new_head AS (UPDATE egec.log_head SET position = $20, hash = $21 \
       WHERE EXISTS (SELECT 1 FROM ok)), \
     appended AS (INSERT INTO egec.events (global_position, stream_id, stream_version, \
       event_id, command_id, event_type, schema_version, payload, metadata, recorded_at, \
       prev_hash, hash) \
       SELECT p, s, v, e, c, t, sv, pl, md, $10, ph, h FROM unnest($1::bigint[], \
       $2::text[], $3::bigint[], $4::uuid[], $5::uuid[], $6::text[], $7::int4[], \
       $8::json[], $9::json[], $11::bytea[], $12::bytea[]) AS u(p, s, v, e, c, t, sv, pl, \
       md, ph, h) WHERE EXISTS (SELECT 1 FROM ok) RETURNING 1) \
     SELECT (SELECT count(*) FROM appended), \
       EXISTS (SELECT 1 FROM egec.log_head WHERE position = $13 AND hash = $14)";

/// The parameter types of [`GUARDED_WRITE`], in order.
const GUARDED_TYPES: [Type; 26] = [
    Type::INT8_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT8_ARRAY,
    Type::UUID_ARRAY,
    Type::UUID_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT4_ARRAY,
    Type::JSON_ARRAY,
    Type::JSON_ARRAY,
    Type::TIMESTAMPTZ,
    Type::BYTEA_ARRAY,
    Type::BYTEA_ARRAY,
    Type::INT8,
    Type::BYTEA,
    Type::TEXT_ARRAY,
    Type::INT4_ARRAY,
    Type::TEXT_ARRAY,
    Type::BYTEA_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT8,
    Type::BYTEA,
    Type::UUID_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT8_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT8_ARRAY,
];

/// How a batch planned on its predecessors, or on its own requests, ended.
pub(super) enum Speculation {
    /// Appended; the answers of its requests.
    Committed(Vec<Result<AppendOutcome, Conflict>>),
    /// The log was not where the batch was planned on: another append came between, so
    /// nothing was written.
    Moved,
    /// The head was where the batch was planned on, but something else it took for granted
    /// was not so (a stream further on, a repeated command, a subject's key stored or
    /// erased meanwhile): nothing was written.
    Refused,
    /// Nothing was tried: the batch has no events to insert (only duplicates, conflicts or
    /// empty requests), or it cannot be planned this way.
    NotTried,
}

/// Appends `batch` on the head that the batches in `overlay` leave. Unless it answers
/// [`Speculation::Committed`], nothing was written and the caller appends the batch the
/// ordinary way.
pub(super) async fn append_speculative<'a>(
    conn: &ClientWrapper,
    batch: &'a [AppendRequest],
    overlay: &Overlay,
    planned: impl FnOnce(&Plan<'a>) -> LockSignal,
) -> Result<Speculation, StoreError> {
    let ids = command_ids(batch);
    let streams = stream_ids(batch);
    let subjects = new_key_subjects(batch);
    // Read without any lock: the predecessor holds the counter row, so nobody else's
    // append can commit before it, and its own rows come from the overlay.
    let mut state = LogState::read(conn, &ids, &streams, &subjects).await?;
    let Some(head) = overlay.apply(&mut state) else {
        return Ok(Speculation::NotTried);
    };
    // What the batch read needs no checking beyond the head.
    plan_and_write(conn, batch, state, head, overlay, planned, |_| {
        Assumptions::default()
    })
    .await
}

/// Plans `batch` on `state` and `head` and, if it has rows to insert, registers it through
/// `planned` and writes it guarded by what `assumed` says the plan took for granted.
pub(super) async fn plan_and_write<'a, 'b>(
    conn: &ClientWrapper,
    batch: &'a [AppendRequest],
    state: LogState,
    head: ChainHead,
    overlay: &Overlay,
    planned: impl FnOnce(&Plan<'a>) -> LockSignal,
    assumed: impl FnOnce(&Plan<'a>) -> Assumptions<'b>,
) -> Result<Speculation, StoreError> {
    let plan = plan_batch(
        batch,
        head.clone(),
        &state.prior,
        state.versions,
        &state.taken,
        now_micros(),
    );
    if plan.rows.is_empty() {
        return Ok(Speculation::NotTried);
    }
    let signal = planned(&plan);
    let assumed = assumed(&plan);
    write_guarded(conn, plan, &head, &assumed, overlay, &signal).await
}

/// Writes a planned batch in one pipeline (step 3 of the module comment) if the log is still
/// at `head` and every one of `assumed` holds; otherwise writes nothing. Sends nothing until
/// the newest batch of `overlay` holds the counter row, and tells `signal` once this batch
/// holds it.
async fn write_guarded(
    conn: &ClientWrapper,
    plan: Plan<'_>,
    head: &ChainHead,
    assumed: &Assumptions<'_>,
    overlay: &Overlay,
    signal: &LockSignal,
) -> Result<Speculation, StoreError> {
    let lock_head = conn
        .prepare_cached("SELECT 1 FROM egec.log_head FOR UPDATE")
        .await?;
    let k = KeyColumns::of(&plan.keys);
    let lock_subjects = if k.subjects.is_empty() {
        None
    } else {
        Some(conn.prepare_cached(LOCK_SUBJECTS).await?)
    };
    let c = EventColumns::of(&plan);
    let recorded_at = plan.recorded_at;
    let params: [&(dyn ToSql + Sync); 26] = [
        &c.positions,
        &c.stream_ids,
        &c.stream_versions,
        &c.event_ids,
        &c.command_ids,
        &c.event_types,
        &c.schema_versions,
        &c.payloads,
        &c.metadata,
        &recorded_at,
        &c.prev_hashes,
        &c.hashes,
        &head.position,
        &head.hash,
        &k.subjects,
        &k.versions,
        &k.kek_ids,
        &k.wrapped,
        &k.fingerprints,
        &plan.new_head.position,
        &plan.new_head.hash,
        &assumed.new_commands,
        &assumed.streams,
        &assumed.versions,
        &assumed.unwritten,
        &assumed.next_versions,
    ];
    let guarded = conn
        .prepare_typed_cached(GUARDED_WRITE, &GUARDED_TYPES)
        .await?;
    overlay.predecessor_locked().await;
    // Every statement is answered before any answer is looked at, so the connection is
    // idle again whatever happened. Should a statement fail, PostgreSQL turns the COMMIT
    // behind it into a rollback.
    let (begun, locked, subjects_locked, written, committed) = futures::join!(
        conn.batch_execute("BEGIN"),
        async {
            let locked = conn.query(&lock_head, &[]).await;
            signal.locked();
            locked
        },
        async {
            match &lock_subjects {
                None => Ok(Vec::new()),
                Some(stmt) => conn.query(stmt, &[&LOCK_CLASS, &k.subjects]).await,
            }
        },
        conn.query(&guarded, &params),
        conn.batch_execute("COMMIT"),
    );
    begun?;
    locked?;
    subjects_locked?;
    let appended = match written {
        Ok(rows) => rows,
        // A row collided with one already in the log: one of the new subjects got its first
        // key elsewhere after the batch was planned, or (for a batch planned on its own
        // requests) a stream is further on than a request said. The transaction was rolled
        // back.
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            committed?;
            return Ok(Speculation::Refused);
        }
        Err(e) => return Err(e.into()),
    };
    committed?;
    let (appended, head_kept): (i64, bool) = match appended.first() {
        Some(row) => (row.try_get(0)?, row.try_get(1)?),
        None => (0, false),
    };
    if usize::try_from(appended).ok() == Some(plan.rows.len()) {
        Ok(Speculation::Committed(plan.answers))
    } else if appended == 0 && head_kept {
        Ok(Speculation::Refused)
    } else if appended == 0 {
        Ok(Speculation::Moved)
    } else {
        Err(StoreError::Corrupt(format!(
            "a guarded append wrote {appended} of {} events",
            plan.rows.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::super::cached_plan::{STARTS, after_growth, assert_probes_only};
    use super::*;

    const ARGS: &str = "('{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', now(), '{}', \
        '{}', 0, '\\x00', '{}', '{}', '{}', '{}', '{}', 1, '\\x01', \
        '{0192f0c8-0000-7000-8000-000000000001}', '{customer-7}', '{3}', '{customer-8}', '{2}')";

    /// Like the look-up, the guarded write is planned once per append session, usually while
    /// the log is small, and its checks of a batch's assumptions must stay index probes.
    #[tokio::test]
    async fn the_guarded_write_planned_on_empty_or_tiny_tables_still_probes_the_indexes_once_they_are_large()
     {
        // PostgreSQL's own names of the parameter types (`_int8` for `int8[]`), so that the
        // statement is prepared with exactly the types the append session gives it.
        let types = GUARDED_TYPES.map(|t| t.name().to_owned()).join(", ");
        for start in STARTS {
            let plan = after_growth(start, &types, GUARDED_WRITE, ARGS).await;

            // The counter table has one row, so a scan of it is all there is to do.
            assert_probes_only(
                start,
                &plan,
                &["Seq Scan on events", "Seq Scan on erased_subjects"],
                &[
                    "events_command_id",
                    "events_stream_version_key",
                    "erased_subjects_pkey",
                ],
            );
        }
    }

    fn delta(position: i64, stream: &str, version: i64) -> Delta {
        Delta {
            head: ChainHead {
                position,
                hash: vec![1; 32],
            },
            versions: HashMap::from([(stream.to_owned(), version)]),
            commands: HashMap::new(),
            subjects: HashSet::new(),
        }
    }

    #[test]
    fn a_delta_whose_batch_a_later_commit_overtook_is_left_out_of_the_overlay() {
        let chain = Chain::default();
        let first = chain.register(delta(10, "customer-1", 3));
        let second = chain.register(delta(20, "customer-1", 4));
        let overlay = chain.overlay();
        assert_eq!(overlay.version_of("customer-1"), Some(4));
        assert!(overlay.predecessor.is_some());

        // The second batch's answer reached its task first: it committed and is gone, while
        // the first, committed before it, is still registered.
        chain.committed(second.head(), &[], &[]);
        drop(second);
        let overlay = chain.overlay();
        assert!(
            overlay.is_empty(),
            "the first delta is older than the committed head"
        );
        assert_eq!(overlay.version_of("customer-1"), None);
        assert!(overlay.predecessor.is_none());
        drop(first);
    }

    #[tokio::test]
    async fn a_batch_waits_until_its_predecessor_holds_the_counter_row_or_is_gone() {
        let chain = Chain::default();
        let first = chain.register(delta(10, "customer-1", 3));
        let overlay = chain.overlay();
        let waiting = overlay.predecessor_locked();
        tokio::pin!(waiting);
        assert!(
            futures::poll!(waiting.as_mut()).is_pending(),
            "the predecessor has not locked yet"
        );
        first.signal().locked();
        assert!(
            futures::poll!(waiting.as_mut()).is_ready(),
            "the predecessor's signal ends the wait"
        );

        let second = chain.register(delta(20, "customer-1", 4));
        let overlay = chain.overlay();
        let waiting = overlay.predecessor_locked();
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        // Its write may still hold the signal when the batch ends: the end itself must count.
        let signal = second.signal();
        drop(second);
        assert!(
            futures::poll!(waiting.as_mut()).is_ready(),
            "a predecessor that ended without locking no longer stands in the way"
        );
        drop((signal, first));
    }

    #[test]
    fn after_the_log_moved_the_next_batches_are_appended_the_ordinary_way() {
        let chain = Chain::default();
        assert!(chain.plan_ahead());
        chain.count(&Speculation::Committed(Vec::new()));
        assert!(
            chain.plan_ahead(),
            "a success does not pause planning ahead"
        );
        chain.count(&Speculation::Refused);
        assert!(
            chain.plan_ahead(),
            "a refused assumption does not pause planning ahead"
        );
        chain.count(&Speculation::Moved);
        for _ in 0..PAUSE_AFTER_MOVED {
            assert!(!chain.plan_ahead());
        }
        assert!(
            chain.plan_ahead(),
            "planning ahead is tried again after the pause"
        );
        assert_eq!(
            chain.stats(),
            PipelineStats {
                committed: 1,
                retried: 2
            }
        );
    }
}
