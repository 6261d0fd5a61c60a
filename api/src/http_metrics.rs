//! Request count and latency per route template and status, for `/metrics`.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;

pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    // The route template (`/api/customers/{id}`), never the raw path: ids would explode the
    // label set and could identify people.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("egec_http_requests_total", &labels).increment(1);
    metrics::histogram!("egec_http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    resp
}
