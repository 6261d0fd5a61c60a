//! The authenticated caller, extracted from `Authorization: Bearer <token>` or from an
//! `X-API-Key` header (see `api_key.rs`; a key in the query string is refused).
//!
//! The token proves who the caller is and which session this is; what they may do comes
//! from the users read model at the time of the request. A request is refused (401) when the
//! session timed out (absolute or idle), was logged out, or was issued under an older
//! session version than the user's (role change, deactivation, logout everywhere,
//! force-logout), and when the user is inactive. The write side waits for the projections
//! before it answers such a change, so it applies to the very next request.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use egec_domain::permission::{self, Action};
use egec_domain::{Role, UserId};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: UserId,
    pub role: Role,
    pub session_id: Uuid,
    /// Set when the caller is an API key: what it may do is exactly these scopes.
    pub api_key: Option<ApiKeyGrant>,
}

/// The permissions an API key was issued with.
#[derive(Debug, Clone)]
pub struct ApiKeyGrant {
    pub key_id: Uuid,
    pub scopes: Vec<Action>,
}

impl Actor {
    /// Refuses with 403 unless the permission matrix allows the action.
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        if self.can(action) {
            Ok(())
        } else {
            Err(ApiError::Denied(crate::denial::Denial::forbidden(
                self, action,
            )))
        }
    }

    pub fn can(&self, action: Action) -> bool {
        permission::allows(self.principal(), action)
    }

    /// Who is acting, as the permission module sees it.
    pub fn principal(&self) -> permission::Principal<'_> {
        match &self.api_key {
            Some(k) => permission::Principal::ApiKey { scopes: &k.scopes },
            None => permission::Principal::Staff(self.role),
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if crate::auth::api_key::key_in_query(parts) {
            return Err(ApiError::Unauthorized);
        }
        if let Some(key) = crate::auth::api_key::header_key(parts) {
            // Two sets of credentials are one too many: refused rather than guessed at.
            if bearer(parts).is_some() {
                return Err(ApiError::Unauthorized);
            }
            let actor = crate::auth::api_key::authenticate(state, key, parts.uri.path()).await?;
            // Integrations get the ordinary API quota, per key. The admin IP allowlist is
            // for people with admin roles; a key is scoped by its permissions instead.
            crate::rate_limit::charge_key(parts, &state.rate_limits, actor.user_id.as_uuid())
                .await?;
            return Ok(actor);
        }
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        let claims = state.tokens.verify(token).ok_or(ApiError::Unauthorized)?;
        let issued_at =
            DateTime::<Utc>::from_timestamp(claims.iat, 0).ok_or(ApiError::Unauthorized)?;
        let now = Utc::now();
        if let Err(why) = state.sessions.check(claims.sid, issued_at, now) {
            tracing::debug!(?why, "session timed out");
            return Err(ApiError::Unauthorized);
        }
        let user_id = UserId::from_uuid(claims.sub);
        let found = state
            .read()
            .session_user(user_id, claims.sid)
            .await
            .map_err(ApiError::internal)?
            .ok_or(ApiError::Unauthorized)?;
        if !found.user.active || found.ended || claims.sv < found.user.session_version {
            tracing::debug!(
                active = found.user.active,
                logged_out = found.ended,
                stale_version = claims.sv < found.user.session_version,
                "session refused"
            );
            state.sessions.forget(claims.sid);
            return Err(ApiError::Unauthorized);
        }
        crate::net::admin_allowlist::check(parts, state, user_id, found.user.role).await?;
        crate::rate_limit::charge_user(parts, &state.rate_limits, user_id, found.user.role).await?;
        // A pending password change or two-factor enrolment confines the session to the
        // endpoints that fulfil it (see `gate.rs`).
        crate::auth::gate::check(
            &state.config,
            &parts.method,
            parts.uri.path(),
            &found.user,
            now,
        )?;
        state.sessions.touch(claims.sid, now);
        Ok(Actor {
            user_id,
            role: found.user.role,
            session_id: claims.sid,
            api_key: None,
        })
    }
}
