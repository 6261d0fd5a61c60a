//! Sessions: logout and logout everywhere end tokens on the very next request; idle and
//! absolute timeouts; tokens cannot be edited.

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
