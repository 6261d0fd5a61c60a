//! Health, readiness, metrics and the OpenAPI document.

use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Ready when storage answers and every projection has caught up with the log head.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let head = match state.log.head().await {
        Ok(h) => h.position,
        Err(e) => {
            tracing::warn!(error = %e, "readiness: storage unreachable");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "storage": "unreachable" })),
            );
        }
    };
    let projections = state.runner.status();
    let behind: Vec<_> = projections.iter().filter(|p| p.position < head).collect();
    let body = json!({
        "status": if behind.is_empty() { "ready" } else { "catching_up" },
        "storage": state.log.backend().as_str(),
        // `nats`, `polling (NATS unavailable)` or `polling` (no NATS_URL): how this node
        // hears of other nodes' appends, erasures and user changes.
        "signals": state.signals.status(),
        "head": head,
        "projections": projections.iter().map(|p| json!({ "name": p.name, "position": p.position, "lag": head - p.position })).collect::<Vec<_>>(),
    });
    let code = if behind.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Pool gauges are read at scrape time: exact, and free between scrapes.
    if let Some(pg) = &state.postgres {
        for (class, pool) in [
            ("interactive", pg.pool()),
            ("append", pg.append_pool()),
            ("maintenance", pg.maintenance_pool()),
        ] {
            let status = pool.status();
            metrics::gauge!("egec_db_pool_max_connections", "class" => class)
                .set(status.max_size as f64);
            metrics::gauge!("egec_db_pool_connections", "class" => class).set(status.size as f64);
            metrics::gauge!("egec_db_pool_idle_connections", "class" => class)
                .set(status.available as f64);
            metrics::gauge!("egec_db_pool_waiting_requests", "class" => class)
                .set(status.waiting as f64);
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}

pub async fn openapi() -> impl IntoResponse {
    use utoipa::OpenApi;
    Json(crate::openapi::ApiDoc::openapi())
}
