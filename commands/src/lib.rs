//! The write side: the event log and its backends, the group-commit appender, the subject-key
//! vault, the codec that encrypts personal fields, and the command handler.

pub mod appender;
pub mod attachments;
pub mod codec;
pub mod crypto;
pub mod erase;
pub mod handler;
pub mod master_key;
pub mod retention;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod vault;
