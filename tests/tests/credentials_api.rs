//! Passwords over HTTP: the rehash of imported bcrypt hashes, password change, an
//! administrator's forced change, expiry, and failed logins for unknown emails.

mod support;

use chrono::{DateTime, Utc};
use egec_domain::aggregate::UserAggregate;
use egec_domain::event::{DomainEvent, Metadata};
use egec_domain::personal::Personal;
use egec_domain::user::{PasswordHash, UserEvent, UserState};
use egec_domain::values::{Email, PersonName};
use egec_domain::{Role, UserId};
use reqwest::StatusCode;
use serde_json::json;
use support::json_of;

const NEW_PASSWORD: &str = "granite kettle meadow 4410 lantern";

/// Writes a `UserCreated` as an import from the old system would: with the given hash and
/// creation time.
async fn import_user(
    app: &support::TestApp,
    email: &str,
    role: Role,
    hash: &str,
    at: DateTime<Utc>,
) -> UserId {
    let s = &app.running.state;
    let id = UserId::from_uuid(uuid::Uuid::now_v7());
    let event = DomainEvent::User(UserEvent::Created {
        user_id: id,
        email: Personal::Known(Email::parse(email).unwrap()),
        name: Personal::Known(PersonName::parse("Imported User").unwrap()),
        role,
        password_hash: Personal::Known(PasswordHash::parse(hash).unwrap()),
        at,
    });
    let meta = Metadata::system(uuid::Uuid::now_v7(), at);
    let position = s
        .bus
        .record(&id.stream_id(), &id.subject(), &meta, &[event])
        .await
        .unwrap();
    assert!(
        s.runner
            .wait_for(position, std::time::Duration::from_secs(10))
            .await
    );
    id
}

async fn stored_hash(app: &support::TestApp, id: UserId) -> String {
    match app
        .running
        .state
        .bus
        .load::<UserAggregate>(&id.stream_id())
        .await
        .unwrap()
        .0
    {
        UserState::Present(u) => u.password_hash.known().unwrap().as_str().to_owned(),
        UserState::Absent => panic!("no user"),
    }
}

async fn event_types(app: &support::TestApp) -> Vec<String> {
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

fn login_body(email: &str, password: &str) -> serde_json::Value {
    json!({ "email": email, "password": password })
}

both_backends!(
    an_imported_bcrypt_hash_becomes_argon2id_at_the_first_login_and_the_password_keeps_working,
    |app: support::TestApp| async move {
        let old = bcrypt::hash(support::PASSWORD, 4).unwrap();
        let id = import_user(&app, "legacy@egec.example", Role::Agent, &old, Utc::now()).await;
        assert!(stored_hash(&app, id).await.starts_with("$2"));
        let body = login_body("legacy@egec.example", support::PASSWORD);
        assert_eq!(
            app.post("/api/auth/login", None, body.clone())
                .await
                .status(),
            StatusCode::OK
        );
        let now = stored_hash(&app, id).await;
        assert!(now.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{now}");
        // The second login verifies against the argon2id hash and rehashes nothing more.
        assert_eq!(
            app.post("/api/auth/login", None, body).await.status(),
            StatusCode::OK
        );
        let types = event_types(&app).await;
        assert_eq!(
            types
                .iter()
                .filter(|t| *t == "UserPasswordRehashed")
                .count(),
            1
        );
        // The hash is personal: encrypted in the log, never in clear.
        let all = app.running.state.log.read_all(0, 10_000).await.unwrap();
        let rehashed = all
            .iter()
            .find(|e| e.event_type == "UserPasswordRehashed")
            .unwrap();
        assert!(!rehashed.payload.to_string().contains("argon2id"));
        assert_eq!(
            app.post(
                "/api/auth/login",
                None,
                login_body("legacy@egec.example", "not the password at all")
            )
            .await
            .status(),
            StatusCode::UNAUTHORIZED
        );
    }
);

both_backends!(
    changing_the_password_ends_every_session_and_only_the_new_password_logs_in,
    |app: support::TestApp| async move {
        app.user("changer@egec.example", Role::Agent).await;
        let token = app.login("changer@egec.example").await;
        let other = app.login("changer@egec.example").await;
        let r = app
            .post(
                "/api/auth/password",
                Some(&token),
                json!({ "current_password": "wrong wrong wrong wrong", "new_password": NEW_PASSWORD }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(json_of(r).await["error"]["code"], "invalid_credentials");
        let r = app
            .post(
                "/api/auth/password",
                Some(&token),
                json!({ "current_password": support::PASSWORD, "new_password": "password1234" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(json_of(r).await["error"]["code"], "weak_password");
        assert_eq!(
            app.me_status(&token).await,
            StatusCode::OK,
            "refusals end nothing"
        );
        let r = app
            .post(
                "/api/auth/password",
                Some(&token),
                json!({ "current_password": support::PASSWORD, "new_password": NEW_PASSWORD }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.me_status(&token).await, StatusCode::UNAUTHORIZED);
        assert_eq!(app.me_status(&other).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            app.post(
                "/api/auth/login",
                None,
                login_body("changer@egec.example", support::PASSWORD)
            )
            .await
            .status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.post(
                "/api/auth/login",
                None,
                login_body("changer@egec.example", NEW_PASSWORD)
            )
            .await
            .status(),
            StatusCode::OK
        );
        assert!(
            event_types(&app)
                .await
                .iter()
                .any(|t| t == "UserPasswordChanged")
        );
    }
);

both_backends!(
    wrong_current_passwords_count_towards_the_lockout,
    |app: support::TestApp| async move {
        app.user("guessed@egec.example", Role::Agent).await;
        let token = app.login("guessed@egec.example").await;
        for _ in 0..5 {
            let r = app
                .post(
                    "/api/auth/password",
                    Some(&token),
                    json!({ "current_password": "a guess a guess a guess", "new_password": NEW_PASSWORD }),
                )
                .await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        let r = app
            .post(
                "/api/auth/password",
                Some(&token),
                json!({ "current_password": support::PASSWORD, "new_password": NEW_PASSWORD }),
            )
            .await;
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "while locked even the right password is refused"
        );
        assert_eq!(
            app.post(
                "/api/auth/login",
                None,
                login_body("guessed@egec.example", support::PASSWORD)
            )
            .await
            .status(),
            StatusCode::LOCKED
        );
    }
);

both_backends!(
    a_forced_change_confines_the_user_to_password_logout_and_me_until_changed,
    |app: support::TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let (_, agent) = app.as_role(Role::Agent).await;
        let id = app.user("forced@egec.example", Role::Agent).await;
        let path = format!("/api/users/{id}/require-password-change");
        assert_eq!(
            app.post(&path, Some(&agent), json!({})).await.status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            app.post(&path, Some(&admin), json!({})).await.status(),
            StatusCode::NO_CONTENT
        );
        let r = app
            .post(
                "/api/auth/login",
                None,
                login_body("forced@egec.example", support::PASSWORD),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = json_of(r).await;
        assert_eq!(body["must_change_password"], true);
        let token = body["token"].as_str().unwrap().to_owned();
        let r = app.get("/api/customers", Some(&token)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            json_of(r).await["error"]["code"],
            "password_change_required"
        );
        let r = app
            .post("/api/auth/logout-all", Some(&token), json!({}))
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.me_status(&token).await, StatusCode::OK);
        assert_eq!(
            app.post(
                "/api/auth/password",
                Some(&token),
                json!({ "current_password": support::PASSWORD, "new_password": NEW_PASSWORD }),
            )
            .await
            .status(),
            StatusCode::NO_CONTENT
        );
        let r = app
            .post(
                "/api/auth/login",
                None,
                login_body("forced@egec.example", NEW_PASSWORD),
            )
            .await;
        let body = json_of(r).await;
        assert_eq!(body["must_change_password"], false);
        let token = body["token"].as_str().unwrap();
        assert_eq!(
            app.get("/api/customers", Some(token)).await.status(),
            StatusCode::OK
        );
    }
);

both_backends!(
    a_password_older_than_the_maximum_age_must_be_changed,
    env = [("EGEC_PASSWORD_MAX_AGE_DAYS", "90")],
    |app: support::TestApp| async move {
        let hash = app
            .running
            .state
            .passwords
            .hash(&secrecy::SecretString::from(support::PASSWORD.to_owned()))
            .await
            .unwrap();
        let long_ago = Utc::now() - chrono::Duration::days(91);
        import_user(&app, "old@egec.example", Role::Agent, &hash, long_ago).await;
        app.user("fresh@egec.example", Role::Agent).await;
        let r = app
            .post(
                "/api/auth/login",
                None,
                login_body("old@egec.example", support::PASSWORD),
            )
            .await;
        let body = json_of(r).await;
        assert_eq!(body["must_change_password"], true);
        let r = app
            .get("/api/customers", Some(body["token"].as_str().unwrap()))
            .await;
        assert_eq!(
            json_of(r).await["error"]["code"],
            "password_change_required"
        );
        let r = app
            .post(
                "/api/auth/login",
                None,
                login_body("fresh@egec.example", support::PASSWORD),
            )
            .await;
        assert_eq!(json_of(r).await["must_change_password"], false);
    }
);

both_backends!(
    a_failed_login_for_an_unknown_email_is_an_event_without_the_email_in_clear,
    |app: support::TestApp| async move {
        app.user("known@egec.example", Role::Agent).await;
        let wrong = app
            .post(
                "/api/auth/login",
                None,
                login_body("known@egec.example", "not the password at all"),
            )
            .await;
        let unknown = app
            .post(
                "/api/auth/login",
                None,
                login_body("Nobody@Egec.example", "not the password at all"),
            )
            .await;
        assert_eq!(wrong.status(), unknown.status());
        assert_eq!(json_of(wrong).await, json_of(unknown).await);
        let all = app.running.state.log.read_all(0, 10_000).await.unwrap();
        let failed: Vec<_> = all
            .iter()
            .filter(|e| e.event_type == "LoginFailedUnknownAccount")
            .collect();
        assert_eq!(failed.len(), 1);
        let e = failed[0];
        assert!(e.stream_id.starts_with("login-unknown-"), "{}", e.stream_id);
        for text in [
            e.stream_id.clone(),
            e.payload.to_string(),
            e.metadata.to_string(),
        ] {
            assert!(!text.to_lowercase().contains("nobody"), "{text}");
        }
        // Decrypted, it is a LOGIN_FAILED with the normalised email.
        let env = app.running.state.bus.codec().decode(e).await.unwrap();
        assert_eq!(env.event.action(), "LOGIN_FAILED");
        match env.event {
            DomainEvent::Login(egec_domain::user::LoginEvent::UnknownAccountFailed {
                email,
                ..
            }) => assert_eq!(email.known().unwrap(), "nobody@egec.example"),
            other => panic!("{other:?}"),
        }
    }
);
