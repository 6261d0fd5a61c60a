use super::events::{FollowupEvent, FollowupScheduled};
use crate::ids::FollowupId;
use crate::personal::Personal;
use crate::values::Notes;
use crate::{CustomerId, UserId};
use chrono::{DateTime, Utc};

/// A follow-up as folded from its events. No note: see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Followup {
    pub id: FollowupId,
    pub customer_id: CustomerId,
    pub due_at: DateTime<Utc>,
    pub assigned_to: UserId,
    pub created_at: DateTime<Utc>,
    /// Who completed it and when.
    pub completed: Option<(UserId, DateTime<Utc>)>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum FollowupState {
    #[default]
    Absent,
    Present(Box<Followup>),
}

/// What the API checked before scheduling: the customer exists and may be seen by the
/// caller, and the assignee is an active staff user who may work on it (facts the domain
/// cannot look up itself).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleFollowup {
    pub followup_id: FollowupId,
    pub customer_id: CustomerId,
    pub due_at: DateTime<Utc>,
    pub note: Notes,
    pub assigned_to: UserId,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FollowupCommand {
    Schedule(Box<ScheduleFollowup>),
    Complete { completed_by: UserId },
}

/// Why a follow-up command was refused. Purely business reasons: nothing technical.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowupError {
    #[error("follow-up not found")]
    NotFound,
    #[error("follow-up already exists")]
    AlreadyExists,
    /// Completing twice is refused rather than ignored, so that two people closing the same
    /// follow-up learn that someone else already did.
    #[error("follow-up already completed")]
    AlreadyCompleted,
}

/// Decides what a command means for a follow-up. `now` is passed in: the domain reads no clock.
pub fn decide(
    state: &FollowupState,
    command: FollowupCommand,
    now: DateTime<Utc>,
) -> Result<Vec<FollowupEvent>, FollowupError> {
    match (state, command) {
        (FollowupState::Present(_), FollowupCommand::Schedule(_)) => {
            Err(FollowupError::AlreadyExists)
        }
        (FollowupState::Absent, FollowupCommand::Schedule(s)) => {
            let ScheduleFollowup {
                followup_id,
                customer_id,
                due_at,
                note,
                assigned_to,
            } = *s;
            Ok(vec![FollowupEvent::Scheduled(FollowupScheduled {
                followup_id,
                customer_id,
                due_at,
                note: Personal::Known(note),
                assigned_to,
                at: now,
            })])
        }
        (FollowupState::Absent, FollowupCommand::Complete { .. }) => Err(FollowupError::NotFound),
        (FollowupState::Present(f), FollowupCommand::Complete { completed_by }) => {
            if f.completed.is_some() {
                return Err(FollowupError::AlreadyCompleted);
            }
            Ok(vec![FollowupEvent::Completed {
                followup_id: f.id,
                customer_id: f.customer_id,
                completed_by,
                at: now,
            }])
        }
    }
}

/// Folds one event into the state. Total: an event that does not fit the state (which only
/// a corrupt log could hold) leaves the state as it was.
pub fn evolve(state: FollowupState, event: &FollowupEvent) -> FollowupState {
    match (state, event) {
        (FollowupState::Absent, FollowupEvent::Scheduled(s)) => {
            FollowupState::Present(Box::new(Followup {
                id: s.followup_id,
                customer_id: s.customer_id,
                due_at: s.due_at,
                assigned_to: s.assigned_to,
                created_at: s.at,
                completed: None,
            }))
        }
        (s @ FollowupState::Absent, _) => s,
        (s @ FollowupState::Present(_), FollowupEvent::Scheduled(_)) => s,
        (
            FollowupState::Present(mut f),
            FollowupEvent::Completed {
                completed_by, at, ..
            },
        ) => {
            if f.completed.is_none() {
                f.completed = Some((*completed_by, *at));
            }
            FollowupState::Present(f)
        }
    }
}
