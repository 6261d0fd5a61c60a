//! Administration endpoints: rate-limit statistics.

use crate::auth::actor::Actor;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use egec_domain::permission::Action;
use serde_json::{Value, json};

#[utoipa::path(get, path = "/api/admin/rate-limits",
    responses((status = 200, body = [crate::rate_limit::PolicyStats]), (status = 403)), tag = "admin")]
/// `GET /api/admin/rate-limits` (superadmin): per-preset limits, allowed and limited counts
/// since start, how many keys each preset tracks now (this process only), and where the
/// limiter state lives.
pub async fn rate_limits(
    State(state): State<AppState>,
    actor: Actor,
) -> Result<Json<Value>, ApiError> {
    actor.require(Action::RateLimitsView)?;
    Ok(Json(json!({
        "enabled": state.rate_limits.enabled(),
        // `memory`, `redis`, or `memory (Redis unavailable)` while this node falls back.
        "backend": state.rate_limits.backend(),
        "privileged_multiplier": state.rate_limits.settings.privileged_multiplier,
        "policies": state.rate_limits.stats(),
    })))
}
