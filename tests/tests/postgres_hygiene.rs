//! Database hygiene for production, against the real PostgreSQL: a request whose statement
//! runs out of time is answered 503 and changes nothing; a node running as the
//! least-privilege role `egec_app` does all its work (writes, reads, erasure, rebuilds,
//! exports) but can neither rewrite the log nor lift an erasure; `egec_backup` reads and
//! never writes; and a node without the right to migrate says what to do.

mod support;

use std::time::{Duration, Instant};

use egec_domain::Role;
use egec_projections::ProjectionKind;
use reqwest::StatusCode;
use serde_json::json;
use support::{Backend, TestApp, json_of};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// A fresh database migrated by its owner (the test's superuser), as `egec migrate` run by
/// the owner would; migrating also creates the cluster's roles.
async fn migrated_by_owner() -> (String, egec_commands::testing::PgDropGuard) {
    let (url, guard) = egec_commands::testing::fresh_postgres().await;
    drop(
        egec_commands::store::postgres::PgLog::connect(&url, 1)
            .await
            .expect("the owner migrates"),
    );
    (url, guard)
}

async fn customers_in_log(app: &TestApp) -> usize {
    let conn = raw(app.database_url.as_deref().unwrap()).await;
    let row = conn
        .query_one(
            "SELECT count(*) FROM egec.events WHERE event_type = 'CustomerCreated'",
            &[],
        )
        .await
        .unwrap();
    row.get::<_, i64>(0) as usize
}

#[tokio::test]
async fn a_write_whose_statement_runs_out_of_time_is_answered_503_and_changes_nothing() {
    let app = TestApp::spawn_with(
        Backend::Postgres,
        &[("EGEC_DB_STATEMENT_TIMEOUT_MS", "500")],
    )
    .await;
    let (_, token) = app.as_role(Role::Superadmin).await;
    let body = json!({ "name": "Blocked Bea", "email": "bea@example.com" });

    // Another session holds the log's counter row, as a stuck transaction would.
    let mut blocker = raw(app.database_url.as_deref().unwrap()).await;
    let tx = blocker.transaction().await.unwrap();
    tx.execute("SELECT position FROM egec.log_head FOR UPDATE", &[])
        .await
        .unwrap();
    let started = Instant::now();
    let r = app.post("/api/customers", Some(&token), body.clone()).await;
    let waited = started.elapsed();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    let err = json_of(r).await;
    assert_eq!(err["error"]["code"], "unavailable");
    let text = err.to_string();
    for internal in ["57014", "statement", "postgres", "log_head"] {
        assert!(
            !text.contains(internal),
            "the body leaks {internal}: {text}"
        );
    }
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    tx.rollback().await.unwrap();
    assert_eq!(customers_in_log(&app).await, 0);

    // Once the lock is gone the same request goes through.
    let r = app.post("/api/customers", Some(&token), body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(customers_in_log(&app).await, 1);

    // Operators see the timeout and every pool at /metrics.
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    let timeouts: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("egec_db_timeouts_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no timeout counter: {metrics}"));
    assert!(timeouts >= 1.0, "{metrics}");
    for class in ["interactive", "append", "maintenance"] {
        assert!(
            metrics.contains(&format!(
                "egec_db_pool_max_connections{{class=\"{class}\"}}"
            )),
            "no {class} pool gauge: {metrics}"
        );
    }
}

/// A login role of the test's own, a member of `in_role` only, dropped at the end.
struct LoginRole {
    name: String,
}

impl LoginRole {
    async fn create(in_role: &str) -> LoginRole {
        let name = format!(
            "egec_test_login_{}",
            &Uuid::now_v7().simple().to_string()[20..]
        );
        let admin = raw(&egec_commands::testing::admin_url()).await;
        admin
            .batch_execute(&format!("CREATE ROLE {name} LOGIN IN ROLE {in_role}"))
            .await
            .unwrap();
        LoginRole { name }
    }

    async fn drop_role(self) {
        let admin = raw(&egec_commands::testing::admin_url()).await;
        admin
            .batch_execute(&format!("DROP ROLE IF EXISTS {}", self.name))
            .await
            .unwrap();
    }
}

fn denied(result: Result<u64, tokio_postgres::Error>, what: &str) {
    match result {
        Ok(_) => panic!("{what} was allowed"),
        Err(e) => assert_eq!(
            e.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{what}: {e}"
        ),
    }
}

#[tokio::test]
async fn a_node_running_as_egec_app_does_its_work_but_cannot_rewrite_the_log_or_lift_an_erasure() {
    // The owner migrates; the node logs in as a member of egec_app and acts as it.
    let (owner_url, guard) = migrated_by_owner().await;
    let login = LoginRole::create("egec_app").await;
    let node_url = egec_commands::testing::with_user(&owner_url, &login.name);
    let app =
        TestApp::spawn_on_postgres(node_url.clone(), guard, &[("EGEC_DB_ROLE", "egec_app")]).await;

    let (_, root) = app.as_role(Role::Superadmin).await;
    let r = app
        .post(
            "/api/customers",
            Some(&root),
            json!({ "name": "Priya Least", "email": "priya@example.com",
                    "passport_number": "LP1234567" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = json_of(r).await["id"].as_str().unwrap().to_owned();
    let r = app.get(&format!("/api/customers/{id}"), Some(&root)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json_of(r).await["passport_number"], "LP1234567");
    let r = app
        .post(
            &format!("/api/gdpr/customers/{id}/erase"),
            Some(&root),
            json!({ "reason": "art. 17 request" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // Blue/green rebuilds create, fill, index and swap tables in crm and analytics.
    let state = &app.running.state;
    for kind in ProjectionKind::ALL {
        state
            .runner
            .rebuild(kind.name(), |_, _| {})
            .await
            .unwrap_or_else(|e| panic!("rebuild of {} as egec_app: {e}", kind.name()));
    }
    let r = app.get(&format!("/api/customers/{id}"), Some(&root)).await;
    assert_eq!(json_of(r).await["name"], "[ERASED]");
    let r = app.get("/api/audit/export.csv", Some(&root)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let verify = json_of(app.get("/api/audit/verify", Some(&root)).await).await;
    assert_eq!(verify["ok"], true, "{verify}");

    // The same login, acting as egec_app, may not change what is recorded.
    let mut node = raw(&format!("{node_url}?options=-c%20role%3Degec_app")).await;
    let who = node.query_one("SELECT current_user", &[]).await.unwrap();
    assert_eq!(who.get::<_, String>(0), "egec_app");
    for (sql, what) in [
        ("UPDATE egec.events SET payload = '{}'", "updating an event"),
        ("DELETE FROM egec.events", "deleting events"),
        ("TRUNCATE egec.events", "truncating the log"),
        ("DELETE FROM egec.erased_subjects", "lifting an erasure"),
        (
            "UPDATE egec.erased_subjects SET subject = 'x'",
            "changing a tombstone",
        ),
        (
            "CREATE TABLE egec.shadow_log (x int)",
            "creating a table in egec",
        ),
        ("CREATE SCHEMA egec_other", "creating a schema"),
        (
            "DELETE FROM refinery_schema_history",
            "rewriting the migration history",
        ),
    ] {
        let tx = node.transaction().await.unwrap();
        denied(tx.execute(sql, &[]).await, what);
        tx.rollback().await.unwrap();
    }
    // Everything in the read-model schemas belongs to egec_app, whichever node made it.
    let owners = node
        .query(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname IN ('crm', 'analytics')",
            &[],
        )
        .await
        .unwrap();
    let owners: Vec<String> = owners.iter().map(|r| r.get(0)).collect();
    assert_eq!(owners, ["egec_app"]);

    // egec_backup reads all three schemas and writes none.
    let backup = LoginRole::create("egec_backup").await;
    let reader = raw(&egec_commands::testing::with_user(&owner_url, &backup.name)).await;
    for table in [
        "egec.events",
        "egec.subject_keys",
        "crm.customers",
        "analytics.logins_daily",
    ] {
        reader
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap_or_else(|e| panic!("egec_backup cannot read {table}: {e}"));
    }
    denied(
        reader.execute("DELETE FROM crm.customers", &[]).await,
        "a backup deleting read models",
    );
    denied(
        reader
            .execute("UPDATE egec.log_head SET position = 0", &[])
            .await,
        "a backup moving the log head",
    );
    drop(reader);
    drop(node);
    drop(app);
    login.drop_role().await;
    backup.drop_role().await;
}

#[tokio::test]
async fn a_node_that_may_not_migrate_a_database_needing_it_says_to_run_migrate_as_the_owner() {
    let (owner_url, _guard) = egec_commands::testing::fresh_postgres().await;
    // The roles exist once any database was migrated; make sure, on this cluster.
    let (_other_url, _other) = migrated_by_owner().await;
    let login = LoginRole::create("egec_app").await;
    let settings = egec_commands::store::postgres::PgSettings {
        role: Some("egec_app".into()),
        ..Default::default()
    };
    let err = egec_commands::store::postgres::PgLog::connect_with(
        &egec_commands::testing::with_user(&owner_url, &login.name),
        &settings,
    )
    .await
    .expect_err("egec_app may not create the schema");
    assert!(err.to_string().contains("egec migrate"), "{err}");
    login.drop_role().await;
}
