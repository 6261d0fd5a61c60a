//! The fold of the `followups` projection: one row per follow-up.
//!
//! A follow-up's note is encrypted under its customer's key, so erasing the customer must
//! erase the note in this read model too. The erasure event belongs to the customer's
//! stream and names no follow-up, so it cannot be a step of the row-by-row plan: the batch
//! carries the erased customers beside the plan, and the store replaces the notes of all
//! their follow-ups after writing the folded rows (an erasure is final, and nothing after it
//! can write a note again: the key is gone).

use egec_domain::customer::CustomerEvent;
use egec_domain::event::{DomainEvent, Envelope};
use egec_domain::followup::FollowupEvent;
use egec_domain::ids::FollowupId;
use egec_domain::personal::ERASED;
use uuid::Uuid;

use super::{IdMap, Plan, RowCache, Step, Touched, micros};
use crate::rows::FollowupRow;

/// The stored type of the customer erasure, the one customer event this projection reads.
pub const CUSTOMER_ERASED: &str = "CustomerErased";

/// A batch of the `followups` projection: the follow-up events as a row plan, and the
/// customers erased in the batch, whose notes are erased after the rows are written.
#[derive(Debug, Clone, Default)]
pub(crate) struct FollowupWork {
    pub plan: Plan<FollowupEvent>,
    pub erased_customers: Vec<Uuid>,
}

impl FollowupWork {
    pub fn of(envelopes: Vec<Envelope>) -> Self {
        let mut work = FollowupWork::default();
        let mut seen = IdMap::default();
        for env in envelopes {
            match env.event {
                DomainEvent::Followup(event) => {
                    let id = event.followup_id();
                    let starts = env.stream_version == 1
                        && FollowupId::from_stream_id(&env.stream_id) == Some(id);
                    let step = Step {
                        id: id.as_uuid(),
                        position: env.position,
                        stream_version: env.stream_version,
                        event,
                    };
                    work.plan.push(&mut seen, step, starts);
                }
                DomainEvent::Customer(CustomerEvent::Erased { customer_id, .. }) => {
                    work.erased_customers.push(customer_id.as_uuid());
                }
                _ => {}
            }
        }
        work
    }

    pub fn extend(&mut self, later: FollowupWork) {
        super::extend_plan(&mut self.plan, later.plan);
        self.erased_customers.extend(later.erased_customers);
    }

    pub fn len(&self) -> usize {
        self.plan.steps.len() + self.erased_customers.len()
    }
}

/// Folds one follow-up event into its row, with the domain's rules: an event for a
/// follow-up that does not exist, a second `Scheduled` and a second completion change
/// nothing.
pub fn apply_followup(
    row: Option<FollowupRow>,
    event: &FollowupEvent,
    stream_version: i64,
    position: i64,
) -> Option<FollowupRow> {
    let mut r = match (row, event) {
        (None, FollowupEvent::Scheduled(s)) => {
            return Some(FollowupRow {
                id: s.followup_id.as_uuid(),
                customer_id: s.customer_id.as_uuid(),
                due_at: micros(s.due_at),
                note: s.note.shown().to_owned(),
                assigned_to: s.assigned_to.as_uuid(),
                created_at: micros(s.at),
                completed_at: None,
                completed_by: None,
                version: stream_version,
                last_position: position,
            });
        }
        (None, _) => return None,
        (Some(r), FollowupEvent::Scheduled(_)) => return Some(r),
        (Some(r), _) => r,
    };
    if let FollowupEvent::Completed {
        completed_by, at, ..
    } = event
        && r.completed_at.is_none()
    {
        r.completed_at = Some(micros(*at));
        r.completed_by = Some(completed_by.as_uuid());
    }
    r.version = stream_version;
    r.last_position = position;
    Some(r)
}

/// Erases the notes of a customer's follow-ups held in a rebuild's memory. Rows already
/// written are erased by the store when the erasures are flushed with the cache.
pub(crate) fn erase_cached(cache: &mut RowCache<FollowupRow>, customer: Uuid) {
    for cached in cache.rows.values_mut() {
        if let Some(r) = cached.row.as_mut()
            && r.customer_id == customer
        {
            r.note = ERASED.to_owned();
        }
    }
}

/// The rebuild's in-memory fold of the `followups` projection, with the erasures still to
/// apply to rows written by earlier flushes.
#[derive(Debug, Default)]
pub(crate) struct FollowupCache {
    pub rows: RowCache<FollowupRow>,
    pub erased_customers: Vec<Uuid>,
}

impl FollowupCache {
    pub fn fold(&mut self, work: &FollowupWork) {
        self.rows.fold(&work.plan, apply_followup);
        for c in &work.erased_customers {
            erase_cached(&mut self.rows, *c);
            self.erased_customers.push(*c);
        }
    }

    pub fn take_changes(&mut self) -> (Vec<Touched<FollowupRow>>, Vec<Uuid>) {
        (
            self.rows.take_changes(),
            std::mem::take(&mut self.erased_customers),
        )
    }
}
