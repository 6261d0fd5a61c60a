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

both_backends!(
    an_admin_may_neither_change_a_superadmin_or_an_admin_nor_make_anyone_one,
    |app: TestApp| async move {
        let (superadmin_id, _) = app.as_role(Role::Superadmin).await;
        let (other_admin, _) = app.as_role(Role::Admin).await;
        let (_, admin) = app.as_role(Role::Admin).await;
        let (agent_id, agent) = app.as_role(Role::Agent).await;
        let user = |id: uuid::Uuid| format!("/api/users/{id}");
        for (id, body) in [
            (superadmin_id, json!({ "name": "Renamed Boss" })),
            (superadmin_id, json!({ "active": false })),
            (other_admin, json!({ "role": "agent" })),
            (agent_id, json!({ "role": "admin" })),
            (agent_id, json!({ "role": "superadmin" })),
        ] {
            let r = app.patch(&user(id), Some(&admin), body.clone()).await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{body}");
            assert_eq!(json_of(r).await["error"]["code"], "forbidden");
        }
        // Below admin nobody manages users.
        assert_eq!(
            app.patch(
                &user(agent_id),
                Some(&agent),
                json!({ "name": "Me Myself" })
            )
            .await
            .status(),
            StatusCode::FORBIDDEN
        );
        // Within their authority an admin may.
        let r = app
            .patch(
                &user(agent_id),
                Some(&admin),
                json!({ "role": "superagent", "name": "Sam Super" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = json_of(r).await;
        assert_eq!(body["role"], "superagent");
        assert_eq!(body["name"], "Sam Super");
        let got = json_of(app.get(&user(agent_id), Some(&admin)).await).await;
        assert_eq!(got, body);
    }
);

both_backends!(
    a_user_patch_with_bad_input_is_refused_with_the_contracts_codes,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let (agent_id, _) = app.as_role(Role::Agent).await;
        let path = format!("/api/users/{agent_id}");
        let r = app
            .patch(&path, Some(&admin), json!({ "email": "x@egec.example" }))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "unknown field");
        assert_eq!(json_of(r).await["error"]["code"], "bad_request");
        let r = app
            .patch(&path, Some(&admin), json!({ "active": "no" }))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "wrong type");
        let r = app
            .patch(&path, Some(&admin), json!({ "role": "root", "name": "" }))
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = json_of(r).await;
        assert_eq!(body["error"]["code"], "validation_failed");
        assert!(body["error"]["fields"]["role"].is_string(), "{body}");
        assert!(body["error"]["fields"]["name"].is_string(), "{body}");
        let r = app
            .patch(
                &format!("/api/users/{}", uuid::Uuid::now_v7()),
                Some(&admin),
                json!({ "active": false }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
);

both_backends!(
    the_last_active_superadmin_can_be_neither_demoted_nor_deactivated,
    |app: TestApp| async move {
        let (boss, boss_token) = app.as_role(Role::Superadmin).await;
        let path = format!("/api/users/{boss}");
        for body in [
            json!({ "role": "admin" }),
            json!({ "active": false }),
            json!({ "role": "agent", "active": false }),
        ] {
            let r = app.patch(&path, Some(&boss_token), body.clone()).await;
            assert_eq!(r.status(), StatusCode::CONFLICT, "{body}");
            let err = json_of(r).await;
            assert_eq!(err["error"]["code"], "conflict");
            assert!(
                err["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("last active superadmin")
            );
        }
        assert_eq!(app.me_status(&boss_token).await, StatusCode::OK);
        // A deactivated superadmin does not count.
        let (second, _) = app.as_role(Role::Superadmin).await;
        let r = app
            .patch(
                &format!("/api/users/{second}"),
                Some(&boss_token),
                json!({ "active": false }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            app.patch(&path, Some(&boss_token), json!({ "role": "admin" }))
                .await
                .status(),
            StatusCode::CONFLICT
        );
        // With another active superadmin, stepping down works (and ends the session).
        app.patch(
            &format!("/api/users/{second}"),
            Some(&boss_token),
            json!({ "active": true }),
        )
        .await;
        let r = app
            .patch(&path, Some(&boss_token), json!({ "role": "admin" }))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(json_of(r).await["role"], "admin");
        assert_eq!(app.me_status(&boss_token).await, StatusCode::UNAUTHORIZED);
    }
);
