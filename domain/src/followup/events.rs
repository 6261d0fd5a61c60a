use crate::encoding::*;
use crate::ids::FollowupId;
use crate::personal::Personal;
use crate::values::Notes;
use crate::{CustomerId, UserId};
use chrono::{DateTime, Utc};

/// Everything that can happen to a follow-up.
#[derive(Debug, Clone, PartialEq)]
pub enum FollowupEvent {
    Scheduled(FollowupScheduled),
    /// Done: a follow-up is completed once and stays completed.
    Completed {
        followup_id: FollowupId,
        customer_id: CustomerId,
        completed_by: UserId,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct FollowupScheduled {
    pub followup_id: FollowupId,
    pub customer_id: CustomerId,
    pub due_at: DateTime<Utc>,
    /// Free text about the customer: personal, under the customer's key.
    pub note: Personal<Notes>,
    pub assigned_to: UserId,
    pub at: DateTime<Utc>,
}

pub const FOLLOWUP_SCHEDULED: &str = "FollowupScheduled";
pub const FOLLOWUP_COMPLETED: &str = "FollowupCompleted";

impl FollowupEvent {
    pub fn followup_id(&self) -> FollowupId {
        match self {
            FollowupEvent::Scheduled(s) => s.followup_id,
            FollowupEvent::Completed { followup_id, .. } => *followup_id,
        }
    }

    pub fn customer_id(&self) -> CustomerId {
        match self {
            FollowupEvent::Scheduled(s) => s.customer_id,
            FollowupEvent::Completed { customer_id, .. } => *customer_id,
        }
    }

    pub fn at(&self) -> DateTime<Utc> {
        match self {
            FollowupEvent::Scheduled(s) => s.at,
            FollowupEvent::Completed { at, .. } => *at,
        }
    }

    /// The upper-case action name shown in the audit log.
    pub fn action(&self) -> &'static str {
        match self {
            FollowupEvent::Scheduled(_) => "FOLLOWUP_CREATED",
            FollowupEvent::Completed { .. } => "FOLLOWUP_COMPLETED",
        }
    }
}

fn user_fact(e: &DecryptedEvent, key: &str) -> Result<UserId, DecodeError> {
    Ok(UserId::from_uuid(fact_uuid(e, key)?))
}

impl EventCodec for FollowupEvent {
    fn encode(&self) -> EncodedEvent {
        match self {
            FollowupEvent::Scheduled(s) => EncodedEvent::new(FOLLOWUP_SCHEDULED, 1)
                .fact("followup_id", s.followup_id.to_string())
                .fact("customer_id", s.customer_id.to_string())
                .fact("due_at", time_fact(s.due_at))
                .fact("assigned_to", s.assigned_to.to_string())
                .fact("at", time_fact(s.at))
                .personal_field("note", s.note.known().map(|n| n.as_str())),
            FollowupEvent::Completed {
                followup_id,
                customer_id,
                completed_by,
                at,
            } => EncodedEvent::new(FOLLOWUP_COMPLETED, 1)
                .fact("followup_id", followup_id.to_string())
                .fact("customer_id", customer_id.to_string())
                .fact("completed_by", completed_by.to_string())
                .fact("at", time_fact(*at)),
        }
    }

    fn decode(e: &DecryptedEvent) -> Result<Self, DecodeError> {
        let followup_id = FollowupId::from_uuid(fact_uuid(e, "followup_id")?);
        let customer_id = CustomerId::from_uuid(fact_uuid(e, "customer_id")?);
        let at = fact_time(e, "at")?;
        match (e.event_type.as_str(), e.schema_version) {
            (FOLLOWUP_SCHEDULED, 1) => Ok(FollowupEvent::Scheduled(FollowupScheduled {
                followup_id,
                customer_id,
                due_at: fact_time(e, "due_at")?,
                note: personal_req(e, "note", Notes::parse)?,
                assigned_to: user_fact(e, "assigned_to")?,
                at,
            })),
            (FOLLOWUP_COMPLETED, 1) => Ok(FollowupEvent::Completed {
                followup_id,
                customer_id,
                completed_by: user_fact(e, "completed_by")?,
                at,
            }),
            (t, v) => Err(DecodeError(format!("unknown follow-up event {t} v{v}"))),
        }
    }
}
