//! The backend-independent half of an append: given what the database holds (the head of the
//! chain, the outcomes of already-appended commands, the current stream versions), decide
//! which requests of a batch are duplicates, which conflict, and which rows to insert with
//! which positions and hashes.
//!
//! Both backends call [`plan_batch`] inside their write transaction, after they have locked
//! the counter row, so the two backends cannot drift apart in their duplicate and conflict
//! semantics.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::hash::{HashInput, link};
use super::types::{
    AppendOutcome, AppendRequest, ChainHead, Conflict, ExpectedVersion, NewEvent, WrappedKey,
};

/// One row to insert, borrowing its event from the batch.
pub(crate) struct PlannedRow<'a> {
    pub global_position: i64,
    pub stream_id: &'a str,
    pub stream_version: i64,
    pub command_id: Uuid,
    pub event: &'a NewEvent,
    /// The payload's canonical JSON text: what the hash covers and what is stored. Made
    /// once here, since serialising it is the largest part of planning a row.
    pub payload: String,
    /// The metadata's canonical JSON text.
    pub metadata: String,
    pub recorded_at_micros: i64,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// What the transaction must write and what each request is answered.
pub(crate) struct Plan<'a> {
    pub answers: Vec<Result<AppendOutcome, Conflict>>,
    pub rows: Vec<PlannedRow<'a>>,
    /// First keys of new subjects, to insert in the same transaction as the rows.
    pub keys: Vec<(&'a str, &'a WrappedKey)>,
    pub new_head: ChainHead,
    /// When the batch is recorded, the same for all its rows.
    pub recorded_at: DateTime<Utc>,
}

/// The current time truncated to whole microseconds, the precision both backends store: the
/// hash must cover exactly the value that a later read returns.
pub(crate) fn now_micros() -> DateTime<Utc> {
    truncate_to_micros(Utc::now())
}

pub(crate) fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Decides the batch.
///
/// `prior` holds the outcome of every command id of the batch that is already in the log;
/// `versions` the current version of every stream of the batch that has events (a missing
/// stream is at version 0). Requests are taken in order, so a later request for the same
/// stream is checked against the version left by the earlier ones, and a command id repeated
/// inside the batch is answered with the first occurrence's outcome.
///
/// `taken` holds every subject named in a request's `new_keys` that already has a key or a
/// tombstone. A request that would create such a key, or a key an earlier request of the batch
/// creates, is refused with a conflict whose `actual` equals its `expected` version (the
/// stream itself was fine): its events were encrypted under a key that must not be stored.
pub(crate) fn plan_batch<'a>(
    batch: &'a [AppendRequest],
    head: ChainHead,
    prior: &HashMap<Uuid, AppendOutcome>,
    mut versions: HashMap<String, i64>,
    taken: &HashSet<String>,
    recorded_at: DateTime<Utc>,
) -> Plan<'a> {
    let recorded_at_micros = recorded_at.timestamp_micros();
    let mut in_batch: HashMap<Uuid, AppendOutcome> = HashMap::new();
    let mut claimed: HashSet<&str> = HashSet::new();
    let mut answers = Vec::with_capacity(batch.len());
    let mut rows = Vec::new();
    let mut keys = Vec::new();
    let mut position = head.position;
    let mut prev_hash = head.hash;

    for req in batch {
        if let Some(first) = prior.get(&req.command_id).or(in_batch.get(&req.command_id)) {
            answers.push(Ok(AppendOutcome {
                duplicate: true,
                ..first.clone()
            }));
            continue;
        }
        let current = versions.get(req.stream_id.as_str()).copied().unwrap_or(0);
        if let ExpectedVersion::Exact(expected) = req.expected
            && expected != current
        {
            answers.push(Err(Conflict {
                expected,
                actual: current,
            }));
            continue;
        }
        if req.new_keys.iter().any(|(subject, _)| {
            taken.contains(subject.as_str()) || claimed.contains(subject.as_str())
        }) {
            // Report the stream as being where it was expected: nothing is wrong with the
            // version, so the caller retries at once with the subject's stored key.
            answers.push(Err(Conflict {
                expected: current,
                actual: current,
            }));
            continue;
        }
        for (subject, key) in &req.new_keys {
            claimed.insert(subject.as_str());
            keys.push((subject.as_str(), key));
        }
        if req.events.is_empty() {
            // Nothing to write, so nothing to remember under the command id either: the
            // answer only confirms the version check. The position range is empty
            // (first = last + 1), and waiting for `last_position` waits for nothing new.
            answers.push(Ok(AppendOutcome {
                first_position: position + 1,
                last_position: position,
                stream_version: current,
                duplicate: false,
            }));
            continue;
        }
        let first_position = position + 1;
        let mut version = current;
        for event in &req.events {
            position += 1;
            version += 1;
            let payload = event.payload.to_string();
            let metadata = event.metadata.to_string();
            let hash = link(
                &prev_hash,
                &HashInput {
                    global_position: position,
                    stream_id: &req.stream_id,
                    stream_version: version,
                    event_id: &event.event_id,
                    command_id: &req.command_id,
                    event_type: &event.event_type,
                    schema_version: event.schema_version,
                    payload: &payload,
                    metadata: &metadata,
                    recorded_at_micros,
                },
            );
            rows.push(PlannedRow {
                global_position: position,
                stream_id: &req.stream_id,
                stream_version: version,
                command_id: req.command_id,
                event,
                payload,
                metadata,
                recorded_at_micros,
                prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
                hash,
            });
        }
        versions.insert(req.stream_id.clone(), version);
        let outcome = AppendOutcome {
            first_position,
            last_position: position,
            stream_version: version,
            duplicate: false,
        };
        in_batch.insert(req.command_id, outcome.clone());
        answers.push(Ok(outcome));
    }

    Plan {
        answers,
        rows,
        keys,
        new_head: ChainHead {
            position,
            hash: prev_hash,
        },
        recorded_at,
    }
}

/// The command ids of a batch, deduplicated, for the duplicate look-up.
pub(crate) fn command_ids(batch: &[AppendRequest]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = batch.iter().map(|r| r.command_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The stream ids of a batch, deduplicated, for the version look-up.
pub(crate) fn stream_ids(batch: &[AppendRequest]) -> Vec<String> {
    let mut ids: Vec<String> = batch.iter().map(|r| r.stream_id.clone()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The subjects whose first key some request of the batch creates, deduplicated.
pub(crate) fn new_key_subjects(batch: &[AppendRequest]) -> Vec<String> {
    let mut subjects: Vec<String> = batch
        .iter()
        .flat_map(|r| r.new_keys.iter().map(|(s, _)| s.clone()))
        .collect();
    subjects.sort_unstable();
    subjects.dedup();
    subjects
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::hash::GENESIS;
    use serde_json::json;

    fn req(stream: &str, expected: ExpectedVersion, cmd: Uuid, n: usize) -> AppendRequest {
        AppendRequest {
            new_keys: vec![],
            stream_id: stream.into(),
            expected,
            command_id: cmd,
            events: (0..n)
                .map(|i| NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: "T".into(),
                    schema_version: 1,
                    payload: json!({ "i": i }),
                    metadata: json!({}),
                })
                .collect(),
        }
    }

    fn empty_head() -> ChainHead {
        ChainHead {
            position: 0,
            hash: GENESIS.to_vec(),
        }
    }

    #[test]
    fn rows_chain_onto_the_head_and_onto_each_other() {
        let batch = vec![
            req("a", ExpectedVersion::Exact(0), Uuid::now_v7(), 2),
            req("b", ExpectedVersion::Any, Uuid::now_v7(), 1),
        ];
        let plan = plan_batch(
            &batch,
            empty_head(),
            &HashMap::new(),
            HashMap::new(),
            &HashSet::new(),
            now_micros(),
        );
        assert_eq!(plan.rows.len(), 3);
        assert_eq!(plan.rows[0].prev_hash, GENESIS.to_vec());
        assert_eq!(plan.rows[1].prev_hash, plan.rows[0].hash);
        assert_eq!(plan.rows[2].prev_hash, plan.rows[1].hash);
        assert_eq!(plan.new_head.hash, plan.rows[2].hash);
        assert_eq!(plan.new_head.position, 3);
        let positions: Vec<i64> = plan.rows.iter().map(|r| r.global_position).collect();
        assert_eq!(positions, vec![1, 2, 3]);
    }

    #[test]
    fn a_command_id_repeated_inside_the_batch_is_written_once() {
        let cmd = Uuid::now_v7();
        let batch = vec![
            req("a", ExpectedVersion::Exact(0), cmd, 1),
            req("a", ExpectedVersion::Exact(0), cmd, 1),
        ];
        let plan = plan_batch(
            &batch,
            empty_head(),
            &HashMap::new(),
            HashMap::new(),
            &HashSet::new(),
            now_micros(),
        );
        assert_eq!(plan.rows.len(), 1);
        let first = plan.answers[0].clone().expect("first is appended");
        let second = plan.answers[1].clone().expect("second is a duplicate");
        assert!(!first.duplicate);
        assert!(second.duplicate);
        assert_eq!(first.last_position, second.last_position);
    }
}
