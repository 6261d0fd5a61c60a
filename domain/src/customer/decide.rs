use super::attachment::{AddAttachment, AttachmentAdded};
use super::events::{BulkFields, CustomerChanges, CustomerCreated, CustomerEvent, CustomerUpdated};
use super::state::{Customer, CustomerState};
use super::status::CustomerStatus;
use crate::personal::Personal;
use crate::values::*;
use crate::{CustomerId, UserId};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq)]
pub struct CreateCustomer {
    pub customer_id: CustomerId,
    pub name: PersonName,
    pub email: Option<Email>,
    pub phone: Option<PhoneE164>,
    pub passport_number: Option<PassportNumber>,
    pub country: Option<Country>,
    pub source: Option<Source>,
    pub status: Option<CustomerStatus>,
    pub notes: Option<Notes>,
    pub assigned_agent_ids: Vec<UserId>,
}

/// Fields to change. `Some(None)` clears an optional field.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdateCustomer {
    pub name: Option<PersonName>,
    pub email: Option<Option<Email>>,
    pub phone: Option<Option<PhoneE164>>,
    pub passport_number: Option<Option<PassportNumber>>,
    pub country: Option<Option<Country>>,
    pub source: Option<Option<Source>>,
    pub status: Option<CustomerStatus>,
    pub notes: Option<Option<Notes>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CustomerCommand {
    Create(Box<CreateCustomer>),
    Update(UpdateCustomer),
    Delete,
    Erase {
        reason: String,
    },
    /// Replaces the assigned agents. The ids must have been checked by the caller to be
    /// active agents or superagents (the users read model is not the domain's to read).
    AssignAgents {
        agent_ids: Vec<UserId>,
    },
    /// One customer's part of a bulk edit: the status moves by the workflow's rules.
    BulkEdit {
        status: Option<CustomerStatus>,
        assigned_agent_ids: Option<Vec<UserId>>,
    },
    /// One customer's part of undoing a bulk edit: puts fields back to the values they had
    /// before the batch (see [`super::plan_undo`]). Restoring is not a workflow step, so the
    /// status may move backwards here and only here.
    RevertBulkEdit {
        status: Option<CustomerStatus>,
        assigned_agent_ids: Option<Vec<UserId>>,
    },
    /// Records a file whose encrypted content the caller already stored.
    AddAttachment(AddAttachment),
}

/// Why a customer command was refused. Purely business reasons: nothing technical.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomerError {
    #[error("customer not found")]
    NotFound,
    #[error("customer already exists")]
    AlreadyExists,
    #[error("customer was deleted")]
    Deleted,
    #[error("customer's personal data was erased")]
    Erased,
    #[error("status cannot move from {from} to {to}")]
    IllegalTransition {
        from: CustomerStatus,
        to: CustomerStatus,
    },
    #[error("an erasure needs a reason")]
    ReasonRequired,
}

fn live(state: &CustomerState) -> Result<&Customer, CustomerError> {
    match state.customer() {
        None => Err(CustomerError::NotFound),
        Some(c) if c.erased => Err(CustomerError::Erased),
        Some(c) if c.deleted => Err(CustomerError::Deleted),
        Some(c) => Ok(c),
    }
}

/// Keeps a change only when it differs from the current value, so a PATCH that repeats the
/// current values appends nothing.
fn diff<T: PartialEq>(
    current: &Option<Personal<T>>,
    new: Option<Option<T>>,
) -> Option<Option<Personal<T>>> {
    let new = new?;
    let new = new.map(Personal::Known);
    (current != &new).then_some(new)
}

fn diff_plain<T: PartialEq>(current: &Option<T>, new: Option<Option<T>>) -> Option<Option<T>> {
    let new = new?;
    (current != &new).then_some(new)
}

/// Drops repeated ids, keeping the first occurrence of each.
fn distinct(ids: Vec<UserId>) -> Vec<UserId> {
    let mut out: Vec<UserId> = Vec::with_capacity(ids.len());
    for id in ids {
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// Whether two assignments name the same agents, whatever their order.
fn same_agents(a: &[UserId], b: &[UserId]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

/// The new assignment if it differs from the current one.
fn agents_change(cur: &Customer, new: Option<Vec<UserId>>) -> Option<Vec<UserId>> {
    new.map(distinct)
        .filter(|a| !same_agents(a, &cur.assigned_agent_ids))
}

/// Decides what a command means for a customer. `now` is passed in: the domain reads no clock.
pub fn decide(
    state: &CustomerState,
    command: CustomerCommand,
    now: DateTime<Utc>,
) -> Result<Vec<CustomerEvent>, CustomerError> {
    match command {
        CustomerCommand::Create(c) => {
            if state.customer().is_some() {
                return Err(CustomerError::AlreadyExists);
            }
            Ok(vec![CustomerEvent::Created(CustomerCreated {
                customer_id: c.customer_id,
                name: Personal::Known(c.name),
                email: c.email.map(Personal::Known),
                phone: c.phone.map(Personal::Known),
                passport_number: c.passport_number.map(Personal::Known),
                country: c.country,
                source: c.source,
                status: c.status.unwrap_or(CustomerStatus::New),
                notes: c.notes.map(Personal::Known),
                assigned_agent_ids: c.assigned_agent_ids,
                at: now,
            })])
        }
        CustomerCommand::Update(u) => {
            let cur = live(state)?;
            if let Some(to) = u.status
                && !cur.status.can_move_to(to)
            {
                return Err(CustomerError::IllegalTransition {
                    from: cur.status,
                    to,
                });
            }
            let changes = CustomerChanges {
                name: u.name.map(Personal::Known).filter(|n| *n != cur.name),
                email: diff(&cur.email, u.email),
                phone: diff(&cur.phone, u.phone),
                passport_number: diff(&cur.passport_number, u.passport_number),
                country: diff_plain(&cur.country, u.country),
                source: diff_plain(&cur.source, u.source),
                status: u.status.filter(|s| *s != cur.status),
                notes: diff(&cur.notes, u.notes),
            };
            if changes.is_empty() {
                return Ok(vec![]);
            }
            Ok(vec![CustomerEvent::Updated(CustomerUpdated {
                customer_id: cur.id,
                changes,
                at: now,
            })])
        }
        CustomerCommand::Delete => {
            let cur = live(state)?;
            Ok(vec![CustomerEvent::Deleted {
                customer_id: cur.id,
                at: now,
            }])
        }
        CustomerCommand::AssignAgents { agent_ids } => {
            let cur = live(state)?;
            Ok(agents_change(cur, Some(agent_ids))
                .map(|agent_ids| CustomerEvent::AgentsAssigned {
                    customer_id: cur.id,
                    agent_ids,
                    at: now,
                })
                .into_iter()
                .collect())
        }
        CustomerCommand::BulkEdit {
            status,
            assigned_agent_ids,
        } => {
            let cur = live(state)?;
            if let Some(to) = status
                && !cur.status.can_move_to(to)
            {
                return Err(CustomerError::IllegalTransition {
                    from: cur.status,
                    to,
                });
            }
            let fields = BulkFields {
                customer_id: cur.id,
                status: status.filter(|s| *s != cur.status),
                assigned_agent_ids: agents_change(cur, assigned_agent_ids),
                at: now,
            };
            Ok(bulk_event(fields, CustomerEvent::BulkEdited))
        }
        CustomerCommand::RevertBulkEdit {
            status,
            assigned_agent_ids,
        } => {
            let cur = live(state)?;
            let fields = BulkFields {
                customer_id: cur.id,
                status: status.filter(|s| *s != cur.status),
                assigned_agent_ids: agents_change(cur, assigned_agent_ids),
                at: now,
            };
            Ok(bulk_event(fields, CustomerEvent::BulkEditReverted))
        }
        // Only a live customer takes files: a deleted one is gone for everyone but the
        // superadmin, and an erased one has no key left to encrypt them under.
        CustomerCommand::AddAttachment(a) => {
            let cur = live(state)?;
            Ok(vec![CustomerEvent::AttachmentAdded(AttachmentAdded {
                customer_id: cur.id,
                attachment_id: a.attachment_id,
                file_name: Personal::Known(a.file_name),
                content_type: a.content_type,
                size: a.size,
                ciphertext_hash: a.ciphertext_hash,
                at: now,
            })])
        }
        CustomerCommand::Erase { reason } => {
            let reason = reason.trim().to_owned();
            if reason.is_empty() {
                return Err(CustomerError::ReasonRequired);
            }
            match state.customer() {
                None => Err(CustomerError::NotFound),
                // Erasing twice is a success that changes nothing: erasure is idempotent.
                Some(c) if c.erased => Ok(vec![]),
                Some(c) => Ok(vec![CustomerEvent::Erased {
                    customer_id: c.id,
                    reason,
                    at: now,
                }]),
            }
        }
    }
}

/// The event of a bulk change, or none when it changes nothing for this customer.
fn bulk_event(fields: BulkFields, wrap: fn(BulkFields) -> CustomerEvent) -> Vec<CustomerEvent> {
    if fields.status.is_none() && fields.assigned_agent_ids.is_none() {
        vec![]
    } else {
        vec![wrap(fields)]
    }
}
