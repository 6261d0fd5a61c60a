//! Time limits per query class and pool settings of the PostgreSQL backend, against the real
//! server: an interactive statement stuck behind a lock is cancelled by its
//! `statement_timeout` and the log works again afterwards; migrations (maintenance) wait past
//! that limit but not past their own; a caller that finds no free connection gets a timeout
//! instead of hanging; and each pool's sessions carry their class's settings and role.

use std::time::{Duration, Instant};

use egec_commands::store::postgres::{PgLog, PgSettings};
use egec_commands::store::{AppendRequest, EventLog, ExpectedVersion, NewEvent, StoreError};
use egec_commands::testing::fresh_postgres;
use serde_json::json;
use tokio_postgres::NoTls;
use uuid::Uuid;

/// The advisory lock the migrations take ("EGEC", 1), as `PgLog::migrate` does.
const MIGRATION_LOCK: (i32, i32) = (0x4547_4543, 1);

fn request(stream: &str) -> AppendRequest {
    AppendRequest {
        new_keys: vec![],
        stream_id: stream.into(),
        expected: ExpectedVersion::Any,
        command_id: Uuid::now_v7(),
        events: vec![NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "TestHappened".into(),
            schema_version: 1,
            payload: json!({ "n": 1 }),
            metadata: json!({}),
        }],
    }
}

fn short(statement_ms: u64) -> PgSettings {
    PgSettings {
        pool_size: 4,
        statement_timeout: Duration::from_millis(statement_ms),
        maintenance_statement_timeout: Duration::ZERO,
        acquire_timeout: Duration::from_millis(300),
        ..PgSettings::default()
    }
}

/// A plain connection of the test's own, outside every pool.
async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// A session holding the migration lock, as another node migrating would; dropping the
/// client ends the session and so releases the lock.
async fn migration_lock_held_by_another_node(url: &str) -> tokio_postgres::Client {
    let holder = raw(url).await;
    holder
        .execute(
            "SELECT pg_advisory_lock($1, $2)",
            &[&MIGRATION_LOCK.0, &MIGRATION_LOCK.1],
        )
        .await
        .unwrap();
    holder
}

#[tokio::test]
async fn an_append_stuck_behind_a_held_counter_row_is_cancelled_by_the_statement_timeout() {
    let (url, _guard) = fresh_postgres().await;
    let log = PgLog::connect_with(&url, &short(400))
        .await
        .expect("connect");
    let mut blocker = raw(&url).await;
    let tx = blocker.transaction().await.unwrap();
    tx.execute("SELECT position FROM egec.log_head FOR UPDATE", &[])
        .await
        .unwrap();

    let started = Instant::now();
    let err = log
        .append_batch(vec![request("s-1")])
        .await
        .expect_err("the append cannot take the counter row");
    let waited = started.elapsed();
    assert!(err.is_timeout(), "not a timeout: {err}");
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_secs(5),
        "cancelled after {waited:?}"
    );

    tx.rollback().await.unwrap();
    // Nothing of the cancelled append was recorded, and the log takes the next one.
    assert!(log.read_all(0, 10).await.unwrap().is_empty());
    let answers = log.append_batch(vec![request("s-1")]).await.unwrap();
    assert_eq!(answers[0].as_ref().unwrap().last_position, 1);
}

#[tokio::test]
async fn migrations_wait_for_another_nodes_migration_past_the_interactive_limit() {
    let (url, _guard) = fresh_postgres().await;
    let holder = migration_lock_held_by_another_node(&url).await;
    let connecting = {
        let url = url.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let log = PgLog::connect_with(&url, &short(200)).await;
            (log, started.elapsed())
        })
    };
    // Five interactive time limits long, "another node" migrates.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // "Another node" finishes migrating: its session ends, and with it the lock.
    drop(holder);
    let (log, waited) = connecting.await.unwrap();
    let log = log.expect("the migration waited for the lock and ran");
    assert!(
        waited >= Duration::from_millis(900),
        "waited only {waited:?}"
    );
    assert_eq!(log.head().await.unwrap().position, 0);
}

#[tokio::test]
async fn a_migration_stuck_past_the_maintenance_limit_fails_with_a_timeout() {
    let (url, _guard) = fresh_postgres().await;
    let _holder = migration_lock_held_by_another_node(&url).await;
    let settings = PgSettings {
        maintenance_statement_timeout: Duration::from_millis(300),
        ..short(10_000)
    };
    let started = Instant::now();
    let err = PgLog::connect_with(&url, &settings)
        .await
        .expect_err("the lock is never released");
    assert!(err.is_timeout(), "not a timeout: {err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_caller_that_finds_no_free_connection_gets_a_timeout_instead_of_waiting_forever() {
    let (url, _guard) = fresh_postgres().await;
    let settings = PgSettings {
        pool_size: 1,
        ..short(10_000)
    };
    let log = PgLog::connect_with(&url, &settings).await.expect("connect");
    let held = log.pool().get().await.unwrap();
    let started = Instant::now();
    let err = log
        .read_all(0, 10)
        .await
        .expect_err("the only connection is held");
    assert!(matches!(err, StoreError::Pool(_)), "{err}");
    assert!(err.is_timeout(), "not a timeout: {err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(held);
    assert!(log.read_all(0, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn each_pools_sessions_carry_their_class_limits() {
    let (url, _guard) = fresh_postgres().await;
    let settings = PgSettings {
        statement_timeout: Duration::from_millis(1234),
        maintenance_statement_timeout: Duration::from_secs(600),
        idle_in_transaction_timeout: Duration::from_secs(42),
        ..PgSettings::default()
    };
    let log = PgLog::connect_with(&url, &settings).await.expect("connect");
    let show = |pool: deadpool_postgres::Pool, setting: &'static str| async move {
        let conn = pool.get().await.unwrap();
        let row = conn
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .unwrap();
        row.get::<_, String>(0)
    };
    assert_eq!(show(log.pool(), "statement_timeout").await, "1234ms");
    assert_eq!(
        show(log.maintenance_pool(), "statement_timeout").await,
        "10min"
    );
    for pool in [log.pool(), log.maintenance_pool()] {
        assert_eq!(
            show(pool, "idle_in_transaction_session_timeout").await,
            "42s"
        );
    }
    // A transaction left idle past its limit is ended by the server, releasing its locks.
    let settings = PgSettings {
        idle_in_transaction_timeout: Duration::from_millis(300),
        ..PgSettings::default()
    };
    let log = PgLog::connect_with(&url, &settings).await.expect("connect");
    let mut conn = log.pool().get().await.unwrap();
    let tx = conn.transaction().await.unwrap();
    tx.execute("SELECT position FROM egec.log_head FOR UPDATE", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(tx.execute("SELECT 1", &[]).await.is_err());
    drop(tx);
    drop(conn);
    let answers = log.append_batch(vec![request("s-2")]).await.unwrap();
    assert!(answers[0].is_ok());
}

#[tokio::test]
async fn the_switch_of_the_log_from_jsonb_to_json_keeps_every_event_and_the_hash_chain() {
    let (url, _guard) = fresh_postgres().await;
    let log = PgLog::connect(&url, 2).await.expect("connect");
    // The log as it was before migration V6: jsonb columns, written through them.
    let admin = raw(&url).await;
    admin
        .batch_execute(
            "ALTER TABLE egec.events ALTER COLUMN payload TYPE jsonb, \
             ALTER COLUMN metadata TYPE jsonb",
        )
        .await
        .unwrap();
    let mut requests = Vec::new();
    for i in 0..50 {
        let mut req = request(&format!("s-{}", i % 7));
        // Unsorted keys, nesting, escapes, non-ASCII text and a large integer: what jsonb
        // normalises (key order, spacing) must not matter to the chain.
        req.events[0].payload = json!({
            "zeta": format!("Zoë 🚀 \"{i}\" \\ back"),
            "alpha": { "list": [3, 1, 2], "big": 9_007_199_254_740_993_i64, "none": null },
            "n": i,
        });
        req.events[0].metadata =
            json!({ "occurred_at": "2026-11-30T02:00:00.123456Z", "b": 1, "a": [] });
        requests.push(req);
    }
    for req in requests {
        log.append_batch(vec![req]).await.unwrap()[0]
            .as_ref()
            .unwrap();
    }
    let before = log.read_all(0, 100).await.unwrap();
    assert_eq!(before.len(), 50);

    admin
        .batch_execute(include_str!(
            "../../migrations/postgres/V6__log_json_text.sql"
        ))
        .await
        .unwrap();
    let kind: String = admin
        .query_one(
            "SELECT data_type FROM information_schema.columns \
             WHERE table_schema = 'egec' AND table_name = 'events' AND column_name = 'payload'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kind, "json");
    // A node starts after the migration (statements prepared before it would no longer
    // match the column types: the upgrade stops every node first, see the migration).
    drop(log);
    let log = PgLog::connect(&url, 2).await.expect("reconnect");
    let after = log.read_all(0, 100).await.unwrap();
    assert_eq!(after, before);
    let report = egec_commands::store::verify::verify_chain(&log, 16)
        .await
        .unwrap();
    assert!(report.ok, "{:?}", report.problem);
    assert_eq!(report.events_checked, 50);
    // And appends go on, chained to what was converted.
    log.append_batch(vec![request("s-x")]).await.unwrap()[0]
        .as_ref()
        .unwrap();
    let report = egec_commands::store::verify::verify_chain(&log, 16)
        .await
        .unwrap();
    assert!(report.ok && report.events_checked == 51, "{report:?}");
}

#[tokio::test]
async fn a_build_refuses_a_database_migrated_by_a_newer_build() {
    let (url, _guard) = fresh_postgres().await;
    drop(PgLog::connect(&url, 1).await.expect("migrates"));
    raw(&url)
        .await
        .execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
             VALUES (999, 'from_the_future', '2027-01-01', '0')",
            &[],
        )
        .await
        .unwrap();
    let err = PgLog::connect(&url, 1)
        .await
        .expect_err("this build does not know V999");
    assert!(matches!(err, StoreError::Config(_)), "{err}");
    assert!(err.to_string().contains("V999"), "{err}");
}
