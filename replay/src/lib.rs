//! Compliance replay: rebuilding read models, verifying the hash chain, and reading any
//! stream's history as it was at any time.

use chrono::{DateTime, Utc};
use egec_commands::handler::CommandBus;
use egec_commands::store::verify::verify_chain;
use egec_commands::store::{EventLog, ReadBound, StoreError};
use egec_domain::encoding::DecryptedEvent;
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

/// One event as a JSON object: position, stream, type, actor, time and the event's facts and
/// personal fields in their persisted shape, upcast to the current schema. Personal fields
/// are decrypted (or `[ERASED]` once the subject's key is destroyed) and shown in clear when
/// `clear`, masked by kind otherwise; credentials (password hashes, second-factor secrets)
/// are never shown (see `egec_domain::masking::field`).
pub fn envelope_json(env: &Envelope, decrypted: &DecryptedEvent, clear: bool) -> Value {
    let personal: serde_json::Map<String, Value> = decrypted
        .personal
        .iter()
        .map(|(k, v)| {
            let shown = egec_domain::masking::field(k, v.shown(), clear);
            (k.clone(), Value::String(shown))
        })
        .collect();
    json!({
        "position": env.position,
        "stream_id": env.stream_id,
        "version": env.stream_version,
        "event_id": env.event_id,
        "event_type": decrypted.event_type,
        "schema_version": decrypted.schema_version,
        "action": env.event.action(),
        "recorded_at": env.recorded_at,
        "occurred_at": env.metadata.occurred_at,
        "actor": {
            "id": env.metadata.actor_id.map(|a| a.as_uuid()),
            "role": env.metadata.actor_role.map(|r| r.as_str()),
        },
        "correlation_id": env.metadata.correlation_id,
        // Security metadata: decrypted, `[EXPIRED]` once retention destroyed its month's key.
        "ip": env.metadata.ip.as_ref().map(|v| v.shown()),
        "user_agent": env.metadata.user_agent.as_ref().map(|v| v.shown()),
        "facts": decrypted.facts,
        "personal": personal,
    })
}

/// A stream's events up to `as_of` (all when `None`), one JSON document per event, personal
/// fields in clear (the operator holds the master key anyway) and secrets redacted.
pub async fn history(
    bus: &CommandBus,
    stream: &str,
    as_of: Option<DateTime<Utc>>,
) -> anyhow::Result<Vec<String>> {
    Ok(history_values(bus, stream, as_of, true)
        .await?
        .into_iter()
        .map(|v| v.to_string())
        .collect())
}

/// A stream's events up to `as_of` (all when `None`) as JSON values, personal fields in clear
/// or masked (see [`envelope_json`]).
pub async fn history_values(
    bus: &CommandBus,
    stream: &str,
    as_of: Option<DateTime<Utc>>,
    clear: bool,
) -> anyhow::Result<Vec<Value>> {
    let bound = as_of.map(ReadBound::Time).unwrap_or(ReadBound::None);
    let mut lines = Vec::new();
    for rec in bus.log().read_stream(stream, 1, bound).await? {
        let decrypted = bus.codec().decrypt(&rec).await?;
        let env = bus
            .codec()
            .decode_decrypted(&rec, decrypted.clone())
            .await?;
        lines.push(envelope_json(&env, &decrypted, clear));
    }
    Ok(lines)
}
