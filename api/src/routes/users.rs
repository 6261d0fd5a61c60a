//! Staff user management: create, list, read, change, unlock, force-logout.

use crate::auth::actor::Actor;
use crate::denial::Denial;
use crate::error::{ApiError, from_handler};
use crate::json::ApiJson;
use crate::routes::auth::user_json;
use crate::routes::meta::RequestMeta;
use crate::state::AppState;
use crate::users::{CreateUserError, NewUser, create_user};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use egec_commands::store::ReadBound;
use egec_domain::aggregate::UserAggregate;
use egec_domain::event::DomainEvent;
use egec_domain::permission::{self, Action, can_manage_user, can_update_user};
use egec_domain::user::{
    LoginEvent, UpdateUser, User, UserCommand, UserError, UserState, login_stream_id,
};
use egec_domain::values::PersonName;
use egec_domain::{Role, UserId};
use egec_projections::UserRow;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use uuid::Uuid;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    pub email: String,
    pub name: String,
    pub role: String,
    #[schema(value_type = String)]
    pub password: SecretString,
}

/// Maps the user aggregate's refusals.
pub fn user_error(e: UserError) -> ApiError {
    match e {
        UserError::AlreadyExists => ApiError::Conflict("the user already exists".into()),
        UserError::NotFound => ApiError::NotFound,
        UserError::LastSuperadmin => {
            ApiError::Conflict("the last active superadmin cannot be demoted or deactivated".into())
        }
        UserError::TotpAlreadyEnabled | UserError::TotpNotPending | UserError::TotpNotEnabled => {
            ApiError::Conflict(e.to_string())
        }
        UserError::TotpCodeReused | UserError::BackupCodeUsed => ApiError::TotpRequired,
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUserBody {
    pub name: Option<String>,
    pub role: Option<String>,
    pub active: Option<bool>,
}

#[utoipa::path(post, path = "/api/users", request_body = CreateUserBody,
    responses((status = 201), (status = 403), (status = 409), (status = 422)), tag = "users")]
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    ApiJson(body): ApiJson<CreateUserBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    actor.require(Action::UsersManage)?;
    let role: Role = body
        .role
        .parse()
        .map_err(|e: egec_domain::role::UnknownRole| ApiError::field("role", e.to_string()))?;
    if !can_manage_user(actor.role, role) {
        return Err(ApiError::Denied(Denial::forbidden(
            &actor,
            Action::UsersManage,
        )));
    }
    let new = NewUser {
        email: &body.email,
        name: &body.name,
        role,
        password: &body.password,
        policy: state.config.password_policy,
    };
    let (id, position) = create_user(
        &state.bus,
        state.read(),
        &state.passwords,
        new,
        &meta.metadata(&actor),
    )
    .await
    .map_err(|e| match e {
        CreateUserError::Invalid { field, problem } => ApiError::field(field, problem),
        CreateUserError::WeakPassword(w) => ApiError::WeakPassword(w.to_string()),
        CreateUserError::EmailTaken => {
            ApiError::Conflict("a user with this email already exists".into())
        }
        CreateUserError::Internal(e) => ApiError::Internal(e),
    })?;
    state.wait_for_write(Some(position)).await;
    let row = user_row(&state, id).await?;
    Ok((StatusCode::CREATED, Json(user_json(&row))))
}

#[utoipa::path(get, path = "/api/users", responses((status = 200), (status = 403)), tag = "users")]
pub async fn list(State(state): State<AppState>, actor: Actor) -> Result<Json<Value>, ApiError> {
    actor.require(Action::UsersView)?;
    let users = state
        .read()
        .list_users()
        .await
        .map_err(ApiError::internal)?;
    let items: Vec<Value> = users.iter().map(user_json).collect();
    Ok(Json(json!({ "items": items, "total": items.len() })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GetUserParams {
    /// The user as they were at this time (RFC 3339), replayed from the log.
    pub as_of: Option<String>,
}

#[utoipa::path(get, path = "/api/users/{id}", params(("id" = Uuid, Path), GetUserParams),
    responses((status = 200), (status = 404), (status = 422)), tag = "users")]
pub async fn get(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Query(params): Query<GetUserParams>,
) -> Result<Json<Value>, ApiError> {
    let reading_self = id == actor.user_id.as_uuid();
    if !permission::can_read_user(actor.principal(), reading_self) {
        return Err(ApiError::Denied(Denial::forbidden(
            &actor,
            Action::UsersView,
        )));
    }
    let user = UserId::from_uuid(id);
    let row = user_row(&state, user).await?;
    let Some(as_of) = params.as_of else {
        return Ok(Json(user_json(&row)));
    };
    let as_of = chrono::DateTime::parse_from_rfc3339(&as_of)
        .map_err(|_| ApiError::field("as_of", "must be an RFC 3339 time"))?
        .with_timezone(&chrono::Utc);
    // The state as of a time is the fold of the user's events up to it: the log, not the
    // read model, which only knows the present.
    let (past, _) = state
        .bus
        .load_at::<UserAggregate>(&user.stream_id(), ReadBound::Time(as_of))
        .await
        .map_err(ApiError::internal)?;
    match past {
        UserState::Present(u) => Ok(Json(past_user_json(&u))),
        UserState::Absent => Err(ApiError::NotFound),
    }
}

/// A user as replayed from the log, in the shape of `user_json` plus the version the state
/// is at (no password hash, no second-factor secret).
fn past_user_json(u: &User) -> Value {
    json!({
        "id": u.id.as_uuid(),
        "email": u.email.shown(),
        "name": u.name.shown(),
        "role": u.role.as_str(),
        "mfa_enabled": u.totp.enabled(),
        "active": u.active,
        "created_at": u.created_at,
        "version": u.version,
        "must_change_password": u.must_change_password,
    })
}

#[utoipa::path(post, path = "/api/users/{id}/unlock", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403), (status = 404)), tag = "users")]
pub async fn unlock(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let user = managed_user(&state, &actor, id).await?;
    let now = egec_commands::handler::now_micros();
    let event = DomainEvent::Login(LoginEvent::Unlocked {
        user_id: user,
        at: now,
    });
    state
        .bus
        .record(
            &login_stream_id(user, now),
            &user.subject(),
            &meta.metadata(&actor),
            &[event],
        )
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(patch, path = "/api/users/{id}", params(("id" = Uuid, Path)), request_body = PatchUserBody,
    responses((status = 200), (status = 400), (status = 403), (status = 404), (status = 409), (status = 422)), tag = "users")]
/// Renames, changes the role of, deactivates or reactivates a staff user. A role change and
/// a deactivation end the user's sessions; the last active superadmin stays one.
pub async fn patch(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<PatchUserBody>,
) -> Result<Json<Value>, ApiError> {
    actor.require(Action::UsersManage)?;
    let user = UserId::from_uuid(id);
    let row = user_row(&state, user).await?;
    let mut problems = BTreeMap::new();
    let name = match body.name.as_deref().map(PersonName::parse) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            problems.insert("name".to_owned(), e.to_string());
            None
        }
    };
    let role = match body.role.as_deref().map(str::parse::<Role>) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            problems.insert("role".to_owned(), e.to_string());
            None
        }
    };
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    if !can_update_user(actor.role, row.role, role) {
        return Err(ApiError::Denied(Denial::forbidden(
            &actor,
            Action::UsersManage,
        )));
    }
    // Read from the users read model: two demotions of different superadmins at the same
    // moment can both see the other still active (see ARCHITECTURE.md).
    let active_superadmins = state
        .read()
        .count_active_superadmins()
        .await
        .map_err(ApiError::internal)?;
    let command = UserCommand::Update(Box::new(UpdateUser {
        name,
        role,
        active: body.active,
        active_superadmins,
    }));
    let done = state
        .bus
        .execute::<UserAggregate>(
            &user.stream_id(),
            &user.subject(),
            None,
            meta.command_id,
            &meta.metadata(&actor),
            command,
        )
        .await
        .map_err(|e| from_handler(e, user_error))?;
    state.wait_for_write(done.position).await;
    state.signals.user_changed(user);
    let row = user_row(&state, user).await?;
    Ok(Json(user_json(&row)))
}

#[utoipa::path(post, path = "/api/users/{id}/force-logout", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403), (status = 404)), tag = "users")]
/// Ends every session of a staff user the caller may manage.
pub async fn force_logout(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let user = managed_user(&state, &actor, id).await?;
    let done = state
        .bus
        .execute::<UserAggregate>(
            &user.stream_id(),
            &user.subject(),
            None,
            meta.command_id,
            &meta.metadata(&actor),
            UserCommand::RevokeSessions,
        )
        .await
        .map_err(|e| from_handler(e, user_error))?;
    state.wait_for_write(done.position).await;
    state.signals.user_changed(user);
    Ok(StatusCode::NO_CONTENT)
}

/// A staff user's row from the read model, or 404.
pub(crate) async fn user_row(state: &AppState, user: UserId) -> Result<UserRow, ApiError> {
    state
        .read()
        .get_user(user)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound)
}

/// The staff user `id`, when the caller may manage users and this one in particular (404 when
/// there is no such user, 403 when the caller may not manage them).
pub(crate) async fn managed_user(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
) -> Result<UserId, ApiError> {
    actor.require(Action::UsersManage)?;
    let user = UserId::from_uuid(id);
    let row = user_row(state, user).await?;
    if !can_manage_user(actor.role, row.role) {
        return Err(ApiError::Denied(Denial::forbidden(
            actor,
            Action::UsersManage,
        )));
    }
    Ok(user)
}
