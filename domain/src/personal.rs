//! Personal data as the domain sees it after decryption: the value, or the fact that it was
//! erased (its subject's key destroyed). Code that reads a personal field must handle both,
//! which is what makes crypto-shredding safe to rely on everywhere.

use std::fmt;

/// The marker every read path shows in place of an erased personal field.
pub const ERASED: &str = "[ERASED]";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Personal<T> {
    Known(T),
    Erased,
}

impl<T> Personal<T> {
    pub fn known(&self) -> Option<&T> {
        match self {
            Personal::Known(v) => Some(v),
            Personal::Erased => None,
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Personal<U> {
        match self {
            Personal::Known(v) => Personal::Known(f(v)),
            Personal::Erased => Personal::Erased,
        }
    }

    pub fn as_ref(&self) -> Personal<&T> {
        match self {
            Personal::Known(v) => Personal::Known(v),
            Personal::Erased => Personal::Erased,
        }
    }
}

impl<T: AsRef<str>> Personal<T> {
    /// The text to show: the value, or `[ERASED]`.
    pub fn shown(&self) -> &str {
        match self {
            Personal::Known(v) => v.as_ref(),
            Personal::Erased => ERASED,
        }
    }
}

impl<T: fmt::Display> fmt::Display for Personal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Personal::Known(v) => v.fmt(f),
            Personal::Erased => f.write_str(ERASED),
        }
    }
}

impl<T> From<T> for Personal<T> {
    fn from(v: T) -> Self {
        Personal::Known(v)
    }
}
