//! Sessions: logout, logout everywhere, force-logout, deactivation and role changes end
//! tokens on the very next request; idle and absolute timeouts; tokens cannot be edited.

mod support;

use egec_domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use support::{TestApp, json_of};

async fn event_types(app: &TestApp) -> Vec<String> {
    app.running
        .state
        .log
        .read_all(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

async fn login_as(app: &TestApp, email: &str) -> reqwest::Response {
    app.post(
        "/api/auth/login",
        None,
        json!({ "email": email, "password": support::PASSWORD }),
    )
    .await
}

both_backends!(
    logging_out_ends_that_token_at_once_while_another_session_of_the_same_user_still_works,
    |app: TestApp| async move {
        app.user("two.devices@egec.example", Role::Agent).await;
        let laptop = app.login("two.devices@egec.example").await;
        let phone = app.login("two.devices@egec.example").await;
        assert_eq!(app.me_status(&laptop).await, StatusCode::OK);
        let r = app.post("/api/auth/logout", Some(&laptop), json!({})).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = app.get("/api/auth/me", Some(&laptop)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(json_of(r).await["error"]["code"], "unauthorized");
        assert_eq!(
            app.post("/api/auth/logout", Some(&laptop), json!({}))
                .await
                .status(),
            StatusCode::UNAUTHORIZED,
            "a logged-out token cannot log out again"
        );
        assert_eq!(app.me_status(&phone).await, StatusCode::OK);
        let types = event_types(&app).await;
        assert_eq!(
            types.iter().filter(|t| *t == "LoginSessionEnded").count(),
            1
        );
    }
);

both_backends!(
    logout_all_ends_every_session_of_the_caller_and_nobody_elses,
    |app: TestApp| async move {
        app.user("me@egec.example", Role::Superagent).await;
        let first = app.login("me@egec.example").await;
        let second = app.login("me@egec.example").await;
        let (_, other) = app.as_role(Role::Superagent).await;
        let r = app
            .post("/api/auth/logout-all", Some(&second), json!({}))
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.me_status(&first).await, StatusCode::UNAUTHORIZED);
        assert_eq!(app.me_status(&second).await, StatusCode::UNAUTHORIZED);
        assert_eq!(app.me_status(&other).await, StatusCode::OK);
        // A new login works.
        let fresh = app.login("me@egec.example").await;
        assert_eq!(app.me_status(&fresh).await, StatusCode::OK);
        assert!(
            event_types(&app)
                .await
                .contains(&"UserSessionsRevoked".to_owned())
        );
    }
);

both_backends!(
    a_force_logout_by_an_admin_ends_the_targets_sessions_and_only_within_their_authority,
    |app: TestApp| async move {
        let (superadmin_id, superadmin) = app.as_role(Role::Superadmin).await;
        let (admin_id, admin) = app.as_role(Role::Admin).await;
        let target = app.user("target@egec.example", Role::Agent).await;
        let t1 = app.login("target@egec.example").await;
        let t2 = app.login("target@egec.example").await;
        let (_, agent) = app.as_role(Role::Agent).await;
        let path = |id: uuid::Uuid| format!("/api/users/{id}/force-logout");
        // Not allowed: an agent at all; an admin against a superadmin or another admin.
        for (token, id) in [
            (&agent, target),
            (&admin, superadmin_id),
            (&admin, admin_id),
        ] {
            assert_eq!(
                app.post(&path(id), Some(token), json!({})).await.status(),
                StatusCode::FORBIDDEN
            );
        }
        assert_eq!(app.me_status(&t1).await, StatusCode::OK);
        assert_eq!(
            app.post(&path(uuid::Uuid::now_v7()), Some(&admin), json!({}))
                .await
                .status(),
            StatusCode::NOT_FOUND
        );
        let r = app.post(&path(target), Some(&admin), json!({})).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.me_status(&t1).await, StatusCode::UNAUTHORIZED);
        assert_eq!(app.me_status(&t2).await, StatusCode::UNAUTHORIZED);
        assert_eq!(app.me_status(&admin).await, StatusCode::OK);
        // A superadmin may force out an admin.
        assert_eq!(
            app.post(&path(admin_id), Some(&superadmin), json!({}))
                .await
                .status(),
            StatusCode::NO_CONTENT
        );
        assert_eq!(app.me_status(&admin).await, StatusCode::UNAUTHORIZED);
        // The target logs in again.
        assert_eq!(
            login_as(&app, "target@egec.example").await.status(),
            StatusCode::OK
        );
    }
);

both_backends!(
    deactivation_ends_the_targets_token_at_once_and_refuses_their_login_until_reactivated,
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let id = app.user("leaver@egec.example", Role::Dataentry).await;
        let token = app.login("leaver@egec.example").await;
        let r = app
            .patch(
                &format!("/api/users/{id}"),
                Some(&admin),
                json!({ "active": false }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(json_of(r).await["active"], false);
        assert_eq!(app.me_status(&token).await, StatusCode::UNAUTHORIZED);
        let r = login_as(&app, "leaver@egec.example").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(json_of(r).await["error"]["code"], "invalid_credentials");
        let r = app
            .patch(
                &format!("/api/users/{id}"),
                Some(&admin),
                json!({ "active": true }),
            )
            .await;
        assert_eq!(json_of(r).await["active"], true);
        assert_eq!(
            app.me_status(&token).await,
            StatusCode::UNAUTHORIZED,
            "reactivation does not revive old tokens"
        );
        assert_eq!(
            login_as(&app, "leaver@egec.example").await.status(),
            StatusCode::OK
        );
    }
);

both_backends!(
    a_role_change_ends_the_old_token_and_a_new_login_carries_the_new_role,
    |app: TestApp| async move {
        let (_, superadmin) = app.as_role(Role::Superadmin).await;
        let id = app.user("riser@egec.example", Role::Agent).await;
        let old = app.login("riser@egec.example").await;
        // As an agent they may not list users.
        assert_eq!(
            app.get("/api/users", Some(&old)).await.status(),
            StatusCode::FORBIDDEN
        );
        let r = app
            .patch(
                &format!("/api/users/{id}"),
                Some(&superadmin),
                json!({ "role": "admin" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(json_of(r).await["role"], "admin");
        assert_eq!(app.me_status(&old).await, StatusCode::UNAUTHORIZED);
        let r = login_as(&app, "riser@egec.example").await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = json_of(r).await;
        assert_eq!(body["user"]["role"], "admin");
        let new = body["token"].as_str().unwrap();
        assert_eq!(
            app.get("/api/users", Some(new)).await.status(),
            StatusCode::OK
        );
        // A rename alone ends no session.
        let r = app
            .patch(
                &format!("/api/users/{id}"),
                Some(&superadmin),
                json!({ "name": "Rhea Riser" }),
            )
            .await;
        assert_eq!(json_of(r).await["name"], "Rhea Riser");
        assert_eq!(app.me_status(new).await, StatusCode::OK);
    }
);

both_backends!(
    an_idle_session_ends_after_the_idle_timeout_and_activity_keeps_it_alive,
    env = [("EGEC_SESSION_IDLE_SECONDS", "3")],
    |app: TestApp| async move {
        app.user("idle@egec.example", Role::Agent).await;
        let unused = app.login("idle@egec.example").await;
        let token = app.login("idle@egec.example").await;
        assert_eq!(app.me_status(&token).await, StatusCode::OK);
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert_eq!(
                app.me_status(&token).await,
                StatusCode::OK,
                "used within the idle timeout"
            );
        }
        // Over 4.5 s after login: alive only because it was used; the unused one is not.
        assert_eq!(app.me_status(&unused).await, StatusCode::UNAUTHORIZED);
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(app.me_status(&token).await, StatusCode::UNAUTHORIZED);
    }
);

both_backends!(
    a_session_ends_at_the_absolute_timeout_however_active_it_is,
    env = [
        ("EGEC_SESSION_IDLE_SECONDS", "60"),
        ("EGEC_SESSION_ABSOLUTE_SECONDS", "4"),
    ],
    |app: TestApp| async move {
        app.user("busy@egec.example", Role::Agent).await;
        let r = login_as(&app, "busy@egec.example").await;
        let body: Value = json_of(r).await;
        let token = body["token"].as_str().unwrap().to_owned();
        let expires: chrono::DateTime<chrono::Utc> =
            body["expires_at"].as_str().unwrap().parse().unwrap();
        let left = expires - chrono::Utc::now();
        assert!(
            left <= chrono::Duration::seconds(4),
            "the token says when it ends: {left}"
        );
        for _ in 0..2 {
            assert_eq!(app.me_status(&token).await, StatusCode::OK);
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        // Over 4.5 s after login, used every second: ended all the same (the token's own
        // `exp` alone would still pass within the verifier's leeway).
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(app.me_status(&token).await, StatusCode::UNAUTHORIZED);
    }
);

both_backends!(
    a_token_whose_session_version_claim_was_edited_is_refused,
    |app: TestApp| async move {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        app.user("forger@egec.example", Role::Agent).await;
        let token = app.login("forger@egec.example").await;
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sv"], 1, "the token carries the session version");
        assert!(claims["sid"].as_str().is_some());
        claims["sv"] = json!(1000);
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
            parts[2]
        );
        assert_eq!(app.me_status(&forged).await, StatusCode::UNAUTHORIZED);
        assert_eq!(app.me_status(&token).await, StatusCode::OK);
    }
);
