//! The plain row types the read models hold and the API maps to JSON.

use chrono::{DateTime, Utc};
use egec_domain::customer::CustomerStatus;
use egec_domain::permission::Visibility;
use egec_domain::{Role, UserId};
use serde::Serialize;
use std::time::Duration;
use uuid::Uuid;

/// One customer as the operational read model holds it. Personal values are in clear, exactly
/// as decoded: an erased field reads `"[ERASED]"` (see `egec_domain::personal::ERASED`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerRow {
    pub id: Uuid,
    pub name: String,
    pub email: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    /// Unmasked: masking per role is the API's job.
    pub passport_number: Option<String>,
    pub country: Option<String>,
    pub source: Option<String>,
    pub status: CustomerStatus,
    pub notes: Option<String>,
    pub assigned_agent_ids: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The customer stream's version: the `ETag` and the `If-Match` value.
    pub version: i64,
    pub deleted: bool,
    pub erased: bool,
    /// Log position of the last event folded into this row.
    pub last_position: i64,
}

/// One staff user. There is deliberately no password hash here: read models are for reading
/// and listing, and authentication loads the user's stream instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub version: i64,
    pub last_position: i64,
    /// Tokens issued under an older session version no longer work.
    pub session_version: i64,
    /// Two-factor authentication is on.
    pub mfa_enabled: bool,
    /// An administrator requires a new password (expiry is computed from
    /// `password_changed_at`, since it depends on the setting and the time).
    pub must_change_password: bool,
    /// When the password was last set (creation or change).
    pub password_changed_at: DateTime<Utc>,
}

/// A session that was ended by its user (logout). Sessions ended all at once (logout
/// everywhere, force-logout, deactivation, role change) are not listed here: they end by the
/// user's session version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionRow {
    /// The session id, as carried by the token (`sid`).
    pub id: Uuid,
    pub user_id: Uuid,
    pub ended_at: DateTime<Utc>,
    pub last_position: i64,
}

/// What authenticating one request needs to know about its user and session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    pub user: UserRow,
    /// The session was logged out.
    pub ended: bool,
}

/// Filters of the customer list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerQuery {
    /// Case-insensitive substring of name, email, phone or passport number.
    pub q: Option<String>,
    pub status: Option<CustomerStatus>,
    /// Only customers assigned to this agent.
    pub agent_id: Option<UserId>,
    /// Row-level visibility of the caller; `AssignedTo` narrows like `agent_id` does.
    pub visibility: Visibility,
    pub include_deleted: bool,
}

impl CustomerQuery {
    /// Every customer the visibility allows, deleted ones excluded, no other filter.
    pub fn new(visibility: Visibility) -> Self {
        Self {
            q: None,
            status: None,
            agent_id: None,
            visibility,
            include_deleted: false,
        }
    }
}

/// What a projection is doing, for `/readyz` and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Starting up: the checkpoint has not been read yet.
    Starting,
    /// This process applies the log to the projection.
    Running,
    /// Another process holds the projection's lock and applies the log; this one follows its
    /// checkpoint.
    Standby,
    /// An event could not be decoded; the projection stopped rather than skip it. Needs an
    /// operator (a missing upcaster or a corrupt log).
    Failed,
    /// The runner was shut down.
    Stopped,
}

/// One projection's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectionStatus {
    pub name: &'static str,
    pub version: i32,
    pub state: RunState,
    /// The position applied (the checkpoint).
    pub position: i64,
    /// The highest log position this process knows of.
    pub head: i64,
    /// `head - position`, never negative.
    pub lag: i64,
    pub rebuilding: bool,
}

/// What a blue/green rebuild did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebuildReport {
    pub projection: &'static str,
    pub version: i32,
    /// Log position the rebuilt tables were swapped in at.
    pub position: i64,
    /// Events read from the log (every event, relevant to the projection or not).
    pub events: u64,
    /// Of those, the events the projection folded.
    pub applied: u64,
    #[serde(with = "duration_secs")]
    pub elapsed: Duration,
    /// How long the live runner was held back while the tail was applied and the tables
    /// swapped.
    #[serde(with = "duration_secs")]
    pub swap_pause: Duration,
}

impl RebuildReport {
    pub fn events_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.events as f64 / secs
        } else {
            self.events as f64
        }
    }
}

mod duration_secs {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// One API key, without its secret: the SHA-256 of the current secret (and of the previous
/// one during a rotation's grace period) is what a presented key is looked up by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub name: String,
    /// Permission names (`customers:view`, …), sorted.
    pub permissions: Vec<String>,
    /// The first characters of the current key, to tell keys apart.
    pub prefix: String,
    pub secret_hash: String,
    /// The secret a rotation replaced, and until when it still works.
    pub previous_hash: Option<String>,
    pub grace_until: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// As recorded by `ApiKeyUsed` events: to the minute, not to the request.
    pub last_used_at: Option<DateTime<Utc>>,
    pub version: i64,
    pub last_position: i64,
}

/// One event as the audit log shows it. Holds no personal data: the description is built
/// from the event's non-personal facts, and the IP address (personal, under a retention
/// key) is not stored here but decrypted from the log when the row is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    pub position: i64,
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    /// UPPER_SNAKE, from the event's own `action()`.
    pub action: String,
    pub entity_type: String,
    pub entity_id: Uuid,
    pub actor_id: Option<Uuid>,
    pub actor_role: Option<String>,
    pub description: String,
}

/// Filters of the audit log; `None` does not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// `occurred_at >= from`.
    pub from: Option<DateTime<Utc>>,
    /// `occurred_at < to`.
    pub to: Option<DateTime<Utc>>,
    pub action: Option<String>,
    pub entity_type: Option<String>,
    pub entity_id: Option<Uuid>,
    pub actor_id: Option<Uuid>,
}

/// One follow-up. The note is in clear as decoded (`"[ERASED]"` once its customer was
/// erased); the status is not stored, it depends on when it is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FollowupRow {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub due_at: DateTime<Utc>,
    pub note: String,
    pub assigned_to: Uuid,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub completed_by: Option<Uuid>,
    pub version: i64,
    pub last_position: i64,
}

/// Filters of the follow-up list. Follow-ups are visible only with their customer: the
/// store joins the customers read model and applies `visibility` and `include_deleted` to
/// the customer, so a reassignment changes who sees its follow-ups at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowupQuery {
    pub assigned_to: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    pub status: Option<egec_domain::followup::FollowupStatus>,
    /// Only follow-ups due strictly before this time.
    pub due_before: Option<DateTime<Utc>>,
    /// The time `open` and `overdue` are decided at.
    pub now: DateTime<Utc>,
    pub visibility: Visibility,
    pub include_deleted: bool,
}
