//! Compliance replay over HTTP: any stream's events as they were recorded, up to any time, the
//! API twin of `egec replay history STREAM [--as-of TIME]`.
//!
//! Who may read it, and whether personal fields come back in clear or masked, is the
//! permission module's answer (`audit:view`; `personal_data_in_clear`); credentials are never
//! shown. A customer's passport number shown in clear is recorded as a reveal, as on every
//! other read.

use crate::auth::actor::Actor;
use crate::error::ApiError;
use crate::reveals;
use crate::routes::meta::RequestMeta;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use egec_commands::store::ReadBound;
use egec_domain::CustomerId;
use egec_domain::gdpr::RevealVia;
use egec_domain::permission::{Action, personal_data_in_clear};
use egec_domain::personal::{ERASED, EXPIRED};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReplayParams {
    /// Only events that occurred at or before this time (RFC 3339).
    pub as_of: Option<String>,
}

/// Stream ids are ours (`customer-<uuid>`, `login-202611`, ...): lower-case ASCII letters,
/// digits and hyphens. Anything else cannot name a stream and is refused before any read.
fn valid_stream_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[utoipa::path(get, path = "/api/replay/streams/{stream_id}", params(("stream_id" = String, Path), ReplayParams),
    responses((status = 200), (status = 403), (status = 404), (status = 422)), tag = "audit")]
/// A stream's events (oldest first) as recorded, upcast to the current schema, with actors,
/// times, facts and personal fields (in clear for roles that may see personal data, masked
/// for the others; `[ERASED]` after an erasure). 404 when the stream holds no event at all.
pub async fn stream(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Path(stream_id): Path<String>,
    Query(params): Query<ReplayParams>,
) -> Result<Json<Value>, ApiError> {
    actor.require(Action::AuditView)?;
    if !valid_stream_id(&stream_id) {
        return Err(ApiError::field(
            "stream_id",
            "a stream id is lower-case letters, digits and hyphens",
        ));
    }
    let as_of = params
        .as_of
        .as_deref()
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::field("as_of", "must be an RFC 3339 time"))
        })
        .transpose()?;
    let clear = personal_data_in_clear(actor.principal());
    let items = egec_replay::history_values(&state.bus, &stream_id, as_of, clear)
        .await
        .map_err(ApiError::Internal)?;
    // Empty because the time is before the first event, or because there is no such stream:
    // only the second is a 404.
    if items.is_empty()
        && state
            .log
            .read_stream(&stream_id, 1, ReadBound::Version(1))
            .await
            .map_err(ApiError::internal)?
            .is_empty()
    {
        return Err(ApiError::NotFound);
    }
    if clear
        && let Some(customer) = CustomerId::from_stream_id(&stream_id)
        && items.iter().any(|e| {
            e["personal"]["passport_number"]
                .as_str()
                .is_some_and(|p| p != ERASED && p != EXPIRED)
        })
    {
        reveals::record(&state, &actor, &meta, [customer], RevealVia::History).await?;
    }
    Ok(Json(json!({ "stream_id": stream_id, "items": items })))
}
