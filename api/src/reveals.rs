//! Passport reveals: every read that shows a passport number in clear is recorded as
//! `GdprPassportRevealed` before the data leaves, so "who looked at this customer's passport"
//! is answered by the log (`GET /api/audit?entity_id=<customer>&action=PASSPORT_REVEALED`).
//!
//! Recording comes first and fails closed: a read whose reveal cannot be recorded answers 500
//! and shows nothing. Write responses (create, update, assignment) echo the record the caller
//! is changing; the write itself is in the log with its actor, so they record no reveal.

use crate::auth::actor::Actor;
use crate::error::ApiError;
use crate::routes::meta::RequestMeta;
use crate::state::AppState;
use crate::views::customer::CustomerView;
use chrono::Utc;
use egec_domain::CustomerId;
use egec_domain::event::DomainEvent;
use egec_domain::gdpr::{GdprEvent, RevealVia, reveals_stream_id};
use egec_domain::personal::{ERASED, EXPIRED};

/// Whether a view shows a passport number in clear: there is one, and it is neither masked
/// (the caller may not see it) nor a marker left by erasure or retention.
pub fn shows_passport(view: &CustomerView, reveal: bool) -> bool {
    reveal
        && view
            .passport_number
            .as_deref()
            .is_some_and(|p| p != ERASED && p != EXPIRED)
}

/// Records that `customers` had their passport numbers shown to the actor, in one append
/// (one event per customer, so each is found by its own id). Nothing to record, no write.
pub async fn record(
    state: &AppState,
    actor: &Actor,
    meta: &RequestMeta,
    customers: impl IntoIterator<Item = CustomerId>,
    via: RevealVia,
) -> Result<(), ApiError> {
    let at = Utc::now();
    let mut seen = std::collections::HashSet::new();
    let events: Vec<DomainEvent> = customers
        .into_iter()
        .filter(|c| seen.insert(*c))
        .map(|customer_id| {
            DomainEvent::Gdpr(GdprEvent::PassportRevealed {
                customer_id,
                via,
                at,
            })
        })
        .collect();
    if events.is_empty() {
        return Ok(());
    }
    state
        .bus
        .record(
            &reveals_stream_id(at),
            &actor.user_id.subject(),
            &meta.metadata(actor),
            &events,
        )
        .await
        .map_err(ApiError::internal)?;
    Ok(())
}
