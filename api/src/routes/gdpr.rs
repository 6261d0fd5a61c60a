//! GDPR: the export of everything held on one customer (art. 15/20) and provable erasure
//! (art. 17) by crypto-shredding.
//!
//! An export is recorded as `GdprExported` (no personal data: who, which customer, when) so
//! that "who took this customer's data" is answered by the log. An erasure appends
//! `CustomerErased`, destroys every version of the customer's key, waits until every read
//! model shows `[ERASED]`, and answers with a certificate built from the erasure event.

use crate::auth::actor::Actor;
use crate::error::{ApiError, from_handler};
use crate::json::ApiJson;
use crate::routes::attachments::AttachmentView;
use crate::routes::customers::domain_error;
use crate::routes::meta::RequestMeta;
use crate::state::AppState;
use crate::views::customer::{CustomerView, history_items};
use crate::views::followup::FollowupView;
use crate::views::gdpr::{
    CertificateActor, ChainHeadView, ErasureCertificate, followup_history_items, hex,
};
use axum::Json;
use axum::extract::{Path, State};
use chrono::Utc;
use egec_commands::erase::erase_customer;
use egec_commands::store::ReadBound;
use egec_domain::CustomerId;
use egec_domain::customer::CustomerEvent;
use egec_domain::event::{DomainEvent, Envelope};
use egec_domain::gdpr::{GdprEvent, gdpr_stream_id};
use egec_domain::ids::FollowupId;
use egec_domain::permission::{Action, Visibility};
use egec_projections::{FollowupQuery, MAX_PER_PAGE};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

/// The customer's read-model row, for callers allowed a GDPR action: superadmins and admins
/// see every customer, deleted ones included, so only a missing customer answers 404.
async fn customer_row(
    state: &AppState,
    id: CustomerId,
) -> Result<egec_projections::CustomerRow, ApiError> {
    state
        .read()
        .get_customer(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound)
}

/// Every follow-up of the customer in the read model, page by page.
async fn followups_of(
    state: &AppState,
    id: CustomerId,
) -> Result<Vec<egec_projections::FollowupRow>, ApiError> {
    let q = FollowupQuery {
        assigned_to: None,
        customer_id: Some(id.as_uuid()),
        status: None,
        due_before: None,
        now: Utc::now(),
        visibility: Visibility::All,
        include_deleted: true,
    };
    let mut rows = Vec::new();
    let mut page = 1;
    loop {
        let (batch, total) = state
            .read()
            .list_followups(&q, page, MAX_PER_PAGE)
            .await
            .map_err(ApiError::internal)?;
        let empty = batch.is_empty();
        rows.extend(batch);
        if empty || rows.len() as u64 >= total {
            return Ok(rows);
        }
        page += 1;
    }
}

#[utoipa::path(get, path = "/api/gdpr/customers/{id}/export", params(("id" = Uuid, Path)),
    responses((status = 200, description = "everything held on the customer"), (status = 403), (status = 404)),
    tag = "gdpr")]
pub async fn export(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    actor.require(Action::GdprExport)?;
    let id = CustomerId::from_uuid(id);
    let row = customer_row(&state, id).await?;
    let events = state
        .bus
        .stream_events(&id.stream_id(), ReadBound::None)
        .await
        .map_err(ApiError::internal)?;
    let attachments: Vec<AttachmentView> = events
        .iter()
        .filter_map(|env| match &env.event {
            DomainEvent::Customer(CustomerEvent::AttachmentAdded(a)) => Some(AttachmentView::of(a)),
            _ => None,
        })
        .collect();
    let now = Utc::now();
    let followups = followups_of(&state, id).await?;
    let mut followup_events: Vec<Envelope> = Vec::new();
    for f in &followups {
        let stream = FollowupId::from_uuid(f.id).stream_id();
        followup_events.extend(
            state
                .bus
                .stream_events(&stream, ReadBound::None)
                .await
                .map_err(ApiError::internal)?,
        );
    }
    followup_events.sort_by_key(|e| e.position);
    let followups: Vec<FollowupView> = followups
        .iter()
        .map(|f| FollowupView::from_row(f, now))
        .collect();

    // The export is recorded before it is answered: an export that cannot be recorded is
    // not handed out.
    let event = DomainEvent::Gdpr(GdprEvent::Exported {
        customer_id: id,
        at: now,
    });
    let position = state
        .bus
        .record(
            &gdpr_stream_id(id),
            &actor.user_id.subject(),
            &meta.metadata(&actor),
            &[event],
        )
        .await
        .map_err(ApiError::internal)?;
    state.wait_for_write(Some(position)).await;

    Ok(Json(json!({
        "customer_id": id.as_uuid(),
        "exported_at": now,
        "customer": CustomerView::from_row(&row, true),
        "followups": followups,
        "attachments": attachments,
        "history": history_items(&events, true),
        "followup_history": followup_history_items(&followup_events),
    })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseBody {
    /// Why the customer is erased (e.g. the request it answers); required, not personal.
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EraseResult {
    pub erased_at: chrono::DateTime<Utc>,
    pub certificate: ErasureCertificate,
}

#[utoipa::path(post, path = "/api/gdpr/customers/{id}/erase", params(("id" = Uuid, Path)),
    request_body = EraseBody,
    responses((status = 200, body = EraseResult), (status = 403), (status = 404), (status = 422)),
    tag = "gdpr")]
pub async fn erase(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<EraseBody>,
) -> Result<Json<EraseResult>, ApiError> {
    actor.require(Action::GdprErase)?;
    let id = CustomerId::from_uuid(id);
    customer_row(&state, id).await?;
    let reason = body.reason.unwrap_or_default();
    let erasure = erase_customer(&state.bus, id, &reason, &meta.metadata(&actor))
        .await
        .map_err(|e| from_handler(e, domain_error))?;
    // Every read path shows `[ERASED]` once this answers, on the other nodes too: they drop
    // the destroyed key and the customer's cached state on this signal.
    state.signals.erased(&id.subject(), &id.stream_id());
    state.wait_for_write(erasure.position).await;

    // The certificate's facts come from the first erasure event, so a repeat answers alike.
    let events = state
        .bus
        .stream_events(&id.stream_id(), ReadBound::None)
        .await
        .map_err(ApiError::internal)?;
    let (env, reason, erased_at) = events
        .iter()
        .find_map(|env| match &env.event {
            DomainEvent::Customer(CustomerEvent::Erased { reason, at, .. }) => {
                Some((env, reason.clone(), *at))
            }
            _ => None,
        })
        .ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("customer {id} erased without an event"))
        })?;
    let head = state.bus.log().head().await.map_err(ApiError::internal)?;
    let certificate = ErasureCertificate {
        customer_id: id.as_uuid(),
        erased_at,
        actor: CertificateActor {
            id: env.metadata.actor_id.map(|a| a.as_uuid()),
            role: env.metadata.actor_role.map(|r| r.as_str().to_owned()),
        },
        reason,
        erasure_position: env.position,
        destroyed_key_fingerprints: erasure.destroyed_key_fingerprints,
        hash_chain_head: ChainHeadView {
            position: head.position,
            hash: hex(&head.hash),
        },
    };
    Ok(Json(EraseResult {
        erased_at,
        certificate,
    }))
}
