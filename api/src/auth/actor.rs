//! The authenticated caller, extracted from `Authorization: Bearer <token>`.
//!
//! The token proves who the caller is; what they may do comes from the users read model at
//! the time of the request, so a role change or deactivation applies to the next request.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use egec_domain::permission::{self, Action};
use egec_domain::{Role, UserId};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: UserId,
    pub role: Role,
    pub session_id: Uuid,
}

impl Actor {
    /// Refuses with 403 unless the permission matrix allows the action.
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        if permission::can(self.role, action) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    pub fn can(&self, action: Action) -> bool {
        permission::can(self.role, action)
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
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        let claims = state.tokens.verify(token).ok_or(ApiError::Unauthorized)?;
        let user_id = UserId::from_uuid(claims.sub);
        let user = state
            .read()
            .get_user(user_id)
            .await
            .map_err(ApiError::internal)?
            .ok_or(ApiError::Unauthorized)?;
        if !user.active {
            return Err(ApiError::Unauthorized);
        }
        Ok(Actor {
            user_id,
            role: user.role,
            session_id: claims.sid,
        })
    }
}
