//! Upcasters for customer events.
//!
//! `CustomerCreated` v1 is the shape the legacy Node/MongoDB system's records take when they
//! are carried into the log (camelCase personal fields, capitalised status, no assignment
//! list). v2 is the current shape.

use crate::encoding::{DecodeError, DecryptedEvent, Upcaster};
use serde_json::Value;

pub(crate) static UPCASTERS: &[Upcaster] = &[Upcaster {
    event_type: super::events::CREATED,
    from_version: 1,
    apply: created_v1_to_v2,
}];

fn created_v1_to_v2(mut e: DecryptedEvent) -> Result<DecryptedEvent, DecodeError> {
    for (old, new) in [
        ("customerName", "name"),
        ("customerEmail", "email"),
        ("customerPhone", "phone"),
        ("passportNumber", "passport_number"),
        ("customerNotes", "notes"),
    ] {
        if let Some(v) = e.personal.remove(old) {
            e.personal.insert(new.to_owned(), v);
        }
    }
    let status = match e.facts.get("status").and_then(Value::as_str) {
        Some(s) => s.to_lowercase(),
        None => "new".to_owned(),
    };
    e.facts.insert("status".into(), Value::String(status));
    e.facts
        .entry("assigned_agent_ids")
        .or_insert_with(|| Value::Array(vec![]));
    e.schema_version = 2;
    Ok(e)
}
