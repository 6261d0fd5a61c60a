//! No personal data in the logs at any level: the application runs with a global subscriber
//! capturing everything down to TRACE (with the production filter of `egec_api::logging`,
//! which caps dependencies that print row values), a realistic workload with distinctive
//! personal values goes through the API, and none of those values is in the captured text.

mod support;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use support::{TestApp, json_of};

/// Everything every subscriber in this test binary wrote.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(Default::default)
}

#[derive(Clone)]
struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        captured()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber once for the whole binary, before any app starts, and
/// the `log` bridge with it, so dependencies that log through `log` are captured too.
fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        tracing_subscriber::fmt()
            .with_env_filter(egec_api::logging::filter_from("trace"))
            .with_writer(|| Capture)
            .with_ansi(false)
            .try_init()
            .expect("the only global subscriber of this test binary");
    });
}

fn text() -> String {
    String::from_utf8_lossy(&captured().lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// Requests with a distinctive user agent (personal: it is encrypted in event metadata).
struct Caller {
    client: Client,
    base: String,
}

impl Caller {
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut r = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.expect("request sent")
    }
}

/// The personal values of one run, distinct per backend so the two runs sharing the
/// buffer do not mask each other.
struct Values {
    name: String,
    email: String,
    new_email: String,
    phone: String,
    phone_e164: String,
    passport: String,
    notes: String,
    followup_note: String,
    file_name: String,
    unknown_email: String,
    bad_email: String,
    agent: String,
    import_name: String,
    import_email: String,
}

impl Values {
    fn new(tag: &str, digits: &str) -> Self {
        Values {
            name: format!("Zelda Quixotic{tag}"),
            email: format!("zelda.quixotic.{tag}@example.com"),
            new_email: format!("zq.moved.{tag}@example.org"),
            phone: format!("+44 20 7946 {digits}"),
            phone_e164: format!("+44207946{digits}"),
            passport: format!("QX{digits}731"),
            notes: format!("Prefers calls after the school run {tag}"),
            followup_note: format!("Ask about the divorce papers {tag}"),
            file_name: format!("scan-of-zelda-{tag}.pdf"),
            unknown_email: format!("nobody.here.{tag}@example.net"),
            bad_email: format!("zelda-at-{tag}-nowhere"),
            agent: format!("HygieneProbe/{tag} (Zelda's laptop)"),
            import_name: format!("Ignatius Yarborough{tag}"),
            import_email: format!("ignatius.yarborough.{tag}@example.com"),
        }
    }

    fn all(&self) -> Vec<&str> {
        vec![
            &self.name,
            &self.email,
            &self.new_email,
            &self.phone,
            &self.phone_e164,
            &self.passport,
            &self.notes,
            &self.followup_note,
            &self.file_name,
            &self.unknown_email,
            &self.bad_email,
            &self.agent,
            &self.import_name,
            &self.import_email,
        ]
    }
}

async fn workload(app: &TestApp, v: &Values) {
    let c = Caller {
        client: Client::builder()
            .user_agent(v.agent.clone())
            .build()
            .unwrap(),
        base: app.base.clone(),
    };
    let (_, admin) = app.as_role(egec_domain::Role::Admin).await;
    let r = c
        .send(
            Method::POST,
            "/api/customers",
            Some(&admin),
            Some(json!({
                "name": v.name, "email": v.email, "phone": v.phone,
                "passport_number": v.passport, "notes": v.notes,
            })),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = json_of(r).await["id"].as_str().unwrap().to_owned();
    let path = format!("/api/customers/{id}");
    assert_eq!(
        c.send(Method::GET, &path, Some(&admin), None)
            .await
            .status(),
        StatusCode::OK
    );
    let r = c
        .send(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(json!({ "email": v.new_email })),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .send(
            Method::GET,
            &format!("/api/customers?q={}", v.new_email),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .send(Method::GET, &format!("{path}/history"), Some(&admin), None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // Validation errors echo nothing into the logs either.
    let r = c
        .send(
            Method::POST,
            "/api/customers",
            Some(&admin),
            Some(json!({ "name": v.name, "email": v.bad_email })),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = c
        .send(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(json!({ "phone": format!("not a phone {}", v.passport) })),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let due = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let r = c
        .send(
            Method::POST,
            &format!("{path}/followups"),
            Some(&admin),
            Some(json!({ "due_at": due, "note": v.followup_note })),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app
        .upload(
            &format!("{path}/attachments"),
            Some(&admin),
            &v.file_name,
            "application/pdf",
            format!("%PDF-1.7\n% {}\n", v.name).as_bytes(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // A CSV import (a good row, and a bad one whose error could quote its cell) and an export.
    let csv = format!(
        "name,email\n{},{}\n{},{}\n",
        v.import_name, v.import_email, v.import_name, v.bad_email
    );
    let r = c
        .client
        .post(format!("{}/api/customers/import", c.base))
        .bearer_auth(&admin)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let report = json_of(r).await;
    assert_eq!(report["created"], 1, "{report}");
    assert_eq!(report["errors"].as_array().unwrap().len(), 1, "{report}");
    let r = c
        .send(Method::GET, "/api/customers/export.csv", Some(&admin), None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains(&v.import_email));
    // Failed logins: an unknown email, and a malformed body quoting a value.
    let r = c
        .send(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({ "email": v.unknown_email, "password": "not the password at all" })),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .send(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({ "email": [v.unknown_email] })),
        )
        .await;
    assert!(r.status().is_client_error());
    // A token that ends: its refusal is logged at debug (proves debug lines are captured).
    let (_, agent) = app.as_role(egec_domain::Role::Agent).await;
    let r = c
        .send(
            Method::POST,
            "/api/auth/logout",
            Some(&agent),
            Some(json!({})),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    let r = c
        .send(Method::GET, "/api/auth/me", Some(&agent), None)
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

fn assert_clean(v: &Values) {
    let log = text();
    // The capture works: the start-up line (info) and a session refusal (debug) are there.
    assert!(log.contains("serving"), "nothing captured");
    assert!(log.contains("session refused"), "debug lines not captured");
    for value in v.all() {
        assert!(
            !log.to_lowercase().contains(&value.to_lowercase()),
            "the log holds the personal value {value:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_personal_reaches_the_logs_at_trace_level_on_sqlite() {
    capture_logs();
    let app = TestApp::spawn(support::Backend::Sqlite).await;
    let v = Values::new("sqlitehyg", "0153");
    workload(&app, &v).await;
    assert_clean(&v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_personal_reaches_the_logs_at_trace_level_on_postgres() {
    capture_logs();
    let app = TestApp::spawn(support::Backend::Postgres).await;
    let v = Values::new("pghyg", "0274");
    workload(&app, &v).await;
    assert_clean(&v);
}
