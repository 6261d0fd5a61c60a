//! Authentication: password hashing, tokens, and the extractor that turns a request into an
//! authenticated actor.

pub mod actor;
pub mod api_key;
pub mod gate;
pub mod hashing_pool;
pub mod password;
pub mod session;
pub mod token;
pub mod totp;
pub mod unknown_login;
