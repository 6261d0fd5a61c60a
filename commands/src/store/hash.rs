//! The hash chain over the log: `hash = SHA-256(prev_hash ‖ canonical bytes of the event)`.
//!
//! The canonical bytes cover everything stored about the event, ciphertext included, so the
//! chain still verifies after a subject's key is destroyed. JSON is canonicalised by
//! serde_json's `Value` (object keys sorted, no insignificant whitespace), which both backends
//! return unchanged after a round trip because payloads hold no floating-point numbers.

use sha2::{Digest, Sha256};

use super::types::RecordedEvent;

/// The hash the first event links to.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// Fields of an event that the hash covers.
pub struct HashInput<'a> {
    pub global_position: i64,
    pub stream_id: &'a str,
    pub stream_version: i64,
    pub event_id: &'a uuid::Uuid,
    pub command_id: &'a uuid::Uuid,
    pub event_type: &'a str,
    pub schema_version: i32,
    /// The payload's canonical JSON text (`Value::to_string`).
    pub payload: &'a str,
    /// The metadata's canonical JSON text.
    pub metadata: &'a str,
    pub recorded_at_micros: i64,
}

pub fn link(prev_hash: &[u8], e: &HashInput<'_>) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev_hash);
    // Length-prefix every variable field so no two different events share canonical bytes.
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(&e.global_position.to_be_bytes());
    field(e.stream_id.as_bytes());
    field(&e.stream_version.to_be_bytes());
    field(e.event_id.as_bytes());
    field(e.command_id.as_bytes());
    field(e.event_type.as_bytes());
    field(&e.schema_version.to_be_bytes());
    field(e.payload.as_bytes());
    field(e.metadata.as_bytes());
    field(&e.recorded_at_micros.to_be_bytes());
    h.finalize().to_vec()
}

/// Recomputes the hash of a stored event from its stored fields and its stored predecessor.
pub fn recompute(prev_hash: &[u8], e: &RecordedEvent) -> Vec<u8> {
    link(
        prev_hash,
        &HashInput {
            global_position: e.global_position,
            stream_id: &e.stream_id,
            stream_version: e.stream_version,
            event_id: &e.event_id,
            command_id: &e.command_id,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            payload: &e.payload.to_string(),
            metadata: &e.metadata.to_string(),
            recorded_at_micros: e.recorded_at.timestamp_micros(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical bytes are a contract with every log already written: a change to them
    /// would make old logs fail verification. This pins one link.
    #[test]
    fn the_hash_of_a_known_event_does_not_change() {
        let event_id = uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        let command_id = uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002);
        let payload = serde_json::json!({ "name": "enc:v1:abc", "country": "GB", "n": 3 });
        let metadata = serde_json::json!({ "actor": null, "ip": "enc:v1:ip" });
        let hash = link(
            &GENESIS,
            &HashInput {
                global_position: 7,
                stream_id: "customer-0190",
                stream_version: 2,
                event_id: &event_id,
                command_id: &command_id,
                event_type: "CustomerUpdated",
                schema_version: 1,
                payload: &payload.to_string(),
                metadata: &metadata.to_string(),
                recorded_at_micros: 1_764_460_800_000_000,
            },
        );
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "c8c57804637a11c3360c2c8bcb144de3a42c32accb2ce4e826aeaff49eaa449a"
        );
    }
}
