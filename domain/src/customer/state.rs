use super::events::{CustomerChanges, CustomerEvent};
use super::status::CustomerStatus;
use crate::personal::Personal;
use crate::values::*;
use crate::{CustomerId, UserId};
use chrono::{DateTime, Utc};

/// A customer as folded from its events.
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    pub id: CustomerId,
    pub name: Personal<PersonName>,
    pub email: Option<Personal<Email>>,
    pub phone: Option<Personal<PhoneE164>>,
    pub passport_number: Option<Personal<PassportNumber>>,
    pub country: Option<Country>,
    pub source: Option<Source>,
    pub status: CustomerStatus,
    pub notes: Option<Personal<Notes>>,
    pub assigned_agent_ids: Vec<UserId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Number of events folded so far: the stream version, and the `ETag` clients send back.
    pub version: i64,
    pub deleted: bool,
    pub erased: bool,
}

/// The aggregate's state: no customer yet, or one.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum CustomerState {
    #[default]
    Absent,
    Present(Box<Customer>),
}

impl CustomerState {
    pub fn customer(&self) -> Option<&Customer> {
        match self {
            CustomerState::Absent => None,
            CustomerState::Present(c) => Some(c),
        }
    }
}

fn apply_changes(c: &mut Customer, ch: &CustomerChanges) {
    if let Some(v) = &ch.name {
        c.name = v.clone();
    }
    if let Some(v) = &ch.email {
        c.email = v.clone();
    }
    if let Some(v) = &ch.phone {
        c.phone = v.clone();
    }
    if let Some(v) = &ch.passport_number {
        c.passport_number = v.clone();
    }
    if let Some(v) = &ch.country {
        c.country = v.clone();
    }
    if let Some(v) = &ch.source {
        c.source = v.clone();
    }
    if let Some(v) = ch.status {
        c.status = v;
    }
    if let Some(v) = &ch.notes {
        c.notes = v.clone();
    }
}

fn erase<T>(o: &mut Option<Personal<T>>) {
    if o.is_some() {
        *o = Some(Personal::Erased);
    }
}

/// Folds one event into the state. Total: an event that does not fit the state (which only a
/// corrupt log could hold) leaves the state as it was rather than panicking.
pub fn evolve(state: CustomerState, event: &CustomerEvent) -> CustomerState {
    match (state, event) {
        (CustomerState::Absent, CustomerEvent::Created(e)) => {
            CustomerState::Present(Box::new(Customer {
                id: e.customer_id,
                name: e.name.clone(),
                email: e.email.clone(),
                phone: e.phone.clone(),
                passport_number: e.passport_number.clone(),
                country: e.country.clone(),
                source: e.source.clone(),
                status: e.status,
                notes: e.notes.clone(),
                assigned_agent_ids: e.assigned_agent_ids.clone(),
                created_at: e.at,
                updated_at: e.at,
                version: 1,
                deleted: false,
                erased: false,
            }))
        }
        (CustomerState::Present(mut c), e) => {
            match e {
                CustomerEvent::Created(_) => return CustomerState::Present(c),
                CustomerEvent::Updated(u) => apply_changes(&mut c, &u.changes),
                CustomerEvent::Deleted { .. } => c.deleted = true,
                CustomerEvent::AgentsAssigned { agent_ids, .. } => {
                    c.assigned_agent_ids = agent_ids.clone();
                }
                CustomerEvent::BulkEdited(b) | CustomerEvent::BulkEditReverted(b) => {
                    if let Some(s) = b.status {
                        c.status = s;
                    }
                    if let Some(a) = &b.assigned_agent_ids {
                        c.assigned_agent_ids = a.clone();
                    }
                }
                // Attachments live in their own store; the customer's fields stay as they
                // are, but the version moves on like for any event of the stream.
                CustomerEvent::AttachmentAdded(_) => {}
                CustomerEvent::Erased { .. } => {
                    c.erased = true;
                    c.name = Personal::Erased;
                    erase(&mut c.email);
                    erase(&mut c.phone);
                    erase(&mut c.passport_number);
                    erase(&mut c.notes);
                }
            }
            c.version += 1;
            c.updated_at = e.at();
            CustomerState::Present(c)
        }
        (s @ CustomerState::Absent, _) => s,
    }
}
