use super::attachment::{ATTACHMENT_ADDED, AttachmentAdded};
use super::status::CustomerStatus;
use crate::encoding::*;
use crate::personal::Personal;
use crate::values::*;
use crate::{CustomerId, UserId};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// Everything that can happen to a customer.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomerEvent {
    Created(CustomerCreated),
    Updated(CustomerUpdated),
    Deleted {
        customer_id: CustomerId,
        at: DateTime<Utc>,
    },
    /// The customer's key was destroyed; every personal field now reads `[ERASED]`.
    Erased {
        customer_id: CustomerId,
        reason: String,
        at: DateTime<Utc>,
    },
    /// A file was attached (see `attachment.rs`).
    AttachmentAdded(AttachmentAdded),
    /// The agents assigned to the customer were replaced by `agent_ids` (each verified by
    /// the caller to be an active agent or superagent when the command was given).
    AgentsAssigned {
        customer_id: CustomerId,
        agent_ids: Vec<UserId>,
        at: DateTime<Utc>,
    },
    /// A bulk edit changed this customer; the batch id is in the event's metadata. Only the
    /// fields the batch really changed are present.
    BulkEdited(BulkFields),
    /// The undo of a bulk edit put fields back to their value before the batch. It is not a
    /// workflow step, so it may move the status backwards.
    BulkEditReverted(BulkFields),
}

/// The fields a bulk edit (or its undo) sets on one customer; `None` leaves a field alone.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkFields {
    pub customer_id: CustomerId,
    pub status: Option<CustomerStatus>,
    pub assigned_agent_ids: Option<Vec<UserId>>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CustomerCreated {
    pub customer_id: CustomerId,
    pub name: Personal<PersonName>,
    pub email: Option<Personal<Email>>,
    pub phone: Option<Personal<PhoneE164>>,
    pub passport_number: Option<Personal<PassportNumber>>,
    pub country: Option<Country>,
    pub source: Option<Source>,
    pub status: CustomerStatus,
    pub notes: Option<Personal<Notes>>,
    pub assigned_agent_ids: Vec<UserId>,
    pub at: DateTime<Utc>,
}

/// A change of some fields. `Some(None)` clears an optional field; `None` leaves it alone.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CustomerChanges {
    pub name: Option<Personal<PersonName>>,
    pub email: Option<Option<Personal<Email>>>,
    pub phone: Option<Option<Personal<PhoneE164>>>,
    pub passport_number: Option<Option<Personal<PassportNumber>>>,
    pub country: Option<Option<Country>>,
    pub source: Option<Option<Source>>,
    pub status: Option<CustomerStatus>,
    pub notes: Option<Option<Personal<Notes>>>,
}

impl CustomerChanges {
    pub fn is_empty(&self) -> bool {
        *self == CustomerChanges::default()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CustomerUpdated {
    pub customer_id: CustomerId,
    pub changes: CustomerChanges,
    pub at: DateTime<Utc>,
}

pub const CREATED: &str = "CustomerCreated";
pub const UPDATED: &str = "CustomerUpdated";
pub const DELETED: &str = "CustomerDeleted";
pub const ERASED_EVENT: &str = "CustomerErased";
pub const AGENTS_ASSIGNED: &str = "CustomerAgentsAssigned";
pub const BULK_EDITED: &str = "CustomerBulkEdited";
pub const BULK_EDIT_REVERTED: &str = "CustomerBulkEditReverted";

impl CustomerEvent {
    pub fn customer_id(&self) -> CustomerId {
        match self {
            CustomerEvent::Created(e) => e.customer_id,
            CustomerEvent::Updated(e) => e.customer_id,
            CustomerEvent::AttachmentAdded(e) => e.customer_id,
            CustomerEvent::Deleted { customer_id, .. }
            | CustomerEvent::Erased { customer_id, .. }
            | CustomerEvent::AgentsAssigned { customer_id, .. } => *customer_id,
            CustomerEvent::BulkEdited(b) | CustomerEvent::BulkEditReverted(b) => b.customer_id,
        }
    }

    pub fn at(&self) -> DateTime<Utc> {
        match self {
            CustomerEvent::Created(e) => e.at,
            CustomerEvent::Updated(e) => e.at,
            CustomerEvent::Deleted { at, .. }
            | CustomerEvent::Erased { at, .. }
            | CustomerEvent::AgentsAssigned { at, .. } => *at,
            CustomerEvent::BulkEdited(b) | CustomerEvent::BulkEditReverted(b) => b.at,
            CustomerEvent::AttachmentAdded(e) => e.at,
        }
    }

    /// The upper-case action name shown in the audit log.
    pub fn action(&self) -> &'static str {
        match self {
            CustomerEvent::Created(_) => "CUSTOMER_CREATED",
            CustomerEvent::Updated(_) => "CUSTOMER_UPDATED",
            CustomerEvent::Deleted { .. } => "CUSTOMER_DELETED",
            CustomerEvent::Erased { .. } => "CUSTOMER_ERASED",
            CustomerEvent::AttachmentAdded(_) => "ATTACHMENT_ADDED",
            CustomerEvent::AgentsAssigned { .. } => "CUSTOMER_AGENTS_ASSIGNED",
            CustomerEvent::BulkEdited(_) => "CUSTOMER_BULK_EDITED",
            CustomerEvent::BulkEditReverted(_) => "CUSTOMER_BULK_EDIT_REVERTED",
        }
    }

    /// Whether the event changes the customer's status.
    pub fn changes_status(&self) -> bool {
        match self {
            CustomerEvent::Updated(u) => u.changes.status.is_some(),
            CustomerEvent::BulkEdited(b) | CustomerEvent::BulkEditReverted(b) => b.status.is_some(),
            _ => false,
        }
    }

    /// Whether the event changes who is assigned to the customer.
    pub fn changes_assignment(&self) -> bool {
        match self {
            CustomerEvent::AgentsAssigned { .. } => true,
            CustomerEvent::BulkEdited(b) | CustomerEvent::BulkEditReverted(b) => {
                b.assigned_agent_ids.is_some()
            }
            _ => false,
        }
    }
}

fn opt_str<T: AsRef<str>>(v: &Option<Personal<T>>) -> Option<&str> {
    v.as_ref().and_then(|p| p.known()).map(|x| x.as_ref())
}

fn agents_json(ids: &[UserId]) -> Value {
    Value::Array(ids.iter().map(|i| Value::String(i.to_string())).collect())
}

fn agents_from(e: &DecryptedEvent) -> Result<Vec<UserId>, DecodeError> {
    match e.facts.get("assigned_agent_ids") {
        None => Ok(vec![]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| DecodeError::new("bad agent id"))
            })
            .collect(),
        Some(_) => Err(DecodeError::new("assigned_agent_ids is not an array")),
    }
}

fn field<T>(cleared: &[&str], key: &str, set: Option<Personal<T>>) -> Option<Option<Personal<T>>> {
    match set {
        Some(v) => Some(Some(v)),
        None if cleared.contains(&key) => Some(None),
        None => None,
    }
}

fn text_change<T>(
    e: &DecryptedEvent,
    key: &str,
    parse: fn(&str) -> Result<T, Invalid>,
) -> Result<Option<Option<T>>, DecodeError> {
    match e.facts.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => parse(s)
            .map(|v| Some(Some(v)))
            .map_err(|err| DecodeError(format!("{key}: {err}"))),
        Some(_) => Err(DecodeError(format!("{key} is not a string"))),
    }
}

fn status_from(s: &str) -> Result<CustomerStatus, DecodeError> {
    s.parse().map_err(|_| DecodeError::new("bad status"))
}

fn text_fact<T>(
    e: &DecryptedEvent,
    key: &str,
    parse: fn(&str) -> Result<T, Invalid>,
) -> Result<Option<T>, DecodeError> {
    fact_opt_str(e, key)
        .map(|s| parse(s).map_err(|err| DecodeError(format!("{key}: {err}"))))
        .transpose()
}

/// The facts of a bulk edit or its undo: a field is present only when it is set.
fn bulk_fields(mut e: EncodedEvent, b: &BulkFields) -> EncodedEvent {
    e = e
        .fact("customer_id", b.customer_id.to_string())
        .fact("at", time_fact(b.at));
    if let Some(s) = b.status {
        e = e.fact("status", s.as_str());
    }
    if let Some(a) = &b.assigned_agent_ids {
        e = e.fact("assigned_agent_ids", agents_json(a));
    }
    e
}

fn bulk_from(
    e: &DecryptedEvent,
    customer_id: CustomerId,
    at: DateTime<Utc>,
) -> Result<BulkFields, DecodeError> {
    Ok(BulkFields {
        customer_id,
        status: fact_opt_str(e, "status").map(status_from).transpose()?,
        assigned_agent_ids: match e.facts.contains_key("assigned_agent_ids") {
            true => Some(agents_from(e)?),
            false => None,
        },
        at,
    })
}

impl EventCodec for CustomerEvent {
    fn encode(&self) -> EncodedEvent {
        match self {
            CustomerEvent::Created(c) => EncodedEvent::new(CREATED, 2)
                .fact("customer_id", c.customer_id.to_string())
                .fact("status", c.status.as_str())
                .fact("country", c.country.as_ref().map(|x| x.as_str()))
                .fact("source", c.source.as_ref().map(|x| x.as_str()))
                .fact("assigned_agent_ids", agents_json(&c.assigned_agent_ids))
                .fact("at", time_fact(c.at))
                .personal_field("name", c.name.known().map(|n| n.as_str()))
                .personal_field("email", opt_str(&c.email))
                .personal_field("phone", opt_str(&c.phone))
                .personal_field("passport_number", opt_str(&c.passport_number))
                .personal_field("notes", opt_str(&c.notes)),
            CustomerEvent::Updated(u) => {
                let ch = &u.changes;
                let mut cleared = Vec::new();
                let mut e = EncodedEvent::new(UPDATED, 1)
                    .fact("customer_id", u.customer_id.to_string())
                    .fact("at", time_fact(u.at));
                if let Some(s) = ch.status {
                    e = e.fact("status", s.as_str());
                }
                if let Some(c) = &ch.country {
                    e = e.fact("country", c.as_ref().map(|x| x.as_str()));
                }
                if let Some(s) = &ch.source {
                    e = e.fact("source", s.as_ref().map(|x| x.as_str()));
                }
                if let Some(n) = &ch.name {
                    e = e.personal_field("name", n.known().map(|x| x.as_str()));
                }
                let mut personal =
                    |key: &'static str, v: Option<Option<&str>>, e: EncodedEvent| match v {
                        None => e,
                        Some(None) => {
                            cleared.push(Value::String(key.into()));
                            e
                        }
                        Some(Some(s)) => e.personal_field(key, Some(s)),
                    };
                e = personal("email", ch.email.as_ref().map(opt_str), e);
                e = personal("phone", ch.phone.as_ref().map(opt_str), e);
                e = personal(
                    "passport_number",
                    ch.passport_number.as_ref().map(opt_str),
                    e,
                );
                e = personal("notes", ch.notes.as_ref().map(opt_str), e);
                if !cleared.is_empty() {
                    e = e.fact("cleared", Value::Array(cleared));
                }
                e
            }
            CustomerEvent::Deleted { customer_id, at } => EncodedEvent::new(DELETED, 1)
                .fact("customer_id", customer_id.to_string())
                .fact("at", time_fact(*at)),
            CustomerEvent::Erased {
                customer_id,
                reason,
                at,
            } => EncodedEvent::new(ERASED_EVENT, 1)
                .fact("customer_id", customer_id.to_string())
                .fact("reason", reason.as_str())
                .fact("at", time_fact(*at)),
            CustomerEvent::AgentsAssigned {
                customer_id,
                agent_ids,
                at,
            } => EncodedEvent::new(AGENTS_ASSIGNED, 1)
                .fact("customer_id", customer_id.to_string())
                .fact("assigned_agent_ids", agents_json(agent_ids))
                .fact("at", time_fact(*at)),
            CustomerEvent::BulkEdited(b) => bulk_fields(EncodedEvent::new(BULK_EDITED, 1), b),
            CustomerEvent::BulkEditReverted(b) => {
                bulk_fields(EncodedEvent::new(BULK_EDIT_REVERTED, 1), b)
            }
            CustomerEvent::AttachmentAdded(a) => a.encode(),
        }
    }

    fn decode(e: &DecryptedEvent) -> Result<Self, DecodeError> {
        let customer_id = CustomerId::from_uuid(fact_uuid(e, "customer_id")?);
        let at = fact_time(e, "at")?;
        match (e.event_type.as_str(), e.schema_version) {
            (CREATED, 2) => Ok(CustomerEvent::Created(CustomerCreated {
                customer_id,
                name: personal_req(e, "name", PersonName::from_stored)?,
                email: personal_opt(e, "email", Email::parse)?,
                phone: personal_opt(e, "phone", PhoneE164::from_stored)?,
                passport_number: personal_opt(e, "passport_number", PassportNumber::parse)?,
                country: text_fact(e, "country", Country::from_stored)?,
                source: text_fact(e, "source", Source::from_stored)?,
                status: status_from(fact_str(e, "status")?)?,
                notes: personal_opt(e, "notes", Notes::from_stored)?,
                assigned_agent_ids: agents_from(e)?,
                at,
            })),
            (UPDATED, 1) => {
                let cleared: Vec<&str> = match e.facts.get("cleared") {
                    Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                    _ => vec![],
                };
                Ok(CustomerEvent::Updated(CustomerUpdated {
                    customer_id,
                    changes: CustomerChanges {
                        name: personal_opt(e, "name", PersonName::from_stored)?,
                        email: field(&cleared, "email", personal_opt(e, "email", Email::parse)?),
                        phone: field(
                            &cleared,
                            "phone",
                            personal_opt(e, "phone", PhoneE164::from_stored)?,
                        ),
                        passport_number: field(
                            &cleared,
                            "passport_number",
                            personal_opt(e, "passport_number", PassportNumber::parse)?,
                        ),
                        country: text_change(e, "country", Country::from_stored)?,
                        source: text_change(e, "source", Source::from_stored)?,
                        status: fact_opt_str(e, "status").map(status_from).transpose()?,
                        notes: field(
                            &cleared,
                            "notes",
                            personal_opt(e, "notes", Notes::from_stored)?,
                        ),
                    },
                    at,
                }))
            }
            (DELETED, 1) => Ok(CustomerEvent::Deleted { customer_id, at }),
            (ERASED_EVENT, 1) => Ok(CustomerEvent::Erased {
                customer_id,
                reason: fact_str(e, "reason")?.to_owned(),
                at,
            }),
            (AGENTS_ASSIGNED, 1) => Ok(CustomerEvent::AgentsAssigned {
                customer_id,
                agent_ids: agents_from(e)?,
                at,
            }),
            (BULK_EDITED, 1) => Ok(CustomerEvent::BulkEdited(bulk_from(e, customer_id, at)?)),
            (BULK_EDIT_REVERTED, 1) => Ok(CustomerEvent::BulkEditReverted(bulk_from(
                e,
                customer_id,
                at,
            )?)),
            (ATTACHMENT_ADDED, 1) => Ok(CustomerEvent::AttachmentAdded(AttachmentAdded::decode(
                e,
                customer_id,
                at,
            )?)),
            (t, v) => Err(DecodeError(format!("unknown customer event {t} v{v}"))),
        }
    }
}
