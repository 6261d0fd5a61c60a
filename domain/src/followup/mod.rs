//! Follow-ups: a reminder to get back to a customer by a due time, with a note and an
//! assignee, completed once.
//!
//! A follow-up has its own stream (`followup-<id>`), but it is about a customer: its note is
//! personal data encrypted under the *customer's* key (commands run with the customer's data
//! subject), so erasing the customer shreds every note written about them. The state keeps
//! no note: deciding never needs it, so nothing personal sits in the command cache.
//!
//! Whether a follow-up is overdue is not stored: it depends on the time it is read at, which
//! the caller passes to [`FollowupStatus::at`].

mod decide;
mod events;

pub use decide::{
    Followup, FollowupCommand, FollowupError, FollowupState, ScheduleFollowup, decide, evolve,
};
pub use events::{FOLLOWUP_COMPLETED, FOLLOWUP_SCHEDULED, FollowupEvent, FollowupScheduled};

use chrono::{DateTime, Utc};

/// Where a follow-up stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FollowupStatus {
    /// Not completed, due now or later.
    Open,
    /// Completed.
    Done,
    /// Not completed and its due time has passed.
    Overdue,
}

impl FollowupStatus {
    /// The status at `now` of a follow-up due at `due_at`, completed at `completed_at`.
    pub fn at(
        due_at: DateTime<Utc>,
        completed_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Self {
        match completed_at {
            Some(_) => FollowupStatus::Done,
            None if due_at < now => FollowupStatus::Overdue,
            None => FollowupStatus::Open,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FollowupStatus::Open => "open",
            FollowupStatus::Done => "done",
            FollowupStatus::Overdue => "overdue",
        }
    }
}

impl std::str::FromStr for FollowupStatus {
    type Err = crate::values::Invalid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(FollowupStatus::Open),
            "done" => Ok(FollowupStatus::Done),
            "overdue" => Ok(FollowupStatus::Overdue),
            _ => Err(crate::values::Invalid(
                "status must be open, done or overdue",
            )),
        }
    }
}

impl std::fmt::Display for FollowupStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;
