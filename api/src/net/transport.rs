//! Production transport rules: HTTPS required, HSTS on every response, and no direct browser
//! navigation to the API.
//!
//! Behind a TLS-terminating proxy the scheme comes from the trusted proxy's
//! `X-Forwarded-Proto` (see [`super::client_ip`]); a direct connection is plain HTTP here.
//! `/healthz` and `/readyz` stay reachable over plain HTTP so load balancers can probe the
//! node directly. In development none of this applies.

use super::client_ip::ClientContext;
use crate::config::Environment;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub const HSTS: &str = "max-age=31536000; includeSubDomains";

/// Paths a load balancer probes over plain HTTP.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// What the production rules say about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    HttpsRequired,
    NavigationRefused,
}

/// The production rules as a pure function of path, scheme and `Sec-Fetch-Mode`.
pub fn judge(path: &str, https: bool, sec_fetch_mode: Option<&str>) -> Verdict {
    if is_probe(path) {
        return Verdict::Allow;
    }
    if !https {
        return Verdict::HttpsRequired;
    }
    if (path == "/api" || path.starts_with("/api/"))
        && sec_fetch_mode.is_some_and(|m| m.eq_ignore_ascii_case("navigate"))
    {
        return Verdict::NavigationRefused;
    }
    Verdict::Allow
}

/// Middleware: applies [`judge`] and adds HSTS, in production only.
pub async fn enforce(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.config.env != Environment::Production {
        return next.run(req).await;
    }
    let https = req
        .extensions()
        .get::<ClientContext>()
        .is_some_and(|c| c.https);
    let mode = req
        .headers()
        .get("sec-fetch-mode")
        .and_then(|v| v.to_str().ok());
    let mut resp = match judge(req.uri().path(), https, mode) {
        Verdict::Allow => next.run(req).await,
        Verdict::HttpsRequired => ApiError::HttpsRequired.into_response(),
        Verdict::NavigationRefused => ApiError::NavigationRefused.into_response(),
    };
    resp.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(HSTS),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_except_for_load_balancer_probes() {
        assert_eq!(judge("/api/customers", false, None), Verdict::HttpsRequired);
        assert_eq!(judge("/metrics", false, None), Verdict::HttpsRequired);
        assert_eq!(judge("/healthz", false, None), Verdict::Allow);
        assert_eq!(judge("/readyz", false, None), Verdict::Allow);
        assert_eq!(judge("/api/customers", true, None), Verdict::Allow);
    }

    #[test]
    fn browser_navigation_to_the_api_is_refused_but_fetches_are_not() {
        assert_eq!(
            judge("/api/customers", true, Some("navigate")),
            Verdict::NavigationRefused
        );
        assert_eq!(judge("/api/customers", true, Some("cors")), Verdict::Allow);
        assert_eq!(judge("/apiary", true, Some("navigate")), Verdict::Allow);
    }
}
