//! Retention of security metadata: destroys the monthly keys (`retention-YYYYMM`) of months
//! past the retention period, so their IP addresses, user agents and unknown login emails
//! read `[EXPIRED]` on every path while the events, and the hash chain over their
//! ciphertext, stay untouched.
//!
//! Which months expire is decided by `egec_domain::retention`; this module lists the key
//! table's retention subjects, destroys the chosen ones and records the run. Only subjects of
//! the retention kind are ever listed, so no customer or user key can be destroyed here.
//!
//! Destruction is idempotent (a destroyed key is a tombstone and is never re-created), so
//! two nodes running it at once, or a run repeated after a crash, do no harm. The run is
//! recorded after the keys are gone and only when it destroyed something: a daily task on
//! every node must not fill the log with empty runs. A crash between the two steps loses
//! the record, not the destruction; the key table's tombstones (`erased_subjects`) still
//! say when each month's key went.

use crate::handler::{CommandBus, HandlerError};
use crate::vault::VaultError;
use chrono::{DateTime, Utc};
use egec_domain::event::{DomainEvent, Metadata};
use egec_domain::retention::{Month, RetentionMonths, SUBJECT_PREFIX, expired_months, is_expired};
use egec_domain::security::security_stream_id;
use egec_domain::user::LoginEvent;
use uuid::Uuid;

/// The payload subject of a retention run's event: it carries no personal field, so no key
/// is ever created for it.
const SYSTEM_SUBJECT: &str = "system";

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("key table: {0}")]
    Vault(#[from] VaultError),
    #[error("recording the retention run: {0}")]
    Record(String),
}

/// What a run did (or, dry, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRun {
    /// The months past the retention period that still had a key, oldest first.
    pub months: Vec<Month>,
    /// Key versions destroyed (0 on a dry run).
    pub destroyed: u32,
    /// Position of the `LoginRetentionApplied` event, when one was recorded.
    pub position: Option<i64>,
    pub dry_run: bool,
}

/// Destroys (unless `dry_run`) the retention keys of every month older than `keep` at `now`
/// and records the run as `LoginRetentionApplied` on the current month's security stream.
pub async fn apply(
    bus: &CommandBus,
    now: DateTime<Utc>,
    keep: RetentionMonths,
    dry_run: bool,
) -> Result<RetentionRun, RetentionError> {
    let vault = bus.codec().vault();
    if !dry_run {
        // Another node may have destroyed expired months already (then this run finds none
        // left), while this node's cache still holds their keys: drop every cached key of a
        // month past the period, so the next read asks the key table and gets the tombstone.
        vault.forget_matching(|s| Month::of_subject(s).is_some_and(|m| is_expired(m, now, keep)));
    }
    let subjects = vault.live_subjects(SUBJECT_PREFIX).await?;
    let months = expired_months(subjects.iter().map(String::as_str), now, keep);
    if dry_run || months.is_empty() {
        return Ok(RetentionRun {
            months,
            destroyed: 0,
            position: None,
            dry_run,
        });
    }
    let mut destroyed: u32 = 0;
    for month in &months {
        let fingerprints = vault.destroy(&month.subject()).await?;
        destroyed = destroyed.saturating_add(u32::try_from(fingerprints.len()).unwrap_or(u32::MAX));
    }
    let event = DomainEvent::Login(LoginEvent::RetentionApplied {
        months: months.clone(),
        retention_months: keep.get(),
        destroyed,
        at: now,
    });
    let meta = Metadata::system(Uuid::now_v7(), now);
    let position = bus
        .record(&security_stream_id(now), SYSTEM_SUBJECT, &meta, &[event])
        .await
        .map_err(|e: HandlerError<std::convert::Infallible>| {
            RetentionError::Record(e.to_string())
        })?;
    tracing::info!(
        months = months.len(),
        destroyed,
        position,
        "retention destroyed expired monthly keys"
    );
    Ok(RetentionRun {
        months,
        destroyed,
        position: Some(position),
        dry_run,
    })
}
