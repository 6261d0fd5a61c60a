//! Two append transactions in flight at once.
//!
//! An append holds the counter row from its first statement to its commit, and everything it
//! does in between (reading what the log holds about the batch, planning positions and hashes
//! in the client, two round trips, the inserts, the flush of the commit) is serial across all
//! appenders. Most of that need not be: while batch A is committing, this process already
//! knows what A will leave behind if it commits (its [`Delta`]), so batch B can read the log
//! without the lock, lay A's delta over what it read, and plan on the head A will leave.
//! B then sends its whole write phase in one pipeline:
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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use deadpool_postgres::ClientWrapper;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

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
pub(super) struct Overlay(Vec<Arc<Delta>>);

impl Overlay {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Lays the deltas over what was read, oldest first, and answers the head they leave.
    fn apply(&self, state: &mut LogState) -> Option<ChainHead> {
        for delta in &self.0 {
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
        self.0.last().map(|d| d.head.clone())
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
    inflight: parking_lot::Mutex<VecDeque<(u64, Arc<Delta>)>>,
    tickets: AtomicU64,
    committed: AtomicU64,
    retried: AtomicU64,
    /// Batches still to append the ordinary way (see [`PAUSE_AFTER_MOVED`]).
    paused: AtomicU32,
}

/// How the batches planned on a predecessor in flight ended, since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Written by the guarded statement, behind the predecessor.
    pub committed: u64,
    /// Found the log elsewhere than planned and were appended the ordinary way.
    pub retried: u64,
}

impl Chain {
    pub(super) async fn start(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.planning.lock().await
    }

    pub(super) fn count(&self, committed: bool) {
        let (counter, outcome) = if committed {
            (&self.committed, "committed")
        } else {
            (&self.retried, "retried")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if !committed {
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

    pub(super) fn stats(&self) -> PipelineStats {
        PipelineStats {
            committed: self.committed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
        }
    }

    pub(super) fn overlay(&self) -> Overlay {
        Overlay(
            self.inflight
                .lock()
                .iter()
                .map(|(_, d)| Arc::clone(d))
                .collect(),
        )
    }

    /// Registers a planned batch; its delta is dropped with the returned guard, however the
    /// batch ends.
    pub(super) fn register(&self, delta: Delta) -> Registered<'_> {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        self.inflight.lock().push_back((ticket, Arc::new(delta)));
        Registered {
            chain: self,
            ticket,
        }
    }
}

pub(super) struct Registered<'a> {
    chain: &'a Chain,
    ticket: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.chain
            .inflight
            .lock()
            .retain(|(ticket, _)| *ticket != self.ticket);
    }
}

/// The guarded write of step 3 (see the module comment). Prepared once per connection, so
/// it must stay cheap under any plan, whatever the tables' statistics were when it was
/// planned: the tombstone check reads a table that only erasures fill, and a subject that got
/// its first key meanwhile is caught by the key table's primary key (the insert fails, the
/// transaction rolls back, see [`append_speculative`]) rather than by a look-up.
const GUARDED_WRITE: &str = "WITH ok AS (\
       SELECT 1 FROM egec.log_head WHERE position = $13 AND hash = $14 \
       AND NOT EXISTS (SELECT 1 FROM egec.erased_subjects e WHERE e.subject = ANY($15))), \
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
     SELECT count(*) FROM appended";

/// The parameter types of [`GUARDED_WRITE`], in order.
const GUARDED_TYPES: [Type; 21] = [
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
];

/// How a batch planned on its predecessors ended.
pub(super) enum Speculation {
    /// Appended; the answers of its requests.
    Committed(Vec<Result<AppendOutcome, Conflict>>),
    /// The log was not where the predecessors said: nothing was written.
    Moved,
    /// The batch has no events to insert (only duplicates, conflicts or empty requests), so
    /// nothing was tried.
    NothingToWrite,
}

/// Appends `batch` on the head that the batches in `overlay` leave. Unless it answers
/// [`Speculation::Committed`], nothing was written and the caller appends the batch the
/// ordinary way.
pub(super) async fn append_speculative<'a>(
    conn: &ClientWrapper,
    batch: &'a [AppendRequest],
    overlay: &Overlay,
    planned: impl FnOnce(&Plan<'a>),
) -> Result<Speculation, StoreError> {
    let ids = command_ids(batch);
    let streams = stream_ids(batch);
    let subjects = new_key_subjects(batch);
    // Read without any lock: the predecessor holds the counter row, so nobody else's
    // append can commit before it, and its own rows come from the overlay.
    let mut state = LogState::read(conn, &ids, &streams, &subjects).await?;
    let Some(head) = overlay.apply(&mut state) else {
        return Ok(Speculation::NothingToWrite);
    };
    let recorded_at = now_micros();
    let plan = plan_batch(
        batch,
        head.clone(),
        &state.prior,
        state.versions,
        &state.taken,
        recorded_at,
    );
    if plan.rows.is_empty() {
        return Ok(Speculation::NothingToWrite);
    }
    planned(&plan);

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
    let params: [&(dyn ToSql + Sync); 21] = [
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
    ];
    let guarded = conn
        .prepare_typed_cached(GUARDED_WRITE, &GUARDED_TYPES)
        .await?;
    // Every statement is answered before any answer is looked at, so the connection is
    // idle again whatever happened. Should a statement fail, PostgreSQL turns the COMMIT
    // behind it into a rollback.
    let (begun, locked, subjects_locked, written, committed) = futures::join!(
        conn.batch_execute("BEGIN"),
        conn.query(&lock_head, &[]),
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
        // One of the new subjects got its first key elsewhere after this batch read the key
        // table: the insert failed and the transaction was rolled back.
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            committed?;
            return Ok(Speculation::Moved);
        }
        Err(e) => return Err(e.into()),
    };
    committed?;
    let appended: i64 = match appended.first() {
        Some(row) => row.try_get(0)?,
        None => 0,
    };
    if usize::try_from(appended).ok() == Some(plan.rows.len()) {
        Ok(Speculation::Committed(plan.answers))
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
    use super::*;

    #[test]
    fn after_the_log_moved_the_next_batches_are_appended_the_ordinary_way() {
        let chain = Chain::default();
        assert!(chain.plan_ahead());
        chain.count(true);
        assert!(
            chain.plan_ahead(),
            "a success does not pause planning ahead"
        );
        chain.count(false);
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
                retried: 1
            }
        );
    }
}
