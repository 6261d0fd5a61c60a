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

both_backends!(
    five_failures_lock_the_account_even_against_the_right_password_until_an_admin_unlocks,
    |app: support::TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let victim = app.user("victim@egec.example", Role::Agent).await;
        let wrong =
            json!({ "email": "victim@egec.example", "password": "definitely not it at all" });
        for _ in 0..4 {
            let r = app.post("/api/auth/login", None, wrong.clone()).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        let r = app.post("/api/auth/login", None, wrong.clone()).await;
        assert_eq!(r.status(), StatusCode::LOCKED);
        assert_eq!(r.headers()["retry-after"], "900");
        let body = json_of(r).await;
        assert_eq!(body["error"]["code"], "account_locked");
        assert_eq!(body["retry_after_seconds"], 900);
        let right = json!({ "email": "victim@egec.example", "password": support::PASSWORD });
        let r = app.post("/api/auth/login", None, right.clone()).await;
        assert_eq!(
            r.status(),
            StatusCode::LOCKED,
            "the right password is refused while locked"
        );
        let secs = json_of(r).await["retry_after_seconds"].as_i64().unwrap();
        assert!((1..=900).contains(&secs));
        // An agent may not unlock; an admin may.
        let (_, agent) = app.as_role(Role::Agent).await;
        let unlock = format!("/api/users/{victim}/unlock");
        assert_eq!(
            app.post(&unlock, Some(&agent), json!({})).await.status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            app.post(&unlock, Some(&admin), json!({})).await.status(),
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            app.post("/api/auth/login", None, right).await.status(),
            StatusCode::OK
        );
        // Every attempt is an event in the log.
        let types: Vec<String> = app
            .running
            .state
            .log
            .read_all(0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event_type)
            .collect();
        assert_eq!(types.iter().filter(|t| *t == "LoginFailed").count(), 6);
        assert_eq!(
            types.iter().filter(|t| *t == "LoginAccountLocked").count(),
            1
        );
        assert_eq!(
            types
                .iter()
                .filter(|t| *t == "LoginAccountUnlocked")
                .count(),
            1
        );
    }
);

both_backends!(
    a_successful_login_resets_the_failure_count,
    |app: support::TestApp| async move {
        app.user("reset@egec.example", Role::Agent).await;
        let wrong =
            json!({ "email": "reset@egec.example", "password": "definitely not it at all" });
        let right = json!({ "email": "reset@egec.example", "password": support::PASSWORD });
        for _ in 0..4 {
            app.post("/api/auth/login", None, wrong.clone()).await;
        }
        assert_eq!(
            app.post("/api/auth/login", None, right).await.status(),
            StatusCode::OK
        );
        for _ in 0..4 {
            assert_eq!(
                app.post("/api/auth/login", None, wrong.clone())
                    .await
                    .status(),
                StatusCode::UNAUTHORIZED
            );
        }
    }
);

// A token is only as good as its signature under the server's own secret and algorithm.
both_backends!(
    forged_tokens_are_refused_unsigned_resigned_edited_or_with_another_algorithm,
    |app: support::TestApp| async move {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        use serde_json::Value;

        app.user("forge@egec.example", Role::Agent).await;
        let token = app.login("forge@egec.example").await;
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        let kid = header["kid"].as_str().map(str::to_owned);

        // `alg: none` with no signature.
        let mut none_header = header.clone();
        none_header["alg"] = json!("none");
        let unsigned = format!("{}.{}.", b64(&none_header), parts[1]);
        // The same claims signed with another secret.
        let mut h = Header::new(Algorithm::HS256);
        h.kid = kid.clone();
        let resigned = jsonwebtoken::encode(
            &h,
            &claims,
            &EncodingKey::from_secret(b"another-secret-another-secret-1234"),
        )
        .unwrap();
        // The right secret but an algorithm outside the allowlist.
        let mut h = Header::new(Algorithm::HS512);
        h.kid = kid.clone();
        let other_alg = jsonwebtoken::encode(
            &h,
            &claims,
            &EncodingKey::from_secret(support::JWT_SECRET.as_bytes()),
        )
        .unwrap();
        // Claims edited (a later expiry) under the original signature.
        let mut later = claims.clone();
        later["exp"] = json!(claims["exp"].as_i64().unwrap() + 3600);
        let edited = format!("{}.{}.{}", parts[0], b64(&later), parts[2]);

        for (what, forged) in [
            ("alg none", unsigned),
            ("re-signed with another secret", resigned),
            ("HS512 with the right secret", other_alg),
            ("edited claims", edited),
        ] {
            let r = app.get("/api/auth/me", Some(&forged)).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        }
        // The genuine token still works: the refusals were about the forgeries.
        let r = app.get("/api/auth/me", Some(&token)).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
);
