//! JSON shapes of resources, built from read models or from replayed state, with masking
//! applied per the caller's permissions.

pub mod customer;
pub mod followup;
pub mod gdpr;
