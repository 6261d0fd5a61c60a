//! Staff users: the user aggregate, and login activity kept in per-month streams so that a
//! user's stream does not grow with every login.

pub mod credentials;
mod decide;
mod events;
pub mod lockout;

pub use decide::{
    CreateUser, FIRST_SESSION_VERSION, UpdateUser, User, UserCommand, UserError, UserState, decide,
    evolve,
};
pub use events::{
    ACCESS_DENIED, LOGIN_FAILED_UNKNOWN_ACCOUNT, LoginEvent, LoginFailure, PasswordHash,
    RETENTION_APPLIED, SESSION_ENDED, UserEvent, login_stream_id, recent_login_stream_ids,
    unknown_login_stream_id,
};

#[cfg(test)]
mod credentials_tests;
#[cfg(test)]
mod tests;
