//! Typed identifiers, so a user id can never be passed where a customer id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! id_type {
    ($name:ident, $prefix:literal) => {
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps an id made elsewhere (the caller draws it: the domain draws no randomness).
            pub fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
            /// The event stream that holds this entity's history.
            pub fn stream_id(&self) -> String {
                format!(concat!($prefix, "-{}"), self.0)
            }
            /// The data subject whose key encrypts this entity's personal fields.
            pub fn subject(&self) -> String {
                self.stream_id()
            }
            /// Parses a stream id of this entity type back into the id.
            pub fn from_stream_id(stream_id: &str) -> Option<Self> {
                let rest = stream_id.strip_prefix(concat!($prefix, "-"))?;
                Uuid::parse_str(rest).ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(CustomerId, "customer");
id_type!(UserId, "user");
id_type!(ApiKeyId, "apikey");
id_type!(FollowupId, "followup");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_id_parses_back_into_the_same_id_and_not_into_another_type() {
        let id = CustomerId::from_uuid(Uuid::from_u128(7));
        assert_eq!(CustomerId::from_stream_id(&id.stream_id()), Some(id));
        assert_eq!(UserId::from_stream_id(&id.stream_id()), None);
    }
}
