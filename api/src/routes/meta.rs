//! Who is asking and from where: the metadata every event of a request carries.

use crate::auth::actor::Actor;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::Utc;
use egec_domain::event::Metadata;
use egec_domain::personal::Personal;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub correlation_id: Uuid,
    /// From `Idempotency-Key` when the client sends a UUID there, so a retried request is
    /// applied once; otherwise fresh.
    pub command_id: Uuid,
    /// The client's `Idempotency-Key`, when it sent one.
    pub idempotency_key: Option<Uuid>,
}

impl RequestMeta {
    pub fn metadata(&self, actor: &Actor) -> Metadata {
        Metadata {
            actor_id: Some(actor.user_id),
            // An API key has no role of its own; its id is the actor.
            actor_role: actor.api_key.is_none().then_some(actor.role),
            ..self.anonymous()
        }
    }

    pub fn anonymous(&self) -> Metadata {
        Metadata {
            actor_id: None,
            actor_role: None,
            ip: self.ip.clone().map(Personal::Known),
            user_agent: self.user_agent.clone().map(Personal::Known),
            correlation_id: self.correlation_id,
            causation_id: None,
            batch_id: None,
            occurred_at: Utc::now(),
        }
    }
}

impl RequestMeta {
    /// What the request says about itself, without the `Idempotency-Key` (a fresh command
    /// id): for recording a request that is not a command, such as a refusal.
    pub fn observed(parts: &Parts) -> Self {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // The address `net::client_ip` believed: X-Forwarded-For only from a trusted proxy.
        let ip = crate::net::client_ip::ClientContext::of(parts).map(|c| c.ip.to_string());
        let correlation_id = header("x-request-id")
            .and_then(|s| Uuid::parse_str(&s).ok())
            .unwrap_or_else(Uuid::now_v7);
        RequestMeta {
            ip,
            user_agent: header("user-agent").map(|ua| ua.chars().take(512).collect()),
            correlation_id,
            command_id: Uuid::now_v7(),
            idempotency_key: None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let idempotency_key = match parts
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
        {
            Some(k) => Some(
                Uuid::parse_str(k)
                    .map_err(|_| ApiError::BadRequest("Idempotency-Key must be a UUID".into()))?,
            ),
            None => None,
        };
        let observed = RequestMeta::observed(parts);
        Ok(RequestMeta {
            command_id: idempotency_key.unwrap_or(observed.command_id),
            idempotency_key,
            ..observed
        })
    }
}
