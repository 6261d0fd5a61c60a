//! Validated values. Each is built by one constructor that checks its input, so a value of
//! one of these types is valid wherever it appears ("parse, don't validate").

mod attachment;
mod disposable;
mod email;
mod passport;
mod phone;
mod text;

pub use attachment::{AttachmentType, FileName, Sha256Hex};
pub use disposable::{DISPOSABLE_REFUSED, DisposableDomains};
pub use email::Email;
pub use passport::PassportNumber;
pub use phone::PhoneE164;
pub use text::{Country, Notes, PersonName, Source};

/// Why a value was refused. The message is safe to show the user: it never echoes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub &'static str);
