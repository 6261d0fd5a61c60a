//! What undoing a bulk edit means for one customer, decided from the customer's history.
//!
//! Each field the batch changed goes back to the value it had just before the batch, unless
//! a later event changed that field again: then the later change wins and the field is
//! reported as skipped, because restoring it would silently throw away someone's work.

use super::events::CustomerEvent;
use super::state::{CustomerState, evolve};
use super::status::CustomerStatus;
use crate::UserId;

/// A field a bulk edit may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkField {
    Status,
    AssignedAgentIds,
}

impl BulkField {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkField::Status => "status",
            BulkField::AssignedAgentIds => "assigned_agent_ids",
        }
    }
}

/// The values to restore and the fields left alone because they changed since the batch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UndoPlan {
    pub status: Option<CustomerStatus>,
    pub assigned_agent_ids: Option<Vec<UserId>>,
    pub changed_since: Vec<BulkField>,
}

impl UndoPlan {
    /// Whether anything is to be restored.
    pub fn restores_anything(&self) -> bool {
        self.status.is_some() || self.assigned_agent_ids.is_some()
    }
}

/// Plans the undo of the bulk edit at `history[batch_event]` (the customer's events, oldest
/// first). `None` when that event is not a bulk edit.
pub fn plan_undo(history: &[CustomerEvent], batch_event: usize) -> Option<UndoPlan> {
    let CustomerEvent::BulkEdited(batch) = history.get(batch_event)? else {
        return None;
    };
    let before = history[..batch_event]
        .iter()
        .fold(CustomerState::Absent, evolve);
    let before = before.customer()?;
    let later = &history[batch_event + 1..];
    let mut plan = UndoPlan::default();
    if batch.status.is_some() {
        if later.iter().any(CustomerEvent::changes_status) {
            plan.changed_since.push(BulkField::Status);
        } else {
            plan.status = Some(before.status);
        }
    }
    if batch.assigned_agent_ids.is_some() {
        if later.iter().any(CustomerEvent::changes_assignment) {
            plan.changed_since.push(BulkField::AssignedAgentIds);
        } else {
            plan.assigned_agent_ids = Some(before.assigned_agent_ids.clone());
        }
    }
    Some(plan)
}
