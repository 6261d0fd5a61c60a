//! Staff user management through the API: who may create whom, duplicates, weak passwords.

mod support;

use egec_domain::Role;
use reqwest::StatusCode;
use serde_json::json;
use support::{TestApp, json_of};

fn body(email: &str, role: &str) -> serde_json::Value {
    json!({ "email": email, "name": "New Staff", "role": role, "password": "orchard lantern 4417 meadow" })
}

both_backends!(
    only_a_superadmin_creates_admins_and_an_admin_creates_the_other_roles,
    |app: TestApp| async move {
        let (_, superadmin) = app.as_role(Role::Superadmin).await;
        let (_, admin) = app.as_role(Role::Admin).await;
        let (_, superagent) = app.as_role(Role::Superagent).await;
        assert_eq!(
            app.post("/api/users", Some(&admin), body("a1@egec.example", "admin"))
                .await
                .status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            app.post(
                "/api/users",
                Some(&admin),
                body("a2@egec.example", "superadmin")
            )
            .await
            .status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            app.post(
                "/api/users",
                Some(&superagent),
                body("a3@egec.example", "agent")
            )
            .await
            .status(),
            StatusCode::FORBIDDEN
        );
        let r = app
            .post(
                "/api/users",
                Some(&admin),
                body("Agent.One@egec.example", "agent"),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let created = json_of(r).await;
        assert_eq!(created["email"], "agent.one@egec.example");
        assert_eq!(created["role"], "agent");
        assert!(created.get("password").is_none() && created.get("password_hash").is_none());
        let r = app
            .post(
                "/api/users",
                Some(&superadmin),
                body("boss2@egec.example", "admin"),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        // The new user can log in with the password they were given.
        let login = app.post("/api/auth/login", None, json!({ "email": "agent.one@egec.example", "password": "orchard lantern 4417 meadow" })).await;
        assert_eq!(login.status(), StatusCode::OK);
        let id = created["id"].as_str().unwrap();
        let got = json_of(app.get(&format!("/api/users/{id}"), Some(&admin)).await).await;
        assert_eq!(got, created);
        let list = json_of(app.get("/api/users", Some(&admin)).await).await;
        assert_eq!(list["total"], 5);
        assert_eq!(
            app.get("/api/users", Some(&superagent)).await.status(),
            StatusCode::FORBIDDEN
        );
    }
);

both_backends!(
    a_duplicate_email_is_a_conflict_and_a_weak_password_is_refused,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        assert_eq!(
            app.post(
                "/api/users",
                Some(&admin),
                body("dup@egec.example", "agent")
            )
            .await
            .status(),
            StatusCode::CREATED
        );
        let r = app
            .post(
                "/api/users",
                Some(&admin),
                body("DUP@egec.example", "dataentry"),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(json_of(r).await["error"]["code"], "conflict");
        let before = app.running.state.log.head().await.unwrap().position;
        for weak in [
            "short",
            "password1234",
            "egec orchard lantern meadow",
            "new staff orchard 44",
        ] {
            let mut b = body("weak@egec.example", "agent");
            b["password"] = json!(weak);
            let r = app.post("/api/users", Some(&admin), b).await;
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{weak}");
            let e = json_of(r).await;
            assert_eq!(e["error"]["code"], "weak_password", "{weak}");
            assert!(
                !e.to_string().contains(weak),
                "the message never repeats the password"
            );
        }
        assert_eq!(
            app.running.state.log.head().await.unwrap().position,
            before,
            "refusals store nothing"
        );
        let r = app.post("/api/users", Some(&admin), json!({ "email": "x@egec.example", "name": "X", "role": "root", "password": "orchard lantern 4417 meadow" })).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(json_of(r).await["error"]["fields"]["role"].is_string());
    }
);

both_backends!(
    a_user_reads_their_own_account_but_not_others_without_permission,
    |app: TestApp| async move {
        let (agent_id, agent) = app.as_role(Role::Agent).await;
        let (other_id, _) = app.as_role(Role::Agent).await;
        assert_eq!(
            app.get(&format!("/api/users/{agent_id}"), Some(&agent))
                .await
                .status(),
            StatusCode::OK
        );
        assert_eq!(
            app.get(&format!("/api/users/{other_id}"), Some(&agent))
                .await
                .status(),
            StatusCode::FORBIDDEN
        );
    }
);
