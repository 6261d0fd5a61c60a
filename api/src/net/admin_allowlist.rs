//! `EGEC_ADMIN_IP_ALLOWLIST`: superadmins and admins may only act from these networks.
//!
//! The rule itself is [`egec_domain::permission::admin_ip_allowed`]; this module gives it the
//! request's address (from [`ClientContext`], so a spoofed `X-Forwarded-For` from an
//! untrusted peer cannot get around it); every refusal is recorded as an `ACCESS_DENIED`
//! event in the month's security stream by [`crate::denial::record`].

use super::client_ip::ClientContext;
use crate::denial::Denial;
use crate::error::ApiError;
use crate::state::AppState;
use axum::http::request::Parts;
use egec_domain::security::DenialReason;
use egec_domain::{Role, UserId, permission};

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
    tracing::warn!(user = %user_id, "admin request from outside the IP allowlist refused");
    // Recorded as `ACCESS_DENIED` by `crate::denial::record`, like every other refusal.
    Err(ApiError::Denied(Denial {
        user_id,
        role: Some(role),
        reason: DenialReason::IpNotAllowed,
        action: None,
        customer_id: None,
    }))
}
