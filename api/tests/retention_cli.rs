//! `egec retention apply` and the start-up retention run of `egec serve`, black-box: the
//! binary destroys month keys past `EGEC_RETENTION_MONTHS`, prints them, and the log's
//! history then shows those months' IP addresses as `[EXPIRED]`.

mod common;

use chrono::{DateTime, Months, Utc};
use common::Store;
use egec_domain::event::{DomainEvent, Metadata};
use egec_domain::user::{LoginEvent, LoginFailure, login_stream_id};
use egec_domain::{Personal, UserId};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const OLD_IP: &str = "203.0.113.41";

/// Writes, in-process on the same store the binary uses, a failed login dated `at` from
/// `OLD_IP`; answers its stream.
async fn old_failed_login(store: &Store, at: DateTime<Utc>) -> String {
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert(
        "EGEC_DATA_DIR".into(),
        store.dir.path().display().to_string(),
    );
    env.insert("EGEC_MASTER_KEY".into(), "22".repeat(32));
    env.insert(
        "EGEC_JWT_SECRET".into(),
        "cli-test-secret-cli-test-secret-xx".into(),
    );
    if let Some(url) = &store.database_url {
        env.insert("DATABASE_URL".into(), url.clone());
    }
    let config = egec_api::config::Config::from_source(&env).unwrap();
    let core = egec_api::state::open_core(&config).await.unwrap();
    let user = UserId::from_uuid(uuid::Uuid::now_v7());
    let stream = login_stream_id(user, at);
    let mut meta = Metadata::system(uuid::Uuid::now_v7(), at);
    meta.ip = Some(Personal::Known(OLD_IP.to_owned()));
    core.bus
        .record(
            &stream,
            &user.subject(),
            &meta,
            &[DomainEvent::Login(LoginEvent::Failed {
                user_id: user,
                reason: LoginFailure::WrongPassword,
                at,
            })],
        )
        .await
        .unwrap();
    stream
}

fn json_out(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn history_ip(store: &Store, stream: &str) -> Value {
    let out = store.run(&["replay", "history", stream], None);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().next().expect("one event");
    serde_json::from_str::<Value>(line).unwrap()["ip"].clone()
}

async fn the_cli_expires_old_months_once_and_serve_does_it_at_start_up(store: Store) {
    let now = Utc::now();
    let old = now - Months::new(30);
    let stream = old_failed_login(&store, old).await;
    let month = old.format("%Y-%m").to_string();
    assert_eq!(history_ip(&store, &stream), OLD_IP);

    let dry = json_out(&store.run(&["retention", "apply", "--dry-run"], None));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["months"], serde_json::json!([month]));
    assert_eq!(dry["destroyed"], 0);
    assert_eq!(
        history_ip(&store, &stream),
        OLD_IP,
        "a dry run destroys nothing"
    );

    let run = json_out(&store.run(&["retention", "apply"], None));
    assert_eq!(run["months"], serde_json::json!([month]));
    assert_eq!(run["destroyed"], 1);
    assert!(run["position"].is_i64());
    assert_eq!(history_ip(&store, &stream), "[EXPIRED]");

    let again = json_out(&store.run(&["retention", "apply"], None));
    assert_eq!(again["months"], serde_json::json!([]));
    assert_eq!(again["destroyed"], 0);
    assert!(again["position"].is_null());

    let verify = store.run(&["replay", "verify"], None);
    assert!(verify.status.success());

    // A period of zero months is a configuration error.
    let out = store
        .egec()
        .args(["retention", "apply"])
        .env("EGEC_RETENTION_MONTHS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("EGEC_RETENTION_MONTHS"));

    // `serve` applies retention as it starts: an older month written meanwhile expires
    // without anyone running the command.
    let older = now - Months::new(40);
    let stream = old_failed_login(&store, older).await;
    assert_eq!(history_ip(&store, &stream), OLD_IP);
    let server = store.serve();
    let start = Instant::now();
    while history_ip(&store, &stream) != "[EXPIRED]" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "serve never applied retention"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.kill();
}

#[tokio::test]
async fn the_cli_expires_old_months_once_and_serve_does_it_at_start_up_on_sqlite() {
    the_cli_expires_old_months_once_and_serve_does_it_at_start_up(Store::sqlite().await).await;
}

#[tokio::test]
async fn the_cli_expires_old_months_once_and_serve_does_it_at_start_up_on_postgres() {
    the_cli_expires_old_months_once_and_serve_does_it_at_start_up(Store::postgres().await).await;
}
