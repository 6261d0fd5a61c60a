//! A stored event taken apart into what decoding needs: facts, personal ciphertexts, the
//! subject, and the metadata's fields. Built either from the `serde_json::Value`s of a
//! [`RecordedEvent`] or straight from the JSON text of a [`RawRecordedEvent`], which skips
//! building a `Value` tree per event (the bulk of a rebuild's parsing).
//!
//! Both constructors answer the same thing for the same stored event: the text is first
//! parsed into typed structs that accept only well-formed shapes, and anything else (a field
//! of an unexpected type, a duplicate key) falls back to the `Value` path, whose lenient
//! rules and error messages stay the only ones.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use egec_domain::encoding::{SplitPayload, split_payload_owned};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::CodecError;
use crate::store::{RawRecordedEvent, RecordedEvent};

/// The metadata's fields as stored (ids still text, personal values still ciphertext).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct StoredMetadata {
    pub actor_id: Option<String>,
    pub actor_role: Option<String>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub batch_id: Option<String>,
    pub occurred_at: Option<String>,
    pub personal: BTreeMap<String, String>,
    pub retention_subject: Option<String>,
}

impl StoredMetadata {
    /// The lenient reading of a metadata `Value`: an id of another type than a string or
    /// null is corrupt; a role, time or retention subject that is not a string is absent; a
    /// personal value that is not a string is skipped.
    pub(super) fn from_value(m: Value, position: i64) -> Result<Self, CodecError> {
        let Value::Object(mut m) = m else {
            return Ok(StoredMetadata::default());
        };
        let mut id = |k: &str| -> Result<Option<String>, CodecError> {
            match m.remove(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(CodecError::Corrupt {
                    position,
                    problem: k.to_owned(),
                }),
            }
        };
        let actor_id = id("actor_id")?;
        let correlation_id = id("correlation_id")?;
        let causation_id = id("causation_id")?;
        let batch_id = id("batch_id")?;
        let mut text = |k: &str| match m.remove(k) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let actor_role = text("actor_role");
        let occurred_at = text("occurred_at");
        let retention_subject = text("retention_subject");
        let personal = match m.remove("personal") {
            Some(Value::Object(p)) => p
                .into_iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k, s)),
                    _ => None,
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        Ok(StoredMetadata {
            actor_id,
            actor_role,
            correlation_id,
            causation_id,
            batch_id,
            occurred_at,
            personal,
            retention_subject,
        })
    }
}

/// A payload of the shape every writer stores; anything else is read through `Value`.
#[derive(Deserialize)]
struct StoredPayload {
    #[serde(default)]
    facts: Map<String, Value>,
    #[serde(default)]
    personal: BTreeMap<String, String>,
    #[serde(default)]
    subject: Option<String>,
}

/// A stored event taken apart, ready to be decrypted and decoded.
#[derive(Debug)]
pub struct ParsedEvent {
    pub(super) global_position: i64,
    pub(super) stream_id: String,
    pub(super) stream_version: i64,
    pub(super) event_id: Uuid,
    pub(super) command_id: Uuid,
    pub(super) event_type: String,
    pub(super) schema_version: i32,
    pub(super) recorded_at: DateTime<Utc>,
    pub(super) facts: Map<String, Value>,
    pub(super) personal: BTreeMap<String, String>,
    pub(super) subject: Option<String>,
    pub(super) metadata: StoredMetadata,
}

impl ParsedEvent {
    /// Takes a stored event's JSON text apart.
    pub fn parse(raw: RawRecordedEvent) -> Result<Self, CodecError> {
        let typed = (
            serde_json::from_str::<StoredPayload>(&raw.payload),
            serde_json::from_str::<StoredMetadata>(&raw.metadata),
        );
        let (payload, metadata) = match typed {
            (Ok(p), Ok(m)) => (p, m),
            _ => return Self::from_values(raw),
        };
        Ok(ParsedEvent {
            global_position: raw.global_position,
            stream_id: raw.stream_id,
            stream_version: raw.stream_version,
            event_id: raw.event_id,
            command_id: raw.command_id,
            event_type: raw.event_type,
            schema_version: raw.schema_version,
            recorded_at: raw.recorded_at,
            facts: payload.facts,
            personal: payload.personal,
            subject: payload.subject,
            metadata,
        })
    }

    /// The `Value` path for text that the typed structs did not accept.
    fn from_values(raw: RawRecordedEvent) -> Result<Self, CodecError> {
        let position = raw.global_position;
        let json = |text: &str, what: &str| {
            serde_json::from_str::<Value>(text).map_err(|e| CodecError::Corrupt {
                position,
                problem: format!("{what} is not JSON: {e}"),
            })
        };
        let payload = json(&raw.payload, "payload")?;
        let metadata = json(&raw.metadata, "metadata")?;
        Self::from_recorded(raw.with_values(payload, metadata, Vec::new(), Vec::new()))
    }

    /// Takes a stored event's `Value`s apart, moving what they hold.
    pub fn from_recorded(rec: RecordedEvent) -> Result<Self, CodecError> {
        let position = rec.global_position;
        let ((facts, personal), subject): (SplitPayload, Option<String>) =
            split_payload_owned(rec.payload)?;
        let metadata = StoredMetadata::from_value(rec.metadata, position)?;
        Ok(ParsedEvent {
            global_position: rec.global_position,
            stream_id: rec.stream_id,
            stream_version: rec.stream_version,
            event_id: rec.event_id,
            command_id: rec.command_id,
            event_type: rec.event_type,
            schema_version: rec.schema_version,
            recorded_at: rec.recorded_at,
            facts,
            personal,
            subject,
            metadata,
        })
    }

    pub fn position(&self) -> i64 {
        self.global_position
    }

    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The data subject whose key encrypts the payload's personal fields.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The payload's facts (never personal data).
    pub fn facts(&self) -> &Map<String, Value> {
        &self.facts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(payload: &str, metadata: &str) -> RawRecordedEvent {
        RawRecordedEvent {
            global_position: 7,
            stream_id: "customer-1".into(),
            stream_version: 1,
            event_id: Uuid::nil(),
            command_id: Uuid::nil(),
            event_type: "CustomerCreated".into(),
            schema_version: 2,
            payload: payload.into(),
            metadata: metadata.into(),
            recorded_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    /// What both constructors answer, in a form that can be compared.
    fn summary(p: Result<ParsedEvent, CodecError>) -> Result<String, String> {
        p.map(|p| {
            format!(
                "{:?} {:?} {:?} {:?}",
                p.facts, p.personal, p.subject, p.metadata
            )
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn parsing_the_text_answers_what_parsing_the_values_does() {
        let payloads = [
            json!({"facts": {"at": "2026-11-30T00:00:00Z", "n": [1, {"x": null}]}, "personal": {"email": "enc:1:1:abc"}, "subject": "customer-1"}),
            json!({"facts": {}, "subject": null}),
            json!({"facts": {}, "personal": {}, "subject": 5}),
            json!({"facts": null}),
            json!({"facts": {}, "personal": {"email": 1}}),
            json!({"personal": null}),
            json!([1, 2]),
        ];
        let metadatas = [
            json!({"actor_id": "01a22b60-7d13-7404-b29f-4de234190694", "actor_role": "agent", "correlation_id": "01a22b60-f1d2-74ec-82ac-3cb97b26bdf5", "causation_id": null, "occurred_at": "2026-11-30T07:35:03.378605Z", "personal": {"ip": "enc:1:1:x", "user_agent": "enc:1:1:y"}, "retention_subject": "retention-202611"}),
            json!({}),
            json!({"actor_id": 5}),
            json!({"actor_role": 3, "occurred_at": false, "retention_subject": ["x"]}),
            json!({"personal": {"ip": 1, "user_agent": "enc:1:1:y"}}),
            json!({"personal": "none", "batch_id": null}),
            json!("not an object"),
        ];
        for payload in &payloads {
            for metadata in &metadatas {
                let values = RecordedEvent {
                    global_position: 7,
                    stream_id: "customer-1".into(),
                    stream_version: 1,
                    event_id: Uuid::nil(),
                    command_id: Uuid::nil(),
                    event_type: "CustomerCreated".into(),
                    schema_version: 2,
                    payload: payload.clone(),
                    metadata: metadata.clone(),
                    recorded_at: DateTime::<Utc>::UNIX_EPOCH,
                    prev_hash: Vec::new(),
                    hash: Vec::new(),
                };
                let text = RawRecordedEvent::from(values.clone());
                assert_eq!(
                    summary(ParsedEvent::parse(text)),
                    summary(ParsedEvent::from_recorded(values)),
                    "payload {payload}, metadata {metadata}"
                );
            }
        }
    }

    #[test]
    fn a_duplicate_key_reads_as_the_value_path_reads_it() {
        let text = raw(
            r#"{"facts": {}, "subject": "customer-1", "subject": "customer-2"}"#,
            r#"{"actor_role": "agent", "actor_role": "admin"}"#,
        );
        let p = ParsedEvent::parse(text).expect("parsed");
        assert_eq!(p.subject(), Some("customer-2"));
        assert_eq!(p.metadata.actor_role.as_deref(), Some("admin"));
    }

    #[test]
    fn text_that_is_not_json_is_corrupt_not_a_panic() {
        let err = ParsedEvent::parse(raw("{", "{}")).expect_err("not JSON");
        assert!(err.to_string().contains("payload is not JSON"), "{err}");
    }
}
