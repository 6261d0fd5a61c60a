//! Two append transactions in flight on PostgreSQL (`store/postgres/pipeline.rs`), made to
//! interleave deterministically against the real server: a test session holds the counter row
//! and another holds an index entry that the first batch must wait for, so the second batch is
//! planned while the first is still committing. Then:
//! - the second batch lands right behind the first, without a second read under the lock;
//! - an append by another process between the two is caught by the guard, the second batch
//!   writes nothing and is appended again behind the other process's event;
//! - a new subject whose key another process created, or which another process erased,
//!   meanwhile is caught the same way, and its request is refused as the ordinary path
//!   refuses it (an erased subject never gets a key again).
//!
//! Each ends with the log dense, in commit order, and verifying.

use std::sync::Arc;
use std::time::Duration;

use egec_commands::store::postgres::{PgLog, PipelineStats};
use egec_commands::store::verify::verify_chain;
use egec_commands::store::{
    AppendOutcome, AppendRequest, Conflict, EventLog, ExpectedVersion, KeyTable, NewEvent,
    ReadBound, StoreError, WrappedKey,
};
use egec_commands::testing::fresh_postgres;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use uuid::Uuid;

fn request(stream: &str, new_key: Option<&str>) -> AppendRequest {
    AppendRequest {
        new_keys: new_key
            .map(|s| {
                vec![(
                    s.to_owned(),
                    WrappedKey {
                        key_version: 1,
                        kek_id: "kek-1".into(),
                        wrapped: s.as_bytes().to_vec(),
                        fingerprint: format!("fp-{s}"),
                    },
                )]
            })
            .unwrap_or_default(),
        stream_id: stream.into(),
        expected: ExpectedVersion::Exact(0),
        command_id: Uuid::now_v7(),
        events: vec![NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "TestHappened".into(),
            schema_version: 1,
            payload: json!({ "stream": stream }),
            metadata: json!({}),
        }],
    }
}

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

type Answers = Result<Vec<Result<AppendOutcome, Conflict>>, StoreError>;

fn append(log: &Arc<PgLog>, req: AppendRequest) -> JoinHandle<Answers> {
    let log = Arc::clone(log);
    tokio::spawn(async move { log.append_batch(vec![req]).await })
}

/// Waits until `n` sessions of the test database wait for a lock.
async fn until_waiting(observer: &tokio_postgres::Client, n: i64) {
    for _ in 0..500 {
        let row = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .expect("pg_stat_activity");
        if row.get::<_, i64>(0) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} sessions never waited for a lock");
}

fn outcome(answers: Answers) -> Result<AppendOutcome, Conflict> {
    let mut answers = answers.expect("the batch failed");
    assert_eq!(answers.len(), 1);
    answers.remove(0)
}

/// The stage every test starts from. Session `counter` holds the counter row, so batch 1
/// (stream `first`) waits for it while holding the right to plan; session `index` has
/// inserted, uncommitted, an event of stream `first` at version 1, so once batch 1 has the
/// counter and has planned, its insert waits for that session's end. Batch 1 is then
/// planned and in flight, and stays so until [`Stage::let_first_commit`].
struct Stage {
    log: Arc<PgLog>,
    other: Arc<PgLog>,
    observer: tokio_postgres::Client,
    counter: tokio_postgres::Client,
    index: tokio_postgres::Client,
    _guard: egec_commands::testing::PgDropGuard,
}

impl Stage {
    /// The stage, and batch 1's answer to come.
    async fn new() -> (Stage, JoinHandle<Answers>) {
        let (url, guard) = fresh_postgres().await;
        let log = Arc::new(PgLog::connect(&url, 4).await.expect("connect"));
        let other = Arc::new(PgLog::connect(&url, 4).await.expect("connect other"));
        let observer = raw(&url).await;
        let counter = raw(&url).await;
        counter
            .batch_execute("BEGIN; SELECT 1 FROM egec.log_head FOR UPDATE")
            .await
            .expect("hold the counter row");
        let index = raw(&url).await;
        index
            .batch_execute(
                "BEGIN; INSERT INTO egec.events (global_position, stream_id, stream_version, \
                 event_id, command_id, event_type, schema_version, payload, metadata, \
                 recorded_at, prev_hash, hash) VALUES (1000000, 'first', 1, gen_random_uuid(), \
                 gen_random_uuid(), 'Blocker', 1, '{}', '{}', now(), '\\x00', '\\x00')",
            )
            .await
            .expect("hold an index entry of stream `first`");
        let first = append(&log, request("first", None));
        until_waiting(&observer, 1).await;
        let stage = Stage {
            log,
            other,
            observer,
            counter,
            index,
            _guard: guard,
        };
        (stage, first)
    }

    /// Releases the counter row: batch 1 reads, plans and then waits on the index entry.
    async fn let_first_plan(&self) {
        self.counter.batch_execute("COMMIT").await.expect("commit");
        // Batch 1 now waits for the `index` session (a transaction lock).
        until_waiting(&self.observer, 1).await;
    }

    /// Ends the `index` session's transaction, so batch 1 inserts and commits.
    async fn let_first_commit(&self) {
        self.index
            .batch_execute("ROLLBACK")
            .await
            .expect("rollback");
    }

    async fn events(&self) -> Vec<(i64, String)> {
        self.log
            .read_all(0, 100)
            .await
            .expect("read_all")
            .into_iter()
            .map(|e| (e.global_position, e.stream_id))
            .collect()
    }

    /// Batch 1 landed alone; batch 2 found the log moved, went round the ordinary way, and
    /// its request was refused as one whose new subject is taken: the stream was fine, the
    /// subject's key was not ours to store (see `plan_batch`).
    async fn assert_second_refused(&self, first: JoinHandle<Answers>, second: JoinHandle<Answers>) {
        outcome(first.await.expect("join")).expect("first appended");
        let refused = outcome(second.await.expect("join")).expect_err("subject taken");
        assert_eq!(refused.expected, refused.actual);
        assert_eq!(
            self.log.pipeline_stats(),
            PipelineStats {
                committed: 0,
                retried: 1
            }
        );
        assert_eq!(self.events().await, vec![(1, "first".to_owned())]);
    }

    async fn assert_verifies(&self) {
        let report = verify_chain(self.log.as_ref(), 10).await.expect("verify");
        assert!(report.ok, "{report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_planned_while_its_predecessor_commits_lands_right_behind_it() {
    let (stage, first) = Stage::new().await;
    stage.let_first_plan().await;
    // Planned on batch 1's delta; its write phase waits for batch 1's counter row.
    let second = append(&stage.log, request("second", Some("subject-2")));
    until_waiting(&stage.observer, 2).await;
    stage.let_first_commit().await;

    let first = outcome(first.await.expect("join")).expect("first appended");
    let second = outcome(second.await.expect("join")).expect("second appended");
    assert_eq!((first.first_position, first.stream_version), (1, 1));
    assert_eq!((second.first_position, second.stream_version), (2, 1));
    assert_eq!(
        stage.log.pipeline_stats(),
        PipelineStats {
            committed: 1,
            retried: 0
        }
    );
    assert_eq!(
        stage.events().await,
        vec![(1, "first".to_owned()), (2, "second".to_owned())]
    );
    assert!(matches!(
        stage.log.load("subject-2").await.expect("load key"),
        egec_commands::store::SubjectKeys::Active(keys) if keys.len() == 1
    ));
    stage.assert_verifies().await;
}

/// How often the scenario below is staged before the test gives up on seeing the foreign
/// append land between the two batches.
const ATTEMPTS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_by_another_process_between_the_two_sends_the_second_batch_round_again() {
    // When batch 1 commits, the foreign append and batch 2 both wait for the counter row.
    // Batch 1 updated the row, so PostgreSQL makes each waiter chase the row's new version,
    // and which of the two locks it first is up to the scheduler. The stage is therefore set
    // up afresh until the foreign append wins; the runs where batch 2 wins must still end
    // with a dense, verifying log in commit order.
    for _ in 0..ATTEMPTS {
        let (stage, first) = Stage::new().await;
        // Another process asks for the counter row while batch 1 waits for it, so it is
        // queued ahead of batch 2.
        let foreign = append(&stage.other, request("foreign", None));
        until_waiting(&stage.observer, 2).await;
        stage.let_first_plan().await;
        let second = append(&stage.log, request("second", None));
        until_waiting(&stage.observer, 3).await;
        stage.let_first_commit().await;

        let first = outcome(first.await.expect("join")).expect("first appended");
        let foreign = outcome(foreign.await.expect("join")).expect("foreign appended");
        let second = outcome(second.await.expect("join")).expect("second appended");
        assert_eq!(first.first_position, 1);
        stage.assert_verifies().await;
        // Who locked the counter row after batch 1: the foreign append (then batch 2's guard
        // found the log moved and it went round the ordinary way) or batch 2 (then it landed
        // right behind batch 1 as planned).
        let foreign_between = foreign.first_position == 2;
        // (foreign, second) positions, pipeline outcomes, and the log's order.
        let (positions, stats, order) = if foreign_between {
            let stats = PipelineStats {
                committed: 0,
                retried: 1,
            };
            ((2, 3), stats, ["first", "foreign", "second"])
        } else {
            let stats = PipelineStats {
                committed: 1,
                retried: 0,
            };
            ((3, 2), stats, ["first", "second", "foreign"])
        };
        assert_eq!((foreign.first_position, second.first_position), positions);
        assert_eq!(stage.log.pipeline_stats(), stats);
        assert_eq!(
            stage.events().await,
            (1..)
                .zip(order)
                .map(|(p, s)| (p, s.to_owned()))
                .collect::<Vec<_>>()
        );
        if foreign_between {
            return;
        }
    }
    panic!("in {ATTEMPTS} attempts the foreign append never landed between the two batches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_created_elsewhere_after_the_second_batch_planned_refuses_its_request() {
    let (stage, first) = Stage::new().await;
    stage.let_first_plan().await;
    let second = append(&stage.log, request("second", Some("subject-2")));
    until_waiting(&stage.observer, 2).await;
    // Another process stores the subject's first key while batch 2 waits for the counter.
    stage
        .other
        .create(
            "subject-2",
            WrappedKey {
                key_version: 1,
                kek_id: "kek-1".into(),
                wrapped: b"theirs".to_vec(),
                fingerprint: "fp-theirs".into(),
            },
        )
        .await
        .expect("create elsewhere");
    stage.let_first_commit().await;

    stage.assert_second_refused(first, second).await;
    assert!(
        stage
            .log
            .read_stream("second", 1, ReadBound::None)
            .await
            .expect("read")
            .is_empty()
    );
    match stage.log.load("subject-2").await.expect("load key") {
        egec_commands::store::SubjectKeys::Active(keys) => {
            assert_eq!(keys.len(), 1);
            assert_eq!(keys[0].fingerprint, "fp-theirs");
        }
        other => panic!("expected their key, got {other:?}"),
    }
    stage.assert_verifies().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subject_erased_elsewhere_after_the_second_batch_planned_gets_no_key() {
    let (stage, first) = Stage::new().await;
    stage.let_first_plan().await;
    let second = append(&stage.log, request("second", Some("subject-2")));
    until_waiting(&stage.observer, 2).await;
    // Another process erases the subject while batch 2 waits for the counter.
    stage
        .other
        .destroy("subject-2")
        .await
        .expect("erase elsewhere");
    stage.let_first_commit().await;

    stage.assert_second_refused(first, second).await;
    // A destroyed key is never re-created, not even by a batch planned before the erasure.
    assert_eq!(
        stage.log.load("subject-2").await.expect("load key"),
        egec_commands::store::SubjectKeys::Erased
    );
    stage.assert_verifies().await;
}
