//! The retention run of `serve`: once at start-up, then daily, the same library call as
//! `egec retention apply` (`egec_commands::retention::apply`).
//!
//! Several nodes may each run it; destruction is idempotent and a node that finds no expired
//! month with a live key (because another node already destroyed it) destroys nothing and
//! records nothing, so running twice is harmless. A node that had a destroyed month's key
//! cached stops using it when the node holding the audit projection applies the run's event,
//! or at the latest at its own next run, which drops every cached key of an expired month;
//! the key table no longer has it, so no new process can read those fields.

use egec_commands::handler::CommandBus;
use egec_commands::retention::{RetentionRun, apply};
use egec_domain::retention::RetentionMonths;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// How often `serve` applies retention.
pub const PERIOD: Duration = Duration::from_secs(24 * 3600);

/// What a run did, as `egec retention apply` prints it: months as `YYYY-MM`.
pub fn report_json(run: &RetentionRun) -> Value {
    json!({
        "dry_run": run.dry_run,
        "months": run.months.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "destroyed": run.destroyed,
        "position": run.position,
    })
}

/// Applies retention now and then every [`PERIOD`] until the bus is dropped (the task holds
/// it weakly, so a stopped server, such as a test's, does not keep its store open).
pub fn spawn(bus: &Arc<CommandBus>, keep: RetentionMonths) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(bus);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PERIOD);
        // A server suspended for days runs once on waking, not once per missed day.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The first tick completes at once: that is the start-up run.
            tick.tick().await;
            let Some(bus) = weak.upgrade() else { break };
            match apply(&bus, chrono::Utc::now(), keep, false).await {
                Ok(run) if run.months.is_empty() => {
                    tracing::debug!("retention: no month past the retention period");
                }
                Ok(run) => tracing::info!(
                    months = %report_json(&run)["months"],
                    destroyed = run.destroyed,
                    "retention applied"
                ),
                // Retried tomorrow (or at the next start); the fields stay readable meanwhile.
                Err(e) => tracing::error!(error = %e, "retention run failed"),
            }
        }
    })
}
