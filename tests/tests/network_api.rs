//! Network trust (client IP from trusted proxies only, admin IP allowlist, production
//! transport rules) and the security headers of every response.

mod support;

use egec_domain::Personal;
use egec_domain::Role;
use egec_domain::event::{DomainEvent, Envelope};
use egec_domain::user::LoginEvent;
use reqwest::StatusCode;
use serde_json::json;
use support::{TestApp, json_of};

/// The ACCESS_DENIED events of the log, decoded (metadata decrypted).
async fn denials(app: &TestApp) -> Vec<Envelope> {
    let s = &app.running.state;
    let mut out = Vec::new();
    for rec in s.log.read_all(0, 10_000).await.unwrap() {
        if rec.event_type == "LoginAccessDenied" {
            out.push(s.bus.codec().decode(&rec).await.unwrap());
        }
    }
    out
}

fn ip_of(e: &Envelope) -> Option<String> {
    match &e.metadata.ip {
        Some(Personal::Known(ip)) => Some(ip.clone()),
        _ => None,
    }
}

async fn me_from(app: &TestApp, token: &str, xff: Option<&str>) -> reqwest::Response {
    let mut r = app
        .client
        .get(format!("{}/api/auth/me", app.base))
        .bearer_auth(token);
    if let Some(x) = xff {
        r = r.header("x-forwarded-for", x);
    }
    r.send().await.unwrap()
}

both_backends!(
    a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored_and_the_denial_is_recorded,
    env = [("EGEC_ADMIN_IP_ALLOWLIST", "10.0.0.0/8")],
    |app: TestApp| async move {
        let (admin_id, admin) = app.as_role(Role::Admin).await;
        // The peer (127.0.0.1) is not a trusted proxy: its X-Forwarded-For claiming an
        // allowed address is not believed.
        let r = me_from(&app, &admin, Some("10.1.2.3")).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(json_of(r).await["error"]["code"], "forbidden");
        let found = denials(&app).await;
        assert_eq!(found.len(), 1);
        let e = &found[0];
        assert!(e.stream_id.starts_with("security-"), "{}", e.stream_id);
        assert_eq!(e.event.action(), "ACCESS_DENIED");
        assert_eq!(ip_of(e).as_deref(), Some("127.0.0.1"), "the peer's address");
        match &e.event {
            DomainEvent::Login(LoginEvent::AccessDenied { user_id, path, .. }) => {
                assert_eq!(user_id.as_uuid(), admin_id);
                assert_eq!(path, "/api/auth/me");
            }
            other => panic!("{other:?}"),
        }
        // Roles outside the allowlist rule are not held to it.
        let (_, agent) = app.as_role(Role::Agent).await;
        assert_eq!(app.me_status(&agent).await, StatusCode::OK);
    }
);

both_backends!(
    forwarded_for_from_a_trusted_proxy_is_honoured_right_most_untrusted_first,
    env = [
        ("EGEC_ADMIN_IP_ALLOWLIST", "10.0.0.0/8"),
        ("EGEC_TRUSTED_PROXIES", "127.0.0.1/32")
    ],
    |app: TestApp| async move {
        let (_, admin) = app.as_role(Role::Superadmin).await;
        assert_eq!(
            me_from(&app, &admin, Some("10.1.2.3")).await.status(),
            StatusCode::OK
        );
        // Without the header the proxy itself (127.0.0.1) is the client: outside the list.
        assert_eq!(
            me_from(&app, &admin, None).await.status(),
            StatusCode::FORBIDDEN
        );
        // The client wrote 10.9.9.9 itself; the proxy appended the address it saw.
        let r = me_from(&app, &admin, Some("10.9.9.9, 198.51.100.7")).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let ips: Vec<_> = denials(&app).await.iter().filter_map(ip_of).collect();
        assert_eq!(ips, ["127.0.0.1", "198.51.100.7"]);
    }
);

both_backends!(
    production_requires_https_refuses_navigation_and_sends_hsts,
    // Fit for production (random-looking secrets), behind a proxy on 127.0.0.1.
    env = [
        ("EGEC_ENV", "production"),
        ("EGEC_TRUSTED_PROXIES", "127.0.0.1/32"),
        (
            "EGEC_JWT_SECRET",
            "9f8e7d6c5b4a39281706f5e4d3c2b1a0ffeeddccbbaa99887766554433221100"
        ),
        (
            "EGEC_MASTER_KEY",
            "00112233445566778899aabbccddeeff0f1e2d3c4b5a69788796a5b4c3d2e1f0"
        ),
    ],
    |app: TestApp| async move {
        let get = |path: &str| app.client.get(format!("{}{}", app.base, path));
        // Plain HTTP (no X-Forwarded-Proto from the proxy): refused, with a clear code.
        let r = get("/api/auth/me").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            r.headers()["strict-transport-security"],
            "max-age=31536000; includeSubDomains"
        );
        assert_eq!(json_of(r).await["error"]["code"], "https_required");
        // Load balancers probe over plain HTTP.
        assert_eq!(
            get("/healthz").send().await.unwrap().status(),
            StatusCode::OK
        );
        // Over HTTPS at the proxy: served, with HSTS.
        let r = get("/api/auth/me")
            .header("x-forwarded-proto", "https")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()["strict-transport-security"],
            "max-age=31536000; includeSubDomains"
        );
        // A browser navigating to the API directly: refused.
        let r = get("/api/auth/me")
            .header("x-forwarded-proto", "https")
            .header("sec-fetch-mode", "navigate")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(json_of(r).await["error"]["code"], "navigation_refused");
        // A fetch from a page is not a navigation.
        let r = get("/api/auth/me")
            .header("x-forwarded-proto", "https")
            .header("sec-fetch-mode", "cors")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
);

both_backends!(
    development_sends_no_hsts_and_serves_plain_http,
    |app: TestApp| async move {
        let r = app.get("/api/auth/me", None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().get("strict-transport-security").is_none());
    }
);

fn assert_security_headers(r: &reqwest::Response, what: &str) {
    let h = r.headers();
    let expect = [
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ];
    for (name, value) in expect {
        assert_eq!(
            h.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{name} on {what}"
        );
    }
}

both_backends!(
    every_api_response_carries_the_security_headers_normal_error_and_too_large,
    |app: TestApp| async move {
        let (_, token) = app.as_role(Role::Agent).await;
        let ok = app.get("/api/auth/me", Some(&token)).await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_security_headers(&ok, "200");
        let unauthorized = app.get("/api/auth/me", None).await;
        assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
        assert_security_headers(&unauthorized, "401");
        let missing = app.get("/api/no-such-thing", Some(&token)).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_security_headers(&missing, "404");
        let big = json!({ "name": "x".repeat(200 * 1024) });
        let too_large = app.post("/api/customers", Some(&token), big.clone()).await;
        assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_security_headers(&too_large, "413");
        let too_large_login = app.post("/api/auth/login", None, big).await;
        assert_eq!(too_large_login.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_security_headers(&too_large_login, "413 on login");
    }
);

/// The IP recorded in the metadata of the login events, in log order.
async fn login_ips(app: &TestApp) -> Vec<Option<String>> {
    let s = &app.running.state;
    let mut out = Vec::new();
    for rec in s.log.read_all(0, 10_000).await.unwrap() {
        if rec.event_type == "LoginSucceeded" {
            out.push(ip_of(&s.bus.codec().decode(&rec).await.unwrap()));
        }
    }
    out
}

async fn login_via(app: &TestApp, email: &str, xff: &str) {
    let r = app
        .client
        .post(format!("{}/api/auth/login", app.base))
        .header("x-forwarded-for", xff)
        .json(&json!({ "email": email, "password": support::PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

both_backends!(
    event_metadata_records_the_forwarded_address_only_from_a_trusted_proxy,
    env = [("EGEC_TRUSTED_PROXIES", "127.0.0.1/32")],
    |app: TestApp| async move {
        app.user("ip@egec.example", Role::Agent).await;
        login_via(&app, "ip@egec.example", "198.51.100.7").await;
        assert_eq!(login_ips(&app).await, [Some("198.51.100.7".to_owned())]);
    }
);

both_backends!(
    event_metadata_records_the_peer_address_when_the_peer_is_not_trusted,
    |app: TestApp| async move {
        app.user("ip@egec.example", Role::Agent).await;
        login_via(&app, "ip@egec.example", "198.51.100.7").await;
        assert_eq!(login_ips(&app).await, [Some("127.0.0.1".to_owned())]);
    }
);
