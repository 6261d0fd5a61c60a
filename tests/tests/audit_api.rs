//! The audit log: every event visible with its action, actor and entity; filters; CSV export;
//! hash-chain verification; the projection rebuilds to the same rows.

mod support;

use egec_domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Backend, TestApp, json_of};

async fn caught_up(app: &TestApp) {
    app.caught_up().await;
}

async fn audit(app: &TestApp, token: &str, query: &str) -> Value {
    let r = app.get(&format!("/api/audit{query}"), Some(token)).await;
    assert_eq!(r.status(), StatusCode::OK, "{query}");
    json_of(r).await
}

fn actions(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["action"].as_str().unwrap().to_owned())
        .collect()
}

/// A login, a failed login, a customer created and updated by an admin; answers (admin id,
/// admin token, customer id, auditor token).
async fn some_history(app: &TestApp) -> (String, String, String, String) {
    let admin_id = app.user("audit.admin@egec.example", Role::Admin).await;
    let r = app
        .post(
            "/api/auth/login",
            None,
            json!({ "email": "audit.admin@egec.example", "password": "wrong password, sorry" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let admin = app.login("audit.admin@egec.example").await;
    let r = app
        .post(
            "/api/customers",
            Some(&admin),
            json!({ "name": "Audrey Audit", "email": "audrey@example.com", "passport_number": "ZX9876543" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let customer = json_of(r).await["id"].as_str().unwrap().to_owned();
    let r = app
        .patch(
            &format!("/api/customers/{customer}"),
            Some(&admin),
            json!({ "status": "contacted", "email": "audrey.new@example.com" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (_, auditor) = app.as_role(Role::Auditor).await;
    caught_up(app).await;
    (admin_id.to_string(), admin, customer, auditor)
}

both_backends!(
    the_audit_shows_logins_failures_and_customer_changes_with_actor_entity_and_ip_and_no_personal_data,
    |app: TestApp| async move {
        let (admin_id, _, customer, auditor) = some_history(&app).await;
        let all = audit(&app, &auditor, "?per_page=500").await;
        let acts = actions(&all);
        for a in ["USER_CREATED", "LOGIN_FAILED", "LOGIN", "CUSTOMER_CREATED", "CUSTOMER_UPDATED"] {
            assert!(acts.contains(&a.to_owned()), "{a} missing from {acts:?}");
        }
        assert_eq!(all["total"].as_u64().unwrap() as usize, acts.len());
        // Newest first, by position.
        let positions: Vec<i64> = all["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["position"].as_i64().unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] > w[1]), "{positions:?}");

        let item = |action: &str| -> Value {
            all["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["action"] == action)
                .unwrap()
                .clone()
        };
        let updated = item("CUSTOMER_UPDATED");
        assert_eq!(updated["entity_type"], "customer");
        assert_eq!(updated["entity_id"], customer.as_str());
        assert_eq!(updated["actor"]["id"], admin_id.as_str());
        assert_eq!(updated["actor"]["role"], "admin");
        assert_eq!(updated["ip"], "127.0.0.1", "the IP is decrypted for auditors");
        assert!(updated["description"].as_str().unwrap().contains("contacted"));
        let failed = item("LOGIN_FAILED");
        assert_eq!(failed["entity_type"], "user");
        assert_eq!(failed["entity_id"], admin_id.as_str());
        assert!(failed["occurred_at"].is_string());
        assert!(
            all["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["action"] == "LOGIN" && i["entity_id"] == admin_id.as_str()),
            "the admin's login is listed"
        );

        let text = all.to_string();
        for personal in ["Audrey", "audrey@example.com", "audrey.new", "ZX9876543", "audit.admin@"] {
            assert!(!text.contains(personal), "{personal} is in the audit");
        }
    }
);

both_backends!(
    audit_filters_narrow_by_action_entity_actor_and_time_and_bad_values_are_named,
    |app: TestApp| async move {
        let (admin_id, _, customer, auditor) = some_history(&app).await;
        let v = audit(&app, &auditor, "?action=LOGIN_FAILED").await;
        assert_eq!(actions(&v), vec!["LOGIN_FAILED"]);
        assert_eq!(v["total"], 1);
        let v = audit(&app, &auditor, &format!("?entity_id={customer}")).await;
        assert_eq!(actions(&v), vec!["CUSTOMER_UPDATED", "CUSTOMER_CREATED"]);
        let v = audit(
            &app,
            &auditor,
            &format!("?entity_type=customer&actor_id={admin_id}"),
        )
        .await;
        assert_eq!(v["total"], 2);
        let v = audit(
            &app,
            &auditor,
            &format!("?actor_id={admin_id}&action=CUSTOMER_CREATED"),
        )
        .await;
        assert_eq!(v["total"], 1);
        let v = audit(&app, &auditor, "?entity_type=customer&per_page=1&page=2").await;
        assert_eq!(actions(&v), vec!["CUSTOMER_CREATED"]);
        assert_eq!(v["total"], 2);
        let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        let v = audit(&app, &auditor, &format!("?from={}", urlencode(&future))).await;
        assert_eq!(v["total"], 0);
        let v = audit(&app, &auditor, &format!("?to={}", urlencode(&future))).await;
        assert!(v["total"].as_u64().unwrap() >= 5);

        for (q, field) in [
            ("?from=yesterday", "from"),
            ("?to=2026-13-01", "to"),
            ("?entity_id=42", "entity_id"),
            ("?actor_id=x", "actor_id"),
            ("?page=0", "page"),
            ("?action=login", "action"),
        ] {
            let r = app.get(&format!("/api/audit{q}"), Some(&auditor)).await;
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{q}");
            let e = json_of(r).await;
            assert_eq!(e["error"]["code"], "validation_failed");
            assert!(e["error"]["fields"][field].is_string(), "{q}: {e}");
        }
    }
);

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

both_backends!(
    only_superadmins_admins_and_auditors_read_and_export_the_audit,
    |app: TestApp| async move {
        for (role, allowed) in [
            (Role::Superadmin, true),
            (Role::Admin, true),
            (Role::Auditor, true),
            (Role::Superagent, false),
            (Role::Agent, false),
            (Role::Dataentry, false),
        ] {
            let (_, token) = app.as_role(role).await;
            for path in ["/api/audit", "/api/audit/export.csv", "/api/audit/verify"] {
                let status = app.get(path, Some(&token)).await.status();
                let want = if allowed {
                    StatusCode::OK
                } else {
                    StatusCode::FORBIDDEN
                };
                assert_eq!(status, want, "{role} {path}");
            }
        }
        assert_eq!(
            app.get("/api/audit", None).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
);

both_backends!(
    the_csv_export_has_a_header_and_one_row_per_matching_event_oldest_first,
    |app: TestApp| async move {
        let (_, admin, customer, _) = some_history(&app).await;
        let r = app.get("/api/audit/export.csv", Some(&admin)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()[reqwest::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        let text = r.text().await.unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "position,occurred_at,action,entity_type,entity_id,actor_id,actor_role,ip,description"
        );
        let rows: Vec<&str> = lines.collect();
        let total = audit(&app, &admin, "").await["total"].as_u64().unwrap();
        // The export itself is a read, not an event: the count is unchanged.
        assert_eq!(rows.len() as u64, total);
        assert!(rows[0].starts_with("1,"), "oldest first: {}", rows[0]);
        let r = app
            .get(
                &format!("/api/audit/export.csv?entity_id={customer}"),
                Some(&admin),
            )
            .await;
        let text = r.text().await.unwrap();
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].contains("CUSTOMER_CREATED") && rows[1].contains("CUSTOMER_UPDATED"));
        assert!(rows[1].contains("127.0.0.1"));
        assert!(!text.contains("audrey"));
        let r = app
            .get("/api/audit/export.csv?from=soon", Some(&admin))
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
);

both_backends!(
    verify_is_ok_on_an_untouched_log_and_names_the_position_of_a_tampered_row,
    |app: TestApp| async move {
        let (_, _, _, auditor) = some_history(&app).await;
        let r = app.get("/api/audit/verify", Some(&auditor)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let v = json_of(r).await;
        assert_eq!(v["ok"], true);
        let head = app.running.state.log.head().await.unwrap().position;
        assert_eq!(v["events_checked"].as_i64().unwrap(), head);

        // Change the status fact of the customer's update (position found by type).
        match app.backend {
            Backend::Sqlite => {
                let conn = rusqlite::Connection::open(app.data_dir.join("egec.db")).unwrap();
                conn.execute(
                    "UPDATE events SET payload = replace(payload, '\"contacted\"', '\"enrolled\"') \
                     WHERE event_type = 'CustomerUpdated'",
                    [],
                )
                .unwrap();
            }
            Backend::Postgres => {
                let url = app.database_url.as_ref().unwrap();
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                client
                    .execute(
                        "UPDATE egec.events SET payload = jsonb_set(payload::jsonb, '{facts,status}', '\"enrolled\"')::json \
                         WHERE event_type = 'CustomerUpdated'",
                        &[],
                    )
                    .await
                    .unwrap();
            }
        }
        let tampered = json_of(
            app.get("/api/audit?action=CUSTOMER_UPDATED", Some(&auditor))
                .await,
        )
        .await["items"][0]["position"]
            .as_i64()
            .unwrap();
        let v = json_of(app.get("/api/audit/verify", Some(&auditor)).await).await;
        assert_eq!(v["ok"], false);
        assert_eq!(v["first_bad_position"].as_i64(), Some(tampered));
    }
);

both_backends!(
    the_audit_projection_rebuilds_to_the_same_rows,
    |app: TestApp| async move {
        let (_, _, _, auditor) = some_history(&app).await;
        let before = audit(&app, &auditor, "?per_page=500").await;
        app.running
            .state
            .runner
            .rebuild("audit", |_, _| {})
            .await
            .expect("rebuild");
        caught_up(&app).await;
        let after = audit(&app, &auditor, "?per_page=500").await;
        assert_eq!(after, before);
    }
);
