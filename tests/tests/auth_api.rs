//! Login, the current user, and what unauthenticated callers get.

mod support;

use egec_domain::Role;
use reqwest::StatusCode;
use serde_json::json;
use support::json_of;

both_backends!(
    a_user_logs_in_and_sees_themselves,
    |app: support::TestApp| async move {
        let id = app.user("Ada@Egec.example", Role::Admin).await;
        let r = app
            .post(
                "/api/auth/login",
                None,
                json!({ "email": "ada@egec.example", "password": support::PASSWORD }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = json_of(r).await;
        assert_eq!(body["user"]["id"], json!(id));
        assert_eq!(body["user"]["role"], "admin");
        assert_eq!(body["must_change_password"], false);
        assert!(body["expires_at"].as_str().is_some());
        let token = body["token"].as_str().unwrap();
        let me = json_of(app.get("/api/auth/me", Some(token)).await).await;
        assert_eq!(me["email"], "ada@egec.example");
        assert_eq!(me["name"], "Test User");
    }
);

both_backends!(
    a_wrong_password_and_an_unknown_email_get_the_same_answer,
    |app: support::TestApp| async move {
        app.user("known@egec.example", Role::Agent).await;
        let wrong = app
            .post(
                "/api/auth/login",
                None,
                json!({ "email": "known@egec.example", "password": "not the password at all" }),
            )
            .await;
        let unknown = app
            .post(
                "/api/auth/login",
                None,
                json!({ "email": "nobody@egec.example", "password": "not the password at all" }),
            )
            .await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
        let (a, b) = (json_of(wrong).await, json_of(unknown).await);
        assert_eq!(a, b);
        assert_eq!(a["error"]["code"], "invalid_credentials");
    }
);

both_backends!(
    requests_without_valid_credentials_are_unauthorized,
    |app: support::TestApp| async move {
        for token in [
            None,
            Some("garbage"),
            Some("eyJhbGciOiJub25lIn0.eyJzdWIiOiIwIn0."),
        ] {
            let r = app.get("/api/auth/me", token).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(json_of(r).await["error"]["code"], "unauthorized");
        }
        let r = app.get("/api/customers", None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
);

both_backends!(
    every_login_is_an_event_in_the_log,
    |app: support::TestApp| async move {
        let (_, _token) = app.as_role(Role::Agent).await;
        let log = &app.running.state.log;
        let all = log.read_all(0, 1000).await.unwrap();
        assert!(all.iter().any(|e| e.event_type == "LoginSucceeded"));
        // The login's IP address is personal data: it is stored encrypted, never in clear.
        let login = all
            .iter()
            .find(|e| e.event_type == "LoginSucceeded")
            .unwrap();
        assert!(!login.metadata.to_string().contains("127.0.0.1"));
    }
);
