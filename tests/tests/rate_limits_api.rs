//! Rate limits over HTTP: 429 with its headers, login per address and per account, a budget
//! per user with role multipliers, and the superadmin's statistics.

mod support;

use egec_domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestApp, json_of};

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn login_from(app: &TestApp, ip: &str, email: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/api/auth/login", app.base))
        .header("x-forwarded-for", ip)
        .json(&json!({ "email": email, "password": "not the password at all" }))
        .send()
        .await
        .unwrap()
}

both_backends!(
    over_the_limit_a_caller_gets_429_with_retry_after_and_ratelimit_headers,
    env = [("EGEC_RATE_LIMIT_API_PER_MINUTE", "3")],
    |app: TestApp| async move {
        for remaining in [2, 1, 0] {
            let r = app.get("/api/auth/me", None).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(header(&r, "ratelimit-policy"), "\"api\";q=3;w=60");
            let current = header(&r, "ratelimit");
            assert!(
                current.starts_with(&format!("\"api\";r={remaining};t=")),
                "{current}"
            );
        }
        let r = app.get("/api/auth/me", None).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = header(&r, "retry-after").parse().unwrap();
        assert!(
            (1..=20).contains(&retry),
            "one request back every 20 s: {retry}"
        );
        assert_eq!(header(&r, "ratelimit-policy"), "\"api\";q=3;w=60");
        assert_eq!(header(&r, "ratelimit"), format!("\"api\";r=0;t={retry}"));
        assert_eq!(header(&r, "cache-control"), "no-store");
        let body = json_of(r).await;
        assert_eq!(body["error"]["code"], "rate_limited");
        // Endpoints outside /api are not limited.
        assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    }
);

both_backends!(
    login_is_limited_per_account_across_addresses_and_per_address_across_accounts,
    env = [
        ("EGEC_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("EGEC_RATE_LIMIT_LOGIN_ACCOUNT_PER_MINUTE", "2"),
        ("EGEC_RATE_LIMIT_LOGIN_IP_PER_MINUTE", "4")
    ],
    |app: TestApp| async move {
        app.user("victim@egec.example", Role::Agent).await;
        // Two tries at one account from two addresses, then a third address is refused.
        for ip in ["198.51.100.1", "198.51.100.2"] {
            let r = login_from(&app, ip, "victim@egec.example").await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        let r = login_from(&app, "198.51.100.3", "VICTIM@egec.example").await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(header(&r, "ratelimit-policy").contains("\"login-account\";q=2;w=60"));
        assert!(header(&r, "ratelimit").starts_with("\"login-account\";r=0;"));
        assert!(!header(&r, "retry-after").is_empty());
        // Another account from that address still gets an answer.
        let r = login_from(&app, "198.51.100.3", "someone@egec.example").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // One address spraying accounts: four tries, the fifth refused.
        for i in 0..4 {
            let r = login_from(&app, "203.0.113.5", &format!("spray{i}@egec.example")).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "try {i}");
        }
        let r = login_from(&app, "203.0.113.5", "spray9@egec.example").await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(header(&r, "ratelimit").starts_with("\"login-ip\";r=0;"));
    }
);

both_backends!(
    each_user_has_their_own_budget_admins_a_multiple_and_the_superadmin_sees_the_counts,
    env = [("EGEC_RATE_LIMIT_API_PER_MINUTE", "3")],
    |app: TestApp| async move {
        let (_, first) = app.as_role(Role::Agent).await;
        let (_, second) = app.as_role(Role::Agent).await;
        let (_, admin) = app.as_role(Role::Admin).await;
        let (_, superadmin) = app.as_role(Role::Superadmin).await;
        for _ in 0..3 {
            assert_eq!(app.me_status(&first).await, StatusCode::OK);
        }
        let r = app.get("/api/auth/me", Some(&first)).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&r, "ratelimit-policy"), "\"api\";q=3;w=60");
        // Same address, another user: their own budget.
        assert_eq!(app.me_status(&second).await, StatusCode::OK);
        // An admin gets four times the quota.
        for _ in 0..5 {
            assert_eq!(app.me_status(&admin).await, StatusCode::OK);
        }
        let r = app.get("/api/auth/me", Some(&admin)).await;
        assert_eq!(
            header(&r, "ratelimit-policy"),
            "\"api-privileged\";q=12;w=60"
        );
        // Statistics: superadmin only.
        let r = app.get("/api/admin/rate-limits", Some(&admin)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = app.get("/api/admin/rate-limits", Some(&superadmin)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = json_of(r).await;
        let policy = |name: &str| -> Value {
            body["policies"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["policy"] == name)
                .cloned()
                .unwrap()
        };
        let api = policy("api");
        assert_eq!(api["allowed"], 4, "{body}");
        assert_eq!(api["limited"], 1);
        assert_eq!(api["keys_tracked"], 2);
        assert_eq!(api["limit"], 3);
        let privileged = policy("api-privileged");
        assert_eq!(privileged["allowed"], 8, "admin 6 + superadmin 2: {body}");
        assert_eq!(privileged["keys_tracked"], 2);
        assert_eq!(policy("login-ip")["allowed"], 4);
    }
);

both_backends!(
    rate_limits_can_be_turned_off,
    env = [
        ("EGEC_RATE_LIMIT_API_PER_MINUTE", "1"),
        ("EGEC_RATE_LIMIT_ENABLED", "false")
    ],
    |app: TestApp| async move {
        for _ in 0..3 {
            let r = app.get("/api/auth/me", None).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert!(r.headers().get("ratelimit").is_none());
        }
    }
);

both_backends!(
    the_openapi_document_lists_the_rate_limit_statistics,
    |app: TestApp| async move {
        let doc = json_of(app.get("/api/openapi.json", None).await).await;
        assert!(doc["paths"]["/api/admin/rate-limits"]["get"].is_object());
        assert!(doc["components"]["schemas"]["PolicyStats"].is_object());
    }
);
