//! TOTP two-factor authentication over HTTP: enrolment, login with a code or a backup code,
//! replayed codes, disabling, and the roles that must enrol first.

mod support;

use base64::Engine;
use chrono::Utc;
use egec_api::auth::totp::code_at;
use egec_domain::Role;
use egec_domain::user::credentials::TotpSecret;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::json_of;

fn login(email: &str) -> Value {
    json!({ "email": email, "password": support::PASSWORD })
}

fn code(secret: &TotpSecret, offset_secs: i64) -> String {
    code_at(secret, Utc::now() + chrono::Duration::seconds(offset_secs)).unwrap()
}

/// Enrols the user of `token`; answers the secret and the backup codes.
async fn enrol(app: &support::TestApp, token: &str) -> (TotpSecret, Vec<String>) {
    let r = app
        .post("/api/auth/totp/setup", Some(token), json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = json_of(r).await;
    let secret = TotpSecret::parse(body["secret"].as_str().unwrap()).unwrap();
    let r = app
        .post(
            "/api/auth/totp/enable",
            Some(token),
            json!({ "code": code(&secret, 0) }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let codes: Vec<String> = json_of(r).await["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (secret, codes)
}

async fn login_status(app: &support::TestApp, body: Value) -> (StatusCode, Value) {
    let r = app.post("/api/auth/login", None, body).await;
    let status = r.status();
    (status, json_of(r).await)
}

both_backends!(
    setup_gives_a_secret_url_and_qr_code_and_a_wrong_code_does_not_enable,
    |app: support::TestApp| async move {
        let (_, token) = app.as_role(Role::Agent).await;
        let r = app
            .post("/api/auth/totp/setup", Some(&token), json!({}))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = json_of(r).await;
        let secret = body["secret"].as_str().unwrap();
        let url = body["otpauth_url"].as_str().unwrap();
        assert!(
            url.starts_with("otpauth://totp/") && url.contains(secret),
            "{url}"
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(body["qr_png_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(&png[1..4], b"PNG");
        // The secret is personal: encrypted in the log.
        let log = app.running.state.log.read_all(0, 10_000).await.unwrap();
        let started = log
            .iter()
            .find(|e| e.event_type == "UserTotpSetupStarted")
            .unwrap();
        assert!(!started.payload.to_string().contains(secret));
        let r = app
            .post(
                "/api/auth/totp/enable",
                Some(&token),
                json!({ "code": "000000" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let me = json_of(app.get("/api/auth/me", Some(&token)).await).await;
        assert_eq!(me["mfa_enabled"], false);
    }
);

both_backends!(
    with_totp_a_login_needs_a_fresh_code_and_a_replayed_code_is_refused,
    |app: support::TestApp| async move {
        let (_, token) = app.as_role(Role::Agent).await;
        let email = json_of(app.get("/api/auth/me", Some(&token)).await).await["email"]
            .as_str()
            .unwrap()
            .to_owned();
        let (secret, codes) = enrol(&app, &token).await;
        assert_eq!(codes.len(), 10);
        let (status, body) = login_status(&app, login(&email)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "totp_required");
        // The code that enabled TOTP has been used.
        let mut with_code = login(&email);
        with_code["totp_code"] = json!(code(&secret, 0));
        let (status, body) = login_status(&app, with_code).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "totp_required");
        // The next step's code is within the allowed skew, once.
        let mut next = login(&email);
        next["totp_code"] = json!(code(&secret, 30));
        let (status, body) = login_status(&app, next.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["user"]["mfa_enabled"], true);
        let (status, body) = login_status(&app, next).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "replayed: {body}");
        assert_eq!(body["error"]["code"], "totp_required");
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
        assert_eq!(types.iter().filter(|t| *t == "UserTotpUsed").count(), 1);
    }
);

both_backends!(
    a_backup_code_works_once,
    |app: support::TestApp| async move {
        let (_, token) = app.as_role(Role::Agent).await;
        let email = json_of(app.get("/api/auth/me", Some(&token)).await).await["email"]
            .as_str()
            .unwrap()
            .to_owned();
        let (_, codes) = enrol(&app, &token).await;
        let mut with_backup = login(&email);
        with_backup["backup_code"] = json!(codes[2]);
        let (status, _) = login_status(&app, with_backup.clone()).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = login_status(&app, with_backup).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "totp_required");
        let mut other = login(&email);
        other["backup_code"] = json!(codes[3]);
        assert_eq!(login_status(&app, other).await.0, StatusCode::OK);
    }
);

both_backends!(
    wrong_codes_count_towards_the_lockout,
    |app: support::TestApp| async move {
        let (_, token) = app.as_role(Role::Agent).await;
        let email = json_of(app.get("/api/auth/me", Some(&token)).await).await["email"]
            .as_str()
            .unwrap()
            .to_owned();
        enrol(&app, &token).await;
        let mut wrong = login(&email);
        wrong["backup_code"] = json!("00000-00000-00000-00000");
        for _ in 0..4 {
            assert_eq!(
                login_status(&app, wrong.clone()).await.0,
                StatusCode::UNAUTHORIZED
            );
        }
        let (status, body) = login_status(&app, wrong).await;
        assert_eq!(status, StatusCode::LOCKED);
        assert_eq!(body["error"]["code"], "account_locked");
    }
);

both_backends!(
    disabling_needs_the_password_and_a_fresh_code,
    |app: support::TestApp| async move {
        let (_, token) = app.as_role(Role::Agent).await;
        let email = json_of(app.get("/api/auth/me", Some(&token)).await).await["email"]
            .as_str()
            .unwrap()
            .to_owned();
        let (secret, _) = enrol(&app, &token).await;
        let r = app
            .post(
                "/api/auth/totp/disable",
                Some(&token),
                json!({ "password": "not the password at all", "code": code(&secret, 30) }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(json_of(r).await["error"]["code"], "invalid_credentials");
        let r = app
            .post(
                "/api/auth/totp/disable",
                Some(&token),
                json!({ "password": support::PASSWORD, "code": code(&secret, 0) }),
            )
            .await;
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "the enabling code is used"
        );
        assert_eq!(json_of(r).await["error"]["code"], "totp_required");
        let r = app
            .post(
                "/api/auth/totp/disable",
                Some(&token),
                json!({ "password": support::PASSWORD, "code": code(&secret, 30) }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let (status, body) = login_status(&app, login(&email)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["user"]["mfa_enabled"], false);
    }
);

both_backends!(
    by_default_admins_must_enrol_before_anything_but_enrolment_logout_and_me,
    env = [("EGEC_MFA_REQUIRED_ROLES", support::UNSET)],
    |app: support::TestApp| async move {
        let (_, admin) = app.as_role(Role::Admin).await;
        let (_, agent) = app.as_role(Role::Agent).await;
        let r = app.get("/api/customers", Some(&admin)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(json_of(r).await["error"]["code"], "mfa_setup_required");
        let r = app.get("/api/users", Some(&admin)).await;
        assert_eq!(json_of(r).await["error"]["code"], "mfa_setup_required");
        let r = app
            .post(
                "/api/auth/password",
                Some(&admin),
                json!({ "current_password": support::PASSWORD, "new_password": "x" }),
            )
            .await;
        assert_eq!(json_of(r).await["error"]["code"], "mfa_setup_required");
        assert_eq!(app.me_status(&admin).await, StatusCode::OK);
        assert_eq!(
            app.get("/api/customers", Some(&agent)).await.status(),
            StatusCode::OK,
            "agents are not required to enrol"
        );
        enrol(&app, &admin).await;
        assert_eq!(
            app.get("/api/customers", Some(&admin)).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            app.post("/api/auth/logout", Some(&agent), json!({}))
                .await
                .status(),
            StatusCode::NO_CONTENT
        );
    }
);

/// The used time step is an event in the user's stream, so another node (with its own
/// cache of the user) refuses the code too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_code_used_on_one_node_is_refused_on_another() {
    let app = support::TestApp::spawn(support::Backend::Postgres).await;
    let (_, token) = app.as_role(Role::Agent).await;
    let email = json_of(app.get("/api/auth/me", Some(&token)).await).await["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let (secret, _) = enrol(&app, &token).await;
    let (node_b, _dir) = app.second_node().await;
    let mut body = login(&email);
    body["totp_code"] = json!(code(&secret, 30));
    // Node B reads the user before node A's login, so its cache holds the older state.
    let mut no_code = login(&email);
    no_code["totp_code"] = json!("");
    let r = app
        .client
        .post(format!("{}/api/auth/login", node_b.base))
        .json(&no_code)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(login_status(&app, body.clone()).await.0, StatusCode::OK);
    let r = app
        .client
        .post(format!("{}/api/auth/login", node_b.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(r).await["error"]["code"], "totp_required");
}
