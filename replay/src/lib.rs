//! Compliance replay: rebuilding read models, verifying the hash chain, and reading any
//! stream's history as it was at any time.

use chrono::{DateTime, Utc};
use egec_commands::handler::CommandBus;
use egec_commands::store::verify::verify_chain;
use egec_commands::store::{EventLog, ReadBound, StoreError};
use egec_domain::event::Envelope;
use serde::Serialize;
use serde_json::{Value, json};

/// The outcome of a hash-chain verification, in the shape `GET /api/audit/verify` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub ok: bool,
    pub events_checked: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_position: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Checks every link of the hash chain over the whole log.
pub async fn verify(log: &dyn EventLog) -> Result<Verification, StoreError> {
    let r = verify_chain(log, 5_000).await?;
    Ok(Verification {
        ok: r.ok,
        events_checked: r.events_checked,
        first_bad_position: r.first_bad_position,
        problem: r.problem,
    })
}

/// One decoded event as a JSON object: position, stream, type, actor, time and the event's
/// facts and (decrypted, or `[ERASED]`) personal fields in their persisted shape.
pub fn envelope_json(env: &Envelope) -> Value {
    let enc = env.event.encode();
    json!({
        "position": env.position,
        "stream_id": env.stream_id,
        "version": env.stream_version,
        "event_id": env.event_id,
        "event_type": enc.event_type,
        "schema_version": enc.schema_version,
        "action": env.event.action(),
        "recorded_at": env.recorded_at,
        "occurred_at": env.metadata.occurred_at,
        "actor": {
            "id": env.metadata.actor_id.map(|a| a.as_uuid()),
            "role": env.metadata.actor_role.map(|r| r.as_str()),
        },
        "correlation_id": env.metadata.correlation_id,
        "facts": enc.facts,
        "personal": enc.personal,
    })
}

/// A stream's events up to `as_of` (all when `None`), one JSON document per event.
pub async fn history(
    bus: &CommandBus,
    stream: &str,
    as_of: Option<DateTime<Utc>>,
) -> anyhow::Result<Vec<String>> {
    let bound = as_of.map(ReadBound::Time).unwrap_or(ReadBound::None);
    let events = bus.stream_events(stream, bound).await?;
    Ok(events
        .iter()
        .map(|e| envelope_json(e).to_string())
        .collect())
}
