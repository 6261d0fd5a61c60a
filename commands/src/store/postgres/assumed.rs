//! Appends planned on what the requests say about the log, without reading it first.
//!
//! A request `Exact(v)` says its stream holds `v` events: the handler decided the command on
//! state it read from the log, or on the version its own last append left. When every request
//! of a batch says where its stream is (or a batch of this process in flight does), and the
//! head of the chain is known (the one that batch in flight leaves, or the one this process's
//! last append left), the batch can be planned without the look-up round trip. The guarded
//! write then checks, under the counter row's lock, everything the plan took for granted:
//!
//! - the head is still the one planned on, so no other append came between;
//! - each stream holds the version the batch planned it on: that version exists (version 0
//!   needs nothing), and the stream is no further on: for a stream the batch writes, the
//!   unique index on `(stream_id, stream_version)` refuses its first row otherwise; for one
//!   it only answers with a conflict, the next version must not exist. Events are never
//!   deleted, so a stream's versions are dense and the two together pin its version exactly;
//! - none of the rows' command ids is in the log already;
//! - as for every guarded write, no new subject was erased, and a first key stored meanwhile
//!   fails the key table's primary key.
//!
//! The process also remembers the version its answers last put each stream at. A request
//! decided on an older version (two clients updating the same customer from the same cached
//! state) is then answered as a conflict in the plan, checked like the rest, instead of
//! making the whole batch fail its guard.
//!
//! If any of it is wrong, nothing is written and the batch is appended the ordinary way, whose
//! look-up gives the exact answers: the actual version of a conflicting stream, the first
//! outcome of a repeated command. A batch planned this way answers a conflict or a duplicate
//! only where it follows from the checked versions, the batches in flight or an earlier
//! request of the same batch, all of which hold once the batch commits.
//!
//! What it saves is the look-up's round trip before planning, and with it the wait for a
//! core that the answer needs on a busy machine; the checks it adds to the guarded write are
//! index probes, one per new command and one per stream planned above version 0.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::ClientWrapper;
use uuid::Uuid;

use super::log_state::LogState;
use super::pipeline::{LockSignal, Overlay, Speculation, plan_and_write};
use crate::store::plan::Plan;
use crate::store::{AppendRequest, ChainHead, ExpectedVersion, StoreError};

/// Appends `batch` planned on what its requests say, on the head the batches in `overlay`
/// leave or, with none in flight, on `committed_head`; `known` is what this process last saw
/// a stream at (see [`state_of`]). Unless it answers
/// [`Speculation::Committed`], nothing was written and the caller appends the batch the
/// ordinary way.
pub(super) async fn append_assumed<'a>(
    conn: &ClientWrapper,
    batch: &'a [AppendRequest],
    overlay: &Overlay,
    committed_head: Option<ChainHead>,
    known: impl Fn(&str) -> Option<i64>,
    planned: impl FnOnce(&Plan<'a>) -> LockSignal,
) -> Result<Speculation, StoreError> {
    let Some(mut state) = state_of(batch, overlay, known) else {
        return Ok(Speculation::NotTried);
    };
    let planned_on = state.versions.clone();
    let Some(head) = overlay.apply(&mut state).or(committed_head) else {
        return Ok(Speculation::NotTried);
    };
    plan_and_write(conn, batch, state, head, overlay, planned, |plan| {
        Assumptions::of(plan, &planned_on)
    })
    .await
}

/// What the log must hold for a batch planned on its requests, as the guarded write's
/// parameters. Empty for a batch planned on a look-up: nothing is left to check there.
#[derive(Debug, Default, PartialEq, Eq)]
pub(in crate::store::postgres) struct Assumptions<'a> {
    /// The command ids of the rows to insert, each once: none may be in the log.
    pub(super) new_commands: Vec<Uuid>,
    /// Streams planned on a version above 0...
    pub(super) streams: Vec<&'a str>,
    /// ...and that version, in the same order: it must exist.
    pub(super) versions: Vec<i64>,
    /// Streams the batch writes nothing to (its requests for them conflict)...
    pub(super) unwritten: Vec<&'a str>,
    /// ...and the version after the one planned on, in the same order: it must not exist.
    pub(super) next_versions: Vec<i64>,
}

impl<'a> Assumptions<'a> {
    /// What `plan` took for granted about the log, given the version it planned each stream
    /// on.
    pub(super) fn of(plan: &Plan<'_>, planned_on: &'a HashMap<String, i64>) -> Self {
        let mut assumed = Assumptions::default();
        let mut commands = HashSet::new();
        let mut written = HashSet::new();
        for row in &plan.rows {
            if commands.insert(row.command_id) {
                assumed.new_commands.push(row.command_id);
            }
            written.insert(row.stream_id);
        }
        let mut streams: Vec<_> = planned_on.iter().collect();
        // In a fixed order, so that the same batch always sends the same parameters.
        streams.sort_unstable();
        for (stream, &version) in streams {
            if version > 0 {
                assumed.streams.push(stream);
                assumed.versions.push(version);
            }
            if !written.contains(stream.as_str()) {
                assumed.unwritten.push(stream);
                assumed.next_versions.push(version + 1);
            }
        }
        assumed
    }
}

/// What the log holds about `batch` according to its requests, to the batches in `overlay`
/// and to what this process last saw each stream at (`known`, a lower bound), or `None` when
/// a request does not say enough to plan it without a look-up: a request with no events
/// (its answer would confirm a version nothing checks) or one that takes any version of a
/// stream whose version is not known.
pub(super) fn state_of(
    batch: &[AppendRequest],
    overlay: &Overlay,
    known: impl Fn(&str) -> Option<i64>,
) -> Option<LogState> {
    let mut versions = HashMap::new();
    for req in batch {
        if req.events.is_empty() {
            return None;
        }
        if versions.contains_key(&req.stream_id) {
            // A later request for the same stream is checked against the version the
            // earlier ones leave, as in any batch.
            continue;
        }
        // A batch in flight knows better than the request: if they disagree, the request
        // conflicts once that batch commits. A stream known to be further on than the
        // request says conflicts too, since streams only grow.
        let version = match (overlay.version_of(&req.stream_id), req.expected) {
            (Some(version), _) => version,
            (None, ExpectedVersion::Exact(expected)) => {
                known(&req.stream_id).map_or(expected, |k| k.max(expected))
            }
            (None, ExpectedVersion::Any) => known(&req.stream_id)?,
        };
        versions.insert(req.stream_id.clone(), version);
    }
    Some(LogState {
        prior: HashMap::new(),
        versions,
        taken: HashSet::new(),
    })
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::store::NewEvent;
    use crate::store::plan::plan_batch;

    fn request(stream: &str, expected: ExpectedVersion, events: usize) -> AppendRequest {
        let events = (0..events)
            .map(|_| NewEvent {
                event_id: Uuid::now_v7(),
                event_type: "CustomerUpdated".into(),
                schema_version: 1,
                payload: json!({}),
                metadata: json!({}),
            })
            .collect();
        AppendRequest::new(stream, expected, Uuid::now_v7(), events)
    }

    /// Plans `batch` the way [`append_assumed`] does; answers the plan and the version it
    /// planned each stream on.
    fn planned(
        batch: &[AppendRequest],
        known: impl Fn(&str) -> Option<i64>,
    ) -> (Plan<'_>, HashMap<String, i64>) {
        let state = state_of(batch, &Overlay::default(), known).expect("every request says");
        let planned_on = state.versions.clone();
        let plan = plan_batch(
            batch,
            head(),
            &state.prior,
            state.versions,
            &state.taken,
            Utc::now(),
        );
        (plan, planned_on)
    }

    fn head() -> ChainHead {
        ChainHead {
            position: 100,
            hash: vec![7; 32],
        }
    }

    #[test]
    fn each_stream_is_taken_to_hold_the_version_its_first_request_expects() {
        let batch = vec![
            request("customer-a", ExpectedVersion::Exact(0), 1),
            request("customer-b", ExpectedVersion::Exact(4), 2),
            request("customer-b", ExpectedVersion::Exact(6), 1),
        ];
        let state = state_of(&batch, &Overlay::default(), |_| None).expect("every request says");
        assert_eq!(
            state.versions,
            HashMap::from([("customer-a".into(), 0), ("customer-b".into(), 4)])
        );
        assert!(state.prior.is_empty() && state.taken.is_empty());
    }

    #[test]
    fn a_request_that_says_nothing_about_its_stream_needs_a_look_up() {
        let any = vec![request("login-1", ExpectedVersion::Any, 1)];
        assert!(state_of(&any, &Overlay::default(), |_| None).is_none());
        let empty = vec![
            request("customer-a", ExpectedVersion::Exact(1), 1),
            request("customer-b", ExpectedVersion::Exact(3), 0),
        ];
        assert!(
            state_of(&empty, &Overlay::default(), |_| None).is_none(),
            "a request without events would be answered on an unchecked version"
        );
    }

    #[test]
    fn the_plan_assumes_every_new_command_and_the_version_before_each_continued_stream() {
        let batch = vec![
            request("customer-a", ExpectedVersion::Exact(0), 2),
            request("customer-b", ExpectedVersion::Exact(4), 2),
            request("customer-b", ExpectedVersion::Exact(6), 1),
        ];
        let (plan, planned_on) = planned(&batch, |_| None);
        assert!(plan.answers.iter().all(Result::is_ok));
        let assumed = Assumptions::of(&plan, &planned_on);
        assert_eq!(
            assumed.new_commands,
            batch.iter().map(|r| r.command_id).collect::<Vec<_>>()
        );
        // customer-a starts at version 1, so only customer-b is checked, once, at the
        // version its first request expects. Both are written, so the unique index stops
        // them from being further on.
        assert_eq!(assumed.streams, vec!["customer-b"]);
        assert_eq!(assumed.versions, vec![4]);
        assert!(assumed.unwritten.is_empty() && assumed.next_versions.is_empty());
    }

    #[test]
    fn a_second_request_on_a_moved_stream_conflicts_in_the_plan_and_is_not_assumed() {
        let batch = vec![
            request("customer-b", ExpectedVersion::Exact(4), 1),
            request("customer-b", ExpectedVersion::Exact(4), 1),
        ];
        let (plan, planned_on) = planned(&batch, |_| None);
        assert!(plan.answers[0].is_ok());
        let conflict = plan.answers[1].as_ref().expect_err("the stream moved to 5");
        assert_eq!((conflict.expected, conflict.actual), (4, 5));
        assert_eq!(
            Assumptions::of(&plan, &planned_on).new_commands,
            vec![batch[0].command_id]
        );
    }

    #[test]
    fn a_request_behind_what_this_process_saw_conflicts_and_its_stream_is_checked_for_no_more() {
        let batch = vec![
            request("customer-a", ExpectedVersion::Exact(2), 1),
            request("customer-b", ExpectedVersion::Exact(1), 1),
        ];
        let known = |stream: &str| (stream == "customer-a").then_some(3);
        let (plan, planned_on) = planned(&batch, known);
        let conflict = plan.answers[0].as_ref().expect_err("customer-a is at 3");
        assert_eq!((conflict.expected, conflict.actual), (2, 3));
        assert!(plan.answers[1].is_ok());
        let assumed = Assumptions::of(&plan, &planned_on);
        assert_eq!(assumed.new_commands, vec![batch[1].command_id]);
        assert_eq!(assumed.streams, vec!["customer-a", "customer-b"]);
        assert_eq!(assumed.versions, vec![3, 1]);
        // The conflict holds only if customer-a is at exactly 3, not further on.
        assert_eq!(assumed.unwritten, vec!["customer-a"]);
        assert_eq!(assumed.next_versions, vec![4]);
    }

    #[test]
    fn a_request_taking_any_version_is_planned_on_the_version_this_process_saw() {
        let batch = vec![request("login-1", ExpectedVersion::Any, 1)];
        let state = state_of(&batch, &Overlay::default(), |_| Some(7)).expect("known");
        assert_eq!(state.versions, HashMap::from([("login-1".into(), 7)]));
    }
}
