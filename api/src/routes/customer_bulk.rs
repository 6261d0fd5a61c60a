//! Bulk edit of customers and its undo.
//!
//! A bulk edit is validated as a whole before anything changes: every id must name a
//! customer that exists and is not deleted or erased, and the new status must be a legal
//! move for every one of them; otherwise the answer is 422 with one entry per offending id
//! in `fields` (`ids[<id>]`) and nothing is written. Then each customer gets one
//! `CustomerBulkEdited` event carrying the batch id in its metadata, and the batch is
//! recorded in its own stream (`bulk-<batch_id>`) with the customers it changed.
//!
//! The undo claims the batch first (a second undo is 409), then restores each customer
//! field the batch changed to its value before the batch, unless a later event changed it
//! (reported as skipped with reason `changed_since`).

use crate::auth::actor::Actor;
use crate::error::{ApiError, from_handler};
use crate::json::ApiJson;
use crate::routes::customers::{assignable_agents, domain_error};
use crate::routes::meta::RequestMeta;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use egec_commands::handler::HandlerError;
use egec_commands::store::ReadBound;
use egec_domain::CustomerId;
use egec_domain::aggregate::{BulkAggregate, CustomerAggregate};
use egec_domain::bulk::{BulkCommand, BulkError, BulkSet, BulkState, bulk_stream_id};
use egec_domain::customer::{
    BulkField, CustomerCommand, CustomerError, CustomerEvent, CustomerStatus, plan_undo,
};
use egec_domain::event::{DomainEvent, Metadata};
use egec_domain::permission::Action;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Most customers one bulk request may name.
pub const MAX_BULK_IDS: usize = 1000;

/// How many customers are written at once: enough to fill the appender's group commits
/// without one request monopolising it.
const CONCURRENCY: usize = 16;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkSetBody {
    pub status: Option<String>,
    pub assigned_agent_ids: Option<Vec<Uuid>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkEditBody {
    pub ids: Vec<Uuid>,
    pub set: BulkSetBody,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkEditResult {
    /// Customers the batch changed (those already holding the values are left alone).
    pub updated: usize,
    pub batch_id: Uuid,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SkippedField {
    pub id: Uuid,
    pub field: String,
    /// `changed_since`: another change to the field came after the batch; `deleted` or
    /// `erased`: the customer can no longer be changed.
    pub reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UndoResult {
    /// Customers with at least one field restored.
    pub restored: usize,
    /// Fields left as they are (one per customer and field), detailed in `details`.
    pub skipped: usize,
    pub details: Vec<SkippedField>,
    /// The id the restoring events carry as their batch id.
    pub undo_batch_id: Uuid,
}

/// Namespace of ids derived from a batch id (per-customer command ids, the batch's record).
const BULK_NAMESPACE: Uuid = Uuid::from_u128(0x2b1c_55e0_8f3a_4d7e_a1b2_c3d4_e5f6_0718);

/// The command id of one step of a batch: stable, so a retried request with the same
/// `Idempotency-Key` (hence the same batch id) is applied once.
fn step_id(batch_id: Uuid, what: &[u8]) -> Uuid {
    Uuid::new_v5(&Uuid::new_v5(&BULK_NAMESPACE, batch_id.as_bytes()), what)
}

/// The batch id: from the client's idempotency key when it sent one, otherwise fresh.
fn batch_id_for(meta: &RequestMeta) -> Uuid {
    match meta.idempotency_key {
        Some(k) => Uuid::new_v5(&BULK_NAMESPACE, k.as_bytes()),
        None => Uuid::now_v7(),
    }
}

fn in_batch(meta: &Metadata, batch_id: Uuid, causation: Option<Uuid>) -> Metadata {
    Metadata {
        batch_id: Some(batch_id),
        causation_id: causation,
        ..meta.clone()
    }
}

#[utoipa::path(post, path = "/api/customers/bulk", request_body = BulkEditBody,
    responses((status = 200, body = BulkEditResult), (status = 403), (status = 422)),
    tag = "customers")]
pub async fn bulk_edit(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    ApiJson(body): ApiJson<BulkEditBody>,
) -> Result<Json<BulkEditResult>, ApiError> {
    actor.require(Action::CustomersBulkEdit)?;
    let mut fields = BTreeMap::new();
    let mut ids: Vec<CustomerId> = Vec::with_capacity(body.ids.len());
    for id in body.ids {
        let id = CustomerId::from_uuid(id);
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        fields.insert("ids".to_owned(), "name at least one customer".to_owned());
    }
    if ids.len() > MAX_BULK_IDS {
        return Err(ApiError::field(
            "ids",
            format!("at most {MAX_BULK_IDS} customers per request"),
        ));
    }
    let status = match body.set.status.as_deref().map(str::parse::<CustomerStatus>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            fields.insert("set.status".to_owned(), e.0.to_owned());
            None
        }
    };
    if body.set.status.is_none() && body.set.assigned_agent_ids.is_none() {
        fields.insert(
            "set".to_owned(),
            "set status, assigned_agent_ids or both".to_owned(),
        );
    }
    let agents = match &body.set.assigned_agent_ids {
        None => None,
        Some(a) => match assignable_agents(&state, "set.assigned_agent_ids", a).await {
            Ok(a) => Some(a),
            Err(ApiError::Validation(f)) => {
                fields.extend(f);
                None
            }
            Err(e) => return Err(e),
        },
    };
    // Every customer is checked before any is changed: bad input changes nothing.
    for id in &ids {
        let row = state
            .read()
            .get_customer(*id)
            .await
            .map_err(ApiError::internal)?;
        let problem = match row {
            None => Some("no such customer".to_owned()),
            Some(r) if r.deleted => Some("no such customer".to_owned()),
            Some(r) if r.erased => Some("the customer's personal data was erased".to_owned()),
            Some(r) => status
                .filter(|to| !r.status.can_move_to(*to))
                .map(|to| format!("status cannot move from {} to {to}", r.status)),
        };
        if let Some(p) = problem {
            fields.insert(format!("ids[{}]", id.as_uuid()), p);
        }
    }
    if !fields.is_empty() {
        return Err(ApiError::Validation(fields));
    }
    let batch_id = batch_id_for(&meta);
    let metadata = in_batch(&meta.metadata(&actor), batch_id, None);
    let results: Vec<_> = futures::stream::iter(ids.iter().copied())
        .map(|id| {
            let state = &state;
            let metadata = &metadata;
            let agents = agents.clone();
            async move {
                let done = state
                    .bus
                    .execute::<CustomerAggregate>(
                        &id.stream_id(),
                        &id.subject(),
                        None,
                        step_id(batch_id, id.as_uuid().as_bytes()),
                        metadata,
                        CustomerCommand::BulkEdit {
                            status,
                            assigned_agent_ids: agents,
                        },
                    )
                    .await;
                (id, done)
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let mut changed = Vec::new();
    let mut last = None;
    for (id, done) in results {
        // A refusal here means the customer changed between the check and the write (a
        // concurrent edit or deletion): it is left out of the batch, like an unchanged one.
        match done {
            Ok(d) if !d.events.is_empty() => {
                changed.push(id);
                last = last.max(d.position);
            }
            Ok(_) | Err(HandlerError::Domain(_)) => {}
            Err(e) => return Err(from_handler(e, domain_error)),
        }
    }
    let stream = bulk_stream_id(batch_id);
    let recorded = state
        .bus
        .execute_new::<BulkAggregate>(
            &stream,
            &stream,
            step_id(batch_id, b"record"),
            &metadata,
            BulkCommand::Record {
                batch_id,
                customer_ids: changed.clone(),
                set: BulkSet {
                    status,
                    assigned_agent_ids: agents,
                },
            },
        )
        .await
        .map_err(|e| from_handler(e, bulk_error))?;
    state.wait_for_write(last.max(recorded.position)).await;
    Ok(Json(BulkEditResult {
        updated: changed.len(),
        batch_id,
    }))
}

fn bulk_error(e: BulkError) -> ApiError {
    match e {
        BulkError::NotFound => ApiError::NotFound,
        BulkError::AlreadyRecorded => {
            ApiError::Conflict("the bulk edit is already recorded".into())
        }
        BulkError::AlreadyUndone => ApiError::Conflict("the bulk edit was already undone".into()),
    }
}

/// What undoing the batch did to one customer.
#[derive(Default)]
struct Restored {
    restored: bool,
    skipped: Vec<(BulkField, &'static str)>,
    position: Option<i64>,
}

/// Attempts per customer when a concurrent write lands between reading its history and
/// restoring it: the plan is made again on the newer history.
const UNDO_ATTEMPTS: usize = 3;

async fn undo_one(
    state: &AppState,
    id: CustomerId,
    batch_id: Uuid,
    undo_batch_id: Uuid,
    metadata: &Metadata,
) -> Result<Restored, ApiError> {
    for _ in 0..UNDO_ATTEMPTS {
        let envelopes = state
            .bus
            .stream_events(&id.stream_id(), ReadBound::None)
            .await
            .map_err(ApiError::internal)?;
        let version = envelopes.last().map(|e| e.stream_version).unwrap_or(0);
        let mut history = Vec::with_capacity(envelopes.len());
        let mut batch_event = None;
        for env in envelopes {
            if let DomainEvent::Customer(e) = env.event {
                if env.metadata.batch_id == Some(batch_id)
                    && matches!(e, CustomerEvent::BulkEdited(_))
                {
                    batch_event = Some(history.len());
                }
                history.push(e);
            }
        }
        let Some(plan) = batch_event.and_then(|i| plan_undo(&history, i)) else {
            return Ok(Restored::default());
        };
        let mut out = Restored {
            skipped: plan
                .changed_since
                .iter()
                .map(|f| (*f, "changed_since"))
                .collect(),
            ..Restored::default()
        };
        if !plan.restores_anything() {
            return Ok(out);
        }
        let planned: Vec<BulkField> = [
            plan.status.map(|_| BulkField::Status),
            plan.assigned_agent_ids
                .as_ref()
                .map(|_| BulkField::AssignedAgentIds),
        ]
        .into_iter()
        .flatten()
        .collect();
        let done = state
            .bus
            .execute::<CustomerAggregate>(
                &id.stream_id(),
                &id.subject(),
                // The plan holds only for the history it was made from.
                Some(version),
                step_id(undo_batch_id, id.as_uuid().as_bytes()),
                metadata,
                CustomerCommand::RevertBulkEdit {
                    status: plan.status,
                    assigned_agent_ids: plan.assigned_agent_ids,
                },
            )
            .await;
        match done {
            Ok(d) => {
                out.restored = !d.events.is_empty();
                out.position = d.position;
                return Ok(out);
            }
            Err(HandlerError::VersionConflict { .. }) => continue,
            Err(HandlerError::Domain(e)) => {
                let reason = match e {
                    CustomerError::Erased => "erased",
                    _ => "deleted",
                };
                out.skipped.extend(planned.into_iter().map(|f| (f, reason)));
                return Ok(out);
            }
            Err(e) => return Err(from_handler(e, domain_error)),
        }
    }
    Err(ApiError::Conflict(
        "the customer kept changing while the bulk edit was undone; retry".into(),
    ))
}

#[utoipa::path(post, path = "/api/customers/bulk/{batch_id}/undo",
    params(("batch_id" = Uuid, Path)),
    responses((status = 200, body = UndoResult), (status = 403), (status = 404), (status = 409)),
    tag = "customers")]
pub async fn undo(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Path(batch_id): Path<Uuid>,
) -> Result<Json<UndoResult>, ApiError> {
    actor.require(Action::CustomersBulkEdit)?;
    let stream = bulk_stream_id(batch_id);
    let undo_batch_id = batch_id_for(&meta);
    let metadata = in_batch(&meta.metadata(&actor), undo_batch_id, Some(batch_id));
    // Claimed before anything is restored, so a second or concurrent undo is refused.
    let claimed = state
        .bus
        .execute::<BulkAggregate>(
            &stream,
            &stream,
            None,
            step_id(undo_batch_id, b"undo"),
            &metadata,
            BulkCommand::Undo { undo_batch_id },
        )
        .await
        .map_err(|e| from_handler(e, bulk_error))?;
    // The state after the claim no longer lists the customers; the batch's record does.
    let (before, _) = state
        .bus
        .load_at::<BulkAggregate>(&stream, ReadBound::Version(claimed.version - 1))
        .await
        .map_err(|e| from_handler(e, bulk_error))?;
    let customers = match before {
        BulkState::Applied { customer_ids, .. } => customer_ids,
        BulkState::Absent | BulkState::Undone => Vec::new(),
    };
    let results: Vec<_> = futures::stream::iter(customers)
        .map(|id| {
            let state = &state;
            let metadata = &metadata;
            async move {
                (
                    id,
                    undo_one(state, id, batch_id, undo_batch_id, metadata).await,
                )
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let mut restored = 0;
    let mut details = Vec::new();
    let mut last = claimed.position;
    for (id, r) in results {
        let r = r?;
        restored += usize::from(r.restored);
        last = last.max(r.position);
        details.extend(r.skipped.into_iter().map(|(f, reason)| SkippedField {
            id: id.as_uuid(),
            field: f.as_str().to_owned(),
            reason: reason.to_owned(),
        }));
    }
    state.wait_for_write(last).await;
    Ok(Json(UndoResult {
        restored,
        skipped: details.len(),
        details,
        undo_batch_id,
    }))
}
