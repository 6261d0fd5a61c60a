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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};
    use egec_domain::followup::FollowupScheduled;
    use egec_domain::personal::Personal;
    use egec_domain::values::Notes;
    use egec_domain::{CustomerId, UserId};

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_780_000_000 + s, 0).single().unwrap()
    }

    fn scheduled(id: u128, customer: u128) -> FollowupEvent {
        FollowupEvent::Scheduled(FollowupScheduled {
            followup_id: FollowupId::from_uuid(Uuid::from_u128(id)),
            customer_id: CustomerId::from_uuid(Uuid::from_u128(customer)),
            due_at: t(100),
            note: Personal::Known(Notes::parse("call back").unwrap()),
            assigned_to: UserId::from_uuid(Uuid::from_u128(7)),
            at: t(0),
        })
    }

    fn completed(id: u128, customer: u128, at: i64) -> FollowupEvent {
        FollowupEvent::Completed {
            followup_id: FollowupId::from_uuid(Uuid::from_u128(id)),
            customer_id: CustomerId::from_uuid(Uuid::from_u128(customer)),
            completed_by: UserId::from_uuid(Uuid::from_u128(8)),
            at: t(at),
        }
    }

    fn work(events: Vec<FollowupEvent>, erased: Vec<u128>) -> FollowupWork {
        let mut w = FollowupWork::default();
        let mut seen = IdMap::default();
        for (i, event) in events.into_iter().enumerate() {
            let step = Step {
                id: event.followup_id().as_uuid(),
                position: i as i64 + 1,
                stream_version: 1,
                event,
            };
            w.plan.push(&mut seen, step, false);
        }
        w.erased_customers = erased.into_iter().map(Uuid::from_u128).collect();
        w
    }

    #[test]
    fn a_follow_up_is_completed_once_and_events_without_a_row_change_nothing() {
        let row = apply_followup(None, &scheduled(1, 2), 1, 10).unwrap();
        assert_eq!(row.note, "call back");
        assert_eq!(row.completed_at, None);
        let row = apply_followup(Some(row), &completed(1, 2, 5), 2, 11).unwrap();
        assert_eq!(row.completed_at, Some(t(5)));
        let again = apply_followup(Some(row.clone()), &completed(1, 2, 9), 3, 12).unwrap();
        assert_eq!(
            again.completed_at,
            Some(t(5)),
            "the first completion stands"
        );
        assert_eq!(
            apply_followup(Some(row.clone()), &scheduled(1, 2), 4, 13),
            Some(row)
        );
        assert_eq!(apply_followup(None, &completed(1, 2, 5), 1, 1), None);
    }

    #[test]
    fn a_rebuild_erases_cached_notes_and_keeps_the_erasure_for_rows_written_earlier() {
        let mut cache = FollowupCache::default();
        cache.fold(&work(vec![scheduled(1, 2), scheduled(3, 4)], vec![]));
        // An earlier flush wrote both rows with their notes.
        let (written, erased) = cache.take_changes();
        assert_eq!(written.len(), 2);
        assert!(erased.is_empty());
        // Then customer 4's row comes back into the cache (loaded, as the rebuild loads
        // missing rows) and customer 2 is erased while none of its rows is cached.
        let three = Uuid::from_u128(3);
        let stored: Vec<FollowupRow> = written
            .into_iter()
            .map(|t| t.row)
            .filter(|r| r.id == three)
            .collect();
        cache.rows.add_loaded(&[three], stored, |r| r.id);
        cache.fold(&work(vec![completed(3, 4, 5)], vec![]));
        cache.fold(&work(vec![], vec![2, 4]));
        let (rows, erased) = cache.take_changes();
        assert_eq!(erased, vec![Uuid::from_u128(2), Uuid::from_u128(4)]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].row.note, ERASED);
        assert_eq!(rows[0].row.completed_at, Some(t(5)));
    }

    #[test]
    fn the_plan_takes_follow_up_events_and_customer_erasures_only() {
        let w = work(vec![scheduled(1, 2)], vec![2]);
        assert_eq!(w.len(), 2);
        let mut a = FollowupWork::default();
        a.extend(w);
        assert_eq!(a.erased_customers, vec![Uuid::from_u128(2)]);
        assert!(crate::kind::ProjectionKind::Followups.wants(CUSTOMER_ERASED));
        assert!(crate::kind::ProjectionKind::Followups.wants("FollowupScheduled"));
        assert!(!crate::kind::ProjectionKind::Followups.wants("CustomerUpdated"));
    }
}
