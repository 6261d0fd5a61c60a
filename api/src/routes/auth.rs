//! Login, logout, and the current user.

use crate::auth::actor::Actor;
use crate::auth::password::Verified;
use crate::error::{ApiError, from_handler};
use crate::json::ApiJson;
use crate::routes::meta::RequestMeta;
use crate::routes::users::user_error;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use egec_commands::handler::now_micros;
use egec_commands::store::ReadBound;
use egec_domain::aggregate::UserAggregate;
use egec_domain::event::DomainEvent;
use egec_domain::user::{
    LoginEvent, UserCommand, UserState, lockout, login_stream_id, recent_login_stream_ids,
};
use egec_domain::values::Email;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub email: String,
    #[schema(value_type = String)]
    pub password: SecretString,
    pub totp_code: Option<String>,
    pub backup_code: Option<String>,
}

pub fn user_json(u: &egec_projections::UserRow) -> Value {
    json!({
        "id": u.id,
        "email": u.email,
        "name": u.name,
        "role": u.role.as_str(),
        "mfa_enabled": u.mfa_enabled,
        "active": u.active,
        "created_at": u.created_at,
    })
}

#[utoipa::path(post, path = "/api/auth/login", request_body = LoginBody,
    responses((status = 200), (status = 401)), tag = "auth")]
pub async fn login(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Json<Value>, ApiError> {
    // An unknown or malformed email gets exactly the answer, and takes about the time, of a
    // wrong password: a password hash is verified either way.
    let row = match Email::parse(&body.email) {
        Ok(email) => state
            .read()
            .find_user_by_email(&email)
            .await
            .map_err(ApiError::internal)?,
        Err(_) => None,
    };
    let user = match &row {
        Some(r) if r.active => {
            let id = egec_domain::UserId::from_uuid(r.id);
            match state
                .bus
                .load::<UserAggregate>(&id.stream_id())
                .await
                .map_err(|e| from_handler(e, ApiError::internal))?
            {
                // The aggregate is the authority: the read model may lag a deactivation.
                (UserState::Present(u), _) if u.active => Some(u),
                _ => None,
            }
        }
        _ => None,
    };
    let stored = user
        .as_ref()
        .and_then(|u| u.password_hash.known())
        .map(|h| h.as_str().to_owned());
    let verified = state
        .passwords
        .verify(&body.password, stored.as_deref())
        .await
        .map_err(ApiError::internal)?;
    let (Some(user), Some(row)) = (user, row) else {
        crate::routes::login_factors::record_unknown_account(&state, &meta, &body.email).await?;
        return Err(ApiError::InvalidCredentials);
    };
    let now = now_micros();
    let mut md = meta.anonymous();
    md.actor_id = Some(user.id);
    md.actor_role = Some(user.role);
    let lock_state = lockout_state(&state, user.id, now).await?;
    let password_ok = matches!(verified, Verified::Yes { .. });
    let stream = login_stream_id(user.id, now);
    let subject = user.id.subject();
    let record = async |events: Vec<LoginEvent>| -> Result<i64, ApiError> {
        let events: Vec<DomainEvent> = events.into_iter().map(DomainEvent::Login).collect();
        state
            .bus
            .record(&stream, &subject, &md, &events)
            .await
            .map_err(ApiError::internal)
    };
    match lockout::attempt(&lock_state, user.id, password_ok, state.config.lockout, now) {
        lockout::Attempt::WrongPassword(events) => {
            record(events).await?;
            return Err(ApiError::InvalidCredentials);
        }
        lockout::Attempt::Locked {
            events,
            retry_after_seconds,
        } => {
            record(events).await?;
            return Err(ApiError::AccountLocked {
                retry_after_seconds,
            });
        }
        lockout::Attempt::Allowed(_) => {}
    }
    // The second factor, when enabled: a missing code is refused without counting as a
    // failure (the client asks for it); a wrong or replayed one counts towards the lock.
    use crate::routes::login_factors::{SecondFactor, second_factor};
    match second_factor(&state, &user, &body, &md, now).await? {
        SecondFactor::NotEnabled | SecondFactor::Accepted => {}
        SecondFactor::Missing => return Err(ApiError::TotpRequired),
        SecondFactor::Wrong => {
            match lockout::second_factor_failed(&lock_state, user.id, state.config.lockout, now) {
                lockout::Attempt::Locked {
                    events,
                    retry_after_seconds,
                } => {
                    record(events).await?;
                    return Err(ApiError::AccountLocked {
                        retry_after_seconds,
                    });
                }
                lockout::Attempt::WrongPassword(events) | lockout::Attempt::Allowed(events) => {
                    record(events).await?;
                    return Err(ApiError::TotpRequired);
                }
            }
        }
    }
    if let Verified::Yes { needs_rehash: true } = verified {
        crate::routes::login_factors::rehash(&state, user.id, &body.password, &md).await;
    }
    let session_id = Uuid::now_v7();
    record(vec![LoginEvent::Succeeded {
        user_id: user.id,
        session_id,
        at: now,
    }])
    .await?;
    let (token, expires_at) = state
        .tokens
        .issue(user.id.as_uuid(), session_id, user.session_version, now)
        .map_err(ApiError::internal)?;
    Ok(Json(json!({
        "token": token,
        "expires_at": expires_at,
        "user": user_json(&row),
        "must_change_password": egec_domain::user::credentials::password_change_due(
            user.must_change_password,
            user.password_changed_at,
            state.config.password_max_age,
            now,
        ),
    })))
}

/// The user's lockout state, folded from the previous and the current month's activity.
pub async fn lockout_state(
    state: &AppState,
    user: egec_domain::UserId,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<lockout::LockoutState, ApiError> {
    let mut ls = lockout::LockoutState::default();
    for stream in recent_login_stream_ids(user, now) {
        for env in state
            .bus
            .stream_events(&stream, ReadBound::None)
            .await
            .map_err(ApiError::internal)?
        {
            if let DomainEvent::Login(e) = &env.event {
                ls = lockout::evolve(ls, e);
            }
        }
    }
    Ok(ls)
}

#[utoipa::path(get, path = "/api/auth/me", responses((status = 200), (status = 401)), tag = "auth")]
pub async fn me(State(state): State<AppState>, actor: Actor) -> Result<Json<Value>, ApiError> {
    let row = state
        .read()
        .get_user(actor.user_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::Unauthorized)?;
    Ok(Json(user_json(&row)))
}

#[utoipa::path(post, path = "/api/auth/logout", responses((status = 204), (status = 401)), tag = "auth")]
/// Ends the caller's session: its token is refused from the next request on.
pub async fn logout(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
) -> Result<StatusCode, ApiError> {
    let now = now_micros();
    let event = DomainEvent::Login(LoginEvent::LoggedOut {
        user_id: actor.user_id,
        session_id: actor.session_id,
        at: now,
    });
    let position = state
        .bus
        .record(
            &login_stream_id(actor.user_id, now),
            &actor.user_id.subject(),
            &meta.metadata(&actor),
            &[event],
        )
        .await
        .map_err(ApiError::internal)?;
    state.sessions.forget(actor.session_id);
    state.wait_for_write(Some(position)).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/auth/logout-all", responses((status = 204), (status = 401)), tag = "auth")]
/// Ends every session of the caller, this one included.
pub async fn logout_all(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
) -> Result<StatusCode, ApiError> {
    let id = actor.user_id;
    let done = state
        .bus
        .execute::<UserAggregate>(
            &id.stream_id(),
            &id.subject(),
            None,
            meta.command_id,
            &meta.metadata(&actor),
            UserCommand::RevokeSessions,
        )
        .await
        .map_err(|e| from_handler(e, user_error))?;
    state.sessions.forget(actor.session_id);
    state.wait_for_write(done.position).await;
    state.signals.user_changed(id);
    Ok(StatusCode::NO_CONTENT)
}
