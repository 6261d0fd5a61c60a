//! Follow-up endpoints. A follow-up is visible only with its customer: every handler checks
//! the customer's visibility (`customers::visible`, 404 when hidden), and the lists filter
//! by the customer's assignment in the read model's query.
//!
//! Commands run on the follow-up's own stream with the customer's data subject, so the note
//! is encrypted under the customer's key and erasing the customer shreds it.

use crate::auth::actor::Actor;
use crate::error::{ApiError, from_handler};
use crate::json::ApiJson;
use crate::routes::customers::{Fields, visible};
use crate::routes::meta::RequestMeta;
use crate::state::AppState;
use crate::views::followup::FollowupView;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SubsecRound, Utc};
use egec_domain::aggregate::FollowupAggregate;
use egec_domain::followup::{
    FollowupCommand, FollowupError, FollowupState, FollowupStatus, ScheduleFollowup,
};
use egec_domain::ids::FollowupId;
use egec_domain::permission::{
    Action, can, can_see_customer, can_see_deleted_customers, customer_visibility,
};
use egec_domain::values::{Invalid, Notes};
use egec_domain::{CustomerId, UserId};
use egec_projections::{CustomerRow, FollowupQuery};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFollowupBody {
    /// RFC 3339.
    pub due_at: Option<String>,
    pub note: Option<String>,
    /// A staff user who may work on the customer's follow-ups; the caller when absent.
    pub assigned_to: Option<Uuid>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListFollowupsParams {
    /// `me` or a user id.
    pub assigned_to: Option<String>,
    /// `open`, `done` or `overdue`.
    pub status: Option<String>,
    /// Only follow-ups due before this time (RFC 3339).
    pub due_before: Option<String>,
    pub customer_id: Option<Uuid>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

/// Namespace of follow-up ids derived from idempotency keys.
const FOLLOWUP_ID_NAMESPACE: Uuid = Uuid::from_u128(0x2b7d_91c4_5e0a_4f63_8d12_a9c0_3e5f_7b14);

/// A new follow-up's id: derived from the client's idempotency key when it sent one, so a
/// retried create lands on the same stream and is recognised as already applied.
fn new_followup_id(meta: &RequestMeta) -> FollowupId {
    FollowupId::from_uuid(match meta.idempotency_key {
        Some(k) => Uuid::new_v5(&FOLLOWUP_ID_NAMESPACE, k.as_bytes()),
        None => Uuid::now_v7(),
    })
}

fn domain_error(e: FollowupError) -> ApiError {
    match e {
        FollowupError::NotFound => ApiError::NotFound,
        FollowupError::AlreadyExists => ApiError::Conflict("follow-up already exists".into()),
        FollowupError::AlreadyCompleted => {
            ApiError::Conflict("the follow-up is already completed".into())
        }
    }
}

fn rfc3339(s: &str) -> Result<DateTime<Utc>, Invalid> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| Invalid("must be an RFC 3339 time"))
}

fn agents_of(row: &CustomerRow) -> Vec<UserId> {
    row.assigned_agent_ids
        .iter()
        .copied()
        .map(UserId::from_uuid)
        .collect()
}

/// Whether `user` may be given a follow-up of this customer: an active staff user who may
/// work on follow-ups and can see the customer.
async fn assignable(
    state: &AppState,
    user: UserId,
    customer: &CustomerRow,
) -> Result<bool, ApiError> {
    let Some(u) = state
        .read()
        .get_user(user)
        .await
        .map_err(ApiError::internal)?
    else {
        return Ok(false);
    };
    Ok(u.active
        && can(u.role, Action::FollowupsEdit)
        && can_see_customer(u.role, user, &agents_of(customer)))
}

#[utoipa::path(post, path = "/api/customers/{id}/followups", params(("id" = Uuid, Path)),
    request_body = CreateFollowupBody,
    responses((status = 201, body = FollowupView), (status = 404), (status = 422), (status = 403)),
    tag = "followups")]
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<CreateFollowupBody>,
) -> Result<Response, ApiError> {
    actor.require(Action::FollowupsEdit)?;
    let customer_id = CustomerId::from_uuid(id);
    let customer = visible(&state, &actor, customer_id).await?;
    if customer.erased {
        return Err(ApiError::Unprocessable(
            "the customer's personal data was erased".into(),
        ));
    }
    let mut f = Fields::default();
    let due_at = match body.due_at.as_deref() {
        // Both backends keep microseconds: the answer shows the time as it is stored.
        Some(s) => f.take("due_at", rfc3339(s).map(|t| t.trunc_subsecs(6))),
        None => f.take("due_at", Err(Invalid("due_at is required"))),
    };
    let note = match body.note.as_deref() {
        Some(s) => f.take("note", Notes::parse(s)),
        None => f.take("note", Err(Invalid("note is required"))),
    };
    let assigned_to = UserId::from_uuid(body.assigned_to.unwrap_or(actor.user_id.as_uuid()));
    if !assignable(&state, assigned_to, &customer).await? {
        f.0.insert(
            "assigned_to".into(),
            "must be an active staff user who can see the customer".into(),
        );
    }
    f.finish()?;
    let (Some(due_at), Some(note)) = (due_at, note) else {
        return Err(ApiError::internal(anyhow::anyhow!(
            "validated follow-up fields missing"
        )));
    };
    let followup_id = new_followup_id(&meta);
    let done = state
        .bus
        .execute_new::<FollowupAggregate>(
            &followup_id.stream_id(),
            &customer_id.subject(),
            meta.command_id,
            &meta.metadata(&actor),
            FollowupCommand::Schedule(Box::new(ScheduleFollowup {
                followup_id,
                customer_id,
                due_at,
                note: note.clone(),
                assigned_to,
            })),
        )
        .await
        .map_err(|e| from_handler(e, domain_error))?;
    state.wait_for_write(done.position).await;
    let FollowupState::Present(created) = &done.state else {
        return Err(ApiError::internal(anyhow::anyhow!(
            "scheduled follow-up has no state"
        )));
    };
    let now = Utc::now();
    let view = FollowupView {
        id: created.id.as_uuid(),
        customer_id: created.customer_id.as_uuid(),
        due_at: created.due_at,
        note: note.as_str().to_owned(),
        assigned_to: created.assigned_to.as_uuid(),
        status: FollowupStatus::at(created.due_at, None, now)
            .as_str()
            .to_owned(),
        completed_at: None,
        completed_by: None,
        created_at: created.created_at,
        version: done.version,
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// The follow-up as the read model has it, if the caller may see its customer; 404
/// otherwise (a hidden customer's follow-ups do not exist for the caller).
async fn visible_followup(
    state: &AppState,
    actor: &Actor,
    id: FollowupId,
) -> Result<egec_projections::FollowupRow, ApiError> {
    let row = state
        .read()
        .get_followup(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound)?;
    visible(state, actor, CustomerId::from_uuid(row.customer_id)).await?;
    Ok(row)
}

#[utoipa::path(get, path = "/api/followups/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = FollowupView), (status = 404)), tag = "followups")]
pub async fn get(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Json<FollowupView>, ApiError> {
    actor.require(Action::FollowupsView)?;
    let row = visible_followup(&state, &actor, FollowupId::from_uuid(id)).await?;
    Ok(Json(FollowupView::from_row(&row, Utc::now())))
}

#[utoipa::path(post, path = "/api/followups/{id}/complete", params(("id" = Uuid, Path)),
    responses((status = 200, body = FollowupView), (status = 404), (status = 409)), tag = "followups")]
pub async fn complete(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Path(id): Path<Uuid>,
) -> Result<Json<FollowupView>, ApiError> {
    actor.require(Action::FollowupsEdit)?;
    let id = FollowupId::from_uuid(id);
    let row = visible_followup(&state, &actor, id).await?;
    let done = state
        .bus
        .execute::<FollowupAggregate>(
            &id.stream_id(),
            &CustomerId::from_uuid(row.customer_id).subject(),
            None,
            meta.command_id,
            &meta.metadata(&actor),
            FollowupCommand::Complete {
                completed_by: actor.user_id,
            },
        )
        .await
        .map_err(|e| from_handler(e, domain_error))?;
    state.wait_for_write(done.position).await;
    let row = state
        .read()
        .get_followup(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(FollowupView::from_row(&row, Utc::now())))
}

/// Parses the list filters into a query over what the caller may see.
fn query(
    actor: &Actor,
    p: &ListFollowupsParams,
    now: DateTime<Utc>,
) -> Result<(FollowupQuery, u32, u32), ApiError> {
    let mut f = Fields::default();
    let assigned_to = match p.assigned_to.as_deref().map(str::trim) {
        None | Some("") => None,
        Some("me") => Some(actor.user_id.as_uuid()),
        Some(s) => f.take(
            "assigned_to",
            Uuid::parse_str(s).map_err(|_| Invalid("must be me or a user id")),
        ),
    };
    let status = f.opt("status", p.status.as_deref(), str::parse::<FollowupStatus>);
    let due_before = f.opt("due_before", p.due_before.as_deref(), rfc3339);
    let page = p.page.unwrap_or(1);
    let per_page = p.per_page.unwrap_or(20);
    if page == 0 {
        f.0.insert("page".into(), "must be 1 or more".into());
    }
    if !(1..=100).contains(&per_page) {
        f.0.insert("per_page".into(), "must be from 1 to 100".into());
    }
    f.finish()?;
    Ok((
        FollowupQuery {
            assigned_to,
            customer_id: p.customer_id,
            status,
            due_before,
            now,
            visibility: customer_visibility(actor.role, actor.user_id),
            include_deleted: can_see_deleted_customers(actor.role),
        },
        page,
        per_page,
    ))
}

async fn page_of(
    state: &AppState,
    q: &FollowupQuery,
    page: u32,
    per_page: u32,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (rows, total) = state
        .read()
        .list_followups(q, page, per_page)
        .await
        .map_err(ApiError::internal)?;
    let items: Vec<FollowupView> = rows
        .iter()
        .map(|r| FollowupView::from_row(r, q.now))
        .collect();
    Ok(Json(
        json!({ "items": items, "total": total, "page": page, "per_page": per_page }),
    ))
}

#[utoipa::path(get, path = "/api/followups", params(ListFollowupsParams),
    responses((status = 200), (status = 422)), tag = "followups")]
pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    Query(p): Query<ListFollowupsParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    actor.require(Action::FollowupsView)?;
    // Follow-ups are seen with their customers: whoever may not list customers sees none.
    actor.require(Action::CustomersView)?;
    let (q, page, per_page) = query(&actor, &p, Utc::now())?;
    page_of(&state, &q, page, per_page).await
}

#[utoipa::path(get, path = "/api/customers/{id}/followups",
    params(("id" = Uuid, Path), ListFollowupsParams),
    responses((status = 200), (status = 404), (status = 422)), tag = "followups")]
pub async fn list_for_customer(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Query(p): Query<ListFollowupsParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    actor.require(Action::FollowupsView)?;
    visible(&state, &actor, CustomerId::from_uuid(id)).await?;
    let (mut q, page, per_page) = query(&actor, &p, Utc::now())?;
    q.customer_id = Some(id);
    page_of(&state, &q, page, per_page).await
}
