//! The rate-limit middleware of `/api/*`: charges anonymous calls and logins before the
//! handler, lets the `Actor` extractor charge authenticated calls, and writes the headers.
//!
//! Header syntax follows draft-ietf-httpapi-ratelimit-headers-10 (the current draft,
//! structured fields with named policies):
//! `RateLimit-Policy: "api";q=300;w=60` (quota `q` per window `w` seconds) and
//! `RateLimit: "api";r=299;t=12` (remaining `r`, seconds `t` until the quota is whole again).
//! A refused request also gets `Retry-After` (seconds) and 429 `rate_limited`.

use super::{Decision, Outcome, Policy, Slot, ceil_secs};
use crate::app::JSON_BODY_LIMIT;
use crate::error::ApiError;
use crate::net::client_ip::ClientContext;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

fn policy_item(p: &Policy) -> String {
    format!("\"{}\";q={};w={}", p.name, p.limit, p.window.as_secs())
}

/// Writes `RateLimit-Policy` (every policy that applied) and `RateLimit` (the tightest one).
fn write_headers(headers: &mut HeaderMap, outcomes: &[Outcome]) {
    let Some(tightest) = outcomes.iter().min_by_key(|o| match o.decision {
        Decision::Allowed { remaining, .. } => i64::from(remaining),
        Decision::Limited { .. } => -1,
    }) else {
        return;
    };
    let policies: Vec<String> = outcomes.iter().map(|o| policy_item(&o.policy)).collect();
    let (remaining, reset) = match tightest.decision {
        Decision::Allowed { remaining, reset } => (remaining, ceil_secs(reset)),
        Decision::Limited { retry_after } => (0, ceil_secs(retry_after)),
    };
    let current = format!("\"{}\";r={};t={}", tightest.policy.name, remaining, reset);
    if let Ok(v) = HeaderValue::from_str(&policies.join(", ")) {
        headers.insert("ratelimit-policy", v);
    }
    if let Ok(v) = HeaderValue::from_str(&current) {
        headers.insert("ratelimit", v);
    }
}

fn refused(outcomes: &[Outcome]) -> Option<Response> {
    let retry_after = outcomes.iter().find_map(|o| match o.decision {
        Decision::Limited { retry_after } => Some(retry_after),
        Decision::Allowed { .. } => None,
    })?;
    let mut resp = ApiError::RateLimited {
        retry_after_seconds: ceil_secs(retry_after),
    }
    .into_response();
    write_headers(resp.headers_mut(), outcomes);
    Some(resp)
}

/// The account key of a login: the email as the login compares it, hashed so the limiter
/// does not hold addresses in clear.
fn account_key(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let email = v.get("email")?.as_str()?.trim().to_lowercase();
    Some(format!(
        "account:{}",
        hex::encode(&Sha256::digest(email.as_bytes())[..16])
    ))
}

/// The limiter key of an address. An IPv6 client usually holds a whole /64 and can change
/// address within it at will, so IPv6 addresses are limited per /64.
fn ip_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("ip:{v4}"),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("ip6:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

fn has_bearer(req: &Request) -> bool {
    req.headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
}

pub async fn enforce(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limits = state.rate_limits.clone();
    if !limits.enabled() {
        return next.run(req).await;
    }
    let ip_key = match req.extensions().get::<ClientContext>() {
        Some(c) => ip_key(c.ip),
        None => "ip:unknown".to_owned(),
    };
    let s = limits.settings;
    if req.method() == Method::POST && req.uri().path() == "/api/auth/login" {
        // The account is in the body: read it (bounded, as the handler would), then hand
        // the same bytes on.
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, JSON_BODY_LIMIT).await else {
            return ApiError::PayloadTooLarge.into_response();
        };
        let mut outcomes = vec![Outcome {
            policy: s.login_ip(),
            decision: limits.check(&s.login_ip(), &ip_key).await,
        }];
        if let Some(account) = account_key(&bytes) {
            outcomes.push(Outcome {
                policy: s.login_account(),
                decision: limits.check(&s.login_account(), &account).await,
            });
        }
        if let Some(resp) = refused(&outcomes) {
            return resp;
        }
        let mut resp = next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
        write_headers(resp.headers_mut(), &outcomes);
        return resp;
    }
    if !has_bearer(&req) {
        let outcome = Outcome {
            policy: s.api(),
            decision: limits.check(&s.api(), &ip_key).await,
        };
        if let Some(resp) = refused(&[outcome]) {
            return resp;
        }
        let mut resp = next.run(req).await;
        write_headers(resp.headers_mut(), &[outcome]);
        return resp;
    }
    // Authenticated: the Actor extractor charges the user once it knows the role.
    let slot = Slot::default();
    let mut req = req;
    req.extensions_mut().insert(slot.clone());
    let mut resp = next.run(req).await;
    let outcome = match slot.get() {
        Some(o) => o,
        // The token did not get the caller in (invalid, expired, ended) or the handler did
        // not ask who the caller is: charged to the address, after the fact.
        None => Outcome {
            policy: s.api(),
            decision: limits.check(&s.api(), &ip_key).await,
        },
    };
    write_headers(resp.headers_mut(), &[outcome]);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_of_one_64_share_a_key_and_ipv4_addresses_do_not() {
        let a = ip_key("2001:db8:1:2::1".parse().unwrap());
        let b = ip_key("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = ip_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(
            ip_key("198.51.100.1".parse().unwrap()),
            ip_key("198.51.100.2".parse().unwrap())
        );
    }

    #[test]
    fn the_account_key_is_the_hashed_normalised_email() {
        let a = account_key(br#"{"email": " Ada@Egec.example ", "password": "x"}"#).unwrap();
        let b = account_key(br#"{"email": "ada@egec.example"}"#).unwrap();
        assert_eq!(a, b);
        assert!(!a.contains("ada"));
        assert_eq!(account_key(b"not json"), None);
    }
}
