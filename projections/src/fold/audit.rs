//! The fold of the `audit` projection: one row per event, whatever its type.

use egec_domain::audit::{describe, entity_of};
use egec_domain::event::Envelope;

use super::micros;
use crate::rows::AuditRow;

/// The audit row of any event.
pub fn audit_row(env: &Envelope) -> AuditRow {
    let (entity_type, entity_id) = entity_of(&env.event);
    AuditRow {
        position: env.position,
        event_id: env.event_id,
        occurred_at: micros(env.metadata.occurred_at),
        action: env.event.action().to_owned(),
        entity_type: entity_type.to_owned(),
        entity_id,
        actor_id: env.metadata.actor_id.map(|a| a.as_uuid()),
        actor_role: env.metadata.actor_role.map(|r| r.as_str().to_owned()),
        description: describe(&env.event),
    }
}

/// An event is recorded once: a row that exists already stays as it is.
pub fn apply_audit(
    row: Option<AuditRow>,
    event: &AuditRow,
    _stream_version: i64,
    _position: i64,
) -> Option<AuditRow> {
    Some(row.unwrap_or_else(|| event.clone()))
}
