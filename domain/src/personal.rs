//! Personal data as the domain sees it after decryption: the value, the fact that it was
//! erased (its subject's key destroyed), or the fact that it expired (its month's retention
//! key destroyed by `egec retention apply`). Code that reads a personal field must handle
//! all three, which is what makes crypto-shredding safe to rely on everywhere.

use std::fmt;

/// The marker every read path shows in place of an erased personal field.
pub const ERASED: &str = "[ERASED]";

/// The marker every read path shows in place of a field whose retention period ran out.
/// Distinct from [`ERASED`] because the reason differs: nobody asked for this person's data
/// to go, the law's storage limit did.
pub const EXPIRED: &str = "[EXPIRED]";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Personal<T> {
    Known(T),
    Erased,
    /// Only security metadata (IP addresses, user agents, unknown login emails) expires: it
    /// is the only data encrypted under monthly retention keys.
    Expired,
}

impl<T> Personal<T> {
    pub fn known(&self) -> Option<&T> {
        match self {
            Personal::Known(v) => Some(v),
            Personal::Erased | Personal::Expired => None,
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Personal<U> {
        match self {
            Personal::Known(v) => Personal::Known(f(v)),
            Personal::Erased => Personal::Erased,
            Personal::Expired => Personal::Expired,
        }
    }

    pub fn as_ref(&self) -> Personal<&T> {
        match self {
            Personal::Known(v) => Personal::Known(v),
            Personal::Erased => Personal::Erased,
            Personal::Expired => Personal::Expired,
        }
    }
}

impl<T: AsRef<str>> Personal<T> {
    /// The text to show: the value, `[ERASED]` or `[EXPIRED]`.
    pub fn shown(&self) -> &str {
        match self {
            Personal::Known(v) => v.as_ref(),
            Personal::Erased => ERASED,
            Personal::Expired => EXPIRED,
        }
    }
}

impl<T: fmt::Display> fmt::Display for Personal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Personal::Known(v) => v.fmt(f),
            Personal::Erased => f.write_str(ERASED),
            Personal::Expired => f.write_str(EXPIRED),
        }
    }
}

impl<T> From<T> for Personal<T> {
    fn from(v: T) -> Self {
        Personal::Known(v)
    }
}
