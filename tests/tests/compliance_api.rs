//! Compliance questions answered from the log: the audit API reads entries from the log
//! itself; passport reveals are events ("who looked at this customer's data"); everything a
//! user did between two times; a user's state as of a time; any stream's events, masked per
//! role.

mod support;

use chrono::{DateTime, Utc};
use egec_domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use support::{Backend, TestApp, json_of};
use uuid::Uuid;

async fn caught_up(app: &TestApp) {
    app.caught_up().await;
}

async fn audit(app: &TestApp, token: &str, query: &str) -> Value {
    caught_up(app).await;
    let r = app.get(&format!("/api/audit{query}"), Some(token)).await;
    assert_eq!(r.status(), StatusCode::OK, "{query}");
    json_of(r).await
}

fn items(v: &Value) -> &Vec<Value> {
    v["items"].as_array().expect("items")
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

/// Runs one statement against the read models (SQLite `read.db`, PostgreSQL schema `crm`).
async fn on_read_models(app: &TestApp, sqlite: &str, postgres: &str) {
    match app.backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(app.data_dir.join("read.db")).unwrap();
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            conn.execute(sqlite, []).unwrap();
        }
        Backend::Postgres => {
            let url = app.database_url.as_ref().unwrap();
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client.execute(postgres, &[]).await.unwrap();
        }
    }
}

/// Every event of the log, decoded: (position, action, actor id, occurred at).
async fn log_events(app: &TestApp) -> Vec<(i64, String, Option<Uuid>, DateTime<Utc>)> {
    let s = &app.running.state;
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = s.log.read_all(after, 500).await.unwrap();
        if page.is_empty() {
            return out;
        }
        for rec in &page {
            let env = s.bus.codec().decode(rec).await.unwrap();
            out.push((
                env.position,
                env.event.action().to_owned(),
                env.metadata.actor_id.map(|a| a.as_uuid()),
                env.metadata.occurred_at,
            ));
            after = rec.global_position;
        }
    }
}

async fn new_customer(app: &TestApp, token: &str, body: Value) -> String {
    let r = app.post("/api/customers", Some(token), body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    json_of(r).await["id"].as_str().unwrap().to_owned()
}

both_backends!(
    audit_entries_are_read_from_the_log_so_a_forged_index_row_shows_the_logs_record_and_a_misplaced_one_fails,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let (_, auditor) = app.as_role(Role::Auditor).await;
        let customer = new_customer(&app, &admin, json!({ "name": "Forge Test" })).await;
        let r = app
            .patch(
                &format!("/api/customers/{customer}"),
                Some(&admin),
                json!({ "status": "contacted" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let before = audit(&app, &auditor, "?action=CUSTOMER_UPDATED").await;
        let entry = items(&before)[0].clone();
        let position = entry["position"].as_i64().unwrap();
        assert!(entry["description"].as_str().unwrap().contains("contacted"));

        // Someone with write access to the read models rewrites the row: the API still shows
        // what the log holds at that position.
        on_read_models(
            &app,
            &format!(
                "UPDATE audit SET description = 'status=lost (forged)', actor_role = 'auditor' \
                 WHERE position = {position}"
            ),
            &format!(
                "UPDATE crm.audit SET description = 'status=lost (forged)', actor_role = 'auditor' \
                 WHERE position = {position}"
            ),
        )
        .await;
        let after = audit(&app, &auditor, "?action=CUSTOMER_UPDATED").await;
        assert_eq!(items(&after)[0], entry, "the log's record, not the index's");
        let csv = app
            .get("/api/audit/export.csv?action=CUSTOMER_UPDATED", Some(&auditor))
            .await
            .text()
            .await
            .unwrap();
        assert!(!csv.contains("forged") && csv.contains("contacted"), "{csv}");

        // An index row naming an event the log does not hold at its position is refused
        // loudly (500, nothing internal in the body), never shown.
        let fake = Uuid::now_v7();
        on_read_models(
            &app,
            &format!("UPDATE audit SET id = '{fake}' WHERE position = {position}"),
            &format!("UPDATE crm.audit SET id = '{fake}' WHERE position = {position}"),
        )
        .await;
        let r = app
            .get("/api/audit?action=CUSTOMER_UPDATED", Some(&auditor))
            .await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = r.text().await.unwrap();
        assert!(!body.contains("position") && !body.contains("index"), "{body}");

        // A rebuild of the index from the log repairs it.
        app.running
            .state
            .runner
            .rebuild("audit", |_, _| {})
            .await
            .expect("rebuild");
        let repaired = audit(&app, &auditor, "?action=CUSTOMER_UPDATED").await;
        assert_eq!(items(&repaired)[0], entry);
    }
);

both_backends!(
    every_read_that_shows_a_passport_in_clear_is_an_event_so_who_looked_at_a_customer_is_answered,
    |app: TestApp| async move {
        let (admin_id, admin) = app.as_role(Role::Admin).await;
        let (_, superagent) = app.as_role(Role::Superagent).await;
        let (_, auditor) = app.as_role(Role::Auditor).await;
        let (_, superadmin) = app.as_role(Role::Superadmin).await;
        let with = new_customer(
            &app,
            &admin,
            json!({ "name": "Reveal Me", "passport_number": "RV1234567" }),
        )
        .await;
        let without = new_customer(&app, &admin, json!({ "name": "No Passport" })).await;
        let created_at = Utc::now();
        let reveals = async |app: &TestApp, customer: &str| -> Value {
            let q = format!("?entity_id={customer}&action=PASSPORT_REVEALED&per_page=100");
            audit(app, &auditor, &q).await
        };
        assert_eq!(
            reveals(&app, &with).await["total"],
            0,
            "creating is not revealing"
        );

        // The superagent sees a masked number: nothing revealed.
        let r = app
            .get(&format!("/api/customers/{with}"), Some(&superagent))
            .await;
        assert_eq!(json_of(r).await["passport_number"], "RV****67");
        let r = app.get("/api/customers", Some(&superagent)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(reveals(&app, &with).await["total"], 0);

        // The admin sees it in clear through each kind of read: each is recorded.
        let r = app
            .get(&format!("/api/customers/{with}"), Some(&admin))
            .await;
        assert_eq!(json_of(r).await["passport_number"], "RV1234567");
        let r = app.get("/api/customers?per_page=100", Some(&admin)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = app
            .get(&format!("/api/customers/{with}/history"), Some(&admin))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = app
            .get(
                &format!(
                    "/api/customers/{with}?as_of={}",
                    urlencode(&Utc::now().to_rfc3339())
                ),
                Some(&admin),
            )
            .await;
        assert_eq!(json_of(r).await["passport_number"], "RV1234567");
        let r = app
            .get(
                &format!("/api/replay/streams/customer-{with}"),
                Some(&admin),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);

        let seen = reveals(&app, &with).await;
        assert_eq!(seen["total"], 5, "{seen}");
        let mut vias: Vec<String> = items(&seen)
            .iter()
            .map(|i| {
                assert_eq!(i["actor"]["id"], admin_id.to_string());
                assert_eq!(i["actor"]["role"], "admin");
                assert_eq!(i["entity_type"], "customer");
                assert_eq!(i["ip"], "127.0.0.1");
                let d = i["description"].as_str().unwrap();
                assert!(!d.contains("RV1234567"), "{d}");
                d.rsplit('=').next().unwrap().to_owned()
            })
            .collect();
        vias.sort();
        assert_eq!(
            vias,
            ["history", "history", "list", "past_record", "record"]
        );
        // A customer with no passport number had nothing revealed by the same list.
        assert_eq!(reveals(&app, &without).await["total"], 0);

        // "Who looked at or took this customer's data": reveals and GDPR exports, by entity.
        let r = app
            .get(&format!("/api/gdpr/customers/{with}/export"), Some(&admin))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let all = audit(&app, &auditor, &format!("?entity_id={with}&per_page=100")).await;
        let reads: Vec<&str> = items(&all)
            .iter()
            .map(|i| i["action"].as_str().unwrap())
            .filter(|a| *a == "PASSPORT_REVEALED" || *a == "GDPR_EXPORTED")
            .collect();
        assert_eq!(reads.len(), 6, "{all}");
        assert_eq!(reads[0], "GDPR_EXPORTED", "newest first");

        // The reveals are in the log itself, one event per customer shown.
        let in_log = log_events(&app)
            .await
            .into_iter()
            .filter(|(_, action, _, at)| action == "PASSPORT_REVEALED" && *at >= created_at)
            .count();
        assert_eq!(in_log, 5);

        // After an erasure there is nothing left to reveal.
        let r = app
            .post(
                &format!("/api/gdpr/customers/{with}/erase"),
                Some(&superadmin),
                json!({ "reason": "request by the data subject" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = app
            .get(&format!("/api/customers/{with}"), Some(&admin))
            .await;
        assert_eq!(json_of(r).await["passport_number"], "[ERASED]");
        assert_eq!(reveals(&app, &with).await["total"], 5);
    }
);

both_backends!(
    everything_a_user_did_between_two_times_is_exactly_their_events_in_the_log,
    |app: TestApp| async move {
        let (x, x_token) = app.as_role(Role::Admin).await;
        let (_, y_token) = app.as_role(Role::Admin).await;
        let (_, auditor) = app.as_role(Role::Auditor).await;
        // Before the window.
        new_customer(&app, &x_token, json!({ "name": "Early Bird" })).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t1 = Utc::now();
        let c = new_customer(&app, &x_token, json!({ "name": "In Window" })).await;
        new_customer(&app, &y_token, json!({ "name": "Someone Else's" })).await;
        let r = app
            .patch(
                &format!("/api/customers/{c}"),
                Some(&x_token),
                json!({ "status": "qualified" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = app
            .get(
                "/api/customers/00000000-0000-0000-0000-000000000001",
                Some(&x_token),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = app
            .post("/api/auth/logout", Some(&x_token), json!({}))
            .await;
        assert!(r.status().is_success());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t2 = Utc::now();
        // After the window.
        new_customer(&app, &y_token, json!({ "name": "Late Comer" })).await;

        let q = format!(
            "?actor_id={x}&from={}&to={}&per_page=500",
            urlencode(&t1.to_rfc3339()),
            urlencode(&t2.to_rfc3339())
        );
        let v = audit(&app, &auditor, &q).await;
        let mut got: Vec<(i64, String)> = items(&v)
            .iter()
            .map(|i| {
                (
                    i["position"].as_i64().unwrap(),
                    i["action"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        got.reverse();
        let expected: Vec<(i64, String)> = log_events(&app)
            .await
            .into_iter()
            .filter(|(_, _, actor, at)| *actor == Some(x) && *at >= t1 && *at < t2)
            .map(|(p, a, _, _)| (p, a))
            .collect();
        assert_eq!(got, expected);
        let acts: Vec<&str> = expected.iter().map(|(_, a)| a.as_str()).collect();
        for a in ["CUSTOMER_CREATED", "CUSTOMER_UPDATED", "LOGOUT"] {
            assert!(acts.contains(&a), "{a} missing from {acts:?}");
        }
        assert_eq!(v["total"].as_u64().unwrap() as usize, expected.len());

        // The CSV export with the same filters holds the same events, oldest first.
        let csv = app
            .get(&format!("/api/audit/export.csv{q}"), Some(&auditor))
            .await
            .text()
            .await
            .unwrap();
        let positions: Vec<i64> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(
            positions,
            expected.iter().map(|(p, _)| *p).collect::<Vec<_>>()
        );
    }
);

both_backends!(
    a_users_state_as_of_any_time_is_replayed_from_the_log,
    |app: TestApp| async move {
        let (_, superadmin) = app.as_role(Role::Superadmin).await;
        let (_, auditor) = app.as_role(Role::Auditor).await;
        let user = app.user("changing@egec.example", Role::Agent).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let as_agent = Utc::now();
        let r = app
            .patch(
                &format!("/api/users/{user}"),
                Some(&superadmin),
                json!({ "role": "superagent", "name": "Renamed Person" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let as_superagent = Utc::now();
        let r = app
            .patch(
                &format!("/api/users/{user}"),
                Some(&superadmin),
                json!({ "active": false }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);

        let at = async |t: DateTime<Utc>| -> Value {
            let path = format!("/api/users/{user}?as_of={}", urlencode(&t.to_rfc3339()));
            let r = app.get(&path, Some(&auditor)).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            json_of(r).await
        };
        let then = at(as_agent).await;
        assert_eq!(then["role"], "agent");
        assert_eq!(then["active"], true);
        assert_eq!(then["version"], 1);
        assert!(then.get("password_hash").is_none());
        let later = at(as_superagent).await;
        assert_eq!(later["role"], "superagent");
        assert_eq!(later["name"], "Renamed Person");
        assert_eq!(later["active"], true);
        let now = json_of(app.get(&format!("/api/users/{user}"), Some(&auditor)).await).await;
        assert_eq!(now["active"], false);

        let before_creation = Utc::now() - chrono::Duration::days(1);
        let r = app
            .get(
                &format!(
                    "/api/users/{user}?as_of={}",
                    urlencode(&before_creation.to_rfc3339())
                ),
                Some(&auditor),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = app
            .get(
                &format!("/api/users/{user}?as_of=yesterday"),
                Some(&auditor),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(json_of(r).await["error"]["fields"]["as_of"].is_string());
    }
);

both_backends!(
    any_streams_events_are_replayed_in_clear_for_admins_masked_for_auditors_and_never_with_credentials,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let (_, auditor) = app.as_role(Role::Auditor).await;
        let (_, agent) = app.as_role(Role::Agent).await;
        let c = new_customer(
            &app,
            &admin,
            json!({ "name": "Stream Person", "email": "stream.person@example.com",
                    "phone": "020 7946 0958", "passport_number": "ST7654321", "notes": "likes tea" }),
        )
        .await;
        let stream = format!("/api/replay/streams/customer-{c}");

        let clear = json_of(app.get(&stream, Some(&admin)).await).await;
        let p = &items(&clear)[0]["personal"];
        assert_eq!(items(&clear)[0]["event_type"], "CustomerCreated");
        assert_eq!(p["email"], "stream.person@example.com");
        assert_eq!(p["passport_number"], "ST7654321");

        let masked = json_of(app.get(&stream, Some(&auditor)).await).await;
        let p = &items(&masked)[0]["personal"];
        assert_eq!(p["email"], "s***@example.com");
        assert_eq!(p["phone"], "***-***-0958");
        assert_eq!(p["passport_number"], "ST****21");
        assert_eq!(p["name"], "S*** P***");
        assert_eq!(p["notes"], "[MASKED]");
        let text = masked.to_string();
        for personal in ["Stream Person", "stream.person@", "ST7654321", "likes tea"] {
            assert!(!text.contains(personal), "{personal} shown to an auditor");
        }

        // A user's stream: the password hash is shown to no one.
        let me = json_of(app.get("/api/auth/me", Some(&admin)).await).await;
        let user_stream = format!("/api/replay/streams/user-{}", me["id"].as_str().unwrap());
        let v = json_of(app.get(&user_stream, Some(&admin)).await).await;
        assert_eq!(items(&v)[0]["personal"]["password_hash"], "[REDACTED]");
        assert!(!v.to_string().contains("$argon2"));

        // As of a time before the stream began: empty, not missing.
        let r = app
            .get(&format!("{stream}?as_of=2020-01-01T00:00:00Z"), Some(&auditor))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(items(&json_of(r).await).is_empty());
        let r = app
            .get("/api/replay/streams/customer-0000", Some(&auditor))
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = app
            .get("/api/replay/streams/Not%20A%20Stream", Some(&auditor))
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let r = app.get(&stream, Some(&agent)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
);
