//! The storage contract, run against both backends.
//!
//! Every test below is written once, as an async function taking an [`Env`], and instantiated
//! for SQLite and for PostgreSQL by the `conformance!` macro at the bottom, so the two
//! backends are held to exactly the same assertions. Tampering goes around the log through a
//! direct connection (rusqlite on the file, tokio-postgres on the URL), as an attacker with
//! database access would.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use egec_commands::appender::{AppendError, Appender};
use egec_commands::store::hash::{GENESIS, recompute};
use egec_commands::store::open::{self, Stores};
use egec_commands::store::verify::verify_chain;
use egec_commands::store::{
    AppendOutcome, AppendRequest, Backend, Conflict, EventLog, ExpectedVersion, KeyTable, NewEvent,
    ReadBound, RecordedEvent, SubjectKeys, WrappedKey,
};
use egec_commands::testing::{self, PgDropGuard};
use serde_json::json;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Environment: one fresh database per test, plus raw access for tampering.

enum Raw {
    Sqlite(PathBuf),
    Postgres(String),
}

#[allow(dead_code)]
enum Guard {
    Dir(tempfile::TempDir),
    Pg(PgDropGuard),
}

struct Env {
    stores: Stores,
    raw: Raw,
    data_dir: PathBuf,
    url: Option<String>,
    _guard: Guard,
}

impl Env {
    async fn sqlite() -> Env {
        let dir = testing::fresh_sqlite_dir();
        let data_dir = dir.path().join("data");
        let stores = open::open(None, &data_dir, 4).await.expect("open sqlite");
        assert_eq!(stores.backend(), Backend::Sqlite);
        let file = stores.sqlite.as_ref().expect("sqlite").path().to_path_buf();
        Env {
            stores,
            raw: Raw::Sqlite(file),
            data_dir,
            url: None,
            _guard: Guard::Dir(dir),
        }
    }

    async fn postgres() -> Env {
        let (url, guard) = testing::fresh_postgres().await;
        let dir = std::env::temp_dir().join("egec-unused");
        let stores = open::open(Some(&url), &dir, 8)
            .await
            .expect("open postgres");
        assert_eq!(stores.backend(), Backend::Postgres);
        Env {
            stores,
            raw: Raw::Postgres(url.clone()),
            data_dir: dir,
            url: Some(url),
            _guard: Guard::Pg(guard),
        }
    }

    fn log(&self) -> &dyn EventLog {
        self.stores.log.as_ref()
    }

    fn keys(&self) -> &dyn KeyTable {
        self.stores.keys.as_ref()
    }

    /// A second, independent handle on the same database, as another process would open it.
    async fn second_instance(&self) -> Stores {
        open::open(self.url.as_deref(), &self.data_dir, 8)
            .await
            .expect("open a second instance")
    }

    /// Runs raw SQL; `{events}` stands for the backend's event table.
    async fn exec(&self, sql: &str) {
        match &self.raw {
            Raw::Sqlite(path) => {
                let path = path.clone();
                let sql = sql.replace("{events}", "events");
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open(&path).expect("raw sqlite");
                    conn.busy_timeout(Duration::from_secs(5)).expect("busy");
                    conn.execute_batch(&sql).expect("raw sql");
                })
                .await
                .expect("join");
            }
            Raw::Postgres(url) => {
                let sql = sql.replace("{events}", "egec.events");
                let client = pg_client(url).await;
                client.batch_execute(&sql).await.expect("raw sql");
            }
        }
    }

    /// Inserts a row straight into the event table.
    async fn insert_raw(&self, e: &RecordedEvent) {
        match &self.raw {
            Raw::Sqlite(path) => {
                let path = path.clone();
                let e = e.clone();
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open(&path).expect("raw sqlite");
                    conn.execute(
                        "INSERT INTO events (global_position, stream_id, stream_version, \
                         event_id, command_id, event_type, schema_version, payload, metadata, \
                         recorded_at, prev_hash, hash) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                        rusqlite::params![
                            e.global_position,
                            e.stream_id,
                            e.stream_version,
                            e.event_id.hyphenated().to_string(),
                            e.command_id.hyphenated().to_string(),
                            e.event_type,
                            e.schema_version,
                            e.payload.to_string(),
                            e.metadata.to_string(),
                            e.recorded_at.timestamp_micros(),
                            e.prev_hash,
                            e.hash,
                        ],
                    )
                    .expect("raw insert");
                })
                .await
                .expect("join");
            }
            Raw::Postgres(url) => {
                let client = pg_client(url).await;
                client
                    .execute(
                        "INSERT INTO egec.events (global_position, stream_id, stream_version, \
                         event_id, command_id, event_type, schema_version, payload, metadata, \
                         recorded_at, prev_hash, hash) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                        &[
                            &e.global_position,
                            &e.stream_id,
                            &e.stream_version,
                            &e.event_id,
                            &e.command_id,
                            &e.event_type,
                            &e.schema_version,
                            &e.payload,
                            &e.metadata,
                            &e.recorded_at,
                            &e.prev_hash,
                            &e.hash,
                        ],
                    )
                    .await
                    .expect("raw insert");
            }
        }
    }
}

async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("raw postgres connection");
    tokio::spawn(connection);
    client
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn new_event(n: i64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "TestHappened".into(),
        schema_version: 1,
        // Unsorted keys, nesting, non-ASCII text and a large integer: all must come back
        // exactly, or the hash chain would not verify.
        payload: json!({
            "n": n,
            "zeta": "Zoë 🚀 \"quoted\" \\ back",
            "alpha": { "list": [3, 1, 2], "big": 9_007_199_254_740_993_i64, "none": null },
            "flag": true
        }),
        metadata: json!({ "actor_id": "u-1", "role": "agent", "ip": "10.0.0.1" }),
    }
}

fn request(stream: &str, expected: ExpectedVersion, events: usize) -> AppendRequest {
    AppendRequest {
        new_keys: vec![],
        stream_id: stream.into(),
        expected,
        command_id: Uuid::now_v7(),
        events: (0..events).map(|i| new_event(i as i64)).collect(),
    }
}

async fn append_one(log: &dyn EventLog, req: AppendRequest) -> Result<AppendOutcome, Conflict> {
    let mut answers = log.append_batch(vec![req]).await.expect("storage");
    assert_eq!(answers.len(), 1);
    answers.remove(0)
}

async fn append_ok(log: &dyn EventLog, req: AppendRequest) -> AppendOutcome {
    append_one(log, req).await.expect("no conflict")
}

fn versions(events: &[RecordedEvent]) -> Vec<i64> {
    events.iter().map(|e| e.stream_version).collect()
}

fn positions(events: &[RecordedEvent]) -> Vec<i64> {
    events.iter().map(|e| e.global_position).collect()
}

async fn read_everything(log: &dyn EventLog) -> Vec<RecordedEvent> {
    log.read_all(0, 1_000_000).await.expect("read_all")
}

/// Six events, one append each, alternating between two streams: positions 1..=6.
async fn six_events(env: &Env) -> Vec<RecordedEvent> {
    for i in 0..6 {
        let stream = if i % 2 == 0 {
            "customer-a"
        } else {
            "customer-b"
        };
        append_ok(env.log(), request(stream, ExpectedVersion::Any, 1)).await;
    }
    let all = read_everything(env.log()).await;
    assert_eq!(positions(&all), vec![1, 2, 3, 4, 5, 6]);
    let report = verify_chain(env.log(), 4).await.expect("verify");
    assert!(report.ok, "untampered log must verify: {report:?}");
    all
}

fn key(tag: &str) -> WrappedKey {
    WrappedKey {
        key_version: 1,
        kek_id: "kek-1".into(),
        wrapped: tag.as_bytes().to_vec(),
        fingerprint: format!("fp-{tag}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Appending: versions, conflicts, idempotency.

async fn a_stale_expected_version_is_a_conflict_and_appends_nothing(env: Env) {
    let log = env.log();
    append_ok(log, request("a", ExpectedVersion::Exact(0), 2)).await;

    let answers = log
        .append_batch(vec![
            request("a", ExpectedVersion::Exact(1), 1),
            request("b", ExpectedVersion::Exact(0), 1),
            request("c", ExpectedVersion::Any, 2),
        ])
        .await
        .expect("storage");

    assert_eq!(
        answers[0],
        Err(Conflict {
            expected: 1,
            actual: 2
        })
    );
    assert_eq!(
        answers[1],
        Ok(AppendOutcome {
            first_position: 3,
            last_position: 3,
            stream_version: 1,
            duplicate: false
        })
    );
    assert_eq!(
        answers[2],
        Ok(AppendOutcome {
            first_position: 4,
            last_position: 5,
            stream_version: 2,
            duplicate: false
        })
    );
    assert_eq!(log.stream_version("a").await.expect("version"), 2);
    let a = log
        .read_stream("a", 1, ReadBound::None)
        .await
        .expect("read");
    assert_eq!(versions(&a), vec![1, 2]);
    assert_eq!(log.head().await.expect("head").position, 5);
    assert_eq!(positions(&read_everything(log).await), vec![1, 2, 3, 4, 5]);
}

async fn a_new_stream_must_be_expected_at_version_zero(env: Env) {
    let log = env.log();
    assert_eq!(
        append_one(log, request("fresh", ExpectedVersion::Exact(1), 1)).await,
        Err(Conflict {
            expected: 1,
            actual: 0
        })
    );
    assert_eq!(log.head().await.expect("head").position, 0);
    let first = append_ok(log, request("fresh", ExpectedVersion::Exact(0), 1)).await;
    assert_eq!(first.stream_version, 1);
    assert_eq!(
        append_one(log, request("fresh", ExpectedVersion::Exact(0), 1)).await,
        Err(Conflict {
            expected: 0,
            actual: 1
        })
    );
}

async fn a_repeated_command_id_appends_nothing_and_returns_the_first_outcome(env: Env) {
    let log = env.log();
    append_ok(log, request("other", ExpectedVersion::Any, 1)).await;
    let original = request("a", ExpectedVersion::Exact(0), 2);
    let first = append_ok(log, original.clone()).await;
    assert_eq!(
        first,
        AppendOutcome {
            first_position: 2,
            last_position: 3,
            stream_version: 2,
            duplicate: false
        }
    );
    append_ok(log, request("a", ExpectedVersion::Exact(2), 1)).await;

    // The retry carries the same command id; its expected version is stale by now and its
    // events are new, yet it is answered with the first outcome and writes nothing.
    let mut retry = original.clone();
    retry.events = vec![new_event(99)];
    let again = append_ok(log, retry).await;
    assert_eq!(
        again,
        AppendOutcome {
            duplicate: true,
            ..first.clone()
        }
    );
    assert_eq!(log.head().await.expect("head").position, 4);
    assert_eq!(log.stream_version("a").await.expect("version"), 3);

    // Twice in one batch: written once, the second answered as a duplicate of the first.
    let twice = request("b", ExpectedVersion::Exact(0), 1);
    let answers = log
        .append_batch(vec![twice.clone(), twice.clone()])
        .await
        .expect("storage");
    let one = answers[0].clone().expect("first appended");
    let two = answers[1].clone().expect("second is a duplicate");
    assert!(!one.duplicate);
    assert!(two.duplicate);
    assert_eq!((one.first_position, one.last_position), (5, 5));
    assert_eq!((two.first_position, two.last_position), (5, 5));
    assert_eq!(log.stream_version("b").await.expect("version"), 1);
    assert_eq!(log.head().await.expect("head").position, 5);
}

async fn two_requests_for_one_stream_in_one_batch_see_each_other(env: Env) {
    let log = env.log();
    let answers = log
        .append_batch(vec![
            request("a", ExpectedVersion::Exact(0), 2),
            request("a", ExpectedVersion::Exact(2), 1),
        ])
        .await
        .expect("storage");
    assert_eq!(
        answers,
        vec![
            Ok(AppendOutcome {
                first_position: 1,
                last_position: 2,
                stream_version: 2,
                duplicate: false
            }),
            Ok(AppendOutcome {
                first_position: 3,
                last_position: 3,
                stream_version: 3,
                duplicate: false
            }),
        ]
    );

    let answers = log
        .append_batch(vec![
            request("a", ExpectedVersion::Exact(3), 1),
            request("a", ExpectedVersion::Exact(3), 1),
            request("a", ExpectedVersion::Exact(4), 1),
        ])
        .await
        .expect("storage");
    assert_eq!(answers[0].as_ref().map(|o| o.stream_version), Ok(4));
    assert_eq!(
        answers[1],
        Err(Conflict {
            expected: 3,
            actual: 4
        })
    );
    assert_eq!(answers[2].as_ref().map(|o| o.last_position), Ok(5));
    let a = log
        .read_stream("a", 1, ReadBound::None)
        .await
        .expect("read");
    assert_eq!(versions(&a), vec![1, 2, 3, 4, 5]);
    assert_eq!(positions(&a), vec![1, 2, 3, 4, 5]);
    let report = verify_chain(log, 2).await.expect("verify");
    assert!(report.ok, "{report:?}");
}

async fn a_request_without_events_checks_the_version_and_writes_nothing(env: Env) {
    let log = env.log();
    append_ok(log, request("a", ExpectedVersion::Any, 2)).await;
    let empty = append_ok(log, request("a", ExpectedVersion::Exact(2), 0)).await;
    assert_eq!(empty.stream_version, 2);
    assert!(empty.first_position > empty.last_position);
    assert_eq!(empty.last_position, 2);
    assert_eq!(
        append_one(log, request("a", ExpectedVersion::Exact(1), 0)).await,
        Err(Conflict {
            expected: 1,
            actual: 2
        })
    );
    assert_eq!(log.head().await.expect("head").position, 2);
}

// ---------------------------------------------------------------------------------------------
// Reading.

async fn stored_events_come_back_exactly_as_appended(env: Env) {
    let log = env.log();
    let empty = log.head().await.expect("head");
    assert_eq!(empty.position, 0);
    assert_eq!(empty.hash, GENESIS.to_vec());

    let before = Utc::now();
    let req = request("customer-1", ExpectedVersion::Exact(0), 3);
    let outcome = append_ok(log, req.clone()).await;
    let after = Utc::now();

    let stored = log
        .read_stream("customer-1", 1, ReadBound::None)
        .await
        .expect("read");
    assert_eq!(stored.len(), 3);
    let mut prev = GENESIS.to_vec();
    for (i, (e, sent)) in stored.iter().zip(&req.events).enumerate() {
        assert_eq!(e.global_position, i as i64 + 1);
        assert_eq!(e.stream_id, "customer-1");
        assert_eq!(e.stream_version, i as i64 + 1);
        assert_eq!(e.event_id, sent.event_id);
        assert_eq!(e.command_id, req.command_id);
        assert_eq!(e.event_type, sent.event_type);
        assert_eq!(e.schema_version, sent.schema_version);
        assert_eq!(e.payload, sent.payload);
        assert_eq!(e.metadata, sent.metadata);
        assert_eq!(e.recorded_at.timestamp_subsec_nanos() % 1000, 0);
        assert!(e.recorded_at >= before - chrono::Duration::microseconds(1));
        assert!(e.recorded_at <= after);
        assert_eq!(e.prev_hash, prev);
        assert_eq!(recompute(&prev, e), e.hash);
        prev = e.hash.clone();
    }
    let head = log.head().await.expect("head");
    assert_eq!(head.position, outcome.last_position);
    assert_eq!(head.hash, prev);
    assert_eq!(read_everything(log).await, stored);
}

async fn read_stream_starts_at_the_requested_version(env: Env) {
    let log = env.log();
    for _ in 0..5 {
        append_ok(log, request("a", ExpectedVersion::Any, 1)).await;
        append_ok(log, request("b", ExpectedVersion::Any, 1)).await;
    }
    let from3 = log
        .read_stream("a", 3, ReadBound::None)
        .await
        .expect("read");
    assert_eq!(versions(&from3), vec![3, 4, 5]);
    assert!(from3.iter().all(|e| e.stream_id == "a"));
    assert_eq!(positions(&from3), vec![5, 7, 9]);
    assert!(
        log.read_stream("a", 6, ReadBound::None)
            .await
            .expect("read")
            .is_empty()
    );
    assert!(
        log.read_stream("nobody", 1, ReadBound::None)
            .await
            .expect("read")
            .is_empty()
    );
    assert_eq!(log.stream_version("a").await.expect("version"), 5);
    assert_eq!(log.stream_version("nobody").await.expect("version"), 0);
}

async fn stream_reads_stop_at_a_version_a_position_or_a_time(env: Env) {
    let log = env.log();
    let first = log
        .append_batch(vec![
            request("a", ExpectedVersion::Exact(0), 2),
            request("b", ExpectedVersion::Exact(0), 1),
        ])
        .await
        .expect("storage");
    assert!(first.iter().all(Result::is_ok));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between: DateTime<Utc> = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    append_ok(log, request("a", ExpectedVersion::Exact(2), 2)).await;
    // a: versions 1,2 at positions 1,2 (early); b at 3; a: versions 3,4 at positions 4,5.

    let read = |from: i64, bound: ReadBound| async move {
        versions(&log.read_stream("a", from, bound).await.expect("read"))
    };
    assert_eq!(read(1, ReadBound::Version(3)).await, vec![1, 2, 3]);
    assert_eq!(read(2, ReadBound::Version(3)).await, vec![2, 3]);
    assert_eq!(read(1, ReadBound::Version(0)).await, Vec::<i64>::new());
    assert_eq!(read(1, ReadBound::Position(3)).await, vec![1, 2]);
    assert_eq!(read(1, ReadBound::Position(4)).await, vec![1, 2, 3]);
    assert_eq!(read(1, ReadBound::Time(between)).await, vec![1, 2]);
    assert_eq!(read(2, ReadBound::Time(between)).await, vec![2]);
    assert_eq!(
        read(1, ReadBound::Time(between - chrono::Duration::hours(1))).await,
        Vec::<i64>::new()
    );
    assert_eq!(read(1, ReadBound::None).await, vec![1, 2, 3, 4]);

    // The time bound is inclusive: an event recorded exactly at the bound is part of it.
    let all = log
        .read_stream("a", 1, ReadBound::None)
        .await
        .expect("read");
    let late = all[2].recorded_at;
    assert!(late > between);
    assert_eq!(read(1, ReadBound::Time(late)).await, vec![1, 2, 3, 4]);
    assert_eq!(
        read(1, ReadBound::Time(late - chrono::Duration::microseconds(1))).await,
        vec![1, 2]
    );
}

async fn read_all_pages_through_the_log_in_position_order(env: Env) {
    let log = env.log();
    for i in 0..4 {
        log.append_batch(vec![
            request(&format!("s{i}"), ExpectedVersion::Any, 1),
            request("shared", ExpectedVersion::Any, 2),
        ])
        .await
        .expect("storage");
    }
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = log.read_all(after, 5).await.expect("read_all");
        assert!(page.len() <= 5);
        let Some(last) = page.last() else { break };
        after = last.global_position;
        seen.extend(page);
    }
    assert_eq!(positions(&seen), (1..=12).collect::<Vec<_>>());
    assert!(log.read_all(12, 5).await.expect("read_all").is_empty());
    assert_eq!(
        positions(&log.read_all(10, 5).await.expect("read_all")),
        vec![11, 12]
    );
    assert_eq!(log.read_all(0, 0).await.expect("read_all"), Vec::new());
    assert_eq!(read_everything(log).await, seen);

    // Each event reads the same through its stream as through the global log.
    let by_id: HashMap<Uuid, &RecordedEvent> = seen.iter().map(|e| (e.event_id, e)).collect();
    for e in log
        .read_stream("shared", 1, ReadBound::None)
        .await
        .expect("read")
    {
        assert_eq!(by_id[&e.event_id], &e);
    }
}

async fn the_raw_read_answers_the_same_events_with_their_json_as_text(env: Env) {
    let log = env.log();
    six_events(&env).await;
    let parsed = read_everything(log).await;
    for (after, limit) in [(0, 1_000), (2, 3), (6, 5)] {
        let raw = log
            .read_all_raw(after, limit, true)
            .await
            .expect("read_all_raw");
        let bare = log
            .read_all_raw(after, limit, false)
            .await
            .expect("read_all_raw without metadata");
        assert!(bare.iter().all(|r| r.metadata == "{}"), "metadata left out");
        let with_bare_metadata: Vec<_> = raw
            .iter()
            .cloned()
            .map(|mut r| {
                r.metadata = "{}".to_owned();
                r
            })
            .collect();
        assert_eq!(bare, with_bare_metadata, "the rest is read all the same");
        let expected: Vec<&RecordedEvent> = parsed
            .iter()
            .filter(|e| e.global_position > after)
            .take(limit)
            .collect();
        assert_eq!(raw.len(), expected.len(), "after {after}, limit {limit}");
        for (r, e) in raw.iter().zip(expected) {
            assert_eq!(
                (
                    r.global_position,
                    &r.stream_id,
                    r.stream_version,
                    r.event_id
                ),
                (
                    e.global_position,
                    &e.stream_id,
                    e.stream_version,
                    e.event_id
                )
            );
            assert_eq!(
                (r.command_id, &r.event_type, r.schema_version, r.recorded_at),
                (e.command_id, &e.event_type, e.schema_version, e.recorded_at)
            );
            let payload: serde_json::Value = serde_json::from_str(&r.payload).expect("JSON");
            let metadata: serde_json::Value = serde_json::from_str(&r.metadata).expect("JSON");
            assert_eq!((payload, metadata), (e.payload.clone(), e.metadata.clone()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The hash chain.

async fn an_untouched_log_verifies(env: Env) {
    let report = verify_chain(env.log(), 10).await.expect("verify");
    assert!(report.ok, "an empty log verifies: {report:?}");
    assert_eq!(report.events_checked, 0);
    six_events(&env).await;
    let report = verify_chain(env.log(), 4).await.expect("verify");
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events_checked, 6);
    assert_eq!(report.first_bad_position, None);
}

fn assert_bad_at(report: &egec_commands::store::verify::VerifyReport, position: i64) {
    assert!(!report.ok, "tampering must be caught: {report:?}");
    assert_eq!(report.first_bad_position, Some(position), "{report:?}");
    assert!(report.problem.is_some());
}

async fn a_modified_payload_is_caught_at_its_position(env: Env) {
    six_events(&env).await;
    env.exec(
        r#"UPDATE {events} SET payload = '{"n": 0, "tampered": true}' WHERE global_position = 3"#,
    )
    .await;
    let report = verify_chain(env.log(), 4).await.expect("verify");
    assert_bad_at(&report, 3);
    assert_eq!(report.events_checked, 2);
}

async fn a_modified_metadata_field_is_caught_at_its_position(env: Env) {
    six_events(&env).await;
    env.exec(r#"UPDATE {events} SET metadata = '{"actor_id": "someone-else"}' WHERE global_position = 6"#)
        .await;
    assert_bad_at(&verify_chain(env.log(), 4).await.expect("verify"), 6);
}

async fn a_row_deleted_from_the_middle_is_caught_at_its_position(env: Env) {
    six_events(&env).await;
    env.exec("DELETE FROM {events} WHERE global_position = 3")
        .await;
    assert_bad_at(&verify_chain(env.log(), 4).await.expect("verify"), 3);
}

async fn rows_deleted_from_the_end_are_caught_by_the_log_head(env: Env) {
    six_events(&env).await;
    env.exec("DELETE FROM {events} WHERE global_position >= 5")
        .await;
    assert_bad_at(&verify_chain(env.log(), 4).await.expect("verify"), 5);
}

async fn the_last_row_deleted_alone_is_caught_by_the_log_head(env: Env) {
    six_events(&env).await;
    env.exec("DELETE FROM {events} WHERE global_position = 6")
        .await;
    assert_bad_at(&verify_chain(env.log(), 10).await.expect("verify"), 6);
}

/// A forged event that links correctly to the event before `position`, as an attacker who
/// knows the hash function would build it.
fn forge(template: &RecordedEvent, position: i64, prev_hash: &[u8]) -> RecordedEvent {
    let mut forged = template.clone();
    forged.global_position = position;
    forged.stream_id = "forged".into();
    forged.stream_version = 1;
    forged.event_id = Uuid::now_v7();
    forged.command_id = Uuid::now_v7();
    forged.payload = json!({ "forged": true });
    forged.prev_hash = prev_hash.to_vec();
    forged.hash = recompute(prev_hash, &forged);
    forged
}

async fn a_row_inserted_in_the_middle_is_caught(env: Env) {
    let all = six_events(&env).await;
    // Make room at position 3 by moving every later row up by one, then insert a forged
    // event that links perfectly to position 2. The shifted rows no longer match.
    env.exec(
        "UPDATE {events} SET global_position = -(global_position + 1) WHERE global_position >= 3; \
         UPDATE {events} SET global_position = -global_position WHERE global_position < 0;",
    )
    .await;
    env.insert_raw(&forge(&all[2], 3, &all[1].hash)).await;
    assert_bad_at(&verify_chain(env.log(), 4).await.expect("verify"), 4);
}

async fn a_row_added_behind_the_logs_back_is_caught(env: Env) {
    let all = six_events(&env).await;
    env.insert_raw(&forge(&all[5], 7, &all[5].hash)).await;
    let report = verify_chain(env.log(), 4).await.expect("verify");
    assert_bad_at(&report, 7);
}

async fn a_swapped_pair_of_rows_is_caught(env: Env) {
    six_events(&env).await;
    env.exec(
        "UPDATE {events} SET global_position = -3 WHERE global_position = 3; \
         UPDATE {events} SET global_position = 3 WHERE global_position = 4; \
         UPDATE {events} SET global_position = 4 WHERE global_position = -3;",
    )
    .await;
    assert_bad_at(&verify_chain(env.log(), 4).await.expect("verify"), 3);
}

async fn a_rewritten_hash_is_caught(env: Env) {
    let all = six_events(&env).await;
    // Change an event and recompute its own hash: the next event's link then breaks.
    let mut changed = all[3].clone();
    changed.payload = json!({ "rewritten": true });
    changed.hash = recompute(&changed.prev_hash, &changed);
    env.exec("DELETE FROM {events} WHERE global_position = 4")
        .await;
    env.insert_raw(&changed).await;
    assert_bad_at(&verify_chain(env.log(), 4).await.expect("verify"), 5);
}

// ---------------------------------------------------------------------------------------------
// The key table.

async fn live_subjects_are_listed_by_literal_prefix_without_destroyed_ones(env: Env) {
    let keys = env.keys();
    for subject in [
        "retention-202401",
        "retention-202402",
        "retention-202403",
        "retentionX202404",
        "customer-1",
        "ret%-1",
    ] {
        keys.create(subject, key(subject)).await.expect("create");
    }
    keys.destroy("retention-202402").await.expect("destroy");
    assert_eq!(
        keys.live_subjects("retention-").await.expect("list"),
        vec!["retention-202401".to_owned(), "retention-202403".to_owned()]
    );
    // `%` and `_` are not patterns.
    assert_eq!(
        keys.live_subjects("ret%").await.expect("list"),
        vec!["ret%-1".to_owned()]
    );
    assert_eq!(
        keys.live_subjects("retention_").await.expect("list"),
        Vec::<String>::new()
    );
}

async fn a_subject_key_is_created_once_and_loaded_back(env: Env) {
    let keys = env.keys();
    assert_eq!(keys.load("s1").await.expect("load"), SubjectKeys::None);
    let created = keys.create("s1", key("first")).await.expect("create");
    assert_eq!(created, SubjectKeys::Active(vec![key("first")]));
    // A second create finds the first key and keeps it.
    let again = keys.create("s1", key("second")).await.expect("create");
    assert_eq!(again, SubjectKeys::Active(vec![key("first")]));
    assert_eq!(
        keys.load("s1").await.expect("load"),
        SubjectKeys::Active(vec![key("first")])
    );
    keys.create("s2", key("other")).await.expect("create");
    assert_eq!(
        keys.all_keys().await.expect("all"),
        vec![
            ("s1".to_owned(), key("first")),
            ("s2".to_owned(), key("other"))
        ]
    );
}

async fn two_racing_creates_leave_exactly_one_key(env: Env) {
    let keys = env.stores.keys.clone();
    for i in 0..20 {
        let subject = format!("race-{i}");
        let (a, b) = tokio::join!(
            {
                let keys = keys.clone();
                let subject = subject.clone();
                tokio::spawn(async move { keys.create(&subject, key("left")).await })
            },
            {
                let keys = keys.clone();
                let subject = subject.clone();
                tokio::spawn(async move { keys.create(&subject, key("right")).await })
            }
        );
        let a = a.expect("join").expect("create");
        let b = b.expect("join").expect("create");
        assert_eq!(a, b, "both creators must be answered with the winning key");
        let SubjectKeys::Active(won) = &a else {
            panic!("expected an active key, got {a:?}")
        };
        assert_eq!(won.len(), 1);
        assert!(won[0] == key("left") || won[0] == key("right"));
        assert_eq!(keys.load(&subject).await.expect("load"), a);
    }
}

async fn destroying_a_subject_returns_its_fingerprints_and_refuses_new_keys(env: Env) {
    let keys = env.keys();
    keys.create("gone", key("k")).await.expect("create");
    keys.create("kept", key("other")).await.expect("create");
    assert_eq!(
        keys.destroy("gone").await.expect("destroy"),
        vec!["fp-k".to_owned()]
    );
    assert_eq!(keys.load("gone").await.expect("load"), SubjectKeys::Erased);
    assert_eq!(
        keys.create("gone", key("again")).await.expect("create"),
        SubjectKeys::Erased
    );
    assert_eq!(keys.load("gone").await.expect("load"), SubjectKeys::Erased);
    assert_eq!(
        keys.all_keys().await.expect("all"),
        vec![("kept".to_owned(), key("other"))]
    );
    // Idempotent.
    assert!(keys.destroy("gone").await.expect("destroy").is_empty());
    assert_eq!(keys.load("gone").await.expect("load"), SubjectKeys::Erased);
    // A subject erased before it ever had a key can never get one.
    assert!(
        keys.destroy("never-keyed")
            .await
            .expect("destroy")
            .is_empty()
    );
    assert_eq!(
        keys.create("never-keyed", key("late"))
            .await
            .expect("create"),
        SubjectKeys::Erased
    );
    assert_eq!(
        keys.load("kept").await.expect("load"),
        SubjectKeys::Active(vec![key("other")])
    );
}

async fn a_create_racing_a_destroy_never_leaves_a_key_beside_the_tombstone(env: Env) {
    let keys = env.stores.keys.clone();
    for i in 0..20 {
        let subject = format!("erase-race-{i}");
        let creator = {
            let keys = keys.clone();
            let subject = subject.clone();
            tokio::spawn(async move { keys.create(&subject, key("k")).await })
        };
        let destroyer = {
            let keys = keys.clone();
            let subject = subject.clone();
            tokio::spawn(async move { keys.destroy(&subject).await })
        };
        let created = creator.await.expect("join").expect("create");
        let destroyed = destroyer.await.expect("join").expect("destroy");
        // Either order is fine, but never both a live key and a tombstone.
        match created {
            SubjectKeys::Erased => assert!(destroyed.is_empty()),
            SubjectKeys::Active(_) => assert_eq!(destroyed, vec!["fp-k".to_owned()]),
            SubjectKeys::None => panic!("create never answers None"),
        }
        assert_eq!(
            keys.load(&subject).await.expect("load"),
            SubjectKeys::Erased
        );
    }
    assert!(keys.all_keys().await.expect("all").is_empty());
}

fn creating(stream: &str, subject: &str, tag: &str) -> AppendRequest {
    let mut req = request(stream, ExpectedVersion::Exact(0), 1);
    req.new_keys.push((subject.to_owned(), key(tag)));
    req
}

async fn a_new_subjects_key_is_stored_with_its_first_events(env: Env) {
    let log = env.log();
    let answers = log
        .append_batch(vec![
            creating("customer-1", "s1", "one"),
            request("other", ExpectedVersion::Any, 1),
            creating("customer-2", "s2", "two"),
        ])
        .await
        .expect("storage");
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(
        env.keys().load("s1").await.expect("load"),
        SubjectKeys::Active(vec![key("one")])
    );
    assert_eq!(
        env.keys().load("s2").await.expect("load"),
        SubjectKeys::Active(vec![key("two")])
    );
    assert_eq!(positions(&read_everything(log).await), vec![1, 2, 3]);
    let report = verify_chain(log, 4).await.expect("verify");
    assert!(report.ok, "{report:?}");
    // A repeated command creates nothing more and is answered as a duplicate.
    let mut again = creating("customer-3", "s3", "three");
    let first = append_ok(log, again.clone()).await;
    again.new_keys = vec![("s3".to_owned(), key("other"))];
    let dup = append_ok(log, again).await;
    assert!(dup.duplicate);
    assert_eq!(dup.last_position, first.last_position);
    assert_eq!(
        env.keys().load("s3").await.expect("load"),
        SubjectKeys::Active(vec![key("three")])
    );
}

async fn a_request_whose_subject_was_erased_is_refused_and_appends_nothing(env: Env) {
    let log = env.log();
    env.keys().destroy("gone").await.expect("destroy");
    let answers = log
        .append_batch(vec![
            creating("customer-gone", "gone", "late"),
            creating("customer-ok", "fine", "ok"),
        ])
        .await
        .expect("storage");
    // The stream itself was fine, so the conflict names its version twice.
    assert_eq!(
        answers[0],
        Err(Conflict {
            expected: 0,
            actual: 0
        })
    );
    let ok = answers[1].clone().expect("the neighbour is appended");
    assert_eq!((ok.first_position, ok.last_position), (1, 1));
    assert_eq!(
        log.stream_version("customer-gone").await.expect("version"),
        0
    );
    assert_eq!(
        env.keys().load("gone").await.expect("load"),
        SubjectKeys::Erased
    );
    assert_eq!(
        env.keys().all_keys().await.expect("all"),
        vec![("fine".to_owned(), key("ok"))]
    );
    let report = verify_chain(log, 4).await.expect("verify");
    assert!(report.ok, "{report:?}");
}

async fn a_request_whose_subject_already_has_a_key_is_refused(env: Env) {
    let log = env.log();
    env.keys()
        .create("known", key("stored"))
        .await
        .expect("create");
    let answers = log
        .append_batch(vec![
            creating("customer-a", "known", "mine"),
            creating("customer-b", "twice", "first"),
            // The same new subject twice in one batch: only the first creates it.
            creating("customer-c", "twice", "second"),
        ])
        .await
        .expect("storage");
    assert_eq!(
        answers[0],
        Err(Conflict {
            expected: 0,
            actual: 0
        })
    );
    assert!(answers[1].is_ok());
    assert_eq!(
        answers[2],
        Err(Conflict {
            expected: 0,
            actual: 0
        })
    );
    assert_eq!(positions(&read_everything(log).await), vec![1]);
    assert_eq!(
        env.keys().load("known").await.expect("load"),
        SubjectKeys::Active(vec![key("stored")])
    );
    assert_eq!(
        env.keys().load("twice").await.expect("load"),
        SubjectKeys::Active(vec![key("first")])
    );
}

async fn an_append_creating_a_key_racing_a_destroy_never_leaves_a_key_beside_the_tombstone(
    env: Env,
) {
    let log = env.stores.log.clone();
    let keys = env.stores.keys.clone();
    for i in 0..20 {
        let subject = format!("append-race-{i}");
        let appender = {
            let log = log.clone();
            let req = creating(&format!("stream-{i}"), &subject, "k");
            tokio::spawn(async move { log.append_batch(vec![req]).await })
        };
        let destroyer = {
            let keys = keys.clone();
            let subject = subject.clone();
            tokio::spawn(async move { keys.destroy(&subject).await })
        };
        let appended = appender.await.expect("join").expect("storage").remove(0);
        let destroyed = destroyer.await.expect("join").expect("destroy");
        match appended {
            Ok(_) => assert_eq!(destroyed, vec!["fp-k".to_owned()]),
            Err(_) => assert!(destroyed.is_empty()),
        }
        assert_eq!(
            keys.load(&subject).await.expect("load"),
            SubjectKeys::Erased
        );
    }
    assert!(keys.all_keys().await.expect("all").is_empty());
}

async fn many_subjects_load_in_one_call(env: Env) {
    let keys = env.keys();
    keys.create("a", key("a")).await.expect("create");
    keys.create("b", key("b")).await.expect("create");
    keys.destroy("b").await.expect("destroy");
    keys.destroy("c").await.expect("destroy");
    let asked: Vec<String> = ["a", "b", "c", "d", "a"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let loaded = keys.load_many(&asked).await.expect("load_many");
    assert_eq!(loaded.len(), 4);
    assert_eq!(loaded["a"], SubjectKeys::Active(vec![key("a")]));
    assert_eq!(loaded["b"], SubjectKeys::Erased);
    assert_eq!(loaded["c"], SubjectKeys::Erased);
    assert_eq!(loaded["d"], SubjectKeys::None);
    for subject in ["a", "b", "c", "d"] {
        assert_eq!(
            loaded[subject],
            keys.load(subject).await.expect("load"),
            "{subject}"
        );
    }
    assert!(keys.load_many(&[]).await.expect("empty").is_empty());
}

async fn rewrapping_replaces_the_wrapping_but_never_the_key(env: Env) {
    let keys = env.keys();
    keys.create("s", key("k")).await.expect("create");
    let rewrapped = WrappedKey {
        kek_id: "kek-2".into(),
        wrapped: b"wrapped-by-kek-2".to_vec(),
        ..key("k")
    };
    keys.rewrap("s", rewrapped.clone()).await.expect("rewrap");
    assert_eq!(
        keys.load("s").await.expect("load"),
        SubjectKeys::Active(vec![rewrapped.clone()])
    );
    let other_material = WrappedKey {
        fingerprint: "fp-different".into(),
        ..rewrapped.clone()
    };
    assert!(keys.rewrap("s", other_material).await.is_err());
    assert_eq!(
        keys.load("s").await.expect("load"),
        SubjectKeys::Active(vec![rewrapped.clone()])
    );
    // Erased in the meantime: nothing to rewrap, and no key comes back.
    keys.destroy("s").await.expect("destroy");
    keys.rewrap("s", rewrapped).await.expect("rewrap of erased");
    assert_eq!(keys.load("s").await.expect("load"), SubjectKeys::Erased);
}

// ---------------------------------------------------------------------------------------------
// Opening and concurrency.

async fn opening_an_existing_database_again_keeps_its_data(env: Env) {
    six_events(&env).await;
    let again = env.second_instance().await;
    assert_eq!(again.log.head().await.expect("head").position, 6);
    let report = verify_chain(again.log.as_ref(), 100).await.expect("verify");
    assert!(report.ok, "{report:?}");
}

const WRITERS: usize = 16;
const INCREMENTS: usize = 15;
const STREAMS: usize = 4;

struct WriterResult {
    /// Successful appends per stream.
    successes: HashMap<String, i64>,
    conflicts: usize,
}

/// One writer: read the stream's version, append expecting exactly that version, and on a
/// conflict read again and retry, until it has made `INCREMENTS` successful appends.
async fn writer(appender: Appender, log: Arc<dyn EventLog>, id: usize) -> WriterResult {
    let mut successes = HashMap::new();
    let mut conflicts = 0;
    for j in 0..INCREMENTS {
        let stream = format!("counter-{}", (id + j) % STREAMS);
        loop {
            let read = log.stream_version(&stream).await.expect("read version");
            let req = AppendRequest {
                new_keys: vec![],
                stream_id: stream.clone(),
                expected: ExpectedVersion::Exact(read),
                command_id: Uuid::now_v7(),
                events: vec![NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: "Incremented".into(),
                    schema_version: 1,
                    payload: json!({ "writer": id, "j": j, "read_version": read }),
                    metadata: json!({}),
                }],
            };
            match appender.append(req).await {
                Ok(outcome) => {
                    assert!(!outcome.duplicate);
                    assert_eq!(outcome.stream_version, read + 1);
                    assert_eq!(outcome.first_position, outcome.last_position);
                    *successes.entry(stream.clone()).or_insert(0) += 1;
                    break;
                }
                Err(AppendError::Conflict(c)) => {
                    assert_eq!(c.expected, read);
                    assert!(
                        c.actual > read,
                        "a conflict means the stream moved on: {c:?}"
                    );
                    conflicts += 1;
                }
                Err(e) => panic!("append failed: {e}"),
            }
        }
    }
    WriterResult {
        successes,
        conflicts,
    }
}

/// Follows the log with `read_all` while it is written, as a projection would, and returns
/// every position it saw, failing if one is ever skipped or seen twice.
fn subscriber(
    log: Arc<dyn EventLog>,
    head: tokio::sync::watch::Receiver<i64>,
    total: i64,
) -> tokio::task::JoinHandle<Vec<i64>> {
    tokio::spawn(async move {
        let mut head = head;
        let mut seen = Vec::new();
        let mut last = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while last < total {
            assert!(
                tokio::time::Instant::now() < deadline,
                "subscriber stalled at {last}"
            );
            let page = log.read_all(last, 7).await.expect("read_all");
            if page.is_empty() {
                // Wake on the appender's head, but also poll: appends from another instance
                // do not move this appender's head.
                let _ = tokio::time::timeout(Duration::from_millis(20), head.changed()).await;
                continue;
            }
            for e in page {
                assert_eq!(
                    e.global_position,
                    last + 1,
                    "the subscriber skipped or repeated a position"
                );
                last = e.global_position;
                seen.push(last);
            }
        }
        seen
    })
}

async fn check_after_concurrent_writers(log: &dyn EventLog, results: Vec<WriterResult>) {
    let total = (WRITERS * INCREMENTS) as i64;
    let mut successes: HashMap<String, i64> = HashMap::new();
    let mut conflicts = 0;
    for r in results {
        conflicts += r.conflicts;
        for (stream, n) in r.successes {
            *successes.entry(stream).or_insert(0) += n;
        }
    }
    assert_eq!(successes.values().sum::<i64>(), total);
    // Without contention this test would prove nothing about lost updates.
    assert!(conflicts > 0, "the writers never contended");

    for (stream, n) in &successes {
        assert_eq!(
            log.stream_version(stream).await.expect("version"),
            *n,
            "lost update on {stream}"
        );
        let events = log
            .read_stream(stream, 1, ReadBound::None)
            .await
            .expect("read");
        assert_eq!(versions(&events), (1..=*n).collect::<Vec<_>>());
        for e in &events {
            // Every success was decided on the version just before it: no two writers ever
            // both succeeded from the same read.
            assert_eq!(e.payload["read_version"], json!(e.stream_version - 1));
        }
    }
    let all = read_everything(log).await;
    assert_eq!(positions(&all), (1..=total).collect::<Vec<_>>());
    let head = log.head().await.expect("head");
    assert_eq!(head.position, total);
    let report = verify_chain(log, 50).await.expect("verify");
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events_checked, total);
}

async fn sixteen_writers_through_one_appender_lose_no_update_and_leave_no_gap(env: Env) {
    let log = env.stores.log.clone();
    let appender = Appender::spawn(log.clone(), 64);
    let total = (WRITERS * INCREMENTS) as i64;
    let follower = subscriber(log.clone(), appender.subscribe_head(), total);

    let writers: Vec<_> = (0..WRITERS)
        .map(|id| tokio::spawn(writer(appender.clone(), log.clone(), id)))
        .collect();
    let mut results = Vec::new();
    for w in writers {
        results.push(w.await.expect("writer"));
    }
    let seen = follower.await.expect("subscriber");
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
    assert_eq!(*appender.subscribe_head().borrow(), total);
    check_after_concurrent_writers(log.as_ref(), results).await;
}

async fn two_instances_on_one_database_keep_positions_dense(env: Env) {
    let first = env.stores.log.clone();
    let second = env.second_instance().await.log;
    let appenders = [
        Appender::spawn(first.clone(), 64),
        Appender::spawn(second.clone(), 64),
    ];
    let total = (WRITERS * INCREMENTS) as i64;
    let follower = subscriber(first.clone(), appenders[0].subscribe_head(), total);

    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            let (appender, log) = if id % 2 == 0 {
                (appenders[0].clone(), first.clone())
            } else {
                (appenders[1].clone(), second.clone())
            };
            tokio::spawn(writer(appender, log, id))
        })
        .collect();
    let mut results = Vec::new();
    for w in writers {
        results.push(w.await.expect("writer"));
    }
    let seen = follower.await.expect("subscriber");
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
    check_after_concurrent_writers(first.as_ref(), results).await;
    // Both instances see the same log.
    let a: BTreeMap<i64, Vec<u8>> = read_everything(first.as_ref())
        .await
        .into_iter()
        .map(|e| (e.global_position, e.hash))
        .collect();
    let b: BTreeMap<i64, Vec<u8>> = read_everything(second.as_ref())
        .await
        .into_iter()
        .map(|e| (e.global_position, e.hash))
        .collect();
    assert_eq!(a, b);
}

// ---------------------------------------------------------------------------------------------
// Instantiation for both backends.

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Env::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Env::postgres().await).await;
                }
            )*
        }
    };
}

conformance!(
    a_stale_expected_version_is_a_conflict_and_appends_nothing,
    a_new_stream_must_be_expected_at_version_zero,
    a_repeated_command_id_appends_nothing_and_returns_the_first_outcome,
    two_requests_for_one_stream_in_one_batch_see_each_other,
    a_request_without_events_checks_the_version_and_writes_nothing,
    stored_events_come_back_exactly_as_appended,
    read_stream_starts_at_the_requested_version,
    stream_reads_stop_at_a_version_a_position_or_a_time,
    read_all_pages_through_the_log_in_position_order,
    the_raw_read_answers_the_same_events_with_their_json_as_text,
    an_untouched_log_verifies,
    a_modified_payload_is_caught_at_its_position,
    a_modified_metadata_field_is_caught_at_its_position,
    a_row_deleted_from_the_middle_is_caught_at_its_position,
    rows_deleted_from_the_end_are_caught_by_the_log_head,
    the_last_row_deleted_alone_is_caught_by_the_log_head,
    a_row_inserted_in_the_middle_is_caught,
    a_row_added_behind_the_logs_back_is_caught,
    a_swapped_pair_of_rows_is_caught,
    a_rewritten_hash_is_caught,
    a_subject_key_is_created_once_and_loaded_back,
    live_subjects_are_listed_by_literal_prefix_without_destroyed_ones,
    two_racing_creates_leave_exactly_one_key,
    destroying_a_subject_returns_its_fingerprints_and_refuses_new_keys,
    a_create_racing_a_destroy_never_leaves_a_key_beside_the_tombstone,
    rewrapping_replaces_the_wrapping_but_never_the_key,
    a_new_subjects_key_is_stored_with_its_first_events,
    a_request_whose_subject_was_erased_is_refused_and_appends_nothing,
    a_request_whose_subject_already_has_a_key_is_refused,
    an_append_creating_a_key_racing_a_destroy_never_leaves_a_key_beside_the_tombstone,
    many_subjects_load_in_one_call,
    opening_an_existing_database_again_keeps_its_data,
    sixteen_writers_through_one_appender_lose_no_update_and_leave_no_gap,
    two_instances_on_one_database_keep_positions_dense,
);
