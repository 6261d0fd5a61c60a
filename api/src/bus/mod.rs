//! The log published to NATS JetStream (`NATS_URL`).
//!
//! One node at a time (the holder of a PostgreSQL session advisory lock; on SQLite the one
//! process) streams the log in position order to the JetStream stream `EGEC_NATS_STREAM`
//! (default `EGEC_EVENTS`), one message per event on
//! `<EGEC_NATS_SUBJECT_PREFIX>.<category>.<event_type>` with `Nats-Msg-Id` = the event id.
//! The message body is the stored record as it is in the log (personal fields stay
//! encrypted: nothing is decoded or decrypted here). The last acked position is the
//! checkpoint, committed after the acks; delivery is at-least-once, de-duplicated by the
//! stream's duplicate window, and never reordered (see [`publisher`]).
//!
//! - [`lease`]: leadership and the checkpoint table (migrations `V4__bus_checkpoints`,
//!   SQLite `V3__bus_checkpoints`).
//! - [`publisher`]: the loop (stream set-up, reconciliation, pipelined publishing).

pub mod lease;
pub mod publisher;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use egec_commands::store::RecordedEvent;
use serde::{Deserialize, Serialize};

pub use publisher::spawn;

/// Stream settings (`EGEC_NATS_*`), read by `config.rs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// JetStream stream name (`EGEC_NATS_STREAM`, default `EGEC_EVENTS`).
    pub stream: String,
    /// Subject prefix (`EGEC_NATS_SUBJECT_PREFIX`, default `egec.events`); the stream takes
    /// `<prefix>.>`.
    pub subject_prefix: String,
    /// Messages older than this are dropped by the server (`EGEC_NATS_MAX_AGE_DAYS`, default
    /// 30; zero = kept until `max_bytes`).
    pub max_age: Duration,
    /// Oldest messages are dropped past this size (`EGEC_NATS_MAX_BYTES`; zero = no limit).
    pub max_bytes: u64,
    /// Re-publishes of an event id within this window are acked as duplicates and not stored
    /// again (`EGEC_NATS_DUPLICATE_WINDOW_SECONDS`, default 120).
    pub duplicate_window: Duration,
    /// Replicas in a JetStream cluster (`EGEC_NATS_REPLICAS`, default 1).
    pub replicas: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            stream: "EGEC_EVENTS".to_owned(),
            subject_prefix: "egec.events".to_owned(),
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_bytes: 0,
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
        }
    }
}

/// Whether `name` is a valid JetStream stream name for us: letters, digits, `-` and `_`.
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `prefix` is one or more dot-separated subject tokens without wildcards.
pub fn valid_subject_prefix(prefix: &str) -> bool {
    prefix.len() <= 128 && prefix.split('.').all(|t| !t.is_empty() && is_token(t))
}

fn is_token(t: &str) -> bool {
    t.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One subject token from arbitrary text: letters, digits, `-` and `_` kept, anything else
/// (dots, spaces, wildcards) becomes `_`; empty becomes `_`.
pub fn token(text: &str) -> String {
    if text.is_empty() {
        return "_".to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The category of a stream id: its prefix before the first `-` (`customer-…` → `customer`).
pub fn category(stream_id: &str) -> String {
    token(stream_id.split('-').next().unwrap_or(stream_id))
}

/// `<prefix>.<category>.<event_type>`.
pub fn subject(prefix: &str, event: &RecordedEvent) -> String {
    format!(
        "{prefix}.{}.{}",
        category(&event.stream_id),
        token(&event.event_type)
    )
}

/// The body of a message: the stored record as it is (payload and metadata with their
/// personal fields still encrypted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusMessage {
    pub position: i64,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
}

impl BusMessage {
    pub fn of(event: &RecordedEvent) -> Self {
        Self {
            position: event.global_position,
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version,
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            payload: event.payload.clone(),
            metadata: event.metadata.clone(),
            recorded_at: event.recorded_at,
        }
    }
}

/// [`BusMessage`] borrowed from the stored record, serialised without copying it.
#[derive(Serialize)]
struct BusMessageRef<'a> {
    position: i64,
    stream_id: &'a str,
    stream_version: i64,
    event_id: uuid::Uuid,
    event_type: &'a str,
    schema_version: i32,
    payload: &'a serde_json::Value,
    metadata: &'a serde_json::Value,
    recorded_at: chrono::DateTime<chrono::Utc>,
}

/// The JSON body of the message for a stored record (the shape of [`BusMessage`]).
pub fn body(event: &RecordedEvent) -> Vec<u8> {
    serde_json::to_vec(&BusMessageRef {
        position: event.global_position,
        stream_id: &event.stream_id,
        stream_version: event.stream_version,
        event_id: event.event_id,
        event_type: &event.event_type,
        schema_version: event.schema_version,
        payload: &event.payload,
        metadata: &event.metadata,
        recorded_at: event.recorded_at,
    })
    .expect("JSON values serialise")
}

/// What the publisher of this node is doing, for tests and operators.
#[derive(Debug, Default)]
pub struct Status {
    leading: AtomicBool,
    position: AtomicI64,
    errors: AtomicU64,
}

impl Status {
    /// Whether this node holds the publisher's lock.
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }
    /// The last position this node committed as acked.
    pub fn position(&self) -> i64 {
        self.position.load(Ordering::Acquire)
    }
    /// Failures counted by this node's publisher (also in `egec_publisher_errors_total`).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Acquire)
    }
    fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::AcqRel);
        metrics::counter!("egec_publisher_errors_total").increment(1);
    }
    fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Release);
        metrics::gauge!("egec_publisher_leader").set(if leading { 1.0 } else { 0.0 });
    }
    fn set_position(&self, position: i64) {
        self.position.store(position, Ordering::Release);
        metrics::gauge!("egec_publisher_position").set(position as f64);
    }
}

/// The running publisher. Dropping it stops it (and so releases its lock).
pub struct Handle {
    task: tokio::task::JoinHandle<()>,
    status: Arc<Status>,
}

impl Handle {
    pub fn status(&self) -> &Status {
        &self.status
    }
    /// Stops the publisher at once, as if its process died: in-flight messages are
    /// abandoned and the lock's connection is closed.
    pub fn abort(&self) {
        self.task.abort();
    }
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_made_of_valid_tokens() {
        assert_eq!(category("customer-0190"), "customer");
        assert_eq!(category("reveals-202611"), "reveals");
        assert_eq!(category("a.b*c>"), "a_b_c_");
        assert_eq!(token(""), "_");
        assert_eq!(token("Customer Created.v2"), "Customer_Created_v2");
        assert!(valid_subject_prefix("egec.events"));
        assert!(!valid_subject_prefix("egec..events"));
        assert!(!valid_subject_prefix("egec.>"));
        assert!(valid_stream_name("EGEC_EVENTS"));
        assert!(!valid_stream_name("EGEC.EVENTS"));
    }

    #[test]
    fn the_body_is_the_stored_record() {
        let event = RecordedEvent {
            global_position: 7,
            stream_id: "customer-1".into(),
            stream_version: 2,
            event_id: uuid::Uuid::now_v7(),
            command_id: uuid::Uuid::now_v7(),
            event_type: "CustomerUpdated".into(),
            schema_version: 1,
            payload: serde_json::json!({"facts": {}, "personal": {"email": {"c": "x"}}}),
            metadata: serde_json::json!({"ip": {"c": "y"}}),
            recorded_at: chrono::Utc::now(),
            prev_hash: vec![],
            hash: vec![],
        };
        let parsed: BusMessage = serde_json::from_slice(&body(&event)).unwrap();
        assert_eq!(parsed, BusMessage::of(&event));
        assert_eq!(
            subject("egec.events", &event),
            "egec.events.customer.CustomerUpdated"
        );
    }
}
