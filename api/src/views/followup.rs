//! The follow-up JSON of API.md.

use chrono::{DateTime, Utc};
use egec_domain::followup::FollowupStatus;
use serde::Serialize;
use uuid::Uuid;

/// A follow-up. `status` is decided at the time of the response: `overdue` is an open
/// follow-up whose due time has passed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FollowupView {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub due_at: DateTime<Utc>,
    /// Free text, `"[ERASED]"` once the customer was erased.
    pub note: String,
    pub assigned_to: Uuid,
    /// `open`, `done` or `overdue`.
    pub status: String,
    pub completed_at: Option<DateTime<Utc>>,
    pub completed_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub version: i64,
}

impl FollowupView {
    pub fn from_row(r: &egec_projections::FollowupRow, now: DateTime<Utc>) -> Self {
        Self {
            id: r.id,
            customer_id: r.customer_id,
            due_at: r.due_at,
            note: r.note.clone(),
            assigned_to: r.assigned_to,
            status: FollowupStatus::at(r.due_at, r.completed_at, now)
                .as_str()
                .to_owned(),
            completed_at: r.completed_at,
            completed_by: r.completed_by,
            created_at: r.created_at,
            version: r.version,
        }
    }
}
