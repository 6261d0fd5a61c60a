//! The persisted shape of events, kept apart from the in-memory enums.
//!
//! Every stored payload is `{"facts": {…}, "personal": {…}}`. `facts` holds what is not
//! personal (ids, status, times) and stays readable forever, so analytics and history survive
//! an erasure. `personal` maps a field name to a string; the write side encrypts each of those
//! strings under the data subject's key before it reaches the log, and the read side hands
//! them back here decrypted, or as [`Personal::Erased`] once the key is gone. Because the
//! split is structural, the crypto layer needs no knowledge of individual event types.
//!
//! Old schema versions are brought up to date by [`upcast`] on every read path, after
//! decryption (field names are part of each ciphertext's associated data, so renames must
//! happen on plaintext).

use crate::personal::Personal;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// An event in its persisted shape, before encryption (write side) or after decryption
/// (read side).
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded<P> {
    pub event_type: String,
    pub schema_version: i32,
    pub facts: Map<String, Value>,
    pub personal: BTreeMap<String, P>,
}

/// What the write side produces: personal values in clear, about to be encrypted.
pub type EncodedEvent = Encoded<String>;
/// What the read side hands to decoding: personal values decrypted or erased.
pub type DecryptedEvent = Encoded<Personal<String>>;

impl<P> Encoded<P> {
    pub fn new(event_type: &str, schema_version: i32) -> Self {
        Self {
            event_type: event_type.to_owned(),
            schema_version,
            facts: Map::new(),
            personal: BTreeMap::new(),
        }
    }

    pub fn fact(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.facts.insert(key.to_owned(), value.into());
        self
    }
}

impl EncodedEvent {
    pub fn personal_field(mut self, key: &str, value: Option<&str>) -> Self {
        if let Some(v) = value {
            self.personal.insert(key.to_owned(), v.to_owned());
        }
        self
    }

    /// The read-side view of an event that was never encrypted (used by pure tests).
    pub fn into_decrypted(self) -> DecryptedEvent {
        Encoded {
            event_type: self.event_type,
            schema_version: self.schema_version,
            facts: self.facts,
            personal: self
                .personal
                .into_iter()
                .map(|(k, v)| (k, Personal::Known(v)))
                .collect(),
        }
    }
}

/// The persisted payload JSON for a set of facts and (already encrypted) personal strings.
pub fn payload_json(facts: &Map<String, Value>, personal: &BTreeMap<String, String>) -> Value {
    let personal: Map<String, Value> = personal
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut m = Map::new();
    m.insert("facts".into(), Value::Object(facts.clone()));
    m.insert("personal".into(), Value::Object(personal));
    Value::Object(m)
}

/// The two halves of a stored payload: facts, and personal strings as stored.
pub type SplitPayload = (Map<String, Value>, BTreeMap<String, String>);

/// Splits a stored payload back into facts and personal strings.
pub fn split_payload(payload: &Value) -> Result<SplitPayload, DecodeError> {
    let obj = payload
        .as_object()
        .ok_or_else(|| DecodeError::new("payload is not an object"))?;
    let facts = match obj.get("facts") {
        Some(Value::Object(f)) => f.clone(),
        None => Map::new(),
        Some(_) => return Err(DecodeError::new("facts is not an object")),
    };
    let mut personal = BTreeMap::new();
    match obj.get("personal") {
        Some(Value::Object(p)) => {
            for (k, v) in p {
                let s = v
                    .as_str()
                    .ok_or_else(|| DecodeError::new("personal value is not a string"))?;
                personal.insert(k.clone(), s.to_owned());
            }
        }
        None => {}
        Some(_) => return Err(DecodeError::new("personal is not an object")),
    }
    Ok((facts, personal))
}

/// [`split_payload`] for a payload the caller owns: the facts and strings are moved out
/// instead of copied (a rebuild splits a million payloads), and the payload's `subject`
/// comes with them when it is a string.
pub fn split_payload_owned(payload: Value) -> Result<(SplitPayload, Option<String>), DecodeError> {
    let Value::Object(mut obj) = payload else {
        return Err(DecodeError::new("payload is not an object"));
    };
    let facts = match obj.remove("facts") {
        Some(Value::Object(f)) => f,
        None => Map::new(),
        Some(_) => return Err(DecodeError::new("facts is not an object")),
    };
    let mut personal = BTreeMap::new();
    match obj.remove("personal") {
        Some(Value::Object(p)) => {
            for (k, v) in p {
                let Value::String(s) = v else {
                    return Err(DecodeError::new("personal value is not a string"));
                };
                personal.insert(k, s);
            }
        }
        None => {}
        Some(_) => return Err(DecodeError::new("personal is not an object")),
    }
    let subject = match obj.remove("subject") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    Ok(((facts, personal), subject))
}

/// A stored event could not be turned back into a domain event: the log holds something this
/// build does not understand. This is data corruption or a missing upcaster, never user error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode event: {0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// Domain events that know their persisted shape.
pub trait EventCodec: Sized {
    fn encode(&self) -> EncodedEvent;
    /// Decodes an event already upcast to the current schema version.
    fn decode(e: &DecryptedEvent) -> Result<Self, DecodeError>;
}

// Small accessors shared by the event codecs.

pub fn fact_str<'a>(e: &'a DecryptedEvent, key: &str) -> Result<&'a str, DecodeError> {
    e.facts
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| DecodeError(format!("{}: missing fact {key}", e.event_type)))
}

pub fn fact_opt_str<'a>(e: &'a DecryptedEvent, key: &str) -> Option<&'a str> {
    e.facts.get(key).and_then(Value::as_str)
}

pub fn fact_time(
    e: &DecryptedEvent,
    key: &str,
) -> Result<chrono::DateTime<chrono::Utc>, DecodeError> {
    let s = fact_str(e, key)?;
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| DecodeError(format!("{}: bad time in {key}", e.event_type)))
}

pub fn fact_uuid(e: &DecryptedEvent, key: &str) -> Result<uuid::Uuid, DecodeError> {
    uuid::Uuid::parse_str(fact_str(e, key)?)
        .map_err(|_| DecodeError(format!("{}: bad uuid in {key}", e.event_type)))
}

/// A personal field parsed into its type; `None` when absent.
pub fn personal_opt<T>(
    e: &DecryptedEvent,
    key: &str,
    parse: impl Fn(&str) -> Result<T, crate::values::Invalid>,
) -> Result<Option<Personal<T>>, DecodeError> {
    match e.personal.get(key) {
        None => Ok(None),
        Some(Personal::Erased) => Ok(Some(Personal::Erased)),
        Some(Personal::Expired) => Ok(Some(Personal::Expired)),
        Some(Personal::Known(s)) => parse(s)
            .map(|v| Some(Personal::Known(v)))
            .map_err(|err| DecodeError(format!("{}: {key}: {err}", e.event_type))),
    }
}

pub fn personal_req<T>(
    e: &DecryptedEvent,
    key: &str,
    parse: impl Fn(&str) -> Result<T, crate::values::Invalid>,
) -> Result<Personal<T>, DecodeError> {
    personal_opt(e, key, parse)?
        .ok_or_else(|| DecodeError(format!("{}: missing personal field {key}", e.event_type)))
}

pub fn time_fact(t: chrono::DateTime<chrono::Utc>) -> Value {
    Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// One step that rewrites an old schema version of an event type into the next.
pub struct Upcaster {
    pub event_type: &'static str,
    pub from_version: i32,
    pub apply: fn(DecryptedEvent) -> Result<DecryptedEvent, DecodeError>,
}

/// Every upcaster the domain knows, applied in a chain until the event is current.
pub fn upcasters() -> impl Iterator<Item = &'static Upcaster> {
    crate::customer::UPCASTERS
        .iter()
        .chain(crate::security::UPCASTERS)
}

/// Brings an event up to the current schema version of its type.
pub fn upcast(mut e: DecryptedEvent) -> Result<DecryptedEvent, DecodeError> {
    // Bounded: each step raises the version by one, and no event type has more versions.
    for _ in 0..64 {
        match upcasters()
            .find(|u| u.event_type == e.event_type && u.from_version == e.schema_version)
        {
            Some(u) => {
                let before = e.schema_version;
                e = (u.apply)(e)?;
                if e.schema_version <= before {
                    return Err(DecodeError::new(
                        "upcaster did not raise the schema version",
                    ));
                }
            }
            None => return Ok(e),
        }
    }
    Err(DecodeError::new("upcaster chain too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_owned_split_answers_what_the_borrowed_one_does() {
        let payloads = [
            json!({"facts": {"a": 1, "b": [true]}, "personal": {"email": "enc:1:1:x"}, "subject": "customer-1"}),
            json!({"facts": {"a": 1}}),
            json!({"personal": {}, "subject": 7}),
            json!({"facts": [], "personal": {}}),
            json!({"facts": {}, "personal": {"email": 3}}),
            json!({"facts": {}, "personal": "x"}),
            json!(["not", "an", "object"]),
        ];
        for p in payloads {
            let subject = p.get("subject").and_then(Value::as_str).map(str::to_owned);
            let borrowed = split_payload(&p).map(|split| (split, subject));
            assert_eq!(split_payload_owned(p.clone()), borrowed, "payload {p}");
        }
    }
}
