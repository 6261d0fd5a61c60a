//! Customer endpoints. Handlers stay thin: extract, build the command, dispatch, map.

use crate::auth::actor::Actor;
use crate::denial::Denial;
use crate::error::{ApiError, from_handler};
use crate::json::{ApiJson, double_option};
use crate::reveals;
use crate::routes::meta::RequestMeta;
use crate::state::AppState;
use crate::views::customer::{CustomerView, history_items, history_shows_passport};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use egec_commands::store::ReadBound;
use egec_domain::aggregate::CustomerAggregate;
use egec_domain::customer::{
    CreateCustomer, CustomerCommand, CustomerError, CustomerState, CustomerStatus, UpdateCustomer,
};
use egec_domain::gdpr::RevealVia;
use egec_domain::permission::{
    Action, Visibility, can_be_assigned_customers, can_see_customer, can_see_deleted_customers,
    customer_visibility,
};
use egec_domain::values::*;
use egec_domain::{CustomerId, UserId};
use egec_projections::CustomerQuery;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use uuid::Uuid;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomerBody {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub passport_number: Option<String>,
    pub country: Option<String>,
    pub source: Option<String>,
    pub status: Option<String>,
    pub notes: Option<String>,
    pub assigned_agent_ids: Option<Vec<Uuid>>,
}

/// Fields to change; `null` clears an optional field.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchCustomerBody {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub passport_number: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub country: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub source: Option<Option<String>>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub notes: Option<Option<String>>,
}

/// Collects every field problem of a request before answering, so a client sees them all.
#[derive(Default)]
pub(crate) struct Fields(pub(crate) BTreeMap<String, String>);

impl Fields {
    pub(crate) fn take<T>(&mut self, name: &str, r: Result<T, Invalid>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(Invalid(msg)) => {
                self.0.insert(name.to_owned(), msg.to_owned());
                None
            }
        }
    }

    pub(crate) fn opt<T>(
        &mut self,
        name: &str,
        v: Option<&str>,
        parse: impl Fn(&str) -> Result<T, Invalid>,
    ) -> Option<T> {
        v.and_then(|s| self.take(name, parse(s)))
    }

    /// Absent = no change, null or "" = clear, a value = set.
    pub(crate) fn patch<T>(
        &mut self,
        name: &str,
        v: Option<Option<String>>,
        parse: impl Fn(&str) -> Result<T, Invalid>,
    ) -> Option<Option<T>> {
        match v {
            None => None,
            Some(None) => Some(None),
            Some(Some(s)) if s.trim().is_empty() => Some(None),
            Some(Some(s)) => self.take(name, parse(&s)).map(Some),
        }
    }

    pub(crate) fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}

/// Namespace of customer ids derived from idempotency keys.
const CUSTOMER_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6e3f_0b1a_4c5d_4e2f_9a8b_7c6d_5e4f_3a2b);

/// A new customer's id: derived from the client's idempotency key when it sent one, so that
/// a retried create lands on the same stream and is recognised as already applied; otherwise
/// a fresh time-ordered id.
fn new_customer_id(meta: &RequestMeta) -> CustomerId {
    CustomerId::from_uuid(match meta.idempotency_key {
        Some(k) => Uuid::new_v5(&CUSTOMER_ID_NAMESPACE, k.as_bytes()),
        None => Uuid::now_v7(),
    })
}

pub(crate) fn domain_error(e: CustomerError) -> ApiError {
    match e {
        CustomerError::NotFound | CustomerError::Deleted => ApiError::NotFound,
        CustomerError::AlreadyExists => ApiError::Conflict("customer already exists".into()),
        CustomerError::Erased => {
            ApiError::Unprocessable("the customer's personal data was erased".into())
        }
        CustomerError::IllegalTransition { from, to } => {
            ApiError::field("status", format!("status cannot move from {from} to {to}"))
        }
        CustomerError::ReasonRequired => ApiError::field("reason", "a reason is required"),
    }
}

pub(crate) fn with_etag(status: StatusCode, view: CustomerView) -> Response {
    let etag = format!("\"{}\"", view.version);
    let mut resp = (status, Json(view)).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// Refuses `action` on a customer with a denial that names it (403, recorded).
pub(crate) fn require_on(actor: &Actor, action: Action, id: CustomerId) -> Result<(), ApiError> {
    if actor.can(action) {
        Ok(())
    } else {
        Err(ApiError::Denied(Denial::forbidden(actor, action).about(id)))
    }
}

/// The customer as the read model has it, if the actor may see it; 404 otherwise. A customer
/// that exists but is hidden from the actor (not assigned to an agent, or deleted) answers
/// exactly like a missing one, and the refusal is recorded as `ACCESS_DENIED`.
pub(crate) async fn visible(
    state: &AppState,
    actor: &Actor,
    id: CustomerId,
) -> Result<egec_projections::CustomerRow, ApiError> {
    require_on(actor, Action::CustomersView, id)?;
    let row = state
        .read()
        .get_customer(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound)?;
    let assigned: Vec<UserId> = row
        .assigned_agent_ids
        .iter()
        .copied()
        .map(UserId::from_uuid)
        .collect();
    if !can_see_customer(actor.role, actor.user_id, &assigned)
        || (row.deleted && !can_see_deleted_customers(actor.role))
    {
        return Err(ApiError::Denied(Denial::not_visible(actor, id)));
    }
    Ok(row)
}

/// Most agents one customer may have: a guard against absurd requests, far above practice.
pub(crate) const MAX_AGENTS: usize = 50;

/// Checks that every id names an active user who may be assigned customers (an agent or a
/// superagent), against the users read model. Returns them in order without repeats, or a
/// 422 naming the ids that may not be assigned under `field`.
pub(crate) async fn assignable_agents(
    state: &AppState,
    field: &str,
    ids: &[Uuid],
) -> Result<Vec<UserId>, ApiError> {
    let mut out: Vec<UserId> = Vec::with_capacity(ids.len());
    let mut refused = Vec::new();
    for id in ids {
        let user = UserId::from_uuid(*id);
        if out.contains(&user) {
            continue;
        }
        if out.len() >= MAX_AGENTS {
            return Err(ApiError::field(
                field,
                format!("at most {MAX_AGENTS} agents may be assigned"),
            ));
        }
        let row = state
            .read()
            .get_user(user)
            .await
            .map_err(ApiError::internal)?;
        match row {
            Some(u) if u.active && can_be_assigned_customers(u.role) => out.push(user),
            _ => refused.push(id.to_string()),
        }
    }
    if refused.is_empty() {
        Ok(out)
    } else {
        Err(ApiError::field(
            field,
            format!("not an active agent or superagent: {}", refused.join(", ")),
        ))
    }
}

#[utoipa::path(post, path = "/api/customers", request_body = CreateCustomerBody,
    responses((status = 201, body = CustomerView), (status = 422), (status = 403)), tag = "customers")]
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    ApiJson(body): ApiJson<CreateCustomerBody>,
) -> Result<Response, ApiError> {
    actor.require(Action::CustomersCreate)?;
    let region = state.config.phone_default_region.as_deref();
    let mut f = Fields::default();
    let name = match body.name.as_deref() {
        Some(n) => f.take("name", PersonName::parse(n)),
        None => f.take("name", Err(Invalid("name is required"))),
    };
    // Customer emails refuse throw-away domains (config: the shipped list and the operator's).
    let domains = &state.config.disposable_email_domains;
    let email = f.opt("email", body.email.as_deref(), |s| domains.parse_email(s));
    let phone = f.opt("phone", body.phone.as_deref(), |s| {
        PhoneE164::parse(s, region)
    });
    let passport_number = f.opt(
        "passport_number",
        body.passport_number.as_deref(),
        PassportNumber::parse,
    );
    let country = f.opt("country", body.country.as_deref(), Country::parse);
    let source = f.opt("source", body.source.as_deref(), Source::parse);
    let status = f.opt(
        "status",
        body.status.as_deref(),
        str::parse::<CustomerStatus>,
    );
    let notes = f.opt("notes", body.notes.as_deref(), Notes::parse);
    f.finish()?;
    let name = name.ok_or_else(|| ApiError::field("name", "name is required"))?;
    let cmd = CreateCustomer {
        customer_id: new_customer_id(&meta),
        name,
        email,
        phone,
        passport_number,
        country,
        source,
        status,
        notes,
        assigned_agent_ids: {
            let mut ids: Vec<UserId> = body
                .assigned_agent_ids
                .unwrap_or_default()
                .into_iter()
                .map(UserId::from_uuid)
                .collect();
            // An agent who creates a customer is assigned to it, or they could not see it.
            if let Visibility::AssignedTo(me) = customer_visibility(actor.role, actor.user_id)
                && !ids.contains(&me)
            {
                ids.push(me);
            }
            ids
        },
    };
    let id = cmd.customer_id;
    let done = state
        .bus
        .execute_new::<CustomerAggregate>(
            &id.stream_id(),
            &id.subject(),
            meta.command_id,
            &meta.metadata(&actor),
            CustomerCommand::Create(Box::new(cmd)),
        )
        .await
        .map_err(|e| from_handler(e, domain_error))?;
    state.wait_for_write(done.position).await;
    // Answer from the decided state rather than the read model: data entry may create
    // customers it is not allowed to list or open afterwards.
    let CustomerState::Present(created) = &done.state else {
        return Err(ApiError::internal(anyhow::anyhow!(
            "created customer has no state"
        )));
    };
    Ok(with_etag(
        StatusCode::CREATED,
        CustomerView::from_state(created, actor.can(Action::PassportReveal)),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GetParams {
    /// The customer as it was at this time (RFC 3339).
    pub as_of: Option<String>,
    /// The customer as it was at this version.
    pub version: Option<i64>,
}

#[utoipa::path(get, path = "/api/customers/{id}", params(("id" = Uuid, Path), GetParams),
    responses((status = 200, body = CustomerView), (status = 404)), tag = "customers")]
pub async fn get(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Path(id): Path<Uuid>,
    Query(params): Query<GetParams>,
) -> Result<Response, ApiError> {
    let id = CustomerId::from_uuid(id);
    let row = visible(&state, &actor, id).await?;
    let reveal = actor.can(Action::PassportReveal);
    let bound = match (&params.as_of, params.version) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give as_of or version, not both".into(),
            ));
        }
        (Some(t), None) => ReadBound::Time(
            DateTime::parse_from_rfc3339(t)
                .map_err(|_| ApiError::field("as_of", "must be an RFC 3339 time"))?
                .with_timezone(&Utc),
        ),
        (None, Some(v)) if v >= 1 => ReadBound::Version(v),
        (None, Some(_)) => return Err(ApiError::field("version", "must be 1 or more")),
        (None, None) => {
            let view = CustomerView::from_row(&row, reveal);
            if reveals::shows_passport(&view, reveal) {
                reveals::record(&state, &actor, &meta, [id], RevealVia::Record).await?;
            }
            return Ok(with_etag(StatusCode::OK, view));
        }
    };
    let (past, _) = state
        .bus
        .load_at::<CustomerAggregate>(&id.stream_id(), bound)
        .await
        .map_err(|e| from_handler(e, domain_error))?;
    match past {
        CustomerState::Present(c) => {
            let view = CustomerView::from_state(&c, reveal);
            if reveals::shows_passport(&view, reveal) {
                reveals::record(&state, &actor, &meta, [id], RevealVia::PastRecord).await?;
            }
            Ok(with_etag(StatusCode::OK, view))
        }
        CustomerState::Absent => Err(ApiError::NotFound),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub q: Option<String>,
    pub status: Option<String>,
    pub agent_id: Option<Uuid>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

#[utoipa::path(get, path = "/api/customers", params(ListParams), responses((status = 200)), tag = "customers")]
pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Query(p): Query<ListParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    actor.require(Action::CustomersView)?;
    let mut f = Fields::default();
    let status = f.opt("status", p.status.as_deref(), str::parse::<CustomerStatus>);
    let page = p.page.unwrap_or(1);
    let per_page = p.per_page.unwrap_or(20);
    if page == 0 {
        f.0.insert("page".into(), "must be 1 or more".into());
    }
    if !(1..=100).contains(&per_page) {
        f.0.insert("per_page".into(), "must be from 1 to 100".into());
    }
    f.finish()?;
    let query = CustomerQuery {
        q: p.q.filter(|q| !q.trim().is_empty()),
        status,
        agent_id: p.agent_id.map(UserId::from_uuid),
        visibility: customer_visibility(actor.role, actor.user_id),
        include_deleted: can_see_deleted_customers(actor.role),
    };
    let (rows, total) = state
        .read()
        .list_customers(&query, page, per_page)
        .await
        .map_err(ApiError::internal)?;
    let reveal = actor.can(Action::PassportReveal);
    let items: Vec<CustomerView> = rows
        .iter()
        .map(|r| CustomerView::from_row(r, reveal))
        .collect();
    let revealed = items
        .iter()
        .filter(|v| reveals::shows_passport(v, reveal))
        .map(|v| CustomerId::from_uuid(v.id));
    reveals::record(&state, &actor, &meta, revealed, RevealVia::List).await?;
    Ok(Json(
        json!({ "items": items, "total": total, "page": page, "per_page": per_page }),
    ))
}

pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::BadRequest("If-Match is not text".into()))?;
            let s = s.trim().trim_start_matches("W/").trim_matches('"');
            s.parse::<i64>().map(Some).map_err(|_| {
                ApiError::BadRequest("If-Match must be a version such as \"3\"".into())
            })
        }
    }
}

#[utoipa::path(patch, path = "/api/customers/{id}", params(("id" = Uuid, Path)), request_body = PatchCustomerBody,
    responses((status = 200, body = CustomerView), (status = 409), (status = 422), (status = 404)), tag = "customers")]
pub async fn patch(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PatchCustomerBody>,
) -> Result<Response, ApiError> {
    let id = CustomerId::from_uuid(id);
    visible(&state, &actor, id).await?;
    require_on(&actor, Action::CustomersEdit, id)?;
    let expected = if_match(&headers)?;
    let region = state.config.phone_default_region.as_deref();
    let mut f = Fields::default();
    let update = UpdateCustomer {
        name: f.opt("name", body.name.as_deref(), PersonName::parse),
        email: f.patch("email", body.email, |s| {
            state.config.disposable_email_domains.parse_email(s)
        }),
        phone: f.patch("phone", body.phone, |s| PhoneE164::parse(s, region)),
        passport_number: f.patch(
            "passport_number",
            body.passport_number,
            PassportNumber::parse,
        ),
        country: f.patch("country", body.country, Country::parse),
        source: f.patch("source", body.source, Source::parse),
        status: f.opt(
            "status",
            body.status.as_deref(),
            str::parse::<CustomerStatus>,
        ),
        notes: f.patch("notes", body.notes, Notes::parse),
    };
    f.finish()?;
    let done = state
        .bus
        .execute::<CustomerAggregate>(
            &id.stream_id(),
            &id.subject(),
            expected,
            meta.command_id,
            &meta.metadata(&actor),
            CustomerCommand::Update(update),
        )
        .await
        .map_err(|e| from_handler(e, domain_error))?;
    state.wait_for_write(done.position).await;
    let row = visible(&state, &actor, id).await?;
    Ok(with_etag(
        StatusCode::OK,
        CustomerView::from_row(&row, actor.can(Action::PassportReveal)),
    ))
}

#[utoipa::path(get, path = "/api/customers/{id}/history", params(("id" = Uuid, Path)), responses((status = 200), (status = 404)), tag = "customers")]
pub async fn history(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Path(id): Path<Uuid>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = CustomerId::from_uuid(id);
    visible(&state, &actor, id).await?;
    let events = state
        .bus
        .stream_events(&id.stream_id(), ReadBound::None)
        .await
        .map_err(ApiError::internal)?;
    let reveal = actor.can(Action::PassportReveal);
    let items = history_items(&events, reveal);
    if reveal && history_shows_passport(&items) {
        reveals::record(&state, &actor, &meta, [id], RevealVia::History).await?;
    }
    Ok(Json(json!({ "items": items })))
}

#[utoipa::path(delete, path = "/api/customers/{id}", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403), (status = 404), (status = 409)), tag = "customers")]
pub async fn delete(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let id = CustomerId::from_uuid(id);
    visible(&state, &actor, id).await?;
    require_on(&actor, Action::CustomersDelete, id)?;
    let expected = if_match(&headers)?;
    let done = state
        .bus
        .execute::<CustomerAggregate>(
            &id.stream_id(),
            &id.subject(),
            expected,
            meta.command_id,
            &meta.metadata(&actor),
            CustomerCommand::Delete,
        )
        .await
        .map_err(|e| from_handler(e, domain_error))?;
    state.wait_for_write(done.position).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignAgentsBody {
    /// The complete new assignment: active agents or superagents.
    pub agent_ids: Vec<Uuid>,
}

#[utoipa::path(put, path = "/api/customers/{id}/agents", params(("id" = Uuid, Path)),
    request_body = AssignAgentsBody,
    responses((status = 200, body = CustomerView), (status = 403), (status = 404), (status = 409), (status = 422)),
    tag = "customers")]
pub async fn assign_agents(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<AssignAgentsBody>,
) -> Result<Response, ApiError> {
    let id = CustomerId::from_uuid(id);
    visible(&state, &actor, id).await?;
    require_on(&actor, Action::CustomersEdit, id)?;
    let expected = if_match(&headers)?;
    let agent_ids = assignable_agents(&state, "agent_ids", &body.agent_ids).await?;
    let done = state
        .bus
        .execute::<CustomerAggregate>(
            &id.stream_id(),
            &id.subject(),
            expected,
            meta.command_id,
            &meta.metadata(&actor),
            CustomerCommand::AssignAgents { agent_ids },
        )
        .await
        .map_err(|e| from_handler(e, domain_error))?;
    state.wait_for_write(done.position).await;
    // Answer from the decided state: an agent who just unassigned themselves may no longer
    // read the customer, but the change they made is still theirs to see.
    let CustomerState::Present(c) = &done.state else {
        return Err(ApiError::NotFound);
    };
    Ok(with_etag(
        StatusCode::OK,
        CustomerView::from_state(c, actor.can(Action::PassportReveal)),
    ))
}
