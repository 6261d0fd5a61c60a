//! The bulk-edit batch: a small aggregate in its own stream (`bulk-<batch_id>`) that records
//! which customers a bulk edit changed and whether it was undone, so an undo knows whom to
//! restore and can run only once.
//!
//! The changes themselves are customer events (`CustomerBulkEdited`) carrying the batch id
//! in their metadata; this stream holds no personal data.

use crate::CustomerId;
use crate::UserId;
use crate::customer::CustomerStatus;
use crate::encoding::*;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// The stream of a batch.
pub fn bulk_stream_id(batch_id: Uuid) -> String {
    format!("bulk-{batch_id}")
}

/// What a bulk edit sets on each customer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BulkSet {
    pub status: Option<CustomerStatus>,
    pub assigned_agent_ids: Option<Vec<UserId>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BulkEvent {
    /// The batch changed these customers.
    Applied {
        batch_id: Uuid,
        customer_ids: Vec<CustomerId>,
        set: BulkSet,
        at: DateTime<Utc>,
    },
    /// The batch was undone by the batch `undo_batch_id` (the id the restoring customer
    /// events carry).
    Undone {
        batch_id: Uuid,
        undo_batch_id: Uuid,
        at: DateTime<Utc>,
    },
}

pub const APPLIED: &str = "BulkEditApplied";
pub const UNDONE: &str = "BulkEditUndone";

impl BulkEvent {
    pub fn batch_id(&self) -> Uuid {
        match self {
            BulkEvent::Applied { batch_id, .. } | BulkEvent::Undone { batch_id, .. } => *batch_id,
        }
    }

    pub fn action(&self) -> &'static str {
        match self {
            BulkEvent::Applied { .. } => "BULK_EDIT_APPLIED",
            BulkEvent::Undone { .. } => "BULK_EDIT_UNDONE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum BulkState {
    #[default]
    Absent,
    Applied {
        batch_id: Uuid,
        customer_ids: Vec<CustomerId>,
    },
    Undone,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BulkCommand {
    Record {
        batch_id: Uuid,
        customer_ids: Vec<CustomerId>,
        set: BulkSet,
    },
    /// Claims the undo. Appended before any customer is restored, so two concurrent undos
    /// cannot both run: the stream's version check lets one through.
    Undo { undo_batch_id: Uuid },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BulkError {
    #[error("no such bulk edit")]
    NotFound,
    #[error("the bulk edit is already recorded")]
    AlreadyRecorded,
    #[error("the bulk edit was already undone")]
    AlreadyUndone,
}

pub fn decide(
    state: &BulkState,
    command: BulkCommand,
    now: DateTime<Utc>,
) -> Result<Vec<BulkEvent>, BulkError> {
    match (state, command) {
        (
            BulkState::Absent,
            BulkCommand::Record {
                batch_id,
                customer_ids,
                set,
            },
        ) => Ok(vec![BulkEvent::Applied {
            batch_id,
            customer_ids,
            set,
            at: now,
        }]),
        (_, BulkCommand::Record { .. }) => Err(BulkError::AlreadyRecorded),
        (BulkState::Absent, BulkCommand::Undo { .. }) => Err(BulkError::NotFound),
        (BulkState::Undone, BulkCommand::Undo { .. }) => Err(BulkError::AlreadyUndone),
        (BulkState::Applied { batch_id, .. }, BulkCommand::Undo { undo_batch_id }) => {
            Ok(vec![BulkEvent::Undone {
                batch_id: *batch_id,
                undo_batch_id,
                at: now,
            }])
        }
    }
}

pub fn evolve(state: BulkState, event: &BulkEvent) -> BulkState {
    match (state, event) {
        (
            BulkState::Absent,
            BulkEvent::Applied {
                batch_id,
                customer_ids,
                ..
            },
        ) => BulkState::Applied {
            batch_id: *batch_id,
            customer_ids: customer_ids.clone(),
        },
        (BulkState::Applied { .. }, BulkEvent::Undone { .. }) => BulkState::Undone,
        (s, _) => s,
    }
}

fn ids_json<T: ToString>(ids: &[T]) -> Value {
    Value::Array(ids.iter().map(|i| Value::String(i.to_string())).collect())
}

fn ids_from<T: std::str::FromStr>(e: &DecryptedEvent, key: &str) -> Result<Vec<T>, DecodeError> {
    match e.facts.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| DecodeError(format!("{key}: bad id")))
            })
            .collect(),
        _ => Err(DecodeError(format!("{key} is not an array"))),
    }
}

impl EventCodec for BulkEvent {
    fn encode(&self) -> EncodedEvent {
        match self {
            BulkEvent::Applied {
                batch_id,
                customer_ids,
                set,
                at,
            } => {
                let mut e = EncodedEvent::new(APPLIED, 1)
                    .fact("batch_id", batch_id.to_string())
                    .fact("customer_ids", ids_json(customer_ids))
                    .fact("customers", customer_ids.len() as u64)
                    .fact("at", time_fact(*at));
                if let Some(s) = set.status {
                    e = e.fact("status", s.as_str());
                }
                if let Some(a) = &set.assigned_agent_ids {
                    e = e.fact("assigned_agent_ids", ids_json(a));
                }
                e
            }
            BulkEvent::Undone {
                batch_id,
                undo_batch_id,
                at,
            } => EncodedEvent::new(UNDONE, 1)
                .fact("batch_id", batch_id.to_string())
                .fact("undo_batch_id", undo_batch_id.to_string())
                .fact("at", time_fact(*at)),
        }
    }

    fn decode(e: &DecryptedEvent) -> Result<Self, DecodeError> {
        let batch_id = fact_uuid(e, "batch_id")?;
        let at = fact_time(e, "at")?;
        match (e.event_type.as_str(), e.schema_version) {
            (APPLIED, 1) => Ok(BulkEvent::Applied {
                batch_id,
                customer_ids: ids_from(e, "customer_ids")?,
                set: BulkSet {
                    status: fact_opt_str(e, "status")
                        .map(|s| s.parse().map_err(|_| DecodeError::new("bad status")))
                        .transpose()?,
                    assigned_agent_ids: match e.facts.contains_key("assigned_agent_ids") {
                        true => Some(ids_from(e, "assigned_agent_ids")?),
                        false => None,
                    },
                },
                at,
            }),
            (UNDONE, 1) => Ok(BulkEvent::Undone {
                batch_id,
                undo_batch_id: fact_uuid(e, "undo_batch_id")?,
                at,
            }),
            (t, v) => Err(DecodeError(format!("unknown bulk event {t} v{v}"))),
        }
    }
}

#[cfg(test)]
mod tests;
