//! Retention of security metadata: month keys older than `EGEC_RETENTION_MONTHS` are
//! destroyed, their IP addresses, user agents and unknown login emails read `[EXPIRED]` on
//! every read path, the events stay and the hash chain still verifies.

mod support;

use chrono::{DateTime, Months, Utc};
use egec_commands::codec::retention_subject;
use egec_commands::retention::apply;
use egec_domain::event::{DomainEvent, Metadata};
use egec_domain::retention::{Month, RetentionMonths};
use egec_domain::user::{LoginEvent, LoginFailure, login_stream_id, unknown_login_stream_id};
use egec_domain::{Personal, Role, UserId};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use support::{TestApp, json_of};

const OLD_IP: &str = "198.51.100.23";
const OLD_AGENT: &str = "RetentionProbe/1.0 (old)";
const OLD_EMAIL: &str = "ghost.visitor@example.com";
const KEPT_IP: &str = "192.0.2.77";

async fn caught_up(app: &TestApp) {
    let head = app.running.state.log.head().await.unwrap().position;
    assert!(
        app.running
            .state
            .runner
            .wait_for(head, Duration::from_secs(10))
            .await
    );
}

fn meta(at: DateTime<Utc>, ip: &str, agent: &str) -> Metadata {
    let mut m = Metadata::system(uuid::Uuid::now_v7(), at);
    m.ip = Some(Personal::Known(ip.to_owned()));
    m.user_agent = Some(Personal::Known(agent.to_owned()));
    m
}

/// Records, as the login handlers would have, a wrong password of `user` and an attempt on
/// an unknown email at `at`, from `ip`. Answers the unknown-email stream.
async fn login_activity(app: &TestApp, user: UserId, at: DateTime<Utc>, ip: &str) -> String {
    let bus = &app.running.state.bus;
    let m = meta(at, ip, OLD_AGENT);
    bus.record(
        &login_stream_id(user, at),
        &user.subject(),
        &m,
        &[DomainEvent::Login(LoginEvent::Failed {
            user_id: user,
            reason: LoginFailure::WrongPassword,
            at,
        })],
    )
    .await
    .unwrap();
    let key = format!("retentiontest{}", at.timestamp());
    let stream = unknown_login_stream_id(&key, at);
    bus.record(
        &stream,
        &retention_subject(at),
        &m,
        &[DomainEvent::Login(LoginEvent::UnknownAccountFailed {
            account_key: key.clone(),
            email: Personal::Known(OLD_EMAIL.to_owned()),
            at,
        })],
    )
    .await
    .unwrap();
    stream
}

async fn audit(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let r = app.get(&format!("/api/audit{query}"), Some(token)).await;
    assert_eq!(r.status(), StatusCode::OK, "{query}");
    json_of(r).await["items"].as_array().unwrap().clone()
}

/// The IPs the audit API shows for LOGIN_FAILED events, by occurred_at month.
fn ips_by_month(items: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = items
        .iter()
        .map(|i| {
            (
                i["occurred_at"].as_str().unwrap()[..7].to_owned(),
                i["ip"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

both_backends!(
    retention_expires_the_metadata_of_months_past_the_period_and_keeps_events_and_chain,
    |app: TestApp| async move {
        let state = &app.running.state;
        let (auditor_id, auditor) = app.as_role(Role::Auditor).await;
        let (_, admin) = app.as_role(Role::Admin).await;
        let user = UserId::from_uuid(auditor_id);
        let now = Utc::now();
        let old = now - Months::new(30);
        let kept = now - Months::new(3);
        let old_stream = login_activity(&app, user, old, OLD_IP).await;
        login_activity(&app, user, kept, KEPT_IP).await;
        // A customer's key is never a retention subject, whatever its age.
        let r = app
            .post(
                "/api/customers",
                Some(&admin),
                json!({ "name": "Rita Retained", "email": "rita.retained@example.com" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let customer = json_of(r).await["id"].as_str().unwrap().to_owned();
        caught_up(&app).await;
        let old_subject = retention_subject(old);
        let vault = state.bus.codec().vault();
        assert!(
            vault
                .live_subjects("retention-")
                .await
                .unwrap()
                .contains(&old_subject)
        );

        // A dry run names the month and destroys nothing.
        let dry = apply(&state.bus, now, RetentionMonths::default(), true)
            .await
            .unwrap();
        assert_eq!(dry.months, vec![Month::of(old)]);
        assert_eq!((dry.destroyed, dry.position), (0, None));
        assert!(
            vault
                .live_subjects("retention-")
                .await
                .unwrap()
                .contains(&old_subject)
        );
        let before = audit(&app, &auditor, "?action=LOGIN_FAILED").await;
        assert!(
            ips_by_month(&before).iter().any(|(_, ip)| ip == OLD_IP),
            "{before:?}"
        );

        let run = apply(&state.bus, now, RetentionMonths::default(), false)
            .await
            .unwrap();
        assert_eq!(run.months, vec![Month::of(old)]);
        assert_eq!(run.destroyed, 1);
        let position = run.position.expect("the run is recorded");
        state.wait_for_write(Some(position)).await;

        // The month's key is gone from the key table; the kept month's and the current
        // month's keys are not.
        let live = vault.live_subjects("retention-").await.unwrap();
        assert!(!live.contains(&old_subject), "{live:?}");
        assert!(live.contains(&retention_subject(kept)), "{live:?}");
        assert!(live.contains(&retention_subject(now)), "{live:?}");

        // The audit API: old IPs expired, the kept month's and today's as they were.
        let items = audit(&app, &auditor, "?action=LOGIN_FAILED").await;
        let old_month = old.format("%Y-%m").to_string();
        let kept_month = kept.format("%Y-%m").to_string();
        assert_eq!(
            ips_by_month(&items),
            vec![
                (old_month.clone(), "[EXPIRED]".to_owned()),
                (old_month.clone(), "[EXPIRED]".to_owned()),
                (kept_month.clone(), KEPT_IP.to_owned()),
                (kept_month.clone(), KEPT_IP.to_owned()),
            ]
        );
        let logins = audit(&app, &auditor, "?action=LOGIN").await;
        assert!(!logins.is_empty());
        assert!(logins.iter().all(|i| i["ip"] == "127.0.0.1"), "{logins:?}");
        let runs = audit(&app, &auditor, "?action=RETENTION_APPLIED").await;
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0]["position"], position);
        assert!(
            runs[0]["description"]
                .as_str()
                .unwrap()
                .contains(&format!("months=[{old_month}]")),
            "{runs:?}"
        );

        // The CSV export shows the same.
        let csv = app
            .get("/api/audit/export.csv?action=LOGIN_FAILED", Some(&auditor))
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(csv.matches("[EXPIRED]").count(), 2, "{csv}");
        assert_eq!(csv.matches(KEPT_IP).count(), 2, "{csv}");
        assert!(!csv.contains(OLD_IP) && !csv.contains("[ERASED]"));

        // Compliance replay: the stream's event stays, its email, IP and agent expired.
        let history = egec_replay::history(&state.bus, &old_stream, None)
            .await
            .unwrap();
        assert_eq!(history.len(), 1);
        let event: Value = serde_json::from_str(&history[0]).unwrap();
        assert_eq!(event["personal"]["email"], "[EXPIRED]");
        assert_eq!(event["ip"], "[EXPIRED]");
        assert_eq!(event["user_agent"], "[EXPIRED]");
        assert_eq!(event["action"], "LOGIN_FAILED");
        for line in &history {
            assert!(!line.contains(OLD_EMAIL) && !line.contains(OLD_IP));
        }

        // The chain still verifies.
        let v = json_of(app.get("/api/audit/verify", Some(&auditor)).await).await;
        assert_eq!(v["ok"], true, "{v}");

        // The customer's data is untouched.
        let c = json_of(
            app.get(&format!("/api/customers/{customer}"), Some(&admin))
                .await,
        )
        .await;
        assert_eq!(c["name"], "Rita Retained");

        // A second run finds nothing left to destroy and records nothing.
        let again = apply(&state.bus, now, RetentionMonths::default(), false)
            .await
            .unwrap();
        assert!(again.months.is_empty());
        assert_eq!((again.destroyed, again.position), (0, None));
        caught_up(&app).await;
        assert_eq!(
            audit(&app, &auditor, "?action=RETENTION_APPLIED")
                .await
                .len(),
            1
        );
    }
);

both_backends!(
    a_shorter_period_expires_more_months_but_never_the_current_one,
    |app: TestApp| async move {
        let state = &app.running.state;
        let (auditor_id, auditor) = app.as_role(Role::Auditor).await;
        let user = UserId::from_uuid(auditor_id);
        let now = Utc::now();
        let last_month = now - Months::new(1);
        let two_ago = now - Months::new(2);
        login_activity(&app, user, two_ago, OLD_IP).await;
        login_activity(&app, user, last_month, KEPT_IP).await;
        caught_up(&app).await;
        let one = RetentionMonths::new(1).unwrap();
        let run = apply(&state.bus, now, one, false).await.unwrap();
        assert_eq!(run.months, vec![Month::of(two_ago)]);
        state.wait_for_write(run.position).await;
        let items = audit(&app, &auditor, "?action=LOGIN_FAILED").await;
        let ips: Vec<&str> = items.iter().map(|i| i["ip"].as_str().unwrap()).collect();
        assert_eq!(ips.iter().filter(|ip| **ip == "[EXPIRED]").count(), 2);
        assert_eq!(ips.iter().filter(|ip| **ip == KEPT_IP).count(), 2);
        // Today's login still shows its address, and a new event this month is encrypted
        // under this month's live key as before.
        let logins = audit(&app, &auditor, "?action=LOGIN").await;
        assert!(logins.iter().all(|i| i["ip"] == "127.0.0.1"), "{logins:?}");
        // An event back-dated into an expired month is still recorded, without metadata
        // the month's destroyed key could no longer protect.
        let back_dated = now - Months::new(2);
        state
            .bus
            .record(
                &login_stream_id(user, back_dated),
                &user.subject(),
                &meta(back_dated, OLD_IP, OLD_AGENT),
                &[DomainEvent::Login(LoginEvent::Failed {
                    user_id: user,
                    reason: LoginFailure::WrongPassword,
                    at: back_dated,
                })],
            )
            .await
            .unwrap();
        caught_up(&app).await;
        let items = audit(&app, &auditor, "?action=LOGIN_FAILED").await;
        assert_eq!(items.len(), 5);
        assert!(!items.iter().any(|i| i["ip"] == OLD_IP), "{items:?}");
        assert!(
            !state
                .bus
                .codec()
                .vault()
                .live_subjects("retention-")
                .await
                .unwrap()
                .contains(&retention_subject(two_ago)),
            "a destroyed month key is never re-created"
        );
        let v = json_of(app.get("/api/audit/verify", Some(&auditor)).await).await;
        assert_eq!(v["ok"], true, "{v}");
    }
);

/// Another node (sharing the PostgreSQL store) that had the month's key cached stops
/// decrypting it at its own next retention run, which destroys nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_had_the_month_key_cached_shows_expired_after_another_node_ran_retention() {
    let app = TestApp::spawn(support::Backend::Postgres).await;
    let (node2, _dir) = app.second_node().await;
    let (auditor_id, auditor) = app.as_role(Role::Auditor).await;
    let user = UserId::from_uuid(auditor_id);
    let now = Utc::now();
    let old = now - Months::new(30);
    login_activity(&app, user, old, OLD_IP).await;
    caught_up(&app).await;
    let on_node2 = |query: &'static str| {
        let client = app.client.clone();
        let base = node2.base.clone();
        let token = auditor.clone();
        async move {
            let r = client
                .get(format!("{base}/api/audit{query}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()["items"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let head = app.running.state.log.head().await.unwrap().position;
    assert!(
        node2
            .running
            .state
            .runner
            .wait_for(head, Duration::from_secs(10))
            .await
    );
    // Node 2 decrypts (and caches the month's key).
    let items = on_node2("?action=LOGIN_FAILED").await;
    assert!(items.iter().all(|i| i["ip"] == OLD_IP), "{items:?}");
    assert!(
        node2
            .running
            .state
            .bus
            .codec()
            .vault()
            .cached(&retention_subject(old))
            .is_some()
    );

    let run = apply(
        &app.running.state.bus,
        now,
        RetentionMonths::default(),
        false,
    )
    .await
    .unwrap();
    let position = run.position.unwrap();
    // Node 2's own run (its daily task) finds nothing left to destroy, records nothing, and
    // drops the keys of expired months from its cache.
    let again = apply(
        &node2.running.state.bus,
        now,
        RetentionMonths::default(),
        false,
    )
    .await
    .unwrap();
    assert!(again.months.is_empty() && again.position.is_none());
    assert!(
        node2
            .running
            .state
            .runner
            .wait_for(position, Duration::from_secs(10))
            .await
    );
    let items = on_node2("?action=LOGIN_FAILED").await;
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["ip"] == "[EXPIRED]"), "{items:?}");
}
