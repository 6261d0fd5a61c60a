//! Staff users: the user aggregate, and login activity kept in per-month streams so that a
//! user's stream does not grow with every login.

mod decide;
mod events;

pub use decide::{decide, evolve, CreateUser, User, UserCommand, UserError, UserState};
pub use events::{login_stream_id, LoginEvent, PasswordHash, UserEvent};

#[cfg(test)]
mod tests;
