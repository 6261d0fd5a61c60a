//! Egec's domain: identifiers, validated values, roles and permissions, events and the pure
//! aggregates that decide them.
//!
//! Nothing here performs I/O, reads the clock or draws random numbers: time and ids are
//! passed in by the caller, so every decision is a pure function that tests can pin down.

pub mod aggregate;
pub mod api_key;
pub mod audit;
pub mod bulk;
pub mod customer;
pub mod encoding;
pub mod event;
pub mod export;
pub mod followup;
pub mod gdpr;
pub mod ids;
pub mod masking;
pub mod password_policy;
pub mod permission;
pub mod personal;
pub mod retention;
pub mod role;
pub mod security;
pub mod user;
pub mod values;

pub use ids::{CustomerId, UserId};
pub use personal::Personal;
pub use role::Role;
