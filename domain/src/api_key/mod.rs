//! API keys for integrations: issued by a superadmin, scoped to permissions, optionally
//! expiring, revocable, rotated with a grace period during which the previous secret still
//! works.
//!
//! The domain never sees a secret: the API draws it from the OS, shows it once and hands
//! the domain only its hash (see `api/src/auth/api_key.rs`). Deciding stays pure: the time
//! is passed in.

mod decide;
mod events;

pub use decide::{
    ApiKey, ApiKeyCommand, ApiKeyError, ApiKeyState, IssueApiKey, MAX_GRACE_SECONDS, RotateApiKey,
    SecretMatch, accepts, decide, evolve,
};
pub use events::{
    API_KEY_ISSUED, API_KEY_REVOKED, API_KEY_ROTATED, API_KEY_USED, ApiKeyEvent, ApiKeyName,
    SecretHash,
};

#[cfg(test)]
mod tests;
