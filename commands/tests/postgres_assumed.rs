//! Appends planned on what their requests say, without reading the log first
//! (`store/postgres/assumed.rs`), against the real server. Once a log has committed an
//! append, its next batch plans on the head it left and on the versions its requests expect;
//! the guarded write checks those assumptions under the counter row's lock. Each test makes
//! one assumption wrong and shows that the batch then writes nothing, goes round the ordinary
//! way and gets the exact answer, and that the log stays dense and verifying.

use egec_commands::store::postgres::{PgLog, PipelineStats};
use egec_commands::store::verify::verify_chain;
use egec_commands::store::{
    AppendOutcome, AppendRequest, Conflict, EventLog, ExpectedVersion, NewEvent, ReadBound,
};
use egec_commands::testing::{PgDropGuard, fresh_postgres};
use serde_json::json;
use uuid::Uuid;

fn request(stream: &str, expected: ExpectedVersion) -> AppendRequest {
    AppendRequest::new(
        stream,
        expected,
        Uuid::now_v7(),
        vec![NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "TestHappened".into(),
            schema_version: 1,
            payload: json!({ "stream": stream }),
            metadata: json!({}),
        }],
    )
}

async fn append_one(log: &PgLog, req: AppendRequest) -> Result<AppendOutcome, Conflict> {
    let mut answers = log.append_batch(vec![req]).await.expect("the batch failed");
    assert_eq!(answers.len(), 1);
    answers.remove(0)
}

/// A fresh log that has committed one event to stream `a`, so that it knows the head.
async fn log_with_one_event() -> (PgLog, String, PgDropGuard) {
    let (url, guard) = fresh_postgres().await;
    let log = PgLog::connect(&url, 4).await.expect("connect");
    append_one(&log, request("a", ExpectedVersion::Exact(0)))
        .await
        .expect("first append");
    assert_eq!(
        log.pipeline_stats(),
        PipelineStats::default(),
        "a log that has appended nothing knows no head, so the first batch reads it"
    );
    (log, url, guard)
}

async fn positions(log: &PgLog) -> Vec<(i64, String, i64)> {
    log.read_all(0, 100)
        .await
        .expect("read_all")
        .into_iter()
        .map(|e| (e.global_position, e.stream_id, e.stream_version))
        .collect()
}

async fn assert_verifies(log: &PgLog) {
    let report = verify_chain(log, 10).await.expect("verify");
    assert!(report.ok, "{report:?}");
}

fn stats(committed: u64, retried: u64) -> PipelineStats {
    PipelineStats { committed, retried }
}

#[tokio::test]
async fn a_batch_whose_requests_say_where_their_streams_are_is_appended_on_the_known_head() {
    let (log, _url, _guard) = log_with_one_event().await;
    let batch = vec![
        request("a", ExpectedVersion::Exact(1)),
        request("b", ExpectedVersion::Exact(0)),
        request("a", ExpectedVersion::Exact(2)),
    ];
    let answers = log.append_batch(batch).await.expect("append");
    let versions: Vec<_> = answers
        .into_iter()
        .map(|a| a.expect("appended").stream_version)
        .collect();
    assert_eq!(versions, vec![2, 1, 3]);
    assert_eq!(log.pipeline_stats(), stats(1, 0));
    assert_eq!(
        positions(&log).await,
        vec![
            (1, "a".into(), 1),
            (2, "a".into(), 2),
            (3, "b".into(), 1),
            (4, "a".into(), 3)
        ]
    );
    assert_verifies(&log).await;
}

#[tokio::test]
async fn a_request_expecting_more_events_than_its_stream_holds_conflicts_and_leaves_no_gap() {
    let (log, _url, _guard) = log_with_one_event().await;
    let refused = append_one(&log, request("a", ExpectedVersion::Exact(3)))
        .await
        .expect_err("stream `a` holds one event");
    assert_eq!((refused.expected, refused.actual), (3, 1));
    assert_eq!(log.pipeline_stats(), stats(0, 1));
    assert_eq!(positions(&log).await, vec![(1, "a".into(), 1)]);
    assert_verifies(&log).await;
}

#[tokio::test]
async fn a_request_behind_the_version_this_process_left_conflicts_without_a_wasted_write() {
    let (log, _url, _guard) = log_with_one_event().await;
    // This process's own answer put `a` at version 1, so the plan answers the conflict and,
    // with nothing left to write, the batch goes the ordinary way without trying the guard.
    let refused = append_one(&log, request("a", ExpectedVersion::Exact(0)))
        .await
        .expect_err("stream `a` exists");
    assert_eq!((refused.expected, refused.actual), (0, 1));
    assert_eq!(log.pipeline_stats(), stats(0, 0));
    assert_eq!(positions(&log).await, vec![(1, "a".into(), 1)]);
    assert_verifies(&log).await;
}

#[tokio::test]
async fn a_request_behind_its_stream_fails_the_row_on_the_unique_index_and_conflicts() {
    let (url, _guard) = fresh_postgres().await;
    let other = PgLog::connect(&url, 4).await.expect("connect other");
    for version in 0..2 {
        append_one(&other, request("c", ExpectedVersion::Exact(version)))
            .await
            .expect("another process writes `c` up to version 2");
    }
    let log = PgLog::connect(&url, 4).await.expect("connect");
    append_one(&log, request("a", ExpectedVersion::Exact(0)))
        .await
        .expect("the first append reads the log and learns the head");
    assert_eq!(log.pipeline_stats(), stats(0, 0));

    // Planned on the head, which is right, and on `c` at version 1, which this process has
    // no answer of its own to contradict: the row at version 2 collides on the unique index,
    // nothing is written, and the ordinary way answers the conflict.
    let refused = append_one(&log, request("c", ExpectedVersion::Exact(1)))
        .await
        .expect_err("`c` is at version 2");
    assert_eq!((refused.expected, refused.actual), (1, 2));
    assert_eq!(log.pipeline_stats(), stats(0, 1));
    // The retry at the right version lands on the known head.
    append_one(&log, request("c", ExpectedVersion::Exact(2)))
        .await
        .expect("appended");
    assert_eq!(log.pipeline_stats(), stats(1, 1));
    assert_eq!(
        positions(&log).await,
        vec![
            (1, "c".into(), 1),
            (2, "c".into(), 2),
            (3, "a".into(), 1),
            (4, "c".into(), 3)
        ]
    );
    assert_verifies(&log).await;
}

#[tokio::test]
async fn a_command_repeated_on_another_stream_is_answered_with_its_first_outcome() {
    let (log, _url, _guard) = log_with_one_event().await;
    let first = request("b", ExpectedVersion::Exact(0));
    let command_id = first.command_id;
    let appended = append_one(&log, first).await.expect("appended");
    assert_eq!(log.pipeline_stats(), stats(1, 0));

    let mut again = request("c", ExpectedVersion::Exact(0));
    again.command_id = command_id;
    let answer = append_one(&log, again).await.expect("a duplicate");
    assert!(answer.duplicate);
    assert_eq!(
        (answer.first_position, answer.last_position),
        (appended.first_position, appended.last_position)
    );
    assert_eq!(log.pipeline_stats(), stats(1, 1));
    assert!(
        log.read_stream("c", 1, ReadBound::None)
            .await
            .expect("read")
            .is_empty()
    );
    assert_verifies(&log).await;
}

#[tokio::test]
async fn an_append_by_another_process_sends_the_next_batch_round_the_ordinary_way() {
    let (log, url, _guard) = log_with_one_event().await;
    let other = PgLog::connect(&url, 4).await.expect("connect other");
    append_one(&other, request("a", ExpectedVersion::Exact(1)))
        .await
        .expect("other process appends to `a`");

    // This process still takes `a` to hold one event and the head to be at position 1.
    let refused = append_one(&log, request("a", ExpectedVersion::Exact(1)))
        .await
        .expect_err("`a` moved on in the other process");
    assert_eq!((refused.expected, refused.actual), (1, 2));
    let appended = append_one(&log, request("b", ExpectedVersion::Exact(0)))
        .await
        .expect("appended behind the other process's event");
    assert_eq!(appended.first_position, 3);
    assert_eq!(log.pipeline_stats(), stats(0, 1));
    assert_eq!(
        positions(&log).await,
        vec![(1, "a".into(), 1), (2, "a".into(), 2), (3, "b".into(), 1)]
    );
    assert_verifies(&log).await;
}

#[tokio::test]
async fn a_conflict_answered_on_what_this_process_last_saw_is_checked_against_the_log() {
    let (log, url, _guard) = log_with_one_event().await;
    let other = PgLog::connect(&url, 4).await.expect("connect other");
    append_one(&other, request("a", ExpectedVersion::Exact(1)))
        .await
        .expect("another process moves `a` to version 2");
    // A request that takes any version of a stream this process knows nothing of cannot be
    // planned without a read, so this batch goes the ordinary way, learns the head, and
    // leaves planning ahead unpaused; this process still remembers `a` at version 1.
    append_one(&log, request("z", ExpectedVersion::Any))
        .await
        .expect("appended");
    assert_eq!(log.pipeline_stats(), stats(0, 0));

    // Planned on `a` at version 1, the first request conflicts in the plan; the second
    // writes. The guard finds `a` further on than planned, so nothing is written and the
    // ordinary way answers with `a`'s actual version.
    let answers = log
        .append_batch(vec![
            request("a", ExpectedVersion::Exact(0)),
            request("d", ExpectedVersion::Exact(0)),
        ])
        .await
        .expect("append");
    let conflict = answers[0].as_ref().expect_err("`a` exists");
    assert_eq!((conflict.expected, conflict.actual), (0, 2));
    assert_eq!(answers[1].as_ref().expect("appended").first_position, 4);
    assert_eq!(log.pipeline_stats(), stats(0, 1));
    assert_verifies(&log).await;
}
