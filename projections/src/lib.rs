//! The read side of Egec: projections of the log into read-model tables, the runner that
//! keeps them current, blue/green rebuilds, and the queries the API reads through.
//!
//! Wiring, in the API:
//!
//! ```text
//! let runner = ProjectionRunner::start(&stores, &data_dir, codec, appender.subscribe_head()).await?;
//! // after a write that returned `outcome.last_position`:
//! runner.wait_for(outcome.last_position, Duration::from_secs(2)).await;
//! let row = runner.read_models().get_customer(id).await?;
//! ```
//!
//! Each projection (`customers`, `users`, `sessions`, `api_keys`, `audit`, `followups`,
//! `analytics`) is a named, versioned fold. The runner reads the log from the projection's checkpoint, folds a batch
//! in memory, and writes the changed rows and the new checkpoint in one transaction, so every
//! event takes effect exactly once however the process stops. Read models live in
//! `<data_dir>/read.db` (SQLite) or schema `crm` (PostgreSQL) and hold personal data in
//! clear, exactly as decoded: erased fields read `"[ERASED]"`. The `analytics` tables hold
//! none (schema `analytics` on PostgreSQL, see `docs/analytics.md`).

mod decode;
pub mod error;
pub mod fold;
pub mod kind;
pub mod lookup;
mod read_models;
mod rebuild;
pub mod rows;
mod runner;
mod store;

pub use error::{ProjectionError, StorageError};
pub use kind::ProjectionKind;
pub use lookup::CustomerKey;
pub use read_models::{MAX_PER_PAGE, ReadModels};
pub use rows::{
    ApiKeyRow, AuditQuery, AuditRow, CustomerQuery, CustomerRow, FollowupQuery, FollowupRow,
    ProjectionStatus, RebuildReport, RunState, SessionRow, SessionUser, UserRow,
};
pub use runner::{ProjectionRunner, RunnerHandle, RunnerOptions};
pub use store::sqlite::READ_DB_FILE;
