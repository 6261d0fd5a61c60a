//! Every domain event the log can hold, and the metadata each carries.

use crate::api_key::ApiKeyEvent;
use crate::bulk::BulkEvent;
use crate::customer::CustomerEvent;
use crate::encoding::{DecodeError, DecryptedEvent, EncodedEvent, EventCodec, upcast};
use crate::export::ExportEvent;
use crate::followup::FollowupEvent;
use crate::gdpr::GdprEvent;
use crate::personal::Personal;
use crate::user::{LoginEvent, UserEvent};
use crate::{Role, UserId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    Customer(CustomerEvent),
    User(UserEvent),
    Login(LoginEvent),
    ApiKey(ApiKeyEvent),
    Followup(FollowupEvent),
    Bulk(BulkEvent),
    Export(ExportEvent),
    Gdpr(GdprEvent),
}

impl DomainEvent {
    pub fn encode(&self) -> EncodedEvent {
        match self {
            DomainEvent::Customer(e) => e.encode(),
            DomainEvent::User(e) => e.encode(),
            DomainEvent::Login(e) => e.encode(),
            DomainEvent::ApiKey(e) => e.encode(),
            DomainEvent::Followup(e) => e.encode(),
            DomainEvent::Bulk(e) => e.encode(),
            DomainEvent::Export(e) => e.encode(),
            DomainEvent::Gdpr(e) => e.encode(),
        }
    }

    /// Upcasts a decrypted stored event and decodes it into its domain type.
    pub fn decode(e: DecryptedEvent) -> Result<Self, DecodeError> {
        let e = upcast(e)?;
        if e.event_type.starts_with("Customer") {
            CustomerEvent::decode(&e).map(DomainEvent::Customer)
        } else if e.event_type.starts_with("User") {
            UserEvent::decode(&e).map(DomainEvent::User)
        } else if e.event_type.starts_with("Login") {
            LoginEvent::decode(&e).map(DomainEvent::Login)
        } else if e.event_type.starts_with("ApiKey") {
            ApiKeyEvent::decode(&e).map(DomainEvent::ApiKey)
        } else if e.event_type.starts_with("Followup") {
            FollowupEvent::decode(&e).map(DomainEvent::Followup)
        } else if e.event_type.starts_with("BulkEdit") {
            BulkEvent::decode(&e).map(DomainEvent::Bulk)
        } else if e.event_type.starts_with("Export") {
            ExportEvent::decode(&e).map(DomainEvent::Export)
        } else if e.event_type.starts_with("Gdpr") {
            GdprEvent::decode(&e).map(DomainEvent::Gdpr)
        } else {
            Err(DecodeError(format!("unknown event type {}", e.event_type)))
        }
    }

    /// The upper-case action name of the audit log.
    pub fn action(&self) -> &'static str {
        match self {
            DomainEvent::Customer(e) => e.action(),
            DomainEvent::User(e) => e.action(),
            DomainEvent::Login(e) => e.action(),
            DomainEvent::ApiKey(e) => e.action(),
            DomainEvent::Followup(e) => e.action(),
            DomainEvent::Bulk(e) => e.action(),
            DomainEvent::Export(e) => e.action(),
            DomainEvent::Gdpr(e) => e.action(),
        }
    }
}

/// Who did something, from where, and why: carried by every event.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub actor_id: Option<UserId>,
    pub actor_role: Option<Role>,
    /// Personal data with a retention limit: encrypted under a key per calendar month.
    pub ip: Option<Personal<String>>,
    pub user_agent: Option<Personal<String>>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    /// The import or bulk edit this event belongs to: every event a batch causes carries
    /// its id, so the batch can be listed, audited and undone as one.
    pub batch_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
}

impl Metadata {
    /// Metadata of an action taken by the system itself (CLI, migrations, tests).
    pub fn system(correlation_id: Uuid, occurred_at: DateTime<Utc>) -> Self {
        Self {
            actor_id: None,
            actor_role: None,
            ip: None,
            user_agent: None,
            correlation_id,
            causation_id: None,
            batch_id: None,
            occurred_at,
        }
    }
}

/// A decoded event with its place in the log: what the read side and replay work with.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub position: i64,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_id: Uuid,
    pub command_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    pub metadata: Metadata,
    pub event: DomainEvent,
}
