//! `egec audit export [--from T] [--to T] [--actor U] [--action A] [--entity-type T]
//! [--entity-id U]` writes the audit log as CSV to standard output.

mod common;

use common::Store;

async fn the_audit_export_writes_a_header_and_one_row_per_event_within_the_window(store: Store) {
    let first = store.create_user("first@egec.example", "admin");
    let second = store.create_user("second@egec.example", "agent");
    let out = store.run(&["audit", "export"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "position,occurred_at,action,entity_type,entity_id,actor_id,actor_role,ip,description"
    );
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[1].starts_with("1,") && lines[1].contains("USER_CREATED"));
    assert!(lines[1].contains(&first) && lines[2].contains(&second));
    assert!(!text.contains("first@egec.example"), "no personal data");

    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let out = store.run(&["audit", "export", "--from", &future], None);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    let out = store.run(&["audit", "export", "--to", "not-a-time"], None);
    assert_eq!(out.status.code(), Some(1));

    // The API's filters: everything about one entity, or by one actor (the CLI's users are
    // created by the system, so no actor did anything here).
    let out = store.run(&["audit", "export", "--entity-id", &second], None);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains(&second) && !text.contains(&first));
    let out = store.run(
        &[
            "audit",
            "export",
            "--actor",
            &first,
            "--action",
            "USER_CREATED",
        ],
        None,
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    let out = store.run(&["audit", "export", "--actor", "not-a-uuid"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("actor_id"));
}

#[tokio::test]
async fn the_audit_export_writes_a_header_and_one_row_per_event_within_the_window_on_sqlite() {
    the_audit_export_writes_a_header_and_one_row_per_event_within_the_window(Store::sqlite().await)
        .await;
}

#[tokio::test]
async fn the_audit_export_writes_a_header_and_one_row_per_event_within_the_window_on_postgres() {
    the_audit_export_writes_a_header_and_one_row_per_event_within_the_window(
        Store::postgres().await,
    )
    .await;
}
