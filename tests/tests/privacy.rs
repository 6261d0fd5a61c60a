//! Personal data never sits in the log in clear, and destroying a customer's key erases them
//! from every read path while the history of what happened stays whole and verifiable.

mod support;

use egec_domain::event::Metadata;
use egec_domain::{CustomerId, Role};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Backend, TestApp, json_of};

const SECRETS: [&str; 5] = [
    "Jane Secretperson",
    "jane.secret@example.com",
    "+442079460958",
    "ZX9876543",
    "allergic to cats",
];

fn body() -> Value {
    json!({
        "name": SECRETS[0], "email": SECRETS[1], "phone": SECRETS[2],
        "passport_number": SECRETS[3], "notes": SECRETS[4], "status": "contacted"
    })
}

/// Every stored payload and metadata document, as the database returns them.
async fn raw_log(app: &TestApp) -> Vec<String> {
    match app.backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(app.data_dir.join("egec.db")).unwrap();
            let mut stmt = conn
                .prepare("SELECT payload || metadata FROM events")
                .unwrap();
            stmt.query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        }
        Backend::Postgres => {
            let url = app.database_url.as_ref().unwrap();
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .query(
                    "SELECT payload::text || metadata::text FROM egec.events",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect()
        }
    }
}

both_backends!(
    the_raw_log_holds_no_personal_field_in_clear,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let c = json_of(app.post("/api/customers", Some(&admin), body()).await).await;
        let path = format!("/api/customers/{}", c["id"].as_str().unwrap());
        app.patch(
            &path,
            Some(&admin),
            json!({ "notes": "allergic to cats and dogs" }),
        )
        .await;
        let rows = raw_log(&app).await;
        assert!(rows.len() >= 3);
        for row in &rows {
            for s in SECRETS
                .iter()
                .chain(["Secretperson", "jane.secret", "9876543", "Test User"].iter())
            {
                assert!(
                    !row.to_lowercase().contains(&s.to_lowercase()),
                    "{s:?} in clear in the log"
                );
            }
        }
        // Facts that are not personal stay readable for analytics.
        assert!(rows.iter().any(|r| r.contains("\"contacted\"")));
    }
);

both_backends!(
    after_erasure_every_read_path_shows_erased_and_the_chain_still_verifies,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let c = json_of(app.post("/api/customers", Some(&admin), body()).await).await;
        let id: uuid::Uuid = c["id"].as_str().unwrap().parse().unwrap();
        let path = format!("/api/customers/{id}");
        app.patch(&path, Some(&admin), json!({ "status": "qualified" }))
            .await;

        let s = &app.running.state;
        let meta = Metadata::system(uuid::Uuid::now_v7(), chrono::Utc::now());
        let erasure = egec_commands::erase::erase_customer(
            &s.bus,
            CustomerId::from_uuid(id),
            "art. 17 request",
            &meta,
        )
        .await
        .unwrap();
        assert_eq!(erasure.destroyed_key_fingerprints.len(), 1);
        assert!(
            s.runner
                .wait_for(
                    erasure.position.unwrap(),
                    std::time::Duration::from_secs(10)
                )
                .await
        );
        let again =
            egec_commands::erase::erase_customer(&s.bus, CustomerId::from_uuid(id), "again", &meta)
                .await
                .unwrap();
        assert_eq!(again.position, None, "erasing twice appends nothing");
        assert!(again.destroyed_key_fingerprints.is_empty());

        let check = |v: &Value, ctx: &str| {
            for f in ["name", "email", "phone", "passport_number", "notes"] {
                assert_eq!(v[f], "[ERASED]", "{ctx}: {f}");
            }
            let text = v.to_string();
            for s in SECRETS {
                assert!(!text.contains(s), "{ctx}: {s} still readable");
            }
        };
        let now = json_of(app.get(&path, Some(&admin)).await).await;
        check(&now, "get");
        assert_eq!(now["status"], "qualified", "non-personal facts remain");
        check(
            &json_of(app.get(&format!("{path}?version=1"), Some(&admin)).await).await,
            "version=1",
        );
        let as_of = chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .replace('+', "%2B");
        check(
            &json_of(
                app.get(&format!("{path}?as_of={as_of}"), Some(&admin))
                    .await,
            )
            .await,
            "as_of",
        );
        check(
            &json_of(app.get("/api/customers", Some(&admin)).await).await["items"][0],
            "list",
        );
        let history = json_of(app.get(&format!("{path}/history"), Some(&admin)).await).await;
        assert_eq!(history["items"][0]["changes"]["name"]["to"], "[ERASED]");
        assert!(!history.to_string().contains("Secretperson"));
        assert_eq!(
            history["items"].as_array().unwrap().last().unwrap()["action"],
            "CUSTOMER_ERASED"
        );
        let search = json_of(app.get("/api/customers?q=secretperson", Some(&admin)).await).await;
        assert_eq!(search["total"], 0);

        let lines = egec_replay::history(&s.bus, &CustomerId::from_uuid(id).stream_id(), None)
            .await
            .unwrap();
        assert_eq!(lines.len(), 3);
        for l in &lines {
            for sec in SECRETS {
                assert!(!l.contains(sec), "replay history shows {sec}");
            }
        }
        let verified = egec_replay::verify(s.log.as_ref()).await.unwrap();
        assert!(verified.ok, "{verified:?}");
        assert!(verified.events_checked >= 4);
        assert_eq!(app.get(&path, Some(&admin)).await.status(), StatusCode::OK);
    }
);
