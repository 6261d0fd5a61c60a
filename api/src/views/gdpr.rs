//! JSON shapes of the GDPR export and of the erasure certificate.
//!
//! The export is the data subject's own copy of everything held on them, so nothing in it is
//! masked: the caller (superadmin or admin) acts on the subject's behalf.

use chrono::{DateTime, Utc};
use egec_domain::event::{DomainEvent, Envelope};
use egec_domain::followup::FollowupEvent;
use egec_domain::personal::ERASED;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// Who erased the customer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CertificateActor {
    pub id: Option<Uuid>,
    pub role: Option<String>,
}

/// The head of the log's hash chain when the certificate was issued: it commits to every
/// event up to `position`, the erasure event included.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChainHeadView {
    pub position: i64,
    /// Hex of the SHA-256 chain hash at `position`.
    pub hash: String,
}

/// What an erasure did, as proof for the data subject and the auditor.
///
/// Every field but `destroyed_key_fingerprints` and `hash_chain_head` is read from the first
/// erasure event itself, so repeating the erasure answers with the same facts. The
/// fingerprints are those of the keys destroyed by *this* call: empty on a repeat, since the
/// keys were already gone (the store keeps no trace of a destroyed key, not even its
/// fingerprint). The chain head is the one at the time of the answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErasureCertificate {
    pub customer_id: Uuid,
    pub erased_at: DateTime<Utc>,
    pub actor: CertificateActor,
    pub reason: String,
    /// Log position of the (first) `CustomerErased` event.
    pub erasure_position: i64,
    pub destroyed_key_fingerprints: Vec<String>,
    pub hash_chain_head: ChainHeadView,
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The history of follow-up streams: each event with its follow-up, actor and time, and
/// what it recorded (the note unmasked, or `[ERASED]` once the customer was erased).
pub fn followup_history_items(events: &[Envelope]) -> Vec<Value> {
    events
        .iter()
        .filter_map(|env| {
            let DomainEvent::Followup(e) = &env.event else {
                return None;
            };
            let details = match e {
                FollowupEvent::Scheduled(s) => json!({
                    "due_at": s.due_at,
                    "note": s.note.known().map_or(ERASED, |n| n.as_str()),
                    "assigned_to": s.assigned_to.as_uuid(),
                }),
                FollowupEvent::Completed { completed_by, .. } => json!({
                    "completed_by": completed_by.as_uuid(),
                }),
            };
            Some(json!({
                "position": env.position,
                "followup_id": e.followup_id().as_uuid(),
                "version": env.stream_version,
                "action": e.action(),
                "occurred_at": env.metadata.occurred_at,
                "actor": {
                    "id": env.metadata.actor_id.map(|a| a.as_uuid()),
                    "role": env.metadata.actor_role.map(|r| r.as_str()),
                },
                "details": details,
            }))
        })
        .collect()
}
