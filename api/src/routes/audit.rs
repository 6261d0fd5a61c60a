//! The audit log: `GET /api/audit`, its CSV export, and hash-chain verification.

use crate::audit::{CSV_HEADER, entries, export_page, item_json};
use crate::auth::actor::Actor;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use egec_domain::audit::is_upper_snake;
use egec_domain::permission::Action;
use egec_projections::AuditQuery;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Query parameters, as strings: each is checked here so that a bad value is a 422 naming
/// the field rather than a generic 400.
#[derive(Deserialize, Default, utoipa::IntoParams)]
pub struct AuditParams {
    /// RFC 3339; events at or after.
    pub from: Option<String>,
    /// RFC 3339; events before.
    pub to: Option<String>,
    /// UPPER_SNAKE action, e.g. `LOGIN_FAILED`.
    pub action: Option<String>,
    /// `customer`, `user`, `api_key`.
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub actor_id: Option<String>,
    pub page: Option<String>,
    pub per_page: Option<String>,
}

fn parse_time(
    v: &Option<String>,
    name: &str,
    problems: &mut BTreeMap<String, String>,
) -> Option<DateTime<Utc>> {
    let s = v.as_deref()?;
    match DateTime::parse_from_rfc3339(s) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => {
            problems.insert(name.to_owned(), "not an RFC 3339 time".to_owned());
            None
        }
    }
}

fn parse_uuid(
    v: &Option<String>,
    name: &str,
    problems: &mut BTreeMap<String, String>,
) -> Option<Uuid> {
    let s = v.as_deref()?;
    match Uuid::parse_str(s) {
        Ok(id) => Some(id),
        Err(_) => {
            problems.insert(name.to_owned(), "not a UUID".to_owned());
            None
        }
    }
}

fn parse_count(
    v: &Option<String>,
    name: &str,
    default: u32,
    problems: &mut BTreeMap<String, String>,
) -> u32 {
    match v.as_deref().map(str::parse::<u32>) {
        None => default,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => {
            problems.insert(name.to_owned(), "must be a whole number ≥ 1".to_owned());
            default
        }
    }
}

/// The filters, or 422 `validation_failed` naming every bad parameter.
pub fn parse_query(p: &AuditParams) -> Result<(AuditQuery, u32, u32), ApiError> {
    let mut problems = BTreeMap::new();
    let from = parse_time(&p.from, "from", &mut problems);
    let to = parse_time(&p.to, "to", &mut problems);
    let entity_id = parse_uuid(&p.entity_id, "entity_id", &mut problems);
    let actor_id = parse_uuid(&p.actor_id, "actor_id", &mut problems);
    let page = parse_count(&p.page, "page", 1, &mut problems);
    let per_page = parse_count(&p.per_page, "per_page", 50, &mut problems);
    if let Some(a) = &p.action
        && !is_upper_snake(a)
    {
        problems.insert(
            "action".to_owned(),
            "must be an UPPER_SNAKE action name".into(),
        );
    }
    if let Some(t) = &p.entity_type
        && (t.is_empty() || t.len() > 32 || !t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    {
        problems.insert("entity_type".to_owned(), "not an entity type".into());
    }
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    Ok((
        AuditQuery {
            from,
            to,
            action: p.action.clone(),
            entity_type: p.entity_type.clone(),
            entity_id,
            actor_id,
        },
        page,
        per_page,
    ))
}

#[utoipa::path(get, path = "/api/audit", params(AuditParams),
    responses((status = 200), (status = 403), (status = 422)), tag = "audit")]
/// Every event as an audit entry read from the log, newest first (by log position), filtered
/// and paginated (the `audit` projection only finds the positions).
pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    Query(params): Query<AuditParams>,
) -> Result<Json<Value>, ApiError> {
    actor.require(Action::AuditView)?;
    let (query, page, per_page) = parse_query(&params)?;
    let (rows, total) = state
        .read()
        .list_audit(&query, page, per_page)
        .await
        .map_err(ApiError::internal)?;
    let entries = entries(state.log.as_ref(), state.bus.codec(), &rows)
        .await
        .map_err(ApiError::Internal)?;
    let items: Vec<Value> = entries.iter().map(item_json).collect();
    Ok(Json(json!({
        "items": items,
        "total": total,
        "page": page,
        "per_page": per_page.min(egec_projections::MAX_PER_PAGE),
    })))
}

#[utoipa::path(get, path = "/api/audit/export.csv", params(AuditParams),
    responses((status = 200, content_type = "text/csv"), (status = 403), (status = 422)), tag = "audit")]
/// The filtered audit log as CSV, oldest first, streamed page by page in constant memory
/// (`page` and `per_page` are ignored).
pub async fn export_csv(
    State(state): State<AppState>,
    actor: Actor,
    Query(params): Query<AuditParams>,
) -> Result<Response, ApiError> {
    actor.require(Action::AuditExport)?;
    let (query, _, _) = parse_query(&params)?;
    let header_line = {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(CSV_HEADER).map_err(ApiError::internal)?;
        w.into_inner()
            .map_err(|e| ApiError::internal(anyhow::anyhow!("csv: {e}")))?
    };
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(header_line) });
    let rest = futures::stream::unfold(Some(0i64), move |after| {
        let state = state.clone();
        let query = query.clone();
        async move {
            let after = after?;
            match export_page(
                state.read(),
                state.log.as_ref(),
                state.bus.codec(),
                &query,
                after,
            )
            .await
            {
                Ok(Some((chunk, last))) => Some((Ok(chunk), Some(last))),
                Ok(None) => None,
                Err(e) => {
                    // The status line is gone already: cut the body short so the client
                    // sees an incomplete transfer rather than a complete-looking file.
                    tracing::error!(error = format!("{e:#}"), "audit export failed");
                    Some((Err(std::io::Error::other("audit export failed")), None))
                }
            }
        }
    });
    use futures::StreamExt;
    let body = Body::from_stream(first.chain(rest));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"audit.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/audit/verify",
    responses((status = 200), (status = 403)), tag = "audit")]
/// Checks the hash chain of the whole log: `{ok, events_checked, first_bad_position?}`.
pub async fn verify(State(state): State<AppState>, actor: Actor) -> Result<Json<Value>, ApiError> {
    actor.require(Action::AuditView)?;
    let report = egec_replay::verify(state.log.as_ref())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({
        "ok": report.ok,
        "events_checked": report.events_checked,
        "first_bad_position": report.first_bad_position,
    })))
}
