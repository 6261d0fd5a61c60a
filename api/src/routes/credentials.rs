//! The caller's own credentials: password change and TOTP enrolment; and an administrator's
//! demand for a new password.

use crate::auth::actor::Actor;
use crate::auth::password::Verified;
use crate::auth::totp;
use crate::error::{ApiError, from_handler};
use crate::json::ApiJson;
use crate::routes::meta::RequestMeta;
use crate::routes::users::user_error;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use egec_commands::handler::now_micros;
use egec_domain::aggregate::UserAggregate;
use egec_domain::event::DomainEvent;
use egec_domain::password_policy::{self, PasswordContext};
use egec_domain::personal::Personal;
use egec_domain::user::credentials::CredentialCommand;
use egec_domain::user::{PasswordHash, User, UserCommand, UserState, lockout, login_stream_id};
use egec_domain::{UserId, event::Metadata};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordBody {
    #[schema(value_type = String)]
    pub current_password: SecretString,
    #[schema(value_type = String)]
    pub new_password: SecretString,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpEnableBody {
    pub code: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpDisableBody {
    #[schema(value_type = String)]
    pub password: SecretString,
    pub code: String,
}

/// The user's aggregate (the authority; the read model may lag).
pub async fn load_user(state: &AppState, id: UserId) -> Result<Box<User>, ApiError> {
    match state
        .bus
        .load::<UserAggregate>(&id.stream_id())
        .await
        .map_err(|e| from_handler(e, user_error))?
    {
        (UserState::Present(u), _) => Ok(u),
        (UserState::Absent, _) => Err(ApiError::NotFound),
    }
}

/// Runs a credential command on a user's stream; answers its log position, if it wrote.
pub async fn execute(
    state: &AppState,
    id: UserId,
    command_id: Uuid,
    meta: &Metadata,
    command: CredentialCommand,
) -> Result<Option<i64>, ApiError> {
    state
        .bus
        .execute::<UserAggregate>(
            &id.stream_id(),
            &id.subject(),
            None,
            command_id,
            meta,
            UserCommand::Credentials(command),
        )
        .await
        .map(|done| done.position)
        .map_err(|e| from_handler(e, user_error))
}

/// Verifies `password` against the user's stored hash (on the bounded pool).
async fn password_matches(
    state: &AppState,
    user: &User,
    password: &SecretString,
) -> Result<bool, ApiError> {
    let stored = user.password_hash.known().map(|h| h.as_str().to_owned());
    let v = state
        .passwords
        .verify(password, stored.as_deref())
        .await
        .map_err(ApiError::internal)?;
    Ok(matches!(v, Verified::Yes { .. }))
}

async fn new_hash(state: &AppState, password: &SecretString) -> Result<PasswordHash, ApiError> {
    let h = state
        .passwords
        .hash(password)
        .await
        .map_err(ApiError::internal)?;
    PasswordHash::parse(&h).map_err(|e| ApiError::internal(anyhow::anyhow!("hash format: {e}")))
}

fn known_secret(
    s: &Option<Personal<egec_domain::user::credentials::TotpSecret>>,
) -> Option<&egec_domain::user::credentials::TotpSecret> {
    s.as_ref().and_then(|p| p.known())
}

#[utoipa::path(post, path = "/api/auth/password", request_body = ChangePasswordBody,
    responses((status = 204), (status = 401), (status = 422)), tag = "auth")]
/// Changes the caller's password. Every session of the user ends, this one included
/// (`session_version` + 1): the caller logs in again with the new password.
pub async fn change_password(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    ApiJson(body): ApiJson<ChangePasswordBody>,
) -> Result<StatusCode, ApiError> {
    let user = load_user(&state, actor.user_id).await?;
    let matches = password_matches(&state, &user, &body.current_password).await?;
    guard_against_guessing(&state, &actor, &meta, matches).await?;
    password_policy::check(
        state.config.password_policy,
        body.new_password.expose_secret(),
        &PasswordContext {
            email: user.email.known().map(|e| e.as_str()),
            name: user.name.known().map(|n| n.as_str()),
        },
    )
    .map_err(|w| ApiError::WeakPassword(w.to_string()))?;
    let hash = new_hash(&state, &body.new_password).await?;
    let position = execute(
        &state,
        actor.user_id,
        meta.command_id,
        &meta.metadata(&actor),
        CredentialCommand::ChangePassword(hash),
    )
    .await?;
    state.sessions.forget(actor.session_id);
    state.wait_for_write(position).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A wrong current password counts towards the lockout like a failed login (so a stolen
/// session cannot guess the password at leisure), and while the account is locked even the
/// right one is refused here. The answer is 401 `invalid_credentials` either way.
async fn guard_against_guessing(
    state: &AppState,
    actor: &Actor,
    meta: &RequestMeta,
    password_ok: bool,
) -> Result<(), ApiError> {
    let now = now_micros();
    let lock = crate::routes::auth::lockout_state(state, actor.user_id, now).await?;
    let events =
        match lockout::attempt(&lock, actor.user_id, password_ok, state.config.lockout, now) {
            lockout::Attempt::Allowed(_) => return Ok(()),
            lockout::Attempt::WrongPassword(events) | lockout::Attempt::Locked { events, .. } => {
                events
            }
        };
    let events: Vec<DomainEvent> = events.into_iter().map(DomainEvent::Login).collect();
    state
        .bus
        .record(
            &login_stream_id(actor.user_id, now),
            &actor.user_id.subject(),
            &meta.metadata(actor),
            &events,
        )
        .await
        .map_err(ApiError::internal)?;
    Err(ApiError::InvalidCredentials)
}

#[utoipa::path(post, path = "/api/auth/totp/setup",
    responses((status = 200), (status = 401), (status = 409)), tag = "auth")]
/// Issues a new pending TOTP secret (replacing an unconfirmed one); 409 when two-factor
/// authentication is already on.
pub async fn totp_setup(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
) -> Result<Json<Value>, ApiError> {
    let user = load_user(&state, actor.user_id).await?;
    if user.totp.enabled() {
        return Err(user_error(egec_domain::user::UserError::TotpAlreadyEnabled));
    }
    let secret = totp::new_secret().map_err(ApiError::internal)?;
    let account = user.email.known().map(|e| e.as_str()).unwrap_or_default();
    let (otpauth_url, qr_png_base64) =
        totp::enrolment(&secret, account).map_err(ApiError::internal)?;
    let shown = secret.as_str().to_owned();
    execute(
        &state,
        actor.user_id,
        meta.command_id,
        &meta.metadata(&actor),
        CredentialCommand::StartTotpSetup(secret),
    )
    .await?;
    Ok(Json(json!({
        "secret": shown,
        "otpauth_url": otpauth_url,
        "qr_png_base64": qr_png_base64,
    })))
}

#[utoipa::path(post, path = "/api/auth/totp/enable", request_body = TotpEnableBody,
    responses((status = 200), (status = 401), (status = 409), (status = 422)), tag = "auth")]
/// Confirms the pending secret with a current code and turns two-factor authentication on.
/// Answers the ten backup codes, shown only here. A wrong code is 422 (`fields.code`).
pub async fn totp_enable(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    ApiJson(body): ApiJson<TotpEnableBody>,
) -> Result<Json<Value>, ApiError> {
    let user = load_user(&state, actor.user_id).await?;
    if user.totp.enabled() {
        return Err(user_error(egec_domain::user::UserError::TotpAlreadyEnabled));
    }
    let secret = known_secret(&user.totp.pending)
        .ok_or_else(|| user_error(egec_domain::user::UserError::TotpNotPending))?;
    let step = totp::check(secret, &body.code, now_micros())
        .ok_or_else(|| ApiError::field("code", "the code does not match"))?;
    let (codes, hashes) = totp::new_backup_codes().map_err(ApiError::internal)?;
    let position = execute(
        &state,
        actor.user_id,
        meta.command_id,
        &meta.metadata(&actor),
        CredentialCommand::EnableTotp {
            step,
            backup_codes: hashes,
        },
    )
    .await?;
    state.wait_for_write(position).await;
    Ok(Json(json!({ "backup_codes": codes })))
}

#[utoipa::path(post, path = "/api/auth/totp/disable", request_body = TotpDisableBody,
    responses((status = 204), (status = 401), (status = 409)), tag = "auth")]
/// Turns two-factor authentication off after re-authentication with the password (401
/// `invalid_credentials`) and a current, unused code (401 `totp_required`).
pub async fn totp_disable(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    ApiJson(body): ApiJson<TotpDisableBody>,
) -> Result<StatusCode, ApiError> {
    let user = load_user(&state, actor.user_id).await?;
    if !password_matches(&state, &user, &body.password).await? {
        return Err(ApiError::InvalidCredentials);
    }
    let secret = known_secret(&user.totp.secret)
        .ok_or_else(|| user_error(egec_domain::user::UserError::TotpNotEnabled))?;
    let step = totp::check(secret, &body.code, now_micros()).ok_or(ApiError::TotpRequired)?;
    let position = execute(
        &state,
        actor.user_id,
        meta.command_id,
        &meta.metadata(&actor),
        CredentialCommand::DisableTotp { step },
    )
    .await?;
    state.wait_for_write(position).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/users/{id}/require-password-change", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403), (status = 404)), tag = "users")]
/// Requires a staff user the caller may manage to choose a new password: until they do,
/// their sessions may only change the password, log out and read `me`.
pub async fn require_password_change(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let user = crate::routes::users::managed_user(&state, &actor, id).await?;
    let position = execute(
        &state,
        user,
        meta.command_id,
        &meta.metadata(&actor),
        CredentialCommand::RequirePasswordChange,
    )
    .await?;
    state.wait_for_write(position).await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    #[test]
    fn the_openapi_document_lists_every_credential_endpoint() {
        let doc = crate::openapi::ApiDoc::openapi();
        for path in [
            "/api/auth/password",
            "/api/auth/totp/setup",
            "/api/auth/totp/enable",
            "/api/auth/totp/disable",
            "/api/users/{id}/require-password-change",
        ] {
            assert!(doc.paths.paths.contains_key(path), "{path}");
        }
    }
}
