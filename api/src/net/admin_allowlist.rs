//! `EGEC_ADMIN_IP_ALLOWLIST`: superadmins and admins may only act from these networks.
//!
//! The rule itself is [`egec_domain::permission::admin_ip_allowed`]; this module gives it the
//! request's address (from [`ClientContext`], so a spoofed `X-Forwarded-For` from an
//! untrusted peer cannot get around it) and records every refusal as an `ACCESS_DENIED` event
//! in the month's security stream.

use super::client_ip::ClientContext;
use crate::error::ApiError;
use crate::state::AppState;
use axum::http::request::Parts;
use chrono::Utc;
use egec_domain::event::{DomainEvent, Metadata};
use egec_domain::personal::Personal;
use egec_domain::security::{DenialReason, security_stream_id};
use egec_domain::user::LoginEvent;
use egec_domain::{Role, UserId, permission};
use uuid::Uuid;

/// Refuses (403, and an `ACCESS_DENIED` event) a restricted role calling from outside the
/// allowlist; does nothing when no allowlist is configured.
pub async fn check(
    parts: &Parts,
    state: &AppState,
    user_id: UserId,
    role: Role,
) -> Result<(), ApiError> {
    let Some(allowlist) = &state.config.admin_ip_allowlist else {
        return Ok(());
    };
    let client = ClientContext::of(parts);
    let inside = client.is_some_and(|c| allowlist.iter().any(|n| n.contains(&c.ip)));
    if permission::admin_ip_allowed(role, Some(inside)) {
        return Ok(());
    }
    let now = Utc::now();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let meta = Metadata {
        actor_id: Some(user_id),
        actor_role: Some(role),
        // Personal: encrypted in the log under the month's key, never logged in clear.
        ip: client.map(|c| Personal::Known(c.ip.to_string())),
        user_agent: header("user-agent").map(|ua| Personal::Known(ua.chars().take(512).collect())),
        correlation_id: header("x-request-id")
            .and_then(|s| Uuid::parse_str(&s).ok())
            .unwrap_or_else(Uuid::now_v7),
        causation_id: None,
        batch_id: None,
        occurred_at: now,
    };
    let event = DomainEvent::Login(LoginEvent::AccessDenied {
        user_id,
        path: parts.uri.path().chars().take(512).collect(),
        reason: DenialReason::IpNotAllowed,
        action: None,
        customer_id: None,
        at: now,
    });
    state
        .bus
        .record(
            &security_stream_id(now),
            &user_id.subject(),
            &meta,
            &[event],
        )
        .await
        .map_err(ApiError::internal)?;
    tracing::warn!(user = %user_id, "admin request from outside the IP allowlist refused");
    metrics::counter!("egec_access_denied_total", "reason" => "ip_not_allowed").increment(1);
    Err(ApiError::Forbidden)
}
