//! Every refusal by the permission module becomes an `ACCESS_DENIED` event, recorded here
//! and only here.
//!
//! [`Actor::require`](crate::auth::actor::Actor::require) and the customer visibility check
//! (`routes::customers::visible`) answer with [`ApiError::Denied`], which carries a
//! [`Denial`]; its response puts the denial in the response's extensions, and [`record`],
//! a middleware around every `/api` route, appends the event (a
//! `LoginEvent::AccessDenied` on the month's `security-YYYYMM` stream) with the request's
//! metadata. Handlers therefore never record anything themselves and cannot forget to.

use crate::auth::actor::Actor;
use crate::routes::meta::RequestMeta;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use egec_domain::event::{DomainEvent, Metadata};
use egec_domain::permission::Action;
use egec_domain::security::{DenialReason, security_stream_id};
use egec_domain::user::LoginEvent;
use egec_domain::{CustomerId, Role, UserId};
use std::fmt;

/// A refusal by the permission module: who was refused what, and about which customer.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    pub user_id: UserId,
    /// The caller's role; none for an API key (its id is the actor).
    pub role: Option<Role>,
    pub reason: DenialReason,
    pub action: Option<Action>,
    pub customer_id: Option<CustomerId>,
}

impl Denial {
    /// The actor lacks `action` (403).
    pub fn forbidden(actor: &Actor, action: Action) -> Self {
        Self {
            user_id: actor.user_id,
            role: actor.api_key.is_none().then_some(actor.role),
            reason: DenialReason::Forbidden,
            action: Some(action),
            customer_id: None,
        }
    }

    /// The customer exists but the actor may not see it (404).
    pub fn not_visible(actor: &Actor, customer: CustomerId) -> Self {
        Self {
            user_id: actor.user_id,
            role: actor.api_key.is_none().then_some(actor.role),
            reason: DenialReason::NotVisible,
            action: Some(Action::CustomersView),
            customer_id: Some(customer),
        }
    }

    /// The same denial, about a customer.
    pub fn about(mut self, customer: CustomerId) -> Self {
        self.customer_id = Some(customer);
        self
    }

    /// Whether the client is told 404 (the customer's existence stays hidden) or 403.
    pub fn hides_existence(&self) -> bool {
        self.reason == DenialReason::NotVisible
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Exactly the messages of a plain 403 and 404: a hidden customer must be
        // indistinguishable from a missing one.
        f.write_str(if self.hides_existence() {
            "not found"
        } else {
            "not allowed"
        })
    }
}

/// Records the denial a response carries, if any, as an `ACCESS_DENIED` event.
pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let observed = RequestMeta::observed(&parts);
    let path: String = parts.uri.path().chars().take(512).collect();
    let response = next.run(Request::from_parts(parts, body)).await;
    let Some(denial) = response.extensions().get::<Denial>().cloned() else {
        return response;
    };
    // IP and user agent are personal: encrypted in the log under the month's key.
    let meta = Metadata {
        actor_id: Some(denial.user_id),
        actor_role: denial.role,
        ..observed.anonymous()
    };
    let now = meta.occurred_at;
    let event = DomainEvent::Login(LoginEvent::AccessDenied {
        user_id: denial.user_id,
        path,
        reason: denial.reason,
        action: denial.action,
        customer_id: denial.customer_id,
        at: now,
    });
    metrics::counter!("egec_access_denied_total", "reason" => denial.reason.as_str()).increment(1);
    match state
        .bus
        .record(
            &security_stream_id(now),
            &denial.user_id.subject(),
            &meta,
            &[event],
        )
        .await
    {
        // Like any write, the refusal is in the read models (the audit log) once answered.
        Ok(position) => state.wait_for_write(Some(position)).await,
        // The refusal stands either way; losing its record is an operational failure.
        Err(e) => tracing::error!(error = %e, "recording an access denial failed"),
    }
    response
}
