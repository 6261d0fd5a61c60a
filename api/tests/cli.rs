//! The `egec` command line, black-box: exit codes, configuration errors, user creation,
//! verification of a tampered log, history and rebuild.

mod common;

use common::Store;
use serde_json::Value;

#[tokio::test]
async fn bad_configuration_lists_every_problem_exits_2_and_echoes_no_secret() {
    let store = Store::sqlite().await;
    let out = store
        .egec()
        .args(["migrate"])
        .env("EGEC_MASTER_KEY", "not-hex-secret-value")
        .env("EGEC_JWT_SECRET", "short-secret-value")
        .env("EGEC_LISTEN", "nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("EGEC_MASTER_KEY")
            && err.contains("EGEC_JWT_SECRET")
            && err.contains("EGEC_LISTEN"),
        "{err}"
    );
    assert!(!err.contains("not-hex-secret-value") && !err.contains("short-secret-value"));
    assert!(!err.contains("panicked"));
}

#[tokio::test]
async fn a_new_data_directory_is_readable_by_its_owner_only() {
    let store = Store::sqlite().await;
    let dir = store.dir.path().join("fresh-data");
    let out = store
        .egec()
        .args(["migrate"])
        .env("EGEC_DATA_DIR", &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(dir.join("egec.db").exists());
}

#[tokio::test]
async fn production_refuses_generated_secrets() {
    let store = Store::sqlite().await;
    let out = store
        .egec()
        .args(["migrate"])
        .env("EGEC_ENV", "production")
        .env_remove("EGEC_MASTER_KEY")
        .env_remove("EGEC_JWT_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

async fn users_are_created_from_stdin_once_per_email(store: Store) {
    let id = store.create_user("first@egec.example", "superadmin");
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let again = store.run(
        &[
            "user",
            "create",
            "--email",
            "FIRST@egec.example",
            "--name",
            "Dup",
            "--role",
            "admin",
            "--password-stdin",
        ],
        Some(common::PASSWORD),
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad_role = store.run(
        &[
            "user",
            "create",
            "--email",
            "x@egec.example",
            "--name",
            "X",
            "--role",
            "root",
            "--password-stdin",
        ],
        Some(common::PASSWORD),
    );
    assert_eq!(bad_role.status.code(), Some(1));
    let short = store.run(
        &[
            "user",
            "create",
            "--email",
            "y@egec.example",
            "--name",
            "Y",
            "--role",
            "agent",
            "--password-stdin",
        ],
        Some("short"),
    );
    assert_eq!(short.status.code(), Some(1));
    let common = store.run(
        &[
            "user",
            "create",
            "--email",
            "z@egec.example",
            "--name",
            "Zed",
            "--role",
            "agent",
            "--password-stdin",
        ],
        Some("password1234"),
    );
    assert_eq!(common.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&common.stderr).contains("password"),
        "the reason is given"
    );
}

async fn verify_passes_on_an_untouched_log_and_exits_1_on_tampering(store: Store) {
    let id = store.create_user("a@egec.example", "admin");
    store.create_user("b@egec.example", "agent");
    let ok = store.run(&["replay", "verify"], None);
    assert!(ok.status.success());
    let report: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["events_checked"], 2);

    let history = store.run(&["replay", "history", &format!("user-{id}")], None);
    assert!(history.status.success());
    let line: Value = serde_json::from_str(
        String::from_utf8_lossy(&history.stdout)
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["event_type"], "UserCreated");
    assert_eq!(
        line["personal"]["email"], "a@egec.example",
        "the operator's replay decrypts"
    );
    assert_eq!(
        line["personal"]["password_hash"], "[REDACTED]",
        "credentials are shown to no one, not even the operator"
    );
    assert!(!String::from_utf8_lossy(&history.stdout).contains("$argon2"));

    let rebuild = store.run(&["replay", "rebuild", "--projection", "users"], None);
    assert!(
        rebuild.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuild.stderr)
    );

    // Tamper: change the role fact of the first event behind the log's back.
    match &store.database_url {
        None => {
            let conn = rusqlite::Connection::open(store.dir.path().join("egec.db")).unwrap();
            conn.execute("UPDATE events SET payload = replace(payload, '\"admin\"', '\"superadmin\"') WHERE global_position = 1", []).unwrap();
        }
        Some(url) => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .execute("UPDATE egec.events SET payload = jsonb_set(payload::jsonb, '{facts,role}', '\"superadmin\"')::json WHERE global_position = 1", &[])
                .await
                .unwrap();
        }
    }
    let bad = store.run(&["replay", "verify"], None);
    assert_eq!(bad.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_position"], 1);
}

#[tokio::test]
async fn users_are_created_from_stdin_once_per_email_on_sqlite() {
    users_are_created_from_stdin_once_per_email(Store::sqlite().await).await;
}
#[tokio::test]
async fn users_are_created_from_stdin_once_per_email_on_postgres() {
    users_are_created_from_stdin_once_per_email(Store::postgres().await).await;
}
#[tokio::test]
async fn verify_passes_on_an_untouched_log_and_exits_1_on_tampering_on_sqlite() {
    verify_passes_on_an_untouched_log_and_exits_1_on_tampering(Store::sqlite().await).await;
}
#[tokio::test]
async fn verify_passes_on_an_untouched_log_and_exits_1_on_tampering_on_postgres() {
    verify_passes_on_an_untouched_log_and_exits_1_on_tampering(Store::postgres().await).await;
}
